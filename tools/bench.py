"""`upbx bench [NAME ...] [--json]`: the benchmarks, with the machine they ran on.

To add a benchmark, write a function that returns a dict of results (plain
JSON types) and register it in BENCHMARKS; optionally register a function that
renders that dict as text in TABLES (otherwise its keys are listed as they are).
"""
import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

FRAME_SAMPLES = 160  # 20 ms at 8 kHz
CODEC_OPS = ("ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode")


# --- the machine -------------------------------------------------------------

def machine():
    """What the figures were measured on: CPU model, architecture, OS, CPU count."""
    uname = platform.uname()
    return {
        "cpu_model": _cpu_model(),
        "processor": platform.processor() or uname.machine,
        "architecture": uname.machine,
        "system": "%s %s" % (uname.system, uname.release),
        "cpus": os.cpu_count(),
    }


def _cpu_model():
    """CPU model from /proc/cpuinfo (x86 "model name", Raspberry Pi "Model"), else ''."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return ""


# --- codec: G.711 per 20 ms frame on both interpreters ------------------------

def codec_frame():
    """One 20 ms frame of a 1 kHz tone at -12 dBFS, 16-bit little-endian PCM."""
    samples = (round(8192 * math.sin(2 * math.pi * 1000 * i / 8000)) for i in range(FRAME_SAMPLES))
    return b"".join(s.to_bytes(2, "little", signed=True) for s in samples)


def _best_us(fn, src, dst, loops, repeats=5):
    fn(src, dst)
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn(src, dst)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return round(best * 1e6 / loops, 3)


def _codec_cpython(pcm):
    from upbx.common import g711

    codes = bytearray(FRAME_SAMPLES)
    playout = bytearray(2 * FRAME_SAMPLES)
    calls = {
        "ulaw_encode": (g711.ulaw_encode_into, pcm, codes),
        "ulaw_decode": (g711.ulaw_decode_into, g711.ulaw_encode(pcm), playout),
        "alaw_encode": (g711.alaw_encode_into, pcm, codes),
        "alaw_decode": (g711.alaw_decode_into, g711.alaw_encode(pcm), playout),
    }
    return {
        "version": platform.python_version(),
        "implementation": g711.IMPLEMENTATION,
        "us_per_frame": {op: _best_us(fn, src, dst, 2000) for op, (fn, src, dst) in calls.items()},
    }


# Runs under MicroPython: times the into-variants with ticks_us, best of 5 runs.
_MICROPYTHON_SCRIPT = """
import sys, json, time
sys.path.insert(0, %(root)r)
from common import g711
pcm = %(pcm)r
codes = bytearray(%(n)d)
playout = bytearray(%(n2)d)
def best_us(fn, src, dst, loops):
    fn(src, dst)
    best = None
    for _ in range(5):
        t = time.ticks_us()
        for _ in range(loops):
            fn(src, dst)
        dt = time.ticks_diff(time.ticks_us(), t)
        best = dt if best is None or dt < best else best
    return round(best / loops, 3)
def measure(suffix, loops):
    out = {}
    for law in ("ulaw", "alaw"):
        encode = getattr(g711, law + "_encode_into" + suffix)
        decode = getattr(g711, law + "_decode_into" + suffix)
        data = getattr(g711, law + "_encode")(pcm)
        out[law + "_encode"] = best_us(encode, pcm, codes, loops)
        out[law + "_decode"] = best_us(decode, data, playout, loops)
    return out
print(json.dumps({
    "version": ".".join(str(v) for v in sys.implementation.version[:3]),
    "implementation": g711.IMPLEMENTATION,
    "us_per_frame": measure("", 2000),
    "bytecode_us_per_frame": measure("_portable", 200),
}))
"""


def micropython_binary():
    """The unix port next to this interpreter (the same venv), else on PATH, else None."""
    here = pathlib.Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else shutil.which("micropython")


def _codec_micropython(pcm):
    binary = micropython_binary()
    if not binary:
        return {"error": "micropython binary not found next to %s or on PATH" % sys.executable}
    from upbx import common

    root = str(pathlib.Path(common.__file__).resolve().parent.parent)
    script = _MICROPYTHON_SCRIPT % {"root": root, "pcm": pcm, "n": FRAME_SAMPLES, "n2": 2 * FRAME_SAMPLES}
    # The heap of an ESP32 without PSRAM: the codec must run in it.
    result = subprocess.run([binary, "-X", "heapsize=110K", "-c", script],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        return {"binary": binary, "error": (result.stdout + result.stderr).strip()[-2000:]}
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["binary"] = binary
    figures["viper_speedup"] = {
        op: round(figures["bytecode_us_per_frame"][op] / max(figures["us_per_frame"][op], 1e-3), 1)
        for op in CODEC_OPS
    }
    return figures


def bench_codec():
    """G.711 encode/decode of one 20 ms frame (into-variants) on CPython and MicroPython."""
    pcm = codec_frame()
    return {
        "frame": {"samples": FRAME_SAMPLES, "ms": 20, "signal": "1 kHz tone, -12 dBFS"},
        "unit": "microseconds per frame",
        "cpython": _codec_cpython(pcm),
        "micropython": _codec_micropython(pcm),
    }


def table_codec(result):
    """The codec figures as a table, one row per operation."""
    cp = result["cpython"]
    mp = result["micropython"]
    lines = ["codec: G.711, %s (%d samples = %d ms)" % (
        result["unit"], result["frame"]["samples"], result["frame"]["ms"])]
    if "error" in mp:
        lines.append("  MicroPython: %s" % mp["error"])
        mp = None
    head = ["", "CPython %s (%s)" % (cp["version"], cp["implementation"])]
    if mp:
        head += ["MicroPython %s (%s)" % (mp["version"], mp["implementation"]),
                 "MicroPython (bytecode)", "viper speedup"]
    rows = [head]
    for op in CODEC_OPS:
        row = [op.replace("_", " "), "%.2f" % cp["us_per_frame"][op]]
        if mp:
            row += ["%.2f" % mp["us_per_frame"][op], "%.2f" % mp["bytecode_us_per_frame"][op],
                    "%.1fx" % mp["viper_speedup"][op]]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


# --- registry and command -----------------------------------------------------

# --- network: trunking, relay, latency, registrations (tools/bench_net.py) ------

def bench_wan(quick=False):
    """WAN kbps per call on the wire at 1..30 trunked calls, default and jumbo trunk_mtu."""
    from upbx.tools import bench_net
    return bench_net.bench_trunking(quick)


def bench_relay(quick=False, peer=None):
    """Relayed calls per core at <= 0.1 % loss and < 95 % CPU (12 s windows), both shapes; with
    --peer rtpengine also rtpengine's in the same run; the one-way latency of a relay hop."""
    from upbx.tools import bench_net
    return bench_net.bench_relay(quick, peer=peer)


def bench_registrations(quick=False):
    """Registrations per second and RSS bytes per registered phone with 10,000 phones."""
    from upbx.tools import bench_net
    return bench_net.bench_registrations(quick)


def table_wan(r):
    lines = ["wan: kbps per call on the wire (payload + 28 bytes IPv4/UDP per datagram), G.711 20 ms, "
             "authenticated and encrypted"]
    head = ["calls", "upbx (mtu 1472)", "datagrams/tick", "upbx (jumbo mtu)", "IAX2 trunk", "RTP"]
    rows = [head] + [[n, "%.2f" % r["wan_kbps_per_call"][n], "%.2f" % r["datagrams_per_tick"][n],
                      "%.2f" % r["wan_kbps_per_call_jumbo"][n], "%.2f" % r["iax2_trunk_kbps_per_call"][n],
                      "%.1f" % r["rtp_kbps_per_call"]] for n in r["wan_kbps_per_call"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append("  target <= 67 kbps at 10 calls: default mtu %s, jumbo mtu %s" % (
        "met" if r["meets_target_default_mtu"] else "missed", "met" if r["meets_target_jumbo_mtu"] else "missed"))
    return "\n".join(lines)


def table_relay(r):
    lines = ["relay: %s" % r["load"],
             "  a step passes with %s" % r["pass_rule"],
             "  fast path: %s" % r["fast_path"],
             "  relay_calls_per_core (trunked): %s (target 2,500), %s us CPU per relayed frame (by CPU: %s)" % (
                 r["relay_calls_per_core"], r["us_per_frame_trunked"], r["relay_calls_per_core_by_cpu"]),
             "  relay_calls_per_core_datagram: %s (target 1,500), %s us CPU per relayed frame (by CPU: %s)" % (
                 r["relay_calls_per_core_datagram"], r["us_per_frame_datagram"], r["relay_calls_per_core_datagram_by_cpu"]),
             "  cost split: %s us per datagram + %s us per call-frame" % (r["us_per_datagram"], r["us_per_call_frame"]),
             "  workers: %s, relay_calls_per_machine: %s (by CPU: %s; %s)" % (
                 r["workers"], r["relay_calls_per_machine"], r.get("relay_calls_per_machine_by_cpu"), r.get("machine_note"))]
    if "rtpengine_calls_per_core" in r:
        lines.append("  rtpengine (userspace, plain RTP): %s calls per core, %s us CPU per packet (by CPU: %s)%s" % (
            r["rtpengine_calls_per_core"], r["rtpengine_us_per_packet"], r["rtpengine_calls_per_core_by_cpu"],
            " (generator-limited: the step search stopped at what the load generator could send)"
            if r.get("rtpengine_generator_limited") else ""))
        lines.append("  ratio_vs_rtpengine (one frame a datagram, calls per core): %s; by CPU per frame: %s" % (
            r["ratio_vs_rtpengine"], r["ratio_vs_rtpengine_by_cpu"]))
    lines.append("  hop latency at %s calls: p50 %s ms, p99 %s ms (target p99 < 1 ms; %s)" % (
        r["latency_load_calls"], r["hop_latency_p50_ms"], r["hop_latency_p99_ms"], r["latency_note"]))
    if r.get("relay_residence_ms"):
        lines.append("  the relay's own part (its receive stamp to its send): %s ms; an echo process at the same "
                     "rate: %s ms; the relay waited for its core %s of the run" % (
                         r["relay_residence_ms"], r.get("echo_baseline_ms"), r.get("latency_relay_waited")))
    if r.get("generator"):
        lines.append("  generator: %s; network namespace: %s" % (r["generator"], r.get("netns")))
    for shape in ("trunked", "datagram", "machine", "rtpengine"):
        for step in r.get("steps_" + shape, ()):
            lines.append("  %-9s %5d calls: loss %.3f %%, relay CPU %.2f (waited %s), %.2f us/frame, generator CPU "
                         "%.2f, load %.2f%s" % (
                             shape, step["calls"], step["loss_pct"], step["relay_cpu"], step.get("relay_waited"),
                             step["us_per_frame"], step["generator_cpu"], step["load_average"],
                             "" if step["passed"] else "  (generator-limited)" if step["generator_limited"]
                             else "  (fails)"))
    lines.append("  load average at the end: %s" % r["load_average"])
    return "\n".join(lines)


BENCHMARKS = {
    "codec": bench_codec,
    "wan": bench_wan,
    "relay": bench_relay,
    "registrations": bench_registrations,
}

TABLES = {
    "codec": table_codec,
    "wan": table_wan,
    "relay": table_relay,
}

from upbx.tools.quality import bench_quality, table_quality  # noqa: E402  (voice quality: PESQ, tools/quality.py)
BENCHMARKS["quality"], TABLES["quality"] = bench_quality, table_quality
from upbx.tools.bench_security import bench_handshake, table_handshake  # noqa: E402  (forged HELLOs, docs/security.md)
BENCHMARKS["handshake"], TABLES["handshake"] = bench_handshake, table_handshake
from upbx.tools.bench_handset import bench_handset, table_handset  # noqa: E402  (handset CPU per tick, ESP32 estimate)
BENCHMARKS["handset"], TABLES["handset"] = bench_handset, table_handset
from upbx.tools.bench_metrics import bench_metrics, table_metrics  # noqa: E402  (one Prometheus scrape, docs/operations.md)
BENCHMARKS["metrics"], TABLES["metrics"] = bench_metrics, table_metrics

# the keys of the summary: where each one comes from in the results
SUMMARY = (("wan_kbps_per_call", "wan", "wan_kbps_per_call"),
           ("relay_calls_per_core", "relay", "relay_calls_per_core"),
           ("relay_calls_per_core_datagram", "relay", "relay_calls_per_core_datagram"),
           ("window_s", "relay", "window_s"),
           ("us_per_datagram", "relay", "us_per_datagram"),
           ("us_per_call_frame", "relay", "us_per_call_frame"),
           ("workers", "relay", "workers"),
           ("relay_calls_per_machine", "relay", "relay_calls_per_machine"),
           ("rtpengine_calls_per_core", "relay", "rtpengine_calls_per_core"),
           ("ratio_vs_rtpengine", "relay", "ratio_vs_rtpengine"),
           ("hop_latency_p50_ms", "relay", "hop_latency_p50_ms"),
           ("hop_latency_p99_ms", "relay", "hop_latency_p99_ms"),
           ("registrations_per_s", "registrations", "registrations_per_s"),
           ("bytes_per_registered_phone", "registrations", "bytes_per_registered_phone"),
           ("esp32_ms_per_tick_p50", "handset", "esp32_ms_per_tick_p50"),
           ("esp32_ms_worst_tick", "handset", "esp32_ms_worst_tick"))


def _call(fn, quick, **options):
    """Run one benchmark; those that know a quick mode (or an option given) get it."""
    import inspect
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kw = {k: v for k, v in dict(options, quick=quick).items() if k in params and v is not None}
    return fn(**kw)


def _table_generic(name, result, indent="  "):
    lines = [name + ":"] if name else []
    for key, value in result.items():
        if isinstance(value, dict):
            lines.append("%s%s:" % (indent, key))
            lines.extend(_table_generic("", value, indent + "  "))
        else:
            lines.append("%s%s: %s" % (indent, key, value))
    return lines if not name else "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="benchmarks to run (default: all): %s" % ", ".join(BENCHMARKS))
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: {\"machine\": {...}, NAME: {...}, ...}")
    parser.add_argument("--quick", action="store_true",
                        help="short runs with small loads (for tests); figures are not the benchmark's")
    parser.add_argument("--instructions", action="store_true",
                        help="handset: also count the handset's and perf_bench's instructions under valgrind's "
                             "callgrind, an estimate the machine's load does not move (a few minutes more)")
    parser.add_argument("--peer", choices=["rtpengine"],
                        help="relay: also measure this relay in the same run (rtpengine: Debian's "
                             "rtpengine-daemon in userspace, installed by `make setup`) and print the ratio")


def run(args):
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print("upbx bench: unknown benchmark %s (have: %s)" % (
            ", ".join(unknown), ", ".join(BENCHMARKS)), file=sys.stderr)
        return 2
    if getattr(args, "peer", None) and "relay" not in (args.names or list(BENCHMARKS)):
        print("upbx bench: --peer %s compares relays: run it with the relay benchmark" % args.peer, file=sys.stderr)
        return 2
    if getattr(args, "peer", None) == "rtpengine" and not shutil.which("rtpengine"):
        print("upbx bench: --peer rtpengine needs rtpengine on PATH: install the Debian package "
              "rtpengine-daemon (make setup, as root)", file=sys.stderr)
        return 2
    results = {"machine": machine()}
    for name in args.names or list(BENCHMARKS):
        results[name] = _call(BENCHMARKS[name], getattr(args, "quick", False), peer=getattr(args, "peer", None),
                              instructions=getattr(args, "instructions", False) or None)
    for key, name, field in SUMMARY:
        if name in results and field in results[name]:
            results[key] = results[name][field]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for key, _name, _field in SUMMARY:
        results.pop(key, None)
    m = results.pop("machine")
    print("machine: %s (%s), %s, %s CPUs" % (m["cpu_model"] or m["processor"], m["architecture"],
                                             m["system"], m["cpus"]))
    for name, result in results.items():
        print()
        print(TABLES.get(name, lambda r: _table_generic(name, r))(result))
    return 0

from upbx.tools.bench_memory import bench_memory, table_memory  # noqa: E402  (a handset's heap: tools/bench_memory.py)
BENCHMARKS["memory"], TABLES["memory"] = bench_memory, table_memory
from upbx.tools.bench_sip import bench_sip, table_sip  # noqa: E402  (the RTP side of a SIP call, docs/sip.md)
BENCHMARKS["sip"], TABLES["sip"] = bench_sip, table_sip
from upbx.tools.bench_cluster import bench_cluster, table_cluster  # noqa: E402  (a cluster's nodes, docs/cluster.md)
BENCHMARKS["cluster"], TABLES["cluster"] = bench_cluster, table_cluster
