"""SIP over TCP (RFC 3261 section 18): the stream framing, sans-IO, and the host's TCP listener.

On a stream a SIP message ends where its Content-Length says (18.3): the header fields up to the
first empty line, then exactly Content-Length bytes of body (none when the field is absent). CRLFs
between messages are skipped (7.5); a double CRLF is a keepalive ping answered with one CRLF
(RFC 5626 3.5.1). A stream that cannot be framed (a Content-Length that is not one number, header
fields or a body beyond the limits) is closed: there is no way to find the next message in it.

The host core never sees a connection: a message that came on TCP comes with the address
(ip, port, "tcp"), and what the core sends to such an address leaves on that connection, the one
the peer opened (one connection per peer; the host opens none itself: a phone behind NAT is
reached through the connection it keeps open, as RFC 5626 has it). `for_stream` gives what the
core wrote for UDP the transport TCP says: the top Via of a request of ours, and our Contact, so
that the phone sends its in-dialog requests on the same connection.
"""
import asyncio
import re
import socket

from upbx.host.sip import message as sip

TCP = "tcp"
PING = b"\r\n\r\n"
PONG = b"\r\n"
MAX_HEADER = 16384              # header fields without their empty line by then: not SIP
MAX_MESSAGE = sip.MAX_DATAGRAM  # the largest message taken on UDP is the largest on TCP too
MAX_CONNECTIONS = 1024
MAX_PER_ADDRESS = 64            # a site's phones behind one NAT router come from one address
IDLE_MS = 1200 * 1000           # twice the longest registration: a phone keeps its connection busier
MAX_QUEUED = 256 * 1024         # bytes waiting for a peer that does not read: it is closed
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)


class FramingError(Exception):
    """The stream cannot be framed (why says how); its connection is closed."""


class StreamFramer:
    """One connection's incoming bytes to whole SIP messages (RFC 3261 18.3)."""

    def __init__(self):
        self.buf = bytearray()
        self.crlfs = 0      # CRLFs in a row before the next message (two: a keepalive ping)

    def feed(self, data):
        """The messages data completes, in order: bytes of one SIP message each, or PING."""
        self.buf += data
        out = []
        while True:
            while self.buf[:2] == b"\r\n":
                del self.buf[:2]
                self.crlfs += 1
                if self.crlfs == 2:
                    out.append(PING)
                    self.crlfs = 0
            if self.buf == b"\r":
                break
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEADER:
                    raise FramingError("no end of the header fields within %d bytes" % MAX_HEADER)
                break
            self.crlfs = 0
            total = end + 4 + content_length(bytes(self.buf[:end]))
            if total > MAX_MESSAGE:
                raise FramingError("a message of %d bytes (at most %d)" % (total, MAX_MESSAGE))
            if len(self.buf) < total:
                break
            out.append(bytes(self.buf[:total]))
            del self.buf[:total]
        return out


def content_length(head):
    """The body's length from the header fields (bytes, without the empty line); 0 without the field."""
    values = {m.group(1) for m in _CONTENT_LENGTH.finditer(head)}
    if not values:
        return 0
    if len(values) > 1 or not next(iter(values)).isdigit():
        raise FramingError("Content-Length %s" % b", ".join(sorted(values)).decode("ascii", "replace"))
    return int(next(iter(values)))


def for_stream(data):
    """A message the core wrote (for UDP) as it goes on a TCP connection: the top Via of our request
    says TCP, and our Contact carries ;transport=tcp (not a REGISTER's 200, whose Contacts are the
    phone's). Anything that does not parse goes as it is."""
    try:
        msg = sip.parse(data)
    except sip.SipError:
        return data
    if isinstance(msg, sip.Request):
        vias = [(i, v) for i, (n, v) in enumerate(msg.headers) if n == "Via"]
        if vias and vias[0][1].startswith("SIP/2.0/UDP "):
            msg.headers[vias[0][0]] = ("Via", "SIP/2.0/TCP " + vias[0][1][len("SIP/2.0/UDP "):])
    if msg.cseq[1] != "REGISTER":
        msg.headers = [(n, _tcp_contact(v) if n == "Contact" else v) for n, v in msg.headers]
    return msg.encode()


def _tcp_contact(value):
    if "transport=" in value.lower() or not value.startswith("<") and '" <' not in value:
        return value
    at = value.index(">")
    return value[:at] + ";transport=tcp" + value[at:]


class Connection:
    __slots__ = ("sock", "addr", "framer", "out", "last_ms", "writing")

    def __init__(self, sock, addr, now):
        self.sock, self.addr = sock, addr
        self.framer = StreamFramer()
        self.out = bytearray()
        self.last_ms = now
        self.writing = False


class TcpListener:
    """The host's SIP port on TCP, beside its UDP one (the daemon holds both): accepts connections,
    hands each framed message to receive(data, (ip, port, "tcp")), sends what the core addresses
    to (ip, port, "tcp") on that connection. count(name) counts into the host's stats."""

    def __init__(self, address, receive, count, log, now_ms):
        self.address = address
        self.receive, self.count, self.log, self.now_ms = receive, count, log, now_ms
        self.sock = None
        self.connections = {}       # (ip, port, "tcp") -> Connection

    def open(self):
        family, _t, _p, _n, sockaddr = socket.getaddrinfo(*self.address, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    def close(self):
        for conn in list(self.connections.values()):
            self._drop(conn, None)
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _accept(self):
        for _ in range(64):
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.count("sip tcp accept errors")
                return
            addr = (peer[0], peer[1], TCP)
            if (len(self.connections) >= MAX_CONNECTIONS or
                    sum(1 for a in self.connections if a[0] == peer[0]) >= MAX_PER_ADDRESS):
                self.count("sip tcp connections refused: limit")
                sock.close()
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x60)   # DSCP CS3, as the UDP port
            except OSError:
                pass   # an IPv6 listener: no IPv4 TOS; the messages go all the same
            conn = self.connections[addr] = Connection(sock, addr, self.now_ms())
            self.count("sip tcp connections")
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, conn)

    def _readable(self, conn):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            return self._drop(conn, "closed by the peer")
        conn.last_ms = self.now_ms()
        try:
            messages = conn.framer.feed(data)
        except FramingError as exc:
            self.count("sip tcp streams unframeable")
            return self._drop(conn, str(exc))
        for message in messages:
            if message == PING:
                self.count("sip keepalives")
                self.send(PONG, conn.addr, raw=True)
            else:
                self.receive(message, conn.addr)

    def send(self, data, addr, raw=False):
        """data (as the core wrote it) to the peer at addr; False when it has no connection (counted)."""
        conn = self.connections.get(tuple(addr))
        if conn is None:
            self.count("sip tcp: no connection to send on")
            return False
        conn.out += data if raw else for_stream(data)
        if len(conn.out) > MAX_QUEUED:
            self._drop(conn, "not reading what it is sent")
            return False
        if not conn.writing:
            self._write(conn)
        return True

    def _write(self, conn):
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            return self._drop(conn, str(exc))
        del conn.out[:sent]
        loop = asyncio.get_running_loop()
        if conn.out and not conn.writing:
            conn.writing = True
            loop.add_writer(conn.sock.fileno(), self._write, conn)
        elif not conn.out and conn.writing:
            conn.writing = False
            loop.remove_writer(conn.sock.fileno())

    def sweep(self, now):
        """Close connections that carried nothing for IDLE_MS."""
        for conn in [c for c in self.connections.values() if now - c.last_ms > IDLE_MS]:
            self._drop(conn, "idle")

    def _drop(self, conn, reason):
        if self.connections.pop(conn.addr, None) is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(conn.sock.fileno())
        if conn.writing:
            loop.remove_writer(conn.sock.fileno())
        conn.sock.close()
        if reason is not None:
            self.log.info("sip-tcp-closed", peer="%s:%d" % conn.addr[:2], reason=reason)
