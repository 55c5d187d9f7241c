"""`upbx bench handset`: the handset firmware's CPU per 20 ms tick, and what it would be on an ESP32.

A call between two virtual handsets runs on the 32-bit unix port with the firmware frozen in
(the ESP32's word size). The profiled handset (302) measures itself (firmware/profile.py, the
"profile" configuration key): busy time per tick with time.ticks_us, classified by what the
tick did. Its microphone alternates talk spurts and pauses, with silence suppression on; the
datagrams coming to it cross an impairment relay that loses a few percent of them, so some
ticks conceal a lost frame (bridged into its successor, or extrapolated).

The ESP32 estimate scales those figures by a calibration measured in the same run:
MicroPython's own perf_bench benchmarks timed on the same binary the way the handset's ticks
run (short bursts, each after 20 ms asleep: burst_scores), against the scores published for a
240 MHz ESP32 (PUBLISHED below; docs/benchmarks.md says where from and what makes the estimate
uncertain), except the time in the socket's calls: this machine's sendto and
recv are Linux system calls on loopback, an ESP32's are lwIP's, so each tick's socket time is
taken out and every call it made is counted at an ESP32's cost instead (ESP32_SOCKET below:
an upper bound from Espressif's published UDP throughput). The figures with every system call
scaled like bytecode, as before, stay beside them (*_host_io_scaled).

With --instructions a second estimate, which the machine's load does not move, comes beside them: the
instructions valgrind's callgrind counts for the same perf_bench benchmarks, one frame's work and the call,
on the same binary (instruction_estimate).
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time

from upbx.tools.bench_net import steal_seconds
from upbx.tools.impair import Impairment, Relay
from upbx.tools.lab import LoopbackExchange, upbx, write_noise_wav

# perf_bench scores (higher is faster; N=100 M=100) for an ESP32 running MicroPython's GENERIC
# build, from the message of commit 549448e8bb ("esp32: Enable optimisations and move code to
# iRAM to boost performance", micropython/micropython PR #7850, 2021-09-24): a TinyPICO, IDF
# 4.2.2, at 160 MHz. The same message says misc_aes and the viper_call tests scale with the CPU
# clock (240 MHz: +50 %); the others also depend on external flash timing, so for them no gain
# from 240 MHz is assumed (the estimate errs on the slow side).
PUBLISHED = {
    "source": "micropython/micropython commit 549448e8bb (PR #7850), 2021-09-24: ESP32 (TinyPICO), "
              "GENERIC build, ESP-IDF 4.2.2, 160 MHz, MicroPython v1.17 development",
    "published_mhz": 160,
    "scores_160mhz": {"misc_pystone": 1801.87, "misc_aes": 345.69, "viper_call2a": 267.25},
    "scales_with_clock": ("misc_aes", "viper_call2a"),
}
# the three kinds of work in a tick: bytecode calling functions and methods and reading attributes
# (pystone), bytecode on bytes and small ints (aes), calls into viper kernels with arguments
BENCHMARKS = ("misc_pystone", "misc_aes", "viper_call2a")
# What a socket call costs an ESP32, as an upper bound: ESP-IDF's Programming Guide (api-guides/wifi.rst,
# "ESP32 Wi-Fi Throughput": the iperf example, 240 MHz, flash QIO 80 MHz, shield box) gives the UDP
# throughput of each buffer configuration ("rank"); the slowest ESP32 rank without PSRAM ("Minimum")
# sends 36.5 Mbit/s and receives 54.7 Mbit/s of 1470-byte datagrams (iperf's length): one sendto per
# 322 us and one recv per 215 us, each the whole cycle of a loop doing nothing else (lwIP, the Wi-Fi
# driver, waiting for buffers and, receiving, for the next datagram). A handset's datagrams are
# 168 bytes; the bound counts them as if they were 1470.
ESP32_SOCKET = {
    "source": "ESP-IDF Programming Guide, docs/en/api-guides/wifi.rst (espressif/esp-idf 002c10d97b), ESP32 Wi-Fi "
              "Throughput, rank Minimum (ESP32 without PSRAM, 240 MHz, iperf example): UDP TX 36.5 Mbit/s, "
              "UDP RX 54.7 Mbit/s",
    "datagram_bytes": 1470, "tx_mbit_s": 36.5, "rx_mbit_s": 54.7,
}
ESP32_SOCKET["sendto_us"] = round(ESP32_SOCKET["datagram_bytes"] * 8 / ESP32_SOCKET["tx_mbit_s"])
ESP32_SOCKET["recv_us"] = round(ESP32_SOCKET["datagram_bytes"] * 8 / ESP32_SOCKET["rx_mbit_s"])
TARGET_MHZ = 240
TARGETS_MS = {"p50": 5.0, "worst": 12.0}
CASES = ("normal", "bridged", "concealed", "silence")
PROFILED, CALLER = "302", "301"
REALTIME_PRIORITY = 10   # SCHED_FIFO priority of the profiled handset (1-99), where allowed


def micropython_src():
    """The MicroPython source tree (the one the image is built from) whose tests/perf_bench the calibration runs."""
    from upbx.tools.images import micropython_source
    return str(micropython_source(need=("tests/perf_bench/benchrun.py",)))


def frozen_image():
    """The 32-bit unix port with the firmware frozen in (tools.build.unix32_image: built or cached)."""
    from upbx.tools import build
    return str(build.unix32_image(frozen=True, log=lambda *a: None))


# --- calibration: perf_bench on the same binary ------------------------------------------

def esp32_scores(mhz=TARGET_MHZ):
    """The published scores, scaled to `mhz` for the benchmarks known to follow the clock."""
    factor = mhz / PUBLISHED["published_mhz"]
    return {name: round(score * (factor if name in PUBLISHED["scales_with_clock"] else 1.0), 2)
            for name, score in PUBLISHED["scores_160mhz"].items()}


# Appended to a perf_bench file instead of its benchrun.py: the same choice of parameters for
# N, M, but the run repeated in one process and the median time kept. On this machine one run
# at N=100 lasts about a millisecond, short enough for the first run's cold caches and the
# clock's granularity to move the score by 20 %; on an ESP32 (where the published scores come
# from) the same run lasts 50-200 ms.
_RUNNER = """
def _upbx_run(N, M, repeats):
    from time import ticks_us, ticks_diff
    cur, param = (0, 0), None
    for nm, p in bm_params.items():
        if 10 * nm[0] <= 12 * N and nm[1] <= M and nm > cur:
            cur, param = nm, p
    run, result = bm_setup(param)
    times = []
    for _ in range(repeats):
        t0 = ticks_us()
        run()
        times.append(ticks_diff(ticks_us(), t0))
    times.sort()
    norm, out = result()
    print(times[len(times) // 2], norm)
_upbx_run(100, 100, %d)
"""


# The tick's way: one short burst of the benchmark after each 20 ms asleep. The handset's loop sleeps
# in the poller until a datagram or the next tick and then works for 50-150 us here; meanwhile other
# processes (and, on a virtual machine, other guests) take this CPU's caches and branch predictors,
# so every burst of the firmware starts cold. perf_bench's standard run (above) is about a
# millisecond of the benchmark back to back, warm. Timing the benchmark in bursts of about a
# tick's length, each after the same sleep, makes this machine pay the sleep's price for the
# benchmark as it does for a tick (docs/benchmarks.md: it pays much less for the benchmark, whose
# working set is small, so this does not cancel the firmware's cold start). BURST_PARAMS: the
# benchmark's own parameter, smaller than its N=100 one, for a burst of 80-400 us here (misc_aes's
# smallest, one 16-byte block, is the longest); calibration() applies the bursts' loss after the
# sleep to the standard score.
BURST_PARAMS = {"misc_pystone": (25,), "misc_aes": (1, 16), "viper_call2a": (2000,)}
SLEEP_MS = 20

_BURST_RUNNER = """
def _upbx_bursts(param, samples, sleep_ms):
    from time import ticks_us, ticks_diff, sleep_ms as sleep
    run, result = bm_setup(param)
    for _ in range(5):
        run()
    warm, cold = [], []
    for _ in range(samples):
        t0 = ticks_us()
        run()
        warm.append(ticks_diff(ticks_us(), t0))
    for _ in range(samples):
        sleep(sleep_ms)
        t0 = ticks_us()
        run()
        cold.append(ticks_diff(ticks_us(), t0))
    warm.sort()
    cold.sort()
    norm, out = result()
    print(warm[len(warm) // 2], cold[len(cold) // 2], norm)
_upbx_bursts(%r, %d, %d)
"""


def _perf_bench_runs(binary, name, src, runner, fields_wanted, processes, realtime):
    """Run perf_bench's `name` with `runner` appended in `processes` processes; each one's printed
    integers (fields_wanted of them, all but the last > 0), or RuntimeError naming what failed."""
    with open(os.path.join(src or micropython_src(), "tests", "perf_bench", name + ".py")) as f:
        script = f.read() + "\n" + runner
    runs = []
    with tempfile.TemporaryDirectory(prefix="upbx-perfbench-") as tmp:
        path = os.path.join(tmp, name + ".py")
        with open(path, "w") as f:
            f.write(script)
        for _ in range(processes):
            out = subprocess.run([binary, "-X", "heapsize=4M", path], capture_output=True, text=True, timeout=300,
                                 cwd=tmp, env=dict(os.environ, MICROPYPATH=".frozen"),
                                 preexec_fn=_realtime if realtime else None)
            fields = out.stdout.split()
            if (out.returncode != 0 or len(fields) != fields_wanted or not all(f.isdigit() for f in fields)
                    or any(int(f) <= 0 for f in fields[:-1])):
                raise RuntimeError("perf_bench %s%s on %s failed: %s" % (
                    name, " in bursts" if fields_wanted == 3 else "", binary, (out.stdout + out.stderr)[-500:]))
            runs.append([int(f) for f in fields])
    return runs


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def burst_scores(binary, name, src=None, samples=150, processes=3, realtime=False):
    """(warm, after_sleep): perf_bench scores (1e6 * norm / us) of one benchmark in bursts of BURST_PARAMS[name],
    back to back and each after SLEEP_MS asleep; the median over `processes` of each one's median of `samples`."""
    runs = _perf_bench_runs(binary, name, src, _BURST_RUNNER % (BURST_PARAMS[name], samples, SLEEP_MS), 3,
                            processes, realtime)
    return (_median(1e6 * norm / warm for warm, _cold, norm in runs),
            _median(1e6 * norm / cold for _warm, cold, norm in runs))


def perf_bench_score(binary, name, src=None, repeats=25, processes=5, realtime=False):
    """perf_bench score (N=100, M=100, as published: 1e6 * norm / us) of one benchmark on binary: the
    median over `processes` processes of each one's median of `repeats` runs (one process can sit
    20-40 % off the others for the whole of its life: where its code and heap landed). SCHED_FIFO
    with realtime, as the profiled handset runs."""
    runs = _perf_bench_runs(binary, name, src, _RUNNER % repeats, 2, processes, realtime)
    return _median(1e6 * norm / us for us, norm in runs)


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def calibration(binary, repeats=25, processes=5, src=None, realtime=False, samples=150, burst_processes=3):
    """How many times faster this binary runs perf_bench than a 240 MHz ESP32 (geometric mean), the way
    the handset's ticks run: in short bursts, each after 20 ms asleep (burst_scores). The standard run
    (N=100, back to back: perf_bench_score) is kept beside it as "ratio_back_to_back"."""
    esp32 = esp32_scores()
    standard = {name: round(perf_bench_score(binary, name, src, repeats, processes, realtime), 2) for name in BENCHMARKS}
    bursts = {name: burst_scores(binary, name, src, samples, burst_processes, realtime) for name in BENCHMARKS}
    # the standard score times what the sleep costs the bursts: the bursts' own parameters normalise a little
    # differently (misc_aes with one block scores about 20 % above its N=100 run back to back)
    here = {name: round(standard[name] * bursts[name][1] / bursts[name][0], 2) for name in BENCHMARKS}
    ratios = {name: here[name] / esp32[name] for name in BENCHMARKS}
    standard_ratios = {name: standard[name] / esp32[name] for name in BENCHMARKS}
    return {"benchmarks": list(BENCHMARKS),
            "parameters": "N=100 M=100 back to back (scores[].here_back_to_back) times the bursts' score after %d "
                          "ms asleep over theirs back to back, bursts of %s (scores[].here), median over %d processes "
                          "of the median of %d bursts in each; the N=100 runs: "
                          "median over %d processes of the median of %d runs in each%s" % (
                              SLEEP_MS, ", ".join("%s %r" % (n, BURST_PARAMS[n]) for n in BENCHMARKS),
                              burst_processes, samples, processes, repeats, ", SCHED_FIFO" if realtime else ""),
            "scores": {name: {"here": here[name], "here_bursts_back_to_back": round(bursts[name][0], 2),
                              "here_bursts_after_sleep": round(bursts[name][1], 2),
                              "here_back_to_back": standard[name], "esp32_%dmhz" % TARGET_MHZ: esp32[name],
                              "esp32_published_160mhz": PUBLISHED["scores_160mhz"][name],
                              "ratio": round(ratios[name], 2),
                              "ratio_back_to_back": round(standard_ratios[name], 2)} for name in BENCHMARKS},
            "ratio": round(_geomean(list(ratios.values())), 2), "ratio_min": round(min(ratios.values()), 2),
            "ratio_max": round(max(ratios.values()), 2),
            "ratio_back_to_back": round(_geomean(list(standard_ratios.values())), 2),
            "source": PUBLISHED["source"], "assumed_to_scale_with_clock": list(PUBLISHED["scales_with_clock"])}


# --- how much slower this machine runs a tick's work after sleeping -----------------------

# The handset sleeps 10-20 ms between ticks; meanwhile other processes (and, on a virtual
# machine, other guests) take the CPU's caches, so a tick's work runs cold: about three times as
# long, where perf_bench in bursts after the same sleep loses 5-43 % (burst_scores). This runs the per-frame work of a call (encode, VAD,
# seal, open, jitter buffer, playout) with the firmware's own frozen modules, back to back and
# after a 20 ms sleep each, and reports the medians.
_COLD_SCRIPT = """
import time
from common import media
from firmware.audio import pipeline, vad
key = bytes(range(16))
tx, rx = media.MediaLeg(key, 0, 5, 6), media.MediaLeg(key, 1, 6, 5)
p, v = pipeline.AudioPipeline("ulaw"), vad.VoiceActivityDetector()
pcm = bytearray(320)
for i in range(160):
    x = ((i * 37) %% 200 - 100) * 50
    pcm[2 * i], pcm[2 * i + 1] = x & 0xFF, (x >> 8) & 0xFF
buf = bytearray(168)
view, payload = memoryview(buf), memoryview(buf)[4:164]
ts = [0]
def work():
    ts[0] += 20
    p.encode(pcm)
    v.update(pcm)
    buf[:] = tx.seal_mini(ts[0], p.tx_payload)
    rx.open_mini(view)
    p.receive((8 * ts[0]) & 0xFFFF, payload, ts[0])
    p.playout(ts[0])
def median(n, sleep_ms):
    d = []
    for _ in range(n):
        if sleep_ms:
            time.sleep_ms(sleep_ms)
        t = time.ticks_us()
        work()
        d.append(time.ticks_diff(time.ticks_us(), t))
    d.sort()
    return d[n // 2]
for _ in range(50):
    work()
print(median(%(n)d, 0), median(%(n)d, 20))
"""


def cold_start(binary, samples=200, realtime=False):
    """{"warm_us", "after_sleep_us", "penalty_us"}: the per-frame work's median time back to back and after 20 ms asleep."""
    with tempfile.TemporaryDirectory(prefix="upbx-cold-") as tmp:   # the frozen modules, not a checkout's
        out = subprocess.run([binary, "-X", "heapsize=256K", "-c", _COLD_SCRIPT % {"n": samples}], capture_output=True,
                             text=True, timeout=120, cwd=tmp, env=dict(os.environ, MICROPYPATH=".frozen"),
                             preexec_fn=_realtime if realtime else None)
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 2:
        raise RuntimeError("cold-start measurement on %s failed: %s" % (binary, (out.stdout + out.stderr)[-500:]))
    warm, cold = int(fields[0]), int(fields[1])
    return {"work": "encode, VAD, seal, open, jitter put, playout of one frame (frozen modules)",
            "warm_us": warm, "after_sleep_us": cold, "penalty_us": max(cold - warm, 0)}


# --- instructions: a second figure that the machine's load does not move -----------------

# valgrind's callgrind counts the instructions a process executes in user space (its "Ir"), the same count
# however busy the machine is. The perf_bench benchmarks and the handset are counted on the same binary; the
# ESP32's published time for one benchmark run over its instruction count here is what an ESP32 takes per
# instruction of this binary, for that kind of work (docs/benchmarks.md, handset, Session 10, says
# what that leaves out). Counts are differences of two lengths (repeats, frames, call seconds), so start-up,
# imports and the end are not in them.
INSTRUCTION_REPEATS = (2, 6)       # perf_bench runs (N=100 M=100) in the two processes counted
INSTRUCTION_FRAMES = (100, 600)    # frames of the frame's work in the two processes counted
INSTRUCTION_CALL_SECONDS = (10, 20)


def _callgrind(argv, cwd, env=None, timeout=600):
    """(instructions, stdout) of argv run under callgrind in cwd; RuntimeError naming what failed."""
    if not shutil.which("valgrind"):
        raise RuntimeError("--instructions needs valgrind on PATH (Debian: apt-get install valgrind)")
    out = os.path.join(cwd, "callgrind.out")
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, *argv],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    if proc.returncode != 0:
        raise RuntimeError("%s under callgrind failed: %s" % (argv[-1], (proc.stdout + proc.stderr)[-500:]))
    return callgrind_total(out), proc.stdout


def callgrind_total(path):
    """The instructions a callgrind output file counted (its "totals:" or "summary:" line)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError("no instruction total in %s" % path)


def instruction_calibration(binary, src=None):
    """What a 240 MHz ESP32 takes per instruction of this binary: for each benchmark, the published time of one
    N=100 M=100 run (1e6 * norm / score) over the instructions one run takes here; their geometric mean."""
    esp32 = esp32_scores()
    out = {}
    for name in BENCHMARKS:
        with open(os.path.join(src or micropython_src(), "tests", "perf_bench", name + ".py")) as f:
            bench = f.read()
        counts = []
        with tempfile.TemporaryDirectory(prefix="upbx-perfbench-ir-") as tmp:
            path = os.path.join(tmp, name + ".py")
            for repeats in INSTRUCTION_REPEATS:
                with open(path, "w") as f:
                    f.write(bench + "\n" + _RUNNER % repeats)
                total, stdout = _callgrind([binary, "-X", "heapsize=4M", path], tmp,
                                           dict(os.environ, MICROPYPATH=".frozen"))
                counts.append(total)
                norm = int(stdout.split()[1])
        per_run = (counts[1] - counts[0]) / (INSTRUCTION_REPEATS[1] - INSTRUCTION_REPEATS[0])
        esp32_us = 1e6 * norm / esp32[name]
        out[name] = {"instructions_per_run": round(per_run), "esp32_us_per_run": round(esp32_us, 1),
                     "esp32_ns_per_instruction": round(1000 * esp32_us / per_run, 4)}
    ns = _geomean([b["esp32_ns_per_instruction"] for b in out.values()])
    return {"benchmarks": out, "esp32_ns_per_instruction": round(ns, 4),
            "esp32_ns_per_instruction_min": min(b["esp32_ns_per_instruction"] for b in out.values()),
            "esp32_ns_per_instruction_max": max(b["esp32_ns_per_instruction"] for b in out.values()),
            "parameters": "N=100 M=100; instructions of one run: (count of %d runs - count of %d runs) / %d, one "
                          "process each, callgrind" % (INSTRUCTION_REPEATS[1], INSTRUCTION_REPEATS[0],
                                                       INSTRUCTION_REPEATS[1] - INSTRUCTION_REPEATS[0])}


# The frame's work of a call (encode, VAD, seal, open, jitter put, playout), as _COLD_SCRIPT below but for n
# frames of 25 different speech-like PCM frames, one frame in 25 not received (concealed, bridged or not)
_FRAME_SCRIPT = """
import sys
from common import media
from firmware.audio import pipeline, vad
key = bytes(range(16))
tx, rx = media.MediaLeg(key, 0, 5, 6), media.MediaLeg(key, 1, 6, 5)
p, v = pipeline.AudioPipeline("ulaw"), vad.VoiceActivityDetector()
frames = []
for k in range(25):
    f = bytearray(320)
    for i in range(160):
        x = ((i * 37 + k * 11) % 200 - 100) * 50
        f[2 * i], f[2 * i + 1] = x & 0xFF, (x >> 8) & 0xFF
    frames.append(f)
def run(n):   # a function's locals, not the module's names: the loop's own lookups stay few
    buf = bytearray(168)
    view, payload = memoryview(buf), memoryview(buf)[4:164]
    ts = 0
    for k in range(n):
        ts += 20
        pcm = frames[k % 25]
        p.encode(pcm)
        v.update(pcm)
        buf[:] = tx.seal_mini(ts, p.tx_payload)
        if k % 25 != 7:
            rx.open_mini(view)
            p.receive((8 * ts) & 0xFFFF, payload, ts)
        p.playout(ts)
run(int(sys.argv[1]))
"""


def frame_instructions(binary, frames=INSTRUCTION_FRAMES):
    """Instructions of one frame's work (_FRAME_SCRIPT), the difference of two lengths: exact, whatever the load."""
    counts = []
    with tempfile.TemporaryDirectory(prefix="upbx-frame-ir-") as tmp:
        path = os.path.join(tmp, "frames.py")
        with open(path, "w") as f:
            f.write(_FRAME_SCRIPT)
        for n in frames:
            counts.append(_callgrind([binary, "-X", "heapsize=256K", path, str(n)], tmp,
                                     dict(os.environ, MICROPYPATH=".frozen"))[0])
    return round((counts[1] - counts[0]) / (frames[1] - frames[0]))


def call_instructions(binary, loss, heapsize, seconds=INSTRUCTION_CALL_SECONDS):
    """Instructions per audio tick of the bench's call, 302 unprofiled under callgrind: the difference of two
    calls' counts over the difference of their audio ticks (frames sent or held back by the VAD), so what is
    not the call (boot, registration, the end) drops out. The work is the call's, which is not the same twice
    on a loaded machine (302 runs about 50 times slower: frames held or concealed differ); the count of it is."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="upbx-call-ir-") as tmp:
        for length in seconds:
            out = os.path.join(tmp, "callgrind.%d" % length)
            summary = profiled_call(binary, length, loss, heapsize, callgrind=out)
            runs.append({"seconds": length, "instructions": callgrind_total(out),
                         "audio_ticks": summary["frames_sent"] + summary["frames_suppressed"],
                         "frames_sent": summary["frames_sent"], "frames_received": summary["frames_received"],
                         "concealed": summary["jitter"]["concealed"],
                         "mic_frames_lost": summary.get("mic_frames_lost")})
    ticks = runs[1]["audio_ticks"] - runs[0]["audio_ticks"]
    if ticks <= 0:
        raise RuntimeError("the callgrind calls' audio ticks do not grow with their length: %r" % runs)
    return {"per_tick": round((runs[1]["instructions"] - runs[0]["instructions"]) / ticks), "runs": runs}


def instruction_estimate(binary, loss, heapsize, overall, quick=False):
    """The load-independent second figure: the call's mean instructions per tick and one frame's work, at an
    ESP32's time per instruction (instruction_calibration); socket calls at the ESP32's cost as in the estimate,
    as many per tick as the timed call made (overall["socket_calls_per_tick"])."""
    cal = instruction_calibration(binary)
    frame = frame_instructions(binary)
    call = call_instructions(binary, loss, heapsize, (4, 8) if quick else INSTRUCTION_CALL_SECONDS)
    ns = cal["esp32_ns_per_instruction"]
    calls = overall["socket_calls_per_tick"]
    socket_us = (calls["sendto_total"] * ESP32_SOCKET["sendto_us"]
                 + calls["recv_total"] * ESP32_SOCKET["recv_us"]) / overall["ticks"]
    return {"calibration": cal, "frame_work_per_frame": frame, "call_per_tick_mean": call["per_tick"],
            "call_runs": call["runs"], "esp32_socket_us_per_tick_mean": round(socket_us),
            "esp32_ms_frame_work": round(frame * ns / 1e6, 2),
            "esp32_ms_per_tick_mean_without_socket": round(call["per_tick"] * ns / 1e6, 2),
            "esp32_ms_per_tick_mean": round(call["per_tick"] * ns / 1e6 + socket_us / 1000, 2),
            "esp32_ms_per_tick_mean_range": [round(call["per_tick"] * cal[k] / 1e6 + socket_us / 1000, 2)
                                             for k in ("esp32_ns_per_instruction_min", "esp32_ns_per_instruction_max")],
            "unit": "instructions: x86 (i386) user-space instructions of the 32-bit frozen image counted by "
                    "valgrind's callgrind; esp32_ms: those at an ESP32's published time per instruction of this "
                    "binary for perf_bench (calibration), the socket's calls at the ESP32's cost; a mean over the "
                    "call's ticks, not a median (callgrind counts a process, not a tick)"}


# --- the call -----------------------------------------------------------------------------

def write_talk_wav(path, seconds, seed=9):
    """Talk spurts (1.2 s of speech-like noise at about -20 dBov) and pauses (0.8 s at -70 dBov)."""
    rng = random.Random(seed)
    samples = bytearray()
    level = 0.0
    for i in range(8000 * seconds):
        talking = (i % 16000) < 9600
        amp = 9000 if talking else 8
        level = level * 0.6 + rng.uniform(-amp, amp)
        samples += struct.pack("<h", max(-32768, min(32767, int(level))))
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", len(samples))
    with open(path, "wb") as f:
        f.write(header + samples)


def profiled_call(binary, seconds, loss_pct, heapsize, workdir=None, seed=5, spin=False, callgrind=None):
    """One call 301 -> 302 with 302 profiled; returns 302's summary (with its "profile"). With spin, 302's
    loop polls instead of sleeping between ticks (firmware/profile.py, spin): the warm figure. With callgrind
    (a file), 302 runs unprofiled under valgrind's callgrind, which counts its instructions into that file."""
    workdir = workdir or tempfile.mkdtemp(prefix="upbx-bench-handset-")
    phone_args = ["--micropython", binary, "--heapsize", heapsize]
    with LoopbackExchange(workdir=workdir, phone_args=phone_args) as lab:
        lab.provision(sites=("c",), remote_sites=(), phones={"c": [CALLER, PROFILED]})
        lab.start()
        caller_wav, talk_wav = lab.path("caller.wav"), lab.path("talk.wav")
        write_noise_wav(caller_wav, seconds + 10, 1)
        write_talk_wav(talk_wav, seconds + 10)
        relay = Relay(("127.0.0.1", 0), ("127.0.0.1", lab.main_port), down=Impairment(seed=seed, loss=loss_pct))
        relay.start()
        try:
            # the profiled handset runs SCHED_FIFO where allowed: other processes on the machine then
            # cannot preempt its short bursts of work, and the profile times the handset, not them
            argv = upbx("phone", "--extension", PROFILED, "--secret", lab.secrets[PROFILED],
                        "--host", "%s:%d" % relay.address, "--bind", "127.0.0.1",
                        "--summary", lab.path("profiled.summary.json"), "--flash-dir", lab.path("flash-profiled"),
                        *phone_args, "--answer", "--vad", "--send", talk_wav,
                        *(["--profile", str(seconds * 50 + 100)] if not callgrind else
                          ["--callgrind", callgrind, "--watchdog-ms", "60000"]),   # valgrind starts slowly
                        *(["--profile-spin"] if spin else []),
                        "--exit-after-call", "--exit-after", str(seconds + (90 if callgrind else 30)))
            realtime = _realtime_allowed()
            callee = lab.spawn("phone-profiled", argv, stdin=subprocess.PIPE,
                               preexec_fn=_realtime if realtime else None)
            lab.wait_registered(PROFILED, timeout=120 if callgrind else 30)
            caller = lab.phone(CALLER, "--send", caller_wav, "--call", PROFILED, "--call-after", "0.5",
                               "--duration", str(seconds), "--exit-after-call", "--exit-after", str(seconds + 25),
                               tag="caller")
            caller.wait(seconds + 40)
            callee.wait(seconds + (120 if callgrind else 40))
            lost = relay.down.counters["dropped"]
        finally:
            relay.stop()
            relay.close()
        summary = lab.summary("profiled")
        summary["relay_lost"] = lost
        summary["realtime"] = realtime
        return summary


def _realtime():
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))


def _realtime_allowed():
    """Whether this process may make a child SCHED_FIFO (root, or CAP_SYS_NICE)."""
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:
        try:
            _realtime()
            os._exit(0)
        except BaseException:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


# --- the benchmark ------------------------------------------------------------------------

def _ms(us, ratio):
    return None if us is None else round(us * ratio / 1000.0, 2)


KIND_NAMES = ("none", "normal", "bridged", "concealed", "silence", "other")   # firmware/profile.py's codes


def raw_ticks(profile):
    """The profile's ticks, one dict each: {"us", "wall_us", "cpu_us", "waited", "io_us", "net_us", "kind",
    "collected", "signalled", "heap_walk", "sends", "recvs"} (firmware/profile.py report()["raw"]: little-endian
    storage as hex). "us" is the tick's time: its
    wall-clock busy time ("wall_us"), or, where the kernel counted the thread's CPU time (profile "kernel_clock")
    and counted less, the kernel's count ("cpu_us"): a tick in which the process was descheduled is then not
    charged for the time it was away (docs/benchmarks.md, Session 5, "The 10 ms tick")."""
    raw = profile.get("raw")
    if raw is None:
        raise RuntimeError("the profiled handset reported no per-tick figures (\"raw\": its heap had no room "
                           "for them at the end of the call); profile fewer ticks or give it a larger heap")

    def words(key):
        b = bytes.fromhex(raw[key])
        return [b[i] | b[i + 1] << 8 for i in range(0, len(b), 2)]
    us, io, net = words("us"), words("io_us"), words("net_us")
    kinds, calls = bytes.fromhex(raw["kinds"]), bytes.fromhex(raw["net_calls"])
    kernel = bool(profile.get("kernel_clock")) and "cpu_us" in raw
    cpu = words("cpu_us") if kernel else [None] * len(us)
    if not len(us) == len(io) == len(net) == len(kinds) == len(calls) == len(cpu) == profile["ticks"]:
        raise RuntimeError("the profile's raw figures do not match its %d ticks" % profile["ticks"])
    ticks = []
    for i in range(len(us)):
        t = us[i] if cpu[i] is None else min(us[i], cpu[i])
        ticks.append({"us": max(t, net[i], io[i]) if t < us[i] else t, "wall_us": us[i], "cpu_us": cpu[i],
                      "waited": bool(kernel and kinds[i] & 0x10), "io_us": io[i], "net_us": net[i],
                      "kind": KIND_NAMES[kinds[i] & 0x0F],
                      "collected": bool(kinds[i] & 0x80), "signalled": bool(kinds[i] & 0x40),
                      "heap_walk": bool(kinds[i] & 0x20), "sends": calls[i] & 15, "recvs": calls[i] >> 4})
    return ticks


def figures(ticks):
    """firmware/profile.py's figures of a list of ticks (raw_ticks), from their "us": {"ticks", "p50_us", "p99_us",
    "max_us", "io_p50_us", "without_io_p50_us", "without_io_p99_us", "without_io_max_us"}."""
    if not ticks:
        return {"ticks": 0}
    us = _rank([t["us"] for t in ticks])
    without = _rank([max(t["us"] - t["io_us"], 0) for t in ticks])
    return {"ticks": len(ticks), "p50_us": us[0], "p99_us": us[1], "max_us": us[2],
            "io_p50_us": _rank([t["io_us"] for t in ticks])[0], "without_io_p50_us": without[0],
            "without_io_p99_us": without[1], "without_io_max_us": without[2]}


CAUSES = ("collection", "heap_walk", "signalling", "audio_only")


def cause(tick):
    """What else a tick did besides its audio (firmware/profile.py's flags), the heaviest first: the once-a-second
    gc.collect() ("collection"), the heap's use sampled ("heap_walk": gc.mem_alloc and gc.mem_free), the loop's
    timers or the protocol's signalling ("signalling"), or nothing else ("audio_only")."""
    return ("collection" if tick["collected"] else "heap_walk" if tick["heap_walk"]
            else "signalling" if tick["signalled"] else "audio_only")


def by_cause(ticks, ratio):
    """{cause: {"ticks", "host_us_p50", "host_us_max", "host_socket_us_max", "esp32_ms_p50", "esp32_ms_max"}}."""
    out = {}
    for name in CAUSES:
        mine = [t for t in ticks if cause(t) == name]
        if mine:
            host, est = _rank([t["us"] for t in mine]), _rank([esp32_tick_us(t, ratio) for t in mine])
            out[name] = {"ticks": len(mine), "host_us_p50": host[0], "host_us_max": host[2],
                         "host_socket_us_max": max(t["net_us"] for t in mine),
                         "esp32_ms_p50": _ms(est[0], 1), "esp32_ms_max": _ms(est[2], 1)}
    return out


def over_target(ticks, ratio):
    """The ticks whose ESP32 estimate is over the worst-tick target: how many, by cause, and each one's host
    time, CPU time (the kernel's), socket time and kind, the largest first (at most 10 listed)."""
    over = sorted((t for t in ticks if esp32_tick_us(t, ratio) > TARGETS_MS["worst"] * 1000),
                  key=lambda t: -esp32_tick_us(t, ratio))
    causes = {}
    for t in over:
        causes[cause(t)] = causes.get(cause(t), 0) + 1
    return {"ticks": len(over), "of": len(ticks), "by_cause": causes,
            "largest": [{"esp32_ms": _ms(esp32_tick_us(t, ratio), 1), "host_us": t["us"], "cpu_us": t["cpu_us"],
                         "host_socket_us": t["net_us"], "kind": t["kind"], "cause": cause(t)} for t in over[:10]]}


def descheduled(ticks):
    """What the kernel's clock says about the wall clock's ticks: how many the kernel counted less CPU time
    for than their wall-clock busy time, by more than 1 ms (the process was away), and the largest wall-clock
    tick with its CPU time and time waiting runnable; None without the kernel's clock."""
    if not ticks or ticks[0]["cpu_us"] is None:
        return None
    worst = max(ticks, key=lambda t: t["wall_us"])
    return {"ticks_away_over_1ms": sum(1 for t in ticks if t["wall_us"] - t["cpu_us"] > 1000),
            "ticks_waited_runnable": sum(1 for t in ticks if t["waited"]),
            "wall_us_worst_tick": worst["wall_us"], "cpu_us_of_it": worst["cpu_us"],
            "waited_in_it": worst["waited"], "kind_of_it": worst["kind"], "cause_of_it": cause(worst),
            "cpu_us_worst_tick": max(t["cpu_us"] for t in ticks)}


def esp32_tick_us(tick, ratio):
    """One tick's ESP32 estimate (us): the handset's time without its socket calls, scaled by the calibration,
    plus every socket call at an ESP32's cost (ESP32_SOCKET)."""
    return ((tick["us"] - tick["net_us"]) * ratio + tick["sends"] * ESP32_SOCKET["sendto_us"]
            + tick["recvs"] * ESP32_SOCKET["recv_us"])


def _rank(values):
    """(median, p99, max) by nearest rank, as firmware/profile.py takes them."""
    values = sorted(values)
    n = len(values)
    return values[(n - 1) // 2], values[-(-99 * n // 100) - 1], values[-1]


def estimate(profile, cal):
    """Per-case host figures (us) and their ESP32 estimates (ms) from a profile report and a calibration.

    esp32_* scale the handset's time but its socket calls and count each call at an ESP32's cost
    (esp32_tick_us); *_host_io_scaled scale everything, its system calls included (the method before);
    *_without_io leave out all the time in the unix HAL's socket and device calls."""
    ratio = cal["ratio"]
    ticks = raw_ticks(profile)
    cases = {}
    for name in CASES + ("other",):
        mine = [t for t in ticks if t["kind"] == name]
        k = figures(mine)
        if not k["ticks"]:
            continue
        p50, p99, top = _rank([esp32_tick_us(t, ratio) for t in mine])
        net = _rank([t["net_us"] for t in mine])[0]
        cases[name] = {"ticks": k["ticks"], "host_us_p50": k["p50_us"], "host_us_p99": k["p99_us"],
                       "host_wall_us_max": max(t["wall_us"] for t in mine),
                       "host_us_max": k["max_us"], "host_io_us_p50": k["io_p50_us"], "host_socket_us_p50": net,
                       "esp32_ms_p50": _ms(p50, 1), "esp32_ms_p99": _ms(p99, 1), "esp32_ms_max": _ms(top, 1),
                       "esp32_ms_p50_host_io_scaled": _ms(k["p50_us"], ratio),
                       "esp32_ms_p99_host_io_scaled": _ms(k["p99_us"], ratio),
                       "esp32_ms_max_host_io_scaled": _ms(k["max_us"], ratio),
                       "esp32_ms_p50_without_io": _ms(k["without_io_p50_us"], ratio),
                       "esp32_ms_p99_without_io": _ms(k["without_io_p99_us"], ratio),
                       "esp32_ms_max_without_io": _ms(k["without_io_max_us"], ratio)}
    whole = figures(ticks)
    worst_tick = max(ticks, key=lambda t: t["us"])
    worst = {"us": worst_tick["us"], "io_us": worst_tick["io_us"], "kind": worst_tick["kind"],
             "collected": worst_tick["collected"]}
    collections = figures([t for t in ticks if t["collected"]])
    p50, p99, top = _rank([esp32_tick_us(t, ratio) for t in ticks])
    worst_new = max(ticks, key=lambda t: esp32_tick_us(t, ratio))

    def at(r):
        return _rank([esp32_tick_us(t, r) for t in ticks])
    low, high = at(cal["ratio_min"]), at(cal["ratio_max"])
    sends = _rank([t["sends"] for t in ticks])
    recvs = _rank([t["recvs"] for t in ticks])
    return cases, {
        "ticks": whole["ticks"], "host_us_per_tick_p50": whole["p50_us"], "host_us_per_tick_p99": whole["p99_us"],
        "host_io_us_per_tick_p50": whole["io_p50_us"],
        "host_socket_us_per_tick_p50": _rank([t["net_us"] for t in ticks])[0],
        "socket_calls_per_tick": {"sendto_p50": sends[0], "sendto_max": sends[2], "recv_p50": recvs[0],
                                  "recv_max": recvs[2], "sendto_total": sum(t["sends"] for t in ticks),
                                  "recv_total": sum(t["recvs"] for t in ticks)},
        "host_us_worst_tick": worst["us"], "host_io_us_worst_tick": worst["io_us"], "worst_tick_kind": worst["kind"],
        "worst_tick_held_gc_collect": worst["collected"],
        "host_us_collection_tick_p50": collections.get("p50_us"),
        "host_us_collection_tick_max": collections.get("max_us"),
        "collection_ticks": collections["ticks"],
        "host_wall_us_worst_tick": max(t["wall_us"] for t in ticks),
        "kernel_clock": descheduled(ticks),
        "host_us_call_end_tick": (profile.get("end") or {}).get("us"),
        "esp32_ms_per_tick_p50": _ms(p50, 1), "esp32_ms_per_tick_p99": _ms(p99, 1), "esp32_ms_worst_tick": _ms(top, 1),
        "esp32_worst_tick": {"kind": worst_new["kind"], "cause": cause(worst_new), "host_us": worst_new["us"],
                             "host_wall_us": worst_new["wall_us"], "host_socket_us": worst_new["net_us"],
                             "sendto": worst_new["sends"], "recv": worst_new["recvs"]},
        "ticks_by_cause": by_cause(ticks, ratio),
        "esp32_ms_per_tick_p999": _ms(sorted(esp32_tick_us(t, ratio) for t in ticks)[-(-999 * len(ticks) // 1000) - 1],
                                      1),
        "ticks_over_worst_target": over_target(ticks, ratio),
        "esp32_ms_per_tick_p50_host_io_scaled": _ms(whole["p50_us"], ratio),
        "esp32_ms_per_tick_p99_host_io_scaled": _ms(whole["p99_us"], ratio),
        "esp32_ms_worst_tick_host_io_scaled": _ms(worst["us"], ratio),
        "esp32_ms_per_tick_p50_without_io": _ms(whole["without_io_p50_us"], ratio),
        "esp32_ms_worst_tick_without_io": _ms(whole["without_io_max_us"], ratio),
        "esp32_ms_per_tick_p50_range": [_ms(low[0], 1), _ms(high[0], 1)],
        "esp32_ms_worst_tick_range": [_ms(low[2], 1), _ms(high[2], 1)],
        "esp32_socket_cost": dict(ESP32_SOCKET),
    }


def warm_estimate(profile, cal):
    """The warm call's figures (a handset that spun between ticks: this machine's caches stayed its own),
    scaled by the calibration's standard run (perf_bench back to back, warm as well); socket calls at the
    ESP32's cost, as the estimate."""
    ratio = cal["ratio_back_to_back"]
    ticks = raw_ticks(profile)
    p50, p99, top = _rank([esp32_tick_us(t, ratio) for t in ticks])
    host = _rank([t["us"] for t in ticks])
    without_io = _rank([max(t["us"] - t["io_us"], 0) for t in ticks])
    cases = {}
    for name in CASES:
        mine = [t for t in ticks if t["kind"] == name]
        if mine:
            cases[name] = {"ticks": len(mine), "host_us_p50": _rank([t["us"] for t in mine])[0],
                           "esp32_ms_p50": _ms(_rank([esp32_tick_us(t, ratio) for t in mine])[0], 1)}
    return {"ticks": len(ticks), "ratio": ratio, "ratio_is": "calibration.ratio_back_to_back",
            "cases_other_ticks": sum(1 for t in ticks if t["kind"] not in CASES),
            "host_us_per_tick_p50": host[0], "host_us_per_tick_p99": host[1], "host_us_worst_tick": host[2],
            "host_us_per_tick_p50_without_io": without_io[0],
            "host_socket_us_per_tick_p50": _rank([t["net_us"] for t in ticks])[0],
            "esp32_ms_per_tick_p50": _ms(p50, 1), "esp32_ms_per_tick_p99": _ms(p99, 1),
            "esp32_ms_worst_tick": _ms(top, 1),
            "esp32_ms_per_tick_p50_without_io": _ms(without_io[0], ratio), "cases": cases}


def bench_handset(quick=False, binary=None, instructions=False):
    """Handset CPU per 20 ms tick on the frozen 32-bit build, and the 240 MHz ESP32 estimate; with instructions,
    also the same estimated from instruction counts (instruction_estimate), which the machine's load does not move."""
    binary = binary or frozen_image()
    seconds, loss, heapsize = (6, 5.0, "110K") if quick else (30, 4.0, "110K")
    realtime = _realtime_allowed()
    cal = calibration(binary, repeats=9 if quick else 25, processes=3 if quick else 7, realtime=realtime,
                      samples=30 if quick else 150, burst_processes=1 if quick else 3)
    cold = cold_start(binary, 60 if quick else 300, realtime)
    steal0, started = steal_seconds(), time.monotonic()
    summary = profiled_call(binary, seconds, loss, heapsize)
    steal1, span = steal_seconds(), time.monotonic() - started
    profile = summary.get("profile")
    if not profile or not profile["ticks"]:
        raise RuntimeError("the profiled handset recorded no call ticks: %s" % json.dumps(summary)[:2000])
    cases, overall = estimate(profile, cal)
    # the same call again, shorter, with the profiled handset spinning between ticks instead of sleeping
    warm_seconds = 4 if quick else 12
    warm_summary = profiled_call(binary, warm_seconds, loss, heapsize, spin=True)
    warm_profile = warm_summary.get("profile")
    if not warm_profile or not warm_profile["ticks"]:
        raise RuntimeError("the spinning profiled handset recorded no call ticks: %s" % json.dumps(warm_summary)[:2000])
    warm_run = dict(warm_estimate(warm_profile, cal), seconds=warm_seconds)
    result = {
        "image": binary, "heapsize": heapsize, "realtime": summary["realtime"],
        "call": {"seconds": seconds, "loss_pct_to_profiled": loss, "lost_by_relay": summary["relay_lost"],
                 "vad": True, "frames_sent": summary["frames_sent"], "frames_received": summary["frames_received"],
                 "frames_suppressed": summary["frames_suppressed"], "concealed": summary["jitter"]["concealed"],
                 "heap": summary.get("heap")},
        "unit": "host_us: microseconds of handset CPU per 20 ms tick on this machine; esp32_ms: the same "
                "scaled by calibration.ratio, but the socket's calls counted at an ESP32's cost (esp32_socket_cost) "
                "instead; *_host_io_scaled: everything scaled, the system calls too",
        "cases": cases, "calibration": cal, "cold_start": cold, "targets_ms": TARGETS_MS,
        "warm": warm_run,
        # the share of the profiled call each virtual CPU was taken by the hypervisor (/proc/stat's steal): time
        # the guest charges to the thread on that CPU, so it is in the ticks' wall and CPU figures alike
        "call_steal": {str(cpu): round((steal1[cpu] - steal0.get(cpu, 0.0)) / span, 4) for cpu in sorted(steal1)},
    }
    result.update(overall)
    # a sensitivity, not the estimate: without the host's system calls and without one wake-up's cache
    # refill per tick (the loop wakes at least once a tick), as if an ESP32 ran a tick warm (its own cold
    # start, through its flash cache, is not known: docs/benchmarks.md)
    penalty = cold["penalty_us"]
    whole = figures(raw_ticks(profile))
    result["esp32_ms_per_tick_p50_warm_without_io"] = _ms(max(whole["without_io_p50_us"] - penalty, 0), cal["ratio"])
    result["esp32_ms_worst_tick_warm_without_io"] = _ms(max(whole["without_io_max_us"] - penalty, 0), cal["ratio"])
    # the estimate itself (socket calls at the ESP32's cost) less one wake-up's refill per tick
    warm = _rank([esp32_tick_us(dict(t, us=max(t["us"] - penalty, t["net_us"])), cal["ratio"])
                  for t in raw_ticks(profile)])
    result["esp32_ms_per_tick_p50_warm"], result["esp32_ms_worst_tick_warm"] = _ms(warm[0], 1), _ms(warm[2], 1)
    # the method before: the calibration's standard run (N=100, back to back, warm)
    before = _rank([esp32_tick_us(t, cal["ratio_back_to_back"]) for t in raw_ticks(profile)])
    result["esp32_ms_per_tick_p50_back_to_back_calibration"] = _ms(before[0], 1)
    result["esp32_ms_worst_tick_back_to_back_calibration"] = _ms(before[2], 1)
    # measured warm: the spinning call (warm_estimate), the machine's caches kept the handset's between ticks
    result["esp32_ms_per_tick_p50_warm_measured"] = warm_run["esp32_ms_per_tick_p50"]
    result["esp32_ms_per_tick_p99_warm_measured"] = warm_run["esp32_ms_per_tick_p99"]
    result["esp32_ms_worst_tick_warm_measured"] = warm_run["esp32_ms_worst_tick"]
    result["meets_targets_warm_measured"] = (warm_run["esp32_ms_per_tick_p50"] <= TARGETS_MS["p50"]
                                             and warm_run["esp32_ms_worst_tick"] <= TARGETS_MS["worst"])
    result["meets_targets"] = (overall["esp32_ms_per_tick_p50"] <= TARGETS_MS["p50"]
                               and overall["esp32_ms_worst_tick"] <= TARGETS_MS["worst"])
    result["meets_targets_host_io_scaled"] = (overall["esp32_ms_per_tick_p50_host_io_scaled"] <= TARGETS_MS["p50"]
                                              and overall["esp32_ms_worst_tick_host_io_scaled"] <= TARGETS_MS["worst"])
    result["meets_targets_without_io"] = (overall["esp32_ms_per_tick_p50_without_io"] <= TARGETS_MS["p50"]
                                          and overall["esp32_ms_worst_tick_without_io"] <= TARGETS_MS["worst"])
    if instructions:
        ticks = raw_ticks(profile)
        result["instructions"] = instruction_estimate(binary, loss, heapsize, overall, quick)
        # the timed estimate's mean, beside the one by instructions (a mean too)
        result["instructions"]["esp32_ms_per_tick_mean_timed"] = _ms(
            sum(esp32_tick_us(t, cal["ratio"]) for t in ticks) / len(ticks), 1)
        result["esp32_ms_per_tick_mean_by_instructions"] = result["instructions"]["esp32_ms_per_tick_mean"]
    return result


def table_handset(r):
    cal = r["calibration"]
    lines = ["handset: time per 20 ms tick, firmware frozen into the 32-bit unix port (%s, heap %s%s); %d s call, "
             "%g %% loss to the profiled handset, VAD on" % (
                 os.path.basename(r["image"]), r["heapsize"], ", SCHED_FIFO" if r["realtime"] else "",
                 r["call"]["seconds"], r["call"]["loss_pct_to_profiled"]),
             "  calibration: this machine runs perf_bench %.1fx faster than a %d MHz ESP32 (%.1f-%.1fx over %s) in "
             "tick-sized bursts after %d ms asleep, as the handset runs; %.1fx back to back (the standard run)"
             % (cal["ratio"], TARGET_MHZ, cal["ratio_min"], cal["ratio_max"], ", ".join(cal["benchmarks"]), SLEEP_MS,
                cal["ratio_back_to_back"]),
             "  socket calls on an ESP32: sendto %d us, recv %d us each (upper bound: %s)" % (
                 r["esp32_socket_cost"]["sendto_us"], r["esp32_socket_cost"]["recv_us"], r["esp32_socket_cost"]["source"]),
             "  %-10s %6s %8s %8s %8s %8s %8s | %-27s | %-27s | %-19s" % (
                 "tick", "ticks", "p50 us", "p99 us", "max us", "I/O us", "sock us", "ESP32 ms p50 / p99 / max",
                 "all host I/O scaled", "no host I/O p50 / max")]
    for name, c in r["cases"].items():
        lines.append("  %-10s %6d %8d %8d %8d %8d %8d | %7.2f / %7.2f / %7.2f | %7.2f / %7.2f / %7.2f | %7.2f / %7.2f" % (
            name, c["ticks"], c["host_us_p50"], c["host_us_p99"], c["host_us_max"], c["host_io_us_p50"],
            c["host_socket_us_p50"], c["esp32_ms_p50"], c["esp32_ms_p99"], c["esp32_ms_max"],
            c["esp32_ms_p50_host_io_scaled"], c["esp32_ms_p99_host_io_scaled"], c["esp32_ms_max_host_io_scaled"],
            c["esp32_ms_p50_without_io"], c["esp32_ms_max_without_io"]))
    lines.append("  all ticks: p50 %d us (I/O %d, socket %d) -> ESP32 %.2f ms (target <= %g); %.2f with all host I/O "
                 "scaled, %.2f without host I/O" % (
                     r["host_us_per_tick_p50"], r["host_io_us_per_tick_p50"], r["host_socket_us_per_tick_p50"],
                     r["esp32_ms_per_tick_p50"], TARGETS_MS["p50"], r["esp32_ms_per_tick_p50_host_io_scaled"],
                     r["esp32_ms_per_tick_p50_without_io"]))
    w = r["esp32_worst_tick"]
    lines.append("  worst tick on the ESP32 estimate: %.2f ms (target <= %g; a %s tick: %d us here, socket %d us, "
                 "%d sendto, %d recv); %.2f ms with all host I/O scaled (the tick of %d us here: %s%s, I/O %d), %.2f "
                 "without host I/O; ticks with the once-a-second gc.collect(): p50 %s us" % (
                     r["esp32_ms_worst_tick"], TARGETS_MS["worst"], w["kind"], w["host_us"], w["host_socket_us"],
                     w["sendto"], w["recv"], r["esp32_ms_worst_tick_host_io_scaled"], r["host_us_worst_tick"],
                     r["worst_tick_kind"], ", with gc.collect" if r["worst_tick_held_gc_collect"] else "",
                     r["host_io_us_worst_tick"], r["esp32_ms_worst_tick_without_io"], r["host_us_collection_tick_p50"]))
    for name, c in r["ticks_by_cause"].items():
        lines.append("  ticks with %-10s %5d: p50 %5d us, max %5d us here -> ESP32 p50 %6.2f ms, max %6.2f ms" % (
            name, c["ticks"], c["host_us_p50"], c["host_us_max"], c["esp32_ms_p50"], c["esp32_ms_max"]))
    o = r["ticks_over_worst_target"]
    lines.append("  ticks over the worst-tick target (%g ms on the ESP32 estimate): %d of %d (%s); p99.9 %.2f ms" % (
        TARGETS_MS["worst"], o["ticks"], o["of"], ", ".join("%s %d" % kv for kv in o["by_cause"].items()) or "none",
        r["esp32_ms_per_tick_p999"]))
    k = r["kernel_clock"]
    if k:
        lines.append("  the kernel's clock: %d ticks took over 1 ms more wall-clock time than CPU time (the process was "
                     "away; charged the CPU time), %d waited runnable; the longest wall-clock tick, %d us, had %d us "
                     "of CPU (%s, %s)" % (k["ticks_away_over_1ms"], k["ticks_waited_runnable"], k["wall_us_worst_tick"],
                                          k["cpu_us_of_it"], k["kind_of_it"], k["cause_of_it"]))
    cold = r["cold_start"]
    lines.append("  a frame's work takes %d us after 20 ms asleep, %d us back to back: without one wake-up's %d us, "
                 "p50 %.2f ms, worst %.2f ms (without host I/O too: %.2f, %.2f)" % (
                     cold["after_sleep_us"], cold["warm_us"], cold["penalty_us"], r["esp32_ms_per_tick_p50_warm"],
                     r["esp32_ms_worst_tick_warm"], r["esp32_ms_per_tick_p50_warm_without_io"],
                     r["esp32_ms_worst_tick_warm_without_io"]))
    w = r["warm"]
    lines.append("  warm (measured: the profiled handset spun between ticks, %d ticks): p50 %d us here (socket %d), "
                 "p99 %d, worst %d -> ESP32 p50 %.2f ms, p99 %.2f, worst %.2f (scaled by the back-to-back ratio "
                 "%.1f; %.2f without host I/O)" % (
                     w["ticks"], w["host_us_per_tick_p50"], w["host_socket_us_per_tick_p50"], w["host_us_per_tick_p99"],
                     w["host_us_worst_tick"], w["esp32_ms_per_tick_p50"], w["esp32_ms_per_tick_p99"],
                     w["esp32_ms_worst_tick"], w["ratio"], w["esp32_ms_per_tick_p50_without_io"]))
    lines.append("  with the back-to-back calibration (the method before): p50 %.2f ms, worst %.2f ms" % (
        r["esp32_ms_per_tick_p50_back_to_back_calibration"], r["esp32_ms_worst_tick_back_to_back_calibration"]))
    i = r.get("instructions")
    if i:
        c = i["calibration"]
        lines.append("  by instructions (callgrind, whatever the load): %d per tick (mean of the call), %d per "
                     "frame's work; an ESP32 takes %.3f ns per instruction of this binary (%.3f-%.3f over %s) -> "
                     "ESP32 mean %.2f ms per tick (%.2f of it socket calls; timed estimate's mean %.2f), frame's "
                     "work %.2f ms" % (
                         i["call_per_tick_mean"], i["frame_work_per_frame"], c["esp32_ns_per_instruction"],
                         c["esp32_ns_per_instruction_min"], c["esp32_ns_per_instruction_max"],
                         ", ".join(c["benchmarks"]), i["esp32_ms_per_tick_mean"],
                         i["esp32_socket_us_per_tick_mean"] / 1000, i["esp32_ms_per_tick_mean_timed"],
                         i["esp32_ms_frame_work"]))
    lines.append("  targets: %s; with all host I/O scaled: %s; without host I/O: %s" % (
        "met" if r["meets_targets"] else "missed", "met" if r["meets_targets_host_io_scaled"] else "missed",
        "met" if r["meets_targets_without_io"] else "missed"))
    return "\n".join(lines)
