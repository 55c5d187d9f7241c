"""DTMF and call-progress tone detection with Goertzel (tests and tools; the handset does not import it).

goertzel_power measures one frequency in a block of 16-bit PCM; detect_dtmf and the streaming
DtmfDetector find keypad digits. Floats and allocation are fine here: not the audio path.
"""
import math

from firmware.audio.tones import DTMF_COLS, DTMF_KEYS, DTMF_ROWS, RATE


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
