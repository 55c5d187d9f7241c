"""`upbx bench`: every benchmark runs in quick mode and reports sane figures; trunking on the wire (B5).

No timing assertions: speed targets are measured by the benchmarks, not by timed tests.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from upbx.common import wire
from upbx.tools import bench, bench_net

ROOT = bench_net.ROOT


def _trunk_datagrams(calls, mtu, seconds=1.0):
    """Entries of each trunk datagram the main host sent to emulated remote host B."""
    main = bench_net.MainUnderTest({"a": ["1%05d" % i for i in range(calls)],
                                    "b": ["2%05d" % i for i in range(calls)]}, trunk_mtu=mtu)
    try:
        pair = bench_net.TrunkPair(main, calls)
        seen = []
        original = pair.b.sock.recv

        class Spy:
            def __init__(self, sock):
                self.sock = sock

            def __getattr__(self, name):
                return getattr(self.sock, name)

            def recv(self, n):
                data = original(n)
                if data and data[0] & 0xC0 == 0xC0:
                    seen.append(len(bench_net.wire.parse_trunk(data)))
                return data

        pair.b.sock = Spy(pair.b.sock)
        try:
            result = bench_net.run_trunk_load(pair, pair.calls, seconds, mtu)
        finally:
            pair.b.sock = pair.b.sock.sock
            pair.close()
        return seen, result
    finally:
        main.close()


def test_all_frames_to_one_peer_in_one_tick_share_one_trunk_datagram():
    seen, result = _trunk_datagrams(5, 1472)
    assert result["received"] >= 0.99 * result["sent"]   # loopback, but CI machines are busy
    # one datagram per tick carrying all five calls; on a busy machine two ticks' frames may meet in
    # one flush, and ten entries do not fit in 1472 bytes: then a full datagram (8) and the rest
    full = (1472 - bench_net.wire.TRUNK_HEADER - bench_net.wire.MEDIA_TAG) // (bench_net.wire.TRUNK_ENTRY_HEADER + 160)
    assert full == 8
    assert seen and all(n <= full for n in seen)
    split = [i for i, n in enumerate(seen) if n % 5 and n != full and not (i and seen[i - 1] == full)]
    assert not split, "a tick's frames split without a full datagram: %s" % [seen[max(0, i - 2):i + 2] for i in split]
    assert sum(seen) == result["sent"] // 2 - result["lost"][1]
    assert len(seen) >= 0.8 * result["ticks"]


def test_trunk_mtu_splits_ten_calls_into_two_datagrams():
    seen, result = _trunk_datagrams(10, 1472)
    assert result["received"] >= 0.99 * result["sent"]
    assert max(seen) == 8          # (1472 - 7) // 164 entries fit
    assert sum(seen) == result["sent"] // 2 - result["lost"][1]


def test_calls_set_up_after_the_bench_clock_passes_65_5_s_are_relayed_every_frame():
    """The relay bench's generator keeps one clock for all its calls; a call set up after that clock passed
    65,536 ms once got stamps its receiver cannot extend (a leg's first 16-bit stamp is taken as it is), so
    every trunk frame holding such a call failed authentication: the trunked bench capped at 1,048 calls.
    12 calls start below the wrap, 12 after it; frames of both share trunk datagrams (8 a datagram):
    every frame of every call must arrive, through the main host's relay table."""
    import time

    main = bench_net.MainUnderTest({"a": ["1%05d" % i for i in range(24)], "b": ["2%05d" % i for i in range(24)]})
    try:
        pair = bench_net.TrunkPair(main, 0)
        try:
            pair.next_ts = 64000
            pair.add_calls(12)
            for n, ticks in ((12, 100), (24, 50)):   # 64,000..66,000 ms, then new calls from 66,200 ms
                if n > len(pair.calls):
                    pair.add_calls(n - len(pair.calls))
                ts0 = pair.next_ts
                pair.next_ts += 20 * ticks + 200
                plan = pair.seal_ticks(pair.calls[:n], ticks, ts0, 1472)
                got = {}   # (host, call number there, ts16) -> times

                def on_media(client, data, t):
                    if wire.frame_kind(data) == wire.KIND_TRUNK:
                        for call_no, ts16, _s, _e in wire.parse_trunk(data):
                            key = (client is pair.a, call_no, ts16)
                            got[key] = got.get(key, 0) + 1

                for tick in plan:
                    for client, data, _indices in tick:
                        client.sock.sendto(data, main.address)
                    time.sleep(0.002)   # what comes back waits in the clients' 4 MB receive buffers
                bench_net.pump([pair.a, pair.b], lambda: len(got) >= 2 * n * ticks, seconds=30, on_media=on_media)
                expected = {(to_a, c.a_no if to_a else c.b_no, (ts0 + 20 * k) & 0xFFFF)
                            for c in pair.calls[:n] for to_a in (True, False) for k in range(ticks)}
                assert set(got) == expected and set(got.values()) == {1}
            status = main.status()
            assert status["fast_path"] != "C" or status["table_datagrams"] > 0
        finally:
            pair.close()
    finally:
        main.close()


def test_computed_figures_match_the_protocol():
    assert bench_net.upbx_trunk_kbps(1) == 79.6                   # (3 + 4 + 160 + 4 + 28) * 400 / 1000
    assert bench_net.upbx_trunk_kbps(10, 65000) == 67.0
    assert bench_net.iax2_trunk_kbps(10) == 67.84
    assert bench_net.RTP_KBPS == 80.0


def per_datagram(mtu):
    """Trunk entries that fit a datagram of this MTU (docs/protocol.md)."""
    return (mtu - wire.TRUNK_HEADER - wire.MEDIA_TAG) // (wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES)


# `upbx bench --json --quick` with every benchmark but the two long ones, which have tests of their
# own that run them once: handset (test_bench_handset_quick...) and quality (tests/test_quality.py)
SHORT = [name for name in bench.BENCHMARKS if name not in ("handset", "quality", "cluster")]   # cluster: tests/test_cluster_route.py


@pytest.mark.timeout(960)   # the run's own bound (900 s) is for a hang: under load average 20 it took over 240 s
def test_bench_quick_json_has_every_key_with_sane_values():
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "bench", "--json", "--quick"] + SHORT, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    peer_keys = {"rtpengine_calls_per_core", "ratio_vs_rtpengine"}   # only with --peer rtpengine
    assert set(r) == {"machine"} | set(SHORT) | {key for key, name, _f in bench.SUMMARY if name in SHORT} - peer_keys
    assert r["machine"]["cpus"] >= 1
    assert set(r["wan_kbps_per_call"]) == {"1", "2", "5", "10", "30"}
    wan = r["wan"]
    for key in ("wan_kbps_per_call", "wan_kbps_per_call_jumbo"):
        for n, kbps in wan[key].items():
            # measured on the wire: never below the payload itself
            assert 64.0 < kbps < 90.0, (key, n, kbps)
            # every datagram is exactly its header, its entries and its tag: the bytes measured are the
            # framing's for the datagrams and entries that arrived, to the rounding
            assert abs(kbps - wan["framing_" + key][n]) <= 0.02, (key, n, kbps)
            # and the figure computed for one datagram a tick (per 8 calls at 1472 bytes), which a relay
            # that joins ticks' entries in one datagram only lowers: how often it does depends on how
            # busy the machine is, so the floor is what the MTU allows, every datagram as full as it
            # can be (8 entries at 1472 bytes, 396 at 65000), never fewer datagrams than that
            computed = wan[key.replace("wan_", "computed_")][n]
            mtu = 65000 if key.endswith("jumbo") else 1472
            densest = bench_net.upbx_trunk_kbps(per_datagram(mtu), mtu)
            assert densest - 0.02 <= kbps <= computed + 0.02, (key, n, kbps, densest, computed)
    assert r["wan_kbps_per_call"] == wan["wan_kbps_per_call"]
    assert r["wan_kbps_per_call"]["1"] > r["wan_kbps_per_call"]["30"]
    # 8 calls fit a 1472-byte trunk: 10 calls take 2 datagrams a tick, 30 take 4; a jumbo trunk takes 1,
    # never more (a keepalive may add one now and then: +0.25); a busy relay joins ticks' trunks
    # as often as the machine makes it late, so fewer is bounded by the MTU: at most 8 entries a datagram
    for key, expected in (("datagrams_per_tick", {"1": 1, "2": 1, "5": 1, "10": 2, "30": 4}),
                          ("datagrams_per_tick_jumbo", {"1": 1, "2": 1, "5": 1, "10": 1, "30": 1})):
        assert set(r["wan"][key]) == set(expected)
        for n, want in expected.items():
            assert 0 < r["wan"][key][n] <= want + 0.25, (key, n, r["wan"][key][n])
    for n, entries in r["wan"]["entries_per_datagram"].items():
        assert 1 <= entries <= per_datagram(1472), (n, entries)
    assert isinstance(r["relay_calls_per_core"], int) and r["relay_calls_per_core"] > 0
    relay = r["relay"]
    assert r["window_s"] == relay["window_s"] == 1.0
    # the machine: a main host with 2 relay workers (the C path: host/relay_workers.py), else the main host alone
    from upbx.host import fastpath
    assert r["workers"] == (2 if fastpath.native is not None else 1)
    assert isinstance(r["relay_calls_per_machine"], int)
    if r["workers"] > 1:
        assert relay["steps_machine"]
        # each step's calls were shared: one direction of each call relayed by the worker process
        assert all(s["delegated_directions"] >= 1 for s in relay["steps_machine"])
        for step in relay["steps_machine"]:
            assert step["passed"] == (step["loss_pct"] <= 0.1 and step["relay_cpu"] < 0.95
                                      and not step["generator_limited"])
    for shape in ("trunked", "datagram"):   # every step: the frames it sent, what came back, the relay's CPU
        assert relay["steps_" + shape], shape
        for step in relay["steps_" + shape]:
            assert step["frames_sent"] == step["calls"] * 2 * 50 and 0 <= step["frames_relayed"] <= step["frames_sent"]
            assert step["passed"] == (step["loss_pct"] <= 0.1 and step["relay_cpu"] < 0.95
                                      and not step["generator_limited"])
    # one frame a datagram: as many datagrams as frames; trunked: 8 calls a datagram
    assert all(s["datagrams_sent"] == s["frames_sent"] for s in relay["steps_datagram"])
    assert all(s["datagrams_sent"] == 2 * 50 * -(-s["calls"] // 8) for s in relay["steps_trunked"])
    assert r["hop_latency_p99_ms"] >= r["hop_latency_p50_ms"] > 0
    # what the hop's tail is told apart with: the generator's lateness (it waits for each send's due time, so
    # never early) and the relay's collections in the run, by generation
    late = relay["latency_generator_late_ms"]
    assert relay["latency_generator_late_max_ms"] >= late["99"] >= late["50"] >= 0
    assert len(relay["latency_relay_gc_collections"]) == 3 and min(relay["latency_relay_gc_collections"]) >= 0
    # the hypervisor's share of each CPU in the run (/proc/stat's steal): one entry per CPU, a fraction
    assert set(relay["latency_steal"]) == {str(cpu) for cpu in range(os.cpu_count())}
    assert all(0 <= share <= 1 for share in relay["latency_steal"].values())
    assert r["registrations_per_s"] > 0
    assert 0 < r["bytes_per_registered_phone"] < 10 ** 7
    assert r["registrations"]["phones"] > 0
    assert "cpython" in r["codec"]
    # every table renders from these results (the text the command prints without --json)
    for name in SHORT:
        text = bench.TABLES.get(name, lambda result, name=name: bench._table_generic(name, result))(r[name])
        assert text.startswith(name), (name, text[:200])
    assert "IAX2 trunk" in bench.table_wan(r["wan"])
    for case in ("frozen", "mpy"):   # the handset's heap on the 32-bit build (tests/test_handset32.py asserts more)
        assert 0 < r["memory"][case]["import_bytes"] < r["memory"][case]["call_peak_live"]["B1"], r["memory"]


def test_bench_runs_one_benchmark_by_name_and_refuses_unknown_ones():
    # a short one (the wan table's text is checked from real results in the --json test)
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "bench", "handshake", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("machine:") and "\nhandshake" in out.stdout
    assert "codec" not in out.stdout and "wan" not in out.stdout and "registrations" not in out.stdout
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "bench", "nonesuch"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown benchmark" in out.stderr


def test_bench_handset_quick_reports_consistent_figures():
    """`upbx bench handset --json --quick`: a profiled call on the frozen 32-bit image and the perf_bench
    calibration; figures positive and consistent with each other (never a speed threshold)."""
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "bench", "handset", "--json", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    top = json.loads(out.stdout)
    r = top["handset"]
    assert top["esp32_ms_per_tick_p50"] == r["esp32_ms_per_tick_p50"] > 0
    assert top["esp32_ms_worst_tick"] == r["esp32_ms_worst_tick"] > 0
    # the hypervisor's share of each CPU over the profiled call (/proc/stat's steal)
    assert set(r["call_steal"]) == {str(cpu) for cpu in range(os.cpu_count())}
    assert all(0 <= share <= 1 for share in r["call_steal"].values())
    cal = r["calibration"]
    assert cal["benchmarks"] and set(cal["scores"]) == set(cal["benchmarks"])
    ratios = []
    for name in cal["benchmarks"]:
        s = cal["scores"][name]
        assert s["here"] > 0 and s["esp32_240mhz"] >= s["esp32_published_160mhz"] > 0
        assert abs(s["ratio"] - s["here"] / s["esp32_240mhz"]) < 0.01
        # the tick's way: the standard run's score times what 20 ms asleep costs the tick-sized bursts
        assert abs(s["here"] - s["here_back_to_back"] * s["here_bursts_after_sleep"] / s["here_bursts_back_to_back"]) < 0.1
        assert abs(s["ratio_back_to_back"] - s["here_back_to_back"] / s["esp32_240mhz"]) < 0.01
        ratios.append(s["here"] / s["esp32_240mhz"])
    product = 1.0
    for x in ratios:
        product *= x
    assert abs(cal["ratio"] - product ** (1.0 / len(ratios))) < 0.01     # the geometric mean of the listed scores
    assert cal["ratio_min"] <= cal["ratio"] <= cal["ratio_max"] and cal["ratio_back_to_back"] > 0
    # a real call: frames went both ways, some were lost on the way to the profiled handset and concealed
    call = r["call"]
    assert call["frames_received"] > 100 and call["frames_sent"] > 50 and call["lost_by_relay"] > 0
    assert call["frames_suppressed"] > 0                                   # the VAD heard the pauses
    assert r["ticks"] == sum(c["ticks"] for c in r["cases"].values())
    # what else the ticks did: the once-a-second collection (firmware/app.py, _housekeeping), the rest audio only (signalling: the protocol's timers and messages)
    causes = r["ticks_by_cause"]
    assert r["ticks"] == sum(c["ticks"] for c in causes.values())
    assert causes["collection"]["ticks"] >= 3
    assert causes["audio_only"]["ticks"] > r["ticks"] // 2
    # the kernel's count of the thread's CPU time (Linux): no tick is charged more than its wall-clock busy time
    k = r["kernel_clock"]
    assert k is not None and k["cpu_us_worst_tick"] > 0
    assert r["host_us_worst_tick"] <= r["host_wall_us_worst_tick"] == k["wall_us_worst_tick"]
    over = r["ticks_over_worst_target"]
    assert over["ticks"] == sum(over["by_cause"].values()) <= over["of"] == r["ticks"]
    assert all(t["esp32_ms"] > 12.0 for t in over["largest"]) and len(over["largest"]) == min(over["ticks"], 10)
    assert r["esp32_ms_per_tick_p99"] <= r["esp32_ms_per_tick_p999"] <= r["esp32_ms_worst_tick"]
    for name in ("normal", "silence"):
        assert r["cases"][name]["ticks"] > 0, name
    for name, c in r["cases"].items():
        assert 0 < c["host_us_p50"] <= c["host_us_p99"] <= c["host_us_max"] <= r["host_us_worst_tick"], name
        assert 0 <= c["host_io_us_p50"] <= c["host_us_p50"] + c["host_us_max"], name
        assert c["esp32_ms_p50"] <= c["esp32_ms_p99"] <= c["esp32_ms_max"] <= r["esp32_ms_worst_tick"], name
        assert c["esp32_ms_p50_without_io"] <= c["esp32_ms_p50_host_io_scaled"], name
        # the figures as before: everything the handset did scaled by the calibration
        assert abs(c["esp32_ms_p50_host_io_scaled"] - c["host_us_p50"] * cal["ratio"] / 1000) < 0.01, name
    assert 0 < r["host_us_per_tick_p50"] <= r["host_us_per_tick_p99"] <= r["host_us_worst_tick"]
    assert r["esp32_ms_per_tick_p50"] <= r["esp32_ms_per_tick_p99"] <= r["esp32_ms_worst_tick"]
    assert r["esp32_ms_per_tick_p50_range"][0] <= r["esp32_ms_per_tick_p50"] <= r["esp32_ms_per_tick_p50_range"][1]
    assert abs(r["esp32_ms_worst_tick_host_io_scaled"] - r["host_us_worst_tick"] * cal["ratio"] / 1000) < 0.01
    # the estimate: each tick's time but its socket calls scaled, each socket call at the ESP32's cost
    sock = r["esp32_socket_cost"]
    assert sock["sendto_us"] == round(8 * sock["datagram_bytes"] / sock["tx_mbit_s"]) > 0
    assert sock["recv_us"] == round(8 * sock["datagram_bytes"] / sock["rx_mbit_s"]) > 0
    calls = r["socket_calls_per_tick"]
    # every voice frame went out through the timed socket in a profiled tick, but those of the call's first
    # tick (before the first stored one) and of the tick that ended it (kept apart): at most 3 each
    assert calls["sendto_total"] >= call["frames_sent"] - 6
    assert calls["recv_total"] > 0 and calls["sendto_p50"] >= 1
    w = r["esp32_worst_tick"]
    assert abs(r["esp32_ms_worst_tick"] * 1000 - ((w["host_us"] - w["host_socket_us"]) * cal["ratio"] + w["sendto"]
                                                 * sock["sendto_us"] + w["recv"] * sock["recv_us"])) < 10
    assert w["host_us"] <= r["host_us_worst_tick"] and 0 <= w["host_socket_us"] <= w["host_us"]
    cold = r["cold_start"]
    assert 0 < cold["warm_us"] and cold["penalty_us"] == max(cold["after_sleep_us"] - cold["warm_us"], 0)
    assert r["esp32_ms_per_tick_p50_warm_without_io"] <= r["esp32_ms_per_tick_p50_without_io"]
    assert r["esp32_ms_per_tick_p50_warm"] <= r["esp32_ms_per_tick_p50"]
    assert r["esp32_ms_worst_tick_warm"] <= r["esp32_ms_worst_tick"]
    assert r["esp32_ms_per_tick_p50_back_to_back_calibration"] <= r["esp32_ms_worst_tick_back_to_back_calibration"]
    assert r["meets_targets"] == (r["esp32_ms_per_tick_p50"] <= 5.0 and r["esp32_ms_worst_tick"] <= 12.0)
    assert r["meets_targets_host_io_scaled"] == (r["esp32_ms_per_tick_p50_host_io_scaled"] <= 5.0
                                                 and r["esp32_ms_worst_tick_host_io_scaled"] <= 12.0)
    # the warm call: the profiled handset spun between ticks; a call of its own, scaled by the back-to-back ratio
    warm = r["warm"]
    assert warm["ratio"] == cal["ratio_back_to_back"] and warm["ticks"] > 100
    assert warm["ticks"] == sum(c["ticks"] for c in warm["cases"].values()) + warm["cases_other_ticks"]
    assert 0 < warm["host_us_per_tick_p50"] <= warm["host_us_per_tick_p99"] <= warm["host_us_worst_tick"]
    assert warm["cases"]["normal"]["ticks"] > 0 and warm["cases"]["silence"]["ticks"] > 0   # a call with its pauses
    assert warm["esp32_ms_per_tick_p50"] <= warm["esp32_ms_per_tick_p99"] <= warm["esp32_ms_worst_tick"]
    assert r["esp32_ms_per_tick_p50_warm_measured"] == warm["esp32_ms_per_tick_p50"]
    assert r["esp32_ms_worst_tick_warm_measured"] == warm["esp32_ms_worst_tick"]
    assert r["meets_targets_warm_measured"] == (warm["esp32_ms_per_tick_p50"] <= 5.0
                                                and warm["esp32_ms_worst_tick"] <= 12.0)


@pytest.mark.skipif(shutil.which("rtpengine") is None, reason="rtpengine-daemon is not installed (make setup, as root)")
@pytest.mark.timeout(960)
def test_bench_relay_peer_rtpengine_measures_it_in_the_same_run():
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "bench", "relay", "--quick", "--json", "--peer",
                          "rtpengine"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    steps = r["relay"]["steps_rtpengine"]
    assert steps and steps[0]["frames_sent"] == steps[0]["calls"] * 2 * 50
    # rtpengine relayed the plain RTP it was sent, call by call (counted by RTP timestamp at the far side)
    assert steps[0]["frames_relayed"] > 0
    assert isinstance(r["rtpengine_calls_per_core"], int)
    if r["rtpengine_calls_per_core"]:
        assert r["ratio_vs_rtpengine"] == round(r["relay_calls_per_core_datagram"] / r["rtpengine_calls_per_core"], 3)


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed (make setup installs it)")
def test_bench_handset_instruction_counts_are_the_same_however_busy_the_machine(unix32_frozen):
    """`upbx bench handset --instructions` counts instructions with callgrind: the frame's work counted twice, once
    with the other CPU kept busy, gives the same count, and a longer run counts more (never a speed threshold)."""
    from upbx.tools import bench_handset
    quiet = bench_handset.frame_instructions(str(unix32_frozen), frames=(10, 40))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = bench_handset.frame_instructions(str(unix32_frozen), frames=(10, 40))
    finally:
        busy.kill()
        busy.wait()
    assert quiet == loaded > 0
    cal = bench_handset.instruction_calibration(str(unix32_frozen))
    for name in bench_handset.BENCHMARKS:
        b = cal["benchmarks"][name]
        assert b["instructions_per_run"] > 0
        assert abs(b["esp32_ns_per_instruction"] - 1000 * b["esp32_us_per_run"] / b["instructions_per_run"]) < 0.001
    assert (cal["esp32_ns_per_instruction_min"] <= cal["esp32_ns_per_instruction"]
            <= cal["esp32_ns_per_instruction_max"])


def test_the_latency_run_matches_every_frame_that_came_back_with_the_send_that_carried_it():
    """The hop latency's generator keeps what it reads while it sends and matches it after its last send
    (tools/bench_net.py run_trunk_load; docs/benchmarks.md, Session 11): every frame of the run that came back
    has a latency, from the send of the datagram that carried it (never before it), and the counts of
    what came back are the same as when it parsed as it went."""
    calls = 20
    main = bench_net.MainUnderTest({"a": ["1%05d" % i for i in range(calls)],
                                    "b": ["2%05d" % i for i in range(calls)]}, trunk_mtu=1472)
    try:
        pair = bench_net.TrunkPair(main, calls)
        try:
            r = bench_net.run_trunk_load(pair, pair.calls, 1.0, 1472, latency=True)
        finally:
            pair.close()
    finally:
        main.close()
    assert r["sent"] == r["ticks"] * calls * 2 and r["received"] >= 0.99 * r["sent"], r["lost"]
    assert r["rx"][pair.a][2] + r["rx"][pair.b][2] == r["received"]
    assert len(r["latency"]) == len(r["frames"]) == r["received"]   # each frame matched to its send
    assert all(0 < lat < 5 for lat in r["latency"])   # after its send; 5 s only bounds a mismatch by whole runs
    per = -(-calls // 8)   # datagrams a tick, each way
    assert len(r["sends"]) == 2 * per * r["ticks"]
    assert all(0 <= index < len(r["sends"]) for index, _lat in r["frames"])
