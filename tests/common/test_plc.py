"""Packet loss concealment: pitch, continuation, fade-out, recovery, and the viper kernels."""
import math

from firmware.audio import dsp, plc


def sample(buf, i):
    v = buf[2 * i] | (buf[2 * i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def voiced(n, period, amp=8000):
    """A vowel-like periodic signal: fundamental plus two harmonics."""
    w = 2 * math.pi * n / period
    return int(amp * (math.sin(w) + 0.5 * math.sin(2 * w + 0.3) + 0.25 * math.sin(3 * w + 1.0)) / 1.75)


def frame_of(start, period):
    buf = bytearray(320)
    for i in range(160):
        v = voiced(start + i, period)
        buf[2 * i] = v & 0xFF
        buf[2 * i + 1] = (v >> 8) & 0xFF
    return buf


def feed(c, frames, period, out_samples, first=0):
    out = bytearray(320)
    for f in range(first, first + frames):
        c.good(frame_of(160 * f, period), out)
        out_samples.extend(sample(out, i) for i in range(160))


def snr_db(got, want):
    sig = sum(w * w for w in want)
    err = sum((g - w) * (g - w) for g, w in zip(got, want)) or 1
    return 10 * math.log10(sig / err)


def test_pitch_of_a_periodic_signal_is_found():
    for period in (45, 53, 80, 100, 117):
        hist = bytearray(2 * plc.HISTORY)
        for i in range(plc.HISTORY):
            v = voiced(i, period)
            hist[2 * i] = v & 0xFF
            hist[2 * i + 1] = (v >> 8) & 0xFF
        assert plc.find_pitch(hist) == period, (period, plc.find_pitch(hist))


def test_first_lost_frame_continues_the_waveform():
    c = plc.Concealer()
    got = []
    feed(c, 5, 80, got)
    out = bytearray(320)
    c.lost(out)
    got.extend(sample(out, i) for i in range(160))
    # output runs OVERLAP samples late: sample k of the stream is signal k - OVERLAP
    want = [voiced(k - plc.OVERLAP, 80) for k in range(800, 880)]
    assert c.pitch == 80
    assert snr_db(got[800:880], want) > 15


def test_concealment_fades_out_and_is_silent_after_60_ms():
    c = plc.Concealer()
    got = []
    feed(c, 5, 64, got)
    out = bytearray(320)
    peaks = []
    for _ in range(5):
        c.lost(out)
        peaks.append(dsp.peak(out, 0, 160))
    assert peaks[0] > 6000
    assert peaks[0] >= peaks[1] >= peaks[2] > peaks[3]
    assert peaks[4] == 0          # 80..100 ms into the loss: silence
    assert c.concealed == 5


def test_no_click_at_loss_and_recovery():
    c = plc.Concealer()
    got = []
    feed(c, 5, 71, got)
    out = bytearray(320)
    for _ in range(2):
        c.lost(out)
        got.extend(sample(out, i) for i in range(160))
    feed(c, 3, 71, got, first=7)
    steps = [abs(got[k] - got[k - 1]) for k in range(1, len(got))]
    normal = max(steps[:700])
    assert max(steps) <= normal * 1.6, (max(steps), normal)
    # after the recovery blend the output is the real signal again
    tail = [voiced(k - plc.OVERLAP, 71) for k in range(7 * 160 + 120, 10 * 160)]
    assert got[7 * 160 + 120:] == tail


def test_plc_off_plays_silence_for_lost_frames():
    c = plc.Concealer(enabled=False)
    out = bytearray(320)
    c.good(frame_of(0, 80), out)
    assert out == frame_of(0, 80)   # no delay when off
    c.lost(out)
    assert out == bytearray(320)


def test_silent_history_conceals_with_silence():
    c = plc.Concealer()
    out = bytearray(320)
    c.good(bytearray(320), out)
    c.lost(out)
    assert out == bytearray(320)


def swelling(n, period=80):
    """A voiced sound growing louder (an onset): what extrapolation from the past cannot know."""
    return voiced(n, period, 1500 + 9 * n) if n < 1400 else voiced(n, period, 14100)


def swelling_frame(f):
    buf = bytearray(320)
    for i in range(160):
        v = swelling(160 * f + i)
        buf[2 * i] = v & 0xFF
        buf[2 * i + 1] = (v >> 8) & 0xFF
    return buf


def conceal_one(lost_frames, bridge, frames=10):
    """Play `frames` of the swelling signal, losing lost_frames; the last lost one is bridged
    into its successor if bridge. Returns the output stream, realigned to the signal."""
    c = plc.Concealer()
    out = bytearray(320)
    got = []
    for f in range(frames):
        if f in lost_frames:
            ahead = swelling_frame(f + 1) if bridge and f + 1 < frames and f + 1 not in lost_frames else None
            c.lost(out, ahead)
        else:
            c.good(swelling_frame(f), out)
        got.extend(sample(out, i) for i in range(160))
    return c, got[plc.OVERLAP:]


def test_a_gap_bridged_into_the_next_frame_is_closer_to_the_truth_than_extrapolation():
    want = [swelling(n) for n in range(5 * 160, 7 * 160)]   # the lost frame 5 and the one after
    forward, fgot = conceal_one((5,), False)
    bridged, bgot = conceal_one((5,), True)
    assert forward.bridged == 0 and bridged.bridged == 1 and bridged.concealed == 1
    f_snr, b_snr = snr_db(fgot[800:1120], want), snr_db(bgot[800:1120], want)
    assert b_snr > f_snr + 6 and b_snr > 15, (f_snr, b_snr)


def test_the_frame_after_a_bridged_gap_plays_unmodified_and_without_a_click():
    for lost in ((5,), (4, 5)):               # a single loss, and the last frame of a burst
        c, got = conceal_one(lost, True)
        assert c.bridged == 1 and c.lost_run == 0
        after = [swelling(n) for n in range(960, 1600 - plc.OVERLAP)]
        assert got[960:1600 - plc.OVERLAP] == after, lost      # frames 6.. exactly as received
        steps = [abs(got[k] - got[k - 1]) for k in range(1, 1600 - plc.OVERLAP)]
        normal = max(steps[1200:])            # the loudest stretch, untouched
        assert max(steps) <= normal * 1.2, (lost, max(steps), normal)


def test_a_burst_without_the_next_frame_falls_back_to_extrapolation():
    c, got = conceal_one((4, 5, 6), True)     # 6 lost too: 4 and 5 have nothing to bridge into
    assert c.concealed == 3 and c.bridged == 1   # only 6, which 7 follows, is bridged
    c, got = conceal_one((5, 6), True, frames=7)  # the stream ends: nothing ahead at all
    assert c.bridged == 0 and c.concealed == 2


def test_viper_kernels_match_portable_ones():
    a = bytearray(640)
    for i in range(320):
        v = voiced(i, 37, 30000) if i % 7 else -32768
        a[2 * i] = v & 0xFF
        a[2 * i + 1] = (v >> 8) & 0xFF
    # the viper dot sums in a machine word: its callers shift the samples so the sum stays inside
    # 31 bits (plc.py, vad.py), which 80 full-scale products need shift >= 3 for on a 32-bit port
    for shift in (3, 4):
        assert dsp.dot(a, 10, 50, 160, 2, shift) == dsp.dot_portable(a, 10, 50, 160, 2, shift)
    quiet = bytearray(640)
    for i in range(320):
        v = voiced(i, 37, 2000)
        quiet[2 * i] = v & 0xFF
        quiet[2 * i + 1] = (v >> 8) & 0xFF
    assert dsp.dot(quiet, 10, 50, 160, 1, 0) == dsp.dot_portable(quiet, 10, 50, 160, 1, 0) != 0
    assert dsp.dot(a, 10, 50, 2, 1, 0) == dsp.dot_portable(a, 10, 50, 2, 1, 0)   # unshifted, two products
    assert dsp.peak(a, 0, 320) == dsp.peak_portable(a, 0, 320) == 32768
    b1, b2 = bytearray(a), bytearray(a)
    dsp.crossfade(b1, 3, a, 100, 60)
    dsp.crossfade_portable(b2, 3, a, 100, 60)
    assert b1 == b2
    dsp.ramp(b1, 5, 80, 32768, 6553)
    dsp.ramp_portable(b2, 5, 80, 32768, 6553)
    assert b1 == b2
    for d0, d1 in ((0, -7001), (300, 20000), (-40000, 5)):   # the last two clip
        dsp.add_ramp(b1, 7, 40, d0, d1)
        dsp.add_ramp_portable(b2, 7, 40, d0, d1)
        assert b1 == b2
    dsp.copy(b1, 10, b1, 0, 200)        # overlapping, forwards
    dsp.copy_portable(b2, 10, b2, 0, 200)
    assert b1 == b2
    dsp.copy(b1, 0, b1, 10, 200)        # overlapping, backwards
    dsp.copy_portable(b2, 0, b2, 10, 200)
    assert b1 == b2
    for doff, soff, n in ((0, 2, 159), (1, 3, 80), (2, 1, 7), (1, 0, 1), (3, 3, 0)):   # word by word and not
        dsp.copy(b1, doff, b1, soff, n)
        dsp.copy_portable(b2, doff, b2, soff, n)
        assert b1 == b2, (doff, soff, n)
        dsp.copy(b1, doff, a, soff + 20, n)
        dsp.copy_portable(b2, doff, a, soff + 20, n)
        assert b1 == b2 and b1[2 * doff:2 * (doff + n)] == a[2 * (soff + 20):2 * (soff + 20 + n)], (doff, soff, n)
    slots = bytearray(range(256)) + bytearray(range(256))
    dsp.slots32_to_pcm16(b1, 1, slots, 2, 100)
    dsp.slots32_to_pcm16_portable(b2, 1, slots, 2, 100)
    assert b1 == b2 and b1[2:4] == slots[10:12]
    assert dsp.isqrt(10 ** 8) == 10 ** 4 and dsp.isqrt(99) == 9
    s1, s2 = bytearray(640), bytearray(640)   # a codec board's speaker: the frame into both channels
    dsp.mono_to_stereo(s1, a, 160)
    dsp.mono_to_stereo_portable(s2, a, 160)
    assert s1 == s2 and s1[:4] == a[:2] + a[:2] and s1[-4:] == a[318:320] + a[318:320]


def test_lag_search_and_isqrt_kernels_match_portable_ones():
    from array import array
    for n in (0, 1, 2, 3, 15, 16, 17, 99, 100, 65535, 65536, 10 ** 8, 2 ** 30, 2 ** 31 - 1):
        assert dsp.isqrt(n) == dsp.isqrt_portable(n), n
        r = dsp.isqrt(n)
        assert r * r <= n < (r + 1) * (r + 1), n
    voiced_buf, full, noise = bytearray(800), bytearray(800), bytearray(800)
    x = 7
    for i in range(400):
        v = voiced(i, 53, 30000)
        voiced_buf[2 * i], voiced_buf[2 * i + 1] = v & 0xFF, (v >> 8) & 0xFF
        v = 32767 if i % 2 else -32768   # full scale: corr << 4 would not fit 32 bits
        full[2 * i], full[2 * i + 1] = v & 0xFF, (v >> 8) & 0xFF
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        v = ((x >> 8) & 0xFFFF) - 32768
        noise[2 * i], noise[2 * i + 1] = v & 0xFF, (v >> 8) & 0xFF
    a, b = array("i", [0]), array("i", [0])
    for buf in (voiced_buf, full, noise, bytearray(800)):
        shift = plc._shift(dsp.peak(buf, 0, 400))   # as plc does: every sum inside 31 bits
        for args in ((200, -1, 40, 120, 2, 160, 2, 0, 1), (200, -1, 40, 120, 1, 160, 1, 40000 >> 2 * shift, 1),
                     (10, 1, 40, 120, 1, 40, 1, 10000 >> 2 * shift, 0), (250, -1, 40, 120, 1, 40, 1, 5000, 0),
                     (200, -1, 39, 41, 1, 160, 1, 0, 1), (200, -1, 50, 49, 1, 160, 1, 0, 1),
                     (200, -1, 40, 120, 1, 160, 1, 1 << 28, 1)):   # a floor no lag reaches
            args = args[:7] + (shift,) + args[7:]
            got = dsp.best_lag(buf, *args, a)
            want = dsp.best_lag_portable(buf, *args, b)
            assert (got, a[0]) == (want, b[0]), (args, got, a[0], want, b[0])
    assert dsp.best_lag(voiced_buf, 200, -1, 40, 120, 1, 160, 1, 4, 0, 1, a) == 53 and a[0] > 0   # the period
    assert dsp.best_lag(bytearray(800), 200, -1, 40, 120, 1, 160, 1, 0, 1, 1, a) == 0 and a[0] == 0
