"""The reference kernels of common.kernels in plain Python, byte by byte.

CPython runs these (kernels.xor_into is xor_into_portable there); on MicroPython the viper
kernels replace them, and only the tests (viper against portable, byte for byte) import
this module, so a handset's heap does not hold both.
"""
from array import array

from .kernels import SHA256_IV, SHA256_K

_M32 = 0xFFFFFFFF


def xor_into_portable(dst, doff, src, soff, n):
    """dst[doff + i] ^= src[soff + i] for i < n."""
    for i in range(n):
        dst[doff + i] ^= src[soff + i]


def copy_bytes_portable(dst, doff, src, soff, n):
    """dst[doff:doff + n] = src[soff:soff + n] (ranges must not overlap)."""
    for i in range(n):
        dst[doff + i] = src[soff + i]


def ctr_blocks_portable(counter, nonce, first, blocks):
    """Counter-mode input blocks first .. first+blocks-1: nonce (12 bytes) || be32(i), 16 bytes each,
    from counter[0]."""
    for k in range(blocks):
        o = 16 * k
        i = first + k
        for j in range(12):
            counter[o + j] = nonce[j]
        counter[o + 12] = (i >> 24) & 0xFF
        counter[o + 13] = (i >> 16) & 0xFF
        counter[o + 14] = (i >> 8) & 0xFF
        counter[o + 15] = i & 0xFF


def equal_portable(a, aoff, b, boff, n):
    """a[aoff:aoff + n] == b[boff:boff + n], in time independent of where they differ."""
    diff = 0
    for i in range(n):
        diff |= a[aoff + i] ^ b[boff + i]
    return diff == 0


def put_be32_portable(buf, off, value):
    """buf[off:off + 4] = value (0 <= value < 2**32) big-endian."""
    for i in range(4):
        buf[off + i] = (value >> (24 - 8 * i)) & 0xFF


def put_be64_portable(buf, off, value):
    """buf[off:off + 8] = value (0 <= value < 2**31) big-endian."""
    for i in range(4):
        buf[off + i] = 0
    put_be32_portable(buf, off + 4, value)


def hmac_final_portable(state, istate, ostate, buf, used, total, w):
    """The end of an HMAC-SHA256 whose inner hash has buf[:used] left of a message of total bytes (the key
    block's 64 included), from the inner state istate: pad and compress it, then hash its digest from the
    outer state ostate, into state. buf[0:64] is scratch afterwards; it needs used + 72 bytes of room."""
    blocks = sha256_pad_portable(buf, used, total)
    sha256_blocks_portable(state, istate, buf, 0, blocks, w)
    sha256_put_portable(buf, 0, state, 32)
    sha256_pad_portable(buf, 32, 64 + 32)
    sha256_blocks_portable(state, ostate, buf, 0, 1, w)


def _rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & _M32


def sha256_blocks_portable(state, init, data, off, nblocks, w):
    """SHA-256 compression (FIPS 180-4, 6.2.2) of nblocks 64-byte blocks from data[off:], starting
    from the 8-word state init; the result goes into state (may be init). w: 64-word scratch."""
    h = [init[i] for i in range(8)]
    for blk in range(nblocks):
        p = off + 64 * blk
        for i in range(16):
            q = p + 4 * i
            w[i] = (data[q] << 24) | (data[q + 1] << 16) | (data[q + 2] << 8) | data[q + 3]
        for i in range(16, 64):
            x, y = w[i - 15], w[i - 2]
            s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> 3)
            s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ (y >> 10)
            w[i] = (w[i - 16] + s0 + w[i - 7] + s1) & _M32
        a, b, c, d, e, f, g, hh = h
        for i in range(64):
            t1 = (hh + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i]) & _M32
            t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & _M32
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & _M32, c, b, a, (t1 + t2) & _M32
        h = [(x + y) & _M32 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]
    for i in range(8):
        state[i] = h[i]


def sha256_pad_portable(buf, used, total):
    """SHA-256 padding after the `used` message bytes at buf[0:] of a message of `total` bytes in
    all (earlier blocks included; total < 2**29): 0x80, zeros, be64(8 * total). Returns the
    number of 64-byte blocks in buf that are now ready; buf needs used + 72 bytes of room."""
    end = (used + 9 + 63) & ~63
    buf[used] = 0x80
    for i in range(used + 1, end - 4):
        buf[i] = 0
    put_be32_portable(buf, end - 4, 8 * total)
    return end >> 6


def sha256_put_portable(dst, doff, state, n):
    """The first n bytes (n <= 32) of the digest held in state, big-endian, into dst at doff."""
    for i in range(n):
        dst[doff + i] = (state[i >> 2] >> (24 - 8 * (i & 3))) & 0xFF


def hmac_sha256_portable(key, msg):
    """HMAC-SHA256 (RFC 2104) written out on hashlib: the reference the viper HMAC (common.crypto
    on MicroPython) and the hosts' copied-state HMAC are checked against."""
    from .compat import sha256
    key = bytes(key)
    if len(key) > 64:
        key = sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def sha256_state(block):
    """The SHA-256 state (array of 8 words) after one 64-byte block from the initial value, with the
    interpreter's kernel (common.kernels names it too)."""
    from . import kernels
    state = array("I", SHA256_IV)
    kernels.sha256_blocks(state, SHA256_IV, block, 0, 1, array("I", bytes(256)))
    return state
