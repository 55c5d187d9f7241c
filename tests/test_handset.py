"""The handset as a person uses it: keys, tones, display, console commands, memory, deployment.

Every phone here is the real firmware under the MicroPython unix port (`upbx phone`), driven
through its control channel (stdin lines: keys and `!commands`), against real host daemons
on loopback. Tones are checked in what the speaker played (the --record WAV) with Goertzel.
"""
import json
import os
import shutil
import signal
import subprocess
import time
import wave

import pytest

from firmware.audio.dtmf import goertzel_power
from tests.support import ROOT, micropython_binary
from upbx.tools.lab import LoopbackExchange, frames_heard, place_call, tones_heard, write_noise_wav
from upbx.tools.phone import compiled_tree


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=12) as lab:
        lab.provision()
        lab.start()
        yield lab


class Handset:
    """A virtual handset process with its console (the log file) and keypad (stdin)."""

    def __init__(self, lab, number, *args, tag):
        self.lab, self.tag = lab, tag
        self.wav = lab.path(tag + ".speaker.wav")
        self.proc = lab.phone(number, "--record", self.wav, *args, tag=tag)
        self.log_path = lab.path("phone-%s.log" % tag)

    def press(self, keys):
        self.proc.stdin.write((keys + "\n").encode())
        self.proc.stdin.flush()

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_line(self, text, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log():
                return
            time.sleep(0.05)
        raise AssertionError("no %r in the console of %s:\n%s" % (text, self.tag, self.log()[-2000:]))

    def state(self):
        """`!state` and its `I state {...}` reply."""
        before = self.log().count("I state ")
        self.press("!state")
        deadline = time.time() + 5
        while time.time() < deadline:
            lines = [l for l in self.log().splitlines() if l.startswith("I state ")]
            if len(lines) > before:
                return json.loads(lines[-1][len("I state "):])
            time.sleep(0.05)
        raise AssertionError("no state reply from " + self.tag)

    def quit(self):
        self.press("!reset")
        code = self.proc.wait(10)
        if not os.path.exists(self.lab.path(self.tag + ".summary.json")):   # what the console said instead
            raise AssertionError("%s wrote no summary (exit %s):\n%s" % (self.tag, code, self.log()[-3000:]))
        return self.lab.summary(self.tag)


def test_dial_by_keys_ring_answer_by_key_and_hang_up_by_key(lab):
    callee = Handset(lab, "301", tag="keys-301")
    caller = Handset(lab, "101", tag="keys-101")
    lab.wait_registered("301")
    lab.wait_registered("101")
    caller.press("A")                      # off hook: dial tone
    time.sleep(0.5)
    assert caller.state()["tone"] == "dial"
    caller.press("39")
    caller.press("*")                      # clear: wrong number, back to dial tone
    time.sleep(0.3)
    caller.press("301")
    assert caller.state()["digits"] == "301"
    caller.press("#")                      # send
    callee.wait_line("I display ringing 101 Phone 101")
    ringing = callee.state()
    assert ringing["state"] == "ringing" and ringing["caller"] == "101" and ringing["tone"] == "ringback"
    time.sleep(1.5)                        # the caller hears ring-back, the callee's ringer sounds
    callee.press("5")                      # any key but D answers
    caller.wait_line("I phone connected")
    up = caller.state()
    assert up["state"] == "connected" and up["power_save"] is False
    caller.wait_line("I wifi power save off")
    caller.wait_line("I display connected 301")   # each side shows the other party, not itself
    callee.wait_line("I display connected 101")
    caller.press("B")                      # hold, and take it back: the display names 301 throughout
    caller.wait_line("I display on hold 301")
    caller.press("B")
    caller.wait_line("I phone call resumed")
    caller.wait_line("I display on hold 301\nI phone call resumed\nI display connected 301")
    time.sleep(0.5)
    caller.press("D")                      # on hook
    callee.wait_line("call ended: normal clearing")
    caller.wait_line("I wifi power save on")
    caller_summary, callee_summary = caller.quit(), callee.quit()
    assert caller_summary["calls"][0]["cause"] == "normal clearing"
    assert callee_summary["calls"][0]["from"] == "101" and callee_summary["frames_received"] > 20
    heard = tones_heard(caller.wav)
    assert heard[:2] == ["dial", "ringback"], heard
    assert tones_heard(callee.wav)[:1] == ["ringback"]   # the ringer: ring-back cadence on the speaker
    assert "I display dial 301" in caller.log()


def test_busy_tone_after_a_busy_cause(lab):
    target = Handset(lab, "102", tag="busy-102")         # rings and never answers: it is busy
    first = Handset(lab, "302", tag="busy-302")
    caller = Handset(lab, "301", tag="busy-301")
    for n in ("102", "302", "301"):
        lab.wait_registered(n)
    first.press("102#")
    target.wait_line("I display ringing 302")
    caller.press("102#")
    caller.wait_line("call ended: busy")
    time.sleep(1.5)
    assert caller.state()["tone"] == "busy"
    caller.press("D")                      # on hook silences it
    time.sleep(0.3)
    assert caller.state()["tone"] is None
    for h in (caller, first, target):
        h.quit()
    assert "busy" in tones_heard(caller.wav)
    assert lab.summary("busy-301")["calls"][0]["cause"] == "busy"


def test_reorder_tone_when_the_called_phone_is_unreachable(lab):
    caller = Handset(lab, "101", tag="reorder-101")
    lab.wait_registered("101")
    caller.press("201#")                   # known extension, not registered
    caller.wait_line("call ended: unreachable")
    time.sleep(1.0)
    state = caller.state()
    assert state["tone"] == "reorder" and state["state"] == "idle"
    caller.quit()
    heard = tones_heard(caller.wav)
    assert heard == ["busy"], heard        # 480+620 Hz: reorder is the busy pair at twice the rate
    # the cadence tells them apart: reorder is 250 ms on / 250 ms off (busy: 500 / 500)
    with wave.open(caller.wav) as w:
        data = w.readframes(w.getnframes())
    on = [goertzel_power(data[i:i + 400], 200, 620) > 1e11 for i in range(0, len(data) - 399, 400)]  # 25 ms
    runs, n = [], 0
    for flag in on + [False]:
        if flag:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    assert len(runs) >= 3 and all(8 <= r <= 11 for r in runs[1:-1]), runs


def test_console_call_and_hangup_commands(lab):
    callee = Handset(lab, "302", "--answer", tag="cmd-302")
    caller = Handset(lab, "301", tag="cmd-301")
    lab.wait_registered("302")
    lab.wait_registered("301")
    caller.press("!call 302")
    caller.wait_line("I phone connected")
    caller.press("!hangup")
    caller.wait_line("call ended: normal clearing")
    assert caller.state()["state"] == "idle"
    caller.quit()
    assert callee.quit()["calls"][0]["cause"] == "normal clearing"


def _stop_with_ctrl_c(handset):
    """Ctrl-C to `upbx phone` (what a terminal, tools.cli's SIGTERM and every lab send it): it hands
    the firmware Ctrl-C, which logs out and writes its summary. Returns the console's text."""
    handset.proc.send_signal(signal.SIGINT)
    handset.wait_line("stopped by Ctrl-C")
    handset.proc.wait(30)
    return handset.log()


def test_ctrl_c_ends_the_loop_cleanly(lab):
    handset = Handset(lab, "102", tag="sigint-102")
    handset.wait_line("I phone registered as 102", timeout=30)   # its own login (see below)
    log = _stop_with_ctrl_c(handset)
    summary = lab.summary("sigint-102")
    assert summary["registered"] is True and summary["heap"]["total"] > 0
    assert "Traceback" not in log and "MemoryError" not in log, log[-2000:]


def test_ctrl_c_while_the_garbage_collector_runs_still_logs_out(lab):
    """A handset whose loop spends nearly all its time collecting garbage (the fault "collect"): the
    unix port's SIGINT, raised wherever the C code is, lands in the collector and leaves the heap
    locked, so the handler's first line failed with "memory allocation failed, heap is locked"
    (8 stops of 8 on this machine when `upbx phone` sent the firmware SIGINT, with this fault; now and
    then without it, under load). Ctrl-C from `upbx phone` is raised
    in the loop's next watchdog feed, between two bytecodes, as on a device: every stop logs out."""
    for i in range(3):
        tag = "gc-sigint-102-%d" % i
        handset = Handset(lab, "102", "--fault", "collect 400", tag=tag)
        # its own login line, not the host's list: the last round's 102 may still be listed there
        handset.wait_line("I phone registered as 102", timeout=30)
        handset.wait_line("armed: collect 400")
        time.sleep(0.2 * i)          # a different moment of the loop each time
        log = _stop_with_ctrl_c(handset)
        assert "heap is locked" not in log and "Traceback" not in log, log[-2000:]
        summary = lab.summary(tag)
        assert summary["registered"] is True and summary["heap"]["total"] > 0


# The unix port from PyPI is 64-bit: pointers, dict slots and qstr entries are twice an ESP32's and
# the heap's blocks are 32 bytes, not 16 (the 32-bit figures, an ESP32's, are
# tests/test_handset32.py's). The test runs a 3 s call with the .mpy tree, as a handset loads it,
# with 10 KB above the smallest heap that completes it (docs/handset.md, Memory), and fails when
# the live heap grows by 8 KB.
HEAP = "170K"
PEAK_LIVE_LIMIT = 136 * 1024


def test_a_whole_call_fits_a_small_heap(lab):
    """The real App from .mpy, registered, a 3 s call with audio both ways, under -X heapsize=170K."""
    compiled_tree()  # once, before two phones start from it
    back = lab.path("mem-301.wav")
    write_noise_wav(back, 10, 301)
    record_back = lab.path("mem-back.rx.g711")
    sent_back = lab.path("mem-back.tx.g711")
    row = place_call(lab, "101", "301", "mem", seconds=3,
                     caller_args=("--mpy", "--heapsize", HEAP, "--record-g711", record_back),
                     callee_args=("--mpy", "--heapsize", HEAP, "--send", back, "--record-sent-g711", sent_back))
    assert row["cause"] == "normal clearing" and row["audio_match"]
    # 3 s: a frame each 20 ms sent (or lost by the microphone while the machine stalled the process), and received
    assert row["frames_sent"] + row["mic_frames_lost"] >= 140 and row["frames_received"] >= 0.95 * row["frames_sent"], row
    # frame for frame: the callee's last frames, sent before it heard the caller hang up, may miss it
    assert frames_heard(sent_back, record_back, listener_left_first=True)[0]
    for tag in ("mem-101-301-caller", "mem-101-301-callee"):
        heap = lab.summary(tag)["heap"]
        assert heap["total"] <= 170 * 1024
        assert heap["peak_live"] < PEAK_LIVE_LIMIT, heap
        print("%s: heap %d, peak in use %d (live after collection %d), least free %d" % (
            tag, heap["total"], heap["peak_alloc"], heap["peak_live"], heap["min_free"]))


def test_deployed_firmware_registers_and_calls(lab, tmp_path, monkeypatch):
    """`upbx deploy` onto a virtual handset, then that device directory runs main.py as a handset would."""
    from upbx.tools import build as build_tool
    from upbx.tools import deploy
    from upbx.tools.vhandset import VirtualHandset
    # the unix port cannot load xtensawin native code: the same tree compiled for this machine
    monkeypatch.setattr(build_tool, "MARCH", "x64")
    device = tmp_path / "device"
    host, port = lab.host_of("102").split(":")
    with VirtualHandset(device) as handset:
        config = deploy.make_config("shop-wifi", "pw", "%s:%s" % (host, port), "102", lab.secrets["102"])
        deploy.deploy(handset.link, "esp32-devkitc-inmp441", build_dir=tmp_path / "build", config=config,
                      offline=True, log=lambda *a: None)
    assert json.loads((device / "upbx_config.json").read_text())["extension"] == "102"
    assert (device / "firmware" / "app.mpy").exists() and not (device / "firmware" / "app.py").exists()
    callee = Handset(lab, "101", "--answer", tag="deployed-101")
    lab.wait_registered("101")
    env = dict(os.environ, MICROPYPATH=":.frozen:lib")
    proc = subprocess.Popen([micropython_binary(), "-X", "heapsize=" + HEAP, "main.py"], cwd=device, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lab.wait_registered("102")
        proc.stdin.write(b"101#\n")
        proc.stdin.flush()
        callee.wait_line("I phone connected")
        time.sleep(1.0)
        proc.stdin.write(b"D\n!reset\n")
        proc.stdin.flush()
        out = proc.communicate(timeout=10)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "registered as 102" in out and "connected" in out and "call ended: normal clearing" in out, out
    summary = callee.quit()
    assert summary["calls"][0]["from"] == "102" and summary["calls"][0]["cause"] == "normal clearing"


def test_frozen_image_deployed_with_only_main_py_boots_registers_and_calls(lab, tmp_path, unix32_frozen):
    """`upbx deploy --frozen` onto a virtual handset running the 32-bit frozen image: the packages an
    earlier .mpy deployment left are removed (they would shadow the frozen modules), main.py, board.json
    and the configuration written; the device then boots from main.py alone, registers and calls."""
    from upbx.tools import build as build_tool
    from upbx.tools import deploy
    from upbx.tools.vhandset import VirtualHandset
    device = tmp_path / "device"
    host, port = lab.host_of("102").split(":")
    old = tmp_path / "old"
    build_tool.build(ROOT, old, log=lambda *a: None)   # what an earlier deployment left on the flash
    device.mkdir()
    for package in ("common", "firmware"):
        shutil.copytree(old / package, device / package)
    (device / "firmware" / "app.mpy").write_bytes(b"stale: would shadow the frozen firmware.app")
    with VirtualHandset(device, micropython=unix32_frozen) as handset:
        config = deploy.make_config("shop-wifi", "pw", "%s:%s" % (host, port), "102", lab.secrets["102"])
        said = []
        deploy.deploy_frozen(handset.link, "esp32-devkitc-inmp441", config=config, log=said.append)
    assert sorted(os.listdir(device)) == ["board.json", "main.py", "upbx_config.json"]
    assert (device / "main.py").read_text() == (ROOT / "firmware" / "main.py").read_text()
    assert any("removed /common and /firmware" in line for line in said)
    assert "deploy: not installing ssd1306: the image has the board's packages frozen in" in said
    callee = Handset(lab, "101", "--answer", tag="frozen-101")
    lab.wait_registered("101")
    env = dict(os.environ, MICROPYPATH=":.frozen:lib")
    proc = subprocess.Popen([unix32_frozen, "-X", "heapsize=64K", "main.py"], cwd=device, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lab.wait_registered("102")
        proc.stdin.write(b"101#\n")
        proc.stdin.flush()
        callee.wait_line("I phone connected")
        time.sleep(1.0)
        proc.stdin.write(b"D\n!reset\n")
        proc.stdin.flush()
        out = proc.communicate(timeout=10)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "registered as 102" in out and "call ended: normal clearing" in out, out
    summary = callee.quit()
    assert summary["calls"][0]["from"] == "102" and summary["frames_received"] > 20
