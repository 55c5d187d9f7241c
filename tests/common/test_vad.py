"""Silence suppression (firmware/audio/vad.py) under both interpreters: detection, hangover, CN cadence, noise level."""
import math

from firmware.audio import vad
from firmware.audio.dsp import isqrt


def _noise_frame(pcm, rms, state):
    """Uniform pseudo-noise of about rms into pcm; returns the generator state."""
    amp = int(rms * 1.732)
    for i in range(160):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        v = ((state >> 8) % (2 * amp + 1)) - amp if amp else 0
        pcm[2 * i] = v & 0xFF
        pcm[2 * i + 1] = (v >> 8) & 0xFF
    return state


def _tone_frame(pcm, amp, start):
    for i in range(160):
        v = int(amp * math.sin(2 * math.pi * 300 * (start + i) / 8000))
        pcm[2 * i] = v & 0xFF
        pcm[2 * i + 1] = (v >> 8) & 0xFF


def _rms(pcm):
    total = 0
    for i in range(160):
        v = pcm[2 * i] | (pcm[2 * i + 1] << 8)
        if v & 0x8000:
            v -= 0x10000
        total += v * v
    return isqrt(total // 160)


def _db(rms):
    return -20 * math.log10(rms / 32768)


def test_level_byte_is_minus_dbov():
    pcm = bytearray(320)
    for rms, want in ((3277, 20), (328, 40), (104, 50)):
        _noise_frame(pcm, rms, 7)
        level = vad.level_of(vad.frame_energy(pcm))
        assert abs(level - _db(_rms(pcm))) <= 2, (rms, level)
        assert abs(level - want) <= 2
    assert vad.level_of(0) == vad.SILENT_LEVEL


def test_talkspurts_are_voice_silence_is_not_and_the_hangover_keeps_word_endings():
    detector = vad.VoiceActivityDetector()
    pcm = bytearray(320)
    state = 1
    decisions = []
    for n in range(150):  # 1 s background, 1 s talk, 1 s background
        if 50 <= n < 100:
            _tone_frame(pcm, 8000, 160 * n)
        else:
            state = _noise_frame(pcm, 30, state)   # about -61 dBov
        decisions.append(detector.update(pcm))
    assert not any(decisions[5:50])
    assert all(decisions[50:100])
    assert all(decisions[100:100 + vad.HANGOVER_FRAMES])       # the hangover
    assert not any(decisions[100 + vad.HANGOVER_FRAMES + 1:])
    assert detector.voice_frames == 50 + vad.HANGOVER_FRAMES


def test_comfort_noise_frames_start_each_silence_then_every_200_ms_and_on_level_change():
    detector = vad.VoiceActivityDetector()
    pcm = bytearray(320)
    state = 3
    sent = []
    for n in range(100):   # 2 s of steady background
        state = _noise_frame(pcm, 100, state)
        if not detector.update(pcm) and detector.cn_due():
            sent.append((n, detector.level))
    assert sent[0][0] == 0
    gaps = [b[0] - a[0] for a, b in zip(sent, sent[1:])]
    assert gaps and max(gaps) <= vad.CN_REFRESH_FRAMES and len(sent) <= 100 // vad.CN_REFRESH_FRAMES + 3
    assert all(abs(level - 50) <= 3 for _n, level in sent)
    # the room gets 12 dB louder (still no speech): a new level goes out before the next refresh
    before = detector.cn_frames
    for n in range(4):
        state = _noise_frame(pcm, 60, state)  # quieter by about 4.4 dB: not speech
        if not detector.update(pcm):
            detector.cn_due()
    assert detector.cn_frames > before


def test_comfort_noise_plays_at_the_level_it_was_told():
    noise = vad.ComfortNoise()
    pcm = bytearray(320)
    for level in (30, 45, 60):
        noise.fill(pcm, level)
        got = _db(max(1, _rms(pcm)))
        assert abs(got - level) <= 2.5, (level, got)
    first = bytes(pcm)
    noise.fill(pcm, 60)
    assert bytes(pcm) != first  # noise, not a repeated frame


def test_comfort_noise_tables_are_made_on_the_first_fill():
    # a handset whose far end never sends comfort noise never holds the 2.5 KB of tables
    try:
        import gc
        import micropython  # noqa: F401  (MicroPython only: CPython has no heap counter)
    except ImportError:
        return
    gc.collect()
    before = gc.mem_alloc()
    noise = vad.ComfortNoise()
    gc.collect()
    made = gc.mem_alloc() - before
    pcm = bytearray(320)
    noise.fill(pcm, 40)
    gc.collect()
    filled = gc.mem_alloc() - before
    assert made < 256 and filled > 2048 + 512, (made, filled)
    assert abs(_db(max(1, _rms(pcm))) - 40) <= 2.5


def test_no_allocation_per_frame():
    try:
        import gc
        import micropython  # noqa: F401  (MicroPython only: CPython has no heap counter)
    except ImportError:
        return
    detector = vad.VoiceActivityDetector()
    noise = vad.ComfortNoise()
    pcm = bytearray(320)
    _noise_frame(pcm, 100, 5)
    detector.update(pcm)
    noise.fill(pcm, 50)
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(100):
        if not detector.update(pcm):
            detector.cn_due()
        noise.fill(pcm, 50)
    after = gc.mem_alloc()
    gc.enable()
    assert after == before, after - before
