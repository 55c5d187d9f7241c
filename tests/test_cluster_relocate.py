"""A call sent to the node a site was at, after the site moved (issue 16; docs/cluster.md "A site moves to its
first node", "A call to where a client was").

Three real node cores on the virtual network (tests/test_cluster_xgroup.py's two, and a third, each with its real
NodeTrunks logged in to the others; `Locations` plays Redis's location keys): site a's remote host at node 2,
its standby session at node 2's successor, and a phone straight at the third node, which calls 101. The calling
node's location cache (host/cluster/trunk.py, trusted CACHE_MS = 2 s) names a node the site is not at home at:
the site's standby node, as after a move or a failover in the last 2 s, or a node where it has no session at
all. Until session 17 that node refused the call "unreachable" (it sends no SETUP on to a third node, and a
standby session refuses SETUPs), and the caller heard that. Now it refuses saying the client is not at home
there, and the calling node asks Redis again and sends the call on, once.
"""
import pytest

from upbx.common import cluster, wire
from upbx.common.call import RINGING
from upbx.host.cluster.trunk import CACHE_MS, NodeTrunks
from upbx.host.config import load_main_config
from upbx.host.log import StructuredLog
from upbx.host.main_host import MainHost
from tests.inprocess import MAIN, WALL_MS, PhoneEnd, attach_host, flush_host
from tests.test_cluster_forward import NODE1, make_node
from tests.test_cluster_xgroup import TwoNodes, _in_order, _listen

NODE3 = ("198.18.0.13", 4569)
ADDRESSES = {1: NODE1, 2: MAIN, 3: NODE3}


class ThreeNodes(TwoNodes):
    """TwoNodes and node 3 (self.n3), the three nodes' trunks up between each pair."""

    def __init__(self, tmp_path):
        self.n3 = None
        TwoNodes.__init__(self, tmp_path)
        secret = self.main.peers._cookie_secret
        self.n3 = MainHost(load_main_config(str(self.tmp / "main.toml")), StructuredLog("n3", "error"))
        attach_host(self.net, self.n3, NODE3)
        self.n3.wall_offset_ms = WALL_MS - 1000
        make_node(self.n3, 3, NODE3, secret)
        self.n3.xnode = NodeTrunks(self.n3, 3, secret)
        self.n3.start(self.net.now)
        for host in self.nodes.values():
            host.set_cluster_nodes(ADDRESSES, self.net.now)
            flush_host(self.net, host)
        self.run_until(lambda: all(n.xnode.up(o) for i, n in self.nodes.items() for o in ADDRESSES if o != i), 5000,
                       "the trunks between the three nodes up")

    @property
    def nodes(self):
        return {i: n for i, n in ((1, self.n1), (2, self.main), (3, self.n3)) if n is not None}

    @property
    def hosts(self):
        return TwoNodes.hosts.fget(self) + ((self.n3,) if self.n3 is not None else ())

    def tick(self, until=None):
        done = TwoNodes.tick(self, until)
        if self.n3 is not None:
            self.locations.serve(3, self.n3.xnode, self.net.now)
            flush_host(self.net, self.n3)
            self.settle()
        return done

    def add_phone_at_node(self, number, index, node):
        end = PhoneEnd(self.net, number, self.secrets[number], ("198.18.2.%d" % index, 40000), ADDRESSES[node])
        self.phones[number] = end
        end.phone.start(self.net.now)
        end.flush()
        return end

    def close(self):
        self.n3.directory.close()
        TwoNodes.close(self)


@pytest.fixture
def world(tmp_path):
    world = ThreeNodes(tmp_path)
    try:
        standby = cluster.successor(2, [1, 2, 3])   # site a's standby node (node 2's successor)
        world.caller_node = ({1, 3} - {standby}).pop()
        world.standby_node = standby
        world.add_phone("101", 1)
        world.add_phone_at_node("303", 7, world.caller_node)
        world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 5000, "registered")
        world.run_until(lambda: world.a.standby_link.up
                        and tuple(world.a.standby_link.address[:2]) == ADDRESSES[standby], 5000, "site a's standby up")
        world.run_until(lambda: world.locations.keys.get(("host", "site-a")) == 2, 2000, "site a's key")
        yield world
    finally:
        world.close()


def _call_with_a_stale_location(world, stale_node):
    """303 calls 101 while its node's cache says site a is at stale_node (not its home, node 2): 101 rings, answers,
    they talk through node 2, and the call ends normally, recorded once."""
    p = world.phones
    caller = world.nodes[world.caller_node]
    caller.xnode.cache[("host", "site-a")] = (stale_node, world.net.now + CACHE_MS)
    assert p["303"].phone.dial("101", world.net.now)
    p["303"].flush()
    world.run_until(lambda: p["101"].phone.state == RINGING or p["303"].idle, 3000, "101 rings")
    assert p["303"].causes() == [], "303's call refused: %r" % p["303"].causes()
    assert p["101"].phone.answer(world.net.now)
    p["101"].flush()
    world.run_until(lambda: p["101"].connected and p["303"].connected, 2000, "connected")
    _listen(world, 600)
    _in_order(p["101"], p["303"], 20)
    _in_order(p["303"], p["101"], 20)
    # the call runs caller's node -> node 2 -> site a; nothing of it at stale_node
    assert [c.callee for c in world.main.switch.calls.values()] == ["101"]
    assert not world.nodes[stale_node].switch.calls
    world.hangup("303")
    world.run_until(lambda: p["101"].idle and p["303"].idle, 2000, "hung up")
    assert p["101"].causes()[-1] == wire.CAUSE_NORMAL == p["303"].causes()[-1]
    return caller


def test_a_call_sent_to_a_sites_standby_node_from_a_stale_cache_goes_on_to_its_home(world):
    """The cache names the node where site a keeps its standby session (where it was at home before a move or a
    switch): that node refuses saying "not at home here", the caller's node asks Redis and rings 101 at node 2."""
    stale = world.nodes[world.standby_node]
    caller = _call_with_a_stale_location(world, world.standby_node)
    assert stale.stats.counters["setups from a node for a client not at home here"] == 1
    assert caller.stats.counters["location: calls sent on after a move"] == 1
    assert world.a.stats.counters.get("standby setups refused", 0) == 0   # never offered to the standby session
    records = world.main.directory.call_records()   # the nodes share one database here, as they share PostgreSQL
    assert [(r.caller, r.callee, r.cause) for r in records] == [("303", "101", "normal clearing")]
    assert not world.net.errors


def test_a_call_sent_to_a_node_the_site_is_not_at_from_a_stale_cache_goes_on_once(world):
    """The cache names a node where site a has no session at all (its standby session there logged out): refused
    the same way, sent on to node 2. Then Redis itself names that node (behind): the call is sent on once only, and
    the second refusal ends it "unreachable" (no loop between the nodes)."""
    world.a._give_up_standby(world.net.now)           # site a keeps no session at its standby node
    flush_host(world.net, world.a)
    world.run(200)
    stale = world.nodes[world.standby_node]
    assert ("host", "site-a") not in stale.links_by_name
    caller = _call_with_a_stale_location(world, world.standby_node)
    assert caller.stats.counters["location: calls sent on after a move"] == 1
    # Redis itself behind (it names the standby node, which refuses again): the call is sent on once, then refused
    p = world.phones
    world.locations.keys[("host", "site-a")] = world.standby_node
    caller.xnode.cache[("host", "site-a")] = (world.standby_node, world.net.now + CACHE_MS)
    assert p["303"].phone.dial("101", world.net.now)
    p["303"].flush()
    world.run_until(lambda: p["303"].idle, 5000, "303's call refused")
    assert p["303"].causes()[-1] == wire.CAUSE_UNREACHABLE and p["101"].phone.state != RINGING
    assert caller.stats.counters["location: calls sent on after a move"] == 2
    assert not world.net.errors
