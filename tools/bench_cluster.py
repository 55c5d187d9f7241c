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

Failover times (`failover`, docs/cluster.md "Engine failover"): on their own engines with failover
(cluster_lab.ReplicatedEngines: PostgreSQL by Patroni, Redis with Sentinel), three nodes, real remote
hosts of sites a, b (in a relayed call between two firmware phones) and c (idle); PostgreSQL's
primary killed, then Redis's, then the node relaying the call, each with kill -9, the times read by
polling (every 50 ms) and from the phones' recorded audio. Measured figures, not limits.
"""
import os
import time

from upbx.common import cluster, cluster_make, wire
from upbx.tools import bench_net

NODES = ("n1", "n2", "n3")
PHONES = 3000
QUICK_PHONES = 90
HOP_DATAGRAMS = 20000
QUICK_HOP_DATAGRAMS = 2000


KILLS = 10                 # kill -9 of the relaying node, each under the same call: the p99 of its audio gap
QUICK_KILLS = 2
RELAY_CALLS = 200          # per node
QUICK_RELAY_CALLS = 10
RELAY_SECONDS = 6
QUICK_RELAY_SECONDS = 1
# the heap of the grace period's handsets (_grace): the frozen image with too little free heap for a standby session
# (common/cluster.py _STANDBY_ROOM), what a handset without PSRAM runs (docs/boards.md)
GRACE_HEAP = "48K"


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
            drops0 = _drops(lab, [x])
            cpu0 = _cpu_s(pids[x])
            r = bench_net.run_trunk_load(pairs[x], pairs[x].calls, seconds, 1472, quiet_s=QUIET_S, longest_s=DRAIN_S)
            cpu = _cpu_s(pids[x]) - cpu0
            relayed = max(1, r["received"])
            us = cpu * 1e6 / relayed
            out["per_node"][x] = {**_where(r, drops0, _drops(lab, [x])),
                                  "us_per_frame": round(us, 2),
                                  # a call is 100 frames a second (50 each way): calls one core relays at this cost
                                  "calls_per_core_by_cpu": int(1e6 / (us * 100)) if us > 0 else None}
        out["cluster_calls_per_core_by_cpu"] = sum(p["calls_per_core_by_cpu"] or 0 for p in out["per_node"].values())
        # what call numbers let a node relay whatever its cores (docs/cluster.md "Call legs per link"): each
        # remote host's session has 32,767, each phone's session 2,048, each other node's trunks 2,048 (their
        # class, host/switch.py trunk_class); the host's own endpoints share layout 1's 2,048
        out["calls_per_node_by_call_numbers"] = {"legs_per_remote_host": wire.MAX_CALL_NO,
                                                 "legs_per_phone": cluster.LOCAL_CALLS,
                                                 "legs_per_other_node": cluster.LOCAL_CALLS}
        # all nodes at once: the cluster's calls, each node its own (one load generator for all)
        import threading
        results = {}

        def run(x):
            results[x] = bench_net.run_trunk_load(pairs[x], pairs[x].calls, seconds, 1472, quiet_s=QUIET_S,
                                                  longest_s=DRAIN_S)
        drops0 = _drops(lab, nodes)
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
                                                   for x, r in results.items()},
                              "by_node": {x: _where(r) for x, r in results.items()},
                              "node_drops": _where(results[nodes[0]], drops0, _drops(lab, nodes))["node_drops"]}
        if len(nodes) > 1:   # calls between two nodes' sites: the same two sites, now one at each node
            for pair in pairs.values():
                pair.close()
            pairs.clear()
            out["cross_node"] = _cross(lab, nodes, pids, secrets, calls, seconds, out["per_node"])
        return out
    finally:
        for pair in pairs.values():
            pair.close()


def _cross(lab, nodes, pids, secrets, calls, seconds, own):
    """Calls between two nodes' clients (docs/cluster.md "Calls between nodes"): site a's emulated remote
    host at one node, site b's at the next, `calls` answered calls a -> b over the two nodes' trunk
    session, two-way media for `seconds`; each pair of nodes in turn. The CPU per frame relayed end to
    end is both nodes' together (each relays it once). With the nodes' own calls (`own`) it gives the
    cluster's calls per core for an even mix: with N nodes and sites spread by rendezvous, (N-1)/N of
    inter-site calls are between two nodes."""
    import redis
    from upbx.host.cluster import trunk
    out = {"pairs": {}}
    ids = {n: lab.status(n)["cluster"]["node_id"] for n in nodes}
    store = redis.Redis(port=lab.engines.redis_port, socket_timeout=5)
    try:
        for i, x in enumerate(nodes):
            y = nodes[(i + 1) % len(nodes)]

            def published(x=x, y=y):
                # site b's node has written where it is, and x's trunk session to it is up: before that a
                # SETUP at x is refused "unreachable" (waiting at most trunk.PARK_MS for the location),
                # right for a site that has just logged in; a busy machine made the bench's first SETUP
                # wait that long
                value = store.get(trunk.LOCATION_KEY % ("host", "site-b"))
                if value is None or int(value) != ids[y]:
                    return False
                return (lab.status(x)["cluster"]["trunks"].get(str(ids[y])) or {}).get("state") == "up"

            try:
                pair = bench_net.TrunkPair(_Node(("127.0.0.1", lab.node_ports[x]), secrets), calls,
                                           main_b=_Node(("127.0.0.1", lab.node_ports[y]), secrets), ready=published)
            except (RuntimeError, TimeoutError) as exc:   # what the two nodes counted of locations says why
                raise RuntimeError("%s (%s)" % (exc, {n: {k: v for k, v in lab.status(n)["stats"]["counters"].items()
                                                          if "location" in k} for n in (x, y)})) from exc
            try:
                drops0 = _drops(lab, (x, y))
                cpu0 = {n: _cpu_s(pids[n]) for n in (x, y)}
                r = bench_net.run_trunk_load(pair, pair.calls, seconds, 1472, quiet_s=QUIET_S, longest_s=DRAIN_S)
                cpu = {n: _cpu_s(pids[n]) - cpu0[n] for n in (x, y)}
                drops1 = _drops(lab, (x, y))
            finally:
                pair.close()
            relayed = max(1, r["received"])
            us = sum(cpu.values()) * 1e6 / relayed
            out["pairs"]["%s->%s" % (x, y)] = {
                **_where(r, drops0, drops1),
                "us_per_frame_both_nodes": round(us, 2),
                "us_per_frame_by_node": {n: round(c * 1e6 / relayed, 2) for n, c in cpu.items()}}
    finally:
        store.close()
    cross_us = sum(p["us_per_frame_both_nodes"] for p in out["pairs"].values()) / len(out["pairs"])
    own_us = sum(p["us_per_frame"] for p in own.values()) / len(own)
    share = (len(nodes) - 1) / len(nodes)
    mixed_us = (1 - share) * own_us + share * cross_us
    out["us_per_frame_both_nodes"] = round(cross_us, 2)
    out["cross_share"] = round(share, 3)
    # the cluster's cores (one a node) over the CPU of an average call of the mix, 100 frames a second
    out["cluster_calls_per_core_by_cpu_mixed"] = int(len(nodes) * 1e6 / (mixed_us * 100)) if mixed_us > 0 else None
    return out


def _where(r, drops_before=None, drops_after=None):
    """Where a run's frames went (bench_net.run_trunk_load): loss, and the frames the kernel dropped at the
    nodes' and at the generator's sockets (a full receive buffer), this run's frames that came after the
    last one was sent, how late the generator sent its last, and what the nodes counted as dropped."""
    out = {"frames_sent": r["sent"], "frames_relayed": r["received"],
           "loss_pct": round(100 * max(0, 1 - r["received"] / r["sent"]), 3) if r["sent"] else None,
           "kernel_drops_at_nodes": r["kernel_drops"]["main"], "kernel_drops_at_generator": r["kernel_drops"]["generator"],
           "late_frames": r["late_frames"], "generator_behind_ms": r["behind_ms"]}
    if drops_before is not None:
        out["node_drops"] = {x: {k: v - drops_before[x].get(k, 0) for k, v in drops_after[x].items()
                                 if v != drops_before[x].get(k, 0)} for x in drops_after}
    return out


def _drops(lab, nodes):
    return {x: dict(lab.status(x)["stats"]["drops"]) for x in nodes}


# after the last datagram, read on until nothing came for QUIET_S (at most DRAIN_S): two nodes working
# through a backlog on a busy machine deliver late, not never (run_trunk_load)
QUIET_S = 1.0
DRAIN_S = 10.0


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
                "failover": _failover(QUICK_KILLS if quick else KILLS),
                "phone_without_standby": _grace(),
                "provision_s": round(provision_s, 1), "seconds": round(elapsed, 2),
                "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
            }
        finally:
            for c in clients:
                c.sock.close()
            lab.close()


def _since(t0, lab, predicate, what, timeout=120):
    lab.wait_for(predicate, what, timeout=timeout)
    return round(time.monotonic() - t0, 2)


def _gap_ms(frames):
    """The longest gap in recorded frames [(sender timestamp, payload)]: the jump less one frame."""
    return max((b[0] - a[0] - 20 for a, b in zip(frames, frames[1:])), default=0)


def _percentile(samples, p):
    """The nearest-rank p-th percentile of sorted samples (None when there are none)."""
    if not samples:
        return None
    return samples[max(0, -(-p * len(samples) // 100) - 1)]


def _node_of(lab, address):
    return next(n for n, port in lab.node_ports.items() if address == "127.0.0.1:%d" % port)


def _kill_relaying_node(lab, frames, flowing):
    """One kill -9 of the node sites a and b (in the call) and c (idle) are logged in at, once each site's
    standby session is up at the same node: the seconds until that node lists the call, the longest gap in
    each phone's received audio after the kill (less one frame), the seconds until site c is home there;
    then the killed node is started again (so each run has three nodes)."""
    def homes():
        return {s: lab.status("site-" + s)["main"] for s in "abc"}
    lab.wait_for(lambda: len({(m["address"], (m["standby"] or {}).get("address"), (m["standby"] or {}).get("state"))
                              for m in homes().values()}) == 1 and
                 (homes()["a"]["standby"] or {}).get("state") == "up", "every site home and standby at the same nodes",
                 timeout=120)
    m = homes()["a"]
    home, succ = _node_of(lab, m["address"]), _node_of(lab, m["standby"]["address"])
    before = frames()
    t0 = time.monotonic()
    lab.kill(home)
    taken = _since(t0, lab, lambda: [c["callee"] for c in lab.status(succ)["calls"]] == ["201"], "the call taken over")
    lab.wait_for(flowing(before, 100), "relayed audio after the node was killed", timeout=60)
    rehomed = _since(t0, lab, lambda: lab.status("site-c")["main"]["address"] == "127.0.0.1:%d" % lab.node_ports[succ],
                     "idle site c re-homed")
    after = frames()
    # the gap is in what arrived after the kill (from the last frame before it on)
    gaps = {n: _gap_ms(after[n][max(0, len(before[n]) - 1):]) for n in after}
    lab.start_node(home)
    lab.wait_for(lambda: lab.status(home)["cluster"]["engines"]["etcd"] == "up", "node %s back" % home, timeout=60)
    return {"killed": home, "successor": succ, "call_taken_over_s": taken, "relayed_audio_back_ms": max(gaps.values()),
            "relayed_audio_gap_ms_by_phone": gaps, "idle_rehomed_s": rehomed}


def _text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def _grace():
    """The grace period of a phone without a standby (docs/cluster.md "Failover" 2b): two handsets of the 32-bit build
    with upbx frozen in, at 48K (no room for a standby: what a handset without PSRAM runs), straight at a node, in a
    call through it; the node killed with -9: the seconds until its successor lists the call, and each phone's longest
    gap in the audio it received. Own engines (PostgreSQL, Redis, etcd; no failover of theirs), two nodes.
    {"skipped": why} without engines or the 32-bit build."""
    from upbx.tools import cluster_lab
    from upbx.tools.images import ImageError, unix32_image
    from upbx.tools.lab import read_g711_record, write_noise_wav
    problem = cluster_lab.missing()
    if problem:
        return {"skipped": problem}
    try:
        binary = str(unix32_image(frozen=True, log=lambda *a: None))
    except ImageError as exc:
        return {"skipped": "no 32-bit MicroPython build: %s" % exc}
    with cluster_lab.Engines() as engines:
        lab = cluster_lab.ClusterExchange(engines, nodes=("n1", "n2"), direct_media=False, log_level="warning",
                                          phone_args=("--micropython", binary, "--heapsize", GRACE_HEAP))
        try:
            lab.provision(sites=("c",), remote_sites=(), phones={"c": ["301", "308"]})
            lab.start(one_by_one=True)
            records, procs = {}, {}
            for number in ("308", "301"):
                wav = lab.path(number + ".wav")
                write_noise_wav(wav, 60, int(number))
                records[number] = lab.path(number + ".rx.g711")
                args = ["--send", wav, "--record-g711", records[number], "--exit-after", "120"]
                args += ["--answer"] if number == "308" else ["--call", "308", "--call-after", "1"]
                procs[number] = lab.phone(number, *args, tag="grace-" + number)
                lab.wait_registered(number, timeout=60)

            def frames():
                return {n: read_g711_record(p) if os.path.exists(p) else [] for n, p in records.items()}

            def flowing(before, more):
                return lambda: all(len(f) >= len(before[n]) + more for n, f in frames().items())
            lab.wait_for(lambda: [c["callee"] for c in lab.status("n1")["calls"]] == ["308"], "the call at n1", timeout=60)
            lab.wait_for(flowing({n: [] for n in records}, 100), "the call's audio", timeout=60)
            before = frames()
            t0 = time.monotonic()
            lab.kill("n1")
            taken = _since(t0, lab, lambda: [c["callee"] for c in lab.status("n2")["calls"]] == ["308"],
                           "n2 took the call over", timeout=60)
            try:
                lab.wait_for(flowing(before, 100), "audio after n1's kill", timeout=60)
            except TimeoutError as exc:   # what each phone and n2 said
                heard = {n: len(f) - len(before[n]) for n, f in frames().items()}
                raise RuntimeError("%s: frames heard since %s\n%s\n%s\n%s" % (
                    exc, heard, lab._log_tail("phone-grace-301", 15), lab._log_tail("phone-grace-308", 15),
                    lab._log_tail("n2", 15)))
            after = frames()
            gaps = {n: _gap_ms(after[n][max(0, len(before[n]) - 1):]) for n in after}
            procs["301"].stdin.write(b"!hangup\n")
            procs["301"].stdin.flush()
            lab.wait_for(lambda: not lab.status("n2")["calls"], "the call ended at n2", timeout=30)
            ended = {}
            for number, proc in procs.items():
                lab.wait_for(lambda: "call ended" in _text(lab.path("phone-grace-%s.log" % number)),
                             "%s's call ended" % number, timeout=30)
                proc.stdin.write(b"!quit\n")
                proc.stdin.flush()
                proc.wait(60)
                try:
                    ended[number] = lab.summary("grace-" + number)["calls"][0]["cause"]
                except (OSError, LookupError, ValueError) as exc:   # what the phone said instead
                    raise RuntimeError("phone %s left no summary (%s): %s" % (
                        number, exc, lab._log_tail("phone-grace-" + number, 20)))
            return {"handsets": "32-bit, frozen, at %s (no standby), straight at a node" % GRACE_HEAP, "nodes": 2,
                    "call_taken_over_s": taken, "audio_gap_ms_by_phone": gaps, "audio_back_ms": max(gaps.values()),
                    "calls_ended": ended}
        finally:
            lab.close()


def _failover(kills=1):
    """The failover times of issue 16 item 3 (see the module's docstring), the node's kill -9 `kills` times
    (a p99 over them); {"skipped": why} where Patroni or the MicroPython unix port is missing."""
    import json
    import shutil
    import sys
    from upbx.tools import cluster_lab
    from upbx.tools.lab import read_g711_record, write_noise_wav
    problem = cluster_lab.missing_replicated()
    if not problem and not (os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
                            or shutil.which("micropython")):
        problem = "the MicroPython unix port is not installed (the firmware phones)"
    if problem:
        return {"skipped": problem}
    import redis
    out = {}
    with cluster_lab.ReplicatedEngines() as engines:
        lab = cluster_lab.ClusterExchange(engines, nodes=NODES, standby=True, direct_media=False, log_level="warning",
                                          remote_settings={"keepalive_s": 2, "login_backoff_initial_s": 0.5,
                                                           "login_backoff_max_s": 2})
        try:
            lab.provision(sites=("a", "b", "c"), remote_sites=("a", "b", "c"),
                          phones={"a": ["101"], "b": ["201"], "c": ["301"]})
            lab.start()
            ids = {x: lab.status(x)["cluster"]["node_id"] for x in NODES}
            succ = {v: k for k, v in ids.items()}[cluster.successor(ids["n1"], sorted(ids.values()))]
            lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("address") ==
                                     "127.0.0.1:%d" % lab.node_ports[succ] and lab.status("site-" + s)["main"][
                                         "standby"]["state"] == "up" for s in "abc"), "standby sessions up", timeout=60)
            procs, records = {}, {}
            for number in ("201", "101"):
                wav = lab.path(number + ".wav")
                write_noise_wav(wav, 120 + 40 * kills, int(number))
                records[number] = lab.path(number + ".rx.g711")
                args = ["--send", wav, "--record-g711", records[number], "--exit-after-call",
                        "--exit-after", str(300 + 60 * kills)]
                args += ["--answer"] if number == "201" else ["--call", "201", "--call-after", "0.5"]
                procs[number] = lab.phone(number, *args, tag="failover-" + number)
                lab.wait_registered(number, timeout=60)

            def frames():
                return {n: read_g711_record(p) if os.path.exists(p) else [] for n, p in records.items()}

            def flowing(before, more=50):
                return lambda: all(len(f) >= len(before[n]) + more for n, f in frames().items())
            lab.wait_for(flowing({n: [] for n in records}, 100), "the call's audio", timeout=60)

            # PostgreSQL: kill -9 of the primary (server and Patroni); its replica promoted by Patroni
            refreshes = {x: lab.status(x)["cluster"]["directory_refreshes"] for x in NODES}
            old = engines.postgres_primary()
            t0 = time.monotonic()
            engines.kill_postgres_primary()
            promoted = _since(t0, lab, lambda: engines.postgres_primary() not in (None, old), "a new primary")
            nodes_back = _since(t0, lab, lambda: all(
                lab.status(x)["cluster"]["engines"]["postgres"] == "up" and
                lab.status(x)["cluster"]["directory_refreshes"] > refreshes[x] for x in NODES),
                "every node reading the new primary")
            before = frames()
            lab.wait_for(flowing(before), "audio after the PostgreSQL failover", timeout=60)
            out["postgres"] = {"promoted_s": promoted, "nodes_back_s": nodes_back,
                               "ttl_s": cluster_lab.PATRONI_TTL_S,
                               "audio_gap_ms": max(_gap_ms(f) for f in frames().values())}

            # Redis: kill -9 of the primary; Sentinel promotes the replica; the nodes rewrite the call's key
            r = redis.Redis(port=engines.redis_primary(), socket_timeout=2)
            key = next(k for k in r.scan_iter(match="upbx:call:*") if not json.loads(r.get(k))["ended"])
            lab.wait_for(lambda: r.ttl(key) < 3598, "the key's time to live going down", timeout=30)
            ttl = r.ttl(key)
            r.close()
            old = engines.redis_primary()
            t0 = time.monotonic()
            engines.kill_redis_primary()
            promoted = _since(t0, lab, lambda: engines.redis_primary() not in (None, old), "Sentinel's new primary")

            def rewritten():
                with redis.Redis(port=engines.redis_primary(), socket_timeout=1) as new:
                    return (new.ttl(key) or 0) > ttl
            keys_back = _since(t0, lab, rewritten, "the call's key rewritten")
            before = frames()
            lab.wait_for(flowing(before), "audio after the Redis failover", timeout=60)
            out["redis"] = {"promoted_s": promoted, "keys_rewritten_s": keys_back,
                            "audio_gap_ms": max(_gap_ms(f) for f in frames().values())}

            # a node: kill -9 of the node relaying the call, `kills` times (the killed node started again
            # before the next): its successor takes the call over each time; idle site c re-homed
            rounds = []
            for _ in range(kills):
                rounds.append(_kill_relaying_node(lab, frames, flowing))
            samples = sorted(g for r in rounds for g in r["relayed_audio_gap_ms_by_phone"].values())
            first = rounds[0]
            out["node_kill"] = {"call_taken_over_s": first["call_taken_over_s"],
                                "relayed_audio_back_ms": first["relayed_audio_back_ms"],
                                "relayed_audio_gap_ms_by_phone": first["relayed_audio_gap_ms_by_phone"],
                                "idle_rehomed_s": first["idle_rehomed_s"],
                                "runs": len(rounds), "rounds": rounds,
                                # nearest rank over every phone's gap of every run (below 100 samples: the largest)
                                "relayed_audio_back_ms_p99": _percentile(samples, 99),
                                "relayed_audio_back_ms_p50": _percentile(samples, 50),
                                "call_taken_over_s_max": max(r["call_taken_over_s"] for r in rounds),
                                "idle_rehomed_s_max": max(r["idle_rehomed_s"] for r in rounds),
                                "target_3s_p99_met": _percentile(samples, 99) <= 3000}
            procs["101"].stdin.write(b"!hangup\n")
            procs["101"].stdin.flush()
            for proc in procs.values():
                proc.wait(60)
            out["calls_ended"] = {n: lab.summary("failover-" + n)["calls"][0]["cause"] for n in records}
        finally:
            lab.close()
    return out


def _hop(lab, nodes, ids, address, pids, count):
    """CPU per datagram of a node forwarding another node's datagrams (FORWARDED), against the same
    datagrams sent straight to their node. The datagrams are trunk frames naming a session index of
    the first node that is nobody's (both paths end in a drop there: the difference is the hop)."""
    import socket
    if len(nodes) < 2:
        return {}
    owner, via = nodes[0], nodes[1]
    index = cluster_make.make_index(ids[owner], 0, cluster.LOCAL_SESSIONS - 1)
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
    numbers = rc["calls_per_node_by_call_numbers"]
    lines.append("    cluster: %s calls per core by CPU (the nodes' sum: one core each); a node's call numbers "
                 "carry %d legs on each remote host's session, %d on each phone's, %d on its trunks to each other node"
                 % (rc["cluster_calls_per_core_by_cpu"], numbers["legs_per_remote_host"], numbers["legs_per_phone"],
                    numbers["legs_per_other_node"]))
    lines.append("    all at once, %d calls: loss %s %% (by node %s)" % (
        rc["all_at_once"]["calls"], rc["all_at_once"]["loss_pct"], rc["all_at_once"]["loss_pct_by_node"]))
    cross = rc.get("cross_node")
    if cross:
        lines.append("  calls between two nodes' sites, %d at a time, one pair of nodes at a time:" % rc["calls_per_node"])
        for name, p in cross["pairs"].items():
            lines.append("    %s: loss %s %%, %s us CPU per frame relayed end to end (both nodes: %s)" % (
                name, p["loss_pct"], p["us_per_frame_both_nodes"], p["us_per_frame_by_node"]))
        lines.append("    cluster, %d %% of calls between two nodes: %s calls per core by CPU (one core a node)" % (
            round(100 * cross["cross_share"]), cross["cluster_calls_per_core_by_cpu_mixed"]))
    f = r.get("failover") or {}
    if "skipped" in f:
        lines.append("  failover: not measured (%s)" % f["skipped"])
    elif f:
        lines.append("  failover (kill -9 of each, under a relayed call):")
        lines.append("    PostgreSQL (Patroni, ttl %d s): replica promoted after %s s, every node on it after %s s; "
                     "audio gap %d ms" % (f["postgres"]["ttl_s"], f["postgres"]["promoted_s"],
                                         f["postgres"]["nodes_back_s"], f["postgres"]["audio_gap_ms"]))
        lines.append("    Redis (Sentinel): replica promoted after %s s, the call's key rewritten after %s s; audio gap "
                     "%d ms" % (f["redis"]["promoted_s"], f["redis"]["keys_rewritten_s"], f["redis"]["audio_gap_ms"]))
        lines.append("    node: call taken over after %s s, relayed audio back after %d ms (longest gap), idle site "
                     "re-homed after %s s; the call ended %s" % (
                         f["node_kill"]["call_taken_over_s"], f["node_kill"]["relayed_audio_back_ms"],
                         f["node_kill"]["idle_rehomed_s"], ", ".join(sorted(set(f["calls_ended"].values())))))
        k = f["node_kill"]
        if "runs" in k:
            lines.append("    node, %d kills under the same call: relayed audio back p50 %s ms, p99 %s ms (target 3,000: %s); "
                         "call taken over within %s s, idle site re-homed within %s s" % (
                             k["runs"], k["relayed_audio_back_ms_p50"], k["relayed_audio_back_ms_p99"],
                             "met" if k["target_3s_p99_met"] else "NOT met", k["call_taken_over_s_max"],
                             k["idle_rehomed_s_max"]))
    g = r.get("phone_without_standby") or {}
    if "skipped" in g:
        lines.append("  a phone without a standby through its node's kill: not measured (%s)" % g["skipped"])
    elif g:
        lines.append("  a phone without a standby (%s) through its node's kill -9: call taken over after %s s, audio "
                     "back after %d ms (longest gap); the call ended %s" % (
                         g["handsets"], g["call_taken_over_s"], g["audio_back_ms"],
                         ", ".join(sorted(set(g["calls_ended"].values())))))
    lines.append("  load average: %s" % r["load_average"])
    return "\n".join(lines)
