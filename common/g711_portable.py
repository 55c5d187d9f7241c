"""G.711 buffer loops in plain bytecode over the per-sample reference algorithms of common/g711.py.

They run on both interpreters; the tests check the chosen implementation against them and
`upbx bench codec` compares the viper path with them. A handset never imports this module
(common.g711 names these functions and imports it on first use).
"""
from common.g711 import _ALAW_TABLE, _ULAW_TABLE, _alaw_code, _check_room, _samples, _ulaw_code


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
