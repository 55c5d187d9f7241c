"""Call-progress tones and DTMF, generated per 20 ms frame; a Goertzel DTMF detector.

ToneGenerator writes into the caller's PCM frame from one precomputed
1024-entry sine table with 24-bit phase accumulators: nothing is allocated per
frame. Cadences (North American precise tones) are counted in samples.
"""
import math
from array import array

from common.compat import const
from firmware.audio import dsp

RATE = const(8000)
_PHASE_ONE = const(1 << 24)    # one cycle in the 24-bit phase accumulator
_TABLE_SIZE = const(1024)

# name: (f1, f2, on_ms, off_ms); off_ms 0 = continuous
TONES = {
    "dial": (350, 440, 0, 0),
    "ringback": (440, 480, 2000, 4000),
    "busy": (480, 620, 500, 500),
    "reorder": (480, 620, 250, 250),
}
DTMF_ROWS = (697, 770, 852, 941)
DTMF_COLS = (1209, 1336, 1477, 1633)
DTMF_KEYS = ("123A", "456B", "789C", "*0#D")

LEVEL = 0.25  # each component at -12 dBFS: a pair never clips
_SINE = array("h", [int(32767 * LEVEL * math.sin(2 * math.pi * i / _TABLE_SIZE))
                    for i in range(_TABLE_SIZE)])


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


def goertzel_power(pcm, n, hz):
    """Goertzel power of hz over the first n samples of 16-bit PCM bytes (floats; not for the audio path)."""
    coeff = 2 * math.cos(2 * math.pi * hz / RATE)
    s1 = s2 = 0.0
    for i in range(n):
        v = pcm[2 * i] | (pcm[2 * i + 1] << 8)
        if v & 0x8000:
            v -= 0x10000
        s0 = v + coeff * s1 - s2
        s2 = s1
        s1 = s0
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def detect_dtmf(pcm, n=None):
    """The DTMF key present in a block of PCM (ideally 205 samples or more), or None.

    Accepts a key when the strongest row and column tones stand 8x above the
    other tones of their group, twist is within 8 dB, and they hold most of the
    block's energy."""
    if n is None:
        n = len(pcm) // 2
    rows = [goertzel_power(pcm, n, f) for f in DTMF_ROWS]
    cols = [goertzel_power(pcm, n, f) for f in DTMF_COLS]
    r = rows.index(max(rows))
    c = cols.index(max(cols))
    pr, pc = rows[r], cols[c]
    energy = 0.0
    for i in range(n):
        v = pcm[2 * i] | (pcm[2 * i + 1] << 8)
        if v & 0x8000:
            v -= 0x10000
        energy += v * v
    if energy < n * 1000.0:  # quieter than about -40 dBFS
        return None
    for i in range(4):
        if i != r and rows[i] * 8 > pr:
            return None
        if i != c and cols[i] * 8 > pc:
            return None
    if pr > pc * 6.3 or pc > pr * 6.3:  # twist beyond 8 dB
        return None
    # a pure sinusoid's Goertzel power is about energy * n / 2
    if (pr + pc) < 0.5 * energy * n / 2:
        return None
    return DTMF_KEYS[r][c]


class DtmfDetector:
    """Streaming detector: feed PCM frames, get each key once when it starts (two agreeing blocks)."""

    BLOCK = 205

    def __init__(self):
        self._buf = bytearray(2 * self.BLOCK)
        self._fill = 0
        self._last = None
        self._reported = None

    def feed(self, pcm):
        """Feed PCM bytes; returns a list of keys that started within them."""
        keys = []
        i = 0
        while i < len(pcm):
            take = min(len(self._buf) - self._fill, len(pcm) - i)
            self._buf[self._fill:self._fill + take] = pcm[i:i + take]
            self._fill += take
            i += take
            if self._fill == len(self._buf):
                self._fill = 0
                key = detect_dtmf(self._buf, self.BLOCK)
                if key is not None and key == self._last and key != self._reported:
                    keys.append(key)
                    self._reported = key
                if key is None:
                    self._reported = None
                self._last = key
        return keys
