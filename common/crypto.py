"""HMAC-SHA256, HKDF, AES-128 counter mode on ECB, and the replay window.

Pure functions and small objects; the same code runs on the handset and the hosts.
"""
from array import array

from common import kernels
from common.compat import MICROPYTHON, Aes128, compare_digest, hmac_digest, sha256

BLOCK = 64  # SHA-256 block size in bytes
_IPAD = bytes(0x36 for _ in range(BLOCK))
_OPAD = bytes(0x5C for _ in range(BLOCK))
# HmacKey.mac_into covers up to this many bytes (prefix and message) without allocating: a media
# frame's 8-byte timestamp and 164 bytes. Scratch shared by every key (single-threaded).
MAC_ROOM = 256
_MAC_BUF = bytearray(MAC_ROOM + 72)        # message, then its SHA-256 padding
_MAC_STATE = array("I", bytes(32))
_MAC_W = array("I", bytes(256))            # message schedule
_TAG = bytearray(32)


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def hmac_sha256_portable(key, msg):
    """HMAC-SHA256 (RFC 2104) written out; used as is on MicroPython."""
    key = bytes(key)
    if len(key) > BLOCK:
        key = sha256(key).digest()
    key = key + bytes(BLOCK - len(key))
    inner = sha256(_xor(key, _IPAD))
    inner.update(msg)
    outer = sha256(_xor(key, _OPAD))
    outer.update(inner.digest())
    return outer.digest()


hmac_sha256 = hmac_digest or hmac_sha256_portable


def hkdf(secret, salt, info, length):
    """HKDF-SHA256 (RFC 5869): extract with salt, expand with info to length bytes."""
    prk = hmac_sha256(salt or bytes(32), secret)
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


class HmacKey:
    """An HMAC-SHA256 key with its padded blocks computed once (per session, per call leg)."""

    def __init__(self, key):
        key = bytes(key)
        self.key = key
        if len(key) > BLOCK:
            key = sha256(key).digest()
        key = key + bytes(BLOCK - len(key))
        self._inner = _xor(key, _IPAD)
        self._outer = _xor(key, _OPAD)
        if MICROPYTHON:
            # the SHA-256 states after the padded key blocks, for mac_into (two blocks less per tag)
            self._istate = kernels.sha256_state(self._inner)
            self._ostate = kernels.sha256_state(self._outer)
        else:
            # CPython's hash objects can be copied: the padded key blocks are hashed
            # once per key, which halves the cost of a media tag (1.5 us vs 3.2 us)
            self._inner_state = sha256(self._inner)
            self._outer_state = sha256(self._outer)

    def _digest_copy(self, msg):
        inner = self._inner_state.copy()
        inner.update(msg)
        outer = self._outer_state.copy()
        outer.update(inner.digest())
        return outer.digest()

    def _digest2_copy(self, prefix, msg):
        inner = self._inner_state.copy()
        inner.update(prefix)
        inner.update(msg)
        outer = self._outer_state.copy()
        outer.update(inner.digest())
        return outer.digest()

    def digest(self, msg):
        inner = sha256(self._inner)
        inner.update(msg)
        outer = sha256(self._outer)
        outer.update(inner.digest())
        return outer.digest()

    def digest2(self, prefix, msg):
        """HMAC over prefix || msg without joining them (no copy on MicroPython)."""
        inner = sha256(self._inner)
        inner.update(prefix)
        inner.update(msg)
        outer = sha256(self._outer)
        outer.update(inner.digest())
        return outer.digest()

    def tag(self, msg, size):
        """Truncated tag over msg."""
        return self.digest(msg)[:size]

    def verify(self, msg, received, size):
        """True when received is exactly size bytes and is the tag of msg (a short or empty tag never is)."""
        return len(received) == size and compare_digest(self.digest(msg)[:size], received)

    def mac_into(self, prefix, msg, n, out, off, size):
        """The first size bytes of the HMAC over prefix || msg[:n] into out[off:off + size].

        On MicroPython nothing is allocated when prefix and message fit MAC_ROOM (a media
        frame): SHA-256 runs in common.kernels from the states after the key blocks."""
        p = len(prefix)
        if not MICROPYTHON or p + n > MAC_ROOM:
            out[off:off + size] = self.digest2(prefix, memoryview(msg)[:n])[:size]
            return
        buf, state, w = _MAC_BUF, _MAC_STATE, _MAC_W
        kernels.copy_bytes(buf, 0, prefix, 0, p)
        kernels.copy_bytes(buf, p, msg, 0, n)
        blocks = kernels.sha256_pad(buf, p + n, BLOCK + p + n)
        kernels.sha256_blocks(state, self._istate, buf, 0, blocks, w)
        kernels.sha256_put(buf, 0, state, 32)
        kernels.sha256_pad(buf, 32, BLOCK + 32)
        kernels.sha256_blocks(state, self._ostate, buf, 0, 1, w)
        kernels.sha256_put(out, off, state, size)

    def verify_into(self, prefix, msg, n, tag, off, size):
        """True when tag[off:off + size] is the first size bytes of the HMAC over prefix || msg[:n]
        (compared in constant time; allocates nothing where mac_into does not)."""
        self.mac_into(prefix, msg, n, _TAG, 0, size)
        return kernels.equal(_TAG, 0, tag, off, size)


if not MICROPYTHON:
    HmacKey.digest = HmacKey._digest_copy
    HmacKey.digest2 = HmacKey._digest2_copy


class CounterMode:
    """AES-128-CTR built on ECB: keystream block i = AES(nonce12 || be32(i)).

    Buffers are allocated once; `crypt` XORs in place, so sealing a media frame
    allocates nothing beyond what the AES primitive itself does.
    """

    def __init__(self, key, max_len=256):
        self._aes = Aes128(key)
        blocks = (max_len + 15) // 16
        self.max_len = 16 * blocks
        if MICROPYTHON:
            self._counter = bytearray(16 * blocks)
            self._stream = bytearray(16 * blocks)
            # the counter blocks of each length as a view, made on first use: cryptolib takes
            # the length from its input, and slicing a memoryview allocates every time
            self._counter_views = [None] * (blocks + 1)
        else:
            # a host holds thousands of sessions: they share one keystream scratch buffer
            # (used and consumed within one call, single-threaded), 1 KB less per session
            self._counter = None
            self._stream = _SCRATCH

    def crypt(self, nonce, buf, start, end):
        """XOR buf[start:end] with the keystream for nonce (12 bytes), in place."""
        if not MICROPYTHON:
            return self._crypt_wide(nonce, buf, start, end)
        n = end - start
        if n <= 0:
            return
        if n > self.max_len:
            raise ValueError("payload longer than counter-mode buffer")
        blocks = (n + 15) // 16
        kernels.ctr_blocks(self._counter, nonce, blocks)
        view = self._counter_views[blocks]
        if view is None:
            view = self._counter_views[blocks] = memoryview(self._counter)[:16 * blocks]
        self._aes.encrypt_blocks(view, self._stream)
        kernels.xor_into(buf, start, self._stream, 0, n)

    # CPython: per-byte loops cost ~15 us a frame in bytecode, so the host builds the
    # counter blocks with one join and XORs as one big integer (~1.5 us). Same keystream,
    # same result; MicroPython runs the allocation-free viper kernels (common/kernels.py).

    def keystream_int(self, nonce, n):
        """CPython only: the first n keystream bytes for nonce as one big-endian integer."""
        if n > self.max_len:
            raise ValueError("payload longer than counter-mode buffer")
        stream = self._stream
        self._aes.encrypt_blocks(bytes(nonce).join(_CTR_SUFFIXES[:((n + 15) >> 4) + 1]), stream)
        return int.from_bytes(stream[:n] if n < len(stream) else stream, "big")

    def crypt_bytes(self, nonce, src):
        """src XORed with the keystream for nonce, as a new buffer (src is left as it is)."""
        n = len(src)
        if not MICROPYTHON:
            if n == 0:
                return b""
            if n > self.max_len:
                raise ValueError("payload longer than counter-mode buffer")
            stream = self._stream   # keystream_int inlined: this runs twice per relayed frame
            self._aes.encrypt_blocks(bytes(nonce).join(_CTR_SUFFIXES[:((n + 15) >> 4) + 1]), stream)
            x = int.from_bytes(src, "big") ^ int.from_bytes(stream[:n] if n < len(stream) else stream, "big")
            return x.to_bytes(n, "big")
        out = bytearray(src)
        self.crypt(nonce, out, 0, n)
        return out

    def _crypt_wide(self, nonce, buf, start, end):
        n = end - start
        if n <= 0:
            return
        x = int.from_bytes(buf[start:end], "big") ^ self.keystream_int(nonce, n)
        buf[start:end] = x.to_bytes(n, "big")


# counter block suffixes be32(i) for CPython's counter mode, enough for 4 KB payloads
_CTR_SUFFIXES = None if MICROPYTHON else [b""] + [i.to_bytes(4, "big") for i in range(256)]
_SCRATCH = None if MICROPYTHON else bytearray(16 * 256)


class ReplayWindow:
    """Sliding window over packet numbers (RFC 6479 style): one bit per slot, no bignums.

    Media numbers are timestamps in ms, 20 apart: 1024 slots accept a frame up to
    about one second late (more than the jitter buffer's 120 ms holds anyway). The
    1024 slots take 128 bytes: a handset's heap holds one window per media leg.
    """

    SIZE = 1024

    def __init__(self):
        self.highest = -1
        self._seen = bytearray(self.SIZE >> 3)
        self._held = -1  # the last authentic number that jumped more than SIZE ahead

    def jump_ok(self, number):
        """After authentication: may number move the window? False holds a far jump.

        A number more than SIZE above the highest would push every number the
        sender is still sending out of the window. A 4-byte media tag lets one
        forgery in 2**32 through, so such a jump is held until a second
        authentic number follows it (at most SIZE above it): a legitimate sender
        loses one frame after a long gap, a lucky forger moves nothing.
        """
        if self.highest < 0 or number - self.highest <= self.SIZE:
            return True
        held = self._held
        self._held = number
        return held < number <= held + self.SIZE

    def check(self, number):
        """True when number is new: not seen and not older than the window."""
        if number > self.highest:
            return True
        if self.highest - number >= self.SIZE:
            return False
        slot = number % self.SIZE
        return not self._seen[slot >> 3] & (1 << (slot & 7))

    def mark(self, number):
        """Record number as seen; call only after the packet authenticated."""
        seen = self._seen
        if number > self.highest:
            gap = number - self.highest
            if gap >= self.SIZE:
                for i in range(len(seen)):
                    seen[i] = 0
            elif gap > 1:
                # clear the skipped slots a byte at a time, not a bit at a time: media
                # numbers are ms, 20 apart, so 19 slots a frame (twice per relayed frame)
                a = (self.highest + 1) % self.SIZE
                b = number % self.SIZE
                if a < b:
                    _clear_slots(seen, a, b)
                else:
                    _clear_slots(seen, a, self.SIZE)
                    _clear_slots(seen, 0, b)
            self.highest = number
        slot = number % self.SIZE
        seen[slot >> 3] |= 1 << (slot & 7)


def _clear_slots(seen, a, b):
    """Clear bits a .. b-1 of a bitmap (slot s is bit s & 7 of byte s >> 3); allocates nothing."""
    if a >= b:
        return
    first = a >> 3
    last = b >> 3
    if first == last:
        seen[first] &= ~(((1 << (b - a)) - 1) << (a & 7)) & 0xFF
        return
    seen[first] &= (1 << (a & 7)) - 1
    for i in range(first + 1, last):
        seen[i] = 0
    if b & 7:
        seen[last] &= ~((1 << (b & 7)) - 1) & 0xFF


def extend16(highest, value):
    """The 64-bit number whose low 16 bits are value, closest to highest (SRTP-style)."""
    if highest < 0:
        return value
    base = highest & ~0xFFFF
    candidate = base | value
    if candidate - highest > 0x8000 and candidate >= 0x10000:
        candidate -= 0x10000
    elif highest - candidate > 0x8000:
        candidate += 0x10000
    return candidate
