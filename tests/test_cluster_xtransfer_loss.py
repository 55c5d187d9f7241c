"""A call joined by a transfer at node X, through X's loss (issue 16; docs/cluster.md "Calls between nodes",
"Groups, transfers and forwards across nodes").

tests/test_cluster_xgroup.py's two nodes on the real host cores in one process: node 2 (X: phones 301 and
302, site a) and node 1 (Y: site b's 201 and 202, phone 303), a real trunk login between them. Node 2 is
then lost as a node killed -9 is (tests/inprocess.py `stop_main`): nothing more reaches it and it sends
nothing; node 1 notices by its trunk's silence (host/cluster/trunk.py DEAD_MS), as on real nodes.
What is asserted is what the phones that talk get (frames, causes) and what node 1 keeps. A transfer at
node 2 of two calls that both go to node 1 is handed to node 1 (host/lines.py `_hand_over`), so node 2's
loss is nothing to it; one with a party at node 2 is node 2's, and ends with it.
"""
import pytest

from upbx.common import lines, wire
from upbx.host.cluster import trunk
from tests.inprocess import MAIN
from tests.test_cluster_forward import NODE1
from tests.test_cluster_xgroup import (TwoNodes, _act, _answer, _dial, _group, _in_order, _listen, _parties, _ringing,
                                       with_phones)


class LosableNodes(TwoNodes):
    """TwoNodes whose node 2 (World's main host) can be lost (TwoNodes.tick runs the node left)."""

    def lose_node_2(self):
        """Node 2 dies at once (kill -9): its address answers nothing, it runs no timer."""
        self.stop_main()
        assert MAIN not in self.net.endpoints


@pytest.fixture
def world(tmp_path):
    world = LosableNodes(tmp_path)
    try:
        yield with_phones(world, dead_ms=2000)   # the firmware's liveness limit
    finally:
        world.close()


def _node_1_empty(world):
    n1 = world.n1
    return n1.status()["calls"] == [] and not n1.switch.legs and not n1.xnode.held


def test_a_call_from_node_1_transferred_at_node_2_back_to_node_1_goes_on_when_node_2_is_lost(world):
    p = world.phones
    world.call("201", "301")                       # site b (node 1) calls 301 (node 2)
    _act(world, "301", lambda ph, now: lines.consult(ph, "303", now, True))   # blind to 303, at node 1 again
    _answer(world, "303")
    world.run_until(lambda: p["201"].connected and p["303"].connected and p["301"].idle, 1000, "201 and 303 talk")
    assert _parties(p["201"]) == ["303"] and p["303"].phone.call.number == "201"
    _listen(world, 600)
    _in_order(p["303"], p["201"], 20)
    _in_order(p["201"], p["303"], 20)
    # node 2 handed the join to node 1 (both far legs on its trunk with it): one call at node 1, no leg of it on a
    # trunk, nothing at node 2. Before: node 2 joined them, the media ran node 1 -> node 2 -> node 1 (two calls
    # at node 1, each with a leg on a trunk to node 2), and the call ended "main host lost" with node 2
    assert world.main.status()["calls"] == [] and not world.main.switch.legs
    assert [(c["caller"], c["callee"], c["state"]) for c in world.n1.status()["calls"]] == [("201", "303", "answered")]
    assert all(leg.link.kind != "node" for leg in world.n1.switch.legs.values())
    records_before = world.n1.directory.call_records()
    first = next(r.uid for r in records_before if (r.caller, r.callee) == ("201", "301"))
    assert sorted((r.caller, r.callee, r.cause, r.linked) for r in records_before) == sorted([
        ("201", "301", "transferred", None), ("301", "303", "transferred", first)])

    world.lose_node_2()
    lost = world.net.now
    # node 1 sees its trunk go silent (and would hold any half of node 2's calls): the joined call is not one
    world.run_until(lambda: world.n1.xnode.status()["2"]["state"] != "up", trunk.KEEPALIVE_MS + trunk.DEAD_MS + 1000,
                    "node 1 sees node 2's trunk down")
    world.run_until(lambda: world.net.now - lost >= trunk.KEEPALIVE_MS + trunk.DEAD_MS + trunk.HOLD_MS + 1000,
                    trunk.KEEPALIVE_MS + trunk.DEAD_MS + trunk.HOLD_MS + 2000, "past the hold")
    # the call goes on: no RELEASE at either phone, nothing held or lost at node 1, frames both ways in order
    assert p["201"].connected and p["303"].connected
    assert p["201"].causes() == [] and p["303"].causes() == []
    assert not world.n1.xnode.held and world.n1.xnode.lost == 0
    assert "node trunk: calls lost" not in world.n1.stats.counters
    _listen(world, 600)
    _in_order(p["303"], p["201"], 20)
    _in_order(p["201"], p["303"], 20)
    world.hangup("201")
    world.run_until(lambda: _node_1_empty(world) and p["303"].idle, 1000, "no call left")
    assert p["303"].causes() == [wire.CAUSE_NORMAL]
    # the joined call recorded once, by node 1 (its caller's node), linked to the first
    new = [r for r in world.n1.directory.call_records() if r.uid not in {o.uid for o in records_before}]
    assert [(r.origin, r.caller, r.callee, r.cause, r.linked) for r in new] == [
        ("main", "201", "303", "normal clearing", first)]
    assert not world.net.errors


def test_a_call_from_node_1_transferred_at_node_2_to_a_phone_there_ends_at_both_when_node_2_is_lost(world):
    """The simpler case: the joined call has one leg on the trunk (201's, from node 1) and one to a phone at node 2
    (302) without a standby session. Node 1 holds its half for node 2's successor; 302's session is gone with its
    node: it notices at its session's liveness limit, logs in at node 1 (node 2's successor) keeping its call (the
    grace period of a phone without a standby up) and names it there; node 1, which cannot look calls up in this
    world (no Redis), ends it "main host lost" at once. 201's ends "main host lost" after the hold."""
    p = world.phones
    world.call("201", "301")                       # site b (node 1) calls 301 (node 2)
    _act(world, "301", lambda ph, now: lines.consult(ph, "302", now, True))   # blind to 302, at node 2 too
    _answer(world, "302")
    world.run_until(lambda: p["201"].connected and p["302"].connected and p["301"].idle, 1000, "201 and 302 talk")
    assert _parties(p["201"]) == ["302"]
    _listen(world, 600)
    _in_order(p["302"], p["201"], 20)
    _in_order(p["201"], p["302"], 20)
    assert len(world.n1.status()["calls"]) == 1
    records_before = world.n1.directory.call_records()
    first = next(r.uid for r in records_before if (r.caller, r.callee) == ("201", "301"))

    world.lose_node_2()
    lost = world.net.now
    world.run_until(lambda: len(world.n1.xnode.held) == 1, trunk.KEEPALIVE_MS + trunk.DEAD_MS + 1000,
                    "node 1 holds its half")
    for end in p.values():
        end.sent, end.received = [], []
    took = world.run_until(lambda: p["201"].idle, trunk.HOLD_MS, "201's call ends")
    assert world.net.now - lost >= trunk.HOLD_MS and took <= trunk.HOLD_MS
    assert p["201"].causes()[-1] == wire.CAUSE_MAIN_LOST and not p["302"].idle
    # 302 has no standby session up: it notices its node's silence at its session's liveness limit (here the node's
    # keepalive, 20 s, and 2 s: this world's phones keep the standby's timers unrun), logs in at node 1 with its call
    # kept and names it; node 1 has no Redis to look it up in and ends it "main host lost" (before: "unreachable")
    login = p["302"].phone.login
    world.run_until(lambda: p["302"].idle, login.keepalive_ms + login.dead_ms + 3000, "302's call ends")
    assert world.net.now - lost >= login.keepalive_ms and p["302"].causes()[-1] == wire.CAUSE_MAIN_LOST
    assert p["302"].phone.registered and tuple(p["302"].host) == NODE1
    assert not p["201"].received and not p["302"].received
    assert _node_1_empty(world) and world.n1.stats.counters["node trunk: calls lost"] == 1
    # node 1 records its call with 201 once, linked to the first (node 2's record of the joined call would
    # have been written at its end: the joined call's caller side is node 1's)
    new = [r for r in world.n1.directory.call_records() if r.uid not in {o.uid for o in records_before}]
    assert [(r.caller, r.callee, r.cause, r.linked) for r in new] == [("201", "302", "main host lost", first)]
    assert not world.net.errors


def test_a_call_whose_callers_node_is_lost_is_recorded_under_that_nodes_uid(world):
    """301 (node 2) calls 201 (site b, node 1): node 2 records the call; node 2 is lost, node 1 holds its half,
    then ends it "main host lost" and records it, once, under node 2's uid (its SETUP's). Until session 15 node 1
    recorded it under its own uid: a node only stalled (SIGSTOP, a loop held up) that wrote its record when it ran
    again left two records of one call in the cluster's PostgreSQL, which keeps one per (origin, uid)."""
    p = world.phones
    world.call("301", "201")
    [theirs] = world.main.status()["calls"]
    [ours] = world.n1.status()["calls"]
    assert (theirs["caller"], theirs["callee"], ours["caller"], ours["callee"]) == ("301", "201", "301", "201")
    assert theirs["call"] != ours["call"]           # each node numbers its calls: node 1's half says node 2's uid
    _listen(world, 600)
    _in_order(p["201"], p["301"], 20)
    records_before = {r.uid for r in world.n1.directory.call_records()}

    world.lose_node_2()
    world.run_until(lambda: len(world.n1.xnode.held) == 1, trunk.KEEPALIVE_MS + trunk.DEAD_MS + 1000,
                    "node 1 holds its half")
    world.run_until(lambda: p["201"].idle, trunk.HOLD_MS + 1000, "201's call ends")
    assert p["201"].causes()[-1] == wire.CAUSE_MAIN_LOST
    assert _node_1_empty(world)
    new = [r for r in world.n1.directory.call_records() if r.uid not in records_before]
    assert [(r.uid, r.caller, r.callee, r.cause) for r in new] == [(theirs["call"], "301", "201", "main host lost")]
    assert not world.net.errors


@pytest.mark.parametrize("pickup", ["**301", "*8"])
def test_a_pickup_whose_recording_node_is_lost_is_recorded_once_by_the_pickers_node(world, pickup):
    """101 (site a, node 2) calls 301 (node 2); 303 (node 1) picks it up with **301, or with *8 (303 and 301 one
    pickup group: nothing rings at node 1, so node 1 asks node 2). Node 2 switches the call and records it; node
    2 is lost during the call: node 1 holds 303's half, nobody takes it over (site a has no standby session), and
    it ends "main host lost" at 303 after the hold. Node 1 records it once, as node 2 would have: 101 -> 303, 301
    dialled, under node 2's uid (told in its PARTY to the picker). Until session 15 nobody recorded it: node 1
    never records a pickup's half (node 2 does) and node 2 was gone."""
    p, picker = world.phones, "303"
    if pickup == "*8":
        _group(world, {"number": "680", "strategy": "pickup", "members": ["301", picker], "site": "c", "ring_s": 15})
    _dial(world, "101", "301")
    world.run_until(lambda: _ringing(world) == {"301"}, 3000, "301 rings")
    _dial(world, picker, pickup)
    world.run_until(lambda: p[picker].connected and p["101"].connected and p["301"].idle, 3000, "picked up")
    [theirs] = world.main.status()["calls"]
    assert (theirs["caller"], theirs["callee"]) == ("101", picker)
    [ours] = world.n1.status()["calls"]
    _listen(world, 600)
    _in_order(p[picker], p["101"], 20)
    before = {r.uid for r in world.n1.directory.call_records()}

    world.lose_node_2()
    world.run_until(lambda: p[picker].idle, trunk.KEEPALIVE_MS + trunk.DEAD_MS + trunk.HOLD_MS + 1000,
                    "the picker's call ends")
    assert p[picker].causes()[-1] == wire.CAUSE_MAIN_LOST
    assert _node_1_empty(world)
    new = [r for r in world.n1.directory.call_records() if r.uid not in before]
    assert [(r.uid, r.caller, r.callee, r.dialled, r.cause) for r in new] == [
        (theirs["call"], "101", picker, "301", "main host lost")]
    assert ours["call"] != theirs["call"] and not world.net.errors


@pytest.mark.parametrize("pickup", ["**202", "*8"])
def test_a_call_from_a_lost_node_picked_up_behind_a_remote_host_is_recorded_once(world, pickup):
    """A picker behind a remote host: 301 (node 2) calls 202 (site b, behind its remote host at node 1), and 201
    picks it up there (**202, or *8: site b's pickup group), which site b's remote host does itself (both
    phones are its own). Node 2, the caller's, records the call; node 2 is lost: node 1 holds its half, nobody
    takes it over (301 has no standby session), it ends "main host lost" at 201 after the hold, and node 1
    records it once, under node 2's uid, with the picker as the callee and the number that rang as dialled."""
    p = world.phones
    if pickup == "*8":
        _group(world, {"number": "280", "strategy": "pickup", "members": ["201", "202"], "site": "b", "ring_s": 15})
    _dial(world, "301", "202")
    world.run_until(lambda: _ringing(world) == {"202"}, 3000, "202 rings")
    _dial(world, "201", pickup)
    world.run_until(lambda: p["201"].connected and p["301"].connected and p["202"].idle, 3000, "201 picked it up")
    [theirs] = world.main.status()["calls"]
    _listen(world, 600)
    _in_order(p["201"], p["301"], 20)
    _in_order(p["301"], p["201"], 20)
    before = {r.uid for r in world.n1.directory.call_records()}

    world.lose_node_2()
    world.run_until(lambda: p["201"].idle, trunk.KEEPALIVE_MS + trunk.DEAD_MS + trunk.HOLD_MS + 1000,
                    "201's call ends")
    assert p["201"].causes()[-1] == wire.CAUSE_MAIN_LOST
    assert _node_1_empty(world)
    new = [r for r in world.n1.directory.call_records() if r.uid not in before]
    assert [(r.uid, r.caller, r.callee, r.dialled, r.cause) for r in new] == [
        (theirs["call"], "301", "201", "202", "main host lost")], [vars(r) for r in new]
    assert not world.net.errors
