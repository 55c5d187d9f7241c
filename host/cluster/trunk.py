"""Calls between clients of two nodes (docs/cluster.md, "Calls between nodes").

Two parts, as SIP proxies of one domain do it (Kamailio's or OpenSIPS's location in a shared
store, a call proxied on to the instance that holds the registration; CUCM's intercluster trunks):

- **Where each client is** (`Location`): one Redis key per remote host and per phone straight at a
  node, `upbx:loc:KIND:NAME` = the node id, written at login, refreshed while logged in, deleted
  at logout (only by the node it names), expiring `LOCATION_TTL_S` after its last write (a killed
  node's keys go by themselves), as rtpengine keeps one key per call. The core never waits on
  Redis: a SETUP for a client that is not here and not in the node's cache waits (parked) while
  `LocationService` reads the key on the daemon's loop, and is routed again when it answers.
- **A trunk session between each pair of nodes** (`NodeTrunks`): every node logs in to every
  other live node as a client (common/login.py, the remote host's own login), under the identity
  `@ID` with a secret derived from the cluster's cookie secret in etcd (only nodes have it). A
  call from a client of node A to a client of node B is two calls of the same kind as today, one
  at each node: A switches caller <-> its login to B (a link of kind "node"), B switches that
  session (the server side, also a link of kind "node") <-> callee. Signalling is the usual call
  messages leg to leg; media goes in trunk frames, packed per node pair, on the session's keys.
  Each node watches its own login to each other node (PING every 0.5 s, down after 2 s of
  silence): when the other node is lost, the node holds its answered calls over that trunk while the
  lost node's successor takes that half over from Redis (spliced here when we are the successor,
  else claim() moves our leg to the successor's trunk), and ends the rest with cause 18 "main host
  lost" towards its own clients, keeping its record of them.

Why a trunk per node pair and not one node relaying with the other's keys from Redis: each node
stays the only one that holds its clients' sessions (no key of a live session leaves the node,
nothing per call is read from Redis on the media path), each half of a call is a call of the
node's own switch (every call message, hold, refusal cause and forwarding works unchanged), and a
lost node costs the other only the calls over that one trunk. The cost: a cross-node call's media
takes two relay hops (A then B) instead of one.
"""
import os

from upbx.common import wire
from upbx.common.crypto import hkdf
from upbx.common.login import UP, Login, LoginDown, LoginUp
from upbx.host.switch import Link, send_on_leg

PREFIX = "@"                    # identities of nodes: "@ID" (a directory name starts with a letter or digit)
KEEPALIVE_MS = 500              # PING on an idle trunk session
DEAD_MS = 1500                  # nothing new heard for KEEPALIVE_MS + DEAD_MS: the other node is lost

LOCATION_KEY = "upbx:loc:%s:%s"  # kind ("host" or "phone"), name -> node id
LOCATION_TTL_S = 30              # a key lives this long after its last write
REFRESH_S = 10                   # ... and is written again this often while its client is logged in
CACHE_MS = 2000                  # how long a node trusts what Redis said of a client
PARK_MS = 1500                   # a SETUP waits at most this long for its callee's location (then "unreachable")
ABSENT_ASK_MS = 100              # while SETUPs wait and Redis names no node, it is asked again this often
PARKED_MAX = 4096                # SETUPs waiting at once; more are refused
PENDING = "pending"              # _target_link's cause while Redis is asked
HOLD_MS = 10000                  # a call towards a lost node (answered or ringing) waits this long for its successor
# a location key is deleted only by the node it names (a client that moved on is another node's now)
DELETE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# a client logged in here that has not said whether this is its home: ours unless another node's, and
# that node is not one whose loss this node saw (ARGV[3...], NodeTrunks.gone: listed in etcd, then its
# lease ended with its trunk silent). Never on mere absence from the live list: a node that has not read
# etcd yet lists nobody (a site's standby login at start-up took its home node's key so, in session 7)
SET_UNLESS_OTHERS = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then
  local gone = false
  for i = 3, #ARGV do
    if ARGV[i] == v then gone = true end
  end
  if not gone then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return 1
"""


def node_secret(cookie_secret, node_id):
    """The login secret of node node_id's trunk sessions (every node derives it from etcd's secret)."""
    return hkdf(cookie_secret, b"", b"upbx v2 node trunk %d" % node_id, 32)


def node_of_identity(name):
    """The node id of a trunk identity "@ID", else None."""
    if not name.startswith(PREFIX) or not name[1:].isdigit():
        return None
    return int(name[1:])


class NodeTrunks:
    """This node's trunk sessions: its logins to the other nodes, and where its clients' peers are."""

    def __init__(self, core, node_id, cookie_secret):
        self.core = core
        self.node_id = node_id
        self.cookie_secret = cookie_secret
        self.links = {}          # node id -> Link (kind "node") of our login to it
        self.by_index = {}       # our receive index of such a login -> its Link
        # location (Redis): the LocationService reads and writes, the core never waits
        self.cache = {}          # (kind, name) -> (node id or None, until ms)
        self.asked = set()       # identities to read from Redis
        self.parked = {}         # identity -> [(link, ies, when)] SETUPs waiting for Redis
        # identity -> ms of its next look: Redis named no node while SETUPs to it wait (its location may be
        # being written by the node it just logged in at: asked again until one names it or PARK_MS passes)
        self.absent = {}
        # identity -> "set" (its home is here: NODES standby 0), "nx" (logged in here and has not said:
        # set unless another node has it), or None (gone, or a standby session: delete it if it names us)
        self.writes = {}
        self.homes = set()       # identities whose session here said it is their home (NODES standby 0)
        self.standbys = set()    # identities whose session here is their standby (NODES standby 1)
        self.wake = None         # set by LocationService: an asyncio.Event it waits on
        self.lost = 0            # calls ended because the other node was lost
        self.held = {}           # our call number -> (give-up ms, lost node, leg): legs towards a lost node, whose
                                 # half its successor may take over (Takeover, host/cluster/calls.py)
        self.carried = 0         # calls carried on through a lost node's successor
        self.unlisted = set()    # nodes etcd no longer lists whose trunk is still up and heard (set_nodes)
        self.gone = set()        # nodes whose loss we saw (listed, then unlisted with their trunk silent): a
                                 # phone's location key naming one is taken over (SET_UNLESS_OTHERS)

    # the trunk sessions

    def secret_of(self, name):
        """The secret of a node's trunk identity "@ID" (a login to us), else None."""
        node = node_of_identity(name)
        if node is None or node == self.node_id:
            return None
        return node_secret(self.cookie_secret, node)

    def set_nodes(self, nodes, now):
        """The live nodes {id: address}: a login to each other one, none to a node that left."""
        for node, address in nodes.items():
            if node == self.node_id:
                continue
            self.unlisted.discard(node)
            if node in self.gone:
                self.gone.discard(node)
                self.core.log.info("node-back", node=node)   # started again (its number is kept by name)
            link = self.links.get(node)
            if link is None:
                index = self.core.peers.reserve_index()
                login = Login(wire.IE_HOST_NAME, PREFIX + str(self.node_id), node_secret(self.cookie_secret, self.node_id),
                              index, os.urandom, keepalive_ms=KEEPALIVE_MS, backoff_initial_ms=250,
                              backoff_max_ms=2000, dead_ms=DEAD_MS)
                link = Link("node %d" % node, "node", login=login, address=tuple(address))
                link.site = "@nodes"
                link.node = node
                link.peer_index = index   # our receive index (Link.peer_index is unused on a login link)
                self.links[node] = link
                self.by_index[index] = link
                login.start(now)
                self.core.log.info("node-trunk", node=node, state="logging-in", address="%s:%d" % tuple(address))
            elif link.address != tuple(address):
                link.address = tuple(address)
        for node in [n for n in self.links if n not in nodes]:
            link = self.links[node]
            if self._alive(link, now):
                # etcd lists it no more (its lease lapsed: a node starved of CPU, or cut off from etcd
                # alone) but it answers on its trunk: it is not lost. Its trunk's own silence (DEAD_MS)
                # decides; dropping the session here cost every call over it (docs/cluster.md)
                if node not in self.unlisted:
                    self.unlisted.add(node)
                    self.core.stats.count("node trunk: unlisted but alive")
                    self.core.log.warning("node-trunk", node=node, state="unlisted-alive")
                continue
            self.unlisted.discard(node)
            link = self.links.pop(node)
            del self.by_index[link.peer_index]
            self.core.peers.release_index(link.peer_index)
            link.up = False
            self._lost(node, link, "left the cluster", now)
            self._gone(node, now)
        self.flush(now)

    def _gone(self, node, now):
        """node's loss is known: etcd listed it, lists it no more, and its trunk is silent. A client logged
        in here that names no home (a phone straight at a node without a standby, logged in again after its
        node died, maybe before we knew) takes its location key over from it now, not when the key expires
        (docs/cluster.md)."""
        self.gone.add(node)
        self.core.log.info("node-gone", node=node)
        for identity in self.core.links_by_name:
            if identity[0] == "phone" and identity not in self.homes and identity not in self.standbys:
                self.writes.setdefault(identity, "nx")
        self._wake()

    @staticmethod
    def _alive(link, now):
        """Our login to a node is up and heard from within its liveness limit."""
        login = link.login
        heard = login.last_heard_ms
        return (login.state == UP and heard is not None
                and now - heard <= KEEPALIVE_MS + DEAD_MS)

    def up(self, node):
        """Our trunk link to node when its session is up, else None."""
        link = self.links.get(node)
        return link if link is not None and link.login.state == UP else None

    def live(self):
        """The ids of the nodes whose trunk session is up, lowest first."""
        return [node for node in sorted(self.links) if self.up(node) is not None]

    def receive(self, kind, data, addr, now):
        """True when data is for one of our logins (its receive index), handled here."""
        if kind == wire.KIND_MINI or len(data) < 3:
            return False
        link = self.by_index.get(wire.session_of(data))
        if link is None:
            return False
        login = link.login
        if addr[:2] != link.address[:2]:
            self.core.stats.drop("node trunk: from another address")
            return True
        if kind == wire.KIND_TRUNK:
            if login.state != UP:
                self.core.stats.drop("node trunk: not up")
                return True
            if self.held:
                self.claim_trunk(link, data, now)
            if self.core.switch.trunk_in(data, link, now):
                login.heard(now)
            return True
        before = login.channel.authenticated if login.channel is not None else None
        messages = login.receive(data, now)
        if login.channel is not None and login.channel.authenticated == before and not messages:
            self.core.stats.drop("node trunk: bad tag")
        self._events(link, now)
        for msg_type, ies in messages:
            if self.held and wire.IE_PEER_CALL_NO in ies:
                self.claim(link, (ies[wire.IE_PEER_CALL_NO],), now)
            self.core._message(link, msg_type, ies, now)
        self._flush_link(link, now)
        return True

    def _events(self, link, now):
        node = int(link.name.split()[1])
        for event in link.login.take_events():
            if isinstance(event, LoginUp):
                link.up = True
                self.core.log.info("node-trunk", node=node, state="up")
                # halves of that node's calls spliced here while it was silent (host/cluster/calls.py _splice): if it
                # was only stopped or cut off, it forgets its copies, unheard and unrecorded
                # (MainHost._taken_over_elsewhere), rather than ending them later and recording them "unreachable"
                for call in self.core.switch.calls.values():
                    if call.spliced is not None and call.spliced[1] == node:
                        link.send_signal(wire.NODES, {wire.IE_STANDBY: 0, wire.IE_CALL_ID: bytes.fromhex(call.spliced[0])},
                                         now)
                        self.core.stats.count("node trunk: spliced calls told to their node")
            elif isinstance(event, LoginDown):
                self.core.log.warning("node-trunk", node=node, state="down", reason=event.reason)
                self._lost(node, link, event.reason, now)

    def _lost(self, node, link, reason, now):
        """The trunk to node is down: every call over it (our login, and its login to us), answered or ringing,
        is held for HOLD_MS: the lost node's clients switch to its successor, which takes its half over from
        Redis and sends on it (claim() moves our leg to that node's trunk, or Takeover splices the call here
        when we are the successor). A conference's party, a group's member leg, and what is not taken over
        in time end here with cause "main host lost" towards our clients, recorded here."""
        core = self.core
        # what we said on its legs since the lost node was last heard may have been lost with it (claim)
        heard = link.login.last_heard_ms if link.login is not None else None
        since = heard if heard is not None else now - KEEPALIVE_MS - DEAD_MS
        links = [link]
        theirs = core.links_by_name.get(("host", PREFIX + str(node)))
        if theirs is not None:
            links.append(theirs)
        for each in links:
            calls = core.switch.calls_of(each)
            if not calls:
                continue
            held = 0
            gone = []
            for call in calls:
                leg = call.a if call.a is not None and call.a.link is each else call.b
                # answered or still ringing (since session 15: a ringing call ended "main host lost" at once);
                # not a conference's party, nor a group's member leg (neither leg a nor b of its call)
                if call.conference is None and leg is not None and leg.link is each and leg.call_no not in self.held:
                    self.held[leg.call_no] = (now + HOLD_MS, node, leg, since)
                    held += 1
                    takeover = getattr(core, "takeover", None)
                    if takeover is not None and leg.peer_call_no:
                        # the lost node's call with this leg, by its name for this trunk: a call it joined between
                        # us and a third node is carried on by one of us (host/cluster/calls.py Takeover.joined)
                        theirs = PREFIX + str(self.node_id) if each is link else "node %d" % self.node_id
                        takeover.joined("node", theirs, leg.peer_call_no, now)
                elif leg is None or leg.call_no not in self.held:
                    gone.append(call)
            core.log.info("node-lost", node=node, reason=reason, calls=len(calls), held=held)
            if gone:
                self._release(each, gone, now)

    def _release(self, link, calls, now):
        """calls over link (a trunk to a lost node) end with "main host lost" towards our clients; in a
        conference mixed here only the party at the lost node leaves, the others carry on."""
        core = self.core
        was = link.up
        link.up = False   # recorded here now (on_call_ended)
        for call in calls:
            leg = call.a if call.a is not None and call.a.link is link else call.b
            self.held.pop(leg.call_no, None)
            if core.switch.leg(link, leg.call_no) is not leg:   # ended meanwhile (a conference's last party)
                continue
            if call.conference is not None:
                core.conferences.link_gone(call, link, wire.CAUSE_MAIN_LOST, now)
            else:
                other = call.b if leg is call.a else call.a
                if other is not None:
                    core.switch.release(other, wire.CAUSE_MAIN_LOST, now)
                core.end_call(call, wire.CAUSE_MAIN_LOST, now)
            self.lost += 1
            core.stats.count("node trunk: calls lost")
        link.up = was

    def claim(self, link, call_nos, now):
        """A node's trunk session (link) names our held legs (call_nos): the lost node's successor took its
        half over and sends on it. The legs move to link (the frame authenticated as that node's, which
        the cluster's secret proves) and the call goes on."""
        switch = self.core.switch
        for call_no in call_nos:
            entry = self.held.pop(call_no, None)
            if entry is None:
                continue
            leg = entry[2]
            if switch.leg(leg.link, call_no) is not leg or leg.link is link:   # it ended meanwhile, or is here
                continue
            was = leg.link
            if not switch.move(leg, link):   # two nodes lost at once (docs/cluster.md, "Node trunks")
                self.held[call_no] = entry
                self.core.stats.drop("node trunk: claimed number in use on that trunk")
                continue
            pair = leg.call.xpair
            if pair is not None and pair.trunk is was:   # a direct call's pair: offered on that trunk from now on
                pair.trunk = link
            self._say_again(leg, entry[3], now)
            self.carried += 1
            self.core.stats.count("node trunk: calls carried on")
            self.core.log.info("call-carried-on", call=leg.call.uid, via=link.name)

    def claim_live(self, link, call_no, their_no, now):
        """A node's trunk session (link) names our leg call_no, its number their_no, which is not held: it took over
        the half of a node that lives but fell silent towards its client alone (a one-sided switch, docs/cluster.md),
        from that node's key, with that node's numbers. Our leg, on our trunk with that node, moves to link; that
        node is told on the old trunk (NODES standby 1 naming its leg) and forgets its half
        (MainHost._leg_moved_away)."""
        leg = self.live_leg(call_no, their_no, besides=link)
        if leg is None:
            return
        old = leg.link
        if not self.core.switch.move(leg, link):
            self.core.stats.drop("node trunk: claimed number in use on that trunk")
            return   # the silent node is told nothing: its half and our leg stay as they were
        old.send_signal(wire.NODES, {wire.IE_STANDBY: 1, wire.IE_CALL_NO: leg.call_no,
                                     wire.IE_PEER_CALL_NO: leg.peer_call_no}, now)
        pair = leg.call.xpair
        if pair is not None and pair.trunk is old:
            pair.trunk = link
        self.carried += 1
        self.core.stats.count("node trunk: calls moved to another node")
        self.core.log.info("call-moved", call=leg.call.uid, via=link.name, was=old.name)

    def _trunks(self):
        """Every trunk link whose session is up: our logins and the other nodes' logins to us."""
        links = [link for link in self.links.values() if link.login is not None and link.login.state == UP]
        return links + [link for link in self.core.links_by_name.values() if link.kind == "node" and link.up]

    def _say_again(self, leg, since, now):
        """A ringing call's ALERTING or ANSWER we sent on leg (it had our SETUP's answer to give: leg a) after
        the lost node was last heard went nowhere, or to a node that died with it: said again on the trunk
        that carries the leg now (the successor's: a ringing call answered here while it was held). Said
        twice, the second is dropped there as out of turn."""
        call = leg.call
        if leg is not call.a:
            return
        if call.answered_ms is not None and call.answered_ms >= since:
            send_on_leg(leg, wire.ANSWER, {}, now)
            self.core.stats.count("node trunk: answers said again")
        elif call.answered_ms is None and call.alerted_ms is not None and call.alerted_ms >= since:
            send_on_leg(leg, wire.ALERTING, {}, now)

    def claim_trunk(self, link, frame, now):
        """A trunk frame from a node's session (checked as a whole by trunk_in right after): the held legs
        it names move to that session first, so that it opens them."""
        try:
            entries = wire.parse_trunk(frame)
        except wire.DecodeError:
            return
        names = [e[0] for e in entries if e[0] in self.held]
        if not names:
            return
        # the frame's tag covers its entries' timestamps, extended from each leg's own: checked here first
        # with the legs moved, and the move undone if it is not that node's
        auth = link.login.channel.crypto.recv_auth if link.login is not None else link.session.channel.crypto.recv_auth
        from upbx.common.crypto import extend16
        from upbx.common.media import open_trunk
        switch, held = self.core.switch, self.held

        def extend(call_no, ts16):
            leg = held[call_no][2] if call_no in held else switch.leg(link, call_no)
            return extend16(leg.media.replay.highest, ts16) if leg is not None else None
        if open_trunk(auth, frame, extend) is None:
            self.core.stats.drop("node trunk: claim with a bad tag")
            return
        self.claim(link, names, now)

    def held_leg(self, call_no):
        """Our held leg call_no (towards a lost node), else None: Takeover splices it when we are the successor."""
        entry = self.held.get(call_no)
        return entry[2] if entry is not None else None

    def live_leg(self, call_no, their_no, besides=None):
        """Our leg call_no, not held, on a trunk whose session is up (but besides), the other node's number for it
        their_no, else None: a half of a call between us and a node that lives, taken over from it
        (host/cluster/calls.py _splice, claim_live)."""
        for link in self._trunks():
            if link is besides:
                continue
            leg = self.core.switch.leg(link, call_no)
            if leg is not None and leg.peer_call_no == their_no and leg.call_no not in self.held:
                return leg
        return None

    def other_session(self, link):
        """The other trunk session between us and link's node (ours to it, or its login to us), else None:
        a call from that node runs on its login, a call to it on ours."""
        if link.node is None:
            return None
        if link is self.links.get(link.node):
            return self.core.links_by_name.get(("host", PREFIX + str(link.node)))
        return self.links.get(link.node)

    def link_for(self, kind, name):
        """What a lost node's call key names as a node link, here: "self" (the link was towards us: the
        call's other half is ours), our link to/from that node, or None."""
        if kind != "node":
            return None
        if name.startswith(PREFIX):          # that node's login to the lost node
            node = node_of_identity(name)
            if node == self.node_id:
                return "self"
            return self.core.links_by_name.get(("host", name))
        if name.startswith("node "):         # the lost node's login to that node
            try:
                node = int(name[5:])
            except ValueError:
                return None
            return "self" if node == self.node_id else self.up(node)
        return None

    def tick(self, now):
        if self.held:
            late = [n for n, entry in self.held.items() if now >= entry[0]]
            for call_no in late:
                leg = self.held[call_no][2]
                if self.core.switch.leg(leg.link, call_no) is not leg:   # it ended meanwhile
                    self.held.pop(call_no, None)
                    continue
                self._release(leg.link, [leg.call], now)
        for link in list(self.links.values()):
            login = link.login
            timer = login.next_timer()
            if timer is not None and timer <= now:
                login.handle_timer(now)
                self._events(link, now)
            self._flush_link(link, now)
        if self.parked:
            self._parked_tick(now)

    def _parked_tick(self, now):
        """SETUPs that waited PARK_MS: routed again as no node has their callee (Redis said so all along:
        unreachable, or the callee's voicemail), or refused (Redis did not answer). An absent callee is
        looked up again every ABSENT_ASK_MS meanwhile."""
        for identity in list(self.parked):
            waiting = self.parked[identity]
            while waiting and now - waiting[0][2] > PARK_MS:
                link, ies, _when = waiting.pop(0)
                if identity in self.absent:
                    self.core.stats.count("location: none found")
                    self.cache[identity] = (None, now + CACHE_MS)
                    if link.up:
                        self.core._setup(link, ies, now)
                else:
                    self.core.stats.count("location: not answered in time")
                    self.core.refuse_setup(link, ies, wire.CAUSE_UNREACHABLE, now)
            if not waiting:
                del self.parked[identity]
                if self.absent.pop(identity, None) is not None:
                    self.cache.pop(identity, None)   # "none" was the answer for the SETUPs that waited, not kept
            elif identity in self.absent and now >= self.absent[identity] and identity not in self.asked:
                self.asked.add(identity)
                self.absent[identity] = now + PARK_MS   # until Redis answers (answered)
                self._wake()

    def flush(self, now):
        for link in self.links.values():
            self._flush_link(link, now)

    def _flush_link(self, link, now):
        for datagram in link.login.datagrams_to_send(now):
            self.core.send(datagram, link.address)

    # where each client is (Redis)

    def logged_in(self, identity):
        if identity[1].startswith(PREFIX):
            return
        self.homes.discard(identity)
        self.standbys.discard(identity)
        self.writes[identity] = "nx"
        self.cache.pop(identity, None)
        self._wake()

    def home(self, identity):
        """A client said its session here is its home (NODES standby 0): its location key names us."""
        self.homes.add(identity)
        self.standbys.discard(identity)
        self.writes[identity] = "set"
        self._wake()

    def standby(self, identity):
        """A client said its session here is its standby (NODES standby 1): calls for it are never
        routed here while its home is elsewhere, and its location key never names us."""
        if identity[1].startswith(PREFIX):
            return
        self.homes.discard(identity)
        self.standbys.add(identity)
        self.writes[identity] = None
        self._wake()

    def logged_out(self, identity):
        if identity[1].startswith(PREFIX):
            return
        self.homes.discard(identity)
        self.standbys.discard(identity)
        self.writes[identity] = None
        self._wake()

    def route(self, identity, now, wait, here=None):
        """(link, cause) for a client that is not home here: our trunk link to the node Redis names, else
        `here` (its session here, which did not say it is its home) when Redis names no other node, else None with
        CAUSE_UNREACHABLE; or PENDING (wait: the caller parks its SETUP) while Redis is asked."""
        entry = self.cache.get(identity)
        if entry is not None and now < entry[1]:
            node = entry[0]
            if node is None or node == self.node_id:
                return (here, None) if here is not None else (None, wire.CAUSE_UNREACHABLE)
            link = self.up(node)
            if link is not None:
                return link, None
            self.core.stats.count("location: node trunk not up")
            if not wait:
                return None, wire.CAUSE_UNREACHABLE
            # that node is lost (or not reached yet): its client may be logging in at another node this moment, whose
            # write is on its way. Asked again, the SETUP waits, as for a client no node names yet (answered)
            del self.cache[identity]
        if identity not in self.asked:   # asked once: a group call asks again each tick until Redis answers
            self.asked.add(identity)
            self._wake()
        if wait:
            return None, PENDING
        return (here, None) if here is not None else (None, wire.CAUSE_UNREACHABLE)

    def park(self, identity, link, ies, now):
        if sum(len(w) for w in self.parked.values()) >= PARKED_MAX:
            self.core.stats.drop("location: too many waiting")
            return self.core.refuse_setup(link, ies, wire.CAUSE_NETWORK_BUSY, now)
        self.parked.setdefault(identity, []).append((link, dict(ies), now))
        self.core.stats.count("location: setups waiting")

    def answered(self, answers, now):
        """Redis said {identity: node id or None}: cached, and the SETUPs that waited are routed again; those
        to a client no node names wait on (_parked_tick)."""
        for identity, node in answers.items():
            self.asked.discard(identity)
            if self.parked.get(identity) and (node is None or (node != self.node_id and self.up(node) is None)):
                # no node names it yet, or one we have no trunk up to (lost: its client may be logging in at another
                # node, session 19): the SETUPs wait on (a client that just logged in at another node, whose write
                # is on its way), asked again (_parked_tick); nothing cached, so that another SETUP to it waits
                # with them
                self.absent[identity] = now + ABSENT_ASK_MS
                continue
            self.cache[identity] = (node, now + CACHE_MS)
            self.absent.pop(identity, None)
            for link, ies, _when in self.parked.pop(identity, ()):
                if link.up:
                    self.core._setup(link, ies, now)
        if len(self.cache) > 65536:
            self.cache = {k: v for k, v in self.cache.items() if v[1] > now}

    def take_writes(self):
        writes, self.writes = self.writes, {}
        return writes

    def _wake(self):
        if self.wake is not None:
            self.wake.set()

    def status(self):
        return {str(node): {"state": link.login.state, "logins": link.login.logins, "index": link.peer_index,
                            "address": "%s:%d" % tuple(link.address[:2])}
                for node, link in sorted(self.links.items())}


class LocationService:
    """On the daemon's loop beside ClusterService: the core's location writes and reads, to and from
    Redis (redis-py's asyncio client), and every REFRESH_S the keys of every client logged in here."""

    def __init__(self, config):
        self.config = config
        self.task = None
        self.redis = None

    async def start(self, daemon):
        import asyncio
        self.daemon = daemon
        self.core = daemon.core
        self.trunks = self.core.xnode
        self.trunks.wake = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())

    async def stop(self):
        import asyncio
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()

    async def _run(self):
        import asyncio
        import time
        from upbx.host.cluster.engines import redis_client
        from upbx.host.daemon import now_ms
        trunks = self.trunks
        node = str(self.core.cluster.node_id)
        backoff = 0.1
        refresh_at = 0.0
        while True:
            try:
                if self.redis is None:
                    # plain or through Sentinel, as the node's own client (host/cluster/engines.py)
                    self.redis = redis_client(self.config.cluster_redis)
                    await self.redis.ping()
                    refresh_at = 0.0   # Redis may have restarted empty: every key again
                while True:
                    try:
                        await asyncio.wait_for(trunks.wake.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
                    trunks.wake.clear()
                    writes = trunks.take_writes()
                    if time.monotonic() >= refresh_at:
                        refresh_at = time.monotonic() + REFRESH_S
                        for kind, name in list(self.core.links_by_name):
                            if (kind in ("host", "phone") and not name.startswith(PREFIX)
                                    and (kind, name) not in trunks.standbys):
                                writes.setdefault((kind, name), "set" if (kind, name) in trunks.homes else "nx")
                    if writes:
                        gone = [str(n) for n in trunks.gone]
                        try:
                            async with self.redis.pipeline(transaction=False) as pipe:
                                for (kind, name), how in writes.items():
                                    key = LOCATION_KEY % (kind, name)
                                    if how == "set":
                                        pipe.set(key, node, ex=LOCATION_TTL_S)
                                    elif how == "nx":
                                        # a phone may take a lost node's key; a remote host never needs to
                                        # (it names its home at every login: NODES standby 0, "set")
                                        pipe.eval(SET_UNLESS_OTHERS, 1, key, node, LOCATION_TTL_S,
                                                  *(gone if kind == "phone" else ()))
                                    else:
                                        pipe.eval(DELETE_IF_OURS, 1, key, node)
                                results = await pipe.execute()
                        except BaseException:
                            for identity, how in writes.items():
                                trunks.writes.setdefault(identity, how)
                            raise
                        left = sum(1 for how, done in zip(writes.values(), results) if how == "nx" and not done)
                        if left:   # another live node's key (or one of a node not known to be lost)
                            self.core.stats.count("location: another node's key left", left)
                    asked = sorted(trunks.asked)
                    if asked:
                        values = await self.redis.mget([LOCATION_KEY % identity for identity in asked])
                        answers = {}
                        for identity, value in zip(asked, values):
                            try:
                                answers[identity] = int(value) if value is not None else None
                            except ValueError:
                                answers[identity] = None
                        trunks.answered(answers, now_ms())
                        self.daemon._flush()
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.core.log.warning("cluster-location", error="%s: %s" % (exc.__class__.__name__, exc))
                if self.redis is not None:
                    try:
                        await self.redis.aclose()
                    except Exception:
                        pass
                    self.redis = None
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
