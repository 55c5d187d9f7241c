"""Voicemail on the real host cores in one process (tests/inprocess.py): a call nobody answers
reaches the mailbox, the caller hears the greeting (the very frames of it), a message recorded
from a phone sending a tone is kept (WAV + SQLite) and plays that tone back on *97, the DTMF
menu, the message-waiting count on the phone, and B4: a remote host records while the main host
is away and uploads each message exactly once (docs/features.md, Voicemail)."""
import json
import os
import sqlite3
import threading
import time
import wave

from upbx.common import wire
from upbx.common.call import RINGING
from upbx.common.g711 import ulaw_decode, ulaw_encode
from upbx.common.login import UP
from upbx.host import prompts, voicemail
from upbx.host.directory import Directory
from upbx.tools.lab import goertzel_power
from tests.inprocess import MAIN, TICK_MS, PhoneEnd, attach_host
from tests.test_hold import _tone_wav
from tests.test_routing import _refused, _world

TONES = {"101": 620.0, "102": 740.0, "301": 880.0, "302": 980.0}


class TonePhone(PhoneEnd):
    """A phone whose microphone hears its own tone (TONES), so a recording says who spoke."""

    def voice(self):
        frames = _TONE_FRAMES[TONES[self.number]]
        return frames[self.ts // TICK_MS % len(frames)]


_TONE_FRAMES = {hz: prompts.tone(hz, 1000) for hz in TONES.values()}
for _hz, _frames in _TONE_FRAMES.items():   # a steady tone: no fades at the frame joins
    _TONE_FRAMES[_hz] = _frames[2:-2]


def _dominant(payload):
    """The phone tone (or the beep) that dominates a mu-law frame, else None."""
    pcm = ulaw_decode(payload)
    powers = {hz: goertzel_power(pcm, wire.VOICE_BYTES, hz) for hz in tuple(TONES.values()) + (prompts.BEEP_HZ,)}
    best = max(powers, key=powers.get)
    if powers[best] > 1e9 and powers[best] > 20 * sum(p for hz, p in powers.items() if hz != best):
        return best
    return None


def _world_with(tmp_path, phones, voicemail_on=(), noanswer_s=5, **kwargs):
    world = _world(tmp_path, (), **kwargs)
    world.run(1200)    # the main host has read its directory's version: the change below is announced
    for i, number in enumerate(phones):
        end = TonePhone(world.net, number, world.secrets[number], ("198.18.2.%d" % (i + 1), 40000),
                        ("198.18.1.1", 4570) if number.startswith("1") else MAIN)
        world.phones[number] = end
        end.phone.start(world.net.now)
        end.flush()
    with Directory(tmp_path / "main.sqlite") as d:
        for number in voicemail_on:
            settings = d.features(number)
            settings.update(voicemail=True, noanswer_s=noanswer_s)
            d.set_features(number, settings, announce=True)
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
    world.run(1500)    # the main host sends the site's directory with the settings
    return world


def _wait_for_prompts(world, bound_s=120):
    """Wait (wall clock) until no host is making a prompt: a prompt is spoken in a worker thread
    while the in-process world's clock runs as fast as it can (bound_s only bounds a fault)."""
    deadline = time.monotonic() + bound_s
    while any(host.voicemail.prompts.busy() for host in world.hosts):
        assert time.monotonic() < deadline, "a prompt took longer than %d s to make" % bound_s
        time.sleep(0.01)


def _reach_voicemail(world, caller, callee, limit_ms=10000):
    end = world.phones[caller]
    end.received, end.sent = [], []
    assert end.phone.dial(callee, world.net.now)
    end.flush()
    world.run_until(lambda: end.connected, limit_ms, "%s reached %s's voicemail" % (caller, callee))


def _leave_message(world, caller, callee, speak_ms=2000, limit_ms=10000):
    """caller calls callee, hears the greeting and the beep, speaks (its tone), hangs up; returns
    the frames it heard."""
    end = world.phones[caller]
    greeting = len(prompts.prompt(None, prompts.GREETING)) + prompts.BEEP_MS // 20   # the host has it: played at once
    _reach_voicemail(world, caller, callee, limit_ms)
    world.run(greeting * TICK_MS + 200)
    end.sent = []
    world.run(speak_ms)
    world.hangup(caller)
    world.run(100)
    return end.received


def _store(world):
    return world.main.voicemail.store


def test_the_caller_hears_the_greeting_and_the_message_is_kept_as_wav_and_sqlite(tmp_path):
    world = _world_with(tmp_path, ("302",), voicemail_on=("301",))      # 301 is not registered
    try:
        heard = _leave_message(world, "302", "301")
        greeting = prompts.prompt(None, prompts.GREETING)
        assert heard[:len(greeting)] == greeting                        # the greeting, frame for frame
        beep = heard[len(greeting):len(greeting) + prompts.BEEP_MS // 20]
        assert sum(1 for f in beep if _dominant(f) == prompts.BEEP_HZ) >= len(beep) - 2
        db = sqlite3.connect(str(tmp_path / "main.sqlite.voicemail" / "voicemail.sqlite"))
        rows = db.execute("SELECT mailbox, caller, state, origin, duration_ms, file FROM messages").fetchall()
        assert len(rows) == 1 and rows[0][:4] == ("301", "302", "new", "main"), rows
        assert 1800 <= rows[0][4] <= 2300, rows                         # about the 2 s spoken
        with wave.open(str(tmp_path / "main.sqlite.voicemail" / rows[0][5])) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            ulaw = ulaw_encode(w.readframes(w.getnframes()))
        frames = [ulaw[i:i + 160] for i in range(0, len(ulaw), 160)]
        assert sum(1 for f in frames if _dominant(f) == TONES["302"]) >= len(frames) - 3   # 302's voice
        assert not world.net.errors
    finally:
        world.close()


def _menu(world, number, digit, ms=1500):
    end = world.phones[number]
    end.received = []
    assert end.phone.dtmf(digit, world.net.now)
    end.flush()
    world.run(ms)
    return [_dominant(f) for f in end.received]


def test_retrieval_plays_the_callers_tone_and_the_menu_saves_and_deletes(tmp_path):
    world = _world_with(tmp_path, ("301", "302", "101"), voicemail_on=("301",))
    try:
        p = world.phones
        world.phones["301"].phone.hangup(world.net.now)
        _dnd = world.main.directory.features("301")
        _dnd["dnd"] = True
        world.main.directory.set_features("301", _dnd)                  # do not disturb: to voicemail
        _leave_message(world, "302", "301")
        _leave_message(world, "101", "301")                             # from site a, through its host
        assert [m["caller"] for m in _store(world).messages("301")] == ["302", "101"]
        assert p["301"].phone.messages == 2                             # message waiting: 2 new
        _reach_voicemail(world, "301", "*97")
        world.run(300)
        tones = _menu(world, "301", voicemail.PLAY, 2600)               # the first: 302's tone
        assert tones.count(TONES["302"]) >= 90 and TONES["101"] not in tones
        assert p["301"].phone.messages == 1                             # heard: no longer new
        tones = _menu(world, "301", voicemail.NEXT, 2600)               # the next: 101's
        assert tones.count(TONES["101"]) >= 90 and TONES["302"] not in tones
        assert p["301"].phone.messages == 0
        _menu(world, "301", voicemail.DELETE, 600)                      # 101's message goes
        assert [m["caller"] for m in _store(world).messages("301")] == ["302"]
        _menu(world, "301", voicemail.SAVE, 600)                        # nothing current: "no more"
        world.hangup("301")
        left = _store(world).messages("301")
        assert [(m["caller"], m["state"]) for m in left] == [("302", "saved")]
        files = os.listdir(tmp_path / "main.sqlite.voicemail" / "messages" / "301")
        assert files == [left[0]["uid"] + ".wav"]                       # the deleted one's file is gone
        assert p["301"].phone.messages == 0
        assert not world.net.errors
    finally:
        world.close()


def test_a_caller_who_waits_longer_than_a_timestamps_reach_at_the_menu_hears_what_comes_next(tmp_path):
    """The endpoint sent nothing while it had nothing to play, its timestamps going on: after more than 32.8 s of
    silence (a caller thinking at the menu, a long message left) its next prompt was past the reach of the caller's
    replay window (docs/protocol.md section 5) and the caller heard nothing more of the call. It now sends comfort
    noise each second while silent (docs/features.md "A hold of any length"). 302 leaves 301 and 101 a message
    each; 301 at the main host and 101 at site a (through both hosts) wait 48 s after the menu (the second time,
    82 s into the call), press 1 and hear it."""
    world = _world_with(tmp_path, ("301", "302", "101"), voicemail_on=("301", "101"))
    try:
        for number in ("301", "101"):
            settings = world.main.directory.features(number)
            settings["dnd"] = True
            world.main.directory.set_features(number, settings, announce=True)
        world.run(1500)
        _leave_message(world, "302", "301")
        _leave_message(world, "302", "101")
        for number in ("301", "101"):
            _reach_voicemail(world, number, "*97")
            _wait_for_prompts(world)
            world.run(70000)                  # the count and the menu (about 12 s), a silence, 70 s in all;
            _menu(world, number, voicemail.HELP, 12000)   # the menu again, past the first 65.5 s of the
            world.run(48000)                  # timestamps (where the extension happens to come out right); 48 s
            tones = _menu(world, number, voicemail.PLAY, 2600)
            assert tones.count(TONES["302"]) >= 90, (number, tones[:5])
            world.hangup(number)
        assert world.main.stats.counters.get("voicemail keepalives", 0) >= 150
        assert not world.net.errors
    finally:
        world.close()


def test_unanswered_and_busy_calls_reach_the_mailbox_on_every_path_and_off_keeps_busy(tmp_path):
    world = _world_with(tmp_path, ("101", "102", "301", "302"), voicemail_on=("102", "301"), noanswer_s=5)
    try:
        p = world.phones
        # no answer for 5 s: at the main host, a local call of site a, from the main host to site a
        for caller, callee in (("302", "301"), ("101", "102"), ("301", "102")):
            p[callee].take()
            _leave_message(world, caller, callee, speak_ms=600)
            assert _store(world).messages(callee)[-1]["caller"] == caller
            assert p[callee].causes()[-1] == wire.CAUSE_NO_ANSWER and p[callee].idle     # it rang, then stopped
        # busy: a phone at the main host; a phone of site a, from its own site and from the main host
        world.call("301", "101")
        _leave_message(world, "302", "301", speak_ms=600)
        world.hangup("301")
        world.call("102", "302")
        _leave_message(world, "101", "102", speak_ms=600)
        _leave_message(world, "301", "102", speak_ms=600)
        world.hangup("102")
        assert [m["caller"] for m in _store(world).messages("301")] == ["302", "302"]
        assert [m["caller"] for m in _store(world).messages("102")] == ["101", "301", "101", "301"]
        world.run(200)                                                  # 102's count comes through site a's host
        assert p["102"].phone.messages == 4 and p["301"].phone.messages == 2
        # voicemail off (the default, 101): busy is busy as before (call waiting off: else a
        # phone in a call is offered the call as a waiting call, docs/features.md)
        assert _refused(world, "101", "*71")[0] == wire.CAUSE_FEATURE_OFF
        world.call("102", "101")
        assert p["302"].phone.dial("101", world.net.now)
        p["302"].flush()
        world.run(500)
        assert p["302"].causes()[-1] == wire.CAUSE_BUSY
        assert not world.net.errors
    finally:
        world.close()


def test_b4_the_remote_host_records_while_the_main_host_is_away_and_uploads_once(tmp_path):
    world = _world_with(tmp_path, ("101", "102"), voicemail_on=("102",))
    try:
        p = world.phones
        world.main_away()
        p["102"].phone.stop(world.net.now)                              # 102 is off: to its mailbox
        p["102"].flush()
        world.settle()
        _leave_message(world, "101", "102", speak_ms=1000)
        local = world.a.voicemail.store
        assert [(m["mailbox"], m["caller"], m["origin"]) for m in local.messages("102")] == [("102", "101", "site-a")]
        assert local.pending_upload() == [local.messages("102")[0]["uid"]]
        attach_host(world.net, world.main, MAIN)
        world.run_until(lambda: world.a.login.state == UP and not local.pending_upload(), 30000, "uploaded")
        msgs = _store(world).messages("102")
        assert [(m["caller"], m["origin"], m["uid"]) for m in msgs] == [("101", "site-a", local.messages("102")[0]["uid"])]
        ulaw = _store(world).audio(msgs[0])
        frames = [ulaw[i:i + 160] for i in range(0, len(ulaw), 160)]
        assert sum(1 for f in frames if _dominant(f) == TONES["101"]) >= len(frames) - 3
        # a resend (the acknowledgement lost) is stored once: the main host answers it as done
        local.db.execute("UPDATE messages SET uploaded = 0")
        world.restart_remote()
        world.run_until(lambda: not world.a.voicemail.store.pending_upload(), 30000, "sent again")
        assert len(_store(world).messages("102")) == 1
        assert world.main.stats.counters.get("voicemail uploads duplicate") == 1
        assert world.main.stats.counters.get("voicemail uploads stored") == 1
        assert not world.net.errors
    finally:
        world.close()


def _admin(world, *argv):
    """`upbx admin --database main.sqlite ...` while the hosts run, as an operator would."""
    from upbx.tools.cli import main as upbx
    return upbx(["admin", "--database", str(world.tmp / "main.sqlite")] + list(argv))


def _attendant(world, *routes):
    """Attendant 500 routing by digit (routes: "1=101", ...) with a prompt of the operator's (1 s of 1 kHz),
    set as an operator does while the hosts run, once the main host has read it."""
    _tone_wav(world.tmp / "prompt.wav", 1000, 1.0)
    argv = [word for route in routes for word in ("--route", route)]
    assert _admin(world, "attendant", "set", "500", *argv, "--prompt", str(world.tmp / "prompt.wav")) == 0
    world.run(1200)
    assert "500" in world.main.voicemail.attendants


def test_auto_attendant_answers_with_its_prompt_and_routes_by_digit(tmp_path):
    world = _world_with(tmp_path, ("101", "301", "302"), voicemail_on=("301",))
    try:
        p = world.phones
        _attendant(world, "1=101", "2=*98301")
        _reach_voicemail(world, "302", "500")
        world.run(1000)
        prompt = prompts.frames_of_ulaw(world.main.voicemail.store.attendants()["500"][1])
        assert p["302"].received[:len(prompt)] == prompt                # the operator's prompt, frame for frame
        _menu(world, "302", "1", 600)                                   # 1: extension 101 rings
        world.run_until(lambda: p["101"].phone.state == RINGING, 2000, "101 rings")
        from upbx.host.attendant import ringback_frames
        assert set(p["302"].received[-20:]) <= set(ringback_frames())   # the caller hears ring-back
        assert p["101"].phone.answer(world.net.now)
        p["101"].flush()
        world.run(200)
        p["101"].received, p["302"].received = [], []
        world.run(1000)
        heard_by_302 = [_dominant(f) for f in p["302"].received]
        heard_by_101 = [_dominant(f) for f in p["101"].received]
        assert heard_by_302.count(TONES["101"]) >= 45 and heard_by_101.count(TONES["302"]) >= 45
        world.hangup("302")
        assert p["101"].idle and world.main.status()["calls"] == []
        # 2: straight to 301's mailbox; an unknown digit says so and asks again
        sorry = prompts.prompt(None, "Not a choice.")                 # spoken already: played at once
        prompts.prompt(None, prompts.GREETING)
        _reach_voicemail(world, "302", "500")
        world.run(300)
        _menu(world, "302", "7", 300)
        assert p["302"].connected and p["302"].received[:10] == sorry[:10]   # said so, and plays the prompt again
        _menu(world, "302", "2", 300)
        greeting = len(prompts.prompt(None, prompts.GREETING)) + prompts.BEEP_MS // 20
        world.run(greeting * TICK_MS)
        world.run(800)
        world.hangup("302")
        world.run(100)
        assert [m["caller"] for m in _store(world).messages("301")] == ["302"]
        assert not world.net.errors
    finally:
        world.close()


def test_an_attendant_call_routed_to_a_phone_nobody_answers_rings_out_or_forwards_on_no_answer(tmp_path):
    """The attendant answers, so the main host's tick stops looking at the call for a ring timeout every
    tick (host/main_host.py, _ring_calls: an answered call is looked at once a round); routed on, the call
    rings again on the same call. Its ring timeout and a forward on no answer still come on time, counted
    from the new offer: the answered call is looked at again within a round and watched from then on."""
    world = _world_with(tmp_path, ("301", "302", "303"), voicemail_on=("303",), noanswer_s=5, ring_timeout_s=8)
    try:
        p = world.phones
        _attendant(world, "1=301", "2=303")
        greeting = prompts.prompt(None, prompts.GREETING)              # spoken now: played at once below
        from upbx.host.attendant import ringback_frames
        for digit, callee, after_ms in (("1", "301", 8000), ("2", "303", 5000)):
            _reach_voicemail(world, "302", "500")
            world.run(9000)   # answered for longer than the ring timeout: an answered call does not ring out
            assert p["302"].connected
            ended = len(p["302"].causes())
            _menu(world, "302", digit, 0)
            world.run_until(lambda: p[callee].phone.state == RINGING, 2000, "%s rings" % callee)
            rang = len(p[callee].causes())
            took = world.run_until(lambda: len(p[callee].causes()) > rang, 12000, "%s stops ringing" % callee)
            assert p[callee].causes()[-1] == wire.CAUSE_NO_ANSWER and p[callee].idle
            assert after_ms <= took <= after_ms + 3 * TICK_MS, took      # on time, not a round late
            if callee == "301":     # the ring timeout: the caller's call ends too
                assert p["302"].causes()[ended:] == [wire.CAUSE_NO_ANSWER] and p["302"].idle
            else:                   # forwarded to 303's mailbox: the caller hears its greeting from the start
                heard = p["302"].received
                world.run(1000)
                starts = [i for i in range(len(heard)) if heard[i:i + 40] == greeting[:40]]
                assert p["302"].connected and len(starts) == 1 and set(heard[:starts[0]]) <= set(ringback_frames())
                world.hangup("302")
        assert world.main.status()["calls"] == [] and not world.net.errors
    finally:
        world.close()


def test_admin_voicemail_and_attendant_commands_and_their_errors(tmp_path, capsys):
    from upbx.tools.cli import main as upbx
    db = str(tmp_path / "main.sqlite")

    def run(*argv):
        code = upbx(["admin", "--database", db] + list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    assert run("site", "add", "a")[0] == 0 and run("ext", "add", "101", "--site", "a")[0] == 0
    code, out, _ = run("voicemail", "on", "101")
    assert code == 0 and "voicemail on" in out
    with Directory(db) as d:
        assert d.features("101")["voicemail"] is True
    _tone_wav(tmp_path / "hello.wav", 500, 1.5)
    assert run("voicemail", "greeting", "101", str(tmp_path / "hello.wav"))[0] == 0
    with voicemail.VoicemailStore(db + ".voicemail") as store:
        name, ulaw = store.greeting("101")
        assert name == "hello.wav" and len(ulaw) == 1.5 * 8000
    assert run("voicemail", "greeting", "101", "--default")[0] == 0
    with voicemail.VoicemailStore(db + ".voicemail") as store:
        assert store.greeting("101") is None
    assert json.loads(run("voicemail", "list", "101", "--json")[1]) == []
    assert run("attendant", "set", "500", "--route", "1=101", "--route", "0=*97")[0] == 0
    listed = json.loads(run("attendant", "list", "--json")[1])
    assert listed == [{"number": "500", "routes": "0=*97 1=101", "prompt": "(the routes, spoken)"}]
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(3200))
    for argv, error in ((("voicemail", "on", "999"), "unknown extension '999'"),
                        (("voicemail", "greeting", "101"), "give a WAV file or --default"),
                        (("voicemail", "greeting", "101", str(tmp_path / "stereo.wav")), "must be 8000 Hz, mono"),
                        (("voicemail", "greeting", "101", str(tmp_path / "none.wav")), "cannot read"),
                        (("attendant", "set", "101", "--route", "1=102"), "not an extension"),
                        (("attendant", "set", "501"), "at least one --route"),
                        (("attendant", "set", "501", "--route", "x=101"), "bad route 'x=101'"),
                        (("attendant", "set", "501", "--route", "1=10a"), "bad route '1=10a'"),
                        (("attendant", "set", "501", "--route", "1=101", "--route", "1=102"), "routed twice"),
                        (("attendant", "remove", "502"), "no attendant '502'")):
        code, out, err = run(*argv)
        assert code == 1 and error in err and not out, (argv, err)
    assert run("attendant", "remove", "500")[0] == 0 and json.loads(run("attendant", "list", "--json")[1]) == []


def test_a_message_stops_at_120_s_and_a_whole_one_is_uploaded_after_b4(tmp_path):
    world = _world_with(tmp_path, ("101", "102"), voicemail_on=("102",))
    try:
        p = world.phones
        world.main_away()
        p["102"].phone.stop(world.net.now)
        p["102"].flush()
        world.settle()
        _reach_voicemail(world, "101", "102")
        p["101"].take()
        world.run_until(lambda: p["101"].idle, 130000, "the mailbox hung up")   # the caller never stops
        assert p["101"].causes()[-1] == wire.CAUSE_NORMAL
        local = world.a.voicemail.store
        assert [m["duration_ms"] for m in local.messages("102")] == [voicemail.MAX_MESSAGE_MS]
        attach_host(world.net, world.main, MAIN)
        world.run_until(lambda: not local.pending_upload(), 60000, "3,841 chunks uploaded")
        assert world.a.login.state == UP and not world.net.errors    # the session never overflowed
        msgs = _store(world).messages("102")
        assert [m["duration_ms"] for m in msgs] == [voicemail.MAX_MESSAGE_MS]
        assert _store(world).audio(msgs[0]) == local.audio(local.messages("102")[0])
    finally:
        world.close()


def test_a_forward_or_attendant_route_to_a_busy_phone_with_voicemail_leaves_a_message(tmp_path):
    world = _world_with(tmp_path, ("101", "301", "302"), voicemail_on=("301",))
    try:
        assert _admin(world, "attendant", "set", "500", "--route", "1=301") == 0
        world.run(1200)
        assert _refused(world, "301", "*71")[0] == wire.CAUSE_FEATURE_OFF   # call waiting off:
        world.call("301", "101")                                        # 301 busy
        greeting = prompts.prompt(None, prompts.GREETING)              # spoken already: played at once
        _reach_voicemail(world, "302", "500")
        world.run(200)
        _menu(world, "302", "1", 300)
        world.run(len(greeting) * TICK_MS + 800)
        assert world.phones["302"].connected
        world.hangup("302")
        world.run(100)
        assert [m["caller"] for m in _store(world).messages("301")] == ["302"]
        assert not world.net.errors
    finally:
        world.close()


def test_without_espeak_ng_a_call_needing_a_prompt_ends_unreachable_and_the_host_carries_on(tmp_path, monkeypatch):
    monkeypatch.setattr(prompts, "ESPEAK", "espeak-ng-not-installed")
    monkeypatch.setattr(prompts, "_memo", {})
    try:
        prompts.speak("hello")
        raise AssertionError("spoke without espeak-ng")
    except prompts.PromptError as exc:
        assert "espeak-ng-not-installed is not installed (apt-get install espeak-ng)" in str(exc)
    world = _world_with(tmp_path, ("302",), voicemail_on=("301",))
    try:
        end = world.phones["302"]
        assert end.phone.dial("301", world.net.now)
        end.flush()
        world.run(500)                           # answered, the greeting asked for: silence while it is made
        _wait_for_prompts(world)                 # (it cannot be)
        world.run_until(lambda: end.idle, 3000, "ended")
        assert end.causes() == [wire.CAUSE_UNREACHABLE]
        assert world.main.stats.counters["voicemail prompt errors"] == 1 and not world.net.errors
        _tone_wav(tmp_path / "hello.wav", 500, 1.0)                      # an operator's greeting needs none
        assert _admin(world, "voicemail", "greeting", "301", str(tmp_path / "hello.wav")) == 0
        _reach_voicemail(world, "302", "301")
        world.run(1500)
        world.hangup("302")
        world.run(100)
        assert [m["caller"] for m in _store(world).messages("301")] == ["302"]
    finally:
        world.close()


def test_b4_a_site_takes_messages_for_its_own_phones_only(tmp_path):
    world = _world_with(tmp_path, ("101",), voicemail_on=("102", "301"))
    try:
        world.main_away()
        end = world.phones["101"]
        for number, cause in (("*98301", wire.CAUSE_UNREACHABLE), ("*98999", wire.CAUSE_UNREACHABLE)):
            assert end.phone.dial(number, world.net.now)
            end.flush()
            world.run_until(lambda: end.idle, 3000, "refused")
            assert end.causes()[-1] == cause, number
        _leave_message(world, "101", "*98102", speak_ms=400)             # its own 102: recorded here
        assert [m["mailbox"] for m in world.a.voicemail.store.messages("102")] == ["102"]
        assert world.a.voicemail.store.messages("301") == [] and not world.net.errors
    finally:
        world.close()


def _timestamps(frames):
    """The sender's timestamps in PhoneEnd's frames ("NUMBER TS....")."""
    return [int(f.split()[1].rstrip(b".")) for f in frames]


def test_a_prompt_is_spoken_off_the_loop_a_relayed_call_keeps_every_frame_and_the_caller_hears_it_whole(
        tmp_path, monkeypatch):
    """The first *97 of a host: its prompts are made in a worker thread, held here until the test lets
    them go (a host that spoke them in its tick, as it did, would wait in the test's own thread and
    fail). Meanwhile the host's ticks go on: the call 101 (site A) <-> 302 (at the main host), whose
    frames the main host relays, loses no frame (the sender's timestamps, 20 ms apart, none missing),
    and 301, answered, hears silence. Once made, 301 hears the prompt whole, from its first frame,
    then the menu."""
    from tests.test_routing import _world
    monkeypatch.setattr(prompts, "_memo", {})      # no prompt spoken yet in this process (another test's)
    world = _world(tmp_path, ("101", "302", "301"))
    held, asked = threading.Event(), []
    endpoint = world.main.voicemail

    def speak_when_let(text):
        asked.append(text)
        assert held.wait(120), "the test never let the prompt be made"
        return prompts.speak_in_child(text)      # the real thing: espeak-ng in a child process
    endpoint.prompts.speak = speak_when_let
    try:
        world.call("101", "302")
        a, b, caller = world.phones["101"], world.phones["302"], world.phones["301"]
        assert caller.phone.dial(voicemail.RETRIEVE, world.net.now)
        caller.flush()
        world.run_until(lambda: caller.connected, 3000, "301 answered by voicemail")
        world.run(3000)                                              # the prompts are being made
        new_and_saved = "You have 0 new and 0 saved messages."
        assert asked == [new_and_saved, voicemail.MENU] and endpoint.prompts.busy()
        assert len(caller.received) >= 140 and set(caller.received) == {prompts.SILENCE}
        for sender, receiver in ((a, b), (b, a)):
            heard = _timestamps(receiver.received)
            assert len(heard) >= 140 and heard == list(range(heard[0], heard[-1] + 20, 20)), heard[:5]
            assert heard[-1] >= _timestamps(sender.sent)[-1] - 100   # what was sent has arrived (but the last hops)
        waited = len(caller.received)
        held.set()
        _wait_for_prompts(world)
        first, menu = prompts.prompt(None, new_and_saved), prompts.prompt(None, voicemail.MENU)
        world.run((len(first) + len(menu)) * TICK_MS + 500)
        heard = caller.received
        start = next(i for i in range(len(heard)) if heard[i:i + len(first)] == first)
        assert set(heard[:start]) == {prompts.SILENCE} and start <= waited + 5   # silence, then at once the prompt
        assert heard[start + len(first):start + len(first) + len(menu)] == menu  # then the menu, whole
        assert world.main.stats.counters["voicemail frames waiting for a prompt"] >= 140
        ts = _timestamps(b.received)
        assert ts == list(range(ts[0], ts[-1] + 20, 20))             # and the call went on throughout
        assert not world.net.errors
    finally:
        held.set()
        world.close()


def test_a_host_speaks_a_prompt_once_and_reads_it_back_from_its_folder_after_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(prompts, "_memo", {})
    spoken = []

    def speak(text):
        spoken.append(text)
        return prompts.speak_in_child(text)
    first = prompts.Prompts(str(tmp_path / "prompts"), speak)
    assert first.frames("Message saved.") is None and first.busy()
    deadline = time.monotonic() + 120                 # bounds a fault only
    while first.busy():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    frames = first.frames("Message saved.")
    assert frames == prompts.prompt(None, "Message saved.") and spoken == ["Message saved."]
    monkeypatch.setattr(prompts, "_memo", {})         # the host process starts again
    again = prompts.Prompts(str(tmp_path / "prompts"), speak)
    assert again.frames("Message saved.") == frames and not again.busy() and spoken == ["Message saved."]


def test_prompt_resampling_is_the_windowed_sinc_filter_sample_for_sample():
    """host/prompts.resample (22,050 Hz espeak-ng output to 8 kHz, the multiply-adds in C) gives
    exactly what the filter's definition gives, written out tap by tap, on noise and a tone."""
    import math
    import random
    import struct
    from upbx.host import prompts

    def by_definition(pcm, rate, taps=31):
        x = struct.unpack("<%dh" % (len(pcm) // 2), pcm)
        half, cut = taps // 2, 3600.0 / rate
        h = [2 * cut * (1.0 if k == 0 else math.sin(2 * math.pi * cut * k) / (2 * math.pi * cut * k))
             * (0.54 + 0.46 * math.cos(math.pi * k / half)) for k in range(-half, half + 1)]
        out, t = [], 0.0
        while t < len(x) - 1:
            i, acc = int(t), 0.0
            for j, c in enumerate(h):
                if 0 <= i + j - half < len(x):
                    acc += c * x[i + j - half]
            out.append(max(-32768, min(32767, int(acc))))
            t += rate / 8000
        return struct.pack("<%dh" % len(out), *out)

    rng = random.Random(7)
    noise = struct.pack("<3000h", *(rng.randint(-32768, 32767) for _ in range(3000)))
    tone = struct.pack("<3000h", *(int(12000 * math.sin(2 * math.pi * 440 * n / 22050)) for n in range(3000)))
    for pcm in (noise, tone):
        got = prompts.resample(pcm, 22050)
        assert got == by_definition(pcm, 22050) and len(got) == 2 * 1089
    assert prompts.resample(tone[:1600], 8000) == tone[:1600]
