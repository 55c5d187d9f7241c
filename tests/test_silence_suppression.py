"""Silence suppression with comfort noise on conversational speech (espeak-ng talk with pauses).

Counts the frames a handset sends with and without VAD (the figures in
docs/bandwidth.md), then runs a B1 call with `upbx phone --vad`: comfort-noise
frames cross the remote host (mini in, trunk entry out) and the main host
(trunk in, mini out), and the far phone plays noise at the level it was told
in the pauses instead of dead air.
"""
import array
import math
import random
import subprocess
import wave

from firmware.audio import vad
from tests.support import require_tool
from upbx.tools.lab import LoopbackExchange

PHRASES = ["Hello, this is the front desk.", "Can you hear me?", "The delivery came in this morning.",
           "I will call you back after lunch.", "Thanks, bye for now."]
PAUSES_S = [1.2, 0.8, 1.6, 1.0, 0.6]   # the other side talks (this one listens) between phrases
BACKGROUND_RMS = 20                    # about -64 dBov of room noise under everything
MINI_WIRE = 4 + 160 + 4 + 28           # bytes on the wire of a voice mini frame
CN_WIRE = 4 + 1 + 4 + 28               # ... and of a comfort-noise one


def speech_wav(path, seed=1):
    """8 kHz 16-bit mono conversation side: espeak-ng phrases separated by pauses, over low room noise."""
    require_tool("espeak-ng", "apt-get install espeak-ng; make test does it as root")
    samples = array.array("h")
    for phrase, pause in zip(PHRASES, PAUSES_S):
        raw = str(path) + ".22k.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", raw, phrase], check=True)
        with wave.open(raw) as w:
            rate = w.getframerate()
            src = array.array("h", w.readframes(w.getnframes()))
        n = int(len(src) * 8000 / rate)
        for i in range(n):  # linear interpolation to 8 kHz (espeak's output has little above 4 kHz)
            x = i * rate / 8000
            j = int(x)
            f = x - j
            b = src[j + 1] if j + 1 < len(src) else src[j]
            samples.append(int(src[j] * (1 - f) + b * f))
        samples.extend([0] * int(pause * 8000))
    rng = random.Random(seed)
    amp = BACKGROUND_RMS * 1.732
    for i in range(len(samples)):
        samples[i] = max(-32768, min(32767, samples[i] + int(rng.uniform(-amp, amp))))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    return len(samples) // 160


def frames_of(path):
    with wave.open(str(path)) as w:
        data = w.readframes(w.getnframes())
    return [bytearray(data[i:i + 320]) for i in range(0, len(data) - 319, 320)]


def rms_db(frame):
    samples = array.array("h", bytes(frame))
    rms = math.sqrt(sum(s * s for s in samples) / len(samples))
    return -20 * math.log10(max(rms, 0.5) / 32768)


def test_vad_on_conversational_speech_sends_far_fewer_frames_and_clips_no_word(tmp_path):
    total = speech_wav(tmp_path / "talk.wav")
    detector = vad.VoiceActivityDetector()
    voice = cn = 0
    clipped = 0
    for frame in frames_of(tmp_path / "talk.wav"):
        if detector.update(frame):
            voice += 1
        else:
            if rms_db(frame) < 35:  # a loud frame was called silence
                clipped += 1
            cn += detector.cn_due()
    without = total * MINI_WIRE
    with_vad = voice * MINI_WIRE + cn * CN_WIRE
    saved = 1 - with_vad / without
    print("frames: %d without VAD; %d voice + %d comfort noise with VAD; wire bytes saved %.0f%%"
          % (total, voice, cn, 100 * saved))
    assert clipped == 0
    assert voice + cn < 0.7 * total and saved > 0.3
    assert cn >= len(PAUSES_S)  # every pause announced its level


def test_comfort_noise_crosses_both_hosts_and_the_far_end_plays_it(tmp_path):
    with LoopbackExchange() as lab:
        lab.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301"]})
        lab.start()
        wav = lab.path("talk.wav")
        total = speech_wav(wav)
        seconds = total * 0.02
        heard = lab.path("heard.wav")
        callee = lab.phone("301", "--answer", "--record", heard, "--exit-after-call", "--exit-after",
                           str(seconds + 15), tag="vad-callee")
        lab.wait_registered("301")
        caller = lab.phone("101", "--vad", "--send", wav, "--call", "301", "--duration", str(seconds + 0.5),
                           "--exit-after-call", "--exit-after", str(seconds + 12), tag="vad-caller")
        caller.wait(seconds + 20)
        callee.wait(seconds + 20)
        sent, got = lab.summary("vad-caller"), lab.summary("vad-callee")
        assert sent["calls"][0]["cause"] == "normal clearing"
        assert sent["frames_suppressed"] > 0.3 * total and sent["cn_sent"] >= len(PAUSES_S)
        assert got["cn_received"] == sent["cn_sent"]           # every CN frame through mini + trunk + mini
        assert got["frames_received"] >= sent["frames_sent"] - 2
        # in the far phone's speaker: the pauses are low-level noise, not digital silence
        levels = [rms_db(f) for f in frames_of(heard)]
        pauses = [d for d in levels if d > 55]     # quieter than -55 dBov: no talk in it
        assert len(pauses) > 0.8 * sum(PAUSES_S) / 0.02
        noise = sorted(d for d in pauses if d < 90)  # digital silence reads as about 96 dB down
        assert len(noise) > 0.9 * len(pauses)
        median = noise[len(noise) // 2]
        assert abs(median - 64) <= 6, median        # the room's level (BACKGROUND_RMS), as sent
