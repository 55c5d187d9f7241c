"""Packet loss concealment in the style of ITU-T G.711 Appendix I.

Concealer keeps HISTORY samples (48.75 ms) of the decoded signal and plays it
out OVERLAP samples (3.75 ms) late, so that a loss can still be blended into
audio not yet heard. On the first lost frame it finds the pitch period by
normalised autocorrelation (coarse search on every other sample, then refined),
repeats the last pitch period, after 10 ms the last two, after 20 ms the last
three (each change blended over a quarter period), attenuates 20 % per 10 ms
after the first 10 ms and is silent after 60 ms. The first good frame after a
loss is blended with the continued synthetic signal over 4 ms per 10 ms lost
(at most 10 ms). Concealer(enabled=False) plays silence for lost frames instead.

Two-sided concealment: when the frame after the lost one is already at hand
(the jitter buffer holds it), lost(out, ahead) bridges the gap instead: the last
pitch period of the past, repeated at full level, is cross-faded across the
whole 20 ms into the first pitch period of the next frame repeated back in time
(its start blended with the period after it so the repeats join smoothly, its
end pulled onto the next frame's first sample by a ramped offset); each period
is measured on the 5 ms at its edge of the gap. The gap then ends where the next
frame begins, and that frame plays unmodified. The last frame of a longer loss
is bridged the same way from the attenuated continuation.

All buffers are bytearrays of int16 samples allocated at construction.
"""
from array import array

from common.compat import const, micropython
from firmware.audio import dsp

FRAME = const(160)        # samples per 20 ms frame
_SUBFRAME = const(80)      # 10 ms: attenuation and period-count steps
HISTORY = const(390)      # 48.75 ms, as Appendix I
OVERLAP = const(30)       # playout delay = longest quarter period (_PITCH_MAX / 4)
_PITCH_MIN = const(40)     # 200 Hz
_PITCH_MAX = const(120)    # 66.7 Hz
_CORRLEN = const(160)      # 20 ms correlation window
_MAX_LOOP = const(360)    # three periods of _PITCH_MAX
_MIN_ENERGY = const(250)  # per correlated sample, at full scale: below it assume _PITCH_MAX
_PITCH_WINDOW = const(40)  # 5 ms: a bridged gap's pitch periods come from its edges
_RAMP = const(80)         # samples over which a bridged gap's end is pulled onto the next frame
_SCORE = array("i", [0])  # dsp.best_lag's best score (scratch: no allocation per search)


def _sample(buf, i):
    v = buf[2 * i] | (buf[2 * i + 1] << 8)
    return v - 0x10000 if v & 0x8000 else v


def _shift(peak):
    """Right shift that keeps samples of this peak within 2047, so every sum stays inside 31 bits."""
    shift = 0
    while (peak >> shift) > 2047:
        shift += 1
    return shift


def find_pitch(hist, end=HISTORY):
    """Pitch period (samples) of the _CORRLEN samples ending at `end` in hist, by normalised autocorrelation."""
    start = end - _CORRLEN
    shift = _shift(dsp.peak(hist, start - _PITCH_MAX, _CORRLEN + _PITCH_MAX))
    score = _SCORE
    # coarse: every other lag on every other sample
    coarse = dsp.best_lag(hist, start, -1, _PITCH_MIN, _PITCH_MAX, 2, _CORRLEN, 2, shift,
                          (_MIN_ENERGY * (_CORRLEN // 2)) >> (2 * shift), 1, score) or _PITCH_MAX
    floor = (_MIN_ENERGY * _CORRLEN) >> (2 * shift)
    best = dsp.best_lag(hist, start, -1, max(coarse - 1, _PITCH_MIN), min(coarse + 1, _PITCH_MAX), 1, _CORRLEN, 1,
                        shift, floor, 1, score) or coarse
    best_score = score[0]
    # a periodic signal correlates as well at 2 and 3 periods: prefer the shortest
    for div in (3, 2):
        cand = dsp.best_lag(hist, start, -1, max(best // div - 1, _PITCH_MIN), best // div + 1, 1, _CORRLEN, 1,
                            shift, floor, 1, score)
        if cand and score[0] * 8 >= best_score * 7:
            return cand
    return best


def local_pitch(buf, ref, direction):
    """Pitch period (samples) of the _PITCH_WINDOW samples at ref in buf, matched against those
    `direction` (1 later, -1 earlier) a lag away, by normalised correlation; 0 if nothing matches."""
    lo = ref if direction > 0 else ref - _PITCH_MAX
    shift = _shift(dsp.peak(buf, lo, _PITCH_WINDOW + _PITCH_MAX))
    return dsp.best_lag(buf, ref, direction, _PITCH_MIN, _PITCH_MAX, 1, _PITCH_WINDOW, 1, shift,
                        (_MIN_ENERGY * _PITCH_WINDOW) >> (2 * shift), 0, _SCORE)


class Concealer:
    """Turns a stream of good and lost 20 ms PCM frames into continuous audio."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._hist = bytearray(2 * HISTORY)
        self._orig = bytearray(2 * HISTORY)   # the real signal at the start of a loss
        self._loop = bytearray(2 * _MAX_LOOP)
        self._next = bytearray(2 * _MAX_LOOP)
        self._tail = bytearray(2 * _SUBFRAME)  # synthetic continuation for the recovery blend
        self._fade = bytearray(2 * (_PITCH_MAX >> 2))  # old loop's continuation when periods change
        self._subframe_pos = 0  # samples into the current 10 ms step
        self.lost_run = 0       # 10 ms subframes concealed in the current loss
        self.pitch = 0
        self.concealed = 0      # frames concealed in total
        self.bridged = 0        # of those, concealed from both sides
        self._periods = 0
        self._pos = 0

    def reset(self):
        """Forget the history (a new call)."""
        for i in range(len(self._hist)):
            self._hist[i] = 0
        self.lost_run = 0
        self._subframe_pos = 0

    @micropython.native
    def good(self, pcm, out):
        """Feed one decoded 20 ms frame; writes 20 ms of output into out (may be pcm itself)."""
        if not self.enabled:
            if out is not pcm:
                dsp.copy(out, 0, pcm, 0, FRAME)
            self.lost_run = 0
            return
        h = self._hist
        dsp.copy(h, 0, h, FRAME, HISTORY - FRAME)
        dsp.copy(h, HISTORY - FRAME, pcm, 0, FRAME)
        if self.lost_run:
            olen = 32 * self.lost_run  # 4 ms per 10 ms lost, at most 10 ms
            if olen > _SUBFRAME:
                olen = _SUBFRAME
            self._synthesise(self._tail, 0, olen)
            # fade the synthetic signal out and the real one in: crossfade fades dst out
            dsp.crossfade(self._tail, 0, h, HISTORY - FRAME, olen)
            dsp.copy(h, HISTORY - FRAME, self._tail, 0, olen)
            self.lost_run = 0
        dsp.copy(out, 0, h, HISTORY - FRAME - OVERLAP, FRAME)

    def lost(self, out, ahead=None):
        """Conceal one lost 20 ms frame; writes 20 ms of output into out.

        ahead: the decoded frame that follows the lost one, if it is already here; it must
        then be the next frame given to good()."""
        self.concealed += 1
        if not self.enabled:
            dsp.fill(out, 0, FRAME, 0)
            return
        h = self._hist
        if self.lost_run == 0:
            self._start_loss(ahead is not None)
        dsp.copy(h, 0, h, FRAME, HISTORY - FRAME)
        if ahead is None:
            self._synthesise(h, HISTORY - FRAME, FRAME)
        elif self.lost_run == 0:
            self._read_loop(h, HISTORY - FRAME, FRAME)  # one lost frame: the past at full level
            self._bridge(ahead)
        else:
            self._synthesise(h, HISTORY - FRAME, FRAME)  # the last frame of a longer loss
            self._bridge(ahead)
        dsp.copy(out, 0, h, HISTORY - FRAME - OVERLAP, FRAME)

    def _bridge(self, ahead):
        """Cross-fade the synthetic frame at the end of the history into ahead's first pitch
        period repeated back in time, which ends where ahead begins; the loss is over."""
        p = local_pitch(ahead, 0, 1) or self.pitch
        q = p >> 2
        back = self._next   # scratch: the forward state ends with this frame
        # ahead's first period as a loop at back[FRAME:], its start blended from the period after it
        dsp.copy(back, FRAME, ahead, p, q)
        dsp.crossfade(back, FRAME, ahead, 0, q)
        dsp.copy(back, FRAME + q, ahead, q, p - q)
        # back[0:FRAME] = the loop repeated backwards in time from ahead[0]
        k, j = 0, (p - FRAME % p) % p
        while k < FRAME:
            take = p - j
            if take > FRAME - k:
                take = FRAME - k
            dsp.copy(back, k, back, FRAME + j, take)
            k += take
            j = 0
        # the repeats end on ahead[p-1]: pull the end onto the sample that would precede ahead[0]
        want = 2 * _sample(ahead, 0) - _sample(ahead, 1)
        if want > 32767:
            want = 32767
        elif want < -32768:
            want = -32768
        dsp.add_ramp(back, FRAME - _RAMP, _RAMP, 0, want - _sample(back, FRAME - 1))
        dsp.crossfade(self._hist, HISTORY - FRAME, back, 0, FRAME)
        self.lost_run = 0
        self._subframe_pos = 0
        self.bridged += 1

    def _start_loss(self, bridged=False):
        h = self._hist
        # a bridged gap's start follows the most recent period, not the last 20 ms's: the search over
        # the whole window (three correlation searches) runs only when that one finds nothing
        self.pitch = (bridged and local_pitch(h, HISTORY - _PITCH_WINDOW, -1)) or find_pitch(h)
        dsp.copy(self._orig, 0, h, 0, HISTORY)
        self._periods = 1
        self._build_loop(self._loop, 1)
        # the not-yet-played tail of the history now leads seamlessly into the loop
        q = self.pitch >> 2
        dsp.copy(h, HISTORY - q, self._loop, self.pitch - q, q)
        self._pos = 0
        self._subframe_pos = 0

    def _build_loop(self, loop, periods):
        """loop = the last `periods` pitch periods of the real signal, its end blended into its start."""
        p = self.pitch
        q = p >> 2
        n = periods * p
        o = self._orig
        dsp.copy(loop, 0, o, HISTORY - n, n)
        dsp.crossfade(loop, n - q, o, HISTORY - n - q, q)

    def _synthesise(self, dst, off, n):
        """Next n synthetic samples into dst from off, in 10 ms steps of period count and gain."""
        while n > 0:
            sub = self.lost_run  # 10 ms step within the loss, 0-based
            inside = self._subframe_pos
            take = _SUBFRAME - inside
            if take > n:
                take = n
            if sub >= 6:
                dsp.fill(dst, off, take, 0)
            else:
                if inside == 0 and 1 <= sub <= 2:
                    self._add_period(dst, off, take)
                else:
                    self._read_loop(dst, off, take)
                if sub >= 1:
                    g0 = 32768 * (6 - sub) // 5 - 6553 * inside // _SUBFRAME
                    g1 = 32768 * (6 - sub) // 5 - 6553 * (inside + take) // _SUBFRAME
                    dsp.ramp(dst, off, take, g0, g1)
            off += take
            n -= take
            inside += take
            if inside == _SUBFRAME:
                inside = 0
                self.lost_run += 1
            self._subframe_pos = inside

    def _read_loop(self, dst, off, n):
        length = self._periods * self.pitch
        while n > 0:
            take = length - self._pos
            if take > n:
                take = n
            dsp.copy(dst, off, self._loop, self._pos, take)
            self._pos += take
            if self._pos == length:
                self._pos = 0
            off += take
            n -= take

    def _add_period(self, dst, off, n):
        """Switch to one more period, blending the old loop into the new over a quarter period."""
        q = self.pitch >> 2
        pos = self._pos
        self._read_loop(self._fade, 0, q)
        self._periods += 1
        self._build_loop(self._next, self._periods)
        self._loop, self._next = self._next, self._loop
        self._pos = pos  # same phase, one period further back in the signal
        self._read_loop(dst, off, n)
        # dst starts with the new loop; fade from the old continuation into it
        dsp.crossfade(self._fade, 0, dst, off, q)
        dsp.copy(dst, off, self._fade, 0, q)
