"""HMAC-SHA256, HKDF, AES-128 counter mode on ECB, and the replay window.

Pure functions and small objects with one interface on the handset and the hosts. On
MicroPython (the handset) HMAC and counter mode run on the viper kernels (common/kernels.py)
with scratch buffers made once and shared by every key (single-threaded): nothing is allocated
per frame and a key holds only what is its own. On CPython (the hosts) HmacKey and CounterMode
come from common/crypto_cpython.py (hashlib copies, big-integer XOR), which a handset never loads.
"""
from array import array

from . import kernels
from .compat import MICROPYTHON, const, micropython, sha256

BLOCK = 64  # SHA-256 block size in bytes
_IPAD = bytes(0x36 for _ in range(BLOCK))
_OPAD = bytes(0x5C for _ in range(BLOCK))
# HmacKey.mac_into hashes prefix and message MAC_ROOM bytes at a time through this scratch (a
# media frame's 8-byte timestamp and 164 bytes fit at once), shared by every key
MAC_ROOM = 256


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


if MICROPYTHON:
    import cryptolib

    _MAC_BUF = bytearray(MAC_ROOM + 72)   # message blocks, then their SHA-256 padding
    _MAC_STATE = array("I", bytes(32))
    _MAC_W = array("I", bytes(256))       # message schedule
    _TAG = bytearray(32)

    class HmacKey:
        """An HMAC-SHA256 key, kept as the SHA-256 states after its padded key blocks (computed
        once per session or call leg): a tag costs the message's blocks and one more, in viper."""

        def __init__(self, key):
            key = self.key = bytes(key)
            if len(key) > BLOCK:
                key = sha256(key).digest()
            self._istate = self._state(key, _IPAD)
            self._ostate = self._state(key, _OPAD)

        @staticmethod
        def _state(key, pad):
            block = bytearray(pad)
            kernels.xor_into(block, 0, key, 0, len(key))
            state = array("I", bytes(32))
            kernels.sha256_blocks(state, kernels.SHA256_IV, block, 0, 1, _MAC_W)
            return state

        @micropython.native
        def mac_into(self, prefix, msg, n, out, off, size):
            """The first size bytes of the HMAC over prefix || msg[:n] into out[off:off + size].

            Allocates nothing, whatever the lengths: the message is hashed MAC_ROOM bytes at a time."""
            state, buf, w = _MAC_STATE, _MAC_BUF, _MAC_W
            p = len(prefix)
            if p + n <= MAC_ROOM:   # a media frame: both at once, and the rest of the HMAC in one kernel
                kernels.copy_bytes(buf, 0, prefix, 0, p)
                kernels.copy_bytes(buf, p, msg, 0, n)
                kernels.hmac_final(state, self._istate, self._ostate, buf, p + n, BLOCK + p + n, w)
            else:
                self._inner_long(prefix, p, msg, n)
                kernels.sha256_put(buf, 0, state, 32)
                kernels.sha256_pad(buf, 32, BLOCK + 32)
                kernels.sha256_blocks(state, self._ostate, buf, 0, 1, w)
            kernels.sha256_put(out, off, state, size)

        def _inner_long(self, prefix, p, msg, n):
            """The inner hash of prefix || msg[:n] into _MAC_STATE, MAC_ROOM bytes at a time."""
            state, buf, w = _MAC_STATE, _MAC_BUF, _MAC_W
            init = self._istate
            src, count, pos, have, last = prefix, p, 0, 0, False
            while True:
                take = count - pos
                if take > MAC_ROOM - have:
                    take = MAC_ROOM - have
                kernels.copy_bytes(buf, have, src, pos, take)
                pos += take
                have += take
                if have == MAC_ROOM:   # four whole blocks
                    kernels.sha256_blocks(state, init, buf, 0, MAC_ROOM >> 6, w)
                    init = state
                    have = 0
                if pos == count:
                    if last:
                        break
                    src, count, pos, last = msg, n, 0, True
            blocks = kernels.sha256_pad(buf, have, BLOCK + p + n)
            kernels.sha256_blocks(state, init, buf, 0, blocks, w)

        @micropython.native
        def verify_into(self, prefix, msg, n, tag, off, size):
            """True when tag[off:off + size] is the first size bytes of the HMAC over prefix || msg[:n]
            (compared in constant time; allocates nothing)."""
            self.mac_into(prefix, msg, n, _TAG, 0, size)
            return kernels.equal(_TAG, 0, tag, off, size)

        def digest2(self, prefix, msg):
            """HMAC over prefix || msg, without joining them."""
            out = bytearray(32)
            self.mac_into(prefix, msg, len(msg), out, 0, 32)
            return bytes(out)

        def digest(self, msg):
            return self.digest2(b"", msg)

        def tag(self, msg, size):
            """Truncated tag over msg."""
            return self.digest2(b"", msg)[:size]

        def verify(self, msg, received, size):
            """True when received is exactly size bytes and is the tag of msg (a short or empty tag never is)."""
            return len(received) == size and self.verify_into(b"", msg, len(msg), received, 0, size)

    def hmac_sha256(key, msg):
        return HmacKey(key).digest(msg)

    # counter mode's scratch, shared by every CounterMode (used and consumed within one call,
    # single-threaded): the counter blocks of up to one voice payload (longer signalling goes
    # through in such pieces), their encryption (the keystream), and a view of the counter blocks
    # for each block count (cryptolib takes the length from its input, and slicing a memoryview
    # allocates every time)
    _CTR_PIECE = const(160)
    _ctr_blocks = bytearray(_CTR_PIECE)
    _ctr_stream = bytearray(_CTR_PIECE)
    _ctr_views = [None] * (_CTR_PIECE // 16 + 1)

    class CounterMode:
        """AES-128-CTR built on ECB: keystream block i = AES(nonce12 || be32(i)).

        `crypt` XORs in place and allocates nothing: the counter blocks and keystream are built in
        scratch shared by every CounterMode; a CounterMode holds only its AES key schedule."""

        def __init__(self, key, max_len=256):
            self._aes = cryptolib.aes(bytes(key), 1)   # ECB
            self.max_len = 16 * ((max_len + 15) // 16)

        @micropython.native
        def crypt(self, nonce, buf, start, end):
            """XOR buf[start:end] with the keystream for nonce (12 bytes), in place."""
            n = end - start
            if n > self.max_len:
                raise ValueError("payload longer than counter-mode buffer")
            first = 0
            while n > 0:
                take = n if n < _CTR_PIECE else _CTR_PIECE
                blocks = (take + 15) >> 4
                kernels.ctr_blocks(_ctr_blocks, nonce, first, blocks)
                view = _ctr_views[blocks]
                if view is None:
                    view = _ctr_views[blocks] = memoryview(_ctr_blocks)[:16 * blocks]
                self._aes.encrypt(view, _ctr_stream)
                kernels.xor_into(buf, start, _ctr_stream, 0, take)
                start += take
                n -= take
                first += blocks

        def crypt_bytes(self, nonce, src):
            """src XORed with the keystream for nonce, as a new buffer (src is left as it is)."""
            out = bytearray(src)
            self.crypt(nonce, out, 0, len(out))
            return out

else:
    from .crypto_cpython import CounterMode, HmacKey, hmac_sha256  # noqa: F401


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

    @micropython.native
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

    @micropython.native
    def check(self, number):
        """True when number is new: not seen and not older than the window."""
        if number > self.highest:
            return True
        if self.highest - number >= self.SIZE:
            return False
        slot = number % self.SIZE
        return not self._seen[slot >> 3] & (1 << (slot & 7))

    @micropython.native
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


@micropython.native
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


@micropython.native
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


def __getattr__(name):
    """hmac_sha256_portable: HMAC-SHA256 written out on hashlib, the reference the tests check the
    viper HMAC against (common/kernels_portable.py)."""
    if name == "hmac_sha256_portable":
        from .kernels_portable import hmac_sha256_portable
        return hmac_sha256_portable
    raise AttributeError(name)
