"""Attackers for the security tests, built from common/ as a script would build them.

- `Intruder`: a compromised phone or remote host: it logs in with a stolen secret over
  a real UDP socket (common.login) and then sends whatever authenticated messages and
  frames it likes, through the reliable channel or raw (any sequence number, no wait).
- `Tap`: a bystander on the path: a UDP forwarder between a device and its host that
  keeps a copy of every datagram the device sends, for replaying later from elsewhere.
"""
import os
import select
import socket
import threading
import time

from upbx.common import wire
from upbx.common.crypto import extend16
from upbx.common.login import UP, Login


def now_ms():
    return int(time.monotonic() * 1000)


class Intruder:
    """A logged-in device under an attacker's control, on its own UDP socket on loopback."""

    def __init__(self, identity_ie, identity, secret, server):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.setblocking(False)
        if isinstance(secret, str):
            secret = bytes.fromhex(secret)
        self.login = Login(identity_ie, identity, secret, int.from_bytes(os.urandom(2), "big") + 1, os.urandom)
        self.inbox = []          # (type, ies) the host sent us
        self.sent = 0            # authenticated messages and frames sent
        self.acked = 0           # the host's acknowledgement: every sequence number below it arrived

    @classmethod
    def host(cls, name, secret, server):
        return cls(wire.IE_HOST_NAME, name, secret, server)

    @classmethod
    def phone(cls, number, secret, server):
        return cls(wire.IE_EXTENSION, number, secret, server)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # the session

    def log_in(self, timeout=10):
        self.login.start(now_ms())
        deadline = time.time() + timeout
        while self.login.state != UP:
            if time.time() > deadline:
                raise TimeoutError("intruder %s: no login" % self.login.identity)
            self.pump(0.05)
        return self

    def pump_until(self, predicate, what, timeout=15, others=()):
        """Pump (and pump `others`, other intruders that must keep acknowledging) until predicate()
        holds; the timeout only guards against a hang."""
        deadline = time.time() + timeout
        while not predicate():
            if time.time() > deadline:
                raise TimeoutError("intruder %s: timed out waiting for %s" % (self.login.identity, what))
            self.pump(0.02)
            for other in others:
                other.pump(0)

    def pump(self, seconds=0.0):
        """Receive for `seconds` (at least once), acknowledge, run timers, send what is due."""
        deadline = time.time() + seconds
        while True:
            now = now_ms()
            timer = self.login.next_timer()
            if timer is not None and timer <= now:
                self.login.handle_timer(now)
            self._flush(now)
            ready = select.select([self.sock], [], [], max(0.0, min(0.01, deadline - time.time())))[0]
            if ready:
                for _ in range(256):
                    try:
                        data, _addr = self.sock.recvfrom(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    try:
                        if wire.frame_kind(data) == wire.KIND_FULL:
                            self._receive(data)
                    except wire.DecodeError:
                        pass
                self._flush(now_ms())
            if time.time() >= deadline:
                return

    def _receive(self, data):
        channel = self.login.channel
        before = channel.authenticated if channel is not None else 0
        self.inbox.extend(self.login.receive(data, now_ms()))
        channel = self.login.channel
        if channel is not None and channel.authenticated != before:
            self.acked = max(self.acked, extend16(channel.next_seq - 1, wire.parse_full(data)[2]))

    def _flush(self, now):
        for datagram in self.login.datagrams_to_send(now):
            self.sock.sendto(datagram, self.server)

    def send(self, msg_type, ies):
        """One message through the reliable channel (waits for window space)."""
        while self.login.channel.pending() >= 32:
            self.pump(0.005)
        self.login.send(msg_type, ies, now_ms())
        self.sent += 1
        self._flush(now_ms())

    def blast(self, messages, chunk=256, timeout=10):
        """Messages [(type, ies)] sealed with consecutive sequence numbers and sent without the
        window (the attacker has the keys: it need not wait), `chunk` at a time, each chunk
        followed by a PING and a wait until the host has acknowledged all of it (so the host's
        socket never overflows, and a host that stops acknowledging is noticed)."""
        channel = self.login.channel
        for start in range(0, len(messages), chunk):
            for msg_type, ies in messages[start:start + chunk] + [(wire.PING, {})]:
                seq = channel.next_seq
                channel.next_seq += 1
                self.sock.sendto(channel.crypto.seal(channel.peer_index, seq, channel.expected, msg_type,
                                                     wire.encode_ies(ies)), self.server)
                self.sent += 1
            deadline = time.time() + timeout
            while self.acked < channel.next_seq:
                if time.time() > deadline:
                    raise TimeoutError("the host stopped acknowledging after %d of %d messages"
                                       % (start, len(messages)))
                self.pump(0.002)
            # and take (acknowledge) the host's answers until they stop for a moment: an attacker
            # that never did would only get its own session dropped (the host's queue is bounded)
            quiet_since, seen = time.time(), len(self.inbox)
            while time.time() - quiet_since < 0.05 and time.time() < deadline:
                self.pump(0.005)
                if len(self.inbox) != seen:
                    quiet_since, seen = time.time(), len(self.inbox)

    def trunk(self, entries):
        """A trunk frame on our session carrying raw entries [(call_no, ts16, payload)], tagged with
        our session key as if each entry's 64-bit timestamp were its 16 bits (a call < 32 s old)."""
        channel = self.login.channel
        n = wire.TRUNK_HEADER + sum(wire.TRUNK_ENTRY_HEADER + len(p) for _c, _t, p in entries)
        buf = bytearray(n + wire.MEDIA_TAG)
        wire.pack_trunk_header(buf, channel.peer_index)
        offset = wire.TRUNK_HEADER
        for call_no, ts16, payload in entries:
            offset = wire.pack_trunk_entry(buf, offset, call_no, ts16, len(payload) == wire.CN_BYTES)
            buf[offset:offset + len(payload)] = payload
            offset += len(payload)
        stamps = b"".join(ts.to_bytes(8, "big") for _c, ts, _p in entries)
        buf[n:] = channel.crypto.send_auth.digest2(stamps, memoryview(buf)[:n])[:wire.MEDIA_TAG]
        self.sock.sendto(bytes(buf), self.server)
        self.sent += 1


class Tap:
    """A forwarder on a device's path to its host that keeps what the device sends (a bystander)."""

    def __init__(self, target):
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # the device sends here
        self.sock.bind(("127.0.0.1", 0))
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # our side towards the host
        self.up.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.captured = []       # datagrams from the device, in order
        self._device = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            for sock in select.select([self.sock, self.up], [], [], 0.05)[0]:
                data, addr = sock.recvfrom(65536)
                if sock is self.sock:
                    self._device = addr
                    self.captured.append(data)
                    self.up.sendto(data, self.target)
                elif self._device is not None:
                    self.sock.sendto(data, self._device)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        self.up.close()
