"""`upbx demo features`' scenarios for call waiting and transfer (tools/demo_features.py calls
these; docs/features.md): firmware phones on the console, each sending its own tone, and what
each speaker played, 100 ms at a time (Goertzel on its recording).
"""
import json
import time

from upbx.host.moh import NOTES_HZ
from upbx.tools.demo_features import ConsolePhone, _inner
from upbx.tools.lab import frequencies_heard

TONES = {"101": 1000, "301": 1400, "201": 1800}


def _labels(*extra):
    labels = {number: (hz,) for number, hz in TONES.items()}
    labels["music"] = NOTES_HZ
    for name, hz in extra:
        labels[name] = (hz,)
    return labels


def _phones(lab, tag):
    return {n: ConsolePhone(lab, n, "%s-%s" % (tag, n), "--send", "tone:%d" % hz) for n, hz in TONES.items()}


def _heard(phone):
    """What the phone's speaker played: the phones by their tones, the music, the call-waiting beep
    (440 Hz alone); ring-back (440 + 480 Hz, neither dominating) is no label and left out."""
    labels = _labels(("waiting beep", 440), ("ringback", 480))
    return [h for h in _inner(frequencies_heard(phone.wav, labels)) if h not in ("quiet", "ringback")]


def _quit(phones):
    for phone in phones.values():
        phone.quit()


def call_waiting(lab, seconds):
    talk = max(1.5, seconds / 2)
    p = _phones(lab, "cw")
    a, b, c = p["101"], p["301"], p["201"]
    try:
        b.command("!call 101")
        a.wait_line("incoming call from 301")
        a.command("!answer")
        connected = b.wait_line("connected")
        time.sleep(talk)
        c.command("!call 101")
        waiting = a.wait_line("call waiting from 201")
        time.sleep(talk)
        a.command("!answer")                      # the waiting call: 301 is held
        answered = a.wait_line("connected to 201 (301 held)")
        time.sleep(talk)
        a.command("!swap")
        swapped = a.wait_line("connected to 301 (201 held)")
        time.sleep(talk)
        a.command("!hangup")                      # 301's call ends; 201 is left on hold
        left = a.wait_line("on hold 201") and b.wait_line("call ended: normal clearing")
        a.command("!resume")
        resumed = a.wait_line("call resumed")
        time.sleep(talk)
        a.command("!hangup")
        ended = c.wait_line("call ended: normal clearing")
    finally:
        _quit(p)
    heard = {"101": _heard(a), "301": _heard(b), "201": _heard(c)}
    ok = (connected and waiting and answered and swapped and left and resumed and ended
          and heard["101"] == ["301", "waiting beep", "301", "201", "301", "201"]
          and heard["301"] == ["101", "music", "101"] and heard["201"] == ["101", "music", "101"])
    return {"ok": ok, "calls": "301 -> 101, then 201 -> 101 (waiting)", "waiting_shown": waiting,
            "answered_waiting": answered, "swapped": swapped, "held_line_left": left, "resumed": resumed,
            "heard": heard}


def transfer(lab, seconds, blind):
    talk = max(1.5, seconds / 2)
    p = _phones(lab, "bt" if blind else "at")
    a, b, c = p["101"], p["301"], p["201"]
    try:
        b.command("!call 101")
        a.wait_line("incoming call from 301")
        a.command("!answer")
        connected = b.wait_line("connected")
        time.sleep(talk)
        if blind:
            a.command("!transfer 201")
            rang = c.wait_line("incoming call from 101")
            done = a.wait_line("other line ended: transferred") and a.wait_line("call ended: transferred")
            time.sleep(talk)                      # 301 hears the music while 201 rings
            c.command("!answer")
        else:
            a.command("!consult 201")
            rang = c.wait_line("incoming call from 101")
            c.command("!answer")
            a.wait_line("connected (")
            time.sleep(talk)                      # 101 and 201 talk; 301 hears the music
            a.command("!complete")
            done = a.wait_line("other line ended: transferred") and a.wait_line("call ended: transferred")
        told = b.wait_line("now talking to 201") and c.wait_line("now talking to 301")
        time.sleep(talk)
        b.command("!hangup")
        ended = c.wait_line("call ended: normal clearing")
    finally:
        _quit(p)
    heard = {n: _heard(phone) for n, phone in p.items()}
    records = []
    deadline = time.time() + 5
    while time.time() < deadline and len(records) < 3:
        records = [r for r in json.loads(lab.admin("calls", "--json", "--limit", "6"))
                   if {r["caller"], r["callee"]} & {"101"} or {r["caller"], r["callee"]} == {"301", "201"}][:3]
        time.sleep(0.2)
    expect_101 = ["301"] if blind else ["301", "201"]
    ok = (connected and rang and done and told and ended and heard["301"] == ["101", "music", "201"]
          and heard["201"] == (["301"] if blind else ["101", "301"]) and heard["101"] == expect_101)
    return {"ok": ok, "call": "301 -> 101, transferred by 101 to 201", "transferred": done,
            "parties_told": told, "heard": heard,
            "records": [{k: r.get(k) for k in ("caller", "callee", "cause", "path", "linked", "origin")}
                        for r in records]}
