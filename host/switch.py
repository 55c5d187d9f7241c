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

from upbx.common import cluster, cluster_make, wire
from upbx.common.call import (ALERTING_RECEIVED, ALERTING_SENT, ANSWER_RECEIVED, ANSWER_SENT, CONNECTED, DTMF_RECEIVED,
                         DTMF_SENT, IDLE, RELEASE_RECEIVED, RELEASE_SENT, RINGBACK, SETUP_RECEIVED, SETUP_SENT, TIMEOUT,
                         CallLeg)
from upbx.common.crypto import HmacKey, extend16, hkdf
from upbx.common.media import open_trunk, seal_trunk
from upbx.host import codec, fastpath


_SERIALS = itertools.count(1)
ENDED_KEEP_MS = 2000   # how long frames of an ended call may still arrive (and authenticate a trunk)
ENDED_MAX = 4096
# a held call's direction towards its holder carries a comfort-noise frame this often (Switch.forward): under the
# 1,024 ms a replay window takes in one step (common/crypto.py ReplayWindow.jump_ok), far under its 32 s reach
KEEP_MS = 1000
KEEP_CN = bytes(wire.CN_BYTES)   # comfort noise at level 0: silence


class Link:
    """The far end of legs: a logged-in peer (server side) or our own login (client side)."""

    # one per registered phone at a main host (10,000): no per-instance dict (subclasses have one)
    __slots__ = ("_serial", "name", "kind", "session", "login", "_address", "trunk_auth", "trunk_recv_auth",
                 "peer_index", "up", "legs", "codec", "site", "node", "switched_ms")

    def __init__(self, name, kind, session=None, login=None, address=None):
        self._serial = None
        self.name = name
        self.kind = kind            # "phone", "host" (a remote host at the main host), "main", "pair"
        self.session = session      # host.peers.Peer
        self.login = login          # common.login.Login
        self._address = address
        self.trunk_auth = None      # pair links set these
        self.trunk_recv_auth = None
        self.peer_index = 0
        self.up = True
        self.legs = 0               # live legs on this link (Switch.new_leg / end_call)
        self.codec = wire.CODEC_ULAW  # a phone's G.711 law, as its SETUP / ALERTING said (host/codec.py)
        self.node = None            # a node trunk's: the other node's id (host/cluster/trunk.py)
        self.switched_ms = None     # a cluster client's: when it switched its home here (host/main_host.py)

    @property
    def serial(self):
        """Never reused: what ended calls remember instead of the link (numbered at first use: an
        idle phone's link holds no number)."""
        if self._serial is None:
            self._serial = next(_SERIALS)
        return self._serial

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
        return self.kind in ("host", "main", "pair", "node")   # node: a trunk to another node (host/cluster/trunk.py)

    def trunk_keys(self):
        """(send HmacKey, peer's session index) for trunk frames on this link; None when its login is down
        (no channel: a node trunk lost while its calls are held, host/cluster/trunk.py)."""
        if self.kind == "pair":
            return self.trunk_auth, self.peer_index
        channel = self.session.channel if self.session is not None else self.login.channel
        if channel is None:
            return None
        return channel.crypto.send_auth, channel.peer_index

    def __repr__(self):
        return "<Link %s %s>" % (self.kind, self.name)


def trunk_class(node, peer):
    """The node bits of node's call numbers for legs on its trunks to peer (docs/cluster.md, "Node trunks"):
    ((node + peer) mod 15) + 1. For one node they differ from peer to peer, so a held leg that moves to the
    trunk of a lost node's successor (NodeTrunks.claim) never meets one of ours there; for one peer they
    differ from node to node, so a lost node's leg adopted onto our trunk to that peer never meets ours."""
    return (node + peer) % cluster.MAX_NODE + 1


def other_leg(leg):
    """The call's leg on the far side of the switch from leg."""
    call = leg.call
    return call.b if call.a is leg else call.a


def send_on_leg(leg, msg_type, ies, now):
    """A call message on leg's link, naming both ends' call numbers."""
    ies = dict(ies)
    ies[wire.IE_CALL_NO] = leg.call_no
    if leg.peer_call_no:
        ies[wire.IE_PEER_CALL_NO] = leg.peer_call_no
    return leg.link.send_signal(msg_type, ies, now)


class Call:
    """A call through this host: leg a towards the caller (SETUP came in on it), leg b towards the
    callee (SETUP went out on it). Its state is its legs' (common/call.py): "setup" until the callee
    rings, "alerting", "answered", then "released"."""

    def __init__(self, call_id, caller, callee, now):
        self.call_id = call_id
        self.caller = caller
        self.callee = callee
        self.a = None
        self.b = None
        self.released = False
        self.started_ms = now
        self.alerted_ms = None
        self.answered_ms = None
        self.ended_ms = None
        self.cause = None
        self.path = "relay"
        self.frames = 0
        self.b2 = False             # both legs go to remote hosts: a direct path may be punched
        self.punch = {}             # remote host name -> path it reported (B2)
        self.peered = False         # B2: both remote hosts were told to send its media straight to each other
        self.xpair = None           # B2 with a site at another node: host/cluster/direct.py's CrossPair
        self.offered_ms = now       # when leg b was last offered (ring timeout, forward on no answer)
        self.tried = [callee]       # the numbers offered so far (forwarding: a loop is a number tried twice)
        self.noanswer = None        # (number, ms): where the call goes if it rings that long unanswered
        self.held_by = None         # the leg on whose side the call is held (docs/features.md), else None
        self.moh_pos = 0            # the next frame of music on hold
        self.ts_out = [0, 0]        # the last timestamp sent towards leg a, leg b
        self.ts_shift = [0, 0]      # added to what is forwarded towards leg a, b after music on hold
        self.ts_guess = None        # a call taken over from its key: {leg: (its window's start, the timestamp
                                    # guessed, wall ms)} until its first frame (host/cluster/calls.py _leg_from)
        self.moh_last = [None, None]  # the last music-on-hold timestamp towards a, b, until voice follows
        self.conference = None      # host.conference.Conference this call's legs are parties of, else None
        self.linked = None          # a call joined by a transfer: the uid of the call it continues (host/lines.py)
        self.recorded_as = None     # a cluster node's half of another node's call: the uid that node records it
                                    # under (host/main_host.py _setup_from_node), else None
        self.recorded_elsewhere = False  # such a half joined by a transfer at that node into a call from another
                                         # node, which records it (PARTY with call_id, host/lines.py): never
                                         # recorded here, not even when that node is lost (docs/cluster.md)
        self.pickup_at = None       # a *8 sent on to other nodes: the node ids still to ask (host/main_host.py)
        self.record_uid = None      # the uid this call is recorded under when not its own: a lost node's half
                                    # spliced into ours, that node having been the caller's (host/cluster/calls.py)
        self.record_here = False    # a call a lost node joined between two other nodes' clients (a transfer), spliced
                                    # here by the lower of the two: recorded here as that node would have
                                    # (host/cluster/calls.py _splice), whatever its legs' links
        self.spliced = None         # (uid, node id) of a lost (or stopped) node's half spliced into ours: its key in
                                    # Redis is ours from then on (host/cluster/calls.py CallMirror); node id None when
                                    # that node was told at once (it lived), else it is told when its trunk is up again
        self.picked_up_as = None    # such a pickup, picked up there: (the uid that node records it under, the
                                    # number that rang), to record it here if that node is lost (host/lines.py)
        self.recall = None          # a blind transfer ringing: (link to ring back, its number, new party, due, period)
        self.mixed_at_main = False  # a site's call whose conference the main host mixes (host/conference.py)
        self.group = None           # host.groups.GroupCall while a group call rings (a page: while it lasts)
        self.fanout = None          # a page: the paged phones' legs, each sent the pager's voice (one way)
        self.relocated = False      # a cluster node's call sent on once after the callee's node said it moved
        self.serial = 0             # grows with each call the switch makes (Switch.new_call; host/call_rounds.py)

    @property
    def state(self):
        if self.released:
            return "released"
        if self.conference is not None:   # its legs are the conference's (one may be gone): answered
            return "answered"
        b = self.b.state if self.b is not None else IDLE
        return "answered" if b == CONNECTED else "alerting" if b == RINGBACK else "setup"

    @property
    def uid(self):
        return self.call_id.hex()

    @property
    def record_as(self):
        """The uid of this call's record here (host/records.py): the one it took over (record_uid); a lost node's
        call, our half of it, that node's (recorded_as, from its SETUP: a copy the node writes after all, only
        stalled, is the same record); else its own. A call relabelled by a transfer further on (linked) has a
        uid of its own at each node."""
        if self.record_uid is not None:
            return self.record_uid
        if self.recorded_as is not None and self.linked is None and self.a is not None and self.a.link.kind == "node":
            return self.recorded_as
        return self.uid

    def punched_path(self):
        """B2: "direct" once both remote hosts reported a direct path, "relay" once both reported
        and one did not, None while a report is missing."""
        if len(self.punch) < 2:
            return None
        return "direct" if all(v == wire.PATH_DIRECT for v in self.punch.values()) else "relay"


class Switch:
    """Legs by our call number (by link and number for the links of a node that number their own: own_numbers),
    trunk queues by link, media forwarding."""

    def __init__(self, send, stats, trunk_mtu=1472, max_legs=None):
        self.send = send              # send(data, address, voice): the core's outbox
        self.stats = stats
        self.max_legs = max_legs or {}  # link kind -> most live legs one link may hold (absent: no cap)
        self.legs = {}
        self.calls = {}
        self._serials = itertools.count()
        # calls set up, answered and ended so far: a cluster's node writes the call keys when it moves, not only
        # every calls_period_ms (host/cluster/node.py), so that a call set up just before the node's loss is in Redis
        self.moves = 0
        self._next = int.from_bytes(os.urandom(2), "big") % wire.MAX_CALL_NO
        self.node_id = None           # a cluster's node: set_node
        self.capacity = wire.MAX_CALL_NO   # legs numbered switch-wide at once (a cluster's node: 2,048)
        self.own_legs = 0             # legs numbered on their link alone (a node's remote hosts: own_numbers)
        self.reserved = None          # reserved(link, call_no): a number of link not to give out (a node's Takeover)
        self._next_own = int.from_bytes(os.urandom(2), "big") % wire.MAX_CALL_NO
        self._next_phone = self._next_own % cluster.LOCAL_CALLS
        self.minis = {}               # a node's phone legs by number alone: a leg, or [legs] that share the number
        self.trunk_own = {}           # a node's node-trunk legs it numbered itself: number -> leg (unique on the node)
        self.trunk_classes = [0] * (cluster.MAX_NODE + 1)   # how many of trunk_own have each node-bits value
        self._next_trunk = self._next_own % cluster.LOCAL_CALLS
        self._trunks = {}           # link -> [(media leg, ts, payload bytes)]
        self._relayed = set()       # links queued to from received trunk frames (flush_relayed)
        self._ended = {}            # key (as legs') -> (highest timestamp, link serial, direct serial, when ended)
        self._ended_order = collections.deque()   # (time ended, key), oldest first
        self.trunk_mtu = trunk_mtu
        self._buf = bytearray(65536)
        self.bytes_out_by_link = {}
        self.fast = fastpath.native   # the C fast path (host/fastpath.py), or None: the Python path

    def own_numbers(self, link):
        """True when link's legs are numbered on link alone: a cluster node's remote host sessions (32,767
        each) and phone sessions (2,048 each, the node id in them), docs/cluster.md "Call legs per link".
        Their trunk frames and signalling name a leg together with their session index, so a number need
        be unique only there; a phone's mini frame names its number alone, and is told from another phone's
        by its source address or its tag (mini_in). A node trunk's legs are numbered per trunk too, in the
        class of numbers trunk_class gives the pair of nodes, so that a leg that moves to another trunk in a
        failover meets none there (docs/cluster.md, "Node trunks")."""
        return self.node_id is not None and (link.kind == "host" or link.kind == "phone" or link.kind == "node")

    def own_capacity(self, link):
        """The most legs link may hold when it numbers them alone: 32,767 for a remote host's session, 2,048
        for a phone's (with the node id in each: a phone's mini frame that reaches another node is sent on
        by it, docs/cluster.md "One hop")."""
        return wire.MAX_CALL_NO if link.kind == "host" else cluster.LOCAL_CALLS

    def _trunk_full(self, link, more=1):
        """True when the class of link's node trunk (trunk_class) has fewer than more numbers free."""
        return self.trunk_classes[trunk_class(self.node_id, link.node)] + more > cluster.LOCAL_CALLS

    def key(self, link, call_no):
        """Where link's leg call_no is in self.legs (and self._ended): (link, call_no) for links that number
        their legs alone (own_numbers), else call_no."""
        return (link, call_no) if self.own_numbers(link) else call_no

    def leg(self, link, call_no):
        """Our leg call_no on link, else None."""
        leg = self.legs.get(self.key(link, call_no))
        return leg if leg is not None and leg.link is link else None

    def allocate_call_no(self, link=None):
        """A free call number for a leg on link, or None when none is (never waits for one). A standalone
        host's legs share 32,767; a node of a cluster numbers per link (own_numbers): each remote host session
        32,767 of its own, each phone session 2,048 with the node id, the trunks to each other node 2,048 of
        the pair's class (trunk_class), and the host's own endpoints share 2,048 with the node id."""
        if link is not None and self.own_numbers(link):
            if link.kind == "phone":
                return self._phone_call_no(link)
            if link.kind == "node":
                return self._trunk_call_no(link)
            if link.legs >= wire.MAX_CALL_NO:
                return None
            legs, reserved = self.legs, self.reserved
            for _ in range(wire.MAX_CALL_NO):
                self._next_own = self._next_own % wire.MAX_CALL_NO + 1
                call_no = self._next_own
                if (link, call_no) not in legs and (reserved is None or not reserved(link, call_no)):
                    return call_no
            return None
        if len(self.legs) - self.own_legs >= self.capacity:
            return None
        if self.node_id is not None:
            for _ in range(cluster.LOCAL_CALLS):
                self._next = (self._next + 1) % cluster.LOCAL_CALLS
                call_no = cluster_make.make_call_no(self.node_id, self._next)
                if call_no not in self.legs:
                    return call_no
            return None
        while True:
            self._next = self._next % wire.MAX_CALL_NO + 1
            if self._next not in self.legs:
                return self._next

    def _phone_call_no(self, link):
        """A number with the node id for a new leg of a phone's session at a node: free on that session and
        not asked for there (reserved), and while the node's phones hold fewer than 2,048 legs one no phone
        here has, so that a mini frame's number alone names its leg (mini_in need not tell two apart)."""
        legs, reserved, minis = self.legs, self.reserved, self.minis
        prefer = len(minis) < cluster.LOCAL_CALLS
        shared = None
        for _ in range(cluster.LOCAL_CALLS):
            self._next_phone = (self._next_phone + 1) % cluster.LOCAL_CALLS
            call_no = cluster_make.make_call_no(self.node_id, self._next_phone)
            if (link, call_no) in legs or (reserved is not None and reserved(link, call_no)):
                continue
            if not prefer or call_no not in minis:
                return call_no
            if shared is None:
                shared = call_no
        return shared

    def _trunk_call_no(self, link):
        """A number for a new leg on link, a trunk to another node: of the pair's class (trunk_class), and
        unique among the legs this node numbered on any trunk (a held leg keeps its number when it moves)."""
        bits = trunk_class(self.node_id, link.node)
        if self.trunk_classes[bits] >= cluster.LOCAL_CALLS:
            return None
        own, legs = self.trunk_own, self.legs
        for _ in range(cluster.LOCAL_CALLS):
            self._next_trunk = (self._next_trunk + 1) % cluster.LOCAL_CALLS
            call_no = cluster_make.make_call_no(bits, self._next_trunk)
            if call_no not in own and (link, call_no) not in legs:
                return call_no
        return None

    def set_node(self, node_id):
        """This switch is a node's of a cluster: its phones' and own endpoints' call numbers carry node_id
        (docs/cluster.md)."""
        self.node_id = node_id
        self.capacity = cluster.LOCAL_CALLS

    def admit(self, *links):
        """None when a call with one new leg on each of links can be set up, else the cause to refuse it.

        Checked before anything is created, so a refused SETUP leaves no state.
        """
        shared = [link for link in links if not self.own_numbers(link)]
        if len(self.legs) - self.own_legs + len(shared) > self.capacity or any(
                (self._trunk_full(link, links.count(link)) if link.kind == "node" else
                 link.legs + links.count(link) > self.own_capacity(link)) for link in links if link not in shared):
            self.stats.drop("no free call number")
            return wire.CAUSE_NETWORK_BUSY
        for link in links:
            cap = self.max_legs.get(link.kind)
            if cap is not None and link.legs + links.count(link) > cap:
                self.stats.drop("calls per peer")
                return wire.CAUSE_NETWORK_BUSY
        return None

    def new_leg(self, link, media_key, role, call):
        """A leg of call on link; call admit() first (raises RuntimeError when no number is free)."""
        call_no = self.allocate_call_no(link)
        if call_no is None:
            raise RuntimeError("no free call number: admit() was not asked")
        leg = CallLeg(call_no, media_key, role)
        leg.link = link
        leg.call = call
        self.place(leg)
        return leg

    def place(self, leg):
        """leg (its link and call number set, free there) into the table: a new leg, or one taken over."""
        link = leg.link
        self.legs[self.key(link, leg.call_no)] = leg
        link.legs += 1
        if self.own_numbers(link):
            self.own_legs += 1
            if link.kind == "phone":
                had = self.minis.get(leg.call_no)
                self.minis[leg.call_no] = leg if had is None else (had + [leg] if type(had) is list else [had, leg])
            elif link.kind == "node" and cluster.call_no_node(leg.call_no) == trunk_class(self.node_id, link.node):
                # ours (another node's, adopted by Takeover, is never of our class on that trunk: trunk_class)
                self.trunk_own[leg.call_no] = leg
                self.trunk_classes[cluster.call_no_node(leg.call_no)] += 1

    def incoming(self, call, link, ies):
        """Leg a of call: the SETUP (ies) that came in on link, checked by the caller of this."""
        leg = call.a = self.new_leg(link, ies[wire.IE_MEDIA_KEY], 1, call)
        leg.learn_peer(ies[wire.IE_CALL_NO])
        leg.apply(SETUP_RECEIVED)
        return leg

    def offer(self, call, link, now, name=None, local=False, call_id=True, fork=False, extra=None, called=None):
        """Leg b of call: a SETUP to the callee on link with a fresh media key, the caller's name
        (None: none), the call's id (not towards the main host, which chooses the ids of the
        calls it switches); local: a site's own call (B3), the phones send media to each other.
        fork: a leg towards one member of a group (host/groups.py), not leg b; extra: more IEs;
        called: the number in the SETUP when it is not the call's callee."""
        leg = self.new_leg(link, os.urandom(16), 0, call)
        if not fork:
            call.b = leg
        ies = {wire.IE_CALLED: called or call.callee, wire.IE_CALLING: call.caller, wire.IE_MEDIA_KEY: leg.media_key}
        if extra:
            ies.update(extra)
        if name is not None:
            ies[wire.IE_CALLING_NAME] = name
        if call_id:
            ies[wire.IE_CALL_ID] = call.call_id
        if local:
            ies[wire.IE_PATH] = wire.PATH_LOCAL
        send_on_leg(leg, wire.SETUP, ies, now)
        leg.apply(SETUP_SENT)
        return leg

    def release(self, leg, cause, now):
        """RELEASE with cause on leg (its call ends; end_call() does the rest). A trunked link's queued
        frames go first (flush_link): the far host drops a frame of a call that has ended, so a RELEASE
        sent ahead of a phone's last frame, which waits for the tick, lost the last 20 ms of speech."""
        if leg.apply(RELEASE_SENT) is not None:
            if leg.link.trunked:
                self.flush_link(leg.link)
            send_on_leg(leg, wire.RELEASE, {wire.IE_CAUSE: cause}, now)

    def new_call(self, caller, callee, now, call_id=None):
        """A call keyed by call_id; None, or an id already in use, gets a fresh random one."""
        while call_id is None or call_id in self.calls:
            call_id = os.urandom(8)
        call = Call(call_id, caller, callee, now)
        call.serial = next(self._serials)   # host/call_rounds.py: the calls made since it last looked
        self.calls[call.call_id] = call
        self.moves += 1
        return call

    def answered(self, call, now):
        """call is answered now (by a phone, a group's member, a pickup, a page's first phone): its key is written
        at once (moves)."""
        call.answered_ms = now
        self.moves += 1

    def renumber(self, call, not_this):
        """call goes on under a fresh call_id, neither one in use nor not_this (a transfer joined it further on,
        host/lines.py): a new key for it, written at once (moves)."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
            while call.call_id in self.calls or call.call_id == not_this:
                call.call_id = os.urandom(8)
            self.calls[call.call_id] = call
            self.moves += 1

    def end_call(self, call, cause, now):
        if call.released:
            return False
        call.released = True
        call.cause = cause
        call.ended_ms = now
        self.moves += 1
        self._forget_ended(now)
        for leg in (call.a, call.b):
            if leg is not None:
                self._forget_leg(leg, now)
        self.calls.pop(call.call_id, None)
        return True

    def drop_callee(self, call, cause, now):
        """Leg b of a call still ringing goes (RELEASE with cause to the phone that rang), so that
        another leg b can be offered: forwarding on no answer or on busy. Leg a stays as it is."""
        leg = call.b
        if leg is None:
            return
        self.drop_leg(leg, cause, now)
        call.b = None

    def drop_leg(self, leg, cause, now):
        """RELEASE with cause on one leg, which goes; its call goes on (a group's member, host/groups.py)."""
        self.release(leg, cause, now)
        self._forget_leg(leg, now)

    def forget_leg(self, leg, now):
        """A leg whose far end released it goes; its call goes on (host/groups.py)."""
        self._forget_leg(leg, now)

    def release_leg(self, leg, cause, now, send=True):
        """One leg goes while its call stays (a conference): RELEASE with cause to it unless send
        is False (it released itself), and its call number is free again."""
        if send:
            self.release(leg, cause, now)
        self._forget_leg(leg, now)

    def _forget_leg(self, leg, now):
        """leg is released: its call number is free again, its late frames still authenticate a while."""
        key = self.key(leg.link, leg.call_no)
        if self.legs.get(key) is not leg:
            return
        leg.apply(TIMEOUT)    # released, whatever ended it
        del self.legs[key]
        leg.link.legs -= 1
        if type(key) is tuple:
            self.own_legs -= 1
            if leg.link.kind == "phone":
                self._unmini(leg)
            elif self.trunk_own.get(leg.call_no) is leg:
                del self.trunk_own[leg.call_no]
                self.trunk_classes[cluster.call_no_node(leg.call_no)] -= 1
        media = leg.direct[0] if leg.direct else leg.media
        self._ended[key] = (max(media.replay.highest, leg.media.replay.highest), leg.link.serial,
                            leg.direct[1].serial if leg.direct else None, now)
        self._ended_order.append((now, key))

    def move(self, leg, link):
        """leg (ours, on a trunk to a lost node) onto link, the trunk of the node that took the lost node's half
        over (NodeTrunks.claim), or a remote host's leg onto its standby session (host/remote_host.py
        _moved_to_standby); False, and nothing moved, when link has another leg with its number."""
        key = self.key(link, leg.call_no)
        if self.legs.get(key, leg) is not leg:
            return False
        del self.legs[self.key(leg.link, leg.call_no)]
        self.legs[key] = leg
        leg.link.legs -= 1
        leg.link = link
        link.legs += 1
        return True

    def _unmini(self, leg):
        had = self.minis.get(leg.call_no)
        if had is leg:
            del self.minis[leg.call_no]
        elif type(had) is list and leg in had:
            had.remove(leg)
            if len(had) == 1:
                self.minis[leg.call_no] = had[0]

    def _forget_ended(self, now):
        """Ended calls are remembered for ENDED_KEEP_MS (frames in flight), never more than ENDED_MAX."""
        order, ended = self._ended_order, self._ended
        while order and (now - order[0][0] > ENDED_KEEP_MS or len(order) >= ENDED_MAX):
            when, key = order.popleft()
            entry = ended.get(key)
            if entry is not None and entry[3] == when:   # not a later call's that ended with this number
                del ended[key]

    # a message from the far end of one leg, and what the switch says on the other leg
    _PASS = {wire.ALERTING: (ALERTING_RECEIVED, ALERTING_SENT), wire.ANSWER: (ANSWER_RECEIVED, ANSWER_SENT),
             wire.DTMF: (DTMF_RECEIVED, DTMF_SENT), wire.RELEASE: (RELEASE_RECEIVED, RELEASE_SENT)}

    def pass_on(self, leg, msg_type, ies, now):
        """ALERTING, ANSWER, DTMF or RELEASE from leg's far end, passed on to the other leg when both
        legs' state machines allow it (common/call.py); returns msg_type, or None when it was out of
        turn (e.g. ANSWER from the caller's side, or before the other leg is set up)."""
        other = other_leg(leg)
        events = self._PASS.get(msg_type)
        if events is None or (msg_type == wire.DTMF and wire.IE_DIGIT not in ies):
            return None
        received, sent = events
        if msg_type == wire.RELEASE:   # always ends the call, whatever the other leg's state, or before
            leg.apply(received)        # there is one (a local call awaiting its grant)
            leg.call.cause = ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL)
            if other is not None:
                self.release(other, leg.call.cause, now)
            return msg_type
        if other is None:
            return None
        before = leg.state
        if leg.apply(received) is None:
            return None
        call = leg.call
        # a call joined by a transfer (host/lines.py): the party that stays is connected already
        joined = msg_type != wire.DTMF and leg is call.b and other.state == CONNECTED
        if not joined and other.apply(sent) is None:
            leg.state = before
            return None
        if msg_type == wire.ALERTING:
            call.alerted_ms = now
        elif msg_type == wire.ANSWER:
            self.answered(call, now)
        if not joined:
            send_on_leg(other, msg_type, {wire.IE_DIGIT: ies[wire.IE_DIGIT]} if msg_type == wire.DTMF else {}, now)
        return msg_type

    def leg_for(self, ies, link, release=False):
        """Our leg named by a message's peer call number, if it belongs to this link. A RELEASE
        without one (the far end sends before it heard from us: a caller hanging up at once)
        names the leg by the far end's own call number, among this link's legs; no other message
        is sent that early, so no other makes the host look through its legs."""
        ours = ies.get(wire.IE_PEER_CALL_NO)
        if ours is None:
            if not release:
                return None
            theirs = ies.get(wire.IE_CALL_NO)
            if not theirs:
                return None
            for leg in self.legs.values():
                if leg.link is link and leg.peer_call_no == theirs:
                    return leg
            return None
        leg = self.leg(link, ours)
        if leg is None:
            return None
        leg.learn_peer(ies.get(wire.IE_CALL_NO))
        return leg

    def calls_of(self, link, pump=None):
        """The calls with a leg on link; pump(), when given, at each call looked at (HostCore.pump)."""
        if pump is None:
            return [c for c in list(self.calls.values()) if (c.a and c.a.link is link) or (c.b and c.b.link is link)]
        found = []
        for c in list(self.calls.values()):
            pump()
            if (c.a and c.a.link is link) or (c.b and c.b.link is link):
                found.append(c)
        return found

    # media in

    def mini_in(self, frame, now, address=None):
        """Open a mini frame from a phone (at address) and forward it; the leg when the frame was new (its
        phone may have moved: the caller notes the address), else None (dropped, counted)."""
        call_no, _ts = wire.parse_mini(frame)
        leg = self.minis.get(call_no) if self.node_id is not None else self.legs.get(call_no)
        if leg is None:
            self.stats.drop("unknown call number")
            return None
        if type(leg) is list:    # phones of a node whose legs share the number (numbered per session)
            leg, ts = self._open_shared(leg, frame, address)
        elif leg.link.trunked:
            self.stats.drop("mini frame for a trunked leg")  # host links send trunk frames only
            return None
        else:
            ts = leg.media.open_mini(frame)
        if ts is None:
            self.stats.drop("media rejected")
            return None
        self.stats.count("media in")
        payload = bytes(frame[wire.MINI_HEADER:len(frame) - wire.MEDIA_TAG])
        self.forward(leg, ts, codec.from_phone(leg.link, payload) if leg.link.codec else payload, now)
        return leg

    def _open_shared(self, legs, frame, address):
        """(leg, timestamp) of a mini frame whose number several phones' legs have: the one whose phone sends
        from address first, then (a phone that moved, B7) whichever leg's key opens it; else (None, None).
        A frame no leg opens costs as many tag checks as legs share the number (32,767 phone legs on a
        node: about 16)."""
        self.stats.count("mini frames of a shared number")
        first = None
        for leg in legs:
            if leg.link.address == address:
                first = leg
                ts = leg.media.open_mini(frame)
                if ts is not None:
                    return leg, ts
                break
        for leg in legs:
            if leg is not first:
                ts = leg.media.open_mini(frame)
                if ts is not None:
                    return leg, ts
        return None, None

    def trunk_in(self, frame, link, now, direct=False):
        """Open a trunk frame from link and forward its entries; True when it carried new media.

        Only legs of link are opened (with direct, legs whose direct path is link):
        the frame's tag proves who sent it, not that the sender is party to the
        calls it names. False for a frame that fails, or whose entries were all
        replays: such a frame says nothing about where the peer is (B7).
        """
        auth = link.trunk_recv_auth if link.kind == "pair" else (
            link.session.channel.crypto.recv_auth if link.session is not None else link.login.channel.crypto.recv_auth)
        if self.fast is not None and not direct:
            handled = self.fast.trunk_in(self, frame, link, auth)   # None: not the common case, untouched
            if handled is not None:
                return handled
        legs = self.legs
        ended = self._ended
        own = self.own_numbers(link)   # a node's remote host: its legs are (link, number) in legs and ended

        def media_of(call_no):
            leg = legs.get((link, call_no) if own else call_no)
            if leg is None:
                return None
            if direct:
                return leg.direct[0] if leg.direct is not None and leg.direct[1] is link else None
            return leg.media if leg.link is link else None

        def extend(call_no, ts16):
            media = media_of(call_no)
            if media is not None:
                return extend16(media.replay.highest, ts16)
            gone = ended.get((link, call_no) if own else call_no)  # just ended: its frames still authenticate
            if gone is None or (gone[2] if direct else gone[1]) != link.serial:
                return None
            return extend16(gone[0], ts16)

        entries = open_trunk(auth, frame, extend)
        stats = self.stats
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
            out = self.forward(legs[(link, call_no) if own else call_no], ts, payload, now)
            if out is not None:
                relayed.add(out)
        stats.count("media in", opened)
        return opened > 0

    # media out

    def forward(self, leg, ts, payload, now):
        # host/_fastpath.c (prepare, trunk_in_impl) does this for the common case and hands every other
        # case back: a new condition here needs one there too (tests/test_fastpath.py compares the two)
        call = leg.call
        if call.conference is not None:   # mixed at the tick (host/conference.py), not forwarded
            call.conference.receive(leg, ts, payload, self.stats)
            return None
        if call.fanout is not None:
            return self._page(call, leg, ts, payload)
        if call.b is None or call.b.state not in (CONNECTED, RINGBACK):
            self.stats.drop("media before answer")
            return None
        out = other_leg(leg)
        if out.peer_call_no is None:
            return None
        held = call.held_by
        i = 0 if out is call.a else 1
        ts += call.ts_shift[i]
        if held is not None and (out is held or (leg is held and held.link.kind == "phone")):
            self.stats.count("media held")   # the held party's voice stops here; the holder's is music
            if out is held and ts - call.ts_out[i] >= KEEP_MS:
                # towards the holder, comfort noise (level 0) each second of the held party's timeline instead: the
                # legs on the way keep their replay windows within reach of it (docs/protocol.md section 5: a
                # 16-bit timestamp; a hold over 32 s made every frame after it fail, and with it the trunk frames
                # that carried it, other calls' too)
                call.ts_out[i] = ts
                self.stats.count("hold keepalives")
                return self.send_media(out, ts, KEEP_CN)
            return None
        last = call.moh_last[i]
        if last is not None:       # the first voice after music on hold: it carries on after the music
            if ts <= last:
                call.ts_shift[i] += last + 20 - ts
                ts = last + 20
            call.moh_last[i] = None
        if ts > call.ts_out[i]:
            call.ts_out[i] = ts
        call.frames += 1
        return self.send_media(out, ts, payload)

    def _page(self, call, leg, ts, payload):
        """A page (host/groups.py): the pager's frame to every paged phone that answered; nothing back."""
        if leg is not call.a:
            self.stats.drop("page is one way")
            return None
        for out in call.fanout:
            if out.state == CONNECTED and out.peer_call_no:
                self.send_media(out, ts, payload)
        call.frames += 1
        return None

    def music_on_hold(self, call, payload, now):
        """One frame of music on hold to the party a held call's holder left (the holder's host
        calls this every tick), on the timeline the holder's voice was on and will carry on."""
        out = other_leg(call.held_by)
        if out is None or out.peer_call_no is None:
            return None
        i = 0 if out is call.a else 1
        ts = max(call.ts_out[i] + 20, (now - (call.answered_ms or now)) // 20 * 20)
        call.ts_out[i] = call.moh_last[i] = ts
        self.stats.count("music on hold frames")
        return self.send_media(out, ts, payload)

    def send_media(self, leg, ts, payload):
        """Send a frame to leg now (mini frame) or queue it; returns the link whose trunk queue took it."""
        direct = leg.direct
        if direct is not None and direct[1].up:
            link = direct[1]
            media = direct[0]
        else:
            link = leg.link
            if link.kind == "app":     # the host's own endpoint (host/voicemail.py) takes it here
                link.media(leg, ts, payload)
                return None
            if not link.trunked:
                if link.codec:        # an A-law phone (host/codec.py)
                    payload = codec.to_phone(link, payload)
                self.send(leg.media.seal_mini(ts, payload), link.address, True)
                return None
            media = leg.media
        queue = self._trunks.get(link)
        if queue is None:
            queue = self._trunks[link] = []
        queue.append((media, ts, payload))
        return link

    def flush(self):
        """Send every queued frame, one trunk datagram per peer host per tick (MTU permitting)."""
        trunks = self._trunks
        self._trunks = {}
        self._relayed.clear()
        for link, entries in trunks.items():
            self._send_trunks(link, entries)

    def flush_link(self, link):
        """Send the frames queued for link's trunk now rather than at the tick (release)."""
        entries = self._trunks.pop(link, None)
        if entries:
            self._send_trunks(link, entries)

    def flush_relayed(self):
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
        keys = link.trunk_keys()
        if keys is None:   # its login is down (logging in again): nothing can be sealed for it now
            self.stats.drop("media to a link that is down")
            return
        auth, index = keys
        frames = (self.fast.seal_trunks(auth, index, entries, self.trunk_mtu) if self.fast is not None
                  else self._seal_trunks(auth, index, entries))
        for frame in frames:
            self.send(frame, link.address, True)
            self.stats.count("trunks out")
            self.bytes_out_by_link[link.name] = self.bytes_out_by_link.get(link.name, 0) + len(frame) + wire.IP_UDP_HEADERS

    def _seal_trunks(self, auth, index, entries):
        """The trunk frames of entries, one at a time (each a view of one buffer: send it before the next)."""
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
            yield seal_trunk(auth, index, entries[i:j] if i or j < count else entries, self._buf)
            i = j


def pair_keys(pair_key, role):
    """(send HmacKey, recv HmacKey) for trunk frames between two remote hosts."""
    m = hkdf(pair_key, b"", b"upbx v1 pair", 64)
    mine, theirs = (m[:32], m[32:]) if role == 0 else (m[32:], m[:32])
    return HmacKey(mine), HmacKey(theirs)
