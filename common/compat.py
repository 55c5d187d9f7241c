"""The one place where MicroPython and CPython differ for common/.

Everything else in common/ imports `const`, `MICROPYTHON`, `sha256`, `hmac_digest`,
`Aes128` and the tick arithmetic from here and never tests the interpreter itself.

Time in common/ (and firmware/) is integer milliseconds passed in. On a handset that is
`time.ticks_ms()`, which wraps (every 2**30 ms, 12.4 days, on 32-bit ports such as the
ESP32); on a CPython host it is a monotonic count that never wraps. So every sum of a time
and a delay is `ticks_add(t, ms)`, every comparison or difference of two times is
`ticks_diff(a, b)` (a - b, signed), never `+`, `-`, `<` or `min()` on raw times.
"""
try:
    from micropython import const
    MICROPYTHON = True
except ImportError:
    MICROPYTHON = False

    def const(value):
        return value

from hashlib import sha256

try:
    from time import ticks_add, ticks_diff  # MicroPython: modulo the port's tick period, in C
except ImportError:
    def ticks_add(ticks, delta):
        """A time plus a delay (ms); CPython hosts pass a monotonic ms that never wraps."""
        return ticks + delta

    def ticks_diff(a, b):
        """a - b in ms, signed (positive when a is later)."""
        return a - b


def ticks_earliest(a, b):
    """The earlier of two times, either of which may be None (no timer)."""
    if a is None:
        return b
    if b is None or ticks_diff(a, b) <= 0:
        return a
    return b


try:
    import cryptolib

    class Aes128:
        """AES-128 block encryption (ECB), the primitive counter mode is built on."""

        def __init__(self, key):
            self._aes = cryptolib.aes(bytes(key), 1)

        def encrypt_block(self, block, out):
            self._aes.encrypt(block, out)

        def encrypt_blocks(self, blocks, out):
            # cryptolib handles any multiple of 16 bytes in one call
            self._aes.encrypt(blocks, out)

except ImportError:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    class Aes128:
        """AES-128 block encryption (ECB), the primitive counter mode is built on."""

        def __init__(self, key):
            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt_block(self, block, out):
            out[:16] = self._enc.update(bytes(block))

        def encrypt_blocks(self, blocks, out):
            out[:len(blocks)] = self._enc.update(bytes(blocks))

if MICROPYTHON:
    hmac_digest = None  # common.crypto uses its own HMAC
else:
    import hmac as _stdlib_hmac

    def hmac_digest(key, msg):
        """HMAC-SHA256 from CPython's stdlib (fast path on the hosts)."""
        return _stdlib_hmac.digest(bytes(key), bytes(msg), "sha256")


def compare_digest(a, b):
    """Constant-time comparison of two byte strings of equal length."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
