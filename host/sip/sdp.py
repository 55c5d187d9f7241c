"""SDP for SIP calls: parse a session description, make an offer, answer an offer (RFC 4566, RFC 3264).

What upbx speaks: one audio stream of G.711 (PCMU, payload type 0, or PCMA, 8) at 8000 Hz in
20 ms packets (a=ptime:20), RFC 4733 telephone-event for DTMF, and the direction attributes
of hold (sendrecv, sendonly, recvonly, inactive), including RFC 2543's old hold, c=0.0.0.0.
Every other stream of an offer (video, a second audio, SRTP-only audio) is refused in the answer
with port 0, as RFC 3264 section 6 asks; an offer with no G.711 in any audio stream raises
NotAcceptable (the caller answers 488). Malformed SDP raises SdpError naming the line and what
is wrong; no input crashes the parser with anything else (tests/test_sip_sdp.py).

    sdp = parse(text)            # -> Sdp: address, port, formats, dtmf_pt, ptime, direction
    text = offer(address, port, session_id, version, direction="sendrecv")
    text, codec = answer(offer_sdp, address, port, session_id, version, direction=None)
"""
import ipaddress

CODECS = {"PCMU": 0, "PCMA": 8}           # what upbx sends and receives, by RTP payload type
STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 9: ("G722", 8000),
          13: ("CN", 8000), 18: ("G729", 8000)}   # RFC 3551 static payload types an offer may list without rtpmap
DTMF_PT = 101                             # the telephone-event payload type upbx offers
PTIME = 20
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MAX_SDP = 8192                            # bytes: a larger body is refused, not parsed
MAX_LINES = 200
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class SdpError(ValueError):
    """Malformed SDP; str() names the line (1-based) and what is wrong with it."""

    def __init__(self, problem, line_no=None, line=None):
        self.problem = problem
        self.line_no = line_no
        self.line = line
        where = "" if line_no is None else "line %d %r: " % (line_no, line[:60])
        ValueError.__init__(self, "SDP " + where + problem)


class NotAcceptable(Exception):
    """No stream of the offer can be answered (no PCMU/PCMA audio): the caller answers 488."""


class Media:
    """One m= line: kind ("audio"), port, proto ("RTP/AVP"), fmts (payload type strings), and its
    attributes (rtpmap {pt: (name, rate)}, fmtp {pt: text}, ptime, direction, address)."""

    __slots__ = ("kind", "port", "proto", "fmts", "rtpmap", "fmtp", "ptime", "direction", "address")

    def __init__(self, kind, port, proto, fmts):
        self.kind, self.port, self.proto, self.fmts = kind, port, proto, fmts
        self.rtpmap = {}
        self.fmtp = {}
        self.ptime = None
        self.direction = None
        self.address = None


class Sdp:
    """A parsed session description, seen through its first usable audio stream.

    address, port: where that stream wants RTP ("0.0.0.0": RFC 2543 hold); formats: [(payload type,
    encoding name upper-case or None when unknown, clock rate)] in the sender's order of preference;
    dtmf_pt: the telephone-event/8000 payload type or None; ptime: ms (20 when absent); direction:
    the sender's ("sendrecv", "sendonly", "recvonly", "inactive"; c=0.0.0.0 makes it sendonly, or
    inactive where it was recvonly); media: every m= line (Media), for the answer; origin: (session
    id, version) of the o= line."""

    __slots__ = ("address", "port", "formats", "dtmf_pt", "ptime", "direction", "media", "origin", "stream")

    def codec(self):
        """The first of formats upbx speaks ("PCMU" or "PCMA"), or None."""
        for _pt, name, rate in self.formats:
            if name in CODECS and rate == 8000:
                return name
        return None

    def payload_type(self, codec):
        """The payload type this description uses for codec ("PCMU"/"PCMA"), or None."""
        for pt, name, rate in self.formats:
            if name == codec and rate == 8000:
                return pt
        return None

    def __repr__(self):
        return "<Sdp %s:%s %s dtmf=%s ptime=%s %s>" % (self.address, self.port, self.formats, self.dtmf_pt,
                                                      self.ptime, self.direction)


def _int(value, what, lo, hi, n, line):
    try:
        v = int(value)
    except ValueError:
        raise SdpError("%s %r is not a number" % (what, value), n, line) from None
    if not (lo <= v <= hi) or not value.isdigit():
        raise SdpError("%s %s outside %d..%d" % (what, value, lo, hi), n, line)
    return v


def _connection(value, n, line):
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError("expected 'c=IN IP4 ADDRESS'", n, line)
    if parts[1] != "IP4":
        raise SdpError("address type %s not supported (IPv4 only)" % parts[1], n, line)
    address = parts[2].split("/")[0]     # a multicast TTL suffix, if any, is not ours to use
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise SdpError("%r is not an IPv4 address" % address, n, line) from None
    return address


def parse(text):
    """An Sdp from SDP text (str or bytes); SdpError when it is malformed or has no audio stream."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError("not UTF-8 (byte %d)" % exc.start) from None
    if len(text) > MAX_SDP:
        raise SdpError("%d bytes, more than %d" % (len(text), MAX_SDP))
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SdpError("empty")
    if len(lines) > MAX_LINES:
        raise SdpError("%d lines, more than %d" % (len(lines), MAX_LINES))
    session_address = None
    session_direction = None
    origin = None
    media = []
    for n, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError("expected 'x=value'", n, line)
        key, value = line[0], line[2:]
        if n == 1 and line != "v=0":
            raise SdpError("first line must be v=0", n, line)
        current = media[-1] if media else None
        if key == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError("o= needs 6 fields", n, line)
            origin = (parts[1], parts[2])
        elif key == "c":
            address = _connection(value, n, line)
            if current is None:
                session_address = address
            else:
                current.address = address
        elif key == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError("m= needs media, port, proto and at least one format", n, line)
            port = _int(parts[1].split("/")[0], "port", 0, 65535, n, line)
            media.append(Media(parts[0], port, parts[2], parts[3:]))
        elif key == "a":
            name, _, arg = value.partition(":")
            if name in DIRECTIONS:
                if current is None:
                    session_direction = name
                else:
                    current.direction = name
            elif current is None:
                continue
            elif name == "rtpmap":
                pt, _, enc = arg.partition(" ")
                pt = _int(pt, "rtpmap payload type", 0, 127, n, line)
                fields = enc.strip().split("/")
                if len(fields) < 2 or not fields[0]:
                    raise SdpError("rtpmap needs NAME/RATE", n, line)
                current.rtpmap[pt] = (fields[0].upper(), _int(fields[1], "clock rate", 1, 1000000, n, line))
            elif name == "fmtp":
                pt, _, params = arg.partition(" ")
                if pt.isdigit():
                    current.fmtp[int(pt)] = params.strip()
            elif name == "ptime":
                current.ptime = _int(arg.strip().split(".")[0], "ptime", 1, 1000, n, line)
    if origin is None:
        raise SdpError("no o= line")
    return _describe(media, session_address, session_direction, origin)


def _formats(m):
    out = []
    for fmt in m.fmts:
        if not fmt.isdigit() or int(fmt) > 127:
            raise SdpError("format %r of m=%s is not an RTP payload type" % (fmt, m.kind))
        pt = int(fmt)
        name, rate = m.rtpmap.get(pt) or STATIC.get(pt) or (None, 8000)
        out.append((pt, name, rate))
    return out


def _usable(m):
    return m.kind == "audio" and m.port != 0 and m.proto in ("RTP/AVP", "RTP/AVPF")


def _describe(media, session_address, session_direction, origin):
    audio = [m for m in media if m.kind == "audio"]
    if not audio:
        raise SdpError("no m=audio line")
    # the stream upbx takes: the first usable audio stream with G.711 in it, else the first audio one
    stream = next((m for m in audio if _usable(m) and any(name in CODECS for _pt, name, _r in _formats(m))),
                  next((m for m in audio if _usable(m)), audio[0]))
    address = stream.address or session_address
    if address is None:
        raise SdpError("no c= line for the audio stream")
    sdp = Sdp()
    sdp.media = media
    sdp.stream = stream
    sdp.origin = origin
    sdp.address = address
    sdp.port = stream.port
    sdp.formats = _formats(stream)
    sdp.dtmf_pt = next((pt for pt, name, rate in sdp.formats if name == "TELEPHONE-EVENT" and rate == 8000), None)
    sdp.ptime = stream.ptime or PTIME
    direction = stream.direction or session_direction or "sendrecv"
    if address == "0.0.0.0":       # RFC 2543 hold: "send me nothing"
        direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
    sdp.direction = direction
    return sdp


def _description(address, port, session_id, version, formats, dtmf_pt, direction, others=()):
    if direction not in DIRECTIONS:
        raise ValueError("direction %r: not one of %s" % (direction, ", ".join(DIRECTIONS)))
    pts = [pt for pt, _name in formats] + ([dtmf_pt] if dtmf_pt is not None else [])
    lines = ["v=0", "o=upbx %d %d IN IP4 %s" % (session_id, version, address), "s=upbx",
             "c=IN IP4 %s" % address, "t=0 0", "m=audio %d RTP/AVP %s" % (port, " ".join(map(str, pts)))]
    lines += ["a=rtpmap:%d %s/8000" % (pt, name) for pt, name in formats]
    if dtmf_pt is not None:
        lines += ["a=rtpmap:%d telephone-event/8000" % dtmf_pt, "a=fmtp:%d 0-15" % dtmf_pt]
    lines += ["a=ptime:%d" % PTIME, "a=" + direction]
    lines += others
    return "\r\n".join(lines) + "\r\n"


def offer(address, port, session_id, version, direction="sendrecv"):
    """upbx's offer: PCMU, PCMA (in that order), telephone-event 101, ptime 20, the direction."""
    return _description(address, port, session_id, version, [(0, "PCMU"), (8, "PCMA")], DTMF_PT, direction)


def answer(offer_sdp, address, port, session_id, version, direction=None):
    """(answer text, "PCMU" or "PCMA") for an offer (Sdp or text): the offerer's first G.711 codec,
    its telephone-event payload type if it has one, the direction that fits both sides (ours:
    direction, else the mirror of the offer's), every other stream refused with port 0.
    NotAcceptable when the offer has no G.711 audio stream; SdpError when it is malformed."""
    sdp = parse(offer_sdp) if isinstance(offer_sdp, (str, bytes, bytearray)) else offer_sdp
    codec = sdp.codec() if _usable(sdp.stream) else None
    if codec is None:
        raise NotAcceptable("no PCMU or PCMA audio stream in the offer (%s)" % " ".join(
            "m=%s %d %s %s" % (m.kind, m.port, m.proto, " ".join(m.fmts)) for m in sdp.media))
    ours = _mirror_fit(sdp.direction, direction)
    formats = [(sdp.payload_type(codec), codec)]
    body = _description(address, port, session_id, version, formats, sdp.dtmf_pt, ours)
    # RFC 3264 6: as many m= lines as the offer, in its order; ours is where the stream was
    lines = body.rstrip("\r\n").split("\r\n")
    head, stream_lines = lines[:5], lines[5:]
    out = list(head)
    for m in sdp.media:
        if m is sdp.stream:
            out += stream_lines
        else:
            out.append("m=%s 0 %s %s" % (m.kind, m.proto, " ".join(m.fmts)))
    return "\r\n".join(out) + "\r\n", codec


def _mirror_fit(theirs, wanted):
    """Our direction: what the offer's allows (its mirror), narrowed by what we want (None: anything)."""
    allowed = _MIRROR[theirs]
    if wanted is None:
        return allowed
    if wanted not in DIRECTIONS:
        raise ValueError("direction %r: not one of %s" % (wanted, ", ".join(DIRECTIONS)))
    send = wanted in ("sendrecv", "sendonly") and allowed in ("sendrecv", "sendonly")
    recv = wanted in ("sendrecv", "recvonly") and allowed in ("sendrecv", "recvonly")
    return "sendrecv" if send and recv else "sendonly" if send else "recvonly" if recv else "inactive"


def sends(direction):
    """True when a side whose SDP says direction sends media."""
    return direction in ("sendrecv", "sendonly")


def receives(direction):
    """True when a side whose SDP says direction wants media."""
    return direction in ("sendrecv", "recvonly")
