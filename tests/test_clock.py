"""A clock that wraps: the firmware on the 32-bit build, whose time.ticks_ms() wraps every 2**30 ms.

Phones start their tick counter a few seconds before the wrap (`upbx phone --ticks-start`); the
unix HAL logs "I clock wrapped at speaker frame N" when it happens, so each test knows where in
the phone's life (and in its speaker recording) the wrap fell. The in-memory state machines are
checked across the wrap in tests/common/test_clock_wrap.py (under MicroPython too).
"""
import shutil
import time
import wave

import pytest

from firmware.audio.dtmf import goertzel_power
from tests.support import unix32_binary
from tests.test_handset import Handset
from upbx.tools.demo import run_demo
from upbx.tools.lab import LoopbackExchange

WRAP = 2 ** 30   # the 32-bit build's tick period (the ESP32's)


@pytest.fixture(scope="module")
def unix32():
    return unix32_binary(frozen=False)


def between(log, first, middle, last):
    """Whether the lines first, middle, last appear in the log in that order."""
    a = log.find(first)
    b = log.find(middle, a + 1) if a >= 0 else -1
    c = log.find(last, b + 1) if b >= 0 else -1
    return a >= 0 and b > a and c > b


def test_demo_calls_cross_the_wrap_on_the_32bit_build_and_keep_their_audio(unix32):
    # the wrap comes 5 s after each phone boots, in the middle of its 6 s call: a phone connects 1.5 to
    # 2.5 s after it boots on an idle machine (the callee waits for the caller to boot), up to 4.5 s on
    # a busy one, and hangs up 6 s later, so the wrap falls inside the call either way
    rows, lab = run_demo(6.0, phone_args=["--micropython", unix32, "--ticks-start", str(WRAP - 5000)])
    try:
        for row in rows:
            assert row["audio_match"] and row["cause"] == "normal clearing", row
            assert row["frames_received"] >= 285, row  # 6 s of 20 ms frames, give or take the ends
            tag = "%s-%s-%s" % (row["behaviour"], row["from"], row["to"])
            for side in ("caller", "callee"):
                with open(lab.path("phone-%s-%s.log" % (tag, side))) as f:
                    log = f.read()
                assert between(log, "I phone connected", "I clock wrapped", "I phone call ended"), (tag, side, log)
    finally:
        shutil.rmtree(lab.dir, ignore_errors=True)


def reorder_frames(path):
    """Per 20 ms speaker frame: True where the reorder pair (480 + 620 Hz) dominates."""
    with wave.open(path) as w:
        data = w.readframes(w.getnframes())
    out = []
    for start in range(0, len(data) - 319, 320):
        frame = data[start:start + 320]
        p480, p620 = goertzel_power(frame, 160, 480), goertzel_power(frame, 160, 620)
        others = max(goertzel_power(frame, 160, hz) for hz in (350, 852, 941, 1336, 1477))
        out.append(min(p480, p620) > 1e9 and min(p480, p620) > 10 * others)
    return out


def test_registration_keepalives_and_tone_timers_work_across_the_wrap(unix32):
    # the remote host forgets a phone silent for 3 s: a phone whose keepalives (2 s) stopped at the
    # wrap would be gone 3 s after it
    with LoopbackExchange(remote_settings={"registration_ttl_s": 3}) as lab:
        lab.provision()
        lab.start()
        # 20 s before the wrap: the phone registers in 1 to 2 s (idle machine), 6 s or more at load 15-20
        phone = Handset(lab, "101", "--micropython", unix32, "--ticks-start", str(WRAP - 20000),
                        "--tone-timeout", "2", tag="wrap-101")
        lab.wait_registered("101")
        # dial an unknown number 1.5 s before the wrap: reorder plays 2 s, its stop timer crosses the wrap
        while True:
            ticks = phone.state()["ticks"]
            assert ticks > WRAP // 2, "the phone took more than 18.5 s to register"
            if ticks >= WRAP - 1500:
                break
            time.sleep(0.05)
        phone.press("999#")
        phone.wait_line("I phone call ended: unknown extension")
        phone.wait_line("I clock wrapped")
        deadline = time.time() + 10
        while phone.state()["tone"] is not None:
            assert time.time() < deadline, "the reorder tone did not stop by itself"
            time.sleep(0.1)
        # registration: still there 6 s (three keepalives) after the wrap, never lost, never renewed
        while phone.state()["ticks"] < 6000:
            time.sleep(0.2)
        assert any(p["extension"] == "101" for p in lab.status("site-a")["phones"])
        log = phone.log()
        assert "registration lost" not in log and log.count("registered as 101") == 1, log
        wrap_frame = int(log.split("I clock wrapped at speaker frame ")[1].split()[0])
        summary = phone.quit()
    assert summary["calls"][0]["cause"] == "unknown extension" and summary["calls"][0]["tone"] == "reorder"
    frames = reorder_frames(phone.wav)
    first = frames.index(True)
    # the reorder cadence (0.25 s on, 0.25 s off) before and after the wrap, and the speaker fed only
    # while the tone played: one frame per 20 ms tick for its 2 s, then nothing
    assert sum(frames[first:wrap_frame]) >= 10 and sum(frames[wrap_frame:]) >= 10, (first, wrap_frame, len(frames))
    assert 50 <= len(frames) - first <= 101, (first, len(frames))
