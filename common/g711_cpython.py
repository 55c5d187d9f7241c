"""G.711 for CPython (the hosts, the tests, the tools): common/g711.py chooses it at import.

64 KiB encode tables read through memoryview casts, 256-byte decode tables applied with
bytes.translate; the same codes as the reference functions in common/g711_portable.py.
"""
from array import array
from operator import itemgetter

# common.g711 imports this module at its end, after the names taken here (import common.g711,
# not this module)
from .g711 import _check_room, _samples
from .g711_portable import _ALAW_TABLE, _ULAW_TABLE, _alaw_code, _ulaw_code

IMPLEMENTATION = "python"


def _encode_table(code_of, shift):
    """64 KiB table: code of each sample as memoryview.cast("H") reads PCM here."""
    # The code depends only on sample >> shift, so compute each once and repeat it.
    codes = bytes(code_of(k << shift) for k in range(65536 >> shift))
    step = 1 << shift
    table = bytearray(65536)
    for r in range(step):
        table[r::step] = codes
    if array("H", [1]).tobytes()[0] == 0:
        # Big-endian machine: native index (lo << 8 | hi) holds the sample (hi << 8 | lo).
        swapped = bytearray(65536)
        for hi in range(256):
            swapped[hi::256] = table[hi << 8:(hi + 1) << 8]
        table = swapped
    return bytes(table)


def _byte_tables(table):
    lo = bytes(v & 0xFF for v in table)
    hi = bytes(v >> 8 for v in table)
    return lo, hi


_ULAW_ENC = _encode_table(_ulaw_code, 2)
_ALAW_ENC = _encode_table(_alaw_code, 3)
_ULAW_LO, _ULAW_HI = _byte_tables(_ULAW_TABLE)
_ALAW_LO, _ALAW_HI = _byte_tables(_ALAW_TABLE)


def _as_samples(pcm):
    _samples(pcm)
    return memoryview(pcm).cast("B").cast("H")


def _encoder(table):
    lookup = table.__getitem__

    def codes(samples):
        if len(samples) > 1:  # itemgetter of many indices returns a tuple
            return bytes(itemgetter(*samples)(table))
        return bytes(map(lookup, samples))

    def encode(pcm):
        """G.711 bytes of PCM."""
        return codes(_as_samples(pcm))

    def encode_into(pcm, out):
        """Encode PCM into out; returns the number of bytes written."""
        samples = _as_samples(pcm)
        n = len(samples)
        _check_room(out, n, "encode_into")
        out[:n] = codes(samples)
        return n
    return encode, encode_into


def _decoder(lo_table, hi_table):
    def decode_into(data, out):
        """Decode G.711 into out as PCM; returns the number of bytes written."""
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        n = 2 * len(data)
        _check_room(out, n, "decode_into")
        out[0:n:2] = data.translate(lo_table)
        out[1:n:2] = data.translate(hi_table)
        return n

    def decode(data):
        """PCM bytes of G.711 data."""
        out = bytearray(2 * len(data))
        decode_into(data, out)
        return bytes(out)
    return decode, decode_into


ulaw_encode, ulaw_encode_into = _encoder(_ULAW_ENC)
alaw_encode, alaw_encode_into = _encoder(_ALAW_ENC)
ulaw_decode, ulaw_decode_into = _decoder(_ULAW_LO, _ULAW_HI)
alaw_decode, alaw_decode_into = _decoder(_ALAW_LO, _ALAW_HI)
