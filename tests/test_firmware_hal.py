"""The unix HAL under the MicroPython unix port: WAV in, WAV out, control lines, log lines; the ESP32 HAL compiles."""
import json
import os
import struct
import time
import subprocess
import wave

from tests.support import ROOT, micropython_binary

SCRIPT = r'''
import sys
import time
sys.path.insert(0, sys.argv[1])
from firmware.hal import unix
hal = unix.Hal(source=sys.argv[2], sink=sys.argv[3])
pcm = bytearray(320)
hal.mic_start()
n = 0
while n < 10:  # the microphone is a clock: a frame every 20 ms
    if hal.read_frame(pcm):
        hal.write_frame(pcm)
        n += 1
    else:
        time.sleep_ms(2)
got = []
while True:
    k = hal.poll_keys()
    if k is None:
        if hal.control_closed:
            break
        continue
    got.append(k)
hal.display("ringing", "201")
hal.log("I", "test", "keys %s" % ",".join(got))
hal.close()
'''


def test_unix_hal_copies_wav_and_reads_control_lines(tmp_path):
    src = tmp_path / "in.wav"
    with wave.open(str(src), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<1000h", *range(-500, 500)))
    out = tmp_path / "out.wav"
    script = tmp_path / "hal.py"
    script.write_text(SCRIPT)
    result = subprocess.run([micropython_binary(), str(script), str(ROOT), str(src), str(out)],
                            input="!call 201\n12#\n!hangup\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "I display ringing 201" in result.stdout
    assert "I test keys !call 201,1,2,#,!hangup" in result.stdout
    with wave.open(str(out), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (8000, 1, 1600)
        samples = struct.unpack("<1600h", w.readframes(1600))
    assert list(samples[:1000]) == list(range(-500, 500)) and set(samples[1000:]) == {0}


def test_tone_source_hums_at_its_frequency(tmp_path):
    out = tmp_path / "tone.wav"
    script = tmp_path / "hal.py"
    script.write_text(SCRIPT)
    subprocess.run([micropython_binary(), str(script), str(ROOT), "tone:1000", str(out)],
                   input="", capture_output=True, text=True, timeout=30, check=True)
    with wave.open(str(out), "rb") as w:
        samples = struct.unpack("<1600h", w.readframes(1600))
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if a < 0 <= b)
    assert 199 <= crossings <= 201     # 1000 Hz for 0.2 s


PACING = r'''
import sys
import time
sys.path.insert(0, sys.argv[1])
from firmware.hal import unix
hal = unix.Hal(source="tone:1000", control=open("/dev/null"))
pcm = bytearray(320)
hal.mic_start()
first = [hal.read_frame(pcm) for _ in range(3)]     # one frame at once, then none until 20 ms passed
start = hal.ticks_ms()
while not hal.read_frame(pcm):
    time.sleep_ms(1)
waited = hal.ticks_diff(hal.ticks_ms(), start)
time.sleep_ms(300)                                  # a stalled loop
burst = 0
while hal.read_frame(pcm):
    burst += 1
print("first", first, "waited", waited >= 15, "burst", burst)
'''


def test_unix_microphone_is_paced_like_a_dma_queue(tmp_path):
    """A frame every 20 ms from mic_start(); after a stall at most 200 ms (10 frames) + the current one are queued."""
    script = tmp_path / "pacing.py"
    script.write_text(PACING)
    result = subprocess.run([micropython_binary(), str(script), str(ROOT)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "first [True, False, False] waited True burst 11" in result.stdout, result.stdout


STOPPED = r'''
import sys
import time
sys.path.insert(0, sys.argv[1])
from firmware.hal import unix
hal = unix.Hal(source="tone:1000", control=open("/dev/null"))
pcm = bytearray(320)
before = hal.read_frame(pcm)
hal.mic_start()
during = hal.read_frame(pcm)
hal.mic_stop()
time.sleep_ms(60)
after = hal.read_frame(pcm)
print("before", before, "during", during, "after", after)
'''


def test_unix_microphone_gives_no_frame_outside_mic_start_and_mic_stop(tmp_path):
    """A call's first frame is read after its Connected event started the call's timestamps: a frame
    read in the loop's pass that connected the call, before that, went out with the last call's
    timestamp (a duplicate timestamp 0, seen under load in tests/test_nat.py)."""
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED)
    result = subprocess.run([micropython_binary(), str(script), str(ROOT)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "before False during True after False" in result.stdout, result.stdout


def test_esp32_hal_and_audio_compile_for_xtensawin(tmp_path):
    mpy_cross = os.path.join(os.path.dirname(micropython_binary()), "mpy-cross")
    for rel in ("firmware/hal/esp32.py", "firmware/hal/unix.py", "firmware/audio/dsp.py",
                "firmware/audio/plc.py", "firmware/audio/pipeline.py"):
        result = subprocess.run([mpy_cross, "-march=xtensawin", "-o", str(tmp_path / "x.mpy"),
                                 str(ROOT / rel)], capture_output=True, text=True)
        assert result.returncode == 0, (rel, result.stderr)


# --- the ESP32 HAL against stand-ins for machine, network and ssd1306 (tests/esp32_standins) -------
# Nothing here has run on an ESP32: the stand-ins model what MicroPython v1.28's ports/esp32 does
# (cited in their docstrings), and these tests check what the HAL asks of them.

STANDINS = ROOT / "tests" / "esp32_standins"


def run_standin(tmp_path, body, *args, stdin=None, timeout=60):
    """Run `body` under the unix port with the stand-ins first on the path; returns (result, trace)."""
    script = tmp_path / "standin.py"
    script.write_text("import sys\nsys.path.insert(0, %r)\nsys.path.insert(1, %r)\nimport machine\n"
                      "try:\n%s\nfinally:\n    machine.dump(%r)\n"
                      % (str(STANDINS), str(ROOT), "\n".join("    " + l for l in body.strip().splitlines()),
                         str(tmp_path / "trace.jsonl")))
    result = subprocess.run([micropython_binary(), "-X", "heapsize=4M", str(script)] + list(args), input=stdin,
                            capture_output=True, text=True, timeout=timeout)
    trace_file = tmp_path / "trace.jsonl"
    trace = [json.loads(l) for l in trace_file.read_text().splitlines()] if trace_file.exists() else []
    return result, trace


def board(name):
    return json.loads((ROOT / "boards" / (name + ".json")).read_text())


WIFI = r'''
import json, time
import network
from firmware.hal import esp32
hal = esp32.Hal(json.loads(%r), ("shop", "pw"))
wlan = network.WLAN_OBJ
network.AUTO_IP = 0
ups = [hal.network_up() for _ in range(20)]          # boot: one connect(), then it is connecting
machine.note("step", "boot", ups.count(True), wlan.connects)
wlan.got_ip()
machine.note("step", "up", hal.network_up(), wlan.connects)
for reason, ms in ((network.STAT_NO_AP_FOUND, 6000), (network.STAT_WRONG_PASSWORD, 300),
                   (network.STAT_BEACON_TIMEOUT, 300)):
    wlan.lose(reason)                                 # MicroPython reconnects by itself: hands off,
    end = time.ticks_add(time.ticks_ms(), ms)         # longer than the 5 s between joins
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        hal.network_up()
        time.sleep_ms(20)
    machine.note("step", "lost %%d" %% reason, hal.network_up(), wlan.connects)
wlan.got_ip()
machine.note("step", "back", hal.network_up(), wlan.connects)
wlan.disconnect()                                     # nothing trying any more (status IDLE): join again
start = time.ticks_ms()
while wlan.connects == 1:
    hal.network_up()
    time.sleep_ms(50)
machine.note("step", "rejoined", time.ticks_diff(time.ticks_ms(), start), wlan.connects)
'''


def test_esp32_wifi_connects_once_and_then_only_watches_status(tmp_path):
    result, trace = run_standin(tmp_path, WIFI % json.dumps(board("esp32-devkitc-inmp441")))
    assert result.returncode == 0, result.stdout + result.stderr
    steps = {e[1]: e[2:] for e in trace if e[0] == "step"}
    assert steps["boot"] == [0, 1]                    # 20 polls while connecting: one connect()
    assert steps["up"] == [True, 1]
    for reason in (201, 202, 200):                    # no AP, wrong password, beacon timeout: no connect()
        assert steps["lost %d" % reason] == [False, 1], steps
    assert steps["back"] == [True, 1]
    waited, connects = steps["rejoined"]
    assert connects == 2 and waited <= 5500           # STAT_IDLE: connect() again, at most every 5 s
    assert ["wifi_internal_error"] not in trace
    assert "W wifi not connected: no AP found (MicroPython retries)" in result.stdout
    assert "W wifi not connected: wrong password (MicroPython retries)" in result.stdout


KEYS = r'''
import json, time
from firmware.hal import esp32
board = json.loads(%r)
machine.BOARD_PULLUPS.update(%r)
hal = esp32.Hal(board, None)
def keys(ms):
    out = []
    end = time.ticks_add(time.ticks_ms(), ms)
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        k = hal.poll_keys()
        if k is not None:
            out.append(k)
        time.sleep_ms(5)
    return out
machine.note("keys", "idle", keys(100))
machine.KEYS_DOWN.update(%r)
machine.BUTTONS_DOWN.update(%r)
machine.note("keys", "held", keys(100))
machine.KEYS_DOWN.clear()
machine.BUTTONS_DOWN.clear()
machine.note("keys", "released", keys(100))
'''


def test_esp32_keypad_rows_are_open_drain_so_two_keys_in_a_column_short_nothing(tmp_path):
    b = board("esp32-devkitc-inmp441")
    rows, cols = b["keypad"]["rows"], b["keypad"]["cols"]
    held = [(rows[0], cols[0]), (rows[1], cols[0])]   # "1" and "4": one column, two rows
    result, trace = run_standin(tmp_path, KEYS % (json.dumps(b), [], held, []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [e for e in trace if e[0] == "pin" and e[1] in rows] == [["pin", r, 7, -1, 1] for r in rows]  # OPEN_DRAIN
    assert not [e for e in trace if e[0] == "short"], [e for e in trace if e[0] == "short"]
    keys = {e[1]: e[2] for e in trace if e[0] == "keys"}
    assert keys == {"idle": [], "held": ["1"], "released": []}


def test_esp32_buttons_honour_their_pull_and_report_presses(tmp_path):
    b = board("esp32-a1s-audiokit")                   # no keypad: six buttons, KEY1 (GPIO36) push-to-talk
    buttons = {k["name"]: k for k in b["keys"]}
    board_pulled = [k["pin"] for k in b["keys"] if k.get("pull") == "none"]   # the board's resistors
    result, trace = run_standin(tmp_path, KEYS % (json.dumps(b), board_pulled, [], [buttons["key3"]["pin"]]))
    assert result.returncode == 0, result.stdout + result.stderr
    pins = {e[1]: e for e in trace if e[0] == "pin"}
    for k in b["keys"]:
        if k["kind"] == "button":                       # "up": the internal pull-up; "none": no pull
            assert pins[k["pin"]][3] == (2 if k["pull"] == "up" else None), (k, pins[k["pin"]])
    keys = {e[1]: e[2] for e in trace if e[0] == "keys"}
    # nothing while idle (a button without its pull would float low and read as held), one press
    assert keys == {"idle": [], "held": ["!button key3"], "released": []}


STEREO = r'''
import json
from firmware.hal import esp32
hal = esp32.Hal(json.loads(%r), None)
written = []
class Tap:   # the speaker's I2S write, kept
    def write(self, buf):
        written.append(bytes(buf))
        return len(buf)
hal._tx = Tap()
pcm = bytearray(320)
for i in range(320):
    pcm[i] = (i * 37 + 11) & 0xFF
hal.write_frame(pcm)
out = written[0]
machine.note("stereo", len(out), all(out[4 * i:4 * i + 2] == pcm[2 * i:2 * i + 2] == out[4 * i + 2:4 * i + 4]
                                     for i in range(160)))
'''


def test_esp32_codec_board_speaker_gets_the_frame_in_both_channels(tmp_path):
    b = board("esp32-lyrat-v4.3")                     # ES8388: the speaker's I2S is stereo
    assert b["i2s_speaker"].get("format") == "stereo"
    result, trace = run_standin(tmp_path, STEREO % json.dumps(b))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ["stereo", 640, True] in trace


DEVICE = r'''
import json
from firmware import start
from firmware.hal import esp32

def make_hal(config, booted=None):
    hal = esp32.Hal(json.loads(%r), ("shop", "pw"), watchdog_ms=10000)
    send, mic_start, mic_stop, speaker_start = hal.sendto, hal.mic_start, hal.mic_stop, hal.speaker_start
    def sendto(sock, data, addr):  # what the loop sends, in the same trace as the devices
        machine.note("send", len(data), data[0] & 0x80 == 0)
        return send(sock, data, addr)
    def traced_mic_start():
        machine.note("mic_start")
        mic_start()
    def traced_mic_stop():
        machine.note("mic_stop")
        mic_stop()
    def traced_speaker_start():
        machine.note("speaker_start")
        speaker_start()
    hal.sendto, hal.mic_start, hal.mic_stop, hal.speaker_start = (sendto, traced_mic_start, traced_mic_stop,
                                                                  traced_speaker_start)
    return hal

start.make_hal = make_hal
start.main()
'''


def test_esp32_hal_audio_timing_display_console_and_reset_in_a_real_call(tmp_path):
    """The real firmware (start.main, App) with the ESP32 HAL on stand-ins, answering a call from a
    virtual handset through real hosts; the trace shows what the HAL did, in order."""
    from tests.test_handset import Handset
    from upbx.tools.lab import LoopbackExchange
    with LoopbackExchange() as lab:
        lab.provision()
        lab.start()
        host, port = lab.host_of("301").split(":")
        config = tmp_path / "upbx_config.json"
        config.write_text(json.dumps({"version": 1, "host": host, "port": int(port), "extension": "301",
                                      "secret": lab.secrets["301"], "bind": "127.0.0.1",
                                      "sysinfo_file": str(tmp_path / "sysinfo.json"),
                                      "script": {"answer": True}}))
        body = DEVICE % json.dumps(board("esp32-devkitc-inmp441"))
        script = tmp_path / "standin.py"
        script.write_text("import sys\nsys.path.insert(0, %r)\nsys.path.insert(1, %r)\nimport machine\n"
                          "try:\n%s\nfinally:\n    machine.dump(%r)\n"
                          % (str(STANDINS), str(ROOT), "\n".join("    " + l for l in body.strip().splitlines()),
                             str(tmp_path / "trace.jsonl")))
        log = open(tmp_path / "device.log", "w")
        device = subprocess.Popen([micropython_binary(), "-X", "heapsize=4M", str(script), str(config)],
                                  stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            lab.wait_registered("301", timeout=15)
            caller = Handset(lab, "302", "--send", "tone:440", "--call", "301", "--call-after", "0.5",
                             "--duration", "2", "--exit-after-call", tag="esp32-302")
            assert caller.proc.wait(25) == 0
            device.stdin.write(b"!state\n")   # the console, read from stdin
            device.stdin.flush()
            deadline = time.time() + 10
            while "I state {" not in (tmp_path / "device.log").read_text():
                assert time.time() < deadline, (tmp_path / "device.log").read_text()
                time.sleep(0.05)
            device.stdin.write(b"!reset\n")
            device.stdin.flush()
            assert device.wait(10) == 5, (tmp_path / "device.log").read_text()   # machine.reset()
        finally:
            if device.poll() is None:
                device.kill()
    out = (tmp_path / "device.log").read_text()
    trace = [json.loads(l) for l in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert "I phone connected" in out and "call ended: normal clearing" in out, out
    assert trace[-1] == ["reset"] and "W phone machine.reset() (reset)" in out

    # the watchdog: made first, fed on every audio pass of the loop (each tick); then the CPU at 240 MHz (it boots at 160)
    assert trace[0] == ["wdt", 10000] and trace[1] == ["freq", 240000000]
    feeds = sum(1 for e in trace if e == ["feed"])
    assert feeds >= 100, feeds
    # I2S buffers sized for latency: mic 4096 B = 2 DMA buffers (64 ms), speaker 2048 B = 4 (128 ms)
    assert ["i2s", 0, "rx", 32, 0, 4096, 2] in trace and ["i2s", 1, "tx", 16, 0, 2048, 4] in trace
    # the microphone: asyncio mode before its first read; never a blocking read, never more than a
    # frame's worth (160 samples x 4 bytes) asked for
    first_read = next(i for i, e in enumerate(trace) if e[0] == "read")
    assert ["asyncio", 0] in trace[:first_read]
    reads = [e for e in trace if e[0] == "read"]
    assert not [e for e in trace if e[0] == "blocked"]
    assert all(e[2] <= 640 and e[4] for e in reads), [e for e in reads if e[2] > 640 or not e[4]][:3]
    assert any(e[3] < e[2] for e in reads)              # the driver had less than asked: it gave what it had
    # call start: the stale microphone audio is drained (read until empty) before the first frame goes out
    m = trace.index(["mic_start"])
    after = trace[m + 1:]
    drained = 0
    for e in after:
        if e[0] != "read":
            break
        drained += e[3]
        if e[3] == 0:
            break
    # (how much was stale depends on how long the stand-in's DMA ran before: a busy machine's timing,
    # not the firmware's; what the firmware controls is reading until the driver has nothing left)
    assert e[0] == "read" and e[3] == 0 and drained > 0, (drained, after[:8])
    first_media = next(i for i, e in enumerate(after) if e[0] == "send" and e[2])
    # the loop's poller watches the microphone (it wakes the loop when the DMA has audio) while the
    # call is up, and only then: outside calls nobody reads it, so a poller would find it always ready
    stop = trace.index(["mic_stop"])
    polls = [i for i, e in enumerate(trace) if e == ["poll", 0]]
    assert polls and all(m < i < stop for i in polls), (m, stop, polls[:3], polls[-3:])
    assert all(e[0] != "send" or not e[2] for e in after[:first_media])
    # the speaker: each start (the ringer, here) writes two frames of silence before the first frame
    for s in [i for i, e in enumerate(trace) if e == ["speaker_start"]]:
        writes = [e for e in trace[s + 1:] if e[0] == "write"][:3]
        assert writes[:2] == [["write", 1, 320, True]] * 2 and writes[2][:3] == ["write", 1, 320], writes
    assert trace.count(["speaker_start"]) >= 1
    # the display: at most one refresh per loop iteration, never between a frame's read and its send
    iteration_shows = [0]
    for e in trace:
        if e == ["feed"]:
            iteration_shows.append(0)
        elif e[0] == "show":
            iteration_shows[-1] += 1
    assert max(iteration_shows) == 1
    shows = [e[1] for e in trace if e[0] == "show"]
    assert any("ringing" in s for s in shows) and any("connected" in s for s in shows), shows
    # within an iteration, the refresh comes after the microphone's frames are read and sent
    shown = False
    for e in trace:
        if e == ["feed"]:
            shown = False
        elif e[0] == "show":
            shown = True
        elif e[0] in ("read", "send") and shown:
            assert e[0] != "send" or not e[2], "a media frame sent after the display refreshed"
            assert e[0] != "read" or not e[3], "a microphone read after the display refreshed"
