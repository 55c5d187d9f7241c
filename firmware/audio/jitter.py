"""Adaptive jitter buffer for 20 ms G.711 frames with 16-bit timestamps.

put() copies each payload into a preallocated slot ring; get() is called once
per 20 ms playout tick and hands out the frame due now, or says MISSING (the
caller conceals) or EMPTY (not playing yet). Time is passed in (integer ms, the
handset's ticks: compared with ticks_diff, so the clock may wrap).

Playout delay adapts between _MIN_DELAY_MS and MAX_DELAY_MS: the target is
frame_ms + 3 x the RFC 3550 interarrival jitter estimate, in whole frames. The
buffer grows by holding the play position when it runs dry (late frames then
still play) and shrinks by skipping one frame when, for a whole second, it
never held fewer frames than target + 1. peek() shows the frame the next get()
will play (the concealer bridges a lost frame into it) and changes nothing but
this: that frame is not the one skipped to shrink.

stats() also names the first GAPS places where playout was not simply the next
frame, by the 16-bit timestamp of the frame due there: "concealed" (that frame was
lost or late: concealed instead, and it never plays), "bridged" (the same, concealed
into the frame after it, shown by peek()), "held" (nothing at all was buffered: 20 ms
concealed before that frame, which plays later; the delay grew) or "skipped" (that
frame left out to shrink the delay). A test can so tell what the network did from
what the machine's timing made the buffer do.
"""
from array import array

from common import kernels
from common.compat import const, micropython, ticks_diff

FRAME = const(0)
MISSING = const(1)
EMPTY = const(2)

# put() results
ACCEPTED = const(0)
LATE = const(1)
DUPLICATE = const(2)
BAD_SIZE = const(3)

_MIN_DELAY_MS = const(20)
MAX_DELAY_MS = const(120)
_DRY_TICKS_TO_REPRIME = const(6)   # 120 ms without any frame: stop and buffer afresh
_SHRINK_WINDOW_TICKS = const(50)   # one second of surplus before dropping a frame
GAPS = const(32)                   # the gaps stats() names (timestamp and kind), the first of a run
_GAP_KINDS = ("concealed", "bridged", "held", "skipped")


class JitterBuffer:
    """Slot ring of `slots` frames of `frame_bytes` each; ts advances `ts_per_frame` per frame."""

    def __init__(self, frame_bytes=160, frame_ms=20, ts_per_frame=160, slots=16,
                 initial_delay_ms=40):
        self.frame_bytes = frame_bytes
        self.frame_ms = frame_ms
        self.ts_per_frame = ts_per_frame
        self._ts_per_ms = ts_per_frame // frame_ms
        self._n = slots
        self._store = bytearray(slots * frame_bytes)
        # the frame handed out by get() and peek() is copied out of its slot into these (one buffer
        # each, made once, rather than a view and a result per slot on a handset's heap): returning
        # them allocates nothing
        self._out = bytearray(frame_bytes)
        self._ahead = bytearray(frame_bytes)
        self._frame = (FRAME, memoryview(self._out))
        self._missing = (MISSING, None)
        self._empty = (EMPTY, None)
        self._full = bytearray(slots)
        self._ts = [0] * slots
        self.received = 0
        self.late = 0
        self.duplicate = 0
        self.concealed = 0
        self.dropped = 0     # frames skipped to shrink the delay
        self.resyncs = 0
        self.reprimed = 0    # times it ran dry for 120 ms, stopped and buffered afresh
        self.bad_size = 0
        self.peeked = 0      # frames shown by peek() before they played (a loss bridged into them)
        self.jitter_x16 = 0  # RFC 3550 estimate, ms x 16
        self._gaps = array("I", bytes(4 * GAPS))   # ts16 | kind << 16 (kind: 1 + index in _GAP_KINDS)
        self._gap_count = 0
        self._missed = False  # the last get() said MISSING: a peek() now bridges that gap
        self.target_ms = self._clamp(initial_delay_ms)
        self.delay_ms = 0    # buffered audio after the last get()
        self.reset()

    def reset(self):
        """Forget all frames and timing (a new call or stream)."""
        for i in range(self._n):
            self._full[i] = 0
        self.playing = False
        self._primed = False
        self._head = 0          # slot of the next frame to play
        self._head_ts = 0       # its 16-bit timestamp
        self._newest = -1       # offset from head of the newest frame held
        self._prime_ms = 0
        self._dry = 0
        self._min_depth = 255
        self._window = 0
        self._last_arrival = 0
        self._last_ts = 0
        self._have_last = False
        self._peeked = False    # the head frame was shown by peek(): do not skip it

    @micropython.native
    def _clamp(self, ms):
        f = self.frame_ms
        ms = (ms + f - 1) // f * f
        if ms < _MIN_DELAY_MS:
            return _MIN_DELAY_MS
        if ms > MAX_DELAY_MS:
            return MAX_DELAY_MS
        return ms

    @micropython.native
    def _offset(self, ts16):
        d = (ts16 - self._head_ts) & 0xFFFF
        if d >= 0x8000:
            d -= 0x10000
        step = self.ts_per_frame
        return (d + (step >> 1)) // step

    @micropython.native
    def _estimate_jitter(self, ts16, now_ms):
        if self._have_last:
            dts = (ts16 - self._last_ts) & 0xFFFF
            if dts >= 0x8000:
                dts -= 0x10000
            d = ticks_diff(now_ms, self._last_arrival) - dts // self._ts_per_ms
            if d < 0:
                d = -d
            if d > 1000:
                d = 1000  # one outlier (a stall, a resync) must not dominate
            self.jitter_x16 += d - ((self.jitter_x16 + 8) >> 4)
            self.target_ms = self._clamp(self.frame_ms + 3 * self.jitter_x16 // 16)
        self._last_arrival = now_ms
        self._last_ts = ts16
        self._have_last = True

    @micropython.native
    def put(self, ts16, payload, now_ms):
        """Store one frame; returns ACCEPTED, LATE, DUPLICATE or BAD_SIZE."""
        n = len(payload)
        if n != self.frame_bytes:
            self.bad_size += 1
            return BAD_SIZE
        if not self._primed:
            self._primed = True
            self._prime_ms = now_ms
            self._head_ts = ts16
        off = self._offset(ts16)
        if off <= -self._n:
            off = self._n  # far behind anything held: the sender restarted its clock
        if off < 0:
            if self.playing or self._newest - off >= self._n:
                self.late += 1
                return LATE
            # still buffering: an earlier frame arrived second, so start from it
            self._head = (self._head + off) % self._n
            self._head_ts = (self._head_ts + off * self.ts_per_frame) & 0xFFFF
            self._newest -= off
            off = 0
        elif off >= self._n:
            # far ahead or behind (sender restarted, long gap): start again from this frame
            self.resyncs += 1
            self.reset()
            self._primed = True
            self._prime_ms = now_ms
            self._head_ts = ts16
            off = 0
        slot = (self._head + off) % self._n
        if self._full[slot] and self._ts[slot] == ts16:
            self.duplicate += 1
            return DUPLICATE
        self._estimate_jitter(ts16, now_ms)
        kernels.copy_bytes(self._store, slot * n, payload, 0, n)   # no allocation
        self._full[slot] = 1
        self._ts[slot] = ts16
        if off > self._newest:
            self._newest = off
        self.received += 1
        return ACCEPTED

    @micropython.native
    def get(self, now_ms):
        """(status, payload) for this playout tick; payload is valid until the next get()."""
        self._missed = False
        if not self.playing:
            if not self._primed or ticks_diff(now_ms, self._prime_ms) < self.target_ms - self.frame_ms:
                return self._empty
            self.playing = True
        if self._newest < 0:
            # dry: hold the play position so a late frame still plays (the delay grows)
            self._dry += 1
            if self._dry >= _DRY_TICKS_TO_REPRIME:
                self.reset()
                self.reprimed += 1
                return self._empty
            self.concealed += 1
            self._gap(self._head_ts, 3)
            self.delay_ms = 0
            return self._missing
        self._dry = 0
        depth = self._newest + 1
        if depth < self._min_depth:
            self._min_depth = depth
        self._window += 1
        if self._window >= _SHRINK_WINDOW_TICKS:
            if (self._min_depth * self.frame_ms > self.target_ms + self.frame_ms and depth > 1
                    and not self._peeked):
                self._gap(self._head_ts, 4)
                self._advance()
                self.dropped += 1
            self._window = 0
            self._min_depth = 255
        self._peeked = False
        slot = self._head
        had = self._full[slot]
        if not had:
            self._gap(self._head_ts, 1)
        self._advance()
        self.delay_ms = (self._newest + 1) * self.frame_ms
        if had:
            kernels.copy_bytes(self._out, 0, self._store, slot * self.frame_bytes, self.frame_bytes)
            return self._frame
        self.concealed += 1
        return self._missing

    @micropython.native
    def peek(self):
        """The payload the next get() will return as FRAME, or None if that frame is not here yet
        (valid until the next peek())."""
        if self.playing and self._newest >= 0 and self._full[self._head]:
            if not self._peeked:
                self._peeked = True
                self.peeked += 1
            if self._missed:   # the gap the last get() left is bridged into this frame
                self._missed = False
                n = self._gap_count
                if n <= GAPS and self._gaps[n - 1] >> 16 == 1:
                    self._gaps[n - 1] += 1 << 16
            kernels.copy_bytes(self._ahead, 0, self._store, self._head * self.frame_bytes, self.frame_bytes)
            return self._ahead
        return None

    @micropython.native
    def _gap(self, ts16, kind):
        """Note a frame that did not play as it came (the first GAPS of them are kept)."""
        n = self._gap_count
        if n < GAPS:
            self._gaps[n] = ts16 | kind << 16
        self._gap_count = n + 1
        self._missed = kind == 1

    @micropython.native
    def _advance(self):
        self._full[self._head] = 0
        self._head = (self._head + 1) % self._n
        self._head_ts = (self._head_ts + self.ts_per_frame) & 0xFFFF
        self._newest -= 1

    def stats(self):
        """Counters as a dict (allocates: for reports, not for the audio path)."""
        gaps = []
        for i in range(self._gap_count if self._gap_count < GAPS else GAPS):
            gaps.append([self._gaps[i] & 0xFFFF, _GAP_KINDS[(self._gaps[i] >> 16) - 1]])
        return {"received": self.received, "late": self.late, "duplicate": self.duplicate,
                "concealed": self.concealed, "dropped": self.dropped, "resyncs": self.resyncs,
                "reprimed": self.reprimed, "bad_size": self.bad_size, "peeked": self.peeked,
                "delay_ms": self.delay_ms, "target_ms": self.target_ms, "jitter_ms": self.jitter_x16 // 16,
                "gap_count": self._gap_count, "gaps": gaps}
