"""The handset's tick profile (firmware/profile.py): what each tick is counted as, the I/O apart,
the tick that ends the call apart, storage that does not grow. Durations are real (ticks_us),
so the tests assert counts, kinds and orderings, never speeds."""
import socket

from firmware.audio.pipeline import AudioPipeline
from firmware.profile import TickProfile


def frame(k):
    return bytes(((k * 7 + i) & 0x7F) for i in range(160))


def run_call(profile, pipeline, plan, now=0):
    """One loop iteration per tick, as firmware/app.py runs them: each entry of plan is
    (voice sent?, frame k arrives?, ahead: frame k+1 arrives early too?)."""
    for k, (voice, arrives, ahead) in enumerate(plan):
        profile.resume()
        if arrives:
            pipeline.receive((160 * k) & 0xFFFF, frame(k), now)
        if ahead:
            pipeline.receive((160 * (k + 1)) & 0xFFFF, frame(k + 1), now)
        profile.tick()
        pipeline.playout(now)
        profile.classify(voice, pipeline)
        if k == 3:
            profile.collected()
        profile.pause()
        now += 20
    return now


def test_ticks_are_counted_by_what_they_did():
    profile, pipeline = TickProfile(100), AudioPipeline()
    plan = ([(True, True, False)] * 8                                   # voice both ways
            + [(True, False, True), (True, False, False)]               # frame 8 lost, 9 already here: bridged
            + [(False, True, False)] * 5                                # the VAD hears silence
            + [(True, False, False), (True, False, False), (True, True, False)]  # 15, 16 lost: concealed
            + [(True, True, False)] * 4)
    now = run_call(profile, pipeline, plan)
    profile.resume()
    profile.tick()            # the next audio tick finds the call over: the last tick ended it
    profile.pause()
    report = profile.report()
    kinds = report["kinds"]
    # tick 0 buffers (jitter buffer priming: "other"); tick 1 stores nothing yet (tick() is
    # called before the first classify: the window that counts starts at the first audio tick)
    assert report["ticks"] == len(plan) - 1 and report["end"] is not None and report["dropped"] == 0
    assert sum(k["ticks"] for k in kinds.values()) == report["all"]["ticks"] == len(plan) - 1
    concealer = pipeline.concealer
    assert kinds["bridged"]["ticks"] == concealer.bridged >= 1
    assert kinds["concealed"]["ticks"] == concealer.concealed - concealer.bridged >= 1
    assert kinds["silence"]["ticks"] == 5
    assert kinds["other"]["ticks"] >= 1           # the jitter buffer priming
    assert report["with_collection"]["ticks"] == 1
    assert sum(k["collections"] for k in kinds.values()) == 1
    for figures in list(kinds.values()) + [report["all"]]:
        assert 0 <= figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
        assert figures["without_io_p50_us"] <= figures["p50_us"]
        assert figures["io_p50_us"] == 0          # no I/O wrapped here
    assert report["worst"]["us"] == report["all"]["max_us"]
    assert now == 20 * len(plan)


def test_storage_is_fixed_and_extra_ticks_are_dropped():
    profile, pipeline = TickProfile(5), AudioPipeline()
    run_call(profile, pipeline, [(True, True, False)] * 12)
    assert len(profile.us) == len(profile.kinds) == len(profile.io_us) == len(profile.cpu_us) == 5
    report = profile.report()
    assert report["ticks"] == 5 and report["dropped"] >= 5
    # the report is the storage's last use: each array goes once its hex is made (room for the next one's)
    assert profile.us is None and profile.cpu_us is None and len(bytes.fromhex(report["raw"]["us"])) == 10


def test_time_in_socket_calls_is_io():
    profile = TickProfile(10)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    discard = socket.getaddrinfo("127.0.0.1", 9)[0][-1]   # loopback, nobody listening: UDP does not care
    try:
        sock, _, _ = profile.time_io(raw, None, None)
        pipeline = AudioPipeline()
        for k in range(4):
            profile.resume()
            profile.tick()
            for _ in range(20):
                sock.sendto(b"x" * 100, discard)
            pipeline.receive((160 * k) & 0xFFFF, frame(k), 20 * k)
            pipeline.playout(20 * k)
            profile.classify(True, pipeline)
            profile.pause()
        report = profile.report()
        assert report["ticks"] == 3
        assert report["all"]["io_p50_us"] > 0     # twenty system calls take some time
        assert report["all"]["without_io_p50_us"] < report["all"]["p50_us"]
    finally:
        raw.close()


def test_socket_calls_are_counted_apart_and_every_tick_is_reported_raw():
    """The socket's share of the I/O and its calls per tick (what `upbx bench handset` replaces with an
    ESP32's lwIP cost), and the raw per-tick figures the bench combines, equal to the storage."""
    profile = TickProfile(10)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
    here = raw.getsockname() if hasattr(raw, "getsockname") else None
    discard = socket.getaddrinfo("127.0.0.1", 9)[0][-1]
    try:
        sock, _, _ = profile.time_io(raw, None, None)
        pipeline = AudioPipeline()
        sends = (2, 20, 1, 3)   # 20: more than the 4 bits a tick's count keeps
        for k in range(4):
            profile.resume()
            profile.tick()
            for _ in range(sends[k]):
                sock.sendto(b"x" * 100, discard)
            if here is not None and k == 2:
                sock.sendto(b"y" * 10, here)   # to itself, then read back
                assert sock.recv(100) == b"y" * 10
            pipeline.receive((160 * k) & 0xFFFF, frame(k), 20 * k)
            pipeline.playout(20 * k)
            profile.classify(True, pipeline)
            profile.pause()
        profile.resume()
        profile.tick()    # stores the fourth tick (the call ended in it: kept apart, not counted)
        stored = {name: list(getattr(profile, name)) for name in ("us", "io_us", "net_us", "kinds", "net_calls")}
        report = profile.report()   # the storage's last use: read above
        assert report["ticks"] == 3
        n = report["ticks"] + 1   # the stored ticks: the counted ones and the one that ended the call
        calls = stored["net_calls"][:n]
        assert [c & 15 for c in calls] == [2, 15, 2 if here is not None else 1, 3]   # sendto, at most 15 kept
        assert [c >> 4 for c in calls] == [0, 0, 1 if here is not None else 0, 0]  # recv
        for i in range(n):
            assert 0 < stored["net_us"][i] <= stored["io_us"][i] <= stored["us"][i]
        rawf = report["raw"]

        def words(text):
            b = bytes.fromhex(text)
            return [b[j] | b[j + 1] << 8 for j in range(0, len(b), 2)]
        assert words(rawf["us"]) == stored["us"][:report["ticks"]]
        assert words(rawf["net_us"]) == stored["net_us"][:report["ticks"]]
        assert words(rawf["io_us"]) == stored["io_us"][:report["ticks"]]
        assert list(bytes.fromhex(rawf["net_calls"])) == calls[:report["ticks"]]
        assert list(bytes.fromhex(rawf["kinds"])) == stored["kinds"][:report["ticks"]]
    finally:
        raw.close()


def test_the_kernels_count_of_cpu_time_is_kept_per_tick_where_there_is_one():
    """On the unix port under Linux each tick also keeps the CPU time the kernel counted for it (and whether it
    waited runnable): `upbx bench handset` charges a tick no more than that, so a tick in which the process
    was descheduled is not charged for the time it was away. CPython's tests of the report have no such
    count (the parser is viper): the fields stay 0 and the report says so."""
    import sys
    import time
    profile, pipeline = TickProfile(10), AudioPipeline()
    linux_mp = sys.implementation.name == "micropython" and sys.platform == "linux"
    assert (profile.clock is not None) == linux_mp
    spin = 0
    for k in range(4):
        profile.resume()
        profile.tick()
        for i in range(20000 if k == 1 else 10):   # tick 1 works; the kernel brings its count up to date
            spin += i                                # when the thread sleeps (below)
        pipeline.receive((160 * k) & 0xFFFF, frame(k), 20 * k)
        pipeline.playout(20 * k)
        profile.classify(True, pipeline)
        profile.pause()
        if hasattr(time, "sleep_ms"):
            time.sleep_ms(2)
        else:
            time.sleep(0.002)
    profile.resume()
    profile.tick()
    second = profile.cpu_us[1]
    report = profile.report()
    assert report["kernel_clock"] == linux_mp and report["ticks"] == 3
    raw = report["raw"]
    cpu = bytes.fromhex(raw["cpu_us"])
    cpu = [cpu[j] | cpu[j + 1] << 8 for j in range(0, len(cpu), 2)]
    assert len(cpu) == 3
    if linux_mp:
        assert cpu[1] > 0 and cpu[1] == second   # twenty thousand additions take some CPU time
    else:
        assert cpu == [0, 0, 0]
