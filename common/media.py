"""Media call legs: sealing and opening mini frames and trunk entries.

A call leg is one hop of a call's media (phone <-> host, host <-> host, or
phone <-> phone on the LAN). Whoever sets the leg up issues a random 16-byte
media key in the (encrypted) signalling; both ends derive directional keys from
it, so no two legs ever share a keystream. The timestamp, extended to 64 bits,
is the packet number: it makes the counter-mode nonce and drives the replay window.
"""
from common import kernels, wire
from common.compat import MICROPYTHON, compare_digest
from common.crypto import CounterMode, HmacKey, ReplayWindow, extend16, hkdf

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

    def seal_mini(self, ts, payload):
        """A mini frame (memoryview of an internal buffer) carrying payload at timestamp ts (ms)."""
        n = len(payload)
        out = self.out
        wire.pack_mini_header(out, self.peer_call_no, ts & 0xFFFF)
        end = wire.MINI_HEADER + n
        out[wire.MINI_HEADER:end] = payload
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

    def seal_entry(self, buf, offset, ts, payload):
        """Append this leg's trunk entry at offset (encrypted; the trunk carries the tag)."""
        n = len(payload)
        start = wire.pack_trunk_entry(buf, offset, self.peer_call_no, ts & 0xFFFF, n == wire.CN_BYTES)
        end = start + n
        _put_ts(self._send_nonce, ts)
        if MICROPYTHON:
            buf[start:end] = payload
            self._send_ctr.crypt(self._send_nonce, buf, start, end)
        else:
            buf[start:end] = self._send_ctr.crypt_bytes(self._send_nonce, payload)
        self.sent += 1
        return end

    def extend(self, ts16):
        """The 64-bit timestamp this leg reads for a received 16-bit one."""
        return extend16(self.replay.highest, ts16)

    def open_entry(self, buf, ts, start, end):
        """Decrypt a trunk entry (64-bit ts from open_trunk) in place; ts, or None for a replay."""
        if not self.replay.check(ts) or (ts - self.replay.highest > _JUMP and not self.replay.jump_ok(ts)):
            self.rejected += 1
            return None
        self.replay.mark(ts)
        _put_ts(self._recv_nonce, ts)
        self._recv_ctr.crypt(self._recv_nonce, buf, start, end)
        self.received += 1
        return ts

    def open_entry_bytes(self, buf, ts, start, end):
        """Like open_entry, but the decrypted payload comes back as a new buffer and buf stays as it is.

        A relaying host forwards the payload to another leg anyway: this saves
        writing it back into the received frame only to copy it out again.
        """
        if not self.replay.check(ts) or (ts - self.replay.highest > _JUMP and not self.replay.jump_ok(ts)):
            self.rejected += 1
            return None
        self.replay.mark(ts)
        _put_ts(self._recv_nonce, ts)
        self.received += 1
        return self._recv_ctr.crypt_bytes(self._recv_nonce, buf[start:end])


if MICROPYTHON:
    def _put_ts(nonce, ts):
        if ts >> 30:  # no longer a small int (a call of 12.4 days): byte by byte
            for i in range(8):
                nonce[11 - i] = (ts >> (8 * i)) & 0xFF
        else:
            kernels.put_be32(nonce, 4, 0)
            kernels.put_be32(nonce, 8, ts)

    def _ts64(ts):
        return bytes((ts >> (8 * (7 - i))) & 0xFF for i in range(8))
else:
    # CPython: one C call instead of an 8-step bytecode loop (twice per relayed frame)
    def _put_ts(nonce, ts):
        nonce[4:12] = ts.to_bytes(8, "big")

    def _ts64(ts):
        return ts.to_bytes(8, "big")


def seal_trunk(session_auth, session_index, entries, buf):
    """Pack a trunk frame into buf from [(leg, ts, payload)]; returns a memoryview of it.

    session_auth is the HmacKey of the host-to-host session; session_index the peer's.
    The tag covers the frame and the 64-bit timestamp of every entry, in order.
    """
    wire.pack_trunk_header(buf, session_index)
    offset = wire.TRUNK_HEADER
    stamps = []
    for leg, ts, payload in entries:
        offset = leg.seal_entry(buf, offset, ts, payload)
        stamps.append(_ts64(ts))
    view = memoryview(buf)
    buf[offset:offset + wire.MEDIA_TAG] = session_auth.digest2(b"".join(stamps), view[:offset])[:wire.MEDIA_TAG]
    return view[:offset + wire.MEDIA_TAG]


def trunk_capacity(calls):
    """Bytes of a trunk frame carrying `calls` voice entries."""
    return wire.TRUNK_HEADER + calls * (wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES) + wire.MEDIA_TAG


def open_trunk(session_auth, frame, extend):
    """Entries [(call_no, ts64, start, end)] of an authentic trunk frame, else None.

    extend(call_no, ts16) gives the receiver's 64-bit reading of an entry's
    timestamp (None when the call is unknown: the frame cannot be checked).
    Raises wire.DecodeError for a malformed frame. Payloads stay encrypted until
    the owning leg's open_entry decrypts them.
    """
    entries = wire.parse_trunk(frame)
    stamps = []
    opened = []
    for call_no, ts16, start, end in entries:
        ts = extend(call_no, ts16)
        if ts is None:
            return None
        stamps.append(_ts64(ts))
        opened.append((call_no, ts, start, end))
    n = len(frame)
    view = memoryview(frame)
    expected = session_auth.digest2(b"".join(stamps), view[:n - wire.MEDIA_TAG])[:wire.MEDIA_TAG]
    if not compare_digest(expected, view[n - wire.MEDIA_TAG:n]):
        return None
    return opened


CODEC_BYTES_PER_MS = {"g711": 8}   # G.711 mu-law or A-law: 8000 samples/s, one byte each


def call_kbps(calls, trunks=1, codec="g711", ptime_ms=20):
    """Wire kbps, one direction, of `calls` calls carried as trunk entries in `trunks` datagrams per ptime_ms.

    Each call adds an entry (4-byte header + payload) per packet; each trunk
    datagram adds its header, tag and IPv4+UDP headers (docs/bandwidth.md).
    """
    payload = CODEC_BYTES_PER_MS[codec] * ptime_ms
    per_packet = (calls * (wire.TRUNK_ENTRY_HEADER + payload)
                  + trunks * (wire.TRUNK_HEADER + wire.MEDIA_TAG + wire.IP_UDP_HEADERS))
    return per_packet * 8 / ptime_ms
