"""The RTP sockets of a host's SIP calls: one UDP socket per call on an even port of a range
(RFC 3550 11: RTP on even ports), and the asyncio glue that moves its datagrams to and from a
SipMediaLeg (host/sip/media.py), which does everything else sans-IO.

A call's packets leave from the socket the phone sends to, so a phone behind NAT gets them from
the address its own packets opened (symmetric RTP). Voice is marked DSCP EF, as upbx media is.
"""
import socket

DSCP_EF = 46 << 2
FIRST_PORT = 10000
LAST_PORT = 19998


class RtpPortsExhausted(OSError):
    """No even port of the range could be bound; the message names the range and the address."""


class RtpPorts:
    """Even UDP ports of [first, last] on address for calls' RTP, handed out round the range."""

    def __init__(self, address, first=FIRST_PORT, last=LAST_PORT):
        if not (0 < first <= last < 65536):
            raise ValueError("RTP ports %d-%d: not a range of UDP ports" % (first, last))
        self.address = address
        self.first = first + (first & 1)
        self.last = last
        self._next = self.first
        self.open_sockets = {}           # port -> socket

    def open(self):
        """(socket, port): a non-blocking UDP socket bound to the next free even port."""
        count = (self.last - self.first) // 2 + 1
        for _ in range(count):
            port = self._next
            self._next = self._next + 2 if self._next + 2 <= self.last else self.first
            if port in self.open_sockets:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.address, port))
            except OSError:
                sock.close()             # taken by another program: the next one
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_EF)
            except OSError:
                pass
            self.open_sockets[port] = sock
            return sock, port
        raise RtpPortsExhausted("no free RTP port in %d-%d on %s (%d calls hold one here)"
                                % (self.first, self.last, self.address, len(self.open_sockets)))

    def close(self, port):
        sock = self.open_sockets.pop(port, None)
        if sock is not None:
            sock.close()


class RtpChannel:
    """A call's RTP socket on an asyncio loop: what arrives goes to media_leg.rtp_in(data, source,
    now()), then after() (the daemon sends what the host core queued); send() is the SipMediaLeg's
    send callable. close() stops reading; the port goes back to ports."""

    def __init__(self, loop, ports, now, after=None):
        self.loop = loop
        self.ports = ports
        self.sock, self.port = ports.open()
        self.now = now
        self.after = after
        self.media_leg = None
        self.sent = self.send_errors = 0
        loop.add_reader(self.sock.fileno(), self._readable)

    def attach(self, media_leg):
        self.media_leg = media_leg

    def _readable(self):
        for _ in range(16):              # a burst at most, then the loop's other work
            try:
                data, source = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:              # an ICMP error from an earlier send: nothing to read
                break
            if self.media_leg is not None:
                self.media_leg.rtp_in(data, source, self.now())
        if self.after is not None:
            self.after()

    def send(self, datagram, address):
        try:
            self.sock.sendto(datagram, address)
            self.sent += 1
        except OSError:                  # unreachable or full: RTP is unreliable anyway
            self.send_errors += 1

    def close(self):
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.ports.close(self.port)
            self.sock = None
