"""The one place where MicroPython and CPython differ for common/.

Everything else in common/ imports `const`, `MICROPYTHON`, `sha256`, `hmac_digest`
and `Aes128` from here and never tests the interpreter itself.
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
