"""A direct call between sites at two nodes, through the loss of a node (issue 16; docs/cluster.md "Direct
media between sites at two nodes").

tests/test_cluster_direct.py's two nodes on the real host cores in one process (site a's remote host at node 2,
site b's at node 1, each with its standby session at the other node, the nodes' real NodeTrunks logged in to
each other), and the part of ClusterService (host/cluster/node.py) that talks to Redis about calls, played by
`CallKeys` below on a dict: each node's CallMirror writes its calls' keys as the writer does, and node 1's
Takeover reads them as `_takeover` does. Node 2 is then lost as a node killed -9 is (tests/inprocess.py
`stop_main`: nothing more reaches it and it sends nothing). What is asserted is what the phones hear (every
voice frame names its sender), what the remote hosts and node 1 keep, and the call record.
"""
import json
import os

import pytest

from upbx.common import wire
from upbx.host.cluster import trunk
from upbx.host.cluster.calls import KEY, LEG_KEY, CallMirror, Takeover
from upbx.common.call import RINGBACK, RINGING
from tests.inprocess import MAIN, SITE_A, SITE_B, flush_host
from tests.test_cluster_direct import SitesAtTwoNodes, _in_order as check
from tests.test_cluster_forward import NODE1


class CallKeys:
    """Redis's call keys (host/cluster/calls.py), written by each live node's CallMirror and read by node 1's
    Takeover, one round per tick, as ClusterService's `_calls` and `_takeover` do."""

    def __init__(self):
        self.cluster_key = os.urandom(32)
        self.keys = {}
        self.mirrors = {}

    def take_over_at(self, cores):
        """Each of cores reads the keys as its Takeover does (host/cluster/node.py: a node of a cluster)."""
        for core in cores:
            core.takeover = Takeover(core, self.cluster_key)
            core.switch.reserved = core.takeover.asked

    def serve_all(self, named, now):
        """serve() each (node name, core) of a world's tick; a lost node's core is None."""
        for name, core in named:
            if core is not None:
                self.serve(name, core, now)

    def serve(self, node_name, core, now):
        mirror = self.mirrors.get(node_name)
        if mirror is None:
            mirror = self.mirrors[node_name] = CallMirror(node_name, self.cluster_key, 30, 10)
        if core.records_waiting is None:
            core.records_waiting = {}   # as ClusterService: a record waits for its call's ended key
        ended = {}
        for key, value, _ttl in mirror.changes(core.switch.calls, now, core.wall_ms(now)):
            had = self.keys.get(key)
            if '"ended": true' in value:
                ours = ended[key[len(KEY % ""):]] = had is None or json.loads(had)["node"] == node_name
                if not ours:
                    continue   # ended only if still ours (host/cluster/node.py ENDED_IF_OURS): another node took it over
            self.keys[key] = value
        if core.records_waiting:
            core.records_settled(ended, mirror.uids(), now)
        takeover = getattr(core, "takeover", None)
        if takeover is None or not (takeover.want or takeover.held_want or getattr(takeover, "uid_want", None)):
            return
        wanted = takeover.wanted(now)
        by_uid = set(getattr(takeover, "uid_want", ()))   # (none before session 18)
        uids = {self.keys[LEG_KEY % w] for w in wanted if LEG_KEY % w in self.keys} | by_uid
        for uid in sorted(uids):
            raw = self.keys.get(KEY % uid)
            if raw is None:
                continue
            value = json.loads(raw)
            if uid in by_uid or any((leg["link"]["kind"], leg["link"]["name"], leg["call_no"]) in wanted
                                    for leg in (value.get("legs") or {}).values()):
                takeover.adopt(value, now, core.wall_ms(now))


class LosableSites(SitesAtTwoNodes):
    def __init__(self, tmp_path):
        self.calls = None
        SitesAtTwoNodes.__init__(self, tmp_path, main_settings="")
        # node 1 and site b on the Internet side of site a's router, as node 2 is: what site a sends them comes
        # from its router's public address, which move_site_a changes (B7)
        self.net.wan |= {NODE1, SITE_A, SITE_B}
        # and both sites' routers filter as a masquerading router does: from outside, only what comes from an
        # address the site sent to from that same public address (a new public address opens nothing)
        # (each site has sent to both nodes already: its home and its standby session logged in before the filter)
        self.opened = {(site, self.net.nat[site], node) for site in (SITE_A, SITE_B) for node in (MAIN, NODE1)}
        self.net.send = self._filtered(self.net.send)
        self.calls = CallKeys()
        self.n1.takeover = Takeover(self.n1, self.calls.cluster_key)
        self.n1.switch.reserved = self.n1.takeover.asked

    def tick(self, until=None):
        if self.main is not None:
            done = SitesAtTwoNodes.tick(self, until)
        else:
            done = super(SitesAtTwoNodes, self).tick(until)    # TwoNodes' (World's) tick, node 1 alone
            node = self.n1.xnode
            if node.asked:
                asked, node.asked = node.asked, set()
                node.answered({identity: 1 for identity in asked}, self.net.now)
        if done:
            return done   # until() holds: the rest stays in flight (the keys are written at the next tick)
        if self.calls is not None:
            for name, core in (("n2", self.main), ("n1", self.n1)):
                if core is not None:
                    self.calls.serve(name, core, self.net.now)
                    flush_host(self.net, core)
            self.settle()
        return done

    def _filtered(self, send):
        net = self.net

        def filtered(data, source, destination):
            destination = tuple(destination[:2])
            public = net.nat.get(source, source) if destination in net.wan else source
            if source in (SITE_A, SITE_B):
                self.opened.add((source, public, destination))
            outside = public in net.wan or public in (net.nat[SITE_A], net.nat[SITE_B])   # not a phone in there
            for inside in (SITE_A, SITE_B):
                if outside and net.nat[inside] == destination and (inside, destination, public) not in self.opened:
                    return
            send(data, source, destination)
        return filtered

    def n1_media_in(self):
        return self.n1.stats.counters.get("media in", 0)

    def lose_node_2(self):
        self.stop_main()
        assert MAIN not in self.net.endpoints


@pytest.fixture
def world(tmp_path):
    world = LosableSites(tmp_path)
    try:
        # each site keeps its standby session at the other node (its node's successor)
        world.run_until(lambda: world.a.standby_link.up and world.b.standby_link.up, 5000, "standby sessions up")
        yield world
    finally:
        world.close()


A_MOVED, B_MOVED = ("198.18.1.77", 4570), ("198.18.1.78", 4570)


def _pair_at(host, peer, address):
    pair = host.pairs.get(peer)
    return pair is not None and pair.link.address == address and pair.link.up


def _in_order(heard, said, missing=0):
    """heard is a run of said's frames, in order, nothing else, with at most `missing` left out; how many were."""
    check(heard, said, missing)
    positions = [said.index(frame) for frame in heard]
    return positions[-1] - positions[0] + 1 - len(heard)


def test_a_direct_call_between_sites_at_two_nodes_goes_on_through_the_loss_of_one_node(world):
    caller, callee = world.caller, world.callee
    world.call("101", "201")
    n2_call, n1_call = world.node_call(world.main), world.node_call(world.n1)
    world.run_until(lambda: n2_call.path == "direct" and n1_call.path == "direct" and n2_call.peered
                    and n1_call.peered, 3000, "direct")
    world.run(400)
    before = world.media_in()
    world.run(200)
    assert world.media_in()[1] == before[1]     # node 1 relays nothing of it

    world.lose_node_2()
    lost = world.net.now
    caller_sent, callee_sent = len(caller.sent), len(callee.sent)
    # site a notices its node's silence and switches to its standby session at node 1, which takes node 2's half
    # of the call over from Redis: the call is node 1's alone
    world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE1, 5000, "site a at node 1")
    world.run_until(lambda: n1_call.a.link.kind == "host" and n1_call.b.link.kind == "host", 2000,
                    "node 1 took node 2's half over")
    took = world.net.now - lost
    assert n1_call.a.link.name == "site-a" and not world.n1.xnode.held
    # through the hold and beyond: no RELEASE at either phone, the media straight between the sites both ways
    world.run(trunk.HOLD_MS + 2000)
    assert caller.connected and callee.connected
    assert world.n1.stats.counters.get("node trunk: calls lost", 0) == 0
    assert world.a.stats.counters.get("calls not taken over", 0) == 0
    for heard, said, start in ((callee.received, caller.sent, caller_sent), (caller.received, callee.sent, callee_sent)):
        # every frame sent since the loss was heard, in order: the media never needed the nodes
        _in_order(heard, said)
        assert said[start] in heard and heard[-1] in said[-3:]
    before = world.n1_media_in()
    world.run(1000)
    assert world.n1_media_in() == before           # still direct: node 1 relays none of it

    # B7 after the loss: site a's public address changes. Node 1 sees it (site a's session is at home there now)
    # and re-offers the pair to both sites, with the key it was given and the new address: site b sends there
    heard_at_b, heard_at_a = len(callee.received), len(caller.received)
    world.move_site_a(A_MOVED)
    world.run_until(lambda: _pair_at(world.b, "site-a", A_MOVED), 3000, "site b's pair at site a's new address")
    world.run(1000)
    # what site b sent to the old address while the change went round is lost (a few frames), nothing else
    lost_at_a = _in_order(caller.received[heard_at_a:], callee.sent, missing=15)
    _in_order(callee.received[heard_at_b:], caller.sent)
    assert world.n1_media_in() == before           # direct again, not through node 1

    # and site b's (node 1's own site's) public address changes: re-offered as on one main host, nothing sent
    # towards the lost node
    heard_at_b, heard_at_a = len(callee.received), len(caller.received)
    world.net.nat[SITE_B] = B_MOVED
    world.run_until(lambda: _pair_at(world.a, "site-b", B_MOVED), 3000, "site a's pair at site b's new address")
    world.run(1000)
    lost_at_b = _in_order(callee.received[heard_at_b:], caller.sent, missing=15)
    _in_order(caller.received[heard_at_a:], callee.sent)
    assert world.n1_media_in() == before
    print("node 1 had the call %d ms after the loss; frames lost by a B7 change after it: %d at 101, %d at 201"
          % (took, lost_at_a, lost_at_b))

    world.hangup("101")
    world.run_until(lambda: caller.idle and callee.idle, 2000, "hung up")
    assert caller.causes() == [wire.CAUSE_NORMAL] == callee.causes()
    world.run(100)                            # a record follows its call's ended key (MainHost.records_settled)
    records = world.n1.directory.call_records()
    assert [(r.caller, r.callee, r.cause, r.path) for r in records] == [("101", "201", "normal clearing", "direct")]
    assert not world.n1.switch.calls and not world.net.errors


def _ring(world, caller, callee):
    """caller dials callee and hears it ring: the call is set up at both nodes, not answered."""
    a, b = world.phones[caller], world.phones[callee]
    assert a.phone.dial(callee, world.net.now)
    a.flush()
    world.run_until(lambda: b.phone.state == RINGING and a.phone.state == RINGBACK, 6000, "%s rings" % callee)
    world.run(400)                                  # the call's keys written as they are (the 200 ms writer)


def _spliced(world):
    """Node 1's call has node 2's half (site a's leg) in place of its leg towards node 2, none held."""
    calls = list(world.n1.switch.calls.values())
    return (len(calls) == 1 and not world.n1.xnode.held
            and {calls[0].a.link.name, calls[0].b.link.name} == {"site-a", "site-b"})


def _answered_in_the_loss(world, caller, callee, rung=False):
    """caller calls callee (rung: it rings already); node 2 is lost while it rings, and callee answers 300 ms
    later, before site a's remote host notices; then site a switches to node 1, which takes node 2's half over."""
    if not rung:
        _ring(world, caller, callee)
    world.lose_node_2()
    world.run(300)
    _answer(world, callee)
    world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE1, 5000, "site a at node 1")
    world.run_until(lambda: _spliced(world), 3000, "node 1 took node 2's half over")


def _answer(world, number):
    end = world.phones[number]
    end.phone.answer(world.net.now)
    end.flush()


def _talk_and_hang_up(world, caller, callee, earlier=()):
    """Both connected: audio both ways in order, through the hold and beyond; caller hangs up; node 1 records
    the call once (after the `earlier` records it has, as (caller, callee, cause), oldest first)."""
    a, b = world.phones[caller], world.phones[callee]
    world.run_until(lambda: a.connected and b.connected, 3000, "%s and %s connected" % (caller, callee))
    a.sent, a.received, b.sent, b.received = [], [], [], []
    world.run(trunk.HOLD_MS + 1000)
    assert a.connected and b.connected
    for heard, said in ((b.received, a.sent), (a.received, b.sent)):
        check(heard, said, missing=2)
        assert len(heard) >= (trunk.HOLD_MS + 1000) // 20 - 10
    assert world.n1.stats.counters.get("node trunk: calls lost", 0) == 0
    world.hangup(caller)
    world.run_until(lambda: a.idle and b.idle, 2000, "hung up")
    assert a.causes() == [wire.CAUSE_NORMAL] == b.causes()
    world.run(100)                            # a record follows its call's ended key (MainHost.records_settled)
    records = world.n1.directory.call_records()[::-1]   # oldest first
    assert [(r.caller, r.callee, r.cause) for r in records] == list(earlier) + [(caller, callee, "normal clearing")]
    assert not world.n1.switch.calls and not world.n1.xnode.held and not world.net.errors
    return records[-1]


def test_a_call_ringing_at_a_node_that_is_lost_is_answered_at_its_successor(world):
    """201 (site b, node 1) calls 101 (site a, node 2); 101 rings; node 2 is lost. Node 1 holds its half of the
    ringing call (until session 15 it ended it "main host lost" at once: only answered calls were held); site
    a's remote host switches to node 1 and names the ringing call; node 1 takes node 2's half over from Redis
    and splices it to its own. 101 still rings, 201 still hears it ring; 101 answers: they talk, through the
    hold and beyond, and the call is recorded once."""
    _ring(world, "201", "101")
    world.lose_node_2()
    world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE1, 5000, "site a at node 1")
    world.run_until(lambda: _spliced(world), 3000, "node 1 took node 2's half over")
    call = world.node_call(world.n1)
    assert (call.a.link.name, call.b.link.name) == ("site-b", "site-a") and call.state == "alerting"
    assert world.phones["101"].phone.state == RINGING and world.phones["201"].phone.state == RINGBACK
    _answer(world, "101")
    _talk_and_hang_up(world, "201", "101")


def test_a_call_from_a_node_that_is_lost_while_it_rings_is_answered(world):
    """101 (site a, node 2) calls 201 (site b, node 1); 201 rings; node 2 is lost, and 201 answers before site
    a's remote host has noticed (its ANSWER goes towards the lost node). Node 1 holds its half; site a switches
    to node 1 and names the call; node 1 takes node 2's half over and, the call answered here meanwhile, tells
    101 it was answered. They talk, through the hold and beyond; recorded once."""
    _ring(world, "101", "201")
    theirs = world.node_call(world.main).uid       # node 2's: the caller's node records the call
    _answered_in_the_loss(world, "101", "201", rung=True)
    record = _talk_and_hang_up(world, "101", "201")
    # node 1 records it under node 2's uid (since session 15): had node 2 only stalled and written its own
    # record when it ran again, it would be the same record, kept once by (origin, uid)
    assert record.uid == theirs


def test_a_call_ringing_at_a_lost_node_answered_before_its_site_switches_is_answered(world):
    """201 (site b, node 1) calls 101 (site a, node 2); node 2 is lost while 101 rings, and 101 answers before site
    a's remote host has noticed: its ANSWER goes to the lost node, unacknowledged. When the remote host switches
    to node 1 it says that ANSWER again on the new session (until session 15 it was lost with the old one: 101
    talked to nobody while 201 heard it ring until the hold ended "main host lost"); node 1 takes the call over and
    the answer reaches 201. They talk; recorded once."""
    _answered_in_the_loss(world, "201", "101")
    said_again = world.a.stats.counters.get("call messages said again after a switch")
    _talk_and_hang_up(world, "201", "101")
    assert said_again == 1


def test_a_call_taken_over_from_a_lost_node_and_then_transferred_is_recorded_at_the_successor(world, monkeypatch):
    """101 (site a, node 2) calls 303 (straight at node 1); node 2 is lost; node 1 splices node 2's half into its
    own (the call is node 1's alone, recorded there under node 2's uid); then 303 transfers 101 to 201 (site b), at
    node 1. Node 1 records both calls: the first under node 2's uid, the joined one linked to it. Until session 16
    the spliced call, whose caller's leg is site a's (no longer a trunk's), was taken at the transfer for another
    node's call, recorded there, and not recorded at all (host/lines.py)."""
    from upbx.common import lines
    from tests.inprocess import PhoneEnd
    from tests.test_cluster_direct import HOMES
    from tests.test_cluster_xgroup import _act
    monkeypatch.setitem(HOMES, ("phone", "303"), 1)   # Redis: 303 is at node 1
    p = world.phones
    p["303"] = PhoneEnd(world.net, "303", world.secrets["303"], ("198.18.2.7", 40000), NODE1)
    p["303"].phone.start(world.net.now)
    p["303"].flush()
    world.run_until(lambda: p["303"].phone.registered, 5000, "303 registered at node 1")
    world.call("101", "303")
    theirs = world.node_call(world.main).uid       # node 2's: the caller's node records the call
    world.lose_node_2()
    world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE1, 5000, "site a at node 1")
    world.run_until(lambda: [(c.a.link.name, c.b.link.name) for c in world.n1.switch.calls.values()]
                    == [("site-a", "303")] and not world.n1.xnode.held, 3000, "node 1 took node 2's half over")
    _act(world, "303", lambda ph, now: lines.consult(ph, "201", now, True))   # blind, to 201 at site b
    _answer(world, "201")
    world.run_until(lambda: p["101"].connected and p["201"].connected and p["303"].idle, 3000, "101 and 201 talk")
    p["101"].sent, p["101"].received, p["201"].sent, p["201"].received = [], [], [], []
    world.run(600)
    check(p["201"].received, p["101"].sent, missing=2)
    check(p["101"].received, p["201"].sent, missing=2)
    world.hangup("101")
    world.run_until(lambda: p["101"].idle and p["201"].idle and not world.n1.switch.calls, 2000, "hung up")
    world.run(100)                            # a record follows its call's ended key (MainHost.records_settled)
    records = {(r.caller, r.callee): r for r in world.n1.directory.call_records()}
    assert sorted((k, r.cause) for k, r in records.items()) == [
        (("101", "201"), "normal clearing"), (("101", "303"), "transferred"), (("303", "201"), "transferred")]
    assert records["101", "303"].uid == theirs
    assert records["101", "201"].linked == records["303", "201"].linked == theirs
    assert not world.net.errors


def test_unacknowledged_lists_what_is_in_flight_and_waiting_in_order():
    """What the remote host says again after a switch (host/remote_host.py unacknowledged): the messages a real
    reliable channel has not had acknowledged, then those waiting for window space, in the order sent."""
    from upbx.host.remote_host import unacknowledged
    from tests.common.test_protocol import _login
    client, server = _login()
    sent = [str(100 + i) for i in range(40)]                  # more than the window (32): some wait
    for number in sent:
        client.send(wire.PARTY, {wire.IE_CALLING: number}, 10)
    for frame in client.datagrams_to_send(10)[:3]:             # the first three arrive and are acknowledged
        server.channel.receive(frame, 10)
    for frame in server.channel.datagrams_to_send(11):
        client.receive(frame, 11)
    left = unacknowledged(client.channel)
    assert [t for t, _payload in left] == [wire.PARTY] * 37
    assert [wire.decode_ies(payload)[wire.IE_CALLING] for _t, payload in left] == sent[3:]
    assert unacknowledged(None) == []
