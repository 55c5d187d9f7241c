"""Call-progress tones and DTMF, generated per 20 ms frame (the detector: firmware/audio/dtmf.py).

ToneGenerator writes into the caller's PCM frame from one precomputed table
(a quarter of a sine period, 257 entries, the rest read by symmetry) with 24-bit
phase accumulators: nothing is allocated per frame. Cadences (North American
precise tones) are counted in samples.
"""
import math
from array import array

from common.compat import const
from firmware.audio import dsp

RATE = const(8000)
_PHASE_ONE = const(1 << 24)    # one cycle in the 24-bit phase accumulator
_QUARTER = const(256)          # table steps per quarter period (1024 per period)

# name: (f1, f2, on_ms, off_ms); off_ms 0 = continuous
TONES = {
    "dial": (350, 440, 0, 0),
    "ringback": (440, 480, 2000, 4000),
    "busy": (480, 620, 500, 500),
    "reorder": (480, 620, 250, 250),
    "stutter": (350, 440, 100, 100),   # dial tone broken up: voicemail waiting (docs/features.md)
}
DTMF_ROWS = (697, 770, 852, 941)
DTMF_COLS = (1209, 1336, 1477, 1633)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")

LEVEL = 0.25  # each component at -12 dBFS: a pair never clips
# the first quarter of a period, 0 to pi/2 inclusive (dsp.add_tone reads the other three by
# symmetry): 514 bytes where a whole period took 2 KB of a handset's heap. A generator, not a
# list: a list of ints is a block of 4-8 bytes per entry that a small heap may not have.
_SINE = array("h", (int(32767 * LEVEL * math.sin(math.pi / 2 * i / _QUARTER)) for i in range(_QUARTER + 1)))


def phase_increment(hz):
    """Per-sample phase step for hz in the 24-bit accumulator."""
    return (hz * _PHASE_ONE + RATE // 2) // RATE


def dtmf_pair(digit):
    """(row_hz, col_hz) of a DTMF key; ValueError names an unknown key."""
    for r in range(4):
        c = DTMF_KEYS[r].find(digit)
        if c >= 0 and len(digit) == 1:
            return DTMF_ROWS[r], DTMF_COLS[c]
    raise ValueError("not a DTMF key: %r" % (digit,))


class ToneGenerator:
    """One tone at a time: a named call-progress tone or a DTMF digit."""

    def __init__(self):
        self.name = None      # "dial", "ringback", ..., "dtmf", or None when silent
        self._inc1 = 0
        self._inc2 = 0
        self._ph1 = 0
        self._ph2 = 0
        self._on = 0          # samples on per cycle; 0 = continuous
        self._cycle = 0       # samples per cycle
        self._pos = 0         # samples into the cycle
        self._left = -1       # samples left of a timed tone (DTMF); -1 = untimed

    def start(self, name):
        """Start a call-progress tone by name (see TONES)."""
        f1, f2, on_ms, off_ms = TONES[name]
        self._set(name, f1, f2, on_ms, off_ms, -1)

    def dtmf(self, digit, ms=100):
        """Play a DTMF digit for ms milliseconds, then fall silent."""
        f1, f2 = dtmf_pair(digit)
        self._set("dtmf", f1, f2, 0, 0, ms * (RATE // 1000))

    def stop(self):
        self.name = None

    def _burst(self, pcm, off, n):
        self._ph1 = dsp.add_tone(pcm, off, n, _SINE, self._ph1, self._inc1)
        self._ph2 = dsp.add_tone(pcm, off, n, _SINE, self._ph2, self._inc2)

    def _set(self, name, f1, f2, on_ms, off_ms, left):
        self.name = name
        self._inc1 = phase_increment(f1)
        self._inc2 = phase_increment(f2)
        self._ph1 = 0
        self._ph2 = 0
        self._on = on_ms * (RATE // 1000)
        self._cycle = (on_ms + off_ms) * (RATE // 1000)
        self._pos = 0
        self._left = left

    def fill(self, pcm, n=160):
        """Write the next n samples of the tone (silence when stopped) into pcm; returns whether a tone is active."""
        dsp.fill(pcm, 0, n, 0)
        if self.name is None:
            return False
        if self._left >= 0:
            if self._left == 0:
                self.name = None
                return False
            if self._left < n:
                n = self._left
            self._left -= n
        if not self._on:
            self._burst(pcm, 0, n)
            return True
        pos = self._pos
        if pos < self._on:  # inside the on part at the frame's start
            self._burst(pcm, 0, min(self._on - pos, n))
        nxt = self._cycle - pos  # the next cycle's on part starts within this frame
        if nxt < n:
            self._burst(pcm, nxt, min(n - nxt, self._on))
        self._pos = (pos + n) % self._cycle
        return True

