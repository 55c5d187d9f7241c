"""A direct call between sites at two nodes through the loss of one, when the successor is a THIRD node (issue
16; docs/cluster.md "Direct media between sites at two nodes").

tests/test_cluster_direct_loss.py's world (site a at node 2, site b at node 1, the test playing Redis's call
keys) with node 2 lost while site a cannot reach node 1 (its datagrams to node 1 are lost), so that node 1
holds its half and nobody splices it. The third node, C, is a fresh MainHost core (not on the virtual network):
its real Takeover adopts node 2's half from the call key node 2's CallMirror wrote, its site a's session and its
trunk to node 1 are links that keep what C sends on them, and what C sends node 1 is handed to node 1's core as
a message from C's trunk (and back). What is asserted: the key does not show the pair in clear; C restores the
pair and claims node 1's held leg at once (a direct call sends no frame that would); node 1 keeps the call past
the hold; a B7 change of either site is offered again, with the call's pair key, to both sites.
"""
import json

from upbx.common import wire
from upbx.host.cluster import trunk
from upbx.host.cluster.calls import KEY, Takeover
from upbx.host.config import load_main_config
from upbx.host.log import StructuredLog
from upbx.host.main_host import MainHost
from upbx.host.switch import Link
from tests.inprocess import SITE_A, SITE_B, flush_host
from tests.test_cluster_direct_loss import A_MOVED, B_MOVED, _pair_at, world   # noqa: F401 (the fixture)
from tests.test_cluster_forward import NODE1


class Kept(Link):
    """A link whose messages are kept (the test hands them on)."""

    def __init__(self, name, kind, address=None):
        Link.__init__(self, name, kind, address=address)
        self.sent = []

    def send_signal(self, msg_type, ies, now):
        self.sent.append((msg_type, dict(ies)))
        return True

    def take(self):
        sent, self.sent = self.sent, []
        return sent


class ThirdNodeTrunks:
    """Node C's NodeTrunks, as Takeover and the core ask it: node 2's trunk leg in the key is C's trunk to node 1."""

    def __init__(self, to_node1):
        self.to_node1 = to_node1
        self.held = {}

    def link_for(self, kind, name):
        return self.to_node1 if kind == "node" else None

    def held_leg(self, call_no):
        return None


def _third_node(world, site_a_address):
    c = MainHost(load_main_config(str(world.tmp / "main.toml")), StructuredLog("n3", "error"))
    c.xnode = ThirdNodeTrunks(Kept("node 1", "node"))
    c.takeover = Takeover(c, world.calls.cluster_key)
    site_a = c.links_by_name[("host", "site-a")] = Kept("site-a", "host", address=site_a_address)
    return c, site_a, c.xnode.to_node1


def test_a_third_node_that_takes_a_direct_half_over_offers_the_pair_again_on_a_b7_change(world):
    world.call("101", "201")
    n2_call, n1_call = world.node_call(world.main), world.node_call(world.n1)
    world.run_until(lambda: n2_call.path == "direct" and n1_call.peered, 3000, "direct")
    world.run(200)
    key = world.n1.pair_keys[frozenset(("site-a", "site-b"))]
    site_a_public, site_b_public = world.net.nat[SITE_A], world.net.nat[SITE_B]
    raw = world.calls.keys[KEY % n2_call.uid]
    # node 2's key holds the pair sealed: neither the pair key nor site b's address in clear
    assert key.hex() not in raw and site_b_public[0] not in raw and "xpair" in json.loads(raw)

    # node 2 lost; site a cannot reach node 1 (its successor here), so node 1 holds its half for a successor
    world.blocked.add((SITE_A, NODE1))
    world.lose_node_2()
    n1_leg = n1_call.a
    world.run_until(lambda: n1_leg.call_no in world.n1.xnode.held, 3000, "node 1 holds its half")

    # node C takes node 2's half over from the key: site a's session there, the other leg on C's trunk to node 1
    c, c_site_a, c_trunk = _third_node(world, site_a_public)
    assert c.takeover.adopt(json.loads(raw), world.net.now, c.wall_ms(world.net.now)) is None
    c_call = next(iter(c.switch.calls.values()))
    assert c_call.a.link is c_site_a and c_call.b.link is c_trunk and c_call.path == "direct"
    # and tells node 1 at once, naming node 1's held leg: node 1's site b is offered site a where it is
    said = c_trunk.take()
    assert said == [(wire.PUNCH_OFFER, {wire.IE_HOST_NAME: "site-b", wire.IE_PEER_NAME: "site-a",
                                        wire.IE_ADDRESS: site_a_public, wire.IE_PEER_KEY: key,
                                        wire.IE_PEER_CALL_NO: n1_leg.call_no})]
    n1_trunk = Kept("@3", "node")     # C's session at node 1
    for msg_type, ies in said:
        world.n1._message(n1_trunk, msg_type, ies, world.net.now)
    flush_host(world.net, world.n1)
    assert n1_call.a.link is n1_trunk and n1_call.xpair.trunk is n1_trunk and not world.n1.xnode.held
    assert world.n1.stats.drops.get("node trunk: bad direct offer", 0) == 0
    # node 1 keeps the call past the hold: 201 is not released, nothing lost
    world.run(trunk.HOLD_MS + 500)
    assert world.callee.connected and n1_call.uid in {c.uid for c in world.n1.switch.calls.values()}
    assert world.n1.stats.counters.get("node trunk: calls lost", 0) == 0

    # B7 of site a, seen at C (site a's session is at home there): C offers site a its peer again, and node 1
    # (on C's trunk) site a's new address, with the call's pair key
    world.move_site_a(A_MOVED)
    c_site_a.address = A_MOVED
    c.xdirect.moved(c_site_a, world.net.now)
    assert c_site_a.take() == [(wire.PUNCH_OFFER, {wire.IE_PEER_NAME: "site-b", wire.IE_ADDRESS: site_b_public,
                                                   wire.IE_PEER_KEY: key, wire.IE_ROLE: 0})]
    said = c_trunk.take()
    assert said == [(wire.PUNCH_OFFER, {wire.IE_HOST_NAME: "site-b", wire.IE_PEER_NAME: "site-a",
                                        wire.IE_ADDRESS: A_MOVED, wire.IE_PEER_KEY: key})]
    for msg_type, ies in said:
        world.n1._message(n1_trunk, msg_type, ies, world.net.now)
    flush_host(world.net, world.n1)
    world.run_until(lambda: _pair_at(world.b, "site-a", A_MOVED), 3000, "site b's pair at site a's new address")

    # B7 of site b, seen at node 1: offered to C on its trunk, and by C to site a
    world.net.nat[SITE_B] = B_MOVED
    world.run_until(lambda: any(t == wire.PUNCH_OFFER for t, _ies in n1_trunk.sent), 3000,
                    "node 1 re-offered site b to C")
    said = n1_trunk.take()    # with site b's PUNCH_RESULTs (its pair is up at each offer), for C too
    assert [m for m in said if m[0] == wire.PUNCH_OFFER] == [
        (wire.PUNCH_OFFER, {wire.IE_HOST_NAME: "site-a", wire.IE_PEER_NAME: "site-b", wire.IE_ADDRESS: B_MOVED,
                            wire.IE_PEER_KEY: key})]
    for msg_type, ies in said:
        c._message(c_trunk, msg_type, ies, world.net.now)
    assert c_site_a.take() == [(wire.PUNCH_OFFER, {wire.IE_PEER_NAME: "site-b", wire.IE_ADDRESS: B_MOVED,
                                                   wire.IE_PEER_KEY: key, wire.IE_ROLE: 0})]
    assert c.stats.drops.get("node trunk: bad direct offer", 0) == 0
    c.directory.close()


def test_a_third_node_that_takes_a_ringing_half_over_claims_the_held_leg_and_the_answer_reaches_the_caller(world):
    """101 (site a, node 2) calls 201 (site b, node 1); 201 rings; node 2 is lost while site a cannot reach node 1,
    so node 1 holds its half; 201 answers meanwhile (its ANSWER goes towards the lost node). Node C adopts node
    2's half from its key, ringing, and names node 1's held leg at once (NODES standby 0 on its trunk: a ringing
    call sends no frame that would; until session 15 nothing did, and node 1 ended the call after the hold).
    Node 1 moves the leg to C's trunk and says the ANSWER again there; C passes it to site a: 101 is answered."""
    from upbx.common.call import RINGING
    from tests.test_cluster_direct_loss import _ring
    _ring(world, "101", "201")
    n2_call, n1_call = world.node_call(world.main), world.node_call(world.n1)
    raw = world.calls.keys[KEY % n2_call.uid]
    assert json.loads(raw)["state"] == "alerting"
    world.blocked.add((SITE_A, NODE1))
    world.lose_node_2()
    n1_leg = n1_call.a
    world.run_until(lambda: n1_leg.call_no in world.n1.xnode.held, 3000, "node 1 holds its half")
    world.phones["201"].phone.answer(world.net.now)
    world.phones["201"].flush()
    world.run_until(lambda: n1_call.state == "answered", 2000, "201 answered at node 1")
    assert world.n1.xnode.held                       # its ANSWER went towards the lost node

    c, c_site_a, c_trunk = _third_node(world, world.net.nat[SITE_A])
    value = json.loads(raw)
    del value["xpair"]    # as a relayed call's key (sites without a direct path): no pair offer names the leg
    # a node 1 of older code (its etcd record says no "claim": a rolling upgrade) is sent no NODES it would drop
    older, _site_a, older_trunk = _third_node(world, world.net.nat[SITE_A])
    older_trunk.node, older.node_speaks = 1, {1: frozenset(("pickup", "transfer"))}
    assert older.takeover.adopt(dict(value), world.net.now, older.wall_ms(world.net.now)) is None
    assert older_trunk.take() == []
    assert c.takeover.adopt(value, world.net.now, c.wall_ms(world.net.now)) is None
    c_call = next(iter(c.switch.calls.values()))
    assert c_call.a.link is c_site_a and c_call.b.link is c_trunk and c_call.state == "alerting"
    assert c_call.a.state == RINGING
    said = c_trunk.take()
    assert said == [(wire.NODES, {wire.IE_STANDBY: 0, wire.IE_CALL_NO: c_call.b.call_no,
                                  wire.IE_PEER_CALL_NO: n1_leg.call_no})]
    n1_trunk = Kept("@3", "node")                     # C's session at node 1
    for msg_type, ies in said:
        world.n1._message(n1_trunk, msg_type, ies, world.net.now)
    assert n1_call.a.link is n1_trunk and not world.n1.xnode.held
    assert world.n1.stats.drops.get("unexpected message from a node", 0) == 0
    # node 1 says its ANSWER again on C's trunk, and C passes it on to site a (101's remote host)
    said = n1_trunk.take()
    assert [t for t, _ies in said] == [wire.ANSWER]
    for msg_type, ies in said:
        c._message(c_trunk, msg_type, ies, world.net.now)
    assert c_call.state == "answered"
    assert [t for t, _ies in c_site_a.take()] == [wire.ANSWER]
    # node 1 keeps the call past the hold: 201 is not released
    world.run(trunk.HOLD_MS + 500)
    assert world.phones["201"].connected and world.n1.stats.counters.get("node trunk: calls lost", 0) == 0
