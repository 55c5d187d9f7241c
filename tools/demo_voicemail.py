"""`upbx demo features`' scenarios voicemail, message_waiting and auto_attendant (docs/features.md):
real firmware phones (the MicroPython unix port) and real host daemons, with the evidence read
from the phones' speakers (their recordings), their logs and displays, and `upbx admin`.
"""
import json
import os
import time
import wave

from upbx.common.g711 import ulaw_decode
from upbx.host import prompts
from upbx.host.attendant import default_prompt
from upbx.tools.demo_features import WAIT_S, ConsolePhone
from upbx.tools.lab import RECORD_FRAME, frequencies_heard, frequency_label, goertzel_power

CALLER_HZ = 1000         # what a caller's microphone sends (--send tone:1000): its message
CALLEE_HZ = 1400


def frames_found(wav, frames):
    """(found, of): how many of frames (mu-law) that are not silence a speaker recording holds
    byte for byte, decoded, in order. Each is looked for after the last one found, so a frame
    lost or concealed on a busy machine costs itself only, not the ones after it."""
    with wave.open(wav) as w:
        data = w.readframes(w.getnframes())
    wanted = [p for p in (ulaw_decode(f) for f in frames) if max(abs(v) for v in _samples(p)) > 256]
    found = pos = 0
    for pcm in wanted:
        at = data.find(pcm, pos)
        while at >= 0 and at % 2:
            at = data.find(pcm, at + 1)
        if at >= 0:
            found += 1
            pos = at + len(pcm)
    return found, len(wanted)


def _samples(pcm):
    return memoryview(pcm).cast("h")


def cadence(wav, f1=350, f2=440, window_ms=20):
    """The on/off runs (ms) of a two-frequency tone in a recording: [("on", 100), ("off", 100), ...],
    silence before the first on left out."""
    with wave.open(wav) as w:
        data = w.readframes(w.getnframes())
    n = 8 * window_ms
    runs = []
    for start in range(0, len(data) - 2 * n + 1, 2 * n):
        block = data[start:start + 2 * n]
        on = min(goertzel_power(block, n, f1), goertzel_power(block, n, f2)) > 1e9
        state = "on" if on else "off"
        if runs and runs[-1][0] == state:
            runs[-1][1] += window_ms
        elif runs or on:
            runs.append([state, window_ms])
    return [tuple(r) for r in runs]


def _messages(lab, number):
    return json.loads(lab.admin("voicemail", "list", number, "--json"))


BEEP = {"beep": (prompts.BEEP_HZ,)}


def sound(block):
    """A window's label for wait_heard: "sound" when anything is heard (a prompt), else "quiet"."""
    return "quiet" if frequency_label(block, BEEP) == "quiet" else "sound"


def _sent_frames(path):
    try:
        return os.path.getsize(path) // RECORD_FRAME
    except OSError:
        return 0


def leave(phone, mailbox, speak_s, tone_ms=prompts.BEEP_MS * 3 // 4, sent=None, greeting_ms=None):
    """phone dials mailbox's extension (voicemail), waits until its speaker played the beep after
    the greeting (BEEP_HZ for tone_ms: the greeting too when it is that tone), sends its tone for
    speak_s more, hangs up: whether it was connected and heard the beep. sent: the phone's
    --record-sent-g711 file, to count speak_s in frames it sent (a phone starved of CPU loses
    microphone frames, as a device's full DMA queue does); else speak_s of its speaker's clock.
    greeting_ms: the spoken greeting's length: the beep is looked for only after it (the speech
    has 100 ms windows where 1400 Hz dominates: three of them in a row passed for the beep)."""
    phone.command("!call " + mailbox)
    connected = phone.wait_line("connected")
    since = phone.mark()
    if connected and greeting_ms is not None:
        begun = phone.wait_heard(sound, "sound", 200, since)     # silence while the host makes it, then speech
        since = since if begun is None else begun - 2 + greeting_ms // 100 - 1
    beep = phone.wait_heard(BEEP, "beep", tone_ms, since) if connected else None
    if beep is not None and sent is not None:
        want = _sent_frames(sent) + int(speak_s * 50)
        deadline = time.time() + WAIT_S
        while _sent_frames(sent) < want and time.time() < deadline:
            time.sleep(0.05)
        spoke = _sent_frames(sent) >= want
    else:
        spoke = beep is not None and phone.wait_played(int(speak_s * 1000), since_ms=beep * 100)
    phone.command("!hangup")
    phone.wait_line("call ended")
    return connected and spoke


def _leave(lab, caller, mailbox, tag, speak_s=3.0):
    """caller (sending CALLER_HZ) leaves a message of speak_s in mailbox (leave):
    (connected and the beep heard, greeting frames heard, of how many)."""
    sent = lab.path(tag + ".sent.g711")
    phone = ConsolePhone(lab, caller, tag, "--send", "tone:%d" % CALLER_HZ, "--record-sent-g711", sent)
    try:
        connected = leave(phone, mailbox, speak_s, sent=sent,
                          greeting_ms=len(prompts.prompt(None, prompts.GREETING)) * 20)
    finally:
        phone.quit()
    return (connected,) + frames_found(phone.wav, prompts.prompt(None, prompts.GREETING))


def _wait_message(lab, mailbox, count, done=None, timeout=WAIT_S):
    """mailbox's messages once it has count (or done(how many) holds), WAIT_S at most."""
    done = done or (lambda n: n >= count)
    deadline = time.time() + timeout
    while time.time() < deadline:
        messages = _messages(lab, mailbox)
        if done(len(messages)):
            return messages
        time.sleep(0.2)
    return _messages(lab, mailbox)


def voicemail(lab, seconds):
    """102's voicemail on; 102 not registered: 101 (sending 1000 Hz) calls it, hears the greeting
    (its frames found in 101's speaker recording) and leaves a message, kept as a WAV with its
    SQLite row; 102 then dials `!voicemail` (*97), presses 1 and hears 101's tone, presses 7 and
    the message is gone."""
    lab.admin("voicemail", "on", "102")
    lab.wait_sites_current()                      # the main host sent site A's remote host the setting
    connected, heard, total = _leave(lab, "101", "102", "vm-101")
    messages = _wait_message(lab, "102", 1)
    labels = {"message": (CALLER_HZ,)}
    phone = ConsolePhone(lab, "102", "vm-102")
    try:
        since = phone.mark()
        phone.command("!voicemail")
        answered = phone.wait_line("connected") and phone.wait_heard(sound, "sound", 500, since) is not None
        since = phone.mark()                      # "You have 1 new ..." is playing
        phone.command("!dtmf 1")                  # a digit cuts the prompt short: the message plays
        answered = answered and phone.wait_heard(labels, "message", 1500, since) is not None
        phone.command("!dtmf 7")
        _wait_message(lab, "102", 0, lambda n: n == 0)
        phone.command("!hangup")
    finally:
        phone.quit()
    played = frequencies_heard(phone.wav, labels)
    left = _messages(lab, "102")
    lab.admin("voicemail", "off", "102")
    message = messages[0] if messages else {}
    ok = (connected and heard >= 0.5 * total and len(messages) == 1 and message.get("caller") == "101"
          and message.get("duration_ms", 0) >= 2000 and answered and "message" in played and left == [])
    return {"ok": ok, "left": connected, "retrieval_answered": answered, "greeting_frames_heard": heard, "greeting_frames": total,
            "message": {k: message.get(k) for k in ("caller", "duration_ms", "state", "file")},
            "retrieval_heard": played, "after_delete": left}


def message_waiting(lab, seconds):
    """A message waits for 102: its phone registers and shows "1 new messages", lifting (key A)
    plays the stutter dial tone (100 ms on, 100 ms off: its cadence measured on the recording);
    once heard (*97, 1) the count is 0 and lifting plays the steady dial tone."""
    lab.admin("voicemail", "on", "102")
    lab.wait_sites_current()
    _leave(lab, "101", "102", "mwi-101", speak_s=1.0)
    _wait_message(lab, "102", 1)
    phone = ConsolePhone(lab, "102", "mwi-102")
    try:
        shown = phone.wait_line("I display idle 1 new messages")
        phone.command("A")                        # off hook: the stutter dial tone, 2 s of it
        phone.wait_played(2000)
        phone.command("D")
        phone.command("!voicemail")
        phone.wait_line("connected") and phone.wait_heard(sound, "sound", 500, phone.mark())
        phone.command("!dtmf 1")
        cleared = phone.wait_line("messages waiting 0")
        phone.command("!dtmf 7")
        _wait_message(lab, "102", 0, lambda n: n == 0)
        phone.command("!hangup")
        phone.wait_line("call ended")
        phone.command("A")                        # off hook again: the steady dial tone, 1.5 s of it
        phone.wait_played(1500)
        phone.command("D")
    finally:
        phone.quit()
    runs = cadence(phone.wav)
    stutter = runs[:20]
    steady = [r for r in runs if r[0] == "on" and r[1] >= 1000]
    ons = [ms for state, ms in stutter if state == "on"]
    offs = [ms for state, ms in stutter[:-1] if state == "off"]
    lab.admin("voicemail", "off", "102")
    ok = (shown and cleared and len(ons) >= 8 and all(80 <= ms <= 120 for ms in ons)
          and all(80 <= ms <= 120 for ms in offs) and len(steady) >= 1)
    return {"ok": ok, "display": "idle 1 new messages" if shown else None, "stutter_on_ms": ons,
            "stutter_off_ms": offs, "cleared_after_listening": cleared,
            "steady_dial_tone_ms": steady[0][1] if steady else None}


def auto_attendant(lab, seconds):
    """Attendant 500: 1 -> 301, 2 -> 102's mailbox, its prompt spoken from the routes. 101
    (1000 Hz) calls 500, hears the prompt (its frames found in the recording), presses 1; 301
    (1400 Hz) rings, answers, and each hears the other's tone."""
    routes = {"1": "301", "2": "*98102"}
    lab.admin("attendant", "set", "500", "--route", "1=301", "--route", "2=*98102")
    lab.wait_for(lambda: "500" in lab.status("main")["attendants"], "the main host answers 500", timeout=WAIT_S)
    callee = ConsolePhone(lab, "301", "aa-301", "--send", "tone:%d" % CALLEE_HZ)
    caller = ConsolePhone(lab, "101", "aa-101", "--send", "tone:%d" % CALLER_HZ)
    labels = {"caller": (CALLER_HZ,), "callee": (CALLEE_HZ,)}
    try:
        prompt = prompts.prompt(None, default_prompt(routes))   # what the host plays (looked for below)
        since = caller.mark()
        caller.command("!call 500")
        answered = caller.wait_line("connected")
        # silence while the host makes the prompt (if it has not yet: it starts when 500 is set), then
        # the whole prompt from when it began
        begun = caller.wait_heard(sound, "sound", 300, since)
        caller.wait_played(len(prompt) * 20 + 200, since_ms=((begun or since) - 3) * 100)
        caller.command("!dtmf 1")
        rang = callee.wait_line("incoming call from 101")
        callee.command("!answer")
        since = caller.mark(), callee.mark()
        talked = (caller.wait_heard(labels, "callee", int(max(2.0, seconds) * 1000), since[0]) is not None
                  and callee.wait_heard(labels, "caller", int(max(2.0, seconds) * 1000), since[1]) is not None)
        caller.command("!hangup")
        ended = callee.wait_line("call ended: normal clearing")
    finally:
        caller.quit()
        callee.quit()
    lab.admin("attendant", "remove", "500")
    heard, total = frames_found(caller.wav, prompt)
    caller_heard = frequencies_heard(caller.wav, labels)
    callee_heard = frequencies_heard(callee.wav, labels)
    ok = (answered and heard >= 0.5 * total and rang and talked and ended and "callee" in caller_heard
          and "caller" in callee_heard)
    return {"ok": ok, "answered": answered, "prompt_frames_heard": heard, "prompt_frames": total, "routed_to_301_rang": rang,
            "talked": talked,
            "caller_heard": caller_heard, "callee_heard": callee_heard}


SCENARIOS = {"voicemail": voicemail, "message_waiting": message_waiting, "auto_attendant": auto_attendant}
