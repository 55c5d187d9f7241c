"""Per-tick CPU time of the handset's own work, measured inside the firmware.

Turned on by the device configuration key "profile" (a number of ticks to record, or
true for 3000 = one minute). A tick is the 20 ms from one audio tick of a call to the
next: the audio tick itself (microphone, encode, VAD, seal, send, playout, speaker) and
everything the loop does until the next one (receive and open frames, timers,
signalling, housekeeping). Busy time is summed with time.ticks_us from the top of each
loop iteration to its sleep; the sleeps are not counted. Each tick's duration and what
it did (its kind) go into storage allocated here, at start-up, so profiling allocates
nothing per tick; report() (at the end) gives the median, p99 and maximum per kind.
"""
from array import array

from common.compat import const
from firmware.audio import jitter

try:
    from time import ticks_diff, ticks_us
except ImportError:  # CPython, for tests of the report
    import time as _time

    def ticks_us():
        return int(_time.perf_counter() * 1000000)

    def ticks_diff(a, b):
        return a - b

NONE = const(0)       # no call: not recorded
NORMAL = const(1)     # a voice frame sent and a received frame played
BRIDGED = const(2)    # a lost frame concealed from both sides (its successor was buffered)
CONCEALED = const(3)  # a lost frame extrapolated from the past
SILENCE = const(4)    # VAD heard silence: no voice frame sent (nothing, or comfort noise)
OTHER = const(5)      # the rest of a call: jitter buffer priming or empty, a local tone
KINDS = ("none", "normal", "bridged", "concealed", "silence", "other")
COLLECTED = const(0x80)  # flag: the tick held the once-a-second garbage collection
DEFAULT_TICKS = const(3000)


class TickProfile:
    """Durations (us) and kinds of up to `capacity` call ticks."""

    def __init__(self, capacity=DEFAULT_TICKS):
        self.us = array("I", bytes(4 * capacity))
        self.kinds = bytearray(capacity)
        self.count = 0
        self.dropped = 0     # ticks after the storage was full
        self.kind = NONE     # what the open tick did, set by classify() after its audio tick
        self._busy = 0
        self._mark = ticks_us()
        self._bridged = 0

    def resume(self):
        """Top of a loop iteration: the handset is busy from here."""
        self._mark = ticks_us()

    def pause(self):
        """Just before the loop sleeps."""
        self._busy += ticks_diff(ticks_us(), self._mark)

    def collected(self):
        """The loop ran its garbage collection in the open tick."""
        self.kind |= COLLECTED

    def tick(self):
        """An audio tick starts: the previous tick ends here and is stored (if it was in a call)."""
        now = ticks_us()
        busy = self._busy + ticks_diff(now, self._mark)
        if self.kind & 0x7F:
            n = self.count
            if n < len(self.kinds):
                self.us[n] = busy
                self.kinds[n] = self.kind
                self.count = n + 1
            else:
                self.dropped += 1
        self.kind = NONE
        self._busy = 0
        self._mark = now

    def classify(self, sent_voice, pipeline):
        """What the audio tick just done did: sent_voice is False when the VAD heard silence."""
        bridged = pipeline.concealer.bridged
        status = pipeline.last_status
        if status == jitter.MISSING:
            kind = BRIDGED if bridged != self._bridged else CONCEALED
        elif not sent_voice:
            kind = SILENCE
        elif sent_voice and status == jitter.FRAME and pipeline.tone.name is None:
            kind = NORMAL
        else:
            kind = OTHER
        self._bridged = bridged
        self.kind = kind | (self.kind & COLLECTED)

    def report(self):
        """{"ticks", "dropped", "unit", "kinds": {name: {"ticks", "p50_us", "p99_us", "max_us",
        "collections"}}, "all": {...}, "worst": {"us", "kind", "collected"}} (allocates: call at the end)."""
        n = self.count
        by_kind = {}
        worst, worst_kind = -1, 0
        for i in range(n):
            k = self.kinds[i]
            v = self.us[i]
            name = KINDS[k & 0x7F]
            if name not in by_kind:
                by_kind[name] = ([], [0])
            by_kind[name][0].append(v)
            if k & COLLECTED:
                by_kind[name][1][0] += 1
            if v > worst:
                worst, worst_kind = v, k
        kinds = {}
        everything = []
        for name, (values, collections) in by_kind.items():
            kinds[name] = _stats(values)
            kinds[name]["collections"] = collections[0]
            everything.extend(values)
        return {"ticks": n, "dropped": self.dropped, "unit": "us of handset CPU per 20 ms tick",
                "kinds": kinds, "all": _stats(everything),
                "worst": {"us": worst, "kind": KINDS[worst_kind & 0x7F] if n else None,
                          "collected": bool(worst_kind & COLLECTED)}}


def _stats(values):
    """Tick count, median, p99 (nearest rank) and maximum of a list of durations."""
    values.sort()
    n = len(values)
    if not n:
        return {"ticks": 0, "p50_us": None, "p99_us": None, "max_us": None}
    return {"ticks": n, "p50_us": values[(n - 1) // 2], "p99_us": values[-(-99 * n // 100) - 1],
            "max_us": values[-1]}
