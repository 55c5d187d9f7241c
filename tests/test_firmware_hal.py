"""The unix HAL under the MicroPython unix port: WAV in, WAV out, control lines, log lines; the ESP32 HAL compiles."""
import os
import struct
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
    """A frame every 20 ms from mic_start(); after a stall at most 60 ms (3 frames) + the current one are queued."""
    script = tmp_path / "pacing.py"
    script.write_text(PACING)
    result = subprocess.run([micropython_binary(), str(script), str(ROOT)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "first [True, False, False] waited True burst 4" in result.stdout, result.stdout


def test_esp32_hal_and_audio_compile_for_xtensawin(tmp_path):
    mpy_cross = os.path.join(os.path.dirname(micropython_binary()), "mpy-cross")
    for rel in ("firmware/hal/esp32.py", "firmware/hal/unix.py", "firmware/audio/dsp.py",
                "firmware/audio/plc.py", "firmware/audio/pipeline.py"):
        result = subprocess.run([mpy_cross, "-march=xtensawin", "-o", str(tmp_path / "x.mpy"),
                                 str(ROOT / rel)], capture_output=True, text=True)
        assert result.returncode == 0, (rel, result.stderr)
