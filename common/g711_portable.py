"""G.711's reference algorithms, one sample at a time, and buffer loops over them in plain bytecode.

They run on both interpreters; the tests check the chosen implementation against them and
`upbx bench codec` compares the viper path with them; common/g711_cpython.py builds its
tables from them. A handset never imports this module (common.g711 names these functions and
imports it on first use).
"""
from array import array

from .g711 import _check_room, _samples

_BIAS = 0x84  # mu-law bias, added to the magnitude before finding the segment
_CLIP = 8159  # largest 14-bit magnitude mu-law can code


def _ulaw_code(u):
    """mu-law code of one sample given as an unsigned 16-bit value."""
    if u & 0x8000:
        mag = 16384 - (u >> 2)  # -(sample >> 2) with an arithmetic shift
        mask = 0x7F
    else:
        mag = u >> 2
        mask = 0xFF
    if mag > _CLIP:
        mag = _CLIP
    mag += _BIAS >> 2
    seg = 0
    t = mag >> 6
    while t:
        t >>= 1
        seg += 1
    if seg > 7:
        return 0x7F ^ mask
    return ((seg << 4) | ((mag >> (seg + 1)) & 0xF)) ^ mask


def _alaw_code(u):
    """A-law code of one sample given as an unsigned 16-bit value."""
    if u & 0x8000:
        mag = 8191 - (u >> 3)  # -(sample >> 3) - 1 with an arithmetic shift
        mask = 0x55
    else:
        mag = u >> 3
        mask = 0xD5
    seg = 0
    t = mag >> 5
    while t:
        t >>= 1
        seg += 1
    shift = seg if seg > 1 else 1
    return ((seg << 4) | ((mag >> shift) & 0xF)) ^ mask


def _ulaw_linear(code):
    """Linear value (as unsigned 16-bit) of one mu-law code."""
    code ^= 0xFF
    t = (((code & 0xF) << 3) + _BIAS) << ((code >> 4) & 7)
    return (_BIAS - t if code & 0x80 else t - _BIAS) & 0xFFFF


def _alaw_linear(code):
    """Linear value (as unsigned 16-bit) of one A-law code."""
    code ^= 0x55
    seg = (code >> 4) & 7
    t = ((code & 0xF) << 4) + (8 if seg == 0 else 0x108)
    if seg > 1:
        t <<= seg - 1
    return (t if code & 0x80 else -t) & 0xFFFF


# Decode tables: sample (unsigned 16-bit, native order) for each code, 512 bytes each.
_ULAW_TABLE = array("H", (_ulaw_linear(c) for c in range(256)))
_ALAW_TABLE = array("H", (_alaw_linear(c) for c in range(256)))




def _encode_portable(code_of, pcm, out):
    n = _samples(pcm)
    _check_room(out, n, "encode")
    for i in range(n):
        out[i] = code_of(pcm[2 * i] | (pcm[2 * i + 1] << 8))
    return n


def _decode_portable(table, data, out):
    n = len(data)
    _check_room(out, 2 * n, "decode")
    for i in range(n):
        v = table[data[i]]
        out[2 * i] = v & 0xFF
        out[2 * i + 1] = v >> 8
    return 2 * n


def ulaw_encode_into_portable(pcm, out):
    """ulaw_encode_into in plain bytecode."""
    return _encode_portable(_ulaw_code, pcm, out)


def alaw_encode_into_portable(pcm, out):
    """alaw_encode_into in plain bytecode."""
    return _encode_portable(_alaw_code, pcm, out)


def ulaw_decode_into_portable(data, out):
    """ulaw_decode_into in plain bytecode."""
    return _decode_portable(_ULAW_TABLE, data, out)


def alaw_decode_into_portable(data, out):
    """alaw_decode_into in plain bytecode."""
    return _decode_portable(_ALAW_TABLE, data, out)
