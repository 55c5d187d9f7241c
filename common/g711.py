"""G.711 mu-law and A-law, bit-exact with ITU-T G.711 (Sun's reference g711.c).

PCM is 16-bit signed little-endian bytes, one G.711 byte per sample. The
encoders quantise the top 14 bits (mu-law) or 13 bits (A-law) of each sample,
as the reference code and CPython's audioop do.

Allocating API:  ulaw_encode(pcm) -> bytes     ulaw_decode(data) -> bytes
                 alaw_encode(pcm) -> bytes     alaw_decode(data) -> bytes
Audio path API:  *_encode_into(pcm, out) and *_decode_into(data, out) write into
a caller's preallocated bytearray or memoryview, return the number of bytes
written (len(pcm) // 2, or 2 * len(data)) and allocate nothing on MicroPython.

One implementation is chosen at import and named by IMPLEMENTATION:
  "viper"   MicroPython: @micropython.viper loops over ptr8 buffers that
            compute the codes and the samples directly (a 64 KiB encode table does
            not fit an ESP32 heap, and no decode table takes any of it).
  "python"  CPython: 64 KiB encode tables read through memoryview casts and
            256-byte decode tables applied with bytes.translate.
The reference algorithms (one sample at a time, bit-exact with the reference code) and the
*_portable buffer loops over them are in common/g711_portable.py (reachable here by name);
they run on both interpreters and are what the benchmark compares the viper path against. The
CPython implementation is common/g711_cpython.py: a handset loads neither module, which keeps
3 KB of bytecode and tables off its heap.
"""
try:
    import micropython
except ImportError:
    micropython = None

def _check_room(out, needed, what):
    """ValueError naming the function when out is too small."""
    if len(out) < needed:
        raise ValueError("%s: out holds %d bytes, needs %d" % (what, len(out), needed))


def _samples(pcm):
    """Number of samples in a PCM buffer; ValueError names an odd length."""
    n = len(pcm)
    if n & 1:
        raise ValueError("PCM length %d is odd: samples are 2 bytes" % n)
    return n >> 1


# --- the implementation for this interpreter ---------------------------------

if micropython:
    IMPLEMENTATION = "viper"

    @micropython.viper
    def _ulaw_encode_viper(pcm, out, n: int):
        src = ptr8(pcm)
        dst = ptr8(out)
        for i in range(n):
            u = src[2 * i] | (src[2 * i + 1] << 8)
            if u & 0x8000:
                mag = 16384 - (u >> 2)
                mask = 0x7F
            else:
                mag = u >> 2
                mask = 0xFF
            if mag >= 8159:
                dst[i] = 0x7F ^ mask  # clipped: 8159 + 33 is past segment 7
                continue
            mag += 33
            # the segment, bit_length(mag >> 6), in three comparisons instead of up to seven shifts
            if mag < 512:
                if mag < 128:
                    seg = 0 if mag < 64 else 1
                else:
                    seg = 2 if mag < 256 else 3
            elif mag < 2048:
                seg = 4 if mag < 1024 else 5
            else:
                seg = 6 if mag < 4096 else 7
            dst[i] = ((seg << 4) | ((mag >> (seg + 1)) & 0xF)) ^ mask

    @micropython.viper
    def _alaw_encode_viper(pcm, out, n: int):
        src = ptr8(pcm)
        dst = ptr8(out)
        for i in range(n):
            u = src[2 * i] | (src[2 * i + 1] << 8)
            if u & 0x8000:
                mag = 8191 - (u >> 3)
                mask = 0x55
            else:
                mag = u >> 3
                mask = 0xD5
            if mag < 256:   # bit_length(mag >> 5), as for mu-law
                if mag < 64:
                    seg = 0 if mag < 32 else 1
                else:
                    seg = 2 if mag < 128 else 3
            elif mag < 1024:
                seg = 4 if mag < 512 else 5
            else:
                seg = 6 if mag < 2048 else 7
            if seg > 1:
                dst[i] = ((seg << 4) | ((mag >> seg) & 0xF)) ^ mask
            else:
                dst[i] = ((seg << 4) | ((mag >> 1) & 0xF)) ^ mask

    # decoding computes each sample from its code (no 512-byte table per law on the heap)
    @micropython.viper
    def _ulaw_decode_viper(data, out, n: int):
        src = ptr8(data)
        dst = ptr8(out)  # bytewise: little-endian output, no alignment needed
        for i in range(n):
            c = src[i] ^ 0xFF
            t = (((c & 0xF) << 3) + 0x84) << ((c >> 4) & 7)
            if c & 0x80:
                v = 0x84 - t
            else:
                v = t - 0x84
            dst[2 * i] = v
            dst[2 * i + 1] = v >> 8

    @micropython.viper
    def _alaw_decode_viper(data, out, n: int):
        src = ptr8(data)
        dst = ptr8(out)
        for i in range(n):
            c = src[i] ^ 0x55
            seg = (c >> 4) & 7
            if seg:
                t = (((c & 0xF) << 4) + 0x108) << (seg - 1)
            else:
                t = ((c & 0xF) << 4) + 8
            if c & 0x80:
                v = t
            else:
                v = 0 - t
            dst[2 * i] = v
            dst[2 * i + 1] = v >> 8

    def ulaw_encode_into(pcm, out):
        """Encode PCM into out as mu-law; returns the number of bytes written."""
        n = _samples(pcm)
        _check_room(out, n, "ulaw_encode_into")
        _ulaw_encode_viper(pcm, out, n)
        return n

    def alaw_encode_into(pcm, out):
        """Encode PCM into out as A-law; returns the number of bytes written."""
        n = _samples(pcm)
        _check_room(out, n, "alaw_encode_into")
        _alaw_encode_viper(pcm, out, n)
        return n

    def ulaw_decode_into(data, out):
        """Decode mu-law into out as PCM; returns the number of bytes written."""
        n = len(data)
        _check_room(out, 2 * n, "ulaw_decode_into")
        _ulaw_decode_viper(data, out, n)
        return 2 * n

    def alaw_decode_into(data, out):
        """Decode A-law into out as PCM; returns the number of bytes written."""
        n = len(data)
        _check_room(out, 2 * n, "alaw_decode_into")
        _alaw_decode_viper(data, out, n)
        return 2 * n

    def ulaw_encode(pcm):
        """mu-law bytes of PCM."""
        out = bytearray(_samples(pcm))
        ulaw_encode_into(pcm, out)
        return bytes(out)

    def alaw_encode(pcm):
        """A-law bytes of PCM."""
        out = bytearray(_samples(pcm))
        alaw_encode_into(pcm, out)
        return bytes(out)

    def ulaw_decode(data):
        """PCM bytes of mu-law data."""
        out = bytearray(2 * len(data))
        ulaw_decode_into(data, out)
        return bytes(out)

    def alaw_decode(data):
        """PCM bytes of A-law data."""
        out = bytearray(2 * len(data))
        alaw_decode_into(data, out)
        return bytes(out)

else:
    from .g711_cpython import (IMPLEMENTATION, alaw_decode, alaw_decode_into, alaw_encode,  # noqa: F401
                                     alaw_encode_into, ulaw_decode, ulaw_decode_into, ulaw_encode,
                                     ulaw_encode_into)


_PORTABLE = ("ulaw_encode_into_portable", "alaw_encode_into_portable", "ulaw_decode_into_portable",
             "alaw_decode_into_portable")


def __getattr__(name):
    """The *_portable reference functions live in common.g711_portable; reachable here by name."""
    if name in _PORTABLE:
        from . import g711_portable
        return getattr(g711_portable, name)
    raise AttributeError(name)
