"""The reference kernels of firmware.audio.dsp in plain bytecode, sample by sample.

CPython's audio path runs these (dsp.copy is copy_portable there); on MicroPython the viper
kernels replace them and only the tests (viper against portable, sample for sample) and the
benchmarks import this module, so a handset's heap does not hold both. Indexing is in
samples of native-endian int16.
"""


def _get(buf, i):
    v = buf[2 * i] | (buf[2 * i + 1] << 8)
    return (v ^ 0x8000) - 0x8000


def _put(buf, i, v):
    buf[2 * i] = v & 0xFF
    buf[2 * i + 1] = (v >> 8) & 0xFF


def copy_portable(dst, doff, src, soff, n):
    """dst[doff:doff+n] = src[soff:soff+n] (samples); overlapping ranges allowed."""
    if dst is src and doff > soff:
        rng = range(n - 1, -1, -1)
    else:
        rng = range(n)
    for k in rng:
        dst[2 * (doff + k)] = src[2 * (soff + k)]
        dst[2 * (doff + k) + 1] = src[2 * (soff + k) + 1]


def fill_portable(dst, doff, n, value):
    """Set n samples from doff to value."""
    for k in range(doff, doff + n):
        _put(dst, k, value)


def dot_portable(buf, i, j, n, step, shift):
    """Sum over k = 0, step, 2*step... < n of (x[i+k] >> shift) * (x[j+k] >> shift)."""
    s = 0
    for k in range(0, n, step):
        s += (_get(buf, i + k) >> shift) * (_get(buf, j + k) >> shift)
    return s


def peak_portable(buf, off, n):
    """Largest absolute sample value in n samples from off."""
    m = 0
    for k in range(off, off + n):
        v = _get(buf, k)
        if v < 0:
            v = -v
        if v > m:
            m = v
    return m


def crossfade_portable(dst, doff, src, soff, n):
    """Fade dst out and src in linearly over n samples, in place in dst."""
    d = n + 1
    for k in range(n):
        w = k + 1
        v = (_get(dst, doff + k) * (d - w) + _get(src, soff + k) * w) // d
        _put(dst, doff + k, v)


def ramp_portable(buf, off, n, g0, g1):
    """Scale n samples by a gain going linearly from g0 to g1 (Q15, 32768 = 1.0)."""
    for k in range(n):
        g = g0 + (g1 - g0) * k // n
        _put(buf, off + k, (_get(buf, off + k) * g) >> 15)


def add_ramp_portable(buf, off, n, d0, d1):
    """Add to n samples an offset going linearly from d0 towards d1 (the last sample gets d1), clipped."""
    for k in range(n):
        v = _get(buf, off + k) + d0 + (d1 - d0) * (k + 1) // n
        if v > 32767:
            v = 32767
        elif v < -32768:
            v = -32768
        _put(buf, off + k, v)


def add_tone_portable(dst, off, n, table, phase, inc):
    """Add n samples (from off) of a table oscillator into dst; returns the new phase.

    The table holds the first quarter of a period, 257 int16 entries (0 to pi/2 inclusive); the
    other three quarters are read by symmetry. phase and inc are 24-bit fixed point: phase >> 14
    is the position in the period, 0..1023."""
    for k in range(off, off + n):
        i = phase >> 14
        j = i & 255
        if i & 256:
            j = 256 - j
        v = _get(dst, k) + (-table[j] if i & 512 else table[j])
        if v > 32767:
            v = 32767
        elif v < -32768:
            v = -32768
        _put(dst, k, v)
        phase = (phase + inc) & 0xFFFFFF
    return phase


def slots32_to_pcm16_portable(dst, doff, src, soff, n):
    """Top 16 bits of n little-endian 32-bit I2S slots (from slot soff) into samples from doff."""
    for k in range(n):
        dst[2 * (doff + k)] = src[4 * (soff + k) + 2]
        dst[2 * (doff + k) + 1] = src[4 * (soff + k) + 3]


def mono_to_stereo_portable(dst, src, n):
    """n samples of src into both channels of dst (left, right interleaved: 2n samples)."""
    for k in range(n):
        lo, hi = src[2 * k], src[2 * k + 1]
        dst[4 * k] = dst[4 * k + 2] = lo
        dst[4 * k + 1] = dst[4 * k + 3] = hi


def isqrt_portable(n):
    """Integer square root (floor) of a non-negative int, without floats."""
    if n <= 0:
        return 0
    x = n
    y = (x + 1) >> 1
    while y < x:
        x = y
        y = (x + n // x) >> 1
    return x


def best_lag_portable(buf, ref, direction, lo, hi, lag_step, n, step, shift, floor, wide, out):
    """The lag (lo, lo + lag_step, ... <= hi) whose n samples from ref + direction * lag best match
    the n samples from ref, by normalised correlation; returns 0 when none scores, and puts the
    best score in out[0].

    Every step-th sample counts, shifted right by shift. A lag whose energy is below floor, or
    whose correlation is not positive, scores 0; otherwise its score is (corr << 4) //
    (isqrt(energy) + 1), or with wide, once corr >= 2**26, corr // ((isqrt(energy) >> 4) + 1).
    The first of equal best scores wins."""
    best, best_score = 0, 0
    for lag in range(lo, hi + 1, lag_step):
        j = ref + direction * lag
        energy = dot_portable(buf, j, j, n, step, shift)
        if energy < floor:
            continue
        corr = dot_portable(buf, ref, j, n, step, shift)
        if corr <= 0:
            continue
        if wide and corr >= (1 << 26):
            score = corr // ((isqrt_portable(energy) >> 4) + 1)
        else:
            score = (corr << 4) // (isqrt_portable(energy) + 1)
        if score > best_score:
            best, best_score = lag, score
    out[0] = best_score
    return best
