"""Spoken prompts of voicemail and the auto-attendant, made by espeak-ng (docs/features.md).

A prompt is text; the first time a host needs it, espeak-ng speaks it into a WAV (22,050 Hz),
which is resampled to 8 kHz and kept as mu-law 20 ms frames in the host's prompt folder (so
each text is spoken once per host, at its set-up, and never again). A host with no espeak-ng
gets PromptError naming what is missing; an operator's WAV (`upbx admin voicemail greeting`,
`upbx admin attendant set --prompt`) needs none.
"""
import hashlib
import math
import operator
import os
import struct
import subprocess
import tempfile
import wave

from upbx.common import wire
from upbx.common.g711 import ulaw_encode

RATE = 8000
FRAME = wire.VOICE_BYTES           # samples (and mu-law bytes) in 20 ms
SILENCE = b"\xff" * FRAME          # mu-law silence
ESPEAK = "espeak-ng"
WORDS_PER_MINUTE = 150

GREETING = "The person you called cannot take your call. Please leave a message after the tone."
BEEP_HZ = 1400                     # the tone after the greeting: recording starts when it ends
BEEP_MS = 400

_memo = {}                         # text -> frames: one host process speaks a text once


class PromptError(RuntimeError):
    """A prompt that cannot be made (espeak-ng missing or failing); str() says what to install."""


def frames_of_ulaw(ulaw):
    """mu-law bytes as 20 ms frames (a short last frame padded with silence)."""
    if len(ulaw) % FRAME:
        ulaw += SILENCE[:FRAME - len(ulaw) % FRAME]
    return [bytes(ulaw[i:i + FRAME]) for i in range(0, len(ulaw), FRAME)]


def tone(hz, ms, level=8000):
    """mu-law frames of a sine of hz for ms (whole frames), 10 ms fades."""
    n = RATE * ms // 1000
    fade = RATE // 100
    pcm = b"".join(struct.pack("<h", int(level * min(1.0, i / fade, (n - 1 - i) / fade)
                                         * math.sin(2 * math.pi * hz * i / RATE))) for i in range(n))
    return frames_of_ulaw(ulaw_encode(pcm))


def resample(pcm, rate):
    """16-bit little-endian mono PCM at rate, as 8 kHz: a 4 kHz low-pass (windowed sinc, 31 taps)
    then linear interpolation. Good enough for speech, and no numeric library on a host: each output
    sample is one sum(map(mul, ...)) over the taps, the multiply-adds in C (a Python loop over the
    taps took seconds for a sentence on a busy machine, inside the host's event loop)."""
    x = struct.unpack("<%dh" % (len(pcm) // 2), pcm)
    if rate == RATE:
        return pcm
    taps = 31
    half = taps // 2
    cut = 3600.0 / rate
    h = [2 * cut * (1.0 if k == 0 else math.sin(2 * math.pi * cut * k) / (2 * math.pi * cut * k))
         * (0.54 + 0.46 * math.cos(math.pi * k / half)) for k in range(-half, half + 1)]
    padded = (0,) * half + x + (0,) * half      # what lies beyond either end counts as silence
    step = rate / RATE
    out = []
    n = len(x)
    t = 0.0
    mul = operator.mul
    while t < n - 1:
        i = int(t)
        acc = sum(map(mul, h, padded[i:i + taps]))
        out.append(max(-32768, min(32767, int(acc))))
        t += step
    return struct.pack("<%dh" % len(out), *out)


def speak(text):
    """mu-law frames of text spoken by espeak-ng (8 kHz); PromptError when it cannot be run."""
    with tempfile.TemporaryDirectory(prefix="upbx-prompt-") as tmp:
        path = os.path.join(tmp, "prompt.wav")
        try:
            subprocess.run([ESPEAK, "-s", str(WORDS_PER_MINUTE), "-w", path, text], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        except FileNotFoundError:
            raise PromptError("%s is not installed (apt-get install espeak-ng): it speaks the default "
                              "voicemail and attendant prompts" % ESPEAK) from None
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise PromptError("%s failed on %r: %s" % (ESPEAK, text, exc)) from None
        with wave.open(path) as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise PromptError("%s made a WAV that is not mono 16-bit" % ESPEAK)
            pcm = resample(w.readframes(w.getnframes()), w.getframerate())
    return frames_of_ulaw(ulaw_encode(pcm))


def prompt(folder, text):
    """The frames of text, spoken once and kept in folder (a file named by the text's hash)."""
    frames = _memo.get(text)
    if frames is None and folder is None:
        frames = speak(text)
    elif frames is None:
        path = os.path.join(folder, "prompt-%s.ulaw" % hashlib.sha256(text.encode()).hexdigest()[:16])
        try:
            with open(path, "rb") as f:
                frames = frames_of_ulaw(f.read())
        except OSError:
            frames = speak(text)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            tmp = "%s.%d.tmp" % (path, os.getpid())
            with open(tmp, "wb") as f:
                f.write(b"".join(frames))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        _memo[text] = frames
    return frames
