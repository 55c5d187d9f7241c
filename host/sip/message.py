"""SIP messages (RFC 3261 section 7, 20, 25): parse a datagram, build and serialize a message.

Sans-IO: `parse(datagram)` returns a `Request` or a `Response` or raises `SipError(status, why)`;
the caller answers a request that raised with `status` (400, or 505 for another SIP version) and
creates no state; a response that raised is dropped. Messages keep their header fields in order,
as text, names in their long form; the fields a host acts on (Via, From, To, Contact, Route,
CSeq, Call-ID, Max-Forwards, Content-Length, Expires, Date) are checked here, once, so that code
above never meets a malformed one. The RFC 4475 torture messages are the tests
(tests/test_sip_message.py).
"""

import re

COMPACT = {"i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
           "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
           "v": "Via", "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
           "x": "Session-Expires", "a": "Accept-Contact", "j": "Reject-Contact",
           "d": "Request-Disposition", "y": "Identity", "n": "Identity-Info"}
_LONG = ["Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
         "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
         "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
         "From", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Organization",
         "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route",
         "Reply-To", "Require", "Retry-After", "Route", "Server", "Subject", "Supported", "Timestamp",
         "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate", "Event",
         "Refer-To", "Referred-By", "Allow-Events", "Session-Expires", "P-Asserted-Identity"]
CANONICAL = {name.lower(): name for name in _LONG}
SINGLE = ("To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type", "Expires")
REQUIRED = ("To", "From", "Call-ID", "CSeq", "Via")   # Max-Forwards too in 3261, not in 2543 (RFC 4475 3.4.1)
# Fields whose value is a comma-separated list (RFC 3261 7.3.1); the others are one value a line.
LISTS = ("Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require", "Proxy-Require",
         "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding")

TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN = re.compile(TOKEN)
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/:]|%[0-9A-Fa-f]{2})*")
_PARAMCHARS = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_HEADERS = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$=&]|%[0-9A-Fa-f]{2})*")
_DATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                   r" \d{4} \d\d:\d\d:\d\d GMT")
_LWS = re.compile(r"[ \t]+")
MAX_CSEQ = 2 ** 31 - 1
MAX_DELTA = 2 ** 32 - 1
MAX_DATAGRAM = 65507


class SipError(Exception):
    """A message that cannot be accepted: status is the response a request gets (400, 505)."""

    def __init__(self, status, why):
        Exception.__init__(self, "%d %s" % (status, why))
        self.status = status
        self.why = why


def bad(why):
    return SipError(400, why)


class Uri:
    """A URI; for sip: and sips: its parts, for any other scheme only `scheme` and `text`."""
    __slots__ = ("text", "scheme", "user", "host", "port", "params", "headers")

    def __init__(self, text, scheme, user=None, host=None, port=None, params=None, headers=""):
        self.text, self.scheme, self.user, self.host = text, scheme, user, host
        self.port, self.params, self.headers = port, params or {}, headers

    def __str__(self):
        return self.text

    def __repr__(self):
        return "Uri(%r)" % self.text


def parse_uri(text, where):
    """A URI as RFC 3261 19.1 spells sip: and sips: (3986 scheme:rest for others); SipError(400) if not."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme) or not rest or any(c in rest for c in " \t<>\""):
        raise bad("%s: not a URI: %r" % (where, text[:80]))
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return Uri(text, scheme)
    user = None
    if "@" in rest:   # the user part may hold '?' and ';' (RFC 3261 25.1 user-unreserved)
        user, _, rest = rest.partition("@")
        if not _USERINFO.fullmatch(user):
            raise bad("%s: bad user part in %r" % (where, text[:80]))
        user = user.partition(":")[0]
    rest, question, headers = rest.partition("?")
    hostport, semi, params = rest.partition(";")
    if hostport.startswith("["):
        end = hostport.find("]") + 1
        host, port = hostport[:end], hostport[end:]
    else:
        host, port = hostport[:hostport.find(":")] if ":" in hostport else hostport, \
            hostport[hostport.find(":"):] if ":" in hostport else ""
    if port:
        if port[:1] != ":" or not port[1:].isdigit() or int(port[1:]) > 65535:
            raise bad("%s: bad port in %r" % (where, text[:80]))
        port = int(port[1:])
    if not host or not _HOST.fullmatch(host):
        raise bad("%s: bad host in %r" % (where, text[:80]))
    if question and not _HEADERS.fullmatch(headers):
        raise bad("%s: bad headers in %r" % (where, text[:80]))
    return Uri(text, scheme, user, host.lower(), port or None,
               _uri_params(params, where) if semi else {}, headers if question else "")


def _uri_params(text, where):
    params = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not _PARAMCHARS.fullmatch(name) or (eq and not _PARAMCHARS.fullmatch(value)):
            raise bad("%s: bad URI parameter %r" % (where, item[:40]))
        params[name.lower()] = value if eq else None
    return params


def split_outside_quotes(text, sep):
    """Split text at sep where it is outside "quoted strings" and <angle brackets>."""
    parts, start, quoted, angle, i = [], 0, False, False, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == sep and not angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise bad("unterminated quoted string in %r" % text[:80])
    parts.append(text[start:])
    return parts


def parse_params(text, where):
    """';name=value' parameters (generic-param): {name lowered: value or None}; quotes kept off."""
    params = {}
    if not text.strip():
        return params
    items = split_outside_quotes(text, ";")
    if items[0].strip():
        raise bad("%s: %r before the parameters" % (where, items[0][:40]))
    for item in items[1:]:
        name, eq, value = item.partition("=")
        name, value = name.strip(" \t"), value.strip(" \t")
        if not _TOKEN.fullmatch(name):
            raise bad("%s: bad parameter %r" % (where, item[:40]))
        if eq:
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                value = value[1:-1]
            elif not (_TOKEN.fullmatch(value) or _HOST.fullmatch(value)):
                raise bad("%s: bad value of parameter %r" % (where, name))
        params[name.lower()] = value if eq else None
    return params


class Address:
    """A From/To/Contact/Route value: display name, URI, header parameters (tag, expires, ...)."""
    __slots__ = ("display", "uri", "params")

    def __init__(self, display, uri, params):
        self.display, self.uri, self.params = display, uri, params

    def __repr__(self):
        return "Address(%r, %r, %r)" % (self.display, self.uri, self.params)


def _quoted(text, start, where):
    """(unescaped content, index after the closing quote) of the quoted string at text[start]."""
    out, i = [], start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise bad("%s: unterminated quoted string" % where)


def parse_address(text, where):
    """name-addr or addr-spec, then params (RFC 3261 20.10, 25.1); SipError(400) if malformed."""
    text = text.strip(" \t")
    display = None
    if text.startswith('"'):
        display, end = _quoted(text, 0, where)
        text = text[end:].lstrip(" \t")
        if not text.startswith("<"):
            raise bad("%s: a display name without <URI>" % where)
    lt = text.find("<") if not text.startswith("<") else 0
    if display is None and lt > 0 and '"' not in text[:lt]:
        words = text[:lt].strip(" \t")
        if not all(_TOKEN.fullmatch(w) for w in _LWS.split(words)):
            raise bad("%s: display name %r is neither tokens nor quoted" % (where, words[:40]))
        display, text = words, text[lt:]
    if text.startswith("<"):
        gt = text.find(">")
        if gt < 0:
            raise bad("%s: '<' without '>'" % where)
        uri = parse_uri(text[1:gt], where)
        rest = text[gt + 1:]
    else:
        spec, semi, rest = text.partition(";")
        spec = spec.rstrip(" \t")
        if any(c in spec for c in ",?"):   # RFC 3261 20.10: such a URI must be in <>
            raise bad("%s: URI with ',' or '?' outside <>" % where)
        uri = parse_uri(spec, where)
        rest = semi + rest
    return Address(display, uri, parse_params(rest, where))


class Via:
    """One Via value: transport, sent-by host and port, parameters (branch, received, rport)."""
    __slots__ = ("text", "transport", "host", "port", "params")
    _SYNTAX = re.compile(r"SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*(" + TOKEN + r")[ \t]+([^;: \t]+|\[[^\]]*\])"
                         r"(?:[ \t]*:[ \t]*(\d{1,5}))?[ \t]*(;.*)?", re.S)

    def __init__(self, text, transport, host, port, params):
        self.text, self.transport, self.host, self.port, self.params = text, transport, host, port, params

    @property
    def branch(self):
        return self.params.get("branch")


def parse_via(text):
    m = Via._SYNTAX.fullmatch(text.strip(" \t"))
    if not m or not _HOST.fullmatch(m.group(2)) or (m.group(3) and int(m.group(3)) > 65535):
        raise bad("Via: malformed %r" % text[:80])
    params = parse_params(m.group(4) or "", "Via")
    branch = params.get("branch", "")
    if "branch" in params and (not branch or branch == "z9hG4bK"):
        raise bad("Via: a branch with no identifier")   # RFC 4475 3.2.1
    return Via(text.strip(" \t"), m.group(1).upper(), m.group(2).lower(),
               int(m.group(3)) if m.group(3) else None, params)


class Message:
    """What requests and responses share: ordered header fields and a body (bytes)."""

    def __init__(self, headers=None, body=b""):
        self.headers = list(headers or [])   # [(long name, value)]
        self.body = body

    def get(self, name):
        """The value of the first field called name (any case, long form), or None."""
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def values(self, name):
        """Every value of the fields called name, lists split at their commas."""
        lname = name.lower()
        out = []
        for n, v in self.headers:
            if n.lower() == lname:
                if n in LISTS:
                    out.extend(p.strip(" \t") for p in split_outside_quotes(v, ","))
                else:
                    out.append(v)
        return out

    def set(self, name, value):
        """Replace every field called name by one (or none, if value is None)."""
        lname = name.lower()
        at = next((i for i, (n, _) in enumerate(self.headers) if n.lower() == lname), len(self.headers))
        self.headers = [(n, v) for n, v in self.headers if n.lower() != lname]
        if value is not None:
            self.headers.insert(min(at, len(self.headers)), (name, value))

    def add(self, name, value):
        self.headers.append((name, value))

    @property
    def call_id(self):
        return self.get("Call-ID")

    @property
    def cseq(self):
        """(number, method)."""
        number, method = _LWS.split(self.get("CSeq").strip(" \t"))
        return int(number), method

    @property
    def vias(self):
        return [parse_via(v) for v in self.values("Via")]

    @property
    def from_(self):
        return parse_address(self.get("From"), "From")

    @property
    def to(self):
        return parse_address(self.get("To"), "To")

    def contacts(self):
        """Contact values as Addresses ("*" is left to the registrar)."""
        return [parse_address(v, "Contact") for v in self.values("Contact") if v != "*"]

    def encode(self):
        """The message as bytes, Content-Length set from the body."""
        self.set("Content-Length", str(len(self.body)))
        lines = [self.start_line()] + ["%s: %s" % (n, v) for n, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


class Request(Message):
    def __init__(self, method, uri, headers=None, body=b""):
        Message.__init__(self, headers, body)
        self.method = method
        self.uri = uri if isinstance(uri, Uri) else parse_uri(uri, "Request-URI")

    def start_line(self):
        return "%s %s SIP/2.0" % (self.method, self.uri.text)

    def __repr__(self):
        return "<Request %s %s>" % (self.method, self.uri.text)


class Response(Message):
    def __init__(self, status, reason, headers=None, body=b""):
        Message.__init__(self, headers, body)
        self.status, self.reason = status, reason

    def start_line(self):
        return "SIP/2.0 %d %s" % (self.status, self.reason)

    def __repr__(self):
        return "<Response %d %s>" % (self.status, self.reason)


REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 202: "Accepted",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 407: "Proxy Authentication Required", 408: "Request Timeout",
           415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
           423: "Interval Too Brief", 480: "Temporarily Unavailable",
           481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
           484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
           488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
           501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported",
           603: "Decline"}


def response_to(request, status, reason=None, to_tag=None, headers=(), body=b""):
    """A response to request (RFC 3261 8.2.6.2): its Via, From, To (with to_tag), Call-ID, CSeq."""
    copied = [(n, v) for n, v in request.headers if n in ("Via", "From", "Call-ID", "CSeq")]
    to = request.get("To")
    if to_tag and "tag" not in parse_address(to, "To").params:
        to = "%s;tag=%s" % (to, to_tag)
    copied.insert(2, ("To", to))
    return Response(status, reason or REASONS.get(status, "Unknown"), copied + list(headers), body)


def parse(data):
    """A datagram as a Request or Response; SipError if it is not one (status says which answer)."""
    if len(data) > MAX_DATAGRAM:
        raise bad("datagram too long")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise bad("no empty line after the header fields")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad("header fields not UTF-8 at byte %d" % e.start)
    lines = _unfold(head.split("\r\n"))
    start = lines[0]
    headers = [_field(line) for line in lines[1:]]
    message = _start(start)
    message.headers = headers
    _check(message)
    length = message.get("Content-Length")
    body = data[end + 4:]
    if length is not None:
        if int(length) > len(body):
            raise bad("Content-Length %s is more than the %d bytes that came" % (length, len(body)))
        body = body[:int(length)]   # over UDP the rest of the datagram is not this message's
    message.body = body
    return message


def _unfold(raw):
    if any(c in line for line in raw for c in "\r\n"):
        raise bad("a bare CR or LF in the header fields")
    lines = []
    for line in raw:
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.lstrip(" \t")
        elif line[:1] in (" ", "\t"):
            raise bad("whitespace before the start line")
        else:
            lines.append(line)
    return lines


def _field(line):
    name, colon, value = line.partition(":")
    name = name.rstrip(" \t")
    if not colon or not _TOKEN.fullmatch(name):
        raise bad("not a header field: %r" % line[:60])
    lname = name.lower()
    name = COMPACT.get(lname) or CANONICAL.get(lname) or name
    return name, value.strip(" \t")


def _start(line):
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 3 or parts[0] != "SIP/2.0":
            raise bad("bad status line %r" % line[:60])
        if not (len(parts[1]) == 3 and parts[1].isdigit() and 100 <= int(parts[1]) <= 699):
            raise bad("bad status code %r" % parts[1][:20])
        return Response(int(parts[1]), parts[2])
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise bad("request line is not METHOD SP URI SP SIP/2.0: %r" % line[:80])
    method, uri, version = parts
    if not _TOKEN.fullmatch(method):
        raise bad("bad method %r" % method[:40])
    if not re.fullmatch(r"SIP/\d+\.\d+", version):
        raise bad("bad version %r" % version[:20])
    if version != "SIP/2.0":
        raise SipError(505, "SIP version %s" % version)
    ruri = parse_uri(uri, "Request-URI")
    if ruri.headers or "?" in uri.partition("@")[2] or ("@" not in uri and "?" in uri):
        raise bad("Request-URI with headers")   # RFC 3261 19.1.5: not allowed there
    return Request(method, ruri)


def _check(message):
    """Every rule of the fields a host relies on; SipError(400) at the first broken one."""
    counts = {}
    for name, _ in message.headers:
        counts[name] = counts.get(name, 0) + 1
    for name in SINGLE:
        if counts.get(name, 0) > 1:
            raise bad("%s appears %d times" % (name, counts[name]))
    for name in REQUIRED:
        if not counts.get(name):
            raise bad("no %s" % name)
    cseq = _LWS.split(message.get("CSeq").strip(" \t"))
    if len(cseq) != 2 or not cseq[0].isdigit() or int(cseq[0]) > MAX_CSEQ or not _TOKEN.fullmatch(cseq[1]):
        raise bad("CSeq: malformed %r" % message.get("CSeq")[:40])
    if isinstance(message, Request) and cseq[1] != message.method:
        raise bad("CSeq method %s is not the request's %s" % (cseq[1], message.method))
    call_id = message.get("Call-ID")
    if not call_id or any(c in call_id for c in " \t"):
        raise bad("Call-ID: malformed")
    for name, limit in (("Max-Forwards", 255), ("Content-Length", MAX_DATAGRAM), ("Expires", MAX_DELTA)):
        value = message.get(name)
        if value is not None and (not value.isdigit() or int(value) > limit):
            raise bad("%s: %r is not a number up to %d" % (name, value[:40], limit))
    date = message.get("Date")
    if date is not None and not _DATE.fullmatch(date):
        raise bad("Date: not an RFC 1123 date in GMT")
    ctype = message.get("Content-Type")
    if ctype is not None and not re.fullmatch(TOKEN + r"[ \t]*/[ \t]*" + TOKEN + r"[ \t]*(;.*)?", ctype, re.S):
        raise bad("Content-Type: malformed")
    for name in ("Via", "Contact", "Route", "Record-Route"):
        for value in message.values(name):
            if not value:
                raise bad("%s: an empty value" % name)
            if name == "Via":
                parse_via(value)
            elif not (name == "Contact" and value == "*"):
                parse_address(value, name)
    for name in ("From", "To"):
        parse_address(message.get(name), name)
    for value in message.values("Retry-After"):
        delta = value.split(";")[0].split("(")[0].strip(" \t")
        if not delta.isdigit() or int(delta) > MAX_DELTA:
            raise bad("Retry-After: malformed")
