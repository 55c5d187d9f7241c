"""`upbx demo features`' scenarios for call waiting and transfer (tools/demo_features.py calls
these; docs/features.md): firmware phones on the console, each sending its own tone, and what
each speaker played, 100 ms at a time (Goertzel on its recording).

Every step waits for what it needs, never for a time: a line in a phone's log, or audio in a
speaker's recording ("A has heard B for 1.5 s since the answer"), with WAIT_S only as the bound
of a fault. A wait that ran out is named in the result's `missed` (the step and what was not
heard), beside the whole recordings' evidence.
"""
import itertools
import json
import time

from upbx.host.moh import NOTES_HZ
from upbx.tools.demo_features import WAIT_S, ConsolePhone
from upbx.tools.lab import frequencies_heard

TONES = (1000, 1400, 1800)          # what phones A (the one with two lines), B and C send
NUMBERS = ("101", "301", "201")     # A at site A, B at the main host, C at site B
_RUNS = itertools.count(1)          # each run's phones get tags (logs, recordings) of their own


class _Three:
    """Phones A, B and C of one run, each sending its own tone, and the steps the scenarios share.

    args_a: more `upbx phone` arguments for phone A (e.g. a 64 KB heap with the frozen image).
    Phone N's log and summary are the lab's phone-TAG-N.log and TAG-N.summary.json (tag None:
    a fresh one per run, so that a log never holds an earlier run's lines)."""

    def __init__(self, lab, seconds, tag, numbers, args_a=()):
        tag = tag or "calls%d" % next(_RUNS)
        self.lab, self.numbers = lab, numbers
        self.talk_ms = int(max(1.5, seconds / 2) * 1000)   # how long each pair that talks hears each other
        self.phones = []
        try:
            for i, (n, hz) in enumerate(zip(numbers, TONES)):
                self.phones.append(ConsolePhone(lab, n, "%s-%s" % (tag, n), "--send", "tone:%d" % hz,
                                                *(args_a if i == 0 else ())))
        except BaseException:
            self.quit()
            raise
        self.labels = {n: (hz,) for n, hz in zip(numbers, TONES)}
        self.labels.update({"music": NOTES_HZ, "waiting beep": (440,), "ringback": (480,)})
        self.missed = []                # the waits that ran out: (step, what was not heard)

    def marks(self):
        return [p.mark() for p in self.phones]

    def hears(self, step, pairs, since, ms=None):
        """Wait until each (listener, label) pair's speaker played label for ms (the talk time)
        since the marks `since`: True when all did; the others are named in `missed`."""
        ok = True
        for listener, label in pairs:
            phone = self.phones[self.numbers.index(listener)]
            if phone.wait_heard(self.labels, label, ms or self.talk_ms, since[self.numbers.index(listener)]) is None:
                self.missed.append((step, "%s did not hear %s" % (listener, label)))
                ok = False
        return ok

    def connect(self):
        """B calls A, A answers, and each hears the other: whether all that happened."""
        a, b, _c = self.phones
        A, B, _C = self.numbers
        marks = self.marks()
        b.command("!call " + A)
        a.wait_line("incoming call from " + B)
        a.command("!answer")
        return b.wait_line("connected") and self.hears("B calls A", [(A, B), (B, A)], marks)

    def blind(self):
        """A transfers B blind to C: (C rang, A's two calls ended "transferred")."""
        a, _b, c = self.phones
        A, _B, C = self.numbers
        a.command("!transfer " + C)
        rang = c.wait_line("incoming call from " + A)
        done = a.wait_line("other line ended: transferred") and a.wait_line("call ended: transferred")
        return rang, done

    def heard(self):
        """What each speaker played: the phones by their tones, the music, the call-waiting beep
        (440 Hz alone); ring-back (440 + 480 Hz, neither dominating) is no label and left out."""
        out = {}
        for n, phone in zip(self.numbers, self.phones):
            out[n] = []
            for label in frequencies_heard(phone.wav, self.labels):  # a gap (a busy machine) does not split a run
                if label not in ("quiet", "ringback") and (not out[n] or out[n][-1] != label):
                    out[n].append(label)
        return out

    def quit(self):
        for phone in self.phones:
            phone.quit()


def call_waiting(lab, seconds, numbers=NUMBERS, args_a=(), tag=None):
    """B calls A; C calls A, which hears the call-waiting beep, answers (B is held and hears the
    music), swaps back, hangs up on B and resumes C (the held line)."""
    run = _Three(lab, seconds, tag, numbers, args_a)
    a, b, c = run.phones
    A, B, C = numbers
    try:
        connected = run.connect()
        marks = run.marks()
        c.command("!call " + A)
        waiting = a.wait_line("call waiting from " + C)
        beep = a.wait_heard(run.labels, "waiting beep", 300, marks[0])      # one 500 ms beep over B's voice
        waiting = waiting and beep is not None and run.hears("beep", [(A, B)], [beep, 0, 0])
        marks = run.marks()
        a.command("!answer")                      # the waiting call: B is held
        answered = (a.wait_line("connected to %s (%s held)" % (C, B))
                    and run.hears("answer the waiting call", [(A, C), (C, A), (B, "music")], marks))
        marks = run.marks()
        a.command("!swap")
        swapped = (a.wait_line("connected to %s (%s held)" % (B, C))
                   and run.hears("swap", [(A, B), (B, A), (C, "music")], marks))
        a.command("!hangup")                      # B's call ends; C is left on hold
        left = a.wait_line("on hold " + C) and b.wait_line("call ended: normal clearing")
        marks = run.marks()
        a.command("!resume")
        resumed = a.wait_line("call resumed") and run.hears("resume", [(A, C), (C, A)], marks)
        a.command("!hangup")
        ended = c.wait_line("call ended: normal clearing")
    finally:
        run.quit()
    heard = run.heard()
    ok = (connected and waiting and answered and swapped and left and resumed and ended
          and heard[A] == [B, "waiting beep", B, C, B, C] and heard[B] == [A, "music", A] and heard[C] == [A, "music", A])
    return {"ok": ok, "calls": "%s -> %s, then %s -> %s (waiting)" % (B, A, C, A), "waiting_shown": waiting,
            "answered_waiting": answered, "swapped": swapped, "held_line_left": left, "resumed": resumed,
            "heard": heard, "missed": run.missed}


def transfer(lab, seconds, blind, numbers=NUMBERS, records=True, args_a=(), tag=None):
    """B calls A; A transfers B to C, blind (B hears the music while C rings) or after consulting C
    (A and C talk while B hears the music): B and C then talk, A's two calls end "transferred"."""
    run = _Three(lab, seconds, tag, numbers, args_a)
    a, b, c = run.phones
    A, B, C = numbers
    try:
        connected = run.connect()
        marks = run.marks()
        if blind:
            rang, done = run.blind()
            rang = rang and run.hears("B hears the music while C rings", [(B, "music")], marks)
            marks = run.marks()
            c.command("!answer")
        else:
            a.command("!consult " + C)
            rang = c.wait_line("incoming call from " + A)
            c.command("!answer")
            rang = (rang and a.wait_count("connected (", 2)     # the consultation is answered (the first call said it once)
                    and run.hears("consult", [(A, C), (C, A), (B, "music")], marks))
            marks = run.marks()
            a.command("!complete")
            done = a.wait_line("other line ended: transferred") and a.wait_line("call ended: transferred")
        told = (b.wait_line("now talking to " + C) and c.wait_line("now talking to " + B)
                and run.hears("B and C talk", [(B, C), (C, B)], marks))
        b.command("!hangup")
        ended = c.wait_line("call ended: normal clearing")
    finally:
        run.quit()
    heard = run.heard()
    ok = (connected and rang and done and told and ended and heard[B] == [A, "music", C]
          and heard[C] == ([B] if blind else [A, B]) and heard[A] == ([B] if blind else [B, C]))
    out = {"ok": ok, "call": "%s -> %s, transferred by %s to %s" % (B, A, A, C), "transferred": done,
           "parties_told": told, "heard": heard, "missed": run.missed}
    if records:
        out["records"] = _linked_records(lab)
        out["ok"] = ok and out["records"]["linked"]
    return out


def _linked_records(lab):
    """The call records of the transfer (the main host's table, newest first): the record of the
    first call, and every record linked to it (docs/features.md, Records)."""
    deadline = time.time() + WAIT_S
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
    run = _Three(lab, seconds, tag, numbers)
    a, b, c = run.phones
    A, B, C = numbers
    recall = "incoming call from %s recall: %s no answer" % (B, C)
    try:
        connected = run.connect()
        marks = run.marks()
        started = time.time()
        rang, done = run.blind()
        recalled = a.wait_line(recall)
        waited_s = round(time.time() - started, 1)
        c_stopped = c.wait_line("call ended: no answer")
        heard_music = run.hears("B hears the music while A rings again", [(B, "music")], marks, ms=run.talk_ms // 2)
        marks = run.marks()
        a.command("!answer")
        told = b.wait_line("now talking to " + A) and run.hears("A answers the recall", [(A, B), (B, A)], marks)
        b.command("!hangup")
        ended = a.wait_line("call ended: normal clearing")
    finally:
        run.quit()
    heard = run.heard()
    ok = (connected and rang and done and recalled and c_stopped and heard_music and told and ended
          and heard[B] == [A, "music", A] and heard[A] == [B] and heard[C] == [])
    return {"ok": ok, "call": "%s -> %s, transferred blind by %s to %s, not answered" % (B, A, A, C),
            "recall_display": recall if recalled else None, "recalled_after_s": waited_s,
            "new_party_stopped": c_stopped, "parties_told": told, "heard": heard, "missed": run.missed}


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
