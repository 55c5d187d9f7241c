"""A-law handsets (`upbx phone --codec alaw`, the firmware's A-law pipeline) with real daemons
(`upbx demo features`' alaw scenario, tools/demo_alaw.py): what each speaker played (Goertzel on
its recording). tests/test_alaw.py covers the host's conversion frame by frame.
"""
import json

import pytest

from upbx.tools import demo_alaw
from upbx.tools.lab import LoopbackExchange


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
