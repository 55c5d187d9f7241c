"""The handset's side of the protocol (sans-IO): registration, one call, media, sysinfo.

    phone = Phone("201", secret, os.urandom)
    phone.start(now); phone.dial("301", now); phone.answer(now); phone.hangup(now)
    phone.receive(datagram, now) -> (ts, payload) for an authentic media frame, else None
    phone.seal_media(ts, payload) -> (frame, address or None for the host)
    phone.datagrams_to_send(now) -> signalling for the host
    phone.events: ("registered",) ("incoming", number, name) ("ringback",) ("connected", path)
                  ("ended", cause) ("dtmf", digit) ("sysinfo", version, data) ("unregistered", reason)
"""
from . import wire
from .compat import const, ticks_diff
from .login import UP, Login
from .media import MediaLeg

IDLE = "idle"
DIALING = "dialing"
RINGBACK = "ringback"
RINGING = "ringing"
CONNECTED = "connected"

_SETUP_TIMEOUT_MS = const(20000)


class PhoneCall:
    def __init__(self, call_no, media_key, role, number, name=""):
        self.call_no = call_no
        self.peer_call_no = 0
        self.media = MediaLeg(media_key, role, call_no, 0)
        self.media_key = media_key
        self.direct = None           # (MediaLeg, address): B3 local media straight to the other phone
        self.number = number
        self.name = name
        self.path = "relay"
        self.started_ms = 0

    def learn_peer(self, call_no):
        if call_no and not self.peer_call_no:
            self.peer_call_no = call_no
            self.media.peer_call_no = call_no


class Phone:
    def __init__(self, extension, secret, random_bytes, keepalive_ms=20000, dead_ms=None, backoff_max_ms=10000):
        self.extension = extension
        self.random_bytes = random_bytes
        index = (random_bytes(2)[0] << 8 | random_bytes(1)[0]) + 1
        self.login = Login(wire.IE_EXTENSION, extension, secret, index, random_bytes, keepalive_ms=keepalive_ms,
                           backoff_initial_ms=1000, backoff_max_ms=backoff_max_ms, dead_ms=dead_ms)
        self.call = None
        self.state = IDLE
        self.events = []
        self.sysinfo_version = None   # the data itself goes with the "sysinfo" event, not kept here
        self._chunks = {}
        self._chunk_version = None
        self._next_call_no = (random_bytes(1)[0] % 100) + 1
        self.dropped = 0
        self.frame_to = None     # where seal_frame's frame goes: None for the host, else the LAN peer

    @property
    def registered(self):
        return self.login.state == UP

    # user actions

    def start(self, now):
        self.login.start(now)

    def stop(self, now):
        """Log out (BYE) so the host forgets this registration at once."""
        if self.call is not None:
            self.hangup(now)
        self.login.send(wire.BYE, {}, now)

    def dial(self, number, now):
        if self.call is not None or not self.registered:
            return False
        self._next_call_no = self._next_call_no % wire.MAX_CALL_NO + 1
        call = PhoneCall(self._next_call_no, self.random_bytes(16), 0, number)
        call.started_ms = now
        self.call = call
        self.state = DIALING
        self.login.send(wire.SETUP, {wire.IE_CALL_NO: call.call_no, wire.IE_CALLED: number,
                                     wire.IE_MEDIA_KEY: call.media_key}, now)
        return True

    def answer(self, now):
        if self.state != RINGING:
            return False
        self.state = CONNECTED
        self._send(wire.ANSWER, {}, now)
        self.events.append(("connected", self.call.path))
        return True

    def hangup(self, now):
        if self.call is None:
            return False
        self._send(wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_NORMAL}, now)
        self._end(wire.CAUSE_NORMAL)
        return True

    def dtmf(self, digit, now):
        if self.state != CONNECTED:
            return False
        self._send(wire.DTMF, {wire.IE_DIGIT: digit}, now)
        return True

    def _send(self, msg_type, ies, now):
        call = self.call
        ies[wire.IE_CALL_NO] = call.call_no
        if call.peer_call_no:
            ies[wire.IE_PEER_CALL_NO] = call.peer_call_no
        self.login.send(msg_type, ies, now)

    def _end(self, cause):
        self.call = None
        self.state = IDLE
        self.events.append(("ended", cause))

    # media

    def seal_media(self, ts, payload):
        """(frame, address) for one frame of our call; address None means the host."""
        frame = self.seal_frame(ts, payload)
        return frame, (self.frame_to if frame is not None else None)

    def seal_frame(self, ts, payload):
        """The mini frame (a view of a buffer reused per frame) carrying one frame of our call, or None;
        `frame_to` is then where it goes (None: the host). Allocates nothing: the handset's media path."""
        call = self.call
        if call is None or self.state != CONNECTED:
            return None
        direct = call.direct
        if direct is not None:
            self.frame_to = direct[1]
            return direct[0].seal_mini(ts, payload)
        if not call.peer_call_no:
            return None
        self.frame_to = None
        return call.media.seal_mini(ts, payload)

    def open_media(self, frame):
        """The extended timestamp of an authentic media frame of our call, decrypted in place (frame
        is a writable buffer), else None (counted in `dropped`). Raises DecodeError for a malformed
        frame. Allocates nothing: the handset's media path."""
        call = self.call
        if call is None or wire.check_mini(frame) != call.call_no:
            self.dropped += 1
            return None
        direct = call.direct
        if direct is not None:   # B3: the other phone straight, or the host relaying
            ts = direct[0].open_mini(frame)
            if ts is not None:
                return ts
        ts = call.media.open_mini(frame)
        if ts is None:
            self.dropped += 1
        return ts

    def _media_in(self, frame):
        ts = self.open_media(frame)
        if ts is None:
            return None
        return ts, memoryview(frame)[wire.MINI_HEADER:len(frame) - wire.MEDIA_TAG]

    # signalling in

    def receive(self, datagram, now):
        """Handle one datagram; returns (ts, payload view) for media, else None. Raises DecodeError."""
        kind = wire.frame_kind(datagram)
        if kind == wire.KIND_MINI:
            return self._media_in(datagram)
        if kind != wire.KIND_FULL:
            self.dropped += 1
            return None
        before = self.login.state
        for msg_type, ies in self.login.receive(datagram, now):
            self._message(msg_type, ies, now)
        self._login_events(before)
        return None

    def _login_events(self, before):
        for event, detail in self.login.events:
            if event == "up":
                self.events.append(("registered",))
            else:
                if self.call is not None:
                    self._end(wire.CAUSE_UNREACHABLE)
                self.events.append(("unregistered", detail))
        self.login.events = []

    def _message(self, msg_type, ies, now):
        call = self.call
        if msg_type == wire.SYSINFO:
            self._sysinfo_chunk(ies, now)
            return
        if msg_type == wire.SETUP:
            if call is not None:
                self.login.send(wire.RELEASE, {wire.IE_PEER_CALL_NO: ies.get(wire.IE_CALL_NO, 1),
                                               wire.IE_CAUSE: wire.CAUSE_BUSY}, now)
                return
            if wire.IE_MEDIA_KEY not in ies or wire.IE_CALL_NO not in ies:
                self.dropped += 1
                return
            self._next_call_no = self._next_call_no % wire.MAX_CALL_NO + 1
            call = PhoneCall(self._next_call_no, ies[wire.IE_MEDIA_KEY], 1,
                             ies.get(wire.IE_CALLING, ""), ies.get(wire.IE_CALLING_NAME, ""))
            call.learn_peer(ies[wire.IE_CALL_NO])
            call.started_ms = now
            if ies.get(wire.IE_PATH) == wire.PATH_LOCAL:
                call.path = "local"
            self.call = call
            self.state = RINGING
            self._send(wire.ALERTING, {}, now)
            self.events.append(("incoming", call.number, call.name))
            return
        if call is None or ies.get(wire.IE_PEER_CALL_NO) != call.call_no:
            if msg_type not in (wire.PING, wire.ACK):
                self.dropped += 1
            return
        call.learn_peer(ies.get(wire.IE_CALL_NO))
        if msg_type == wire.ALERTING and self.state == DIALING:
            self.state = RINGBACK
            self.events.append(("ringback",))
        elif msg_type == wire.ANSWER and self.state in (DIALING, RINGBACK):
            self.state = CONNECTED
            self.events.append(("connected", call.path))
        elif msg_type == wire.RELEASE:
            self._end(ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL))
        elif msg_type == wire.DTMF:
            self.events.append(("dtmf", ies.get(wire.IE_DIGIT, "")))
        elif msg_type == wire.MEDIA_PEER and wire.IE_ADDRESS in ies and wire.IE_MEDIA_KEY in ies:
            # from now on the host's leg only brings what the host still relays: its sending half goes
            # first, making room for the new leg on a handset's heap
            call.media.receive_only()
            leg = MediaLeg(ies[wire.IE_MEDIA_KEY], ies.get(wire.IE_ROLE, 0), call.call_no, ies.get(wire.IE_CALL_NO, 0))
            call.direct = (leg, ies[wire.IE_ADDRESS])
            call.path = "local"

    def _sysinfo_chunk(self, ies, now):
        version = ies.get(wire.IE_VERSION, 0)
        chunk = ies.get(wire.IE_CHUNK, 1)
        index, count = chunk >> 16, chunk & 0xFFFF
        if version != self._chunk_version:
            self._chunk_version = version
            self._chunks = {}
        self._chunks[index] = ies.get(wire.IE_DATA, b"")
        if count and len(self._chunks) == count:
            data = b"".join(self._chunks[i] for i in range(count))
            self._chunks = {}
            self.sysinfo_version = version
            self.login.send(wire.SYSINFO_ACK, {wire.IE_VERSION: version}, now)
            self.events.append(("sysinfo", version, data))

    # time

    def datagrams_to_send(self, now):
        return self.login.datagrams_to_send(now)

    def next_timer(self):
        return self.login.next_timer()

    def handle_timer(self, now):
        before = self.login.state
        self.login.handle_timer(now)
        self._login_events(before)
        if self.state == DIALING and ticks_diff(now, self.call.started_ms) > _SETUP_TIMEOUT_MS:
            self._end(wire.CAUSE_UNREACHABLE)
