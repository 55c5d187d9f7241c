"""The per-frame audio path and I2S re-blocking: what goes in the mic comes out the far speaker."""
import math

from common import g711
from firmware.audio import dsp, jitter, pipeline, reblock


def sine_frame(start, hz=400, amp=8000):
    buf = bytearray(320)
    for i in range(160):
        v = int(amp * math.sin(2 * math.pi * hz * (start + i) / 8000))
        buf[2 * i] = v & 0xFF
        buf[2 * i + 1] = (v >> 8) & 0xFF
    return buf


def sample(buf, i):
    v = buf[2 * i] | (buf[2 * i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def call(codec, lose=()):
    """Phone A's pipeline encodes 30 frames, phone B's plays them; returns B's speaker samples."""
    a = pipeline.AudioPipeline(codec)
    b = pipeline.AudioPipeline(codec)
    heard = []
    for i in range(30):
        ts = a.encode(sine_frame(160 * i))
        if i not in lose:
            b.receive(ts, a.tx_payload, 20 * i)
        out = b.playout(20 * i + 10)
        if b.last_status != jitter.EMPTY:
            heard.extend(sample(out, k) for k in range(160))
    return a, b, heard


def test_audio_crosses_the_pipeline_through_g711():
    for codec, decode, encode in (("ulaw", g711.ulaw_decode, g711.ulaw_encode),
                                  ("alaw", g711.alaw_decode, g711.alaw_encode)):
        a, b, heard = call(codec)
        assert b.jitter.received == 30 and b.jitter.concealed == 0
        ref = decode(encode(bytes(sine_frame(160 * 10))))
        # B plays frame k at tick k+1 and the concealer's 30-sample delay: compare frame 10
        start = 160 * 9 + 30
        got = heard[start:start + 130]
        assert got == [sample(ref, k) for k in range(130)], codec


def test_timestamps_advance_one_frame_and_wrap():
    p = pipeline.AudioPipeline()
    p.tx_ts = 0xFFFF - 159
    assert p.encode(bytearray(320)) == 0xFFFF - 159
    assert p.encode(bytearray(320)) == 0
    assert p.tx_payload == bytearray(b"\xff" * 160)   # mu-law silence


def test_lost_frames_are_concealed_not_silent():
    a = pipeline.AudioPipeline()
    b = pipeline.AudioPipeline()
    concealed = []
    for i in range(30):
        ts = a.encode(sine_frame(160 * i))
        if i not in (12, 13):
            b.receive(ts, a.tx_payload, 20 * i)
        out = b.playout(20 * i + 10)
        if b.last_status == jitter.MISSING:
            concealed.append(dsp.peak(out, 0, 160))
    # two lost, and one more while the buffer ran dry and grew by a frame
    assert len(concealed) == b.jitter.concealed >= 2
    assert concealed[0] > 6000 and concealed[1] > 4000


def test_a_lost_frame_whose_successor_is_buffered_is_bridged_and_the_successor_plays_intact():
    for codec, decode, encode in (("ulaw", g711.ulaw_decode, g711.ulaw_encode),
                                  ("alaw", g711.alaw_decode, g711.alaw_encode)):
        a, b, heard = call(codec, lose=(12,))
        assert b.jitter.concealed == 1 and b.concealer.bridged == 1, codec
        # frame 12 played at tick 13; frames 13.. exactly as decoded, from the first sample on
        start = 160 * 12 + 30
        for f in (13, 14, 20):
            ref = decode(encode(bytes(sine_frame(160 * f))))
            at = start + 160 * (f - 12)
            assert heard[at:at + 160] == [sample(ref, k) for k in range(160)], (codec, f)
        gap = heard[start:start + 160]
        assert min(gap) < -6000 and max(gap) > 6000    # a 400 Hz tone through the gap, not a dip


def test_plc_off_plays_silence_for_lost_frames():
    a = pipeline.AudioPipeline(plc_enabled=False)
    b = pipeline.AudioPipeline(plc_enabled=False)
    for i in range(6):
        ts = a.encode(sine_frame(160 * i))
        if i != 3:
            b.receive(ts, a.tx_payload, 20 * i)
        out = b.playout(20 * i + 10)
        if i == 4:
            assert b.last_status == jitter.MISSING and out == bytearray(320)


def test_local_tone_replaces_far_end_audio():
    p = pipeline.AudioPipeline()
    p.tone.start("ringback")
    out = p.playout(0)
    assert p.last_status == jitter.EMPTY and dsp.peak(out, 0, 160) > 10000
    p.tone.stop()
    assert p.playout(20) == bytearray(320)


def test_unknown_codec_is_an_error():
    try:
        pipeline.AudioPipeline("g722")
    except ValueError as exc:
        assert "g722" in str(exc)
    else:
        assert False


def i2s_chunk(first, frames):
    """A 32-bit-slot I2S chunk as an INMP441 gives it: sample n in the top 16 of 24 data bits."""
    chunk = bytearray(4 * frames)
    for k in range(frames):
        v = ((first + k) * 7) & 0xFFFF
        chunk[4 * k + 1] = 0x5A            # low data bits, discarded
        chunk[4 * k + 2] = v & 0xFF
        chunk[4 * k + 3] = v >> 8
    return chunk


def test_32ms_i2s_chunks_become_20ms_frames():
    r = reblock.Reblocker(slot_bytes=4)
    out = bytearray(320)
    got = []
    for c in range(10):                    # 10 x 256 = 2560 samples = 16 frames
        r.push(i2s_chunk(256 * c, 256))
        while r.pop_frame(out):
            got.extend((out[2 * k] | (out[2 * k + 1] << 8)) for k in range(160))
    assert len(got) == 16 * 160
    assert got == [(n * 7) & 0xFFFF for n in range(16 * 160)]
    assert r.available() == 0 and r.overruns == 0


def test_settling_zeros_are_discarded_and_partial_chunks_work():
    r = reblock.Reblocker(slot_bytes=4, settle=300)
    out = bytearray(320)
    r.push(i2s_chunk(0, 256))
    assert not r.pop_frame(out)            # only 0 of 256 samples survived the settle time
    r.push(i2s_chunk(256, 256), 4 * 100)   # the driver filled 100 of 256 slots
    assert r.available() == 256 - 300 + 256 - 156
    assert r.pop_frame(out) is False
    r.push(i2s_chunk(356, 200))
    assert r.pop_frame(out)
    assert (out[0] | (out[1] << 8)) == (300 * 7) & 0xFFFF


def test_overrun_drops_the_oldest_samples():
    r = reblock.Reblocker(slot_bytes=2, capacity=400)
    pcm = bytearray(600)
    for k in range(300):
        pcm[2 * k] = k & 0xFF
        pcm[2 * k + 1] = k >> 8
    r.push(pcm)
    r.push(pcm)
    assert r.overruns == 200 and r.available() == 400
    out = bytearray(320)
    assert r.pop_frame(out)
    assert out[0] | (out[1] << 8) == 200
