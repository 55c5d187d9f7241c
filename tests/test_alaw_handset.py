"""A-law handsets (`upbx phone --codec alaw`, the firmware's A-law pipeline) with real daemons
(`upbx demo features`' alaw scenario, tools/demo_alaw.py): what each speaker played (Goertzel on
its recording). tests/test_alaw.py covers the host's conversion frame by frame.
"""
import json
import math
import struct
import wave

import pytest

from upbx.host.moh import NOTES_HZ
from upbx.tools import demo_alaw
from upbx.tools.demo_features import HOLD_LABELS, after_ringback
from upbx.tools.lab import LoopbackExchange, frequencies_heard


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=20) as lab:
        lab.provision()
        lab.start()
        yield lab


def test_an_alaw_handset_hears_clean_music_on_hold_and_a_conference_mix(lab):
    result = demo_alaw.alaw(lab, 2.0)
    assert result["ok"] is True, json.dumps(result)
    hold = result["hold"]
    assert hold["alaw_phone_heard"] == ["holder", "music", "holder"], hold
    assert hold["music_note_share"] > 0.97, hold         # the notes clean: converted, not garbled (0.89)
    conference = result["conference"]                   # 102 is the A-law party
    assert conference["mixed_by"] == "site-a" and min(conference["heard_both_others_ms"].values()) >= 2000, result
    assert max(conference["own_tone_peak_share"].values()) < 0.01, result


def _wav(path, parts):
    """A 8 kHz WAV of (seconds, (hz, ...)) parts, each frequency at -12 dBFS (no frequency: silence)."""
    samples = bytearray()
    for seconds, freqs in parts:
        for i in range(int(8000 * seconds)):
            samples += struct.pack("<h", int(sum(8191 * math.sin(2 * math.pi * hz * i / 8000) for hz in freqs)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(samples))
    return str(path)


def test_the_ringback_a_caller_hears_before_the_answer_is_not_read_as_music(tmp_path):
    """The clean-clone CI's failure: the callee answered late on a busy machine, the caller's 440+480 Hz
    ringback read as the music's 523 Hz note, and the hold check saw the holder hear music."""
    answered_late = _wav(tmp_path / "late.wav", [(0.5, ()), (1.2, (440, 480)), (0.4, ()), (1.0, (1400,))])
    heard = frequencies_heard(answered_late, HOLD_LABELS)
    assert heard == ["quiet", "ringback", "quiet", "held party"], heard
    assert after_ringback(heard) == ["held party"]
    music_first = _wav(tmp_path / "music.wav", [(1.0, (440, 480)), (1.0, (NOTES_HZ[0],)), (1.0, (1400,))])
    assert after_ringback(frequencies_heard(music_first, HOLD_LABELS)) == ["music", "held party"]
