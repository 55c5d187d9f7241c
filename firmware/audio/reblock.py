"""Re-block I2S DMA chunks of any size into 20 ms frames, without allocating.

The ESP32 I2S driver delivers 256-frame (32 ms) chunks at 8 kHz; an INMP441
microphone fills 32-bit slots with 24-bit samples, of which the top 16 bits are
kept. The INMP441 also outputs zeros for about 0.5 s after its clock starts:
`settle` samples at the start are discarded.
"""
from common.compat import const
from firmware.audio import dsp

FRAME = const(160)


class Reblocker:
    """A ring of int16 samples fed by push(), drained by pop_frame()."""

    def __init__(self, slot_bytes=2, capacity=1024, settle=0, frame=FRAME):
        if slot_bytes not in (2, 4):
            raise ValueError("slot_bytes must be 2 (16-bit) or 4 (32-bit I2S slots)")
        self.slot_bytes = slot_bytes
        self.frame = frame
        self._cap = capacity
        self._ring = bytearray(2 * capacity)
        self._read = 0
        self._count = 0
        self._settle = settle
        self.overruns = 0   # samples dropped because the ring was full (oldest first)

    def clear(self):
        """Forget what is buffered (a new call: the microphone's past is not sent)."""
        self._read = 0
        self._count = 0

    def available(self):
        """Samples buffered."""
        return self._count

    def push(self, chunk, nbytes=-1):
        """Append the first nbytes of an I2S chunk (all of it by default)."""
        if nbytes < 0:
            nbytes = len(chunk)
        n = nbytes // self.slot_bytes
        src = 0
        if self._settle:
            skip = n if n < self._settle else self._settle
            self._settle -= skip
            n -= skip
            src = skip
        if n > self._cap:  # keep the newest
            self.overruns += n - self._cap
            src += n - self._cap
            n = self._cap
        over = self._count + n - self._cap
        if over > 0:
            self.overruns += over
            self._read = (self._read + over) % self._cap
            self._count -= over
        write = (self._read + self._count) % self._cap
        first = self._cap - write
        if first > n:
            first = n
        self._store(write, chunk, src, first)
        if n > first:
            self._store(0, chunk, src + first, n - first)
        self._count += n

    def _store(self, at, chunk, src, n):
        if self.slot_bytes == 2:
            dsp.copy(self._ring, at, chunk, src, n)
        else:
            dsp.slots32_to_pcm16(self._ring, at, chunk, src, n)

    def pop_frame(self, out):
        """Copy the next frame into out (frame * 2 bytes); False when not enough is buffered."""
        f = self.frame
        if self._count < f:
            return False
        first = self._cap - self._read
        if first > f:
            first = f
        dsp.copy(out, 0, self._ring, self._read, first)
        if f > first:
            dsp.copy(out, first, self._ring, 0, f - first)
        self._read = (self._read + f) % self._cap
        self._count -= f
        return True
