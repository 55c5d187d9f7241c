"""Call features with firmware phones and real daemons (`upbx demo features`' scenarios, docs/features.md):
what the phones show, the tones the caller's speaker played (Goertzel on its recording) and the
audio that arrived where a call was forwarded. tests/test_features.py covers the host logic
frame by frame on the virtual clock.
"""
import pytest

from upbx.tools.demo_features import FEATURES, ConsolePhone, _inner, run_features
from upbx.tools.lab import LoopbackExchange


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=20) as lab:
        lab.provision()
        lab.start()
        yield lab


def test_dnd_refuses_with_a_cause_and_busy_tone_and_off_restores_calls(lab):
    [dnd] = run_features(lab, 1.5, ["dnd"])
    assert dnd["dnd_set"] and dnd["dnd_cleared"], dnd
    assert dnd["refused"]["cause"] == "do not disturb" and dnd["refused"]["frames_sent"] == 0, dnd
    assert "busy" in dnd["caller_heard"] and not dnd["dnd_phone_rang"], dnd
    assert dnd["after_dnd_off"]["cause"] == "normal clearing" and dnd["after_dnd_off"]["audio_match"] is True, dnd
    assert dnd["ok"] is True


def test_forward_always_on_busy_and_on_no_answer_carry_the_callers_audio_to_the_forward_target(lab):
    always, busy, noanswer = run_features(lab, 1.5, ["forward_always", "forward_busy", "forward_no_answer"])
    for result in (always, busy, noanswer):
        call = result["call"]
        assert result["forward_set"] and result["forward_cleared"], result
        assert call["cause"] == "normal clearing" and call["audio_match"] is True, result
        assert call["frames_received"] >= 0.9 * call["frames_sent"] > 0, result
    assert busy["dialled_phone_busy"] is True
    assert noanswer["dialled_phone_rang"] is True and noanswer["dialled_phone_stopped"] is True
    assert always["ok"] is True and busy["ok"] is True and noanswer["ok"] is True


def test_the_held_party_hears_music_on_hold_and_resume_restores_both_directions(lab):
    [result] = run_features(lab, 2.0, ["hold"])
    for path in ("relay", "local"):      # through both hosts (101 -> 301), phone to phone (101 -> 102)
        hold = result[path]
        assert hold["held"] and hold["resumed"], hold
        # what each speaker played, 100 ms at a time (Goertzel): the music's notes, each phone's own tone
        assert [h for h in hold["held_party_heard"] if h != "quiet"] == ["holder", "music", "holder"], hold
        assert _inner(hold["holder_heard"]) == ["held party", "quiet", "held party"], hold
    assert result["ok"] is True


def test_star_codes_from_the_keypad_and_the_display(lab):
    phone = ConsolePhone(lab, "202", "keys-202")
    try:
        for key in ("A", "*", "78", "#"):          # off hook, star code, send
            phone.command(key)
        assert phone.wait_line("call ended: feature on")
        assert phone.wait_line("I display feature on *78")
        phone.command("A")
        phone.command("39")
        phone.command("*")                          # after digits, * still clears
        phone.command("*79#")
        assert phone.wait_line("I display feature off *79")
        phone.command("!forward sideways 3")        # a console command that makes no sense: said, not dialled
        assert phone.wait_line("bad feature command")
    finally:
        phone.quit()
    assert "dialing 39" not in phone.log()


def test_features_not_built_say_so():
    built = ("hold", "dnd", "forward_always", "forward_busy", "forward_no_answer")
    results = run_features(None, names=[n for n in FEATURES if n not in built])
    assert all(r == {"name": r["name"], "ok": False, "error": "not built yet"} for r in results)
    assert len(results) == len(FEATURES) - len(built)
