"""Call features with firmware phones and real daemons (`upbx demo features`' scenarios, docs/features.md):
what the phones show, the tones the caller's speaker played (Goertzel on its recording) and the
audio that arrived where a call was forwarded. tests/test_features.py covers the host logic
frame by frame on the virtual clock.
"""
import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT
from upbx.tools.demo_features import EXTRA, FEATURES, ConsolePhone, _inner, run_features
from upbx.tools.lab import LoopbackExchange, place_call


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=20) as lab:
        lab.provision()
        lab.start()
        yield lab


DEMO_BOUND_S = 2700   # the scenarios wait for states, so a loaded machine only slows them (about 6 min
                      # at load average 24 on 2 cores, 13 min at 40): a bound no machine that works reaches


@pytest.mark.timeout(DEMO_BOUND_S + 60)   # every scenario of the demo, issue 12's and those built after it
def test_demo_features_json_shows_each_built_feature_working_with_its_evidence(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # every file and process of the demo lives under here
    proc = subprocess.Popen([sys.executable, "-m", "upbx.tools.cli", "demo", "features", "--json"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=DEMO_BOUND_S)
    except subprocess.TimeoutExpired:
        proc.terminate()         # SIGTERM: the demo closes its lab (SIGKILL would leave its daemons running)
        stdout, stderr = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if result.returncode != 0:   # say which scenarios failed, with their evidence
        try:
            failed = json.dumps([f for f in json.loads(result.stdout)["features"] if not f["ok"]])
        except (ValueError, KeyError):
            failed = result.stdout[-3000:]
        pytest.fail("upbx demo features failed: %s\n%s" % (failed[:6000], result.stderr[-1000:]))
    features = json.loads(result.stdout)["features"]
    assert [f["name"] for f in features] == list(FEATURES + EXTRA)
    by_name = {f["name"]: f for f in features}
    built = ("hold", "dnd", "forward_always", "forward_busy", "forward_no_answer", "call_waiting", "blind_transfer",
             "attended_transfer", "ring_group", "hunt_group", "pickup", "paging",
             "conference", "voicemail", "message_waiting", "auto_attendant")
    for name in FEATURES:
        if name not in built:
            assert by_name[name] == {"name": name, "ok": False, "error": "not built yet"}
        else:
            assert by_name[name]["ok"] is True, by_name[name]

    dnd = by_name["dnd"]
    assert dnd["dnd_set"] and dnd["dnd_cleared"], dnd
    assert dnd["refused"]["cause"] == "do not disturb" and dnd["refused"]["frames_sent"] == 0, dnd
    assert "busy" in dnd["caller_heard"] and not dnd["dnd_phone_rang"], dnd      # the caller's speaker: busy tone
    assert dnd["caller_display"] == ["ended: do not disturb"], dnd
    assert dnd["after_dnd_off"]["cause"] == "normal clearing" and dnd["after_dnd_off"]["audio_match"] is True

    for name in ("forward_always", "forward_busy", "forward_no_answer"):
        forward = by_name[name]
        call = forward["call"]
        assert forward["forward_set"] and forward["forward_cleared"], forward
        # what the caller sent (noise) arrived where the call was forwarded, frame by frame
        assert call["cause"] == "normal clearing" and call["audio_match"] is True, forward
        assert call["frames_received"] >= 0.9 * call["frames_sent"] > 0, forward
    assert by_name["forward_busy"]["dialled_phone_busy"] is True
    assert by_name["forward_no_answer"]["dialled_phone_rang"] and by_name["forward_no_answer"]["dialled_phone_stopped"]

    for path in ("relay", "direct", "local"):   # B1 101 -> 301, B2 101 -> 201, B3 101 -> 102
        hold = by_name["hold"][path]
        assert hold["held"] and hold["resumed"] and hold["path"] == path, hold
        # what each speaker played, 100 ms at a time (Goertzel): the music's notes, each phone's own tone
        assert [h for h in hold["held_party_heard"] if h != "quiet"] == ["holder", "music", "holder"], hold
        assert _inner(hold["holder_heard"]) == ["held party", "quiet", "held party"], hold
    conference = by_name["conference"]                 # each speaker: the other two tones, never its own
    assert conference["mixed_by"] == "site-a" and conference["heard_both_others_ms"]["102"] >= 2000, conference
    assert max(conference["own_tone_peak_share"].values()) < 0.01, conference
    vm = by_name["voicemail"]    # tools/demo_voicemail.py: the greeting's frames in the caller's speaker
    assert vm["greeting_frames_heard"] >= 0.5 * vm["greeting_frames"] and vm["message"]["caller"] == "101", vm
    assert "message" in vm["retrieval_heard"] and vm["after_delete"] == [], vm
    mwi = by_name["message_waiting"]  # the stutter dial tone's cadence, measured on the recording
    assert mwi["display"] == "idle 1 new messages" and mwi["cleared_after_listening"], mwi
    assert len(mwi["stutter_on_ms"]) >= 8 and all(80 <= ms <= 120 for ms in mwi["stutter_on_ms"] + mwi["stutter_off_ms"])
    aa = by_name["auto_attendant"]
    assert aa["prompt_frames_heard"] >= 0.5 * aa["prompt_frames"] and aa["routed_to_301_rang"], aa
    assert "callee" in aa["caller_heard"] and "caller" in aa["callee_heard"], aa
    recall = by_name["transfer_recall"]   # 301 heard music until 101, rung back, answered
    assert recall["ok"] is True and recall["heard"]["301"] == ["101", "music", "101"], recall
    assert recall["recall_display"] == "incoming call from 301 recall: 201 no answer", recall
    assert by_name["directed_pickup"]["ok"] is True, by_name["directed_pickup"]
    assert by_name["transfer_via_main"]["ok"] is True and by_name["transfer_via_main"]["joined_by"] == "main"
    assert by_name["conference_via_main"]["ok"] is True and by_name["conference_via_main"]["mixed_by"] == "main"
    alaw = by_name["alaw"]
    assert alaw["ok"] is True and alaw["hold"]["music_note_share"] > 0.97, alaw
    vm = by_name["voicemail_b4"]
    assert vm["ok"] is True and vm["b4_retrieval_heard"] == ["main's message", "b4 message"], vm
    assert os.listdir(tmp_path) == []    # no lab directory, no handset flash left behind


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


def test_without_the_main_host_a_sites_phones_keep_dnd_and_forwarding_and_the_main_host_learns_them_after():
    with LoopbackExchange(ring_timeout_s=20, remote_settings={"login_backoff_max_s": 1, "keepalive_s": 2}) as lab:
        lab.provision(phones={"a": ["101", "102", "103"], "c": ["301"]})
        lab.start()
        lab.kill("main")                                            # B4: site a's remote host is on its own
        lab.wait_for(lambda: lab.status("site-a")["main"]["state"] != "up", "site a noticed", timeout=15)
        phone = ConsolePhone(lab, "102", "b4-102")
        try:
            phone.command("!dnd on")
            assert phone.wait_line("call ended: feature on")
            refused = place_call(lab, "101", "102", "b4-dnd", 1.0, callee_phone=False)
            assert refused["cause"] == "do not disturb" and "incoming call" not in phone.log()
            phone.command("!dnd off")
            assert phone.wait_line("call ended: feature off")
            phone.command("!forward always 103")
            assert phone.wait_line("I display feature on *72103")
        finally:
            phone.quit()
        row = place_call(lab, "101", "102", "b4-fwd", 1.5, rings="103")
        assert row["cause"] == "normal clearing" and row["audio_match"] is True and row["path"] == "local", row
        lab.restart("main", wait=False)                             # back: the settings reach its directory
        lab.wait_for(lambda: json.loads(lab.admin("ext", "features", "102", "--json"))["always"] == "103",
                     "the main host has 102's forward", timeout=30)
        assert json.loads(lab.admin("ext", "features", "102", "--json"))["dnd"] is False


def test_firmware_phones_hear_each_other_after_a_hold_longer_than_a_timestamps_reach(lab):
    """docs/protocol.md section 5: a frame carries 16 bits of its timestamp, so a leg silent for more than 32.8 s
    cannot be followed. Until session 23 a hold that long (once the call was past its first 32.8 s) left the call
    silent both ways after the resume. 101 (site a, 1000 Hz) calls 301 (main host, 1400 Hz); at 34 s of the call
    101 holds for 34 s (its speaker's clock), sending a comfort-noise frame each second (firmware/app.py capture),
    while the hosts send one towards it each second; after the resume each hears the other again."""
    from upbx.tools.demo_features import HOLD_LABELS as labels
    held = ConsolePhone(lab, "301", "longhold-301", "--send", "tone:1400")
    holder = ConsolePhone(lab, "101", "longhold-101", "--send", "tone:1000")
    try:
        holder.command("!call 301")
        assert held.wait_line("incoming call")
        held.command("!answer")
        assert holder.wait_line("connected")
        assert held.wait_heard(labels, "holder", 1000) is not None and holder.wait_heard(labels, "held party", 1000)
        start = holder.played_ms()
        assert holder.wait_played(34000, start, timeout=240)
        marks = held.mark(), holder.mark()
        holder.command("!hold")
        assert holder.wait_line("call held") and held.wait_heard(labels, "music", 1500, marks[0]) is not None
        assert holder.wait_played(34000, timeout=240)
        marks = held.mark(), holder.mark()
        holder.command("!resume")
        assert holder.wait_line("call resumed")
        assert held.wait_heard(labels, "holder", 1000, marks[0]) is not None
        assert holder.wait_heard(labels, "held party", 1000, marks[1]) is not None
        holder.command("!hangup")
        assert held.wait_line("call ended: normal clearing")
    finally:
        holder.quit()
        held.quit()
    assert lab.status("main")["stats"]["counters"].get("hold keepalives", 0) >= 30
