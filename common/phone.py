"""The handset's side of the protocol (sans-IO): registration, one call, media, sysinfo.

    phone = Phone("201", secret, os.urandom)
    phone.start(now); phone.dial("301", now); phone.answer(now); phone.hangup(now)
    phone.hold(now); phone.resume(now)   (a connected call: its host plays music on hold to the other party)
    common.lines: consult(phone, N, now, blind), swap(phone, now), reject_waiting, transfer
        (two lines: a waiting call or a held one beside the current call, docs/features.md)
    a SETUP with IE_ANSWER (intercom, page) is answered at once; a page's microphone is muted (`muted`)
    phone.receive(datagram, now) -> ts of an authentic media frame (decrypted in place), else None
    phone.seal_frame(ts, payload) -> a mini frame of our call (or None); phone.frame_to: where it goes
    phone.datagrams_to_send(now) -> signalling for the host
    phone.take_events() -> the events since the last call, oldest first:
        LoginUp (registered)  LoginDown(reason) (registration lost)  Incoming(number, name, waiting)
        Ringback  Connected(path)  Ended(cause, line)  Dtmf(digit)  Sysinfo(version, data)

Two lines: `call` is the current one; `other` is a second call beside it, either waiting (ringing,
Incoming with waiting 1) or held (this phone sent HOLD for it). Ended's line is 1 when the other
line ended; when the current one ends the other becomes current (held, or ringing).
    phone.firmware_sink: None, or what takes each FIRMWARE message's IEs (sink(ies, now)) while the
        firmware downloads an update (firmware/ota.py; without one the chunks are dropped and counted)
    phone.messages: new voicemail messages (MESSAGE_WAITING from the host; no event: the app
        compares it with what it shows, which keeps an event class off a handset's heap)

The call is a common.call.CallLeg (the states are common.call's): its state moves only by the
transitions of common/call.py's table; a call message the table does not allow in the call's
state is dropped and counted in `dropped`.
"""
from . import wire
from .call import (ALERTING_RECEIVED, ALERTING_SENT, ANSWER_RECEIVED, ANSWER_SENT, CALLING, CONNECTED,
                         DTMF_RECEIVED, DTMF_SENT, IDLE, RELEASE_RECEIVED, RELEASE_SENT, SETUP_RECEIVED, SETUP_SENT,
                         TIMEOUT, CallLeg)
from .compat import const, forget, micropython, ticks_diff, ticks_earliest
from .login import UP, Event, Login, LoginUp
from .media import MediaLeg

_SETUP_TIMEOUT_MS = const(20000)
_IE_ANSWER = const(0x29)          # wire_names' "answer": a SETUP the phone answers at once (intercom 1, page 2)
_IE_CODEC = const(0x1B)           # wire_names' "codec": sent by an A-law phone only (host/codec.py)
_SYSINFO_MAX_CHUNKS = const(64)   # 16 KB: more than a handset keeps for its system information
_FIRMWARE = const(0x43)           # wire_names' FIRMWARE: a chunk of an update (firmware/ota.py takes it)
_NODES = const(0x73)              # wire_names' NODES: a cluster's live nodes changed (docs/cluster.md)
_IE_CLUSTER_NODES = const(0x31)   # wire_names' "cluster_nodes": in WELCOME, SYSINFO's first chunk and NODES
# what a call message from the host is, to the call's state machine
_RECEIVED = {wire.ALERTING: ALERTING_RECEIVED, wire.ANSWER: ANSWER_RECEIVED, wire.RELEASE: RELEASE_RECEIVED,
             wire.DTMF: DTMF_RECEIVED}


class Incoming(Event):
    """A call is ringing here: from number (and the caller's name, "" when none); waiting: 1 when
    it rings beside a call in progress (call waiting, the `other` line); 2: no new call, the far end
    of the current call is now number (it was transferred there; one class less on the heap)."""
    __slots__ = ("number", "name", "waiting")


class Ringback(Event):
    """The called phone is ringing."""
    __slots__ = ()


class Connected(Event):
    """The call is answered; path: "relay" (through the hosts) or "local" (phone to phone, B3)."""
    __slots__ = ("path",)


class Ended(Event):
    """The call is over (cause: a wire.CAUSE_* code); line 1: the other line's call, not the current."""
    __slots__ = ("cause", "line")


class Dtmf(Event):
    """The far end sent a keypad digit."""
    __slots__ = ("digit",)


class Sysinfo(Event):
    """A new version of the system information (data: its JSON bytes, which the phone does not keep)."""
    __slots__ = ("version", "data")


class Phone:
    messages = 0     # new voicemail messages: set on the instance by the first MESSAGE_WAITING
    codec = 0        # G.711 law (wire CODEC_*): an A-law phone's app sets 8; named in its SETUPs and ALERTINGs
    firmware_sink = None   # set on the instance while an update downloads (firmware/ota.py)
    # a phone straight at a cluster's node: its standby Login at the home node's successor, and what
    # the firmware is to do for it (firmware/standby.py: a list, while there is a standby or work for
    # it); set on the instance by common/standby.py, loaded only at a node (a handset's heap)
    standby = cluster_out = None
    # a phone at a node whose rendezvous order starts with another node (one joined, or its first came back) moves
    # there once idle, at a random moment between half this and this after it noticed (common/standby.py); 0: only
    # at its next login. Set on the instance by the firmware's config `rebalance_s` (firmware/app.py)
    rebalance_ms = 300000

    def __init__(self, extension, secret, random_bytes, keepalive_ms=20000, dead_ms=None, backoff_max_ms=10000):
        self.extension = extension
        self.random_bytes = random_bytes
        index = (random_bytes(2)[0] << 8 | random_bytes(1)[0]) + 1
        self.login = Login(wire.IE_EXTENSION, extension, secret, index, random_bytes, keepalive_ms=keepalive_ms,
                           backoff_initial_ms=1000, backoff_max_ms=backoff_max_ms, dead_ms=dead_ms)
        self.call = None              # the CallLeg of the current call, None when there is none
        self.other = None             # a second call: waiting (ringing) or held by us, else None
        self.blind = False            # the current call is a blind transfer's: TRANSFER once it rings
        self._events = []
        self.sysinfo_version = None   # the data itself goes with the Sysinfo event, not kept here
        self._sysinfo = None          # a common.chunks.Reassembly while a transfer is under way
        self._next_call_no = (random_bytes(1)[0] % 100) + 1
        self.dropped = 0
        self.frame_to = None     # where seal_frame's frame goes: None for the host, else the LAN peer
        self.holding = False     # this phone holds its call: it sends no media and plays none
        self.muted = False       # a page (answered by itself, docs/features.md): it sends no media
        # a cluster's nodes (docs/cluster.md): IE cluster_nodes as the host last sent it (bytes, None from a
        # standalone main host); where the next login goes once this one is lost (None: the configured host)
        self.cluster_nodes = None
        self.host_next = None
        self._node_up = None     # the node id of the session that is up, from its WELCOME's index
        self._node_tried = None  # the node the login that is not up yet went to
        # common/standby.py's: the node's keepalive for a standby session, None until a login at a node with
        # room for one chose one (a NODES then chooses again: the successor may be another), and where the
        # standby is (None: none now). The instance's table has room for both (docs/handset.md, Memory).
        self.standby_keepalive_ms = None
        self.standby_to = None

    @property
    def registered(self):
        return self.login.state == UP

    @property
    def state(self):
        """The call's state (common.call: IDLE, CALLING, RINGBACK, RINGING, CONNECTED ...); IDLE with no call."""
        call = self.call
        return IDLE if call is None else call.state

    def take_events(self):
        """The events since the last call, oldest first (an empty tuple, allocating nothing, when none)."""
        events = self._events
        if not events:
            return ()
        self._events = []
        return events

    # user actions

    def start(self, now):
        self.login.start(now)

    def stop(self, now):
        """Log out (BYE) so the host forgets this registration at once."""
        while self.call is not None:
            self.hangup(now)
        self.login.send(wire.BYE, {}, now)

    def _new_call(self, media_key, role, now):
        self._next_call_no = self._next_call_no % wire.MAX_CALL_NO + 1
        call = CallLeg(self._next_call_no, media_key, role)
        call.started_ms = now
        return call

    def dial(self, number, now):
        if self.call is not None or not self.registered:
            return False
        call = self.call = self._new_call(self.random_bytes(16), 0, now)
        call.number = number
        ies = {wire.IE_CALL_NO: call.call_no, wire.IE_CALLED: number, wire.IE_MEDIA_KEY: call.media_key}
        if self.codec:
            ies[_IE_CODEC] = self.codec
        self.login.send(wire.SETUP, ies, now)
        call.apply(SETUP_SENT)
        return True

    def answer(self, now):
        call = self.call
        if call is None or call.apply(ANSWER_SENT) is None:
            return False
        self._send(wire.ANSWER, {}, now)
        self._events.append(Connected(call.path))
        return True

    def hangup(self, now):
        call = self.call
        if call is None:
            return False
        call.apply(RELEASE_SENT)
        self._send(wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_NORMAL}, now)
        self._end(wire.CAUSE_NORMAL)
        return True

    def dtmf(self, digit, now):
        call = self.call
        if call is None or call.apply(DTMF_SENT) is None:
            return False
        self._send(wire.DTMF, {wire.IE_DIGIT: digit}, now)
        return True

    def hold(self, now):
        """Hold the connected call: the host plays music on hold to the other party (docs/features.md)."""
        return self._hold(True, now)

    def resume(self, now):
        return self._hold(False, now)

    def _hold(self, flag, now):
        call = self.call
        if call is None or call.state != CONNECTED or self.holding == flag:
            return False
        self.holding = flag
        self._send(wire.HOLD, {wire.IE_STATE: 1 if flag else 0}, now)
        return True

    def _send(self, msg_type, ies, now, call=None):
        if call is None:
            call = self.call
        ies[wire.IE_CALL_NO] = call.call_no
        if call.peer_call_no:
            ies[wire.IE_PEER_CALL_NO] = call.peer_call_no
        self.login.send(msg_type, ies, now)

    def _end(self, cause, line=0):
        """A call (already RELEASED by its last transition) is gone: the current one (line 0; the
        other line, held or waiting, becomes current) or the other line (1)."""
        if line:
            self.other = None
        else:
            other = self.call = self.other
            self.other = None
            self.holding = other is not None and other.state == CONNECTED
            self.blind = self.muted = False
        self._events.append(Ended(cause, line))

    # media

    @micropython.native
    def seal_frame(self, ts, payload, line=0):
        """The mini frame (a view of a buffer reused per frame) carrying one frame of our call (line 1: of the
        held line), or None; `frame_to` is then where it goes (None: the host). A held call carries comfort
        noise alone (firmware/app.py capture). Allocates nothing: the handset's media path."""
        call = self.other if line else self.call
        if call is None or call.state != CONNECTED or self.muted or (line or self.holding) and len(payload) > 1:
            return None
        direct = call.direct
        if direct is not None:
            self.frame_to = direct[1]
            return direct[0].seal_mini(ts, payload)
        if not call.media.peer_call_no:
            return None
        self.frame_to = None
        return call.media.seal_mini(ts, payload)

    @micropython.native
    def open_media(self, frame):
        """The extended timestamp of an authentic media frame of our call, decrypted in place (frame
        is a writable buffer), else None (counted in `dropped`). Raises DecodeError for a malformed
        frame. Allocates nothing: the handset's media path."""
        call = self.call
        call_no = wire.check_mini(frame)
        held = self.holding
        if call is None or call_no != call.call_no:
            call = self.other
            if call is None or call_no != call.call_no:
                self.dropped += 1
                return None
            held = True
        direct = call.direct
        ts = None
        if direct is not None:   # B3: the other phone straight, or the host relaying
            ts = direct[0].open_mini(frame)
        if ts is None:
            ts = call.media.open_mini(frame)
            if ts is None:
                self.dropped += 1
        # a call we hold (the current one, or the held line) has what its host (or its phone, B3) sends opened, its
        # replay window moving on with the sender's timestamps, and not played: the held party's voice is not for us
        return None if held else ts

    # signalling in

    def receive(self, datagram, now):
        """Handle one datagram (a writable buffer): for a media frame, open_media(datagram) (its payload is
        then datagram[MINI_HEADER:-MEDIA_TAG]); signalling returns None. Raises DecodeError."""
        kind = wire.frame_kind(datagram)
        if kind == wire.KIND_MINI:
            return self.open_media(datagram)
        if kind != wire.KIND_FULL:
            self.dropped += 1
            return None
        standby = self.standby
        if standby is not None and wire.session_of(datagram) == standby.local_index:
            from . import standby   # a cluster's node: the standby session (common/standby.py)
            return standby.run(self, now, datagram)
        for msg_type, ies in self.login.receive(datagram, now):
            self._message(msg_type, ies, now)
        self._login_events(now)
        return None

    def _login_events(self, now):
        """The login's events are the phone's (LoginUp: registered); a call does not outlive the session,
        unless a cluster's standby session takes its place (common/cluster.py: then nothing happened)."""
        for event in self.login.take_events():
            if self.cluster_nodes is not None or (type(event) is LoginUp and _IE_CLUSTER_NODES in event.welcome):
                from . import cluster   # loaded only here: a phone without a cluster never loads it
                if cluster.phone_event(self, event, now):
                    continue
            while type(event) is not LoginUp and self.call is not None:
                self.call.apply(TIMEOUT)
                self._end(wire.CAUSE_UNREACHABLE)
            self._events.append(event)

    def _message(self, msg_type, ies, now):
        if msg_type == wire.SYSINFO:
            if _IE_CLUSTER_NODES in ies:
                self.cluster_nodes = ies[_IE_CLUSTER_NODES]
            self._sysinfo_chunk(ies, now)
        elif msg_type == _NODES:
            self.cluster_nodes = ies.get(_IE_CLUSTER_NODES, self.cluster_nodes)
            if self.standby_keepalive_ms is not None:
                from . import standby   # a node joined or left: the home node's successor may be another now
                standby.choose(self, now)
        elif msg_type == wire.SETUP:
            self._setup(ies, now)
        elif msg_type == wire.MESSAGE_WAITING:
            self.messages = ies.get(wire.IE_STATE, 0)
        elif msg_type == _FIRMWARE:
            sink = self.firmware_sink
            if sink is None:
                self.dropped += 1
            else:
                sink(ies, now)
        else:
            call, line = self.call, 0
            peer = ies.get(wire.IE_PEER_CALL_NO)
            if peer is None:   # sent before the host heard from us (a RELEASE at once): its own number names the call
                theirs = ies.get(wire.IE_CALL_NO)
                other = self.other
                if theirs and call is not None and call.peer_call_no == theirs:
                    peer = call.call_no
                elif theirs and other is not None and other.peer_call_no == theirs:
                    peer = other.call_no
            if call is not None and peer != call.call_no:
                call, line = self.other, 1
            if call is None or peer != call.call_no:
                if msg_type != wire.PING and msg_type != wire.ACK:
                    self.dropped += 1
                return
            call.learn_peer(ies.get(wire.IE_CALL_NO))
            if msg_type == wire.MEDIA_PEER:
                self._media_peer(call, ies)
            elif msg_type == wire.PARTY:
                call.number = ies.get(wire.IE_CALLING, call.number)
                call.name = ies.get(wire.IE_CALLING_NAME, "")
                if not line:
                    self._events.append(Incoming(call.number, call.name, 2))
            elif call.apply(_RECEIVED.get(msg_type, 0)) is None:
                self.dropped += 1          # not a call message, or out of turn (common/call.py)
            elif msg_type == wire.RELEASE:
                self._end(ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL), line)
            elif line:
                pass                       # the held line's DTMF: not for us now
            elif msg_type == wire.DTMF:
                self._events.append(Dtmf(ies.get(wire.IE_DIGIT, "")))
            elif self.blind:               # a blind transfer is done once the number rings (or answers)
                from .lines import transfer
                forget("common.lines")
                transfer(self, now)
            elif msg_type == wire.ALERTING:
                self._events.append(Ringback())
            else:
                self._events.append(Connected(call.path))

    def _setup(self, ies, now):
        held = self.call
        if held is not None and (self.other is not None or held.state != CONNECTED or self.blind):
            self.login.send(wire.RELEASE, {wire.IE_PEER_CALL_NO: ies.get(wire.IE_CALL_NO, 1),
                                           wire.IE_CAUSE: wire.CAUSE_BUSY}, now)
            return
        if wire.IE_MEDIA_KEY not in ies or wire.IE_CALL_NO not in ies:
            self.dropped += 1
            return
        call = self._new_call(ies[wire.IE_MEDIA_KEY], 1, now)
        if held is None:
            self.call = call
        else:
            self.other = call              # call waiting: it rings beside the current call
        call.learn_peer(ies[wire.IE_CALL_NO])
        call.number = ies.get(wire.IE_CALLING, "")
        call.name = ies.get(wire.IE_CALLING_NAME, "")
        if ies.get(wire.IE_PATH) == wire.PATH_LOCAL:
            call.path = "local"
        call.apply(SETUP_RECEIVED)
        self._send(wire.ALERTING, {_IE_CODEC: self.codec} if self.codec else {}, now, call)
        call.apply(ALERTING_SENT)
        self._events.append(Incoming(call.number, call.name, 0 if held is None else 1))
        auto = ies.get(_IE_ANSWER)   # intercom (1) or page (2): answered at once, a page muted
        if auto and held is None:    # (hosts page and intercom only idle phones; a waiting call rings)
            self.muted = auto == 2
            self.answer(now)

    def _media_peer(self, call, ies):
        """B3: the other phone's address and a media key of our own for the two of us; without an
        address, a new key for media through the host (a transferred local call that left the site)."""
        if wire.IE_MEDIA_KEY not in ies:
            self.dropped += 1
            return
        # from now on the host's leg only brings what the host still relays: its sending half goes
        # first, making room for the new leg on a handset's heap
        call.media.receive_only()
        leg = MediaLeg(ies[wire.IE_MEDIA_KEY], ies.get(wire.IE_ROLE, 0), call.call_no, ies.get(wire.IE_CALL_NO, 0))
        address = ies.get(wire.IE_ADDRESS)
        call.direct = (leg, address)
        call.path = "relay" if address is None else "local"

    def _sysinfo_chunk(self, ies, now):
        chunks = self._sysinfo
        if chunks is None:   # common.chunks is loaded for a transfer, and let go after it (docs/handset.md)
            from .chunks import Reassembly
            chunks = self._sysinfo = Reassembly(_SYSINFO_MAX_CHUNKS)
        data = chunks.add(ies)
        if data is None:
            return
        version = chunks.version
        self._sysinfo = None
        forget("common.chunks")
        self.sysinfo_version = version
        self.login.send(wire.SYSINFO_ACK, {wire.IE_VERSION: version}, now)
        self._events.append(Sysinfo(version, data))

    # time

    def datagrams_to_send(self, now):
        """The session's datagrams (to the host); a standby's go to its node (firmware/standby.py)."""
        return self.login.datagrams_to_send(now)

    def next_timer(self):
        standby = self.standby
        at = self.login.next_timer()
        return at if standby is None else ticks_earliest(at, standby.next_timer())

    def handle_timer(self, now):
        if self.standby is not None:
            from . import standby
            standby.run(self, now)
        self.login.handle_timer(now)
        self._login_events(now)
        call = self.call
        if call is not None and call.state == CALLING and ticks_diff(now, call.started_ms) > _SETUP_TIMEOUT_MS:
            call.apply(TIMEOUT)
            self._end(wire.CAUSE_UNREACHABLE)
