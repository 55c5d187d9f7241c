"""Reliable, ordered delivery of signalling messages over datagrams (sans-IO).

    channel.send(msg_type, ies, now)       queue a message
    channel.receive(datagram, now)         -> messages delivered in order
    channel.datagrams_to_send(now)         -> frames to put on the wire
    channel.next_timer() / handle_timer(now)

Time is integer milliseconds, passed in, compared with ticks_diff (it may wrap). Every data frame carries a 16-bit
sequence number and a cumulative acknowledgement; a frame is resent with
doubling timeouts until acknowledged and the channel gives up after MAX_TRIES,
setting `failed`. Duplicates are acknowledged again and never delivered twice.
The frame crypto (authentication, encryption) is passed in: see common.session.
"""
from . import wire
from .compat import const, ticks_add, ticks_diff, ticks_earliest
from .crypto import extend16

WINDOW = const(32)          # messages in flight before the rest wait in the queue
RTO_INITIAL_MS = const(250)
RTO_MAX_MS = const(4000)
MAX_TRIES = const(8)        # about 15 s from first send to giving up
_REORDER_LIMIT = const(64)   # how far ahead of the expected number a frame may be buffered
_MAX_QUEUE = const(4096)     # messages waiting for window space; more and the channel fails
_NONE = {}                   # the _unacked of every channel with nothing unacknowledged: never written to


class Channel:
    # a main host holds one per registered phone (10,000): no per-instance dict on CPython
    # (MicroPython ignores __slots__)
    __slots__ = ("crypto", "peer_index", "next_seq", "expected", "_unacked", "_queue", "_early", "_ack_due",
                 "_out", "failed", "error", "retransmissions", "duplicates", "last_receive_ms", "authenticated",
                 "new")

    def __init__(self, crypto, peer_index=0):
        self.crypto = crypto
        self.peer_index = peer_index
        self.next_seq = 0          # extended sequence number of our next data frame
        self.expected = 0          # extended sequence number we deliver next
        self._unacked = _NONE      # seq -> [type, payload, next_send_ms, rto_ms, tries]
        # these three are () until something is put in them and again once emptied: a host holds
        # thousands of idle channels, a handset's heap is small
        self._queue = ()           # [(type, payload)] waiting for window space
        self._early = ()           # {seq: (type, payload)} received ahead of expected
        self._ack_due = False
        self._out = ()             # [frames] to put on the wire
        self.failed = False
        self.error = None
        self.retransmissions = 0
        self.duplicates = 0
        self.last_receive_ms = None
        self.authenticated = 0     # frames that passed authentication
        self.new = 0               # of those, frames that were new: not a replay or a duplicate

    # sending

    def send(self, msg_type, ies, now):
        """Queue one message; ies is a dict {IE type: value}."""
        self.send_encoded(msg_type, wire.encode_ies(ies), now)

    def send_encoded(self, msg_type, payload, now):
        """Queue one message whose IEs are encoded already (a host sends one site's chunks to many)."""
        if len(self._unacked) < WINDOW:
            self._transmit_new(msg_type, payload, now)
        elif len(self._queue) < _MAX_QUEUE:
            if not self._queue:
                self._queue = []
            self._queue.append((msg_type, payload))
        elif not self.failed:
            # a peer that never acknowledges must not make us hold messages without end
            self.failed = True
            self.error = "more than %d messages waiting for acknowledgement" % _MAX_QUEUE

    def _transmit_new(self, msg_type, payload, now):
        seq = self.next_seq
        self.next_seq += 1
        if not self._unacked:
            self._unacked = {}
        self._unacked[seq] = [msg_type, payload, ticks_add(now, RTO_INITIAL_MS), RTO_INITIAL_MS, 1]
        self._emit(seq, msg_type, payload)

    def _emit(self, seq, msg_type, payload):
        self._put(self.crypto.seal(self.peer_index, seq, self.expected, msg_type, payload))
        self._ack_due = False

    def _put(self, frame):
        if self._out:
            self._out.append(frame)
        else:
            self._out = [frame]

    def datagrams_to_send(self, now):
        """The frames to send now (a list)."""
        if self._ack_due:
            self._put(self.crypto.seal(self.peer_index, self.next_seq, self.expected, wire.ACK, b""))
            self._ack_due = False
        out = self._out or []
        self._out = ()
        return out

    def pending(self):
        """Messages sent and not yet acknowledged, plus those waiting."""
        return len(self._unacked) + len(self._queue)

    # timers

    def next_timer(self):
        if self.failed:
            return None
        timer = None
        for entry in self._unacked.values():
            timer = ticks_earliest(timer, entry[2])
        return timer

    def handle_timer(self, now):
        if self.failed:
            return
        for seq in sorted(self._unacked):
            entry = self._unacked[seq]
            if ticks_diff(entry[2], now) > 0:
                continue
            if entry[4] >= MAX_TRIES:
                self.failed = True
                self.error = "no acknowledgement for %s after %d tries" % (
                    wire.MESSAGE_NAMES.get(entry[0], entry[0]), entry[4])
                return
            entry[3] = min(entry[3] * 2, RTO_MAX_MS)
            entry[2] = ticks_add(now, entry[3])
            entry[4] += 1
            self.retransmissions += 1
            self._emit(seq, entry[0], entry[1])

    def resend_now(self, now):
        """Resend everything unacknowledged at the next timer (the peer moved to a new address)."""
        for entry in self._unacked.values():
            entry[2] = now

    # receiving

    def receive(self, datagram, now):
        """Messages [(type, ies)] delivered in order; [] for a frame that fails authentication.

        Raises wire.DecodeError for a malformed frame (caller counts and drops it).
        """
        _index, seq16, ack16, msg_type = wire.parse_full(datagram)
        seq = extend16(self.expected - 1, seq16)
        ack = extend16(self.next_seq - 1, ack16)   # the tag covers both as the sender meant them
        opened = self.crypto.open(datagram, seq, ack)
        if opened is None:
            return []
        payload = opened
        self.authenticated += 1
        self.last_receive_ms = now
        # new: acknowledges something not acknowledged before, or carries a sequence number not
        # received before. Only a new frame may move the peer's address (WireGuard's rule): an
        # old frame replayed from elsewhere authenticates but proves nothing about where the peer is.
        fresh = self._acknowledged(ack, now)
        if msg_type == wire.ACK:
            if fresh:
                self.new += 1
            return []
        ies = wire.decode_ies(payload, wire.FULL_HEADER)
        self._ack_due = True
        if seq != self.expected:
            if seq < self.expected or seq in self._early:
                self.duplicates += 1
            elif seq - self.expected < _REORDER_LIMIT:
                if not self._early:
                    self._early = {}
                self._early[seq] = (msg_type, ies)
                fresh = True  # not delivered yet, but received for the first time
            if fresh:
                self.new += 1
            return []
        self.new += 1
        delivered = [(msg_type, ies)]
        self.expected += 1
        if self._early:
            while self.expected in self._early:
                delivered.append(self._early.pop(self.expected))
                self.expected += 1
            if not self._early:
                self._early = ()
        return delivered

    def _acknowledged(self, ack, now):
        """Drop what ack (the peer's next expected sequence number) covers; True when anything was."""
        done = [s for s in self._unacked if s < ack]
        for seq in done:
            del self._unacked[seq]
        if done and not self._unacked:
            self._unacked = _NONE   # a dict keeps the room it grew to: an idle channel holds the shared empty one
        while self._queue and len(self._unacked) < WINDOW:
            msg_type, payload = self._queue.pop(0)
            self._transmit_new(msg_type, payload, now)
        if not self._queue:
            self._queue = ()
        return bool(done)
