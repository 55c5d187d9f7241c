"""Datagrams to the right node (issue 16 item 2; docs/cluster.md, docs/protocol.md section 14).

Real engines (tools/cluster_lab.py) and three real `upbx main` nodes on loopback; the clients are
devices built from common/ (tests/intruder.py) on their own sockets, and a real remote host. What
is asserted is on the wire and in the nodes' state: the node ids in the indexes a node gives out,
the node list in WELCOME and SYSINFO, the frames a node forwards one hop and the answers that come
back, forged envelopes dropped, and where a remote host logs in next.
"""
import os
import socket
import time

import pytest

from upbx.common import cluster, cluster_make, wire
from upbx.common.login import LoginUp
from upbx.host.cluster.route import Router, forward_key
from tests.intruder import Intruder, now_ms

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")
from tests.clusterkit import engines  # noqa: E402,F401  (the module's engines, tests/clusterkit.py)

NODES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def lab(engines):
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES)
    try:
        lab.provision(sites=("a", "c", "d"), remote_sites=("a", "d"),
                      phones={"a": ["101"], "c": ["301", "302"], "d": ["401"]})
        lab.remote_sites = ("a",)     # site-d's remote host is the test's own device
        lab.start()
        lab.wait_for(lambda: all(len(node_ids(lab, n)) == 3 for n in NODES), "every node knows the three",
                     timeout=30)
        yield lab
    finally:
        lab.close()


def address(lab, node):
    return ("127.0.0.1", lab.node_ports[node])


def node_ids(lab, node):
    """{node id: "address"} a node routes to, from its status."""
    return {int(k): v for k, v in lab.status(node)["cluster"]["nodes"].items()}


def node_id(lab, node):
    return lab.status(node)["cluster"]["node_id"]


def counters(lab, node):
    return lab.status(node)["stats"]["counters"]


def drops(lab, node):
    return lab.status(node)["stats"]["drops"]


def welcome_of(device):
    ups = [e for e in device.login.take_events() if isinstance(e, LoginUp)]
    assert ups, "no WELCOME"
    return ups[-1].welcome


def test_welcome_names_every_node_and_the_index_names_its_node(lab):
    ids = {n: node_id(lab, n) for n in NODES}
    assert sorted(ids.values()) == [1, 2, 3]
    with Intruder.phone("301", lab.secrets["301"], address(lab, "n2")) as phone:
        phone.log_in()
        welcome = welcome_of(phone)
        index = welcome[wire.IE_SESSION_INDEX]
        # the index n2 gave out: layout 1, n2's node id, worker 0 (the lab's nodes run one process each)
        assert cluster.index_version(index) == cluster.LAYOUT
        assert cluster.index_node(index) == ids["n2"] and cluster.index_worker(index) == 0
        nodes = cluster.decode_nodes(welcome[wire.IE_CLUSTER_NODES])
        # every live node with the address it listens on, n2's own entry first
        assert nodes[0] == (ids["n2"], address(lab, "n2"))
        assert sorted(nodes) == sorted((ids[n], address(lab, n)) for n in NODES)
        # and the system information's first chunk says the same
        phone.pump_until(lambda: any(t == wire.SYSINFO for t, _ in phone.inbox), "SYSINFO")
        first = [ies for t, ies in phone.inbox if t == wire.SYSINFO and ies[wire.IE_CHUNK] >> 16 == 0]
        assert first and cluster.decode_nodes(first[0][wire.IE_CLUSTER_NODES]) == nodes
        later = [ies for t, ies in phone.inbox if t == wire.SYSINFO and ies[wire.IE_CHUNK] >> 16]
        assert all(wire.IE_CLUSTER_NODES not in ies for ies in later)


def test_frames_sent_to_another_node_are_forwarded_one_hop_and_answered(lab):
    ids = {n: node_id(lab, n) for n in NODES}
    out_before = lab.status("n3")["cluster"]["forwarded_out"].get(str(ids["n1"]), 0)
    in_before = lab.status("n1")["cluster"]["forwarded_in"].get(str(ids["n3"]), 0)
    with Intruder.host("site-d", lab.secrets["site-d"], address(lab, "n1")) as host:
        host.log_in()
        index = welcome_of(host)[wire.IE_SESSION_INDEX]
        assert cluster.index_node(index) == ids["n1"]
        mine = "127.0.0.1:%d" % host.sock.getsockname()[1]
        # from now on the remote host sends to n3: n3 reads n1's id in the index and sends each frame on
        host.server = address(lab, "n3")
        for _ in range(3):
            host.send(wire.PING, {})
        host.pump_until(lambda: host.acked >= host.login.channel.next_seq, "n1's acknowledgement via n3")
        n3, n1 = lab.status("n3"), lab.status("n1")
        assert n3["cluster"]["forwarded_out"][str(ids["n1"])] >= out_before + 3
        assert n1["cluster"]["forwarded_in"][str(ids["n3"])] >= in_before + 3
        # n1 took them as the remote host's own, from its own address: nothing moved, no session at n3
        hosts = {h["name"]: h["address"] for h in n1["remote_hosts"]}
        assert hosts["site-d"] == mine
        assert "site-d" not in [h["name"] for h in n3["remote_hosts"]]


def test_a_forged_or_looping_envelope_is_dropped_and_creates_nothing(lab):
    ids = {n: node_id(lab, n) for n in NODES}
    with Intruder.host("site-d", lab.secrets["site-d"], address(lab, "n1")) as host:
        host.log_in()
        host.send(wire.PING, {})
        host.pump_until(lambda: host.acked >= host.login.channel.next_seq, "acknowledged")
        ping = host.login.channel.crypto.seal(host.login.channel.peer_index, host.login.channel.next_seq,
                                              host.login.channel.expected, wire.PING, b"")
        source = host.sock.getsockname()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # an envelope under a key that is not the cluster's: dropped, the frame inside never read
            wrong = Router(ids["n2"], os.urandom(32), _Stats())
            wrong.nodes[ids["n1"]] = address(lab, "n1")
            before = drops(lab, "n1").get("cluster: forward bad tag", 0)
            sender.sendto(wrong.wrap(ids["n1"], ping, source)[0], address(lab, "n1"))
            lab.wait_for(lambda: drops(lab, "n1").get("cluster: forward bad tag", 0) == before + 1, "bad tag counted")
            # cut short: dropped as malformed
            before = drops(lab, "n1").get("cluster: malformed forward", 0)
            sender.sendto(wire.encode_ies({}) + bytes((0x80, 0, 0, 0, 0, 0, 0, wire.FORWARDED)) + bytes(8),
                          address(lab, "n1"))
            lab.wait_for(lambda: drops(lab, "n1").get("cluster: malformed forward", 0) == before + 1, "cut counted")
        finally:
            sender.close()
        # the session is as it was: still answered, still at the remote host's own address
        host.send(wire.PING, {})
        host.pump_until(lambda: host.acked >= host.login.channel.next_seq, "acknowledged after")
        hosts = {h["name"]: h["address"] for h in lab.status("n1")["remote_hosts"]}
        assert hosts["site-d"] == "127.0.0.1:%d" % source[1]


def test_an_index_of_a_node_that_is_not_alive_is_not_forwarded(lab):
    # node id 9 is nobody's: a trunk frame naming it is dropped where it lands, and counted
    frame = bytearray(wire.TRUNK_HEADER + wire.TRUNK_ENTRY_HEADER + wire.CN_BYTES + wire.MEDIA_TAG)
    wire.pack_trunk_header(frame, cluster_make.make_index(9, 0, 1))
    before = drops(lab, "n2").get("cluster: node 9 not alive", 0)
    out = sum(lab.status("n2")["cluster"]["forwarded_out"].values())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(bytes(frame), address(lab, "n2"))
    lab.wait_for(lambda: drops(lab, "n2").get("cluster: node 9 not alive", 0) == before + 1, "counted")
    assert sum(lab.status("n2")["cluster"]["forwarded_out"].values()) == out


def test_cluster_status_shows_each_nodes_address_load_and_forwarding(lab):
    import subprocess
    from upbx.tools.lab import ROOT, upbx
    ids = {n: node_id(lab, n) for n in NODES}
    frame = bytearray(wire.TRUNK_HEADER + wire.TRUNK_ENTRY_HEADER + wire.CN_BYTES + wire.MEDIA_TAG)
    wire.pack_trunk_header(frame, cluster_make.make_index(ids["n1"], 0, 4321))   # n1's, nobody's: n3 sends it on
    before = lab.cluster_status()
    was = {n["name"]: n.get("forwarded_out", 0) for n in before["nodes"]}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(bytes(frame), address(lab, "n3"))
    lab.wait_for(lambda: {n["name"]: n["forwarded_out"] for n in lab.cluster_status()["nodes"]}["n3"] > was["n3"],
                 "n3's forward in etcd", timeout=30)
    nodes = {n["name"]: n for n in lab.cluster_status()["nodes"]}
    assert {name: n["address"] for name, n in nodes.items()} == {n: "127.0.0.1:%d" % lab.node_ports[n] for n in NODES}
    assert nodes["n1"]["forwarded_in"] >= 1
    text = subprocess.run(upbx("cluster", "status", "--config", lab.path("n1.toml")), cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert "forwarded out/in" in text and "address" in text
    for n in NODES:
        assert "127.0.0.1:%d" % lab.node_ports[n] in text


class _Stats:
    def count(self, *a):
        pass

    def drop(self, *a):
        pass


def test_remote_host_learns_the_nodes_and_logs_in_next_by_rendezvous(lab):
    """The lab's remote host site-a was configured with n1's address alone. It learnt the nodes from
    its WELCOME, in its rendezvous order; when n1 goes, it is on n1's successor, where it kept its
    standby session (docs/cluster.md). Last: it stops a node."""
    ids = {n: node_id(lab, n) for n in NODES}
    by_id = {v: k for k, v in ids.items()}
    status = lab.status("site-a")
    order = cluster.rendezvous(cluster.identity("host", "site-a"), sorted(ids.values()))
    assert [n for n, _a in status["cluster"]["nodes"]] == order
    assert [a for _n, a in status["cluster"]["nodes"]] == ["127.0.0.1:%d" % lab.node_ports[by_id[n]] for n in order]
    # it was up at n1, with a standby session at n1's successor (docs/cluster.md "Failover"); n1
    # goes: that session becomes the main host's
    expected = by_id[cluster.successor(ids["n1"], sorted(ids.values()))]
    lab.kill("n1")
    lab.wait_for(lambda: lab.status("site-a")["cluster"]["main"] == "127.0.0.1:%d" % lab.node_ports[expected],
                 "site-a's main host is %s" % expected, timeout=60, watch=tuple(n for n in NODES if n != "n1"))
    assert any(h["name"] == "site-a" for h in lab.status(expected)["remote_hosts"])


def test_a_node_needs_an_address_clients_can_reach(tmp_path):
    from upbx.host.cluster.node import advertised_problem
    from upbx.host.config import load_main_config
    table = '[cluster]\nnode = "n1"\npostgres = "host=db"\nredis = "redis://db"\netcd = "db:2379"\n'
    path = tmp_path / "main.toml"
    path.write_text('[main]\nlisten = "0.0.0.0:4569"\n\n' + table)
    problem = advertised_problem(load_main_config(path))
    assert "key 'cluster.address'" in problem and str(path) in problem and "0.0.0.0" in problem
    path.write_text('[main]\nlisten = "0.0.0.0:4569"\n\n' + table + 'address = "main.example.org:4569"\n')
    assert "must be an IPv4 address, got 'main.example.org'" in advertised_problem(load_main_config(path))
    path.write_text('[main]\nlisten = "0.0.0.0:4569"\n\n' + table + 'address = "198.18.0.1:4569"\n')
    assert advertised_problem(load_main_config(path)) is None
    path.write_text('[main]\nlisten = "198.18.0.1:4569"\n\n' + table)
    assert advertised_problem(load_main_config(path)) is None


def test_bench_cluster_quick_puts_each_phone_at_its_rendezvous_node():
    import json
    import subprocess
    import sys
    from upbx.tools import bench_net
    if cluster_lab.missing():
        pytest.skip(cluster_lab.missing())
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "bench", "cluster", "--quick", "--json"],
                         cwd=bench_net.ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)["cluster"]
    assert r["nodes"] == 3 and r["phones"] == 90
    nodes = r["per_node"]
    assert sorted(p["node_id"] for p in nodes.values()) == [1, 2, 3]
    # every phone logged in at the node its rendezvous hash names, and nowhere else
    assert sum(p["phones"] for p in nodes.values()) == 90
    assert all(p["logged_in"] == p["phones"] > 0 for p in nodes.values())
    assert r["registrations_per_s"] > 0 and set(r["registrations_per_s_by_node"]) == set(nodes)
    assert r["hop_datagrams"] == 2000 and r["node_us_per_datagram_forwarded"] > 0
    assert "forward_us_per_datagram" in r
    # relayed calls: every node relayed its own pair's calls, one at a time and all at once
    rc = r["relayed_calls"]
    assert set(rc["per_node"]) == set(nodes) and rc["all_at_once"]["calls"] == 3 * rc["calls_per_node"]
    assert all(p["frames_relayed"] > 0 and p["frames_sent"] > 0 for p in rc["per_node"].values())
    assert rc["all_at_once"]["frames_relayed"] > 0
    # calls between two nodes' sites, each pair of nodes: where any frame that did not come went
    pairs = rc["cross_node"]["pairs"]
    assert len(pairs) == 3 and all(p["frames_relayed"] > 0 for p in pairs.values())
    assert all({"kernel_drops_at_nodes", "kernel_drops_at_generator", "late_frames", "node_drops"} <= set(p)
               for p in pairs.values())
    # a phone without a standby through its node's kill (the grace period, docs/cluster.md "Failover" 2b)
    g = r["phone_without_standby"]
    if "skipped" not in g or os.environ.get("CI"):
        assert g["calls_ended"] == {"301": "normal clearing", "308": "normal clearing"}, g
        assert g["call_taken_over_s"] > 0 and set(g["audio_gap_ms_by_phone"]) == {"301", "308"}
        assert g["audio_back_ms"] == max(g["audio_gap_ms_by_phone"].values()) > 0
    # the failover times (docs/cluster.md "Engine failover"): measured, each call carried to its normal end
    f = r["failover"]
    if "skipped" in f and not os.environ.get("CI"):
        return
    assert f["calls_ended"] == {"101": "normal clearing", "201": "normal clearing"}, f
    assert f["postgres"]["promoted_s"] > 0 and f["redis"]["keys_rewritten_s"] > 0
    assert f["node_kill"]["relayed_audio_back_ms"] > 0 and f["node_kill"]["idle_rehomed_s"] > 0
    # the node's kill -9 twice (--quick) under the same call, each time the node relaying it: a p99 over them
    k = f["node_kill"]
    assert k["runs"] == len(k["rounds"]) == 2
    assert k["rounds"][0]["killed"] != k["rounds"][1]["killed"]
    assert k["relayed_audio_back_ms_p99"] == max(g for r in k["rounds"] for g in r["relayed_audio_gap_ms_by_phone"].values())


def test_a_node_with_two_workers_steers_each_remote_hosts_trunk_frames_to_its_worker(engines, tmp_path):
    """A node with workers = 2 (host/relay_workers.py): its two remote hosts get indexes naming worker 0
    and worker 1, the kernel steers their trunk frames by that field, and their calls are relayed by
    the workers with nothing lost."""
    from upbx.host import fastpath
    from upbx.tools import bench_cluster, bench_net
    if fastpath.native is None:
        pytest.skip("relay workers need the C fast path (not built here)")

    class TwoWorkers(bench_cluster._lab_class(cluster_lab)):
        def _write_config(self, node):
            super()._write_config(node)
            path = self.path(node + ".toml")
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("workers = 1", "workers = 2"))

    lab = TwoWorkers(engines, nodes=("w1",), log_level="warning")
    pair = None
    try:
        lab.provision(sites=("wa", "wb"), remote_sites=(), phones={"wa": [], "wb": []})
        # TrunkPair's sites are a and b with extensions 1NNNNN and 2NNNNN: added once for the module
        from upbx.host.cluster.postgres import PostgresDirectory
        with PostgresDirectory(engines.postgres_dsn) as directory:
            secrets = {}
            for site, first in (("wa", "1"), ("wb", "2")):
                secrets[site] = directory.add_remote_host("site-" + site, site)
                for i in range(4):
                    directory.add_extension("%s%05d" % (first, i), site, "")
        lab.remote_sites = ()
        lab.start()
        lab.wait_for(lambda: lab.status("w1").get("workers") == 2, "w1's two workers", timeout=60)

        class Pair(bench_net.TrunkPair):
            def __init__(self, main, calls):
                self.main = main
                self.a = bench_net.Client(wire.IE_HOST_NAME, "site-wa", secrets["wa"], main.address)
                self.b = bench_net.Client(wire.IE_HOST_NAME, "site-wb", secrets["wb"], main.address)
                now = bench_net._now_ms()
                self.a.start(now)
                self.b.start(now)
                bench_net.pump([self.a, self.b], lambda: self.a.up and self.b.up)
                self.calls, self.next_ts, self.by_a_no, self.by_b_no = [], 20, {}, {}
                self.add_calls(calls)

        pair = Pair(bench_cluster._Node(("127.0.0.1", lab.node_ports["w1"]), {}), 4)
        peers = {p.login.identity: p.login.channel.peer_index for p in (pair.a, pair.b)}
        workers = sorted(cluster.index_worker(i) for i in peers.values())
        assert workers == [0, 1]
        assert all(cluster.index_node(i) == lab.status("w1")["cluster"]["node_id"] for i in peers.values())
        r = bench_net.run_trunk_load(pair, pair.calls, 2, 1472)
        assert r["received"] == r["sent"] > 0
        status = lab.status("w1")
        assert len(status["worker_pids"]) == 1 and status["workers_died"] == 0
        assert status["delegated_directions"] + status["delegated_here"] >= 1
    finally:
        if pair is not None:
            pair.close()
        lab.close()
