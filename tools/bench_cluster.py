"""`upbx bench cluster`: registrations per second per node and for a cluster, relayed calls per node
and for the cluster, and the cost of a hop (issue 16 items 2 and 4; docs/cluster.md).

Real engines (PostgreSQL, Redis, etcd: tools/cluster_lab.py's Engines, private servers on
loopback) and `upbx main` nodes on them. Every phone greets the node its rendezvous hash names
(common/cluster.py), as a phone that knows the cluster does, all nodes at once; a node's rate is its
phones over the time from the first HELLO to its last phone's WELCOME, and its CPU is read from
/proc. The load generator is one Python process on the same machine (bench_net's clients): on a
small machine it, not the nodes, may set the pace, which is why the CPU per registration is
reported beside the rate.

The hop: datagrams naming one node's sessions sent to another node, which forwards each one hop
(FORWARDED); the forwarding node's CPU per datagram against the same datagrams sent straight to
their node (where they are dropped as not a session's, so the two differ by the forwarding alone).
"""
import os
import time

from upbx.common import cluster, wire
from upbx.tools import bench_net

NODES = ("n1", "n2", "n3")
PHONES = 3000
QUICK_PHONES = 90
HOP_DATAGRAMS = 20000
QUICK_HOP_DATAGRAMS = 2000


RELAY_CALLS = 200          # per node
QUICK_RELAY_CALLS = 10
RELAY_SECONDS = 6
QUICK_RELAY_SECONDS = 1


def _lab_class(cluster_lab):
    class BenchCluster(cluster_lab.ClusterExchange):
        """The lab's nodes with the relay bench's settings (tools/bench_net.py MainUnderTest): all media
        relayed, calls long enough, many calls a remote host."""

        def _write_config(self, node):
            with open(self.path(node + ".toml"), "w") as f:
                f.write('[main]\nlisten = "127.0.0.1:%d"\ndatabase = "%s.sqlite"\ncontrol_socket = "%s"\n'
                        'log_level = "%s"\nworkers = 1\ndirect_media = false\nring_timeout_s = 600\n'
                        'registration_ttl_s = 600\nmax_calls_per_host = 16383\n\n%s'
                        % (self.node_ports[node], node, self.path(node + ".sock"), self.log_level,
                           self.engines.cluster_table(node)))
    return BenchCluster


class _Node:
    """What bench_net.TrunkPair needs of a main host: its address and the remote hosts' secrets."""

    def __init__(self, address, secrets):
        self.address = address
        self.secrets = secrets


def _relay(lab, nodes, pids, calls, seconds):
    """Relayed calls per node: two emulated remote hosts (bench_net.TrunkPair: sites a and b, the same
    two at every node, each node knowing only its own sessions) with `calls` answered calls a -> b
    through the node, two-way media for `seconds`; one node at a time, then all at once."""
    secrets = {name: bytes.fromhex(lab.secrets[name]) for name in ("site-a", "site-b")}
    pairs = {}
    out = {"calls_per_node": calls, "seconds": seconds, "per_node": {}}
    try:
        for x in nodes:
            pairs[x] = bench_net.TrunkPair(_Node(("127.0.0.1", lab.node_ports[x]), secrets), calls)
        for x in nodes:
            cpu0 = _cpu_s(pids[x])
            r = bench_net.run_trunk_load(pairs[x], pairs[x].calls, seconds, 1472)
            cpu = _cpu_s(pids[x]) - cpu0
            relayed = max(1, r["received"])
            us = cpu * 1e6 / relayed
            out["per_node"][x] = {"frames_sent": r["sent"], "frames_relayed": r["received"],
                                  "loss_pct": round(100 * max(0, 1 - r["received"] / r["sent"]), 3),
                                  "us_per_frame": round(us, 2),
                                  # a call is 100 frames a second (50 each way): calls one core relays at this cost
                                  "calls_per_core_by_cpu": int(1e6 / (us * 100)) if us > 0 else None}
        out["cluster_calls_per_core_by_cpu"] = sum(p["calls_per_core_by_cpu"] or 0 for p in out["per_node"].values())
        # what the layout lets a node relay whatever its cores (common/cluster.py: two call numbers a call)
        out["calls_per_node_by_call_numbers"] = cluster.LOCAL_CALLS // 2
        # all nodes at once: the cluster's calls, each node its own (one load generator for all)
        import threading
        results = {}

        def run(x):
            results[x] = bench_net.run_trunk_load(pairs[x], pairs[x].calls, seconds, 1472)
        threads = [threading.Thread(target=run, args=(x,)) for x in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = sum(r["sent"] for r in results.values())
        got = sum(r["received"] for r in results.values())
        out["all_at_once"] = {"calls": calls * len(nodes), "frames_sent": sent, "frames_relayed": got,
                              "loss_pct": round(100 * max(0, 1 - got / sent), 3) if sent else None,
                              "loss_pct_by_node": {x: round(100 * max(0, 1 - r["received"] / r["sent"]), 3)
                                                   for x, r in results.items()}}
        return out
    finally:
        for pair in pairs.values():
            pair.close()


def _cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid(lab, node):
    return lab.status(node)["pid"]


def bench_cluster(quick=False, phones=None, nodes=NODES):
    """Registrations per second per node and for the cluster; CPU per registration per node; the
    forwarding node's CPU per forwarded datagram."""
    from upbx.tools import cluster_lab
    problem = cluster_lab.missing()
    if problem:
        raise SystemExit("upbx bench cluster: %s" % problem)
    n = phones or (QUICK_PHONES if quick else PHONES)
    sites = max(1, (n + bench_net.PHONES_PER_SITE - 1) // bench_net.PHONES_PER_SITE)
    numbers = {"s%d" % s: [] for s in range(sites)}
    for i in range(n):
        numbers["s%d" % (i // bench_net.PHONES_PER_SITE)].append("7%05d" % i)
    with cluster_lab.Engines() as engines:
        lab = _lab_class(cluster_lab)(engines, nodes=nodes, log_level="warning")
        clients = []
        try:
            t = time.monotonic()
            relay_calls = QUICK_RELAY_CALLS if quick else RELAY_CALLS
            numbers_relay = {"a": ["1%05d" % i for i in range(relay_calls)],
                             "b": ["2%05d" % i for i in range(relay_calls)]}
            lab.provision(sites=tuple(numbers) + ("a", "b"), remote_sites=("a", "b"), phones=dict(numbers, **numbers_relay))
            lab.remote_sites = ()    # sites a and b: the bench's emulated remote hosts, not real ones
            provision_s = time.monotonic() - t
            lab.start()
            lab.wait_for(lambda: all(len(lab.status(x)["cluster"]["nodes"]) == len(nodes) for x in nodes),
                         "every node knows every node", timeout=60)
            ids = {x: lab.status(x)["cluster"]["node_id"] for x in nodes}
            by_id = {v: k for k, v in ids.items()}
            address = {x: ("127.0.0.1", lab.node_ports[x]) for x in nodes}
            home = {}
            for site, nums in numbers.items():
                for number in nums:
                    home[number] = by_id[cluster.rendezvous(cluster.identity("phone", number), sorted(by_id))[0]]
            # each site's phones share one source address (its NAT router): the per-address handshake limit
            order = [num for nums in numbers.values() for num in nums]
            clients = [bench_net.Client(wire.IE_EXTENSION, num, bytes.fromhex(lab.secrets[num]), address[home[num]],
                                        "127.0.%d.%d" % divmod(i // bench_net.PHONES_PER_SITE + 1, 256))
                       for i, num in enumerate(order)]
            node_of = {id(c): home[num] for c, num in zip(clients, order)}
            pids = {x: _pid(lab, x) for x in nodes}
            # the hop first, while the nodes' status is small (the measurement reads it twice)
            hop = _hop(lab, nodes, ids, address, pids, QUICK_HOP_DATAGRAMS if quick else HOP_DATAGRAMS)
            cpu0 = {x: _cpu_s(pids[x]) for x in nodes}
            load0 = os.getloadavg()[0]
            started = [0]
            pending = []
            first = {}
            last = {}
            window = 200

            def progress():
                now = bench_net._now_ms()
                still = []
                for c in pending:
                    if c.up:
                        last[node_of[id(c)]] = time.monotonic()
                    else:
                        still.append(c)
                pending[:] = still
                while started[0] < len(clients) and len(pending) < window:
                    c = clients[started[0]]
                    first.setdefault(node_of[id(c)], time.monotonic())
                    c.start(now)
                    pending.append(c)
                    started[0] += 1
                return not pending and started[0] == len(clients)

            t0 = time.monotonic()
            bench_net.pump(clients, progress, seconds=900, poll=lambda: pending)
            elapsed = time.monotonic() - t0
            cpu = {x: _cpu_s(pids[x]) - cpu0[x] for x in nodes}
            per_node = {}
            for x in nodes:
                count = sum(1 for num in order if home[num] == x)
                logged = sum(1 for p in lab.status(x)["phones"])
                span = (last.get(x, t0) - first.get(x, t0)) or elapsed
                per_node[x] = {"node_id": ids[x], "phones": count, "logged_in": logged,
                               "registrations_per_s": round(count / span, 1) if count else 0.0,
                               "cpu_s": round(cpu[x], 2),
                               "cpu_us_per_registration": round(cpu[x] / count * 1e6, 1) if count else None,
                               "registrations_per_cpu_s": round(count / cpu[x], 1) if cpu[x] > 0 and count else None}
            return {
                "nodes": len(nodes), "phones": n,
                "note": "%d sites of %d phones straight at the main host, each phone at its rendezvous node, all "
                        "nodes at once, one Python load generator on the same machine; each login is sent its "
                        "site's system information" % (sites, bench_net.PHONES_PER_SITE),
                "registrations_per_s": round(n / elapsed, 1),
                "registrations_per_s_by_node": {x: per_node[x]["registrations_per_s"] for x in nodes},
                "per_node": per_node,
                "cluster_cpu_us_per_registration": round(sum(cpu.values()) / n * 1e6, 1),
                **hop,
                "relayed_calls": _relay(lab, nodes, pids, relay_calls,
                                        QUICK_RELAY_SECONDS if quick else RELAY_SECONDS),
                "provision_s": round(provision_s, 1), "seconds": round(elapsed, 2),
                "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
            }
        finally:
            for c in clients:
                c.sock.close()
            lab.close()


def _hop(lab, nodes, ids, address, pids, count):
    """CPU per datagram of a node forwarding another node's datagrams (FORWARDED), against the same
    datagrams sent straight to their node. The datagrams are trunk frames naming a session index of
    the first node that is nobody's (both paths end in a drop there: the difference is the hop)."""
    import socket
    if len(nodes) < 2:
        return {}
    owner, via = nodes[0], nodes[1]
    index = cluster.make_index(ids[owner], 0, cluster.LOCAL_SESSIONS - 1)
    frame = bytearray(wire.TRUNK_HEADER + wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES + wire.MEDIA_TAG)
    wire.pack_trunk_header(frame, index)
    frame = bytes(frame)
    out = {}
    # a node forwards at most a bucket's worth a source (host/cluster/route.py): the datagrams come from
    # as many loopback addresses (127.0.0.2, ...) as keep each source within half its burst
    from upbx.host.cluster.route import FORWARD_BURST
    socks = []
    for i in range(max(1, -(-2 * count // FORWARD_BURST))):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.%d" % (2 + i), 0))
        socks.append(sock)
    try:
        for name, target, counter in (("direct", owner, lambda: lab.status(owner)["stats"]["drops"].get(
                                           "unknown session", 0)),
                                      ("forwarded", via, lambda: lab.status(via)["cluster"]["forwarded_out"].get(
                                          str(ids[owner]), 0))):
            before = counter()
            cpu0 = _cpu_s(pids[target])
            sent = 0
            while sent < count:
                sock = socks[(sent // 50) % len(socks)]
                for _ in range(50):
                    sock.sendto(frame, address[target])
                sent += 50
                time.sleep(0.005)   # at most 10,000 a second: a node keeps up, its socket buffer never fills
            lab.wait_for(lambda: counter() - before >= sent * 0.99, "%s datagrams taken" % name, timeout=60)
            taken = counter() - before   # (the two status queries' own CPU is in it: a fraction of a us each)
            out[name] = (_cpu_s(pids[target]) - cpu0) / taken
    finally:
        for sock in socks:
            sock.close()
    return {"hop_datagrams": count,
            "node_us_per_datagram_dropped": round(out["direct"] * 1e6, 2),
            "node_us_per_datagram_forwarded": round(out["forwarded"] * 1e6, 2),
            "forward_us_per_datagram": round((out["forwarded"] - out["direct"]) * 1e6, 2)}


def table_cluster(r):
    lines = ["cluster: %d nodes, %d phones (%s)" % (r["nodes"], r["phones"], r["note"]),
             "  registrations_per_s (cluster): %s; CPU per registration over the nodes: %s us" % (
                 r["registrations_per_s"], r["cluster_cpu_us_per_registration"])]
    for node, p in r["per_node"].items():
        lines.append("  %s (id %d): %d phones, %s registrations/s, %s us CPU each (%s per CPU second)" % (
            node, p["node_id"], p["phones"], p["registrations_per_s"], p["cpu_us_per_registration"],
            p["registrations_per_cpu_s"]))
    if "forward_us_per_datagram" in r:
        lines.append("  one hop: %s us CPU per datagram forwarded (%s us dropped at its node, %s us forwarded "
                     "by another; %d datagrams)" % (r["forward_us_per_datagram"], r["node_us_per_datagram_dropped"],
                                                    r["node_us_per_datagram_forwarded"], r["hop_datagrams"]))
    rc = r["relayed_calls"]
    lines.append("  relayed calls, %d a node for %d s, one node at a time:" % (rc["calls_per_node"], rc["seconds"]))
    for node, p in rc["per_node"].items():
        lines.append("    %s: loss %s %%, %s us CPU per relayed frame, %s calls per core by CPU" % (
            node, p["loss_pct"], p["us_per_frame"], p["calls_per_core_by_cpu"]))
    lines.append("    cluster: %s calls per core by CPU (the nodes' sum: one core each); a node's call numbers "
                 "carry %d calls" % (rc["cluster_calls_per_core_by_cpu"], rc["calls_per_node_by_call_numbers"]))
    lines.append("    all at once, %d calls: loss %s %% (by node %s)" % (
        rc["all_at_once"]["calls"], rc["all_at_once"]["loss_pct"], rc["all_at_once"]["loss_pct_by_node"]))
    lines.append("  load average: %s" % r["load_average"])
    return "\n".join(lines)
