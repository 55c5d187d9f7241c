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
    report = profile.report()
    assert report["ticks"] == 5 and report["dropped"] >= 5
    assert len(profile.us) == len(profile.kinds) == len(profile.io_us) == 5


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
