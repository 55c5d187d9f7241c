"""G.711 is bit-exact for every sample and every code, under both interpreters.

The reference here is the textbook sign/exponent/mantissa description of
G.711, written independently of common/g711.py: mu-law on the top 14 bits of
the sample with a bias of 33, A-law on the top 13 bits with a one's-complement
magnitude for negative samples.
"""
import gc
import sys

from common import g711

ON_MICROPYTHON = sys.implementation.name == "micropython"
FRAME = 160  # samples in 20 ms at 8 kHz


# --- the independent reference ------------------------------------------------

def ref_ulaw_encode(sample):
    """mu-law code of a signed 16-bit sample (G.711 table 2a, 14-bit input)."""
    value = sample >> 2
    sign = 0x00 if value >= 0 else 0x80
    biased = min(abs(value), 8158) + 33  # 13 bits, leading one in bit 5..12
    exponent = 7
    while exponent and not biased & (1 << (exponent + 5)):
        exponent -= 1
    mantissa = (biased >> (exponent + 1)) & 0x0F
    return 0xFF ^ (sign | (exponent << 4) | mantissa)


def ref_ulaw_decode(code):
    """Signed linear value of a mu-law code."""
    code ^= 0xFF
    exponent = (code >> 4) & 7
    mantissa = code & 0x0F
    magnitude = ((2 * mantissa + 33) << (exponent + 2)) - 132
    return -magnitude if code & 0x80 else magnitude


def ref_alaw_encode(sample):
    """A-law code of a signed 16-bit sample (G.711 table 1a, 13-bit input)."""
    value = sample >> 3
    sign = 0x80 if value >= 0 else 0x00
    magnitude = value if value >= 0 else ~value
    if magnitude < 32:
        exponent, mantissa = 0, magnitude >> 1
    else:
        exponent, limit = 1, 64
        while magnitude >= limit:
            exponent += 1
            limit <<= 1
        mantissa = (magnitude >> exponent) & 0x0F
    return 0x55 ^ (sign | (exponent << 4) | mantissa)


def ref_alaw_decode(code):
    """Signed linear value of an A-law code."""
    code ^= 0x55
    exponent = (code >> 4) & 7
    mantissa = code & 0x0F
    if exponent == 0:
        magnitude = (2 * mantissa + 1) << 3
    else:
        magnitude = (2 * mantissa + 33) << (exponent + 2)
    return magnitude if code & 0x80 else -magnitude


# --- helpers ------------------------------------------------------------------

def pcm_of(samples):
    """16-bit little-endian PCM bytes of signed samples."""
    out = bytearray(2 * len(samples))
    for i, s in enumerate(samples):
        out[2 * i] = s & 0xFF
        out[2 * i + 1] = (s >> 8) & 0xFF
    return bytes(out)


def samples_of(pcm):
    """Signed samples of 16-bit little-endian PCM bytes."""
    out = []
    for i in range(0, len(pcm), 2):
        u = pcm[i] | (pcm[i + 1] << 8)
        out.append(u - 65536 if u & 0x8000 else u)
    return out


EVERY_SAMPLE = range(-32768, 32768)
ALL_PCM = pcm_of(EVERY_SAMPLE)
ALL_CODES = bytes(range(256))


def first_difference(got, want):
    for i in range(min(len(got), len(want))):
        if got[i] != want[i]:
            return "index %d: got %r, want %r" % (i, got[i], want[i])
    return "lengths %d != %d" % (len(got), len(want))


def speech_frame():
    """One 20 ms frame that visits every segment: a rising sawtooth of both signs."""
    return pcm_of([((i * 409) % 65536) - 32768 for i in range(FRAME)])


# --- bit-exactness ------------------------------------------------------------

def test_ulaw_encode_is_exact_for_every_sample():
    want = bytes(ref_ulaw_encode(s) for s in EVERY_SAMPLE)
    got = g711.ulaw_encode(ALL_PCM)
    assert got == want, first_difference(got, want)


def test_alaw_encode_is_exact_for_every_sample():
    want = bytes(ref_alaw_encode(s) for s in EVERY_SAMPLE)
    got = g711.alaw_encode(ALL_PCM)
    assert got == want, first_difference(got, want)


def test_ulaw_decode_is_exact_for_every_code():
    got = samples_of(g711.ulaw_decode(ALL_CODES))
    want = [ref_ulaw_decode(c) for c in ALL_CODES]
    assert got == want, first_difference(got, want)


def test_alaw_decode_is_exact_for_every_code():
    got = samples_of(g711.alaw_decode(ALL_CODES))
    want = [ref_alaw_decode(c) for c in ALL_CODES]
    assert got == want, first_difference(got, want)


def test_known_values_from_the_standard():
    assert g711.ulaw_encode(pcm_of([0, -1, 32767, -32768])) == bytes([0xFF, 0x7E, 0x80, 0x00])
    assert g711.alaw_encode(pcm_of([0, -1, 32767, -32768])) == bytes([0xD5, 0x55, 0xAA, 0x2A])
    assert samples_of(g711.ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00]))) == [0, 0, 32124, -32124]
    assert samples_of(g711.alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [8, -8, 32256, -32256]


def test_ulaw_every_code_survives_decode_then_encode_except_negative_zero():
    again = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    for code in range(256):
        # 0x7F is mu-law's "negative zero": it decodes to 0, which encodes as 0xFF.
        want = 0xFF if code == 0x7F else code
        assert again[code] == want, "code 0x%02X came back as 0x%02X" % (code, again[code])


def test_alaw_every_code_survives_decode_then_encode():
    again = g711.alaw_encode(g711.alaw_decode(ALL_CODES))
    assert again == ALL_CODES, first_difference(again, ALL_CODES)


def test_portable_bytecode_matches_the_chosen_implementation():
    out = bytearray(len(ALL_PCM) // 2)
    assert g711.ulaw_encode_into_portable(ALL_PCM, out) == 65536
    assert out == g711.ulaw_encode(ALL_PCM)
    assert g711.alaw_encode_into_portable(ALL_PCM, out) == 65536
    assert out == g711.alaw_encode(ALL_PCM)
    out = bytearray(512)
    assert g711.ulaw_decode_into_portable(ALL_CODES, out) == 512
    assert out == g711.ulaw_decode(ALL_CODES)
    assert g711.alaw_decode_into_portable(ALL_CODES, out) == 512
    assert out == g711.alaw_decode(ALL_CODES)


def test_implementation_is_chosen_by_interpreter():
    assert g711.IMPLEMENTATION == ("viper" if ON_MICROPYTHON else "python")


# --- the into-variants of the audio path -------------------------------------

def test_encode_into_writes_the_same_bytes_as_encode():
    pcm = speech_frame()
    for encode, encode_into in ((g711.ulaw_encode, g711.ulaw_encode_into),
                                (g711.alaw_encode, g711.alaw_encode_into)):
        out = bytearray(FRAME + 4)  # spare room stays untouched
        assert encode_into(pcm, out) == FRAME
        assert bytes(out[:FRAME]) == encode(pcm)
        assert out[FRAME:] == bytearray(4)


def test_decode_into_writes_two_bytes_per_code():
    data = bytes(range(0, 256, 3))
    for decode, decode_into in ((g711.ulaw_decode, g711.ulaw_decode_into),
                                (g711.alaw_decode, g711.alaw_decode_into)):
        out = bytearray(2 * len(data) + 4)
        assert decode_into(data, out) == 2 * len(data)
        assert bytes(out[:2 * len(data)]) == decode(data)
        assert out[2 * len(data):] == bytearray(4)


def test_into_variants_accept_memoryview_slices_at_any_offset():
    pcm = speech_frame()
    buf = bytearray(1 + 2 * FRAME)
    buf[1:] = pcm
    packet = bytearray(3 + FRAME)  # e.g. a media frame with a 3-byte header
    assert g711.ulaw_encode_into(memoryview(buf)[1:], memoryview(packet)[3:]) == FRAME
    assert bytes(packet[3:]) == g711.ulaw_encode(pcm)
    playout = bytearray(1 + 2 * FRAME)
    assert g711.alaw_decode_into(memoryview(packet)[3:], memoryview(playout)[1:]) == 2 * FRAME
    assert bytes(playout[1:]) == g711.alaw_decode(bytes(packet[3:]))


def test_into_variants_allocate_nothing_on_micropython():
    if not ON_MICROPYTHON:
        return  # CPython's allocator is not what the handset's heap sees
    pcm = speech_frame()
    codes = bytearray(FRAME)
    playout = bytearray(2 * FRAME)
    view = memoryview(playout)
    for name, fn, src, dst in (("ulaw_encode_into", g711.ulaw_encode_into, pcm, codes),
                               ("alaw_encode_into", g711.alaw_encode_into, pcm, codes),
                               ("ulaw_decode_into", g711.ulaw_decode_into, codes, playout),
                               ("alaw_decode_into", g711.alaw_decode_into, codes, view)):
        fn(src, dst)
        gc.collect()
        before = gc.mem_alloc()
        for _ in range(100):
            fn(src, dst)
        allocated = gc.mem_alloc() - before
        assert allocated == 0, "%s allocated %d bytes in 100 frames" % (name, allocated)


def test_bad_lengths_raise_value_error():
    for call in (lambda: g711.ulaw_encode(b"\x00\x00\x00"),
                 lambda: g711.alaw_encode_into(b"\x00" * 4, bytearray(1)),
                 lambda: g711.ulaw_decode_into(b"\x00" * 4, bytearray(7)),
                 lambda: g711.alaw_encode_into_portable(b"\x00", bytearray(4))):
        try:
            call()
        except ValueError:
            continue
        assert False, "no ValueError"


def test_empty_and_single_sample_frames():
    assert g711.ulaw_encode(b"") == b"" and g711.alaw_decode(b"") == b""
    assert g711.ulaw_encode(pcm_of([-32768])) == b"\x00"
    assert g711.alaw_encode(pcm_of([32767])) == b"\xaa"
    out = bytearray(2)
    assert g711.ulaw_decode_into(b"\x80", out) == 2 and samples_of(out) == [32124]
    assert g711.alaw_encode_into(b"", out) == 0
