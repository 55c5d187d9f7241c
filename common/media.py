"""Media call legs: sealing and opening mini frames (and, with common/trunk.py, trunk entries).

A call leg is one hop of a call's media (phone <-> host, host <-> host, or
phone <-> phone on the LAN). Whoever sets the leg up issues a random 16-byte
media key in the (encrypted) signalling; both ends derive directional keys from
it, so no two legs ever share a keystream. The timestamp, extended to 64 bits,
is the packet number: it makes the counter-mode nonce and drives the replay window.

Trunk frames (host to host) live in common/trunk.py, which also gives MediaLeg its trunk-entry
methods (seal_entry, open_entry_bytes). A handset never sends or receives
a trunk frame and never loads that module; on CPython (the hosts) it is imported at the end of
this one, and on MicroPython at the first use of one of its names here (`__getattr__`).
"""
from . import kernels, wire
from .compat import MICROPYTHON, micropython
from .crypto import CounterMode, HmacKey, ReplayWindow, extend16, hkdf

_MAX_FRAME = wire.MINI_HEADER + wire.VOICE_BYTES + wire.MEDIA_TAG
_JUMP = ReplayWindow.SIZE  # a timestamp further ahead than this must be confirmed (ReplayWindow.jump_ok)


def leg_keys(media_key, role):
    """(send_auth, send_enc, recv_auth, recv_enc) for the end with this role (0 = set-up side)."""
    material = hkdf(media_key, b"", b"upbx v2 media", 96)
    mine = material[48 * role:48 * role + 48]
    theirs = material[48 * (1 - role):48 * (1 - role) + 48]
    return mine[:32], mine[32:], theirs[:32], theirs[32:]


class MediaLeg:
    """One end of a call leg. `peer_call_no` addresses frames we send; `call_no` ours."""

    def __init__(self, media_key, role, call_no, peer_call_no):
        send_auth, send_enc, recv_auth, recv_enc = leg_keys(media_key, role)
        self.role = role
        self.call_no = call_no
        self.peer_call_no = peer_call_no
        self._send_auth = HmacKey(send_auth)
        self._recv_auth = HmacKey(recv_auth)
        self._send_ctr = CounterMode(send_enc, wire.VOICE_BYTES)
        self._recv_ctr = CounterMode(recv_enc, wire.VOICE_BYTES)
        self._send_nonce = bytearray(12)
        self._recv_nonce = bytearray(12)
        self._send_nonce[0] = self._recv_nonce[0] = 1  # domain: media
        self._send_nonce[1] = role
        self._recv_nonce[1] = 1 - role
        self._send_ts = memoryview(self._send_nonce)[4:]   # the 64-bit timestamp the tags cover
        self._recv_ts = memoryview(self._recv_nonce)[4:]
        self.replay = ReplayWindow()
        self.out = bytearray(_MAX_FRAME)
        self._views = {}   # frame length -> view of out: made once, not per frame
        self.sent = 0
        self.received = 0
        self.rejected = 0

    def receive_only(self):
        """This end sends nothing more on this leg (a handset whose call's media now goes straight
        to the other phone, B3): its sending key, AES schedule and frame buffer are let go, which
        on a handset's heap is room for the other leg. seal_mini cannot be used after this."""
        self._send_auth = self._send_ctr = self.out = None
        self._views = {}

    @micropython.native
    def seal_mini(self, ts, payload):
        """A mini frame (memoryview of an internal buffer) carrying payload at timestamp ts (ms)."""
        n = len(payload)
        out = self.out
        wire.pack_mini_header(out, self.peer_call_no, ts & 0xFFFF)
        end = wire.MINI_HEADER + n
        _copy(out, wire.MINI_HEADER, payload, 0, n)
        _put_ts(self._send_nonce, ts)
        self._send_ctr.crypt(self._send_nonce, out, wire.MINI_HEADER, end)
        # the tag covers the 64-bit timestamp, so a frame replayed after the 16-bit wrap fails
        self._send_auth.mac_into(self._send_ts, out, end, out, end, wire.MEDIA_TAG)
        self.sent += 1
        end += wire.MEDIA_TAG
        view = self._views.get(end)
        if view is None:
            view = self._views[end] = memoryview(out)[:end]
        return view

    @micropython.native
    def open_mini(self, frame):
        """Timestamp (extended) of an authentic, new mini frame, decrypted in place; else None.

        frame must be a writable buffer (bytearray or memoryview of one).
        """
        n = len(frame)
        end = n - wire.MEDIA_TAG
        wire.check_mini(frame)
        ts = extend16(self.replay.highest, (frame[2] << 8) | frame[3])
        if not self.replay.check(ts):
            self.rejected += 1
            return None
        _put_ts(self._recv_nonce, ts)
        if not self._recv_auth.verify_into(self._recv_ts, frame, end, frame, end, wire.MEDIA_TAG):
            self.rejected += 1
            return None
        if ts - self.replay.highest > _JUMP and not self.replay.jump_ok(ts):
            self.rejected += 1
            return None
        self.replay.mark(ts)
        self._recv_ctr.crypt(self._recv_nonce, frame, wire.MINI_HEADER, end)
        self.received += 1
        return ts


if MICROPYTHON:
    # a viper copy, not a slice: native code would put the slice object on the heap (docs/handset.md,
    # "Native code")
    _copy = kernels.copy_bytes

    @micropython.native
    def _put_ts(nonce, ts):
        if ts >> 30:  # no longer a small int (a call of 12.4 days): byte by byte
            for i in range(8):
                nonce[11 - i] = (ts >> (8 * i)) & 0xFF
        else:
            kernels.put_be64(nonce, 4, ts)

else:
    def _copy(dst, doff, src, soff, n):
        """CPython (the hosts seal every relayed frame): one C copy, not kernels' bytecode reference."""
        dst[doff:doff + n] = src[soff:soff + n]

    # CPython: one C call instead of an 8-step bytecode loop (twice per relayed frame)
    def _put_ts(nonce, ts):
        nonce[4:12] = ts.to_bytes(8, "big")


_TRUNK = ("seal_trunk", "open_trunk", "trunk_capacity", "call_kbps", "CODEC_BYTES_PER_MS")


def __getattr__(name):
    """seal_trunk, open_trunk, trunk_capacity, call_kbps ...: from common.trunk, loaded on first use."""
    if name not in _TRUNK:
        raise AttributeError(name)
    from . import trunk
    value = getattr(trunk, name)
    globals()[name] = value
    return value


if not MICROPYTHON:   # the hosts: all of them now (named through _TRUNK, not an import list a handset would load)
    for _name in _TRUNK:
        __getattr__(_name)
    del _name
