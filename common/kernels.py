"""Byte kernels of the media path: counter mode, tag comparison, SHA-256 blocks.

The one place common/ chooses how its per-frame byte work runs: `@micropython.viper` loops
over ptr8/ptr32 on MicroPython (native code, nothing allocated), plain Python elsewhere.
The *_portable functions (common/kernels_portable.py, reachable here by name) are the same
algorithms in bytecode; the tests check that the viper kernels agree with them byte for
byte (tests/common/test_kernels.py, under both interpreters). Offsets and lengths are in
bytes; buffers are bytes, bytearray, memoryview or array("I") (SHA-256 states and scratch).

With these, HMAC-SHA256 on MicroPython needs no hashlib object per tag (crypto.HmacKey
keeps the states after its padded key blocks; hashlib there can neither copy nor reuse one).
"""
from array import array

from .compat import MICROPYTHON

# SHA-256 (FIPS 180-4): round constants and initial hash value
SHA256_K = array("I", (
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2))
SHA256_IV = array("I", (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19))

if MICROPYTHON:
    import micropython

    IMPLEMENTATION = "viper"

    # xor_into, copy_bytes and ctr_blocks move a 32-bit word at a time where both ends are 4-byte
    # aligned (a bytearray's data is: the frames, the scratch, the jitter slots), else a byte at a time:
    # an ESP32 (Xtensa) faults on an unaligned 32-bit load or store. A quarter of the loop's passes
    # (docs/benchmarks.md, handset, Session 10)
    @micropython.viper
    def xor_into(dst, doff: int, src, soff: int, n: int):
        d = uint(ptr8(dst)) + uint(doff)
        s = uint(ptr8(src)) + uint(soff)
        i = 0
        if ((d | s) & 3) == uint(0):
            dw = ptr32(d)
            sw = ptr32(s)
            words = n >> 2
            while i < words:
                dw[i] ^= sw[i]
                i += 1
            i = words << 2
        db = ptr8(d)
        sb = ptr8(s)
        while i < n:
            db[i] ^= sb[i]
            i += 1

    @micropython.viper
    def copy_bytes(dst, doff: int, src, soff: int, n: int):
        d = uint(ptr8(dst)) + uint(doff)
        s = uint(ptr8(src)) + uint(soff)
        i = 0
        if ((d | s) & 3) == uint(0):
            dw = ptr32(d)
            sw = ptr32(s)
            words = n >> 2
            while i < words:
                dw[i] = sw[i]
                i += 1
            i = words << 2
        db = ptr8(d)
        sb = ptr8(s)
        while i < n:
            db[i] = sb[i]
            i += 1

    @micropython.viper
    def ctr_blocks(counter, nonce, first: int, blocks: int):
        c = ptr8(counter)
        s = ptr8(nonce)
        aligned = ((uint(c) | uint(s)) & 3) == uint(0)
        cw = ptr32(counter)
        sw = ptr32(nonce)
        for k in range(blocks):
            o = k << 4
            i = first + k
            if aligned:
                cw[k << 2] = sw[0]
                cw[(k << 2) + 1] = sw[1]
                cw[(k << 2) + 2] = sw[2]
            else:
                for j in range(12):
                    c[o + j] = s[j]
            c[o + 12] = (i >> 24) & 0xFF
            c[o + 13] = (i >> 16) & 0xFF
            c[o + 14] = (i >> 8) & 0xFF
            c[o + 15] = i & 0xFF

    @micropython.viper
    def equal(a, aoff: int, b, boff: int, n: int) -> bool:
        p = ptr8(a)
        q = ptr8(b)
        diff = 0
        for i in range(n):
            diff |= p[aoff + i] ^ q[boff + i]
        return diff == 0

    @micropython.viper
    def put_be32(buf, off: int, value: int):
        p = ptr8(buf)
        v = uint(value)
        p[off] = (v >> 24) & 0xFF
        p[off + 1] = (v >> 16) & 0xFF
        p[off + 2] = (v >> 8) & 0xFF
        p[off + 3] = v & 0xFF

    @micropython.viper
    def put_be64(buf, off: int, value: int):
        p = ptr8(buf)
        v = uint(value)
        p[off] = 0
        p[off + 1] = 0
        p[off + 2] = 0
        p[off + 3] = 0
        p[off + 4] = (v >> 24) & 0xFF
        p[off + 5] = (v >> 16) & 0xFF
        p[off + 6] = (v >> 8) & 0xFF
        p[off + 7] = v & 0xFF

    @micropython.viper
    def hmac_final(state, istate, ostate, buf, used: int, total: int, w):
        # the end of an HMAC in one call: pad buf[:used] (a message of total bytes, the key block's 64
        # included) and compress it from istate; put its digest into buf[0:32], padded as a 96-byte
        # message, and compress that block from ostate into state. What sha256_pad, sha256_blocks,
        # sha256_put, sha256_pad and sha256_blocks do one by one, with the compression itself
        # sha256_blocks' (one copy of the SHA-256 rounds)
        src = ptr8(buf)
        end = (used + 72) & (0 - 64)
        src[used] = 0x80
        i = used + 1
        while i < end - 4:
            src[i] = 0
            i += 1
        v = uint(total) << 3
        src[end - 4] = (v >> 24) & 0xFF
        src[end - 3] = (v >> 16) & 0xFF
        src[end - 2] = (v >> 8) & 0xFF
        src[end - 1] = v & 0xFF
        _compress(0, 0, 0, state, istate, buf, 0, end >> 6, w)
        st = ptr32(state)
        i = 0
        while i < 32:   # the inner digest, padded: one block for the outer hash
            src[i] = (uint(st[i >> 2]) >> (24 - ((i & 3) << 3))) & 0xFF
            i += 1
        src[32] = 0x80
        i = 33
        while i < 62:
            src[i] = 0
            i += 1
        src[62] = 3   # 96 bytes: 768 bits
        src[63] = 0
        _compress(0, 0, 0, state, ostate, buf, 0, 1, w)

    @micropython.viper
    def sha256_blocks(state, init, data, off: int, nblocks: int, w):
        _compress(0, 0, 0, state, init, data, off, nblocks, w)

    @micropython.viper
    def _compress(i: int, e: uint, t1: uint, state, init, data, off: int, nblocks: int, w):
        # sha256_blocks' work. A viper function keeps its first three locals, its first three
        # arguments, in machine registers and the rest on the stack (py/emitnative.c,
        # MAX_REGS_FOR_LOCAL_VARS, on x86, x64, ARM and Xtensa alike): the rounds' busiest three
        # are declared here, so every caller passes three zeros. 11 % fewer instructions a block
        # and 142 bytes less code on Xtensa than with state, init and data there (docs/benchmarks.md).
        # 32-bit arithmetic in machine words: a 64-bit port keeps garbage above bit 31 in the
        # rotations, so every value that is shifted right later is masked to 32 bits first
        m = uint((0xFFFF << 16) | 0xFFFF)
        src = ptr8(data)
        ww = ptr32(w)
        k = ptr32(SHA256_K)
        iv = ptr32(init)
        h0 = uint(iv[0])
        h1 = uint(iv[1])
        h2 = uint(iv[2])
        h3 = uint(iv[3])
        h4 = uint(iv[4])
        h5 = uint(iv[5])
        h6 = uint(iv[6])
        h7 = uint(iv[7])
        blk = 0
        while blk < nblocks:
            q = off + (blk << 6)
            i = 0
            while i < 16:
                ww[i] = (uint(src[q]) << 24) | (uint(src[q + 1]) << 16) | (uint(src[q + 2]) << 8) | uint(src[q + 3])
                q += 4
                i += 1
            while i < 64:
                x = uint(ww[i - 15])
                y = uint(ww[i - 2])
                s0 = ((x >> 7) | (x << 25)) ^ ((x >> 18) | (x << 14)) ^ (x >> 3)
                s1 = ((y >> 17) | (y << 15)) ^ ((y >> 19) | (y << 13)) ^ (y >> 10)
                ww[i] = uint(ww[i - 16]) + s0 + uint(ww[i - 7]) + s1
                i += 1
            a = h0
            b = h1
            c = h2
            d = h3
            e = h4
            f = h5
            g = h6
            h = h7
            i = 0
            while i < 64:
                t1 = (h + (((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7)))
                      + (g ^ (e & (f ^ g))) + uint(k[i]) + uint(ww[i]))   # Ch(e, f, g) in three operations
                t2 = (((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10))) + (
                    (a & (b | c)) | (b & c))   # Maj(a, b, c) in four
                h = g
                g = f
                f = e
                e = (d + t1) & m
                d = c
                c = b
                b = a
                a = (t1 + t2) & m
                i += 1
            h0 = (h0 + a) & m
            h1 = (h1 + b) & m
            h2 = (h2 + c) & m
            h3 = (h3 + d) & m
            h4 = (h4 + e) & m
            h5 = (h5 + f) & m
            h6 = (h6 + g) & m
            h7 = (h7 + h) & m
            blk += 1
        st = ptr32(state)
        st[0] = h0
        st[1] = h1
        st[2] = h2
        st[3] = h3
        st[4] = h4
        st[5] = h5
        st[6] = h6
        st[7] = h7

    @micropython.viper
    def sha256_pad(buf, used: int, total: int) -> int:
        p = ptr8(buf)
        end = (used + 72) & (0 - 64)
        p[used] = 0x80
        for i in range(used + 1, end - 4):
            p[i] = 0
        v = uint(total) << 3
        p[end - 4] = (v >> 24) & 0xFF
        p[end - 3] = (v >> 16) & 0xFF
        p[end - 2] = (v >> 8) & 0xFF
        p[end - 1] = v & 0xFF
        return end >> 6

    @micropython.viper
    def sha256_put(dst, doff: int, state, n: int):
        p = ptr8(dst)
        st = ptr32(state)
        for i in range(n):
            p[doff + i] = (uint(st[i >> 2]) >> (24 - ((i & 3) << 3))) & 0xFF

else:
    # CPython: the bytecode references under the kernels' names (xor_into is xor_into_portable), named
    # here once: an import list of the *_portable names would put them all in a handset's heap too
    from . import kernels_portable
    for _name in ("xor_into", "copy_bytes", "ctr_blocks", "equal", "put_be32", "put_be64", "sha256_blocks",
                  "sha256_pad", "sha256_put", "hmac_final"):
        globals()[_name] = getattr(kernels_portable, _name + "_portable")
    del _name

    IMPLEMENTATION = "python"


def __getattr__(name):
    """xor_into_portable, sha256_blocks_portable, ..., sha256_state: the bytecode references and
    helpers only tests use, imported on first use."""
    if name.endswith("_portable") or name == "sha256_state":
        from . import kernels_portable
        return getattr(kernels_portable, name)
    raise AttributeError(name)
