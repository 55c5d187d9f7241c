"""Trunk frames: the media of many calls between two hosts in one datagram per tick (B5).

    trunk 11ssssss ssssssss ssssssss {Fccccccc cccccccc ts(2) payload}... tag(4)

    trunk = seal_trunk(session_auth, peer_index, [(leg, ts, payload), ...], buf)
    entries = open_trunk(session_auth, frame, extend)    -> [(call_no, ts64, start, end)]
    leg.open_entry_bytes(frame, ts64, start, end)         -> one entry's payload, decrypted

The trunk's tag (the host-to-host session's key) covers the frame and every entry's 64-bit
timestamp; each entry is encrypted with its own call leg's keys. Importing this module gives
common.media.MediaLeg its trunk-entry methods (seal_entry, open_entry_bytes).
A handset never sends or receives a trunk frame, so it never loads this module (docs/handset.md,
Memory): common.media imports it at its end on CPython, and on MicroPython at the first use of
one of its names there.
"""
from .compat import MICROPYTHON, compare_digest
from .media import _JUMP, MediaLeg, _put_ts
from .wire import CN_BYTES, IP_UDP_HEADERS, MEDIA_TAG, TRUNK_ENTRY_HEADER, TRUNK_HEADER, VOICE_BYTES, DecodeError, check_mini


# --- the codec (common.wire names these too: wire.parse_trunk ...) ---------------------------

def parse_mini(data):
    """(call_no, ts16) of a mini frame; payload is data[4:-4], tag data[-4:]."""
    return check_mini(data), (data[2] << 8) | data[3]


def pack_trunk_header(buf, session):
    buf[0] = 0xC0 | ((session >> 16) & 0x3F)
    buf[1] = (session >> 8) & 0xFF
    buf[2] = session & 0xFF


def pack_trunk_entry(buf, offset, call_no, ts, comfort_noise):
    buf[offset] = ((call_no >> 8) & 0x7F) | (0x80 if comfort_noise else 0)
    buf[offset + 1] = call_no & 0xFF
    buf[offset + 2] = (ts >> 8) & 0xFF
    buf[offset + 3] = ts & 0xFF
    return offset + TRUNK_ENTRY_HEADER


def parse_trunk(data):
    """List of (call_no, ts16, payload_start, payload_end) of a trunk frame."""
    n = len(data)
    if n < TRUNK_HEADER + TRUNK_ENTRY_HEADER + CN_BYTES + MEDIA_TAG:
        raise DecodeError("trunk frame", n, "shorter than one entry (%d bytes)" % n)
    if data[0] & 0xC0 != 0xC0:
        raise DecodeError("frame kind", 0, "not a trunk frame")
    end = n - MEDIA_TAG
    offset = TRUNK_HEADER
    entries = []
    while offset < end:
        if offset + TRUNK_ENTRY_HEADER > end:
            raise DecodeError("trunk entry", offset, "truncated entry header")
        first = data[offset]
        call_no = ((first & 0x7F) << 8) | data[offset + 1]
        if call_no == 0:
            raise DecodeError("trunk entry call number", offset, "call number 0 is reserved")
        ts = (data[offset + 2] << 8) | data[offset + 3]
        start = offset + TRUNK_ENTRY_HEADER
        stop = start + (CN_BYTES if first & 0x80 else VOICE_BYTES)
        if stop > end:
            raise DecodeError("trunk entry payload", start, "runs past the tag")
        entries.append((call_no, ts, start, stop))
        offset = stop
    return entries


# --- the crypto: MediaLeg's trunk entries and the trunk's tag ----------------------------------



def _seal_entry(self, buf, offset, ts, payload):
    """Append this leg's trunk entry at offset (encrypted; the trunk carries the tag)."""
    n = len(payload)
    start = pack_trunk_entry(buf, offset, self.peer_call_no, ts & 0xFFFF, n == CN_BYTES)
    end = start + n
    _put_ts(self._send_nonce, ts)
    if MICROPYTHON:
        buf[start:end] = payload
        self._send_ctr.crypt(self._send_nonce, buf, start, end)
    else:
        buf[start:end] = self._send_ctr.crypt_bytes(self._send_nonce, payload)
    self.sent += 1
    return end


def _open_entry_bytes(self, buf, ts, start, end):
    """The decrypted payload (a new buffer; buf stays as it is) of a trunk entry, 64-bit ts from
    open_trunk; None for a replay. A relaying host forwards the payload to another leg anyway."""
    if not self.replay.check(ts) or (ts - self.replay.highest > _JUMP and not self.replay.jump_ok(ts)):
        self.rejected += 1
        return None
    self.replay.mark(ts)
    _put_ts(self._recv_nonce, ts)
    self.received += 1
    return self._recv_ctr.crypt_bytes(self._recv_nonce, buf[start:end])


MediaLeg.seal_entry = _seal_entry
MediaLeg.open_entry_bytes = _open_entry_bytes


if MICROPYTHON:
    def _ts64(ts):
        return bytes((ts >> (8 * (7 - i))) & 0xFF for i in range(8))
else:
    def _ts64(ts):
        return ts.to_bytes(8, "big")


def seal_trunk(session_auth, session_index, entries, buf):
    """Pack a trunk frame into buf from [(leg, ts, payload)]; returns a memoryview of it.

    session_auth is the HmacKey of the host-to-host session; session_index the peer's.
    The tag covers the frame and the 64-bit timestamp of every entry, in order.
    """
    pack_trunk_header(buf, session_index)
    offset = TRUNK_HEADER
    stamps = []
    for leg, ts, payload in entries:
        offset = leg.seal_entry(buf, offset, ts, payload)
        stamps.append(_ts64(ts))
    view = memoryview(buf)
    buf[offset:offset + MEDIA_TAG] = session_auth.digest2(b"".join(stamps), view[:offset])[:MEDIA_TAG]
    return view[:offset + MEDIA_TAG]


def trunk_capacity(calls):
    """Bytes of a trunk frame carrying `calls` voice entries."""
    return TRUNK_HEADER + calls * (TRUNK_ENTRY_HEADER + VOICE_BYTES) + MEDIA_TAG


def open_trunk(session_auth, frame, extend):
    """Entries [(call_no, ts64, start, end)] of an authentic trunk frame, else None.

    extend(call_no, ts16) gives the receiver's 64-bit reading of an entry's
    timestamp (None when the call is unknown: the frame cannot be checked).
    Raises wire.DecodeError for a malformed frame. Payloads stay encrypted until
    the owning leg's open_entry_bytes decrypts them.
    """
    entries = parse_trunk(frame)
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
    expected = session_auth.digest2(b"".join(stamps), view[:n - MEDIA_TAG])[:MEDIA_TAG]
    if not compare_digest(expected, view[n - MEDIA_TAG:n]):
        return None
    return opened


CODEC_BYTES_PER_MS = {"g711": 8}   # G.711 mu-law or A-law: 8000 samples/s, one byte each


def call_kbps(calls, trunks=1, codec="g711", ptime_ms=20):
    """Wire kbps, one direction, of `calls` calls carried as trunk entries in `trunks` datagrams per ptime_ms.

    Each call adds an entry (4-byte header + payload) per packet; each trunk
    datagram adds its header, tag and IPv4+UDP headers (docs/bandwidth.md).
    """
    payload = CODEC_BYTES_PER_MS[codec] * ptime_ms
    per_packet = (calls * (TRUNK_ENTRY_HEADER + payload)
                  + trunks * (TRUNK_HEADER + MEDIA_TAG + IP_UDP_HEADERS))
    return per_packet * 8 / ptime_ms
