"""Spoken prompts of voicemail and the auto-attendant, made by espeak-ng (docs/features.md).

A prompt is text; the first time a host needs it, espeak-ng speaks it into a WAV (22,050 Hz),
which is resampled to 8 kHz and kept as mu-law 20 ms frames in the host's prompt folder (so
each text is spoken once per host and never again). A host never speaks in its event loop:
`Prompts.frames(text)` gives what the host has (memory, or the folder) at once, and otherwise
None while a worker thread has a child process (`python -m upbx.host.prompts`) speak it; the
caller hears silence until then and the prompt from its start (host/voicemail.py). A host with no
espeak-ng gets PromptError naming what is missing; an operator's WAV (`upbx admin voicemail
greeting`, `upbx admin attendant set --prompt`) needs none.
"""
import hashlib
import math
import operator
import os
import struct
import subprocess
import sys
import tempfile
import threading
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

SPEAK_TIMEOUT_S = 120             # one prompt's espeak-ng and resampling, on a very busy machine

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
            # espeak-ng links PulseAudio, which now and then makes its runtime folder although -w plays
            # nothing: $TMPDIR/pulse-<machine id> where neither of these is set, left behind for good
            # (test_features_handset found one in the demo's TMPDIR); here it goes with the prompt's folder
            env = dict(os.environ, PULSE_RUNTIME_PATH=os.path.join(tmp, "pulse"), XDG_RUNTIME_DIR=tmp)
            subprocess.run([ESPEAK, "-s", str(WORDS_PER_MINUTE), "-w", path, text], check=True, env=env,
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


def _path(folder, text):
    return os.path.join(folder, "prompt-%s.ulaw" % hashlib.sha256(text.encode()).hexdigest()[:16])


def _keep(folder, text, frames):
    """frames of text in folder, written whole (a reader never sees half of one)."""
    path = _path(folder, text)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(b"".join(frames))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _kept(folder, text):
    """The frames of text kept in folder, or None."""
    try:
        with open(_path(folder, text), "rb") as f:
            return frames_of_ulaw(f.read())
    except OSError:
        return None


def prompt(folder, text):
    """The frames of text, spoken once and kept in folder (a file named by the text's hash), here
    and now: for tools and tests. A host uses Prompts, which never speaks in its event loop."""
    frames = _memo.get(text)
    if frames is None:
        frames = _kept(folder, text) if folder is not None else None
        if frames is None:
            frames = speak(text)
            if folder is not None:
                _keep(folder, text, frames)
        _memo[text] = frames
    return frames


def speak_in_child(text):
    """mu-law frames of text, spoken by a child process (this module's main): the resampling is
    CPU work in Python, and in a thread of the host it would hold the GIL its event loop needs."""
    try:
        done = subprocess.run([sys.executable, "-m", "upbx.host.prompts", ESPEAK, text], capture_output=True,
                              timeout=SPEAK_TIMEOUT_S, cwd="/")
    except subprocess.TimeoutExpired:
        raise PromptError("speaking %r took longer than %d s" % (text, SPEAK_TIMEOUT_S)) from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise PromptError(why[-1] if why else "speaking %r failed (status %d)" % (text, done.returncode))
    return frames_of_ulaw(done.stdout)


class Prompts:
    """The prompts of one host, made away from its event loop (the module's docstring).

    folder: where spoken prompts are kept (None: memory only); speak(text) -> frames, run in a
    worker thread (default speak_in_child)."""

    def __init__(self, folder, speak=speak_in_child):
        self.folder = folder
        self.speak = speak
        self._speaking = {}        # text -> its worker thread
        self._failed = {}          # text -> the PromptError of its last attempt

    def frames(self, text):
        """The frames of text when the host has them, else None while they are being made (started
        here, once per text). PromptError when the last attempt failed (the next call tries again)."""
        error = self._failed.pop(text, None)
        if error is not None:
            raise error
        self.prepare(text)
        return _memo.get(text)

    def prepare(self, text):
        """Have text ready: read from the folder if kept there (a small file), else spoken in the
        background, unless the host has it or is at it already."""
        if text in _memo or text in self._speaking:
            return
        frames = _kept(self.folder, text) if self.folder is not None else None
        if frames is not None:
            _memo[text] = frames
            return
        worker = threading.Thread(target=self._make, args=(text,), name="prompt", daemon=True)
        self._speaking[text] = worker
        worker.start()

    def busy(self):
        """True while a prompt is being made."""
        return bool(self._speaking)

    def _make(self, text):
        try:
            frames = self.speak(text)
            if not frames:
                raise PromptError("speaking %r gave no audio" % text)
            if self.folder is not None:
                _keep(self.folder, text, frames)
            _memo[text] = frames
        except PromptError as exc:
            self._failed[text] = exc
        except Exception as exc:       # a full disk, say: the call hears why, the host goes on
            self._failed[text] = PromptError("speaking %r failed: %s" % (text, exc))
        finally:
            del self._speaking[text]


def main(argv):
    """`python -m upbx.host.prompts ESPEAK TEXT`: TEXT spoken by the program ESPEAK, as 8 kHz
    mu-law on stdout; status 1 and why on stderr when it cannot be."""
    global ESPEAK
    if len(argv) != 2:
        sys.stderr.write("usage: python -m upbx.host.prompts ESPEAK TEXT\n")
        return 2
    ESPEAK = argv[0]
    try:
        frames = speak(argv[1])
    except PromptError as exc:
        sys.stderr.write("%s\n" % exc)
        return 1
    sys.stdout.buffer.write(b"".join(frames))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
