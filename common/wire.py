"""upbx wire format v2: frame layouts, message types, information elements.

Pure encoding and decoding; authentication and encryption live in
common.session and common.media. Byte diagrams: docs/protocol.md.

    mini frame    0ccccccc cccccccc tttttttt tttttttt payload... tag(4)
    full frame    10ssssss ssssssss ssssssss seq(2) ack(2) type(1) IEs... tag(8)
    trunk frame   11ssssss ssssssss ssssssss {Fccccccc cccccccc ts(2) payload}... tag(4)
"""
from .compat import const, micropython

VERSION = const(2)  # v2: session tags cover the 64-bit sequence number (docs/protocol.md)

KIND_MINI = const(0)
KIND_FULL = const(2)
KIND_TRUNK = const(3)

MINI_HEADER = const(4)
FULL_HEADER = const(8)
TRUNK_HEADER = const(3)
TRUNK_ENTRY_HEADER = const(4)
MEDIA_TAG = const(4)
FULL_TAG = const(8)

VOICE_BYTES = const(160)  # G.711, 20 ms at 8 kHz
CN_BYTES = const(1)       # comfort noise: one level byte (G.711 Appendix II style)
MAX_CALL_NO = const(0x7FFF)
MAX_SESSION = const(0x3FFFFF)
IP_UDP_HEADERS = const(28)  # IPv4 (20) + UDP (8): what each datagram costs on the wire beyond its payload

# message types a handset sends or reads; the hosts' own (LOCAL_REQUEST, LOCAL_GRANT, LOCAL_REFUSE,
# PUNCH_OFFER, PUNCH, PUNCH_RESULT, RECORDS, PHONE_STATE, DIRECTORY) are read from the table in
# common/wire_names.py on first use (__getattr__), which keeps their names off a handset's heap
HELLO = const(0x01)
CHALLENGE = const(0x02)
RESPONSE = const(0x03)
WELCOME = const(0x04)
ACK = const(0x06)
PING = const(0x07)
BYE = const(0x08)
SETUP = const(0x10)
ALERTING = const(0x12)
ANSWER = const(0x13)
RELEASE = const(0x14)
DTMF = const(0x16)
MEDIA_PEER = const(0x17)
HOLD = const(0x18)       # state 1: the sender's phone holds the call, 0: resumes it (docs/features.md)
TRANSFER = const(0x19)   # a phone joins the far ends of two of its calls (join_call_no: the other's leg)
PARTY = const(0x1A)      # the far end of a call is now another party (calling, calling_name): transferred
CONFERENCE = const(0x1C)  # phone: join my two calls (conf_call_no: the held one); host: state 1 joined, 0 refused
MESSAGE_WAITING = const(0x1D)   # host -> phone: state = its new voicemail messages (docs/features.md)
SYSINFO = const(0x40)
SYSINFO_ACK = const(0x41)

HANDSHAKE_TYPES = (HELLO, CHALLENGE, RESPONSE)

# information elements a handset sends or reads (names and layouts of all: common/wire_names.py;
# the hosts' own, IE_HOST_NAME, IE_TTL, IE_TIME, IE_CALL_ID, IE_CODEC, IE_PEER_NAME, IE_PEER_KEY and
# IE_STATE, are read from that table on first use, as the message types above)
IE_EXTENSION = const(0x01)
IE_SESSION_INDEX = const(0x03)
IE_NONCE = const(0x04)
IE_COOKIE = const(0x05)
IE_CALL_NO = const(0x10)
IE_PEER_CALL_NO = const(0x11)
IE_CALLED = const(0x12)
IE_CALLING = const(0x13)
IE_CALLING_NAME = const(0x14)
IE_CAUSE = const(0x15)
IE_MEDIA_KEY = const(0x17)
IE_DIGIT = const(0x18)
IE_ADDRESS = const(0x19)
IE_PATH = const(0x1A)
IE_ROLE = const(0x1C)
IE_VERSION = const(0x20)
IE_CHUNK = const(0x21)
IE_DATA = const(0x22)
IE_STATE = const(0x25)
IE_KEEPALIVE = const(0x26)
IE_JOIN_CALL_NO = const(0x27)
IE_CONF_CALL_NO = const(0x2B)   # CONFERENCE: the host's call number of the phone's other (held) call

# How the codec reads each IE type: 3 bytes per type, (kind, least value bytes, most value bytes);
# kind 0: not a known IE, 1 str, 2 bytes, 3 addr, 4 unsigned integer. It is the table in
# common/wire_names.py in compact form (tests/common/test_vectors.py checks that they agree): the
# names and the message names are only for errors, logs and hosts, and a handset imports
# wire_names only when it needs one (an error message), which keeps 1.3 KB off its heap.
_LAYOUT = (  # 8 IE types a line, from type 0x00
    b"\x00\x00\x00\x01\x01\x0f\x01\x01\x3f\x04\x03\x03\x02\x10\x10\x02\x10\x10\x04\x02\x02\x04\x08\x08"
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x04\x02\x02\x04\x02\x02\x01\x01\x1f\x01\x01\x1f\x01\x00\x3f\x04\x01\x01\x02\x08\x08\x02\x10\x10"
    b"\x01\x01\x01\x03\x06\x06\x04\x01\x01\x04\x01\x01\x04\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x04\x04\x04\x04\x04\x04\x02\x00\xff\x01\x01\x3f\x02\x20\x20\x04\x01\x01\x04\x02\x02\x04\x02\x02"
    b"\x00\x00\x00\x04\x01\x01\x00\x00\x00\x04\x02\x02\x00\x00\x00\x00\x00\x00\x01\x01\x1f\x04\x01\x01"
    b"\x01\x00\x1f\x02\x01\xff\x04\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x04\x01\x01"
)
_MAX_IE = const(0x38)


def ie_name(ie):
    """The name of a known IE type ("extension"), for errors and logs."""
    from . import wire_names
    return wire_names.ie_name(ie)


_TRUNK = ("pack_trunk_header", "pack_trunk_entry", "parse_trunk", "parse_mini")


def __getattr__(name):
    """What a handset does not need, made on first use and kept: MESSAGE_NAMES {type: "NAME"} and
    IE_SPEC {type: (name, kind, lo, hi)}, the hosts' message types and IEs (LOCAL_REQUEST, IE_TTL ...)
    from the table in common.wire_names, and the trunk frame's codec from common.trunk."""
    if name in _TRUNK:
        from . import trunk
        value = getattr(trunk, name)
    else:
        from . import wire_names
        if name in ("MESSAGE_NAMES", "IE_SPEC"):
            value = getattr(wire_names, name.lower())()
        else:
            value = wire_names.number(name)
            if value is None:
                raise AttributeError(name)
    globals()[name] = value
    return value


# release causes, shown on the phone
CAUSE_NORMAL = const(0)
CAUSE_BUSY = const(1)
CAUSE_NO_ANSWER = const(2)
CAUSE_UNKNOWN_EXTENSION = const(3)
CAUSE_NOT_PERMITTED = const(4)
CAUSE_NETWORK_BUSY = const(5)
CAUSE_UNREACHABLE = const(6)
CAUSE_PROTOCOL_ERROR = const(7)
CAUSE_FEATURE_ON = const(8)      # a star code was accepted (docs/features.md): set
CAUSE_FEATURE_OFF = const(9)     # ... cancelled
CAUSE_DND = const(10)            # the called phone is in do not disturb
CAUSE_FORWARD_LOOP = const(11)   # forwarding leads back to a number already tried
CAUSE_TRANSFERRED = const(12)    # the phone transferred the call: its legs end, the far ends talk on
# CAUSE_ANSWERED_ELSEWHERE (14), CAUSE_PICKED_UP (15), CAUSE_NO_OUTSIDE_LINE (17) and
# CAUSE_MAIN_LOST (18), which only hosts send, come from common/wire_names.py
CAUSE_CONFERENCE = const(16)     # the phone's held call became part of its conference (docs/features.md)

CAUSE_TEXT = {
    CAUSE_NORMAL: "normal clearing",
    CAUSE_BUSY: "busy",
    CAUSE_NO_ANSWER: "no answer",
    CAUSE_UNKNOWN_EXTENSION: "unknown extension",
    CAUSE_NOT_PERMITTED: "not permitted",
    CAUSE_NETWORK_BUSY: "network busy",
    CAUSE_UNREACHABLE: "unreachable",
    CAUSE_PROTOCOL_ERROR: "protocol error",
    CAUSE_FEATURE_ON: "feature on",
    CAUSE_FEATURE_OFF: "feature off",
    CAUSE_DND: "do not disturb",
    CAUSE_FORWARD_LOOP: "forwarding loop",
    CAUSE_TRANSFERRED: "transferred",
    14: "answered elsewhere",    # a ring group's call another member answered (docs/features.md)
    15: "picked up",             # the call ringing here was picked up by another phone (*8)
    CAUSE_CONFERENCE: "joined conference",
    17: "no outside line",       # main host unreachable and the site has no line of its own up (docs/sip.md)
    18: "main host lost",        # an inter-site call held through the grace period, the main host silent throughout
}

PATH_RELAY = const(0)
PATH_DIRECT = const(1)
PATH_LOCAL = const(2)
PATH_NAMES = ("relay", "direct", "local")

CODEC_ULAW = const(0)
CODEC_ALAW = const(8)


class DecodeError(ValueError):
    """A datagram that is not valid upbx v2; says which field and at what offset."""

    def __init__(self, field, offset, problem):
        super().__init__("%s at offset %d: %s" % (field, offset, problem))
        self.field = field
        self.offset = offset
        self.problem = problem


def frame_kind(data):
    if len(data) < 1:
        raise DecodeError("frame", 0, "empty datagram")
    first = data[0]
    if first & 0x80 == 0:
        return KIND_MINI
    return KIND_FULL if first & 0x40 == 0 else KIND_TRUNK


def session_of(data):
    """Receiver session index of a full or trunk frame."""
    return ((data[0] & 0x3F) << 16) | (data[1] << 8) | data[2]


def pack_full_header(buf, session, seq, ack, msg_type):
    buf[0] = 0x80 | ((session >> 16) & 0x3F)
    buf[1] = (session >> 8) & 0xFF
    buf[2] = session & 0xFF
    buf[3] = (seq >> 8) & 0xFF
    buf[4] = seq & 0xFF
    buf[5] = (ack >> 8) & 0xFF
    buf[6] = ack & 0xFF
    buf[7] = msg_type


def parse_full(data):
    """(session, seq, ack, type) of a full frame; IEs are data[8:-8], tag data[-8:]."""
    if len(data) < FULL_HEADER + FULL_TAG:
        raise DecodeError("full frame", len(data), "shorter than header and tag (%d bytes)" % len(data))
    if data[0] & 0xC0 != 0x80:
        raise DecodeError("frame kind", 0, "not a full frame")
    return (session_of(data), (data[3] << 8) | data[4], (data[5] << 8) | data[6], data[7])


@micropython.native
def pack_mini_header(buf, call_no, ts):
    buf[0] = (call_no >> 8) & 0x7F
    buf[1] = call_no & 0xFF
    buf[2] = (ts >> 8) & 0xFF
    buf[3] = ts & 0xFF


@micropython.native
def check_mini(data):
    """The call number of a valid mini frame (DecodeError otherwise); no tuple made, for the media path."""
    n = len(data)
    if n < MINI_HEADER + CN_BYTES + MEDIA_TAG:
        raise DecodeError("mini frame", n, "shorter than header, payload and tag (%d bytes)" % n)
    if data[0] & 0x80:
        raise DecodeError("frame kind", 0, "not a mini frame")
    payload = n - MINI_HEADER - MEDIA_TAG
    if payload != VOICE_BYTES and payload != CN_BYTES:
        raise DecodeError("mini payload", MINI_HEADER, "length %d is neither voice nor comfort noise" % payload)
    call_no = (data[0] << 8) | data[1]
    if call_no == 0:
        raise DecodeError("call number", 0, "call number 0 is reserved")
    return call_no


def encode_ies(items):
    """Bytes of IEs from a dict {IE type: value}, in ascending type order."""
    out = bytearray()
    for ie in sorted(items):
        value = items[ie]
        kind = _LAYOUT[3 * ie] if 0 <= ie <= _MAX_IE else 0
        if not kind:
            raise KeyError(ie)
        lo, hi = _LAYOUT[3 * ie + 1], _LAYOUT[3 * ie + 2]
        if kind == 1:  # str
            raw = value.encode()
        elif kind == 2:  # bytes
            raw = bytes(value)
        elif kind == 3:  # addr
            host, port = value
            raw = bytes(int(p) for p in host.split(".")) + bytes(((port >> 8) & 0xFF, port & 0xFF))
        else:
            raw = _uint_bytes(value, hi)
        if not lo <= len(raw) <= hi:
            raise ValueError("IE %s: length %d outside %d..%d" % (ie_name(ie), len(raw), lo, hi))
        out.append(ie)
        out.append(len(raw))
        out.extend(raw)
    return bytes(out)


def _uint_bytes(value, size):
    if value < 0 or value >> (8 * size):
        raise ValueError("value %d does not fit in %d bytes" % (value, size))
    return bytes((value >> (8 * (size - 1 - i))) & 0xFF for i in range(size))


def decode_ies(data, base=0):
    """Dict {IE type: value} from IE bytes; base is their offset in the frame, for errors.

    Unknown IE types are skipped (a newer peer may send them); a known IE with a
    bad length or value, a repeated IE, or a truncated IE raises DecodeError.
    """
    items = {}
    offset = 0
    n = len(data)
    while offset < n:
        if offset + 2 > n:
            raise DecodeError("IE header", base + offset, "truncated")
        ie = data[offset]
        length = data[offset + 1]
        start = offset + 2
        end = start + length
        if end > n:
            raise DecodeError("IE 0x%02x" % ie, base + offset, "length %d runs past the frame" % length)
        if ie in items:
            raise DecodeError("IE 0x%02x" % ie, base + offset, "repeated")
        if ie <= _MAX_IE and _LAYOUT[3 * ie]:
            items[ie] = _ie_value(ie, data[start:end], base + offset)
        offset = end
    return items


def _ie_value(ie, raw, offset):
    kind, lo, hi = _LAYOUT[3 * ie], _LAYOUT[3 * ie + 1], _LAYOUT[3 * ie + 2]
    if not lo <= len(raw) <= hi:
        raise DecodeError(ie_name(ie), offset, "length %d outside %d..%d" % (len(raw), lo, hi))
    if kind == 1:  # str
        try:
            return bytes(raw).decode()
        except UnicodeError:
            raise DecodeError(ie_name(ie), offset, "not UTF-8")
    if kind == 2:  # bytes
        return bytes(raw)
    if kind == 3:  # addr
        return ("%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3]), (raw[4] << 8) | raw[5])
    value = 0
    for b in raw:
        value = (value << 8) | b
    return value
