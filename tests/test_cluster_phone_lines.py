"""A phone straight at a node with a call on each line, through the node's loss (issue 16; docs/cluster.md
"Failover", 2b).

tests/test_cluster_xgroup.py's two nodes on the real host cores in one process, with phones 301 and 302 straight at
node 2 keeping their standby session at node 1 as a handset does (tests/inprocess.py PhoneEnd `standby`: the
standby's datagrams and the switch, as firmware/standby.py does them), phone 303 straight at node 1, and
tests/test_cluster_direct_loss.py's `CallKeys` for Redis's call keys. 301 talks to 303 (a call between the nodes),
holds it and calls 302 (a consultation at node 2). Node 2 is lost as a node killed -9 is. Until session 17 the
phone named only its current call to node 1 when it switched: the held call to 303 was never taken over and ended
"main host lost" at 303 after the hold. Now it names both lines' calls.
"""
import pytest

from upbx.common import lines, wire
from upbx.host.cluster import trunk
from tests.inprocess import MAIN
from tests.test_cluster_direct_loss import CallKeys
from tests.test_cluster_forward import NODE1
from tests.test_cluster_xgroup import TwoNodes, _act, _answer, _in_order, _listen


class Keys(TwoNodes):
    def __init__(self, tmp_path):
        self.calls = None
        TwoNodes.__init__(self, tmp_path)
        self.calls = CallKeys()
        self.calls.take_over_at([self.main, self.n1])

    def tick(self, until=None):
        done = TwoNodes.tick(self, until)
        if done:
            return done   # until() holds: the rest stays in flight (the keys are written at the next tick)
        if self.calls is not None:
            self.calls.serve_all((("n2", self.main), ("n1", self.n1)), self.net.now)
            self.settle()
        return done


@pytest.fixture
def world(tmp_path):
    world = Keys(tmp_path)
    try:
        for i, number in enumerate(("301", "302"), 1):
            world.add_phone(number, i, dead_ms=2000).standby = True
        world.add_phone_at("303", 7, 1)
        p = world.phones
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        world.run_until(lambda: all(p[n].standby_up(NODE1) for n in ("301", "302")), 5000,
                        "301's and 302's standby sessions at node 1")
        yield world
    finally:
        world.close()


def test_a_phone_at_a_lost_node_keeps_its_held_call_as_well_as_its_current_one(world):
    p, n1 = world.phones, world.n1
    world.call("301", "303")                                   # between the nodes: a half at each
    _act(world, "301", lambda ph, now: lines.consult(ph, "302", now))   # 303 held, 302 called (node 2)
    _answer(world, "302")
    world.run_until(lambda: p["301"].connected and p["302"].connected, 2000, "301 and 302 talk")
    assert p["301"].phone.other is not None and p["303"].connected
    world.run(400)                                             # the calls' keys written (the 200 ms writer)

    world.stop_main()
    lost = world.net.now
    world.run_until(lambda: tuple(p["301"].host) == NODE1 and tuple(p["302"].host) == NODE1, 4000,
                    "301 and 302 switched to node 1")
    # node 1 takes both of 301's calls over: the one with 302 (both phones name it) and the held one with 303
    # (301 names its second line too), which it splices to its own half
    world.run_until(lambda: len(n1.switch.calls) == 2 and not n1.xnode.held and all(
        leg.link.kind == "phone" for c in n1.switch.calls.values() for leg in (c.a, c.b)), 3000, "node 1 has both calls")
    assert sorted(sorted((c.a.link.name, c.b.link.name)) for c in n1.switch.calls.values()) == [
        ["301", "302"], ["301", "303"]]
    _listen(world, 600)
    _in_order(p["302"], p["301"], 20)
    _in_order(p["301"], p["302"], 20)
    # past the hold: nothing ended
    world.run_until(lambda: world.net.now - lost >= trunk.HOLD_MS + 1000, trunk.HOLD_MS + 2000, "past the hold")
    assert all(p[n].causes() == [] for n in ("301", "302", "303")), {n: p[n].causes() for n in p}
    # 301 goes back to 303: they talk, through node 1 alone
    _act(world, "301", lambda ph, now: lines.swap(ph, now))
    _listen(world, 600)
    _in_order(p["303"], p["301"], 20)
    _in_order(p["301"], p["303"], 20)
    world.hangup("301")
    world.run_until(lambda: p["303"].idle, 2000, "303's call ended")
    assert p["303"].causes() == [wire.CAUSE_NORMAL]
    assert MAIN not in world.net.endpoints and not world.net.errors


def test_a_switched_phones_call_that_nobody_takes_over_ends_main_host_lost(world):
    """301 and 302 (both at node 2, standby at node 1) talk; node 1 cannot take their call over (Redis lost its key:
    the test empties `CallKeys`). Node 2 is lost: both phones switch, and their call's media never comes back.
    Until session 17 each stayed in that silent call until its user hung up; now each ends it "main host lost"
    10 s after its switch, as a remote host ends such a call after its grace period (its `unconfirmed` check)."""
    p = world.phones
    world.call("301", "302")
    world.run(400)
    world.calls.keys.clear()
    world.calls.serve = lambda *args: None          # and nothing more reaches Redis
    world.stop_main()
    world.run_until(lambda: tuple(p["301"].host) == NODE1 and tuple(p["302"].host) == NODE1, 4000, "switched")
    switched = world.net.now
    world.run_until(lambda: p["301"].idle and p["302"].idle, 12000, "both calls ended")
    assert 9500 <= world.net.now - switched <= 10500, world.net.now - switched
    assert p["301"].causes() == [wire.CAUSE_MAIN_LOST] == p["302"].causes()
    assert not world.n1.switch.calls and not world.net.errors
