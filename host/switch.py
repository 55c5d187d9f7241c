"""Call switching shared by the main host and the remote hosts.

Each host is a back-to-back switch: a call is two legs, each leg one hop with
its own call numbers (ours and the peer's) and its own media keys. Signalling
is forwarded leg to leg; media is opened on one leg and sealed on the other,
keeping the timestamp. Frames to the same peer host within one 20 ms tick are
packed into one trunk frame.

A peer is trusted with its own legs only: a trunk entry is opened only for a leg
of the link the trunk frame came from (its tag proves only that link), a link
holds at most `max_legs[kind]` legs at once, and when no call number is free a
call is refused ("network busy") instead of waiting for one.
"""
import collections
import itertools
import os

from common import wire
from common.crypto import HmacKey, extend16, hkdf
from common.media import MediaLeg, open_trunk, seal_trunk


_SERIALS = itertools.count(1)
ENDED_KEEP_MS = 2000   # how long frames of an ended call may still arrive (and authenticate a trunk)
ENDED_MAX = 4096


class Link:
    """The far end of legs: a logged-in peer (server side) or our own login (client side)."""

    def __init__(self, name, kind, session=None, login=None, address=None):
        self.serial = next(_SERIALS)  # never reused: what ended calls remember instead of the link
        self.name = name
        self.kind = kind            # "phone", "host" (a remote host at the main host), "main", "pair"
        self.session = session      # host.sessions.Peer
        self.login = login          # common.login.Login
        self._address = address
        self.trunk_auth = None      # pair links set these
        self.trunk_recv_auth = None
        self.peer_index = 0
        self.up = True
        self.legs = 0               # live legs on this link (Switch.new_leg / end_call)

    @property
    def address(self):
        if self.session is not None:
            return self.session.address
        return self._address

    @address.setter
    def address(self, value):
        self._address = value

    def send_signal(self, msg_type, ies, now):
        if self.session is not None:
            self.session.send(msg_type, ies, now)
            return True
        if self.login is not None:
            return self.login.send(msg_type, ies, now)
        return False

    @property
    def trunked(self):
        return self.kind in ("host", "main", "pair")

    def trunk_keys(self):
        """(send HmacKey, peer's session index) for trunk frames on this link."""
        if self.kind == "pair":
            return self.trunk_auth, self.peer_index
        channel = self.session.channel if self.session is not None else self.login.channel
        return channel.crypto.send_auth, channel.peer_index

    def __repr__(self):
        return "<Link %s %s>" % (self.kind, self.name)


class Leg:
    def __init__(self, call_no, link, media_key, role):
        self.call_no = call_no
        self.link = link
        self.peer_call_no = None
        self.media = MediaLeg(media_key, role, call_no, 0)
        self.media_key = media_key
        self.direct = None          # (MediaLeg, Link or address) for B2 direct media
        self.call = None

    def learn_peer(self, call_no):
        if call_no and self.peer_call_no is None:
            self.peer_call_no = call_no
            self.media.peer_call_no = call_no

    def other(self):
        return self.call.b if self.call.a is self else self.call.a

    def send(self, msg_type, ies, now):
        ies = dict(ies)
        ies[wire.IE_CALL_NO] = self.call_no
        if self.peer_call_no:
            ies[wire.IE_PEER_CALL_NO] = self.peer_call_no
        return self.link.send_signal(msg_type, ies, now)


class Call:
    def __init__(self, call_id, caller, callee, now):
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.a = None
        self.b = None
        self.state = "setup"
        self.started_ms = now
        self.alerted_ms = None
        self.answered_ms = None
        self.ended_ms = None
        self.cause = None
        self.path = "relay"
        self.frames = 0
        self.b2 = False             # both legs go to remote hosts: a direct path may be punched
        self.punch = {}             # remote host name -> path it reported (B2)

    @property
    def uid(self):
        return self.call_id.hex()


class Switch:
    """Legs by our call number, trunk queues by link, media forwarding."""

    def __init__(self, daemon, trunk_mtu=1472, max_legs=None):
        self.daemon = daemon
        self.max_legs = max_legs or {}  # link kind -> most live legs one link may hold (absent: no cap)
        self.legs = {}
        self.calls = {}
        self._next = int.from_bytes(os.urandom(2), "big") % wire.MAX_CALL_NO
        self._trunks = {}           # link -> [(media leg, ts, payload bytes)]
        self._relayed = set()       # links queued to from received trunk frames (flush_relayed)
        self._ended = {}            # call number -> (highest timestamp, link serial, direct serial, when ended)
        self._ended_order = collections.deque()   # (time ended, call number), oldest first
        self.trunk_mtu = trunk_mtu
        self._buf = bytearray(65536)
        self.bytes_out_by_link = {}

    def allocate_call_no(self):
        """A free call number, or None when all 32,767 are taken (never waits for one)."""
        if len(self.legs) >= wire.MAX_CALL_NO:
            return None
        while True:
            self._next = self._next % wire.MAX_CALL_NO + 1
            if self._next not in self.legs:
                return self._next

    def admit(self, *links):
        """None when a call with one new leg on each of links can be set up, else the cause to refuse it.

        Checked before anything is created, so a refused SETUP leaves no state.
        """
        if len(self.legs) + len(links) > wire.MAX_CALL_NO:
            self.daemon.stats.drop("no free call number")
            return wire.CAUSE_NETWORK_BUSY
        for link in links:
            cap = self.max_legs.get(link.kind)
            if cap is not None and link.legs + links.count(link) > cap:
                self.daemon.stats.drop("calls per peer")
                return wire.CAUSE_NETWORK_BUSY
        return None

    def new_leg(self, link, media_key, role, call):
        """A leg of call on link; call admit() first (raises RuntimeError when no number is free)."""
        call_no = self.allocate_call_no()
        if call_no is None:
            raise RuntimeError("no free call number: admit() was not asked")
        leg = Leg(call_no, link, media_key, role)
        leg.call = call
        self.legs[call_no] = leg
        link.legs += 1
        return leg

    def new_call(self, caller, callee, now, call_id=None):
        """A call keyed by call_id; None, or an id already in use, gets a fresh random one."""
        while call_id is None or call_id in self.calls:
            call_id = os.urandom(8)
        call = Call(call_id, caller, callee, now)
        self.calls[call.call_id] = call
        return call

    def end_call(self, call, cause, now):
        if call.state == "released":
            return False
        call.state = "released"
        call.cause = cause
        call.ended_ms = now
        self._forget_ended(now)
        for leg in (call.a, call.b):
            if leg is not None and self.legs.get(leg.call_no) is leg:
                del self.legs[leg.call_no]
                leg.link.legs -= 1
                media = leg.direct[0] if leg.direct else leg.media
                self._ended[leg.call_no] = (max(media.replay.highest, leg.media.replay.highest), leg.link.serial,
                                            leg.direct[1].serial if leg.direct else None, now)
                self._ended_order.append((now, leg.call_no))
        self.calls.pop(call.call_id, None)
        return True

    def _forget_ended(self, now):
        """Ended calls are remembered for ENDED_KEEP_MS (frames in flight), never more than ENDED_MAX."""
        order, ended = self._ended_order, self._ended
        while order and (now - order[0][0] > ENDED_KEEP_MS or len(order) >= ENDED_MAX):
            when, call_no = order.popleft()
            entry = ended.get(call_no)
            if entry is not None and entry[3] == when:   # not a later call's that ended with this number
                del ended[call_no]

    def pass_on(self, leg, msg_type, ies, now):
        """Apply ALERTING, ANSWER, DTMF or RELEASE from leg to its call and forward it to the
        other leg; returns what happened ("alerting", "answered", "dtmf", "released" or None)."""
        call = leg.call
        other = leg.other()
        if other is None:
            return None
        if msg_type == wire.ALERTING and call.state == "setup":
            call.state = "alerting"
            call.alerted_ms = now
            other.send(wire.ALERTING, {}, now)
            return "alerting"
        if msg_type == wire.ANSWER and call.state in ("setup", "alerting"):
            call.state = "answered"
            call.answered_ms = now
            other.send(wire.ANSWER, {}, now)
            return "answered"
        if msg_type == wire.DTMF and wire.IE_DIGIT in ies:
            other.send(wire.DTMF, {wire.IE_DIGIT: ies[wire.IE_DIGIT]}, now)
            return "dtmf"
        if msg_type == wire.RELEASE:
            call.cause = ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL)
            other.send(wire.RELEASE, {wire.IE_CAUSE: call.cause}, now)
            return "released"
        return None

    def leg_for(self, ies, link):
        """Our leg named by a message's peer call number, if it belongs to this link."""
        leg = self.legs.get(ies.get(wire.IE_PEER_CALL_NO))
        if leg is None or leg.link is not link:
            return None
        leg.learn_peer(ies.get(wire.IE_CALL_NO))
        return leg

    def calls_of(self, link):
        return [c for c in list(self.calls.values()) if (c.a and c.a.link is link) or (c.b and c.b.link is link)]

    # media in

    def mini_in(self, frame, address, now):
        call_no, _ts = wire.parse_mini(frame)
        leg = self.legs.get(call_no)
        if leg is None:
            self.daemon.stats.drop("unknown call number")
            return
        if leg.link.trunked:
            self.daemon.stats.drop("mini frame for a trunked leg")  # host links send trunk frames only
            return
        ts = leg.media.open_mini(frame)
        if ts is None:
            self.daemon.stats.drop("media rejected")
            return
        self.daemon.stats.count("media in")
        if leg.link.kind == "phone" and leg.link.session is not None:
            self.daemon.sessions.touch(leg.link.session, address, now)
        self.forward(leg, ts, bytes(frame[wire.MINI_HEADER:len(frame) - wire.MEDIA_TAG]), now)

    def trunk_in(self, frame, link, now, direct=False):
        """Open a trunk frame from link and forward its entries; True when it carried new media.

        Only legs of link are opened (with direct, legs whose direct path is link):
        the frame's tag proves who sent it, not that the sender is party to the
        calls it names. False for a frame that fails, or whose entries were all
        replays: such a frame says nothing about where the peer is (B7).
        """
        auth = link.trunk_recv_auth if link.kind == "pair" else (
            link.session.channel.crypto.recv_auth if link.session is not None else link.login.channel.crypto.recv_auth)
        legs = self.legs
        ended = self._ended

        def media_of(call_no):
            leg = legs.get(call_no)
            if leg is None:
                return None
            if direct:
                return leg.direct[0] if leg.direct is not None and leg.direct[1] is link else None
            return leg.media if leg.link is link else None

        def extend(call_no, ts16):
            media = media_of(call_no)
            if media is not None:
                return extend16(media.replay.highest, ts16)   # media.extend(ts16), inlined
            gone = ended.get(call_no)  # a call that just ended: its frames still authenticate
            if gone is None or (gone[2] if direct else gone[1]) != link.serial:
                return None
            return extend16(gone[0], ts16)

        entries = open_trunk(auth, frame, extend)
        stats = self.daemon.stats
        if entries is None:
            stats.drop("trunk rejected")
            return False
        stats.count("trunks in")
        opened = 0
        relayed = self._relayed
        for call_no, ts, start, end in entries:
            media = media_of(call_no)
            if media is None:
                stats.drop("unknown call number")
                continue
            payload = media.open_entry_bytes(frame, ts, start, end)
            if payload is None:
                stats.drop("media rejected")
                continue
            opened += 1
            out = self.forward(legs[call_no], ts, payload, now)
            if out is not None:
                relayed.add(out)
        stats.count("media in", opened)
        return opened > 0

    # media out

    def forward(self, leg, ts, payload, now):
        call = leg.call
        if call.state != "answered" and call.state != "alerting":
            self.daemon.stats.drop("media before answer")
            return
        out = leg.other()
        if out.peer_call_no is None:
            return None
        call.frames += 1
        return self.send_media(out, ts, payload)

    def send_media(self, leg, ts, payload):
        """Send a frame to leg now (mini frame) or queue it; returns the link whose trunk queue took it."""
        direct = leg.direct
        if direct is not None and direct[1].up:
            link = direct[1]
            media = direct[0]
        else:
            link = leg.link
            if not link.trunked:
                self.daemon.send(leg.media.seal_mini(ts, payload), link.address, voice=True)
                return None
            media = leg.media
        queue = self._trunks.get(link)
        if queue is None:
            queue = self._trunks[link] = []
        queue.append((media, ts, payload))
        return link

    def flush(self, now):
        """Send every queued frame, one trunk datagram per peer host per tick (MTU permitting)."""
        trunks = self._trunks
        self._trunks = {}
        self._relayed.clear()
        for link, entries in trunks.items():
            self._send_trunks(link, entries)

    def flush_relayed(self, now):
        """Send the queues that frames of received trunk frames went to, now rather than at the tick.

        A relaying host calls this once it has handled the datagrams that were
        waiting: each peer's trunk of one tick then leaves as one trunk frame right
        away (with whatever else was queued for that peer), instead of waiting up
        to 20 ms for the next tick. Frames from phones still wait for the tick.
        """
        relayed = self._relayed
        if not relayed:
            return
        trunks = self._trunks
        for link in relayed:
            entries = trunks.pop(link, None)
            if entries:
                self._send_trunks(link, entries)
        relayed.clear()

    def _send_trunks(self, link, entries):
        """Seal entries [(media leg, ts, payload)] into as few trunk frames as the MTU allows."""
        auth, index = link.trunk_keys()
        mtu = self.trunk_mtu
        i = 0
        count = len(entries)
        while i < count:
            size = wire.TRUNK_HEADER + wire.MEDIA_TAG + wire.TRUNK_ENTRY_HEADER + len(entries[i][2])
            j = i + 1            # at least one entry per frame, even an oversized one
            while j < count:
                size += wire.TRUNK_ENTRY_HEADER + len(entries[j][2])
                if size > mtu:
                    break
                j += 1
            frame = seal_trunk(auth, index, entries[i:j] if i or j < count else entries, self._buf)
            i = j
            self.daemon.send(frame, link.address, voice=True)
            self.daemon.stats.count("trunks out")
            self.bytes_out_by_link[link.name] = self.bytes_out_by_link.get(link.name, 0) + len(frame) + 28


def pair_keys(pair_key, role):
    """(send HmacKey, recv HmacKey) for trunk frames between two remote hosts."""
    m = hkdf(pair_key, b"", b"upbx v1 pair", 64)
    mine, theirs = (m[:32], m[32:]) if role == 0 else (m[32:], m[:32])
    return HmacKey(mine), HmacKey(theirs)
