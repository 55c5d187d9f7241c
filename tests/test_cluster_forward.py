"""One-hop forwarding between two nodes' real cores, in one process (issue 16 item 2).

tests/inprocess.py's World, with its main host made node 2 of a cluster and a second MainHost, node
1, on the same directory and cookie secret (what etcd and PostgreSQL give the nodes of a real
cluster: tests/test_cluster_route.py runs them as processes). Phones 301 and 302 talk through node 2;
then 301's datagrams go to node 1 instead, which reads node 2's id in their call number and session
index and sends them on. What is asserted is the audio that arrives, the envelopes on the wire and
the nodes' counts. And a standalone main host's WELCOME is what it was.
"""
from upbx.common import cluster, cluster_make, wire
from upbx.common.login import LoginUp
from upbx.host.cluster import route
from upbx.host.cluster.route import ENVELOPE, Router
from upbx.host.config import load_main_config
from upbx.host.log import StructuredLog
from upbx.host.main_host import MainHost
from tests.inprocess import MAIN, World, attach_host

NODE1 = ("198.18.0.11", 4569)


def make_node(host, node_id, address, secret):
    host.router = Router(node_id, secret, host.stats)
    host.router.set_address(address)
    host.peers.node_id = node_id
    host.peers._cookie_secret = secret
    host.switch.set_node(node_id)


class TwoNodes(World):
    def __init__(self, tmp_path, **kwargs):
        World.__init__(self, tmp_path, **kwargs)
        self.n1 = None
        secret = self.main.peers._cookie_secret
        make_node(self.main, 2, MAIN, secret)
        self.n1 = MainHost(load_main_config(str(self.tmp / "main.toml")), StructuredLog("n1", "error"))
        attach_host(self.net, self.n1, NODE1)
        make_node(self.n1, 1, NODE1, secret)
        self.n1.start(self.net.now)
        for host in (self.main, self.n1):
            host.set_cluster_nodes({1: NODE1, 2: MAIN}, self.net.now)

    @property
    def hosts(self):
        return tuple(h for h in (self.main, self.a, self.b, getattr(self, "n1", None)) if h is not None)

    def close(self):
        self.n1.directory.close()
        World.close(self)


def test_media_and_signalling_sent_to_the_wrong_node_reach_the_call(tmp_path):
    world = TwoNodes(tmp_path)
    try:
        a, b = world.add_phone("301", 1), world.add_phone("302", 2)
        world.run_until(lambda: a.phone.registered and b.phone.registered, 5000, "registered at node 2")
        assert cluster.index_node(world.main.peers.by_identity[("phone", "301")].index) == 2
        world.call("301", "302")
        legs = [leg.call_no for leg in world.main.switch.legs.values()]
        assert legs and all(cluster.call_no_node(n) == 2 for n in legs)
        world.run(400)
        assert b.received[-1] == a.sent[-1]
        # 301 now sends everything to node 1 (a client that has the wrong address)
        a.host = NODE1
        sent_before = len(a.sent)
        envelopes = []
        real_send = world.net.send

        def watch(data, source, destination):
            if source == NODE1 and tuple(destination) == MAIN:
                envelopes.append(bytes(data))
            real_send(data, source, destination)
        world.net.send = watch
        world.run(600)
        # node 1 forwarded 301's voice frames, node 2 relayed them: 302 hears what 301 sent since
        assert len(a.sent) - sent_before >= 25
        heard = set(b.received)
        assert all(p in heard for p in a.sent[sent_before:-3])
        assert world.n1.router.forwarded_out[2] >= 25 and world.main.router.forwarded_in[1] >= 25
        # each envelope: FORWARDED, the phone's own address inside, and the frame as 301 sent it
        assert envelopes and all(e[7] == wire.FORWARDED and len(e) > ENVELOPE for e in envelopes)
        inside = [world.main.router.unwrap(e) for e in envelopes]
        assert all(addr == a.address for _d, addr in inside)
        minis = [d for d, _a in inside if d[0] & 0x80 == 0]
        assert len(minis) >= 25 and all(cluster.call_no_node((d[0] << 8) | d[1]) == 2 for d in minis)
        # 302 still hears, 301's address at node 2 never moved to node 1's, no session or call at node 1
        assert world.main.peers.by_identity[("phone", "301")].address == a.address
        assert not world.n1.peers.peers and not world.n1.switch.legs
        # signalling too: a hang-up sent to node 1 ends the call at node 2
        world.hangup("301")
        world.run_until(lambda: b.idle and a.idle, 3000, "released through node 1")
        assert not world.main.switch.legs
    finally:
        world.close()


def test_a_node_welcome_names_the_nodes_and_a_standalone_one_does_not(tmp_path):
    world = TwoNodes(tmp_path)
    try:
        end = world.add_login(wire.IE_EXTENSION, "303", ("198.18.9.9", 5000), host=NODE1)
        world.run_until(lambda: end.up, 3000, "logged in at node 1")
        welcome = [e for e in end.login.take_events() if isinstance(e, LoginUp)][0].welcome
        assert cluster.decode_nodes(welcome[wire.IE_CLUSTER_NODES]) == [(1, NODE1), (2, MAIN)]
        assert cluster.index_node(welcome[wire.IE_SESSION_INDEX]) == 1
        # a third node joins: every session hears it in NODES
        world.n1.set_cluster_nodes({1: NODE1, 2: MAIN, 3: ("198.18.0.13", 4569)}, world.net.now)
        world.run(200)
        nodes = [ies for t, ies in end.inbox if t == wire.NODES]
        assert nodes and cluster.decode_nodes(nodes[-1][wire.IE_CLUSTER_NODES])[-1] == (3, ("198.18.0.13", 4569))
    finally:
        world.close()
    (tmp_path / "standalone").mkdir()
    standalone = World(tmp_path / "standalone")
    try:
        end = standalone.add_login(wire.IE_EXTENSION, "303", ("198.18.9.9", 5000))
        standalone.run_until(lambda: end.up, 3000, "logged in")
        welcome = [e for e in end.login.take_events() if isinstance(e, LoginUp)][0].welcome
        assert sorted(welcome) == [wire.IE_SESSION_INDEX, wire.IE_TTL, wire.IE_TIME, wire.IE_KEEPALIVE]
        standalone.run(200)
        assert not [t for t, _ in end.inbox if t in (wire.NODES, wire.FORWARDED)]
        assert all(wire.IE_CLUSTER_NODES not in ies for _t, ies in end.inbox)
        assert standalone.main.router is None
    finally:
        standalone.close()


def _forged_trunk(index, size=wire.TRUNK_HEADER + wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES + wire.MEDIA_TAG):
    """A trunk frame naming a session index, with a tag nobody made (anyone can send one)."""
    frame = bytearray(size)
    wire.pack_trunk_header(frame, index)
    return bytes(frame)


def test_a_node_forwards_a_flood_of_forged_frames_only_within_its_buckets(tmp_path):
    world = TwoNodes(tmp_path)
    try:
        net, n2 = world.net, world.main
        forged = _forged_trunk(cluster_make.make_index(1, 0, 77))     # node 1's index, nobody's session
        out = []
        real_send = net.send

        def watch(data, source, destination):
            if source == MAIN and tuple(destination) == NODE1 and data[7] == wire.FORWARDED:
                out.append(data)
            real_send(data, source, destination)
        net.send = watch
        attacker = ("198.18.66.1", 40000)
        # 5,000 forged frames from one address at one instant: node 2 sends on its bucket's burst
        for _ in range(5000):
            net.send(forged, attacker, MAIN)
        world.settle()
        drops = n2.stats.drops
        assert len(out) == route.FORWARD_BURST
        assert drops["cluster: forward rate limited (source)"] == 5000 - route.FORWARD_BURST
        # node 1 got the envelopes and dropped each frame inside as nobody's session: nothing created
        assert world.n1.router.forwarded_in[2] == route.FORWARD_BURST and not world.n1.peers.peers
        # a second later the source has earned FORWARD_RATE_PER_S more, no more
        world.run(1000)
        for _ in range(5000):
            net.send(forged, attacker, MAIN)
        world.settle()
        assert len(out) == route.FORWARD_BURST + route.FORWARD_RATE_PER_S
        # another address has its own bucket; all sources together are bounded too
        world.run(60000)      # every bucket full again
        out.clear()
        for i in range(30):
            for _ in range(route.FORWARD_BURST):
                net.send(forged, ("198.18.67.%d" % i, 40000), MAIN)
        world.settle()
        assert len(out) == route.FORWARD_ALL_PER_S
        assert drops["cluster: forward rate limited (all sources)"] == 30 * route.FORWARD_BURST - route.FORWARD_ALL_PER_S
    finally:
        world.close()


def test_a_node_forwards_nothing_from_a_node_address_or_cut_short(tmp_path):
    world = TwoNodes(tmp_path)
    try:
        net, n2 = world.net, world.main
        out = []
        real_send = net.send

        def watch(data, source, destination):
            if source == MAIN and data[7:8] == bytes((wire.FORWARDED,)):
                out.append(data)
            real_send(data, source, destination)
        net.send = watch
        # a frame "from" node 1 naming node 1's index: sent back to node 1 it would come from its own
        # address (answered to itself, a loop); nodes send each other client frames only in FORWARDED
        net.send(_forged_trunk(cluster_make.make_index(1, 0, 5)), NODE1, MAIN)
        # a frame too short for the owner to take
        net.send(_forged_trunk(cluster_make.make_index(1, 0, 5), wire.TRUNK_HEADER + 2), ("198.18.66.2", 4000), MAIN)
        world.settle()
        assert not out
        assert n2.stats.drops["cluster: forward from a node's address"] == 1
        assert n2.stats.drops["cluster: forward of a frame cut short"] == 1
        # and a well-formed one from a client's address is still sent on
        net.send(_forged_trunk(cluster_make.make_index(1, 0, 5)), ("198.18.66.2", 4000), MAIN)
        world.settle()
        assert len(out) == 1
    finally:
        world.close()
