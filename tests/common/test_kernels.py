"""The byte kernels of the media path (common/kernels.py) agree with their portable versions
byte for byte, and the allocation-free HMAC and counter mode built on them agree with
hashlib and the reference HMAC. Runs under CPython and MicroPython (where the kernels are
viper): lengths that are not a multiple of 16 or 64, offsets, overlapping calls."""
from array import array
from hashlib import sha256

from common import crypto, kernels
from common.crypto import HmacKey, hmac_sha256_portable


def data(n, seed=1):
    """Deterministic bytes (an LCG: no random module needed on MicroPython)."""
    out = bytearray(n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return out


def test_xor_into_matches_portable_at_any_length_and_offset():
    src = data(300, 2)
    for n in (0, 1, 15, 16, 17, 160, 161, 255):
        for doff, soff in ((0, 0), (3, 0), (0, 5), (7, 11)):
            a, b = data(300, 3), data(300, 3)
            kernels.xor_into(a, doff, src, soff, n)
            kernels.xor_into_portable(b, doff, src, soff, n)
            assert a == b, (n, doff, soff)
            assert a[doff + n:] == data(300, 3)[doff + n:]   # nothing past the end is touched


def test_copy_bytes_matches_portable():
    src = data(200, 4)
    for n, doff, soff in ((0, 0, 0), (1, 5, 0), (37, 3, 9), (172, 0, 8), (163, 4, 8), (6, 8, 4), (41, 2, 2)):
        for source in (src, memoryview(src)):
            a, b = bytearray(200), bytearray(200)
            kernels.copy_bytes(a, doff, source, soff, n)
            kernels.copy_bytes_portable(b, doff, src, soff, n)
            assert a == b and a[doff:doff + n] == src[soff:soff + n], (n, doff, soff)


def test_word_kernels_match_portable_on_views_at_any_alignment():
    # xor_into, copy_bytes and ctr_blocks take 32-bit words where both ends are 4-byte aligned
    base = data(340, 7)
    for shift in (0, 1, 2, 3, 4):
        src = memoryview(base)[shift:]
        for n in (3, 4, 5, 160, 161):
            for doff, soff in ((0, 0), (4, 4), (1, 4), (4, 2)):
                for name in ("xor_into", "copy_bytes"):
                    a, b = data(200, 8), data(200, 8)
                    getattr(kernels, name)(memoryview(a)[shift:], doff, src, soff, n)
                    getattr(kernels, name + "_portable")(memoryview(b)[shift:], doff, src, soff, n)
                    assert a == b, (name, shift, n, doff, soff)
        a, b = bytearray(170), bytearray(170)
        kernels.ctr_blocks(memoryview(a)[shift:], src, 7, 10)
        kernels.ctr_blocks_portable(memoryview(b)[shift:], src, 7, 10)
        assert a == b and a[shift:shift + 12] == base[shift:shift + 12], shift


def test_counter_blocks_match_portable_and_the_layout():
    nonce = data(12, 5)
    for first, blocks in ((0, 0), (0, 1), (0, 10), (10, 10), (0, 17), (250, 300)):
        a, b = bytearray(16 * blocks + 5), bytearray(16 * blocks + 5)
        kernels.ctr_blocks(a, nonce, first, blocks)
        kernels.ctr_blocks_portable(b, nonce, first, blocks)
        assert a == b, blocks
        for k in (0, blocks - 1) if blocks else ():
            i = first + k
            assert a[16 * k:16 * k + 12] == nonce
            assert a[16 * k + 12:16 * k + 16] == bytes(((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255))


def test_equal_finds_a_difference_in_any_byte_only_within_the_range():
    a = data(40, 6)
    for n in (0, 1, 4, 32):
        b = bytearray(a)
        assert kernels.equal(a, 3, b, 3, n) and kernels.equal_portable(a, 3, b, 3, n)
        for i in range(n):
            b = bytearray(a)
            b[3 + i] ^= 0x40
            assert not kernels.equal(a, 3, b, 3, n) and not kernels.equal_portable(a, 3, b, 3, n)
        b = bytearray(a)
        b[3 + n] ^= 1   # just past the range
        assert kernels.equal(a, 3, b, 3, n)
    shifted = bytearray(5) + a
    assert kernels.equal(a, 0, shifted, 5, 40) and kernels.equal_portable(a, 0, shifted, 5, 40)


def test_put_be32_matches_portable():
    for value in (0, 1, 0x12345678, 0x3FFFFFFF, (1 << 30) + 5, 0xFFFFFFFF):
        a, b = bytearray(9), bytearray(9)
        kernels.put_be32(a, 3, value)
        kernels.put_be32_portable(b, 3, value)
        assert a == b and a[3:7] == bytes(((value >> 24) & 255, (value >> 16) & 255, (value >> 8) & 255, value & 255))


def sha256_of(msg, blocks_fn, pad_fn, put_fn, lead=0):
    """SHA-256 of msg through the block kernels, the message placed at buf[lead:]."""
    buf = bytearray(lead + len(msg) + 72)
    buf[lead:lead + len(msg)] = msg
    nblocks = pad_fn(memoryview(buf)[lead:], len(msg), len(msg))   # blocks count from the message start
    state = array("I", kernels.SHA256_IV)
    blocks_fn(state, kernels.SHA256_IV, buf, lead, nblocks, array("I", bytes(256)))
    out = bytearray(33)
    put_fn(out, 1, state, 32)
    return bytes(out[1:])


def test_sha256_blocks_match_hashlib_and_portable_at_every_padding_edge():
    for n in (0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 172, 250):
        msg = data(n, n + 7)
        want = sha256(bytes(msg)).digest()
        assert sha256_of(msg, kernels.sha256_blocks, kernels.sha256_pad, kernels.sha256_put, 3) == want, n
        assert sha256_of(msg, kernels.sha256_blocks_portable, kernels.sha256_pad_portable,
                         kernels.sha256_put_portable) == want, n


def test_sha256_pad_matches_portable():
    for used in (0, 20, 55, 56, 63, 64, 100):
        a, b = data(used + 72, 8), data(used + 72, 8)
        assert kernels.sha256_pad(a, used, used + 64) == kernels.sha256_pad_portable(b, used, used + 64)
        assert a == b, used


def test_sha256_put_truncates_like_the_digest():
    state = kernels.sha256_state(bytes(range(64)))
    full = bytearray(32)
    kernels.sha256_put(full, 0, state, 32)
    for n in (1, 4, 5, 31):
        a, b = bytearray(n + 2), bytearray(n + 2)
        kernels.sha256_put(a, 2, state, n)
        kernels.sha256_put_portable(b, 2, state, n)
        assert a == b and a[2:] == full[:n]


def test_mac_into_is_the_truncated_hmac_over_prefix_and_message():
    for key_len in (16, 32, 64, 100):
        key = data(key_len, key_len)
        hk = HmacKey(key)
        for n in (0, 1, 47, 48, 120, 160, 164, crypto.MAC_ROOM - 8, crypto.MAC_ROOM, 400):   # 400: the fallback
            prefix, msg = data(8, n + 1), data(n + 10, n + 2)
            want = hmac_sha256_portable(key, bytes(prefix) + bytes(msg[:n]))
            out = bytearray(40)
            hk.mac_into(memoryview(prefix), msg, n, out, 3, 4)
            assert out[3:7] == want[:4] and out[:3] == bytes(3) and out[7:] == bytes(33), (key_len, n)
            hk.mac_into(prefix, msg, n, out, 0, 32)
            assert out[:32] == want
            tag = bytearray(6) + want[:4]
            assert hk.verify_into(prefix, msg, n, tag, 6, 4)
            tag[9] ^= 0x01
            assert not hk.verify_into(prefix, msg, n, tag, 6, 4)


def test_mac_into_streams_prefixes_and_messages_longer_than_its_scratch():
    # signalling frames (up to ~720 bytes) and a trunk's timestamps (8 per entry) as the prefix:
    # hashed MAC_ROOM bytes at a time, ending on and across every block and scratch boundary
    key = data(32, 3)
    hk = HmacKey(key)
    room = crypto.MAC_ROOM
    for p in (0, 16, 64, room - 1, room, room + 8, 2 * room + 40):
        for n in (0, 1, room - p % room, room, 3 * room - 5, 720):
            prefix, msg = data(p, p + 7), data(n + 3, n + 5)
            want = hmac_sha256_portable(key, bytes(prefix) + bytes(msg[:n]))
            out = bytearray(32)
            hk.mac_into(prefix, msg, n, out, 0, 32)
            assert out == want, (p, n)
            assert hk.digest2(prefix, msg[:n]) == want and hk.verify_into(prefix, msg, n, out, 0, 32)
    assert hk.digest(b"abc") == hmac_sha256_portable(key, b"abc") == crypto.hmac_sha256(key, b"abc")


def _aes_block(key, block):
    """AES-128 of one block, straight from the interpreter's AES (the reference for counter mode)."""
    try:
        import cryptolib
        return bytes(cryptolib.aes(key, 1).encrypt(bytes(block)))
    except ImportError:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(bytes(block))


def test_counter_mode_keystream_is_aes_of_each_counter_block_at_any_length():
    # a signalling payload longer than one voice payload goes through the shared scratch in pieces:
    # its keystream must still be AES(nonce || be32(i)) for block i = 0, 1, 2 ...
    key, nonce = bytes(range(16)), data(12, 11)
    ctr = crypto.CounterMode(key, 512)
    for n in (1, 160, 161, 320, 333, 512):
        stream = bytearray(n)
        ctr.crypt(nonce, stream, 0, n)
        for i in range((n + 15) // 16):
            block = bytes(nonce) + bytes(((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255))
            assert stream[16 * i:16 * i + 16] == _aes_block(key, block)[:len(stream[16 * i:16 * i + 16])], (n, i)
    try:
        ctr.crypt(nonce, bytearray(513), 0, 513)
        raise AssertionError("longer than max_len")
    except ValueError:
        pass


def test_counter_mode_is_its_own_inverse_and_leaves_the_rest_alone():
    ctr = crypto.CounterMode(bytes(range(16)), 160)
    nonce = data(12, 9)
    for n in (1, 15, 16, 17, 159, 160):
        plain = data(n + 8, n)
        buf = bytearray(plain)
        ctr.crypt(nonce, buf, 4, 4 + n)
        assert buf[:4] == plain[:4] and buf[4 + n:] == plain[4 + n:]
        if n > 8:
            assert buf[4:4 + n] != plain[4:4 + n]
        ctr.crypt(nonce, buf, 4, 4 + n)
        assert buf == plain, n


def test_put_be64_matches_portable():
    for value in (0, 1, 0x1234, 20 * 50 * 3600 * 24, (1 << 30) - 1):
        a, b = data(16, 9), data(16, 9)
        kernels.put_be64(a, 5, value)
        kernels.put_be64_portable(b, 5, value)
        assert a == b and a[5:13] == bytes((0, 0, 0, 0, (value >> 24) & 255, (value >> 16) & 255,
                                            (value >> 8) & 255, value & 255)), value
        assert a[:5] == data(16, 9)[:5] and a[13:] == data(16, 9)[13:]


def test_hmac_final_matches_portable_and_the_reference_hmac():
    """The end of an HMAC in one kernel (pad, inner blocks, digest, outer block) against the portable pieces
    and hmac_sha256_portable, for every message length of one to four inner blocks."""
    key = data(32, 10)
    ipad = bytearray(0x36 ^ k for k in key) + bytearray(0x36 for _ in range(32))
    opad = bytearray(0x5C ^ k for k in key) + bytearray(0x5C for _ in range(32))
    w = array("I", bytes(256))
    istate, ostate = array("I", bytes(32)), array("I", bytes(32))
    kernels.sha256_blocks(istate, kernels.SHA256_IV, ipad, 0, 1, w)
    kernels.sha256_blocks(ostate, kernels.SHA256_IV, opad, 0, 1, w)
    for n in (0, 1, 55, 56, 63, 64, 119, 120, 172, 183, 184, 256):
        msg = data(n, n + 11)
        a, b = bytearray(n + 72), bytearray(n + 72)
        a[:n] = msg
        b[:n] = msg
        sa, sb = array("I", bytes(32)), array("I", bytes(32))
        kernels.hmac_final(sa, istate, ostate, a, n, 64 + n, w)
        kernels.hmac_final_portable(sb, istate, ostate, b, n, 64 + n, w)
        assert list(sa) == list(sb), n
        digest = bytearray(32)
        kernels.sha256_put(digest, 0, sa, 32)
        assert bytes(digest) == hmac_sha256_portable(key, msg), n
