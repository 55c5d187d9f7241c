"""The handset audio and media path allocates nothing per frame and fits an ESP32-sized heap.

Runs the real firmware modules under the MicroPython unix port with a 100 KB
heap: two pipelines (sender and receiver) plus an I2S re-blocker, 100 frames of
warm-up, then 500 frames with the garbage collector disabled: capture -> tone ->
encode -> jitter put (12 % loss) -> get -> decode or conceal. gc.mem_alloc()
must not move. The same for the media legs: 600 frames sealed and opened
(voice, and a comfort-noise frame every tenth; the 16-bit timestamp wraps), 100 of warm-up.
"""
import os
import re
import subprocess

from tests.support import ROOT, micropython_binary

SCRIPT = r'''
import gc, sys
sys.path.insert(0, sys.argv[1])
gc.collect()
start = gc.mem_alloc()
from firmware.audio import pipeline, reblock
gc.collect()
modules = gc.mem_alloc() - start
base = gc.mem_alloc()
a = pipeline.AudioPipeline("ulaw")
b = pipeline.AudioPipeline("alaw" if sys.argv[2] == "alaw" else "ulaw")
mic = reblock.Reblocker(slot_bytes=4, settle=256)
chunk = bytearray(4 * 256)
for k in range(256):
    chunk[4 * k + 3] = (k * 13) & 0x7F
pcm = bytearray(320)
a.tone.start("dial")
b.tone.start("busy")
def frame(i):
    if not mic.pop_frame(pcm):
        mic.push(chunk)
        mic.pop_frame(pcm)
    a.tone.fill(pcm)
    ts = a.encode(pcm)
    if i % 10 != 7 and i % 50 != 8:
        b.receive(ts, a.tx_payload, 20 * i)
    if i == 300:
        b.tone.stop()
    b.playout(20 * i + 10)
for i in range(100):
    frame(i)
objects = gc.mem_alloc() - base
gc.collect()
gc.disable()
m0 = gc.mem_alloc()
for i in range(100, 600):
    frame(i)
grew = gc.mem_alloc() - m0
in_use = gc.mem_alloc()
gc.enable()
print("RESULT grew=%d modules=%d objects=%d in_use=%d heap=%d concealed=%d received=%d" % (
    grew, modules, objects, in_use, gc.mem_alloc() + gc.mem_free(),
    b.jitter.concealed, b.jitter.received))
'''


MEDIA_SCRIPT = r'''
import gc, sys
sys.path.insert(0, sys.argv[1])
from common import media
tx = media.MediaLeg(bytes(range(16)), 0, 7, 9)
rx = media.MediaLeg(bytes(range(16)), 1, 9, 7)
payload = bytearray(160)
for k in range(160):
    payload[k] = (k * 29 + 3) & 0xFF
cn = bytearray(1)
buf = bytearray(168)         # a receiver's datagram buffer, with views of it made once
views = {168: memoryview(buf)[:168], 9: memoryview(buf)[:9]}
voice = memoryview(buf)[4:164]
counts = [0, 0]              # opened, decrypted to the payload sent
def frame(i):
    cn[0] = i & 0x7F
    sealed = tx.seal_mini(20 * i + 60000, cn if i % 10 == 3 else payload)
    n = len(sealed)
    buf[:n] = sealed
    if rx.open_mini(views[n]) == 20 * i + 60000:
        counts[0] += 1
        if (voice == payload) if n == 168 else buf[4] == cn[0]:
            counts[1] += 1
for i in range(100):
    frame(i)
gc.collect()
gc.disable()
m0 = gc.mem_alloc()
for i in range(100, 600):
    frame(i)
grew = gc.mem_alloc() - m0
gc.enable()
print("RESULT grew=%d opened=%d intact=%d rejected=%d" % (grew, counts[0], counts[1], rx.rejected))
'''


def run(tmp_path, codec, source=SCRIPT):
    script = tmp_path / "memcheck.py"
    script.write_text(source)
    result = subprocess.run(
        [micropython_binary(), "-X", "heapsize=100K", str(script), str(ROOT), codec],
        capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    match = re.search(r"RESULT (.*)", out)
    assert match, out
    figures = dict(kv.split("=") for kv in match.group(1).split())
    print("%s: %s" % (codec, match.group(1)))   # shown with pytest -s; quoted in docs/firmware-audio.md
    return {k: int(v) for k, v in figures.items()}


def test_audio_path_allocates_nothing_per_frame_in_a_100k_heap(tmp_path):
    figures = run(tmp_path, "ulaw")
    assert figures["grew"] == 0, figures
    assert figures["concealed"] >= 60 and figures["received"] >= 500, figures
    assert figures["in_use"] < 70 * 1024, figures  # modules compiled from source included


def test_alaw_receiver_allocates_nothing_per_frame(tmp_path):
    figures = run(tmp_path, "alaw")
    assert figures["grew"] == 0, figures


def test_media_frames_are_sealed_and_opened_without_allocating(tmp_path):
    figures = run(tmp_path, "ulaw", MEDIA_SCRIPT)
    assert figures["grew"] == 0, figures
    assert figures["opened"] == figures["intact"] == 600 and figures["rejected"] == 0, figures


def test_frozen_native_media_path_allocates_nothing_per_frame(tmp_path, unix32_frozen):
    """The same on the 32-bit image, whose media path is frozen native code (docs/handset.md, Native code):
    the native emitter builds a slice object on the heap where the bytecode VM does not, so the path
    must not slice."""
    script = tmp_path / "memcheck.py"
    script.write_text(MEDIA_SCRIPT)
    result = subprocess.run([unix32_frozen, "-X", "heapsize=100K", str(script), str(tmp_path), "ulaw"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=dict(os.environ, MICROPYPATH=".frozen"))   # the image's modules, not a checkout's
    match = re.search(r"RESULT (.*)", result.stdout)
    assert result.returncode == 0 and match, result.stdout + result.stderr
    figures = {k: int(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
    assert figures["grew"] == 0, figures
    assert figures["opened"] == figures["intact"] == 600 and figures["rejected"] == 0, figures
