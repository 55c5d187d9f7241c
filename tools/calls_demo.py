"""`upbx demo features`' scenarios for call waiting and transfer (tools/demo_features.py calls
these; docs/features.md): firmware phones on the console, each sending its own tone, and what
each speaker played, 100 ms at a time (Goertzel on its recording).
"""
import itertools
import json
import time

from upbx.host.moh import NOTES_HZ
from upbx.tools.demo_features import ConsolePhone
from upbx.tools.lab import frequencies_heard

TONES = (1000, 1400, 1800)          # what phones A (the one with two lines), B and C send
NUMBERS = ("101", "301", "201")     # A at site A, B at the main host, C at site B
_RUNS = itertools.count(1)          # each run's phones get tags (logs, recordings) of their own


def _phones(lab, tag, numbers, args_a=()):
    """The three phones, each sending its own tone, and the labels of what a speaker can play;
    args_a: more `upbx phone` arguments for phone A (e.g. a 64 KB heap with the frozen image).
    Phone N's log and summary are the lab's phone-TAG-N.log and TAG-N.summary.json (tag None:
    a fresh one per run, so that a log never holds an earlier run's lines)."""
    tag = tag or "calls%d" % next(_RUNS)
    phones = [ConsolePhone(lab, n, "%s-%s" % (tag, n), "--send", "tone:%d" % hz, *(args_a if i == 0 else ()))
              for i, (n, hz) in enumerate(zip(numbers, TONES))]
    labels = {n: (hz,) for n, hz in zip(numbers, TONES)}
    labels.update({"music": NOTES_HZ, "waiting beep": (440,), "ringback": (480,)})
    return phones, labels


def _heard(phone, labels):
    """What the phone's speaker played: the phones by their tones, the music, the call-waiting beep
    (440 Hz alone); ring-back (440 + 480 Hz, neither dominating) is no label and left out."""
    heard = []
    for label in frequencies_heard(phone.wav, labels):   # a gap (a busy machine) does not split a run
        if label not in ("quiet", "ringback") and (not heard or heard[-1] != label):
            heard.append(label)
    return heard


def _wait_count(phone, text, n, timeout=10):
    """Whether text is in the phone's log n times within timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if phone.log().count(text) >= n:
            return True
        time.sleep(0.05)
    return False


def _quit(phones):
    for phone in phones:
        phone.quit()


def call_waiting(lab, seconds, numbers=NUMBERS, args_a=(), tag=None):
    """B calls A; C calls A, which hears the call-waiting beep, answers (B is held and hears the
    music), swaps back, hangs up on B and resumes C (the held line)."""
    talk = max(1.5, seconds / 2)
    p, labels = _phones(lab, tag, numbers, args_a)
    a, b, c = p
    A, B, C = numbers
    try:
        b.command("!call " + A)
        a.wait_line("incoming call from " + B)
        a.command("!answer")
        connected = b.wait_line("connected")
        time.sleep(talk)
        c.command("!call " + A)
        waiting = a.wait_line("call waiting from " + C)
        time.sleep(talk)
        a.command("!answer")                      # the waiting call: 301 is held
        answered = a.wait_line("connected to %s (%s held)" % (C, B))
        time.sleep(talk)
        a.command("!swap")
        swapped = a.wait_line("connected to %s (%s held)" % (B, C))
        time.sleep(talk)
        a.command("!hangup")                      # 301's call ends; 201 is left on hold
        left = a.wait_line("on hold " + C) and b.wait_line("call ended: normal clearing")
        a.command("!resume")
        resumed = a.wait_line("call resumed")
        time.sleep(talk)
        a.command("!hangup")
        ended = c.wait_line("call ended: normal clearing")
    finally:
        _quit(p)
    heard = {n: _heard(phone, labels) for n, phone in zip(numbers, p)}
    ok = (connected and waiting and answered and swapped and left and resumed and ended
          and heard[A] == [B, "waiting beep", B, C, B, C] and heard[B] == [A, "music", A] and heard[C] == [A, "music", A])
    return {"ok": ok, "calls": "%s -> %s, then %s -> %s (waiting)" % (B, A, C, A), "waiting_shown": waiting,
            "answered_waiting": answered, "swapped": swapped, "held_line_left": left, "resumed": resumed,
            "heard": heard}


def transfer(lab, seconds, blind, numbers=NUMBERS, records=True, args_a=(), tag=None):
    """B calls A; A transfers B to C, blind (B hears the music while C rings) or after consulting C
    (A and C talk while B hears the music): B and C then talk, A's two calls end "transferred"."""
    talk = max(1.5, seconds / 2)
    p, labels = _phones(lab, tag, numbers, args_a)
    a, b, c = p
    A, B, C = numbers
    try:
        b.command("!call " + A)
        a.wait_line("incoming call from " + B)
        a.command("!answer")
        connected = b.wait_line("connected")
        time.sleep(talk)
        if blind:
            a.command("!transfer " + C)
            rang = c.wait_line("incoming call from " + A)
            done = a.wait_line("other line ended: transferred") and a.wait_line("call ended: transferred")
            time.sleep(talk)                      # 301 hears the music while 201 rings
            c.command("!answer")
        else:
            a.command("!consult " + C)
            rang = c.wait_line("incoming call from " + A)
            c.command("!answer")
            _wait_count(a, "connected (", 2)      # the consultation is answered (the first call said it once)
            time.sleep(talk)                      # 101 and 201 talk; 301 hears the music
            a.command("!complete")
            done = a.wait_line("other line ended: transferred") and a.wait_line("call ended: transferred")
        told = b.wait_line("now talking to " + C) and c.wait_line("now talking to " + B)
        time.sleep(talk)
        b.command("!hangup")
        ended = c.wait_line("call ended: normal clearing")
    finally:
        _quit(p)
    heard = {n: _heard(phone, labels) for n, phone in zip(numbers, p)}
    ok = (connected and rang and done and told and ended and heard[B] == [A, "music", C]
          and heard[C] == ([B] if blind else [A, B]) and heard[A] == ([B] if blind else [B, C]))
    out = {"ok": ok, "call": "%s -> %s, transferred by %s to %s" % (B, A, A, C), "transferred": done,
           "parties_told": told, "heard": heard}
    if records:
        out["records"] = _linked_records(lab)
        out["ok"] = ok and out["records"]["linked"]
    return out


def _linked_records(lab):
    """The call records of the transfer (the main host's table, newest first): the record of the
    first call, and every record linked to it (docs/features.md, Records)."""
    deadline = time.time() + 5
    while True:
        rows = json.loads(lab.admin("calls", "--json", "--limit", "8"))
        first = next((r for r in rows if r["cause"] == "transferred" and r["linked"] is None), None)
        linked = [r for r in rows if first is not None and r["linked"] == first["uid"]]
        done = first is not None and any(r["cause"] == "normal clearing" for r in linked)
        if done or time.time() > deadline:
            break
        time.sleep(0.2)
    keep = ("origin", "caller", "callee", "path", "cause", "uid", "linked")
    return {"linked": done, "first": first and {k: first[k] for k in keep},
            "linked_to_it": [{k: r[k] for k in keep} for r in linked]}


def transfer_recall(lab, seconds, numbers=NUMBERS, tag=None):
    """B calls A; A transfers B blind to C, who does not answer: after the joining host's
    `transfer_recall_s` C stops ringing and A rings again, its display saying it is a recall; A
    answers and talks with B again. B hears the music from the transfer until A answers."""
    talk = max(1.5, seconds / 2)
    p, labels = _phones(lab, tag, numbers)
    a, b, c = p
    A, B, C = numbers
    recall = "incoming call from %s recall: %s no answer" % (B, C)
    try:
        b.command("!call " + A)
        a.wait_line("incoming call from " + B)
        a.command("!answer")
        connected = b.wait_line("connected")
        time.sleep(talk)
        a.command("!transfer " + C)
        rang = c.wait_line("incoming call from " + A)
        started = time.time()
        recalled = a.wait_line(recall, timeout=60)
        waited_s = round(time.time() - started, 1)
        c_stopped = c.wait_line("call ended: no answer")
        time.sleep(talk / 2)                     # B hears the music while A rings again
        a.command("!answer")
        told = b.wait_line("now talking to " + A)
        time.sleep(talk)
        b.command("!hangup")
        ended = a.wait_line("call ended: normal clearing")
    finally:
        _quit(p)
    heard = {n: _heard(phone, labels) for n, phone in zip(numbers, p)}
    ok = (connected and rang and recalled and c_stopped and told and ended
          and heard[B] == [A, "music", A] and heard[A] == [B] and heard[C] == [])
    return {"ok": ok, "call": "%s -> %s, transferred blind by %s to %s, not answered" % (B, A, A, C),
            "recall_display": recall if recalled else None, "recalled_after_s": waited_s,
            "new_party_stopped": c_stopped, "parties_told": told, "heard": heard}


def transfer_via_main(lab, seconds):
    """301 (the main host's phone) calls 101 (site A), which consults 302 (the main host's) and
    completes: both calls go through the main host, so site A's remote host hands the join to it
    and the joined call no longer turns at site A (its uplink budget counts nothing of it)."""
    before = lab.status("site-a")["stats"]["counters"].get("transfers handed to the main host", 0)
    result = transfer(lab, seconds, False, numbers=("101", "301", "302"))
    site = lab.status("site-a")
    handed = site["stats"]["counters"].get("transfers handed to the main host", 0) - before
    joined = [r for r in result.get("records", {}).get("linked_to_it", []) if r["cause"] == "normal clearing"]
    result.update({"handed_to_main_host": handed, "site_a_uplink_calls_after": site["uplink"]["calls"],
                   "joined_by": joined[0]["origin"] if joined else None})
    result["ok"] = result["ok"] and handed == 1 and result["joined_by"] == "main"
    return result
