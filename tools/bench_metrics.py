"""`upbx bench metrics`: what one Prometheus scrape of a host costs (docs/operations.md, "Metrics").

A scrape runs on the daemon's event loop (host/metrics.py), so for as long as it takes no datagram
is handled: this measures that time, the collector reading a main host core and prometheus_client
encoding the text, for a core with N registered phones, N calls and drops of 40 reasons.
"""
import os
import tempfile
import time

SIZES = (10, 1000, 10000)
QUICK_SIZES = (10, 100)


def _core(n, workdir):
    """A main host core (the real class, an in-memory directory) holding n phones and n calls."""
    from upbx.host.config import load_main_config
    from upbx.host.log import StructuredLog
    from upbx.host.main_host import MainHost
    from upbx.host.switch import Link

    path = os.path.join(workdir, "main.toml")
    with open(path, "w") as f:
        f.write('[main]\nlisten = "127.0.0.1:4569"\ndatabase = ":memory:"\nlog_level = "error"\n')
    core = MainHost(load_main_config(path), StructuredLog("main", "error"))
    for i in range(n):
        link = Link("%05d" % i, "phone", address=("198.18.0.1", 10000 + i % 50000))
        core.links[i] = link
        call = core.switch.new_call("%05d" % i, "%05d" % ((i + 1) % n), 0)
        call.frames = 50 * i
        call.alerted_ms = 100 + i % 900
        core.stats.count("msg SETUP")
    for k in range(40):
        core.stats.drops["reason %d" % k] = k
    core.meter.sample(0, dict)
    return core


def _scrape_ms(core, repeats):
    from prometheus_client import CollectorRegistry, generate_latest

    from upbx.host.metrics import HostCollector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(core))
    text = generate_latest(registry)
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        generate_latest(registry)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return round(best * 1000, 3), len(text)


def bench_metrics(quick=False):
    """ms per scrape of a main host with 10 / 1,000 / 10,000 phones and calls (best of several)."""
    points = []
    with tempfile.TemporaryDirectory(prefix="upbx-bench-metrics-") as workdir:
        for n in QUICK_SIZES if quick else SIZES:
            core = _core(n, workdir)
            ms, size = _scrape_ms(core, 3 if quick else 20)
            points.append({"phones": n, "calls": n, "ms_per_scrape": ms, "bytes": size})
            core.directory.close()
    return {"unit": "ms of the event loop per scrape (collect + encode), best of several",
            "points": points}


def table_metrics(r):
    lines = ["metrics: %s" % r["unit"]]
    for p in r["points"]:
        lines.append("  %6d phones, %6d calls: %8.3f ms, %d bytes" % (p["phones"], p["calls"], p["ms_per_scrape"],
                                                                      p["bytes"]))
    return "\n".join(lines)
