"""Call-progress tones and DTMF: frequencies, cadences, and the Goertzel detector."""
from firmware.audio import dsp, dtmf, tones


def frames(gen, count):
    """Peak of each 20 ms frame the generator writes, and all frames' bytes."""
    pcm = bytearray(320)
    peaks, data = [], bytearray()
    for _ in range(count):
        gen.fill(pcm)
        peaks.append(dsp.peak(pcm, 0, 160))
        data.extend(pcm)
    return peaks, data


def dominant(data, candidates):
    """The two candidate frequencies with the most Goertzel power over the first 400 samples."""
    powers = sorted((dtmf.goertzel_power(data, 400, f), f) for f in candidates)
    return sorted(f for _, f in powers[-2:])


ALL = (350, 440, 480, 620, 697, 770, 852, 941, 1209, 1336, 1477, 1633)


def test_call_progress_tones_have_their_frequency_pairs():
    for name, pair in (("dial", [350, 440]), ("ringback", [440, 480]),
                       ("busy", [480, 620]), ("reorder", [480, 620])):
        g = tones.ToneGenerator()
        g.start(name)
        _, data = frames(g, 3)
        assert dominant(data, ALL) == pair, name


def test_the_quarter_period_table_plays_the_whole_sine():
    # tones keeps the first quarter of a period (257 entries); add_tone reads the rest by symmetry
    import math
    table = tones._SINE
    assert len(table) == 257 and table[0] == 0 and table[256] == int(32767 * tones.LEVEL)
    a, b = bytearray(2048), bytearray(2048)
    step = 1 << 14    # one table position per sample: a whole period in 1024 samples
    assert dsp.add_tone(a, 0, 1024, table, 0, step) == dsp.add_tone_portable(b, 0, 1024, table, 0, step) == 0
    assert a == b
    for i in range(1024):
        got = a[2 * i] | (a[2 * i + 1] << 8)
        got = got - 0x10000 if got & 0x8000 else got
        assert abs(got - 32767 * tones.LEVEL * math.sin(2 * math.pi * i / 1024)) <= 1, i


def test_busy_cadence_is_half_a_second_on_and_off():
    g = tones.ToneGenerator()
    g.start("busy")
    peaks, _ = frames(g, 100)
    on = [p > 1000 for p in peaks]
    assert on == ([True] * 25 + [False] * 25) * 2


def test_ringback_cadence_is_two_seconds_on_four_off():
    g = tones.ToneGenerator()
    g.start("ringback")
    peaks, _ = frames(g, 600)
    on = [p > 1000 for p in peaks]
    assert on == ([True] * 100 + [False] * 200) * 2


def test_reorder_cadence_counts_samples_not_frames():
    g = tones.ToneGenerator()
    g.start("reorder")
    _, data = frames(g, 50)        # one second = two 0.5 s cycles
    on = 0
    for i in range(0, len(data), 2):
        if data[i] or data[i + 1]:
            on += 1
    assert 3950 <= on <= 4000      # 2 x 250 ms on = 4000 samples (minus zero crossings)


def test_dial_tone_is_continuous_without_clipping():
    g = tones.ToneGenerator()
    g.start("dial")
    peaks, _ = frames(g, 50)
    assert min(peaks) > 12000 and max(peaks) <= 16384


def test_every_dtmf_key_is_generated_and_detected():
    for key in "0123456789*#ABCD":
        g = tones.ToneGenerator()
        g.dtmf(key, ms=60)
        _, data = frames(g, 3)
        assert dtmf.detect_dtmf(data, 205) == key, key


def test_dtmf_digit_stops_after_its_duration():
    g = tones.ToneGenerator()
    g.dtmf("5", ms=100)
    peaks, _ = frames(g, 7)
    assert [p > 1000 for p in peaks] == [True] * 5 + [False] * 2
    assert g.name is None


def test_detector_ignores_silence_and_call_progress_tones():
    assert dtmf.detect_dtmf(bytes(410)) is None
    g = tones.ToneGenerator()
    g.start("dial")
    _, data = frames(g, 2)
    assert dtmf.detect_dtmf(data, 205) is None


def test_streaming_detector_reports_each_key_once():
    g = tones.ToneGenerator()
    det = dtmf.DtmfDetector()
    pcm = bytearray(320)
    keys = []
    for key in "19#":
        g.dtmf(key, ms=100)
        for _ in range(10):        # 100 ms tone, 100 ms gap
            g.fill(pcm)
            keys.extend(det.feed(pcm))
    assert keys == ["1", "9", "#"]


def test_unknown_dtmf_key_is_an_error():
    try:
        tones.dtmf_pair("X")
    except ValueError as exc:
        assert "X" in str(exc)
    else:
        assert False, "no error"


def test_tones_does_not_import_the_detector():
    """tones.py (on the handset) knows nothing of dtmf.py (tests and tools): no import cycle."""
    assert not hasattr(tones, "goertzel_power") and not hasattr(tones, "DtmfDetector")
