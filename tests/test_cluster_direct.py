"""B2 between sites at two nodes (docs/cluster.md, "Direct media between sites at two nodes"), in memory.

tests/inprocess.py's World with two nodes' real cores (its main host node 2, a second MainHost node 1, as
tests/test_cluster_forward.py makes them), each with its real NodeTrunks (host/cluster/trunk.py): they log
in to each other over the virtual network. Site a's remote host is at node 2, site b's at node 1. The test
plays the one part that talks to Redis (`LocationService`): whatever a node asks, it answers where each
site really is. 101 (site a) calls 201 (site b): each node offers its site the other as a direct peer,
the remote hosts punch, and the media goes between them, not through either node. What is asserted is
what the sites were offered, the audio, the nodes' media counters and the call's path and record.
"""
from upbx.common import wire
from upbx.host.cluster.trunk import NodeTrunks
from upbx.host.config import load_remote_config
from upbx.host.log import StructuredLog
from upbx.host.remote_host import RemoteHost
from tests.inprocess import MAIN, SITE_A, SITE_B, attach_host, flush_host
from tests.test_cluster_forward import NODE1, TwoNodes

HOMES = {("host", "site-a"): 2, ("host", "site-b"): 1}   # what Redis says: each site's node


class SitesAtTwoNodes(TwoNodes):
    """TwoNodes with site b (remote host at node 1) beside site a (at node 2), the nodes' trunks up."""

    def __init__(self, tmp_path, **kwargs):
        TwoNodes.__init__(self, tmp_path, site_b=True, **kwargs)
        secret = self.main.peers._cookie_secret
        for host, node in ((self.main, 2), (self.n1, 1)):
            host.xnode = NodeTrunks(host, node, secret)
            host.set_cluster_nodes({1: NODE1, 2: MAIN}, self.net.now)
        toml = self.tmp / "site-b.toml"
        toml.write_text(toml.read_text().replace("%s:%d" % MAIN, "%s:%d" % NODE1))
        self.b.records.close()
        self.b = RemoteHost(load_remote_config(str(toml)), StructuredLog("site-b", "error"))
        attach_host(self.net, self.b, SITE_B)
        self.blocked = set()    # pairs of addresses between which datagrams are lost (no direct path)
        self.net.send = self._send(self.net.send)
        self.start_remote()
        self.run_until(lambda: all(n.xnode.up(o) for n, o in ((self.main, 1), (self.n1, 2))), 3000, "trunks up")
        self.caller = self.add_phone("101", 1)
        self.callee = self.add_phone("201", 2)
        self.run_until(lambda: self.caller.phone.registered and self.callee.phone.registered, 5000, "registered")

    def _send(self, send):
        def filtered(data, source, destination):
            if (tuple(source), tuple(destination[:2])) in self.blocked:
                return
            send(data, source, destination)
        return filtered

    def tick(self, until=None):
        for node in (self.main, self.n1):   # LocationService: Redis answers what was asked
            if node.xnode.asked:
                asked, node.xnode.asked = node.xnode.asked, set()
                node.xnode.answered({identity: HOMES.get(identity) for identity in asked}, self.net.now)
                flush_host(self.net, node)
        return TwoNodes.tick(self, until)

    def media_in(self):
        return [node.stats.counters.get("media in", 0) for node in (self.main, self.n1)]

    def node_call(self, node):
        calls = list(node.switch.calls.values())
        assert len(calls) == 1, calls
        return calls[0]

    def close(self):
        TwoNodes.close(self)


def _in_order(heard, said, missing=0):
    """heard is a run of said's frames, in order, nothing else, with at most `missing` of them left out."""
    assert heard, "nothing heard"
    start = said.index(heard[0])
    positions = [said.index(frame) for frame in heard]
    assert positions == sorted(set(positions)), "out of order or twice"
    assert positions[-1] - start + 1 - len(heard) <= missing, (positions[-1] - start + 1 - len(heard), missing)


def _ends_recorded(world, hangs_up, path):
    """hangs_up ends the call of 101 and 201: both idle, recorded once as 101 -> 201 by path."""
    world.hangup(hangs_up)
    world.run_until(lambda: world.caller.idle and world.callee.idle, 2000, "hung up")
    records = world.main.directory.call_records()
    assert [(r.caller, r.callee, r.path) for r in records] == [("101", "201", path)]
    assert not world.net.errors


def test_a_call_between_sites_at_two_nodes_goes_direct_and_neither_node_relays_it(tmp_path):
    world = SitesAtTwoNodes(tmp_path)
    try:
        caller, callee = world.caller, world.callee
        world.call("101", "201")
        n2_call, n1_call = world.node_call(world.main), world.node_call(world.n1)
        # each node switched its half over the trunk and offered its site the other site, at the address
        # the other node sees: the remote hosts punched and their pair is up
        assert n2_call.b.link.kind == "node" and n1_call.a.link.kind == "node"
        world.run_until(lambda: world.a.pairs.get("site-b") is not None and world.a.pairs.get("site-b").link.up
                        and world.b.pairs.get("site-a") is not None and world.b.pairs.get("site-a").link.up,
                        3000, "the direct pair up at both sites")
        assert world.a.status()["pairs"]["site-b"] == {"up": True, "address": "%s:%d" % SITE_B}
        assert world.b.status()["pairs"]["site-a"] == {"up": True, "address": "%s:%d" % SITE_A}
        world.run_until(lambda: n2_call.path == "direct" and n1_call.path == "direct", 2000, "both nodes: direct")
        assert n2_call.peered and n1_call.peered
        # from here on the media goes site a <-> site b: neither node's media counter moves
        world.run(200)
        before, a_sent, b_sent = world.media_in(), len(caller.sent), len(callee.sent)
        heard_at_b, heard_at_a = len(callee.received), len(caller.received)
        direct_in = (world.a.stats.counters.get("media in", 0), world.b.stats.counters.get("media in", 0))
        world.run(1000)
        assert world.media_in() == before
        assert len(callee.received) - heard_at_b >= 45 and len(caller.received) - heard_at_a >= 45
        assert world.a.stats.counters["media in"] - direct_in[0] >= 45
        assert world.b.stats.counters["media in"] - direct_in[1] >= 45
        # each phone heard the other's frames in order, nothing foreign, also across the switch to direct
        _in_order(callee.received, caller.sent)
        _in_order(caller.received, callee.sent)
        assert callee.received[-1] in caller.sent[a_sent - 3:] and caller.received[-1] in callee.sent[b_sent - 3:]
        world.hangup("101")
        world.run_until(lambda: caller.idle and callee.idle, 2000, "hung up")
        assert caller.causes() == [wire.CAUSE_NORMAL] and callee.causes() == [wire.CAUSE_NORMAL]
        # the call is recorded once (both nodes write to one directory here: the callee's node wrote none), direct
        records = world.main.directory.call_records()
        assert [(r.caller, r.callee, r.path) for r in records] == [("101", "201", "direct")]
        assert world.n1.stats.drops.get("node trunk: bad direct offer", 0) == 0
        assert world.main.stats.drops.get("node trunk: bad direct offer", 0) == 0
        assert not world.net.errors
    finally:
        world.close()


def test_sites_at_two_nodes_that_cannot_reach_each_other_are_relayed_by_both_nodes(tmp_path):
    world = SitesAtTwoNodes(tmp_path)
    world.blocked |= {(SITE_A, SITE_B), (SITE_B, SITE_A)}   # no datagram passes between the two sites
    try:
        caller, callee = world.caller, world.callee
        world.call("101", "201")
        n2_call, n1_call = world.node_call(world.main), world.node_call(world.n1)
        # both were offered the pair, punched for punch_timeout_s and reported relay
        world.run_until(lambda: n2_call.path == "relay" and len(n2_call.punch) == 2 and len(n1_call.punch) == 2,
                        4000, "both sites reported relay")
        assert set(n2_call.punch.values()) == {wire.PATH_RELAY} == set(n1_call.punch.values())
        assert not world.a.pairs.get("site-b").link.up and not world.b.pairs.get("site-a").link.up
        before = world.media_in()
        heard_at_b, heard_at_a = len(callee.received), len(caller.received)
        world.run(1000)
        # every frame crossed both nodes (each relays it once: 50 a second each way)
        assert all(after - was >= 2 * 45 for after, was in zip(world.media_in(), before))
        assert len(callee.received) - heard_at_b >= 45 and len(caller.received) - heard_at_a >= 45
        _in_order(callee.received, caller.sent)
        _in_order(caller.received, callee.sent)
        assert callee.received == caller.sent[:len(callee.received)]   # none lost while the sites punched
        _ends_recorded(world, "101", "relay")
    finally:
        world.close()


def test_only_a_node_names_a_peer_and_only_the_sites_of_a_call_over_its_trunk(tmp_path):
    world = SitesAtTwoNodes(tmp_path)
    try:
        n1_trunk = world.n1.links_by_name[("host", "@2")]    # node 2's login to node 1: an authentic node's session
        # a remote host (not a node) names a peer to its node: dropped and counted
        world.a.main_link.send_signal(wire.PUNCH_OFFER, {wire.IE_PEER_NAME: "site-x", wire.IE_ROLE: 0,
                                                         wire.IE_ADDRESS: ("198.18.66.6", 4570),
                                                         wire.IE_PEER_KEY: bytes(32)}, world.net.now)
        flush_host(world.net, world.a)
        # a node names site a a peer when no call between site a and that peer goes over its trunk
        n1_trunk.send_signal(wire.PUNCH_OFFER, {wire.IE_HOST_NAME: "site-a", wire.IE_PEER_NAME: "site-b",
                                                wire.IE_ADDRESS: ("198.18.66.6", 4570), wire.IE_PEER_KEY: bytes(32)},
                             world.net.now)
        flush_host(world.net, world.n1)
        world.run(200)
        assert world.main.stats.drops["direct path named by a client"] == 1
        assert world.main.stats.drops["node trunk: bad direct offer"] == 1
        assert not world.a.pairs.values() and not world.b.pairs.values()
        # during a call: an offer on the trunk naming another site than the call's, and a MEDIA_PEER whose key
        # is not the one the call was given, change nothing: the call goes on direct
        world.call("101", "201")
        n1_call = world.node_call(world.n1)
        world.run_until(lambda: n1_call.path == "direct" and n1_call.peered, 3000, "direct")
        pair_at_a = world.a.pairs.get("site-b")
        n1_trunk.send_signal(wire.PUNCH_OFFER, {wire.IE_HOST_NAME: "site-a", wire.IE_PEER_NAME: "site-x",
                                                wire.IE_ADDRESS: ("198.18.66.6", 4570), wire.IE_PEER_KEY: bytes(32)},
                             world.net.now)
        n1_trunk.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: n1_call.a.peer_call_no, wire.IE_CALL_NO: 77,
                                               wire.IE_MEDIA_KEY: bytes(16), wire.IE_ROLE: 0,
                                               wire.IE_PEER_NAME: "site-b"}, world.net.now)
        flush_host(world.net, world.n1)
        before = world.media_in()
        heard = len(world.callee.received)
        world.run(600)
        assert world.main.stats.drops["node trunk: bad direct offer"] == 3
        assert world.a.pairs.get("site-b") is pair_at_a and pair_at_a.link.up and "site-x" not in world.a.pairs.by_name
        assert pair_at_a.link.address == SITE_B
        assert world.media_in() == before and len(world.callee.received) - heard >= 25
        _in_order(world.callee.received, world.caller.sent)
        assert not world.net.errors
    finally:
        world.close()


def test_a_direct_path_taken_back_at_one_node_is_taken_back_at_both(tmp_path):
    """What a transfer or conference does when it joins a direct call at one node (media_through_here): that
    node's site sends through it again, and so, told on the trunk, does the other node's."""
    world = SitesAtTwoNodes(tmp_path)
    try:
        caller, callee = world.caller, world.callee
        world.call("101", "201")
        n2_call, n1_call = world.node_call(world.main), world.node_call(world.n1)
        world.run_until(lambda: n2_call.peered and n1_call.peered and n2_call.path == "direct", 3000, "direct")
        world.run(200)
        before = world.media_in()
        world.run(400)
        assert world.media_in() == before
        world.main.media_through_here(n2_call, world.net.now)   # the caller's node joins it into another call
        flush_host(world.net, world.main)
        world.run_until(lambda: not n1_call.peered, 1000, "node 1 took its end back")
        assert n2_call.path == "relay" and n1_call.path == "relay"
        assert world.main.stats.counters["direct paths taken back"] == 1
        assert world.n1.stats.counters["direct paths taken back"] == 1
        assert world.a.stats.counters["direct paths taken back"] == 1
        assert world.b.stats.counters["direct paths taken back"] == 1
        world.run(200)
        before, heard_at_b, heard_at_a = world.media_in(), len(callee.received), len(caller.received)
        world.run(1000)
        # every frame crosses both nodes again, both ways, in order; what site b sent straight to site a while
        # the take-back crossed the trunk (site a took it first) is lost: here one frame, at most two
        assert all(after - was >= 2 * 45 for after, was in zip(world.media_in(), before))
        assert len(callee.received) - heard_at_b >= 45 and len(caller.received) - heard_at_a >= 45
        _in_order(callee.received, caller.sent, missing=2)
        _in_order(caller.received, callee.sent, missing=2)
        assert not world.net.errors
    finally:
        world.close()


def test_a_call_forwarded_by_the_callers_node_to_a_site_at_the_other_node_goes_direct(tmp_path):
    """101 (site a, node 2) calls 102 (site a), who forwards every call to 201 (site b, node 1): node 2
    follows the forward, switches the call over the trunk, and the two nodes offer the sites the direct
    pair as for a call dialled straight to 201; the media then goes site a <-> site b, through neither
    node; recorded once, direct, to the number that answered."""
    world = SitesAtTwoNodes(tmp_path)
    try:
        caller, callee = world.caller, world.callee
        forwards = world.add_phone("102", 3)                                # 102 dials *72201 at site a
        world.run_until(lambda: forwards.phone.registered, 5000, "102 registered")
        assert forwards.phone.dial("*72201", world.net.now)
        forwards.flush()
        world.run_until(lambda: forwards.causes() == [wire.CAUSE_FEATURE_ON], 3000, "102 forwards to 201")
        world.call("101", "102", answers="201")
        n2_call, n1_call = world.node_call(world.main), world.node_call(world.n1)
        assert n2_call.b.link.kind == "node" and n1_call.a.link.kind == "node"
        world.run_until(lambda: n2_call.path == "direct" and n1_call.path == "direct", 3000, "both nodes: direct")
        assert world.a.status()["pairs"]["site-b"] == {"up": True, "address": "%s:%d" % SITE_B}
        assert world.b.status()["pairs"]["site-a"] == {"up": True, "address": "%s:%d" % SITE_A}
        world.run(200)
        before, heard_at_b, heard_at_a = world.media_in(), len(callee.received), len(caller.received)
        world.run(1000)
        assert world.media_in() == before                                   # neither node relays it
        assert len(callee.received) - heard_at_b >= 45 and len(caller.received) - heard_at_a >= 45
        _in_order(callee.received, caller.sent)
        _in_order(caller.received, callee.sent)
        _ends_recorded(world, "201", "direct")
    finally:
        world.close()
