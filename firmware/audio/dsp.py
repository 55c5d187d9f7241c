"""Per-sample kernels over 16-bit PCM buffers, indexed in samples.

The one place the audio path chooses its implementation: `@micropython.viper`
loops over ptr16/ptr8 on MicroPython (an order of magnitude faster than
bytecode, no allocation), plain Python elsewhere. The *_portable functions (in
firmware/audio/dsp_portable.py, reachable here by name) are the same algorithms in
bytecode; both interpreters run them, and the tests check that the viper kernels
agree with them sample for sample.

Buffers are bytearrays (or memoryviews of them) of native-endian int16; every
supported target (ESP32, x86, ARM) is little-endian, so native order is the
wire's PCM order.
"""
from common.compat import MICROPYTHON

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
            return
        # forwards, two samples a 32-bit word where both ends are 4-byte aligned (an ESP32 faults on
        # an unaligned word): the history shifts and frame copies of every tick take half the passes
        da = uint(d) + uint(doff << 1)
        sa = uint(s) + uint(soff << 1)
        k = 0
        if ((da | sa) & 3) == uint(0):
            dw = ptr32(da)
            sw = ptr32(sa)
            words = n >> 1
            while k < words:
                dw[k] = sw[k]
                k += 1
            k = words << 1
        dh = ptr16(da)
        sh = ptr16(sa)
        while k < n:
            dh[k] = sh[k]
            k += 1

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
    def add_ramp(buf, off: int, n: int, d0: int, d1: int):
        p = ptr16(buf)
        for k in range(n):
            v = ((p[off + k] ^ 0x8000) - 0x8000) + d0 + (d1 - d0) * (k + 1) // n
            if v > 32767:
                v = 32767
            elif v < -32768:
                v = -32768
            p[off + k] = v

    @micropython.viper
    def add_tone(dst, off: int, n: int, table, phase: int, inc: int) -> int:
        d = ptr16(dst)
        t = ptr16(table)
        for k in range(off, off + n):
            i = phase >> 14          # 0..1023 over a period; table: its first quarter, 257 entries
            j = i & 255
            if i & 256:
                j = 256 - j
            s = (t[j] ^ 0x8000) - 0x8000
            if i & 512:
                s = 0 - s
            v = ((d[k] ^ 0x8000) - 0x8000) + s
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

    @micropython.viper
    def mono_to_stereo(dst, src, n: int):
        d = ptr16(dst)
        s = ptr16(src)
        for k in range(n):
            v = s[k]
            d[2 * k] = v
            d[2 * k + 1] = v

    @micropython.viper
    def isqrt(n: int) -> int:
        # digit by digit: exact for 0 <= n < 2**32 (plc's energies stay below 2**31)
        if n <= 0:
            return 0
        x = uint(n)
        r = uint(0)
        bit = uint(1) << 30
        while bit > x:
            bit >>= 2
        while bit != uint(0):
            if x >= r + bit:
                x -= r + bit
                r = (r >> 1) + bit
            else:
                r >>= 1
            bit >>= 2
        return int(r)

    @micropython.viper
    def best_lag(buf, ref: int, direction: int, lo: int, hi: int, lag_step: int, n: int, step: int,
                 shift: int, floor: int, wide: int, out) -> int:
        p = ptr16(buf)
        best = 0
        best_score = 0
        lag = lo
        while lag <= hi:
            j = ref + direction * lag
            energy = 0
            corr = 0
            k = 0
            while k < n:
                a = ((p[ref + k] ^ 0x8000) - 0x8000) >> shift
                b = ((p[j + k] ^ 0x8000) - 0x8000) >> shift
                energy += b * b
                corr += a * b
                k += step
            if energy >= floor and corr > 0:
                # isqrt(energy), as above
                x = uint(energy)
                r = uint(0)
                bit = uint(1) << 30
                while bit > x:
                    bit >>= 2
                while bit != uint(0):
                    if x >= r + bit:
                        x -= r + bit
                        r = (r >> 1) + bit
                    else:
                        r >>= 1
                    bit >>= 2
                root = int(r)
                if wide and corr >= (1 << 26):
                    score = corr // ((root >> 4) + 1)
                else:
                    # (corr << 4) // d without overflowing 32 bits: corr = q * d + rem
                    d = root + 1
                    q = corr // d
                    score = (q << 4) + (((corr - q * d) << 4) // d)
                if score > best_score:
                    best = lag
                    best_score = score
            lag += lag_step
        ptr32(out)[0] = best_score
        return best

else:
    # CPython: the bytecode references under the kernels' names (copy is copy_portable), named here
    # once: an import list of the *_portable names would put them all in a handset's heap too
    from firmware.audio import dsp_portable
    for _name in ("copy", "fill", "dot", "peak", "crossfade", "ramp", "add_ramp", "add_tone", "slots32_to_pcm16",
                  "mono_to_stereo", "isqrt", "best_lag"):
        globals()[_name] = getattr(dsp_portable, _name + "_portable")
    del _name

    IMPLEMENTATION = "python"


def __getattr__(name):
    """copy_portable, dot_portable, ...: the bytecode references, imported on first use."""
    if name.endswith("_portable"):
        from firmware.audio import dsp_portable
        return getattr(dsp_portable, name)
    raise AttributeError(name)
