"""A call joined by a transfer at node X between parties at two other nodes Y and Z, through X's loss (issue 16;
docs/cluster.md "Groups, transfers and forwards across nodes").

tests/test_cluster_relocate.py's three real node cores in memory, each pair's trunks up, and
tests/test_cluster_direct_loss.py's `CallKeys` for Redis's call keys (each node's CallMirror writes them, each
survivor's Takeover reads them). 201 (site b, node 1) calls 301 (node 2, X), who transfers it blind to 303
(straight at node 3): node 2 joins the two calls, 201 <-> 303, media node 1 -> node 2 -> node 3. Node 2 is then
lost as a node killed -9 is (nothing more reaches it, it sends nothing). No client of node 2 is in the joined
call, so none switches and names it: until session 17 nobody took it over, and both phones heard "main host lost"
after the hold. Now each of nodes 1 and 3 looks for node 2's call that has its held leg; the lower, node 1,
splices it (its own half, and a leg on its trunk to node 3 with node 2's numbers and keys), and node 3's held leg
moves to its trunk with node 1 when node 1 names it. What is asserted: what the phones hear (every voice frame
names its sender), what each node keeps, the records.
"""
import pytest

from upbx.common import lines, wire
from upbx.host.cluster import trunk
from tests.test_cluster_direct_loss import CallKeys
from tests.test_cluster_relocate import ThreeNodes
from tests.test_cluster_xgroup import _act, _answer, _in_order, _listen


class LosableThree(ThreeNodes):
    def __init__(self, tmp_path):
        self.calls = None
        ThreeNodes.__init__(self, tmp_path)
        self.calls = CallKeys()
        self.calls.take_over_at(self.nodes.values())

    def tick(self, until=None):
        done = ThreeNodes.tick(self, until)
        if self.calls is not None:
            self.calls.serve_all((("n%d" % i, node) for i, node in self.nodes.items()), self.net.now)
            self.settle()
        return done


@pytest.fixture
def world(tmp_path):
    world = LosableThree(tmp_path)
    try:
        world.add_phone("201", 1, dead_ms=2000)
        world.add_phone("301", 2, dead_ms=2000)
        world.add_phone_at_node("303", 7, 3)
        world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 5000, "registered")
        world.run_until(lambda: len(world.locations.keys) >= 2, 2000, "location keys")
        yield world
    finally:
        world.close()


def _links(core):
    return sorted(tuple(sorted(leg.link.name for leg in (c.a, c.b))) for c in core.switch.calls.values())


@pytest.mark.parametrize("first", [("201", "301"), ("301", "201")], ids=["node-1-called", "node-2-called"])
def test_a_call_joined_at_a_lost_node_between_two_other_nodes_goes_on_through_the_lower_one(world, first):
    """first: who called whom before the transfer. When 301 (node 2) called, node 1's half has node 2 on its
    caller's side, and until session 21 nobody recorded the joined call: node 1 took it for node 2's to record."""
    p = world.phones
    n1, n3 = world.n1, world.n3
    world.call(*first)                              # site b (node 1) and 301 (node 2)
    _act(world, "301", lambda ph, now: lines.consult(ph, "303", now, True))   # blind, to 303 at node 3
    _answer(world, "303")
    world.run_until(lambda: p["201"].connected and p["303"].connected and p["301"].idle, 2000, "201 and 303 talk")
    _listen(world, 600)
    _in_order(p["303"], p["201"], 20)
    _in_order(p["201"], p["303"], 20)
    # joined at node 2: one leg on its trunk with node 1, one on its trunk with node 3
    assert [sorted(leg.link.kind for leg in (c.a, c.b)) for c in world.main.switch.calls.values()] == [["node", "node"]]
    records_before = {r.uid for r in n1.directory.call_records()}
    world.run(400)                                  # the joined call's key written (the 200 ms writer)

    world.stop_main()
    lost = world.net.now
    # node 1 (the lower of the two) splices node 2's joined call: 201's site b <-> its trunk to node 3; node 3's
    # held leg moves to its trunk with node 1 when node 1 names it
    world.run_until(lambda: not n1.xnode.held and not n3.xnode.held and n1.xnode.carried and n3.xnode.carried,
                    trunk.KEEPALIVE_MS + trunk.DEAD_MS + 2000, "node 1 and node 3 carry the call on")
    assert _links(n1) == [("node 3", "site-b")] or _links(n1) == [("@3", "site-b")], _links(n1)
    assert len(n3.switch.calls) == 1 and {leg.link.node for c in n3.switch.calls.values()
                                          for leg in (c.a, c.b) if leg.link.kind == "node"} == {1}
    assert n3.stats.counters.get("node trunk: calls carried on") == 1
    # through the hold and beyond: audio both ways in order, nothing ended
    world.run_until(lambda: world.net.now - lost >= trunk.HOLD_MS + 1000, trunk.HOLD_MS + 2000, "past the hold")
    assert p["201"].connected and p["303"].connected and p["201"].causes() == [] == p["303"].causes()
    assert "node trunk: calls lost" not in n1.stats.counters and "node trunk: calls lost" not in n3.stats.counters
    _listen(world, 600)
    _in_order(p["303"], p["201"], 20)
    _in_order(p["201"], p["303"], 20)
    world.hangup("303")
    world.run_until(lambda: p["201"].idle and p["303"].idle and not n1.switch.calls and not n3.switch.calls, 2000,
                    "hung up")
    assert p["201"].causes() == [wire.CAUSE_NORMAL]
    # the joined call recorded once (the nodes share one database here, as they share PostgreSQL), linked to the
    # call it continues, as node 2 would have
    world.run(100)                                  # a record follows its call's ended key (MainHost.records_settled)
    continued = next(r.uid for r in n1.directory.call_records() if (r.caller, r.callee) == first)
    assert [(r.caller, r.callee, r.cause, r.linked) for r in n1.directory.call_records()
            if r.uid not in records_before] == [("201", "303", "normal clearing", continued)]
    assert not world.net.errors


def test_held_legs_looked_for_never_crowd_out_the_call_numbers_switched_clients_ask_for(world):
    """A node holding thousands of legs towards a lost node looks each one's call up (Takeover.joined) in a list of
    its own, bounded: the call numbers a switched remote host's frames ask for still get their place."""
    from upbx.host.cluster.calls import MAX_WANT
    takeover, now = world.n1.takeover, world.net.now
    for number in range(1, MAX_WANT + 6):
        takeover.joined("node", "@1", number, now)
    assert len(takeover.held_want) == MAX_WANT
    assert world.n1.stats.drops["takeover: too many held legs asked for"] == 5
    site_b = world.n1.links_by_name[("host", "site-b")]
    takeover.moved(site_b, 77, now)
    assert takeover.asked(site_b, 77) and len(takeover.wanted(now)) == MAX_WANT + 1
    # looked for WANT_MS at most, then given up
    assert takeover.wanted(now + 10001) == set() and not takeover.held_want
