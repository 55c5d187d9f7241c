"""Per-sample kernels over 16-bit PCM buffers, indexed in samples.

The one place the audio path chooses its implementation: `@micropython.viper`
loops over ptr16/ptr8 on MicroPython (an order of magnitude faster than
bytecode, no allocation), plain Python elsewhere. The *_portable functions are
the same algorithms in bytecode; both interpreters run them, and the tests check
that the viper kernels agree with them sample for sample.

Buffers are bytearrays (or memoryviews of them) of native-endian int16; every
supported target (ESP32, x86, ARM) is little-endian, so native order is the
wire's PCM order.
"""
from common.compat import MICROPYTHON


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


def add_tone_portable(dst, off, n, table, phase, inc):
    """Add n samples (from off) of a 1024-entry int16 table oscillator into dst; returns the new phase.

    phase and inc are 24-bit fixed point (the table index is phase >> 14)."""
    for k in range(off, off + n):
        v = _get(dst, k) + table[phase >> 14]
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


def isqrt(n):
    """Integer square root (floor) of a non-negative int, without floats."""
    if n <= 0:
        return 0
    x = n
    y = (x + 1) >> 1
    while y < x:
        x = y
        y = (x + n // x) >> 1
    return x


if MICROPYTHON:
    import micropython

    IMPLEMENTATION = "viper"

    @micropython.viper
    def copy(dst, doff: int, src, soff: int, n: int):
        d = ptr16(dst)
        s = ptr16(src)
        if int(d) == int(s) and doff > soff:
            k = n - 1
            while k >= 0:
                d[doff + k] = s[soff + k]
                k -= 1
        else:
            for k in range(n):
                d[doff + k] = s[soff + k]

    @micropython.viper
    def fill(dst, doff: int, n: int, value: int):
        d = ptr16(dst)
        for k in range(doff, doff + n):
            d[k] = value

    @micropython.viper
    def dot(buf, i: int, j: int, n: int, step: int, shift: int) -> int:
        p = ptr16(buf)
        s = 0
        k = 0
        while k < n:
            a = ((p[i + k] ^ 0x8000) - 0x8000) >> shift
            b = ((p[j + k] ^ 0x8000) - 0x8000) >> shift
            s += a * b
            k += step
        return s

    @micropython.viper
    def peak(buf, off: int, n: int) -> int:
        p = ptr16(buf)
        m = 0
        for k in range(off, off + n):
            v = (p[k] ^ 0x8000) - 0x8000
            if v < 0:
                v = 0 - v
            if v > m:
                m = v
        return m

    @micropython.viper
    def crossfade(dst, doff: int, src, soff: int, n: int):
        d = ptr16(dst)
        s = ptr16(src)
        den = n + 1
        for k in range(n):
            w = k + 1
            a = (d[doff + k] ^ 0x8000) - 0x8000
            b = (s[soff + k] ^ 0x8000) - 0x8000
            d[doff + k] = (a * (den - w) + b * w) // den

    @micropython.viper
    def ramp(buf, off: int, n: int, g0: int, g1: int):
        p = ptr16(buf)
        for k in range(n):
            g = g0 + (g1 - g0) * k // n
            v = (p[off + k] ^ 0x8000) - 0x8000
            p[off + k] = (v * g) >> 15

    @micropython.viper
    def add_tone(dst, off: int, n: int, table, phase: int, inc: int) -> int:
        d = ptr16(dst)
        t = ptr16(table)
        for k in range(off, off + n):
            v = ((d[k] ^ 0x8000) - 0x8000) + ((t[phase >> 14] ^ 0x8000) - 0x8000)
            if v > 32767:
                v = 32767
            elif v < -32768:
                v = -32768
            d[k] = v
            phase = (phase + inc) & 0xFFFFFF
        return phase

    @micropython.viper
    def slots32_to_pcm16(dst, doff: int, src, soff: int, n: int):
        d = ptr16(dst)
        s = ptr16(src)
        for k in range(n):
            d[doff + k] = s[2 * (soff + k) + 1]

else:
    IMPLEMENTATION = "python"
    copy = copy_portable
    fill = fill_portable
    dot = dot_portable
    peak = peak_portable
    crossfade = crossfade_portable
    ramp = ramp_portable
    add_tone = add_tone_portable
    slots32_to_pcm16 = slots32_to_pcm16_portable
