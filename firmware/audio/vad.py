"""Silence suppression: voice activity detection and comfort noise (G.711 Appendix II style).

The sender runs a VoiceActivityDetector on each 20 ms microphone frame. While
someone talks it sends voice; in silence it sends nothing but a one-byte
comfort-noise (CN) frame, the background level in -dBov (0..127, RFC 3389's
coding), when silence starts, every CN_REFRESH_FRAMES frames and when the level
moves by CN_LEVEL_STEP dB. The receiver's ComfortNoise fills the speaker frame
with noise at the last level it was told, so the far end never hears dead air.

Energy is the mean of (sample >> 4)^2 over the frame (dsp.dot: a viper kernel
on MicroPython, small ints everywhere); the noise floor follows the quiet
frames; speech is energy 6 dB above the floor (and above -45 dBov), held for
HANGOVER_FRAMES after the last loud frame so word endings are not clipped.
Nothing is allocated per frame.
"""
from array import array

from common.compat import const, micropython
from firmware.audio import dsp

FRAME_SAMPLES = const(160)
HANGOVER_FRAMES = const(10)      # 200 ms of tail after the last loud frame
CN_REFRESH_FRAMES = const(10)    # a comfort-noise frame every 200 ms of silence
CN_LEVEL_STEP = const(3)         # ... and at once when the level moves by 3 dB
SILENT_LEVEL = const(127)        # -127 dBov: digital silence
_ENERGY_SHIFT = const(4)         # samples >> 4: 160 squares stay below 2**30
_MIN_SPEECH_DB = const(45)       # quieter than -45 dBov is never speech
_NOISE_TABLE = const(1024)       # samples of unit noise the generator plays from


def _energy_at(db):
    """Frame energy (mean of (x >> 4)^2) of a signal at -db dBov."""
    return max(1, int(((32768.0 * 10 ** (-db / 20.0)) ** 2) / (1 << (2 * _ENERGY_SHIFT))))


# energy thresholds, falling with the level byte: level = first d with energy >= _ENERGY_AT_DB[d]
_ENERGY_AT_DB = array("i", (_energy_at(d) for d in range(SILENT_LEVEL + 1)))
_MIN_SPEECH_ENERGY = _ENERGY_AT_DB[_MIN_SPEECH_DB]


@micropython.native
def frame_energy(pcm):
    """Mean of (sample >> 4)^2 over one 160-sample frame (16-bit PCM bytes)."""
    return dsp.dot(pcm, 0, 0, FRAME_SAMPLES, 1, _ENERGY_SHIFT) // FRAME_SAMPLES


@micropython.native
def level_of(energy):
    """The comfort-noise level byte (-dBov, 0..127) of a frame energy."""
    lo, hi = 0, SILENT_LEVEL
    while lo < hi:  # first d whose threshold the energy reaches
        mid = (lo + hi) >> 1
        if energy >= _ENERGY_AT_DB[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


class VoiceActivityDetector:
    """update(pcm) -> True for a frame to send as voice; cn_due() -> whether to send a CN frame now."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.floor = 0            # background energy, followed in quiet frames
        self.noise = -1           # smoothed energy of silent frames (the CN level); -1: none yet
        self.hang = 0
        self.active = False
        self.level = SILENT_LEVEL
        self._sent_level = -100
        self._since_cn = 0
        self.voice_frames = 0
        self.silent_frames = 0
        self.cn_frames = 0

    @micropython.native
    def update(self, pcm):
        e = frame_energy(pcm)
        threshold = self.floor << 2    # +6 dB
        if threshold < _MIN_SPEECH_ENERGY:
            threshold = _MIN_SPEECH_ENERGY
        was = self.active
        if e > threshold:
            self.hang = HANGOVER_FRAMES           # this many quiet frames after it still count
            self.floor += (e - self.floor) >> 9   # a louder room still becomes the floor, slowly
            self.active = True
        else:
            if e < self.floor:
                self.floor = (self.floor + e) >> 1    # quieter: follow fast
            else:
                self.floor += (e - self.floor) >> 4
            self.active = self.hang > 0
            if self.hang > 0:
                self.hang -= 1
        if self.active:
            self.voice_frames += 1
            return True
        self.silent_frames += 1
        if was or self.noise < 0:  # silence starts: the level of this frame, at once
            self.noise = e
            self._since_cn = CN_REFRESH_FRAMES
        else:
            self.noise += (e - self.noise) >> 2
        self.level = level_of(self.noise)
        return False

    @micropython.native
    def cn_due(self):
        """After a silent update(): True when a comfort-noise frame (self.level) should go out now."""
        self._since_cn += 1
        d = self.level - self._sent_level
        if self._since_cn >= CN_REFRESH_FRAMES or d >= CN_LEVEL_STEP or d <= -CN_LEVEL_STEP:
            self._since_cn = 0
            self._sent_level = self.level
            self.cn_frames += 1
            return True
        return False


class ComfortNoise:
    """Noise at a level byte into a speaker frame: a random slice of a unit-noise table, scaled.

    The table and the gains (2.5 KB) are made on the first fill(): a handset whose far end
    never sends comfort noise never holds them.
    """

    def __init__(self, seed=0x2F6B):
        self._x = seed & 0xFFFF or 1
        self._table = None
        self._gain = None
        self.level = None         # None: no comfort noise to play

    def _make_tables(self):
        table = bytearray(2 * _NOISE_TABLE)
        # uniform noise of rms 8192 (amplitude 14189), made once
        for i in range(_NOISE_TABLE):
            v = ((self._next() & 0x7FFF) - 16384) * 14189 >> 14
            table[2 * i] = v & 0xFF
            table[2 * i + 1] = (v >> 8) & 0xFF
        self._table = table
        # Q15 gain giving rms 32768 * 10^(-d/20) from rms 8192, capped at 1.0 (-12 dBov)
        self._gain = array("i", (min(32768, int(4 * 32768 * 10 ** (-d / 20.0))) for d in range(SILENT_LEVEL + 1)))

    def _next(self):
        x = self._x  # xorshift16: small ints only
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        self._x = x
        return x

    def fill(self, pcm, level):
        """Write one frame of noise at level (-dBov) into pcm (320 bytes)."""
        if self._table is None:
            self._make_tables()
        off = self._next() % (_NOISE_TABLE - FRAME_SAMPLES)
        dsp.copy(pcm, 0, self._table, off, FRAME_SAMPLES)
        g = self._gain[level if level <= SILENT_LEVEL else SILENT_LEVEL]
        dsp.ramp(pcm, 0, FRAME_SAMPLES, g, g)
