"""HmacKey and CounterMode for CPython (the hosts); common.crypto takes them from here.

The same interface and results as the handset's viper implementations in common/crypto.py, built
for a host's speed: HMAC from copied hashlib states (the padded key blocks hashed once per key),
counter mode as one big-integer XOR over a keystream made by one AES call on joined counter
blocks, AES from the `cryptography` package. A handset never imports this module; common.crypto
imports it at its end on CPython, after the names taken here.
"""
import hmac as _stdlib_hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import kernels
from .compat import compare_digest, sha256
from .crypto import BLOCK, _IPAD, _OPAD


def _xor(a, b):
    # one integer operation: a padded key block is XORed at every session's and call leg's key set-up
    n = len(a)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b[:n], "big")).to_bytes(n, "big")


def hmac_sha256(key, msg):
    """HMAC-SHA256 from CPython's stdlib."""
    return _stdlib_hmac.digest(bytes(key), bytes(msg), "sha256")


class HmacKey:
    """An HMAC-SHA256 key with its padded blocks hashed once (per session, per call leg).

    CPython's hash objects can be copied: a media tag then costs 1.5 us instead of 3.2 us."""

    def __init__(self, key):
        key = bytes(key)
        self.key = key
        if len(key) > BLOCK:
            key = sha256(key).digest()
        key = key + bytes(BLOCK - len(key))
        self._inner_state = sha256(_xor(key, _IPAD))
        self._outer_state = sha256(_xor(key, _OPAD))

    def digest(self, msg):
        inner = self._inner_state.copy()
        inner.update(msg)
        outer = self._outer_state.copy()
        outer.update(inner.digest())
        return outer.digest()

    def digest2(self, prefix, msg):
        """HMAC over prefix || msg without joining them."""
        inner = self._inner_state.copy()
        inner.update(prefix)
        inner.update(msg)
        outer = self._outer_state.copy()
        outer.update(inner.digest())
        return outer.digest()

    def tag(self, msg, size):
        """Truncated tag over msg."""
        return self.digest(msg)[:size]

    def verify(self, msg, received, size):
        """True when received is exactly size bytes and is the tag of msg (a short or empty tag never is)."""
        return len(received) == size and compare_digest(self.digest(msg)[:size], received)

    def mac_into(self, prefix, msg, n, out, off, size):
        """The first size bytes of the HMAC over prefix || msg[:n] into out[off:off + size]."""
        out[off:off + size] = self.digest2(prefix, memoryview(msg)[:n])[:size]

    def verify_into(self, prefix, msg, n, tag, off, size):
        """True when tag[off:off + size] is the first size bytes of the HMAC over prefix || msg[:n]."""
        expected = self.digest2(prefix, memoryview(msg)[:n])
        return kernels.equal(expected, 0, tag, off, size)


# counter block suffixes be32(i), enough for 4 KB payloads
_CTR_SUFFIXES = [b""] + [i.to_bytes(4, "big") for i in range(256)]
# a host holds thousands of sessions: they share one keystream scratch buffer (used and consumed
# within one call, single-threaded), 1 KB less per session
_SCRATCH = bytearray(16 * 256)


class CounterMode:
    """AES-128-CTR built on ECB: keystream block i = AES(nonce12 || be32(i)).

    Per-byte loops cost ~15 us a frame in bytecode, so the host builds the counter blocks with
    one join and XORs as one big integer (~1.5 us): the same keystream and result as the
    handset's allocation-free viper kernels."""

    def __init__(self, key, max_len=256):
        self.key = bytes(key)   # for the hosts' C fast path (host/_fastpath.c), which keys OpenSSL with it
        self._enc = Cipher(algorithms.AES(self.key), modes.ECB()).encryptor()
        blocks = (max_len + 15) // 16
        self.max_len = 16 * blocks
        self._stream = _SCRATCH

    def keystream_int(self, nonce, n):
        """The first n keystream bytes for nonce as one big-endian integer."""
        if n > self.max_len:
            raise ValueError("payload longer than counter-mode buffer")
        stream = self._stream
        blocks = bytes(nonce).join(_CTR_SUFFIXES[:((n + 15) >> 4) + 1])
        stream[:len(blocks)] = self._enc.update(blocks)
        return int.from_bytes(stream[:n] if n < len(stream) else stream, "big")

    def crypt(self, nonce, buf, start, end):
        """XOR buf[start:end] with the keystream for nonce (12 bytes), in place."""
        n = end - start
        if n <= 0:
            return
        x = int.from_bytes(buf[start:end], "big") ^ self.keystream_int(nonce, n)
        buf[start:end] = x.to_bytes(n, "big")

    def crypt_bytes(self, nonce, src):
        """src XORed with the keystream for nonce, as a new buffer (src is left as it is)."""
        n = len(src)
        if n == 0:
            return b""
        if n > self.max_len:
            raise ValueError("payload longer than counter-mode buffer")
        stream = self._stream   # keystream_int inlined: this runs twice per relayed frame
        blocks = bytes(nonce).join(_CTR_SUFFIXES[:((n + 15) >> 4) + 1])
        stream[:len(blocks)] = self._enc.update(blocks)
        x = int.from_bytes(src, "big") ^ int.from_bytes(stream[:n] if n < len(stream) else stream, "big")
        return x.to_bytes(n, "big")
