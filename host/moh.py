"""Music on hold: the G.711 frames a host plays to a held party (docs/features.md).

The default is generated, so every host has it with no file to install: a C major arpeggio
(C5 523 Hz, E5 659 Hz, G5 784 Hz, E5 again), 400 ms a note with 20 ms fades, at -12 dBFS,
looping every 1.6 s. A host may play a WAV (8 kHz, mono, 16-bit) instead: `upbx admin moh set FILE.wav` stores it in the main host's directory,
which sends it to the remote hosts (MUSIC messages, docs/features.md). Frames are mu-law, the
handsets' codec.
"""
import math
import wave

from upbx.common import wire
from upbx.common.g711 import ulaw_encode

RATE = 8000
NOTES_HZ = (523.25, 659.25, 783.99, 659.25)
NOTE_MS = 400
FADE_MS = 20
LEVEL = 8000          # peak, of 32767: about -12 dBFS
SAMPLES = wire.VOICE_BYTES   # 20 ms
MAX_SECONDS = 30             # a WAV longer than this is refused (it goes to every remote host)


class MusicOnHoldError(ValueError):
    """A music-on-hold WAV that cannot be played; str() names the file and what is wrong."""


def _frames(pcm):
    """mu-law 20 ms frames of 16-bit little-endian PCM (a short last frame padded with silence)."""
    step = 2 * SAMPLES
    if len(pcm) % step:
        pcm += bytes(step - len(pcm) % step)
    return [ulaw_encode(pcm[i:i + step]) for i in range(0, len(pcm), step)]


def default_pcm():
    """The default tune as 16-bit little-endian PCM at 8 kHz."""
    out = bytearray()
    note = RATE * NOTE_MS // 1000
    fade = RATE * FADE_MS // 1000
    for hz in NOTES_HZ:
        for i in range(note):
            gain = min(1.0, i / fade, (note - 1 - i) / fade)
            v = int(LEVEL * gain * math.sin(2 * math.pi * hz * i / RATE))
            out += (v & 0xFFFF).to_bytes(2, "little")
    return bytes(out)


def load_wav(path):
    """PCM of an 8 kHz mono 16-bit WAV; MusicOnHoldError naming the file otherwise."""
    try:
        with wave.open(path) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
                raise MusicOnHoldError("%s: music on hold must be 8000 Hz, mono, 16-bit (this is %d Hz, %d "
                                       "channel(s), %d-bit)" % (path, w.getframerate(), w.getnchannels(),
                                                                8 * w.getsampwidth()))
            pcm = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise MusicOnHoldError("%s: cannot read music on hold: %s" % (path, exc)) from None
    if len(pcm) < 2 * SAMPLES:
        raise MusicOnHoldError("%s: music on hold shorter than one 20 ms frame" % path)
    if len(pcm) > 2 * RATE * MAX_SECONDS:
        raise MusicOnHoldError("%s: music on hold longer than %d s (%.1f s)" % (path, MAX_SECONDS, len(pcm) / 2 / RATE))
    return pcm


def wav_ulaw(path):
    """A WAV's music as mu-law bytes, whole 20 ms frames (what the directory stores)."""
    return b"".join(_frames(load_wav(path)))


class MusicOnHold:
    """The frames a host loops to every held party; frame(n) is the n-th of the loop. ulaw: the
    operator's music (mu-law bytes, whole frames), None or empty: the default."""

    def __init__(self, ulaw=None, name="default"):
        if ulaw:
            self.name = name
            self.frames = [bytes(ulaw[i:i + SAMPLES]) for i in range(0, len(ulaw) - SAMPLES + 1, SAMPLES)]
        else:
            self.name = "default"
            self.frames = _frames(default_pcm())

    def frame(self, n):
        return self.frames[n % len(self.frames)]
