"""X25519 (RFC 7748) in plain Python, to time on the MicroPython unix port: what a
Diffie-Hellman step in the login would cost a handset without a C implementation.

    micropython tools/x25519_mp.py [N]    prints {"ms_per_x25519": ..., "rfc7748": true, ...}

Not used by upbx: a measurement only (docs/security.md, forward secrecy). The
ladder is the RFC's, with MicroPython's arbitrary-precision integers (mpz in C)
doing the field arithmetic; it is not constant-time and must not be used as is.
"""
import sys
import time

P = 2 ** 255 - 19
A24 = 121665


def _decode_scalar(k):
    b = bytearray(k)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(b, "little")


def _decode_u(u):
    b = bytearray(u)
    b[31] &= 127
    return int.from_bytes(b, "little")


def x25519(k, u, p=P):
    """The RFC 7748 section 5 Montgomery ladder: scalar k (32 bytes) times point u (32 bytes).

    With a small p (one machine word) the same bytecode runs without big integers: the
    difference is what the interpreter costs and what the big-integer arithmetic does.
    """
    P = p
    k = _decode_scalar(k)
    x1 = _decode_u(u) % P
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in range(254, -1, -1):
        bit = (k >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a = (x2 + z2) % P
        aa = a * a % P
        b = (x2 - z2) % P
        bb = b * b % P
        e = (aa - bb) % P
        c = (x3 + z3) % P
        d = (x3 - z3) % P
        da = d * a % P
        cb = c * b % P
        x3 = (da + cb) % P
        x3 = x3 * x3 % P
        z3 = (da - cb) % P
        z3 = x1 * (z3 * z3 % P) % P
        x2 = aa * bb % P
        z2 = e * (aa + A24 * e) % P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, P - 2, P) % P).to_bytes(32, "little")


# A field multiplication mod 2**255 - 19 in viper (20 limbs of 13 bits: products and their sums
# stay within a signed 32-bit word), to estimate a viper X25519: the ladder does 10 field
# multiplications or squares per bit (2,550) and the inversion about 266 more.
FIELD_MULS_PER_X25519 = 2816
LIMBS = 20

try:
    import micropython

    @micropython.viper
    def _fmul(out: ptr32, a: ptr32, b: ptr32, t: ptr32):
        for i in range(40):
            t[i] = 0
        for i in range(20):
            ai = a[i]
            for j in range(20):
                t[i + j] += ai * b[j]
        # 2**260 = 2**5 * 2**255 = 32 * 19 = 608 (mod p): fold the high limbs down
        for i in range(20):
            t[i] += 608 * (t[i + 20] & 0x1FFF)
            t[i + 1] += 608 * (t[i + 20] >> 13)
        carry = 0
        for i in range(20):
            v = t[i] + carry
            out[i] = v & 0x1FFF
            carry = v >> 13
        out[0] += carry * 608
except (ImportError, SyntaxError, NameError):
    _fmul = None


def _limbs(x):
    out = [0] * 40
    for i in range(LIMBS):
        out[i] = (x >> (13 * i)) & 0x1FFF
    return out


def viper_field_mul_us(n=20000):
    """Microseconds per viper field multiplication (array("i") limbs), or None without viper."""
    if _fmul is None:
        return None
    from array import array
    a = array("i", _limbs(P - 12345))
    b = array("i", _limbs(P - 67890))
    out = array("i", [0] * 40)
    t = array("i", [0] * 40)
    _fmul(out, a, b, t)
    got = sum(out[i] << (13 * i) for i in range(LIMBS)) % P
    if got != (P - 12345) * (P - 67890) % P:
        raise ValueError("viper field multiplication is wrong")
    start = _ms()
    for _ in range(n):
        _fmul(out, a, b, t)
    return _elapsed(start) * 1000.0 / n


def _ms():
    try:
        return time.ticks_ms()
    except AttributeError:
        return int(time.monotonic() * 1000)


def _elapsed(start):
    try:
        return time.ticks_diff(time.ticks_ms(), start)
    except AttributeError:
        return _ms() - start


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    k = bytes.fromhex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
    u = bytes.fromhex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
    ok = x25519(k, u) == bytes.fromhex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    start = _ms()
    for _ in range(n):
        x25519(k, u)
    ms = _elapsed(start) / n
    start = _ms()
    for _ in range(n):
        x25519(k, u, 32749)       # same ladder, small integers only (products < 2**30): the interpreter's share
    small = _elapsed(start) / n
    fmul = viper_field_mul_us()
    viper = "null" if fmul is None else "%.2f" % fmul
    estimate = "null" if fmul is None else "%.1f" % (fmul * FIELD_MULS_PER_X25519 / 1000)
    print('{"ms_per_x25519": %.1f, "runs": %d, "rfc7748": %s, "ladder_small_ints_ms": %.1f, '
          '"viper_field_mul_us": %s, "viper_x25519_field_muls_ms": %s}'
          % (ms, n, "true" if ok else "false", small, viper, estimate))


if __name__ == "__main__":
    main()
