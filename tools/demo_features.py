"""`upbx demo features [--json]`: one scenario per call feature of issue 12 (docs/features.md),
with real firmware phones (the MicroPython unix port) and real host daemons on loopback.

Each feature reports whether it worked and the evidence: the causes the phones showed, the
call-progress tones the caller's speaker played (Goertzel on its recording), whether the
audio sent arrived where the call was forwarded. A feature not built yet reports
{"ok": false, "error": "not built yet"}: nothing here is a pass that was not seen.
"""
import json
import os
import signal
import subprocess
import time

from upbx.host.moh import NOTES_HZ
from upbx.tools.demo_conference import conference
from upbx.tools.lab import TONE_WINDOW, LoopbackExchange, frequencies_heard, frequency_label, place_call, tones_heard

RECALL_S = 8          # the demo's sites recall a blind transfer sooner than the default 20 s

# the names issue 12 lists, in its order
FEATURES = ("hold", "call_waiting", "blind_transfer", "attended_transfer", "forward_always", "forward_busy",
            "forward_no_answer", "dnd", "ring_group", "hunt_group", "pickup", "conference", "voicemail",
            "message_waiting", "paging", "auto_attendant")
EXTRA = ("transfer_recall", "directed_pickup", "transfer_via_main", "conference_via_main", "alaw",
         "voicemail_b4")   # voicemail_b4 kills the main host: last   # beyond issue 12's list: what docs/features.md built after it (run after those)


WAIT_S = 60      # the most any wait for a state may take: a bound a busy machine does not reach, never a pace
WAV_HEADER = 44


class ConsolePhone:
    """A virtual handset kept running, driven by console commands (its stdin), read by its log and
    by what its speaker has played so far (its recording grows as it plays: `wait_heard`)."""

    def __init__(self, lab, number, tag, *args):
        self.lab, self.number, self.tag = lab, number, tag
        self.wav = lab.path(tag + ".speaker.wav")
        self.proc = lab.phone(number, "--record", self.wav, *args, tag=tag)
        self.log_path = lab.path("phone-%s.log" % tag)
        self._windows = {}     # id(labels) -> (labels, [label of each 100 ms window read so far])
        lab.wait_registered(number, WAIT_S)

    def command(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_line(self, text, timeout=WAIT_S):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log():
                return True
            time.sleep(0.05)
        return False

    def wait_count(self, text, n, timeout=WAIT_S):
        """Whether text is in the phone's log n times within timeout seconds."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log().count(text) >= n:
                return True
            time.sleep(0.05)
        return False

    # the speaker, 100 ms windows of its recording (TONE_WINDOW samples), labelled as they are written

    def played_ms(self):
        """How much the speaker has played so far (its recording's length)."""
        try:
            return max(0, os.path.getsize(self.wav) - WAV_HEADER) // 16
        except OSError:
            return 0

    def mark(self):
        """The number of whole 100 ms windows the speaker has played: a later wait's `since`."""
        return self.played_ms() // 100

    def windows(self, labels):
        """The label of every whole 100 ms window played so far (labels: {name: (hz, ...)}, see
        tools/lab.py frequency_label; or a function of a window's bytes), read incrementally."""
        _labels, out = self._windows.setdefault(id(labels), (labels, []))   # kept: an id is not reused
        size = 2 * TONE_WINDOW
        try:
            with open(self.wav, "rb") as f:
                f.seek(WAV_HEADER + len(out) * size)
                data = f.read()
        except OSError:
            return out
        every = None if callable(labels) else sorted({hz for group in labels.values() for hz in group})
        for start in range(0, len(data) - size + 1, size):
            block = data[start:start + size]
            out.append(labels(block) if callable(labels) else frequency_label(block, labels, every))
        return out

    def wait_heard(self, labels, label, ms=1000, since=0, timeout=WAIT_S):
        """Wait until the speaker has played `label` for `ms` without a break (whole 100 ms windows
        after window `since`; one window no label dominates, such as the step between two notes of
        the music, neither counts nor breaks the run; two do): the window where that run ends (a
        later wait's `since`), or None when it did not within timeout seconds (it never came)."""
        need = max(1, ms // 100)
        deadline = time.time() + timeout
        while True:
            run = 0
            out = self.windows(labels)
            for i in range(since, len(out)):
                if out[i] == label:
                    run += 1
                elif out[i] is not None or (i > since and out[i - 1] is None):
                    run = 0
                if run >= need:
                    return i + 1
            if time.time() > deadline:
                return None
            time.sleep(0.1)

    def wait_played(self, ms, since_ms=None, timeout=WAIT_S):
        """Wait until the speaker has played ms more (since since_ms, default now): the phone's own
        clock, for a step that lasts a while whatever it plays (a prompt, a message)."""
        start = self.played_ms() if since_ms is None else since_ms
        deadline = time.time() + timeout
        while self.played_ms() < start + ms:
            if time.time() > deadline:
                return False
            time.sleep(0.05)
        return True

    def quit(self):
        self.command("!quit")
        try:
            self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _set(lab, number, command, tag, expect="feature on"):
    """number's phone gives a feature command on its console; True when its host said `expect`."""
    phone = ConsolePhone(lab, number, tag)
    try:
        phone.command(command)
        return phone.wait_line("call ended: " + expect)
    finally:
        phone.quit()


def _call_row(row):
    return {k: row.get(k) for k in ("from", "to", "cause", "path", "frames_sent", "frames_received",
                                    "audio_match")}


def dnd(lab, seconds):
    """102 sets do not disturb on its console: 101's call ends with "do not disturb" and a busy
    tone, 102 never rings; after `!dnd off` the same call connects with audio both ways checked."""
    phone = ConsolePhone(lab, "102", "dnd-console-102")
    try:
        phone.command("!dnd on")
        set_on = phone.wait_line("call ended: feature on")
        wav = lab.path("dnd-101.speaker.wav")
        refused = place_call(lab, "101", "102", "dnd", seconds, callee_phone=False, caller_args=("--record", wav))
        heard = tones_heard(wav)
        with open(lab.path("phone-dnd-101-102-caller.log")) as f:
            shown = [line[len("I display "):].strip() for line in f if line.startswith("I display ended")]
        rang = "incoming call" in phone.log()
        phone.command("!dnd off")
        set_off = phone.wait_line("call ended: feature off")
    finally:
        phone.quit()
    after = place_call(lab, "101", "102", "dnd-off", seconds)
    ok = (set_on and set_off and refused["cause"] == "do not disturb" and "busy" in heard and not rang
          and shown == ["ended: do not disturb"]
          and after["cause"] == "normal clearing" and after["audio_match"] is True)
    return {"ok": ok, "dnd_set": set_on, "refused": _call_row(refused), "caller_display": shown, "caller_heard": heard, "dnd_phone_rang": rang,
            "dnd_cleared": set_off, "after_dnd_off": _call_row(after)}


def forward_always(lab, seconds):
    """102 forwards always to 301 (site A -> a phone at the main host): 101 dials 102, 301 rings
    and answers, and the audio 101 sent arrives at 301; then `!forward off`."""
    set_on = _set(lab, "102", "!forward always 301", "fwd-set-102")
    row = place_call(lab, "101", "102", "forward_always", seconds, rings="301")
    set_off = _set(lab, "102", "!forward off", "fwd-off-102", expect="feature off")
    ok = set_on and set_off and row["cause"] == "normal clearing" and row["audio_match"] is True
    return {"ok": ok, "forward_set": set_on, "call": _call_row(row), "answered_by": "301", "forward_cleared": set_off}


def forward_busy(lab, seconds):
    """301 forwards on busy to 102 and is in a call with 302: 201 (site B) dials 301, 102 rings
    and answers with audio checked; then `!forward off`."""
    set_on = _set(lab, "301", "!forward busy 102", "fwdb-set-301")
    busy = ConsolePhone(lab, "302", "fwdb-302")
    other = ConsolePhone(lab, "301", "fwdb-301")
    try:
        busy.command("!call 301")
        other.wait_line("incoming call")
        other.command("!answer")
        in_call = other.wait_line("connected")
        row = place_call(lab, "201", "301", "forward_busy", seconds, rings="102")
    finally:
        busy.quit()
        other.quit()
    set_off = _set(lab, "301", "!forward off", "fwdb-off-301", expect="feature off")
    ok = set_on and in_call and set_off and row["cause"] == "normal clearing" and row["audio_match"] is True
    return {"ok": ok, "forward_set": set_on, "dialled_phone_busy": in_call, "call": _call_row(row),
            "answered_by": "102", "forward_cleared": set_off}


def forward_no_answer(lab, seconds):
    """102 forwards on no answer after 5 s to 301: 101 dials 102, which rings and is not
    answered; 5 s later 102 stops ringing ("no answer") and 301 rings, answers, and the audio
    101 sent arrives there; then `!forward off`."""
    set_on = _set(lab, "102", "!forward noanswer 301 5", "fwdn-set-102")
    phone = ConsolePhone(lab, "102", "fwdn-102")
    try:
        row = place_call(lab, "101", "102", "forward_no_answer", seconds, rings="301")
        rang = phone.wait_line("incoming call from 101", 1)
        stopped = phone.wait_line("call ended: no answer", 1)
    finally:
        phone.quit()
    set_off = _set(lab, "102", "!forward off", "fwdn-off-102", expect="feature off")
    ok = (set_on and rang and stopped and set_off and row["cause"] == "normal clearing"
          and row["audio_match"] is True)
    return {"ok": ok, "forward_set": set_on, "dialled_phone_rang": rang, "dialled_phone_stopped": stopped,
            "call": _call_row(row), "answered_by": "301", "forward_cleared": set_off}


def _inner(heard):
    """What was heard without the silence before and after the call."""
    heard = list(heard)
    while heard and heard[0] == "quiet":
        heard.pop(0)
    while heard and heard[-1] == "quiet":
        heard.pop()
    return heard


def after_ringback(heard):
    """What a caller heard from the answer on: the ringback before it (and the quiet between)
    dropped. A caller hears ringback for as long as the callee takes to answer, longer on a busy
    machine; at 440+480 Hz it would read as the music's 523 Hz note without a label of its own."""
    heard = list(heard)
    while heard and heard[0] in ("quiet", "ringback"):
        heard.pop(0)
    return heard


def hold(lab, seconds):
    """Hold on the three media paths: relayed through both hosts (101 -> 301), direct between the
    remote hosts of sites A and B (101 -> 201, B2) and phone to phone on the LAN (101 -> 102, B3),
    the music coming from site A's remote host each time."""
    paths = {"relay": _hold_once(lab, seconds, "101", "301"), "direct": _hold_once(lab, seconds, "101", "201"),
             "local": _hold_once(lab, seconds, "101", "102")}
    return dict({"ok": all(r["ok"] for r in paths.values())}, **paths)


def _hold_once(lab, seconds, caller, callee):
    """caller (sending a 1000 Hz tone) calls callee (sending 1400 Hz); after a while caller holds for
    3 s, then resumes. What each speaker played, 100 ms at a time: callee hears caller, then the
    host's music on hold (its notes), then caller again; caller hears callee, nothing while it
    holds, then callee."""
    held, holder, connected, held_ok, resumed, ended = hold_and_resume(lab, caller, callee, seconds, "hold")
    path = None   # the path the call took, from its record (a local call's comes from the remote host)
    deadline = time.time() + WAIT_S
    while path is None and time.time() < deadline:
        for record in json.loads(lab.admin("calls", "--json", "--limit", "3")):
            if (record["caller"], record["callee"]) == (caller, callee):
                path = record["path"]
                break
        else:
            time.sleep(0.2)
    held_heard = frequencies_heard(held.wav, HOLD_LABELS)
    holder_heard = frequencies_heard(holder.wav, HOLD_LABELS)
    ok = (connected and held_ok and resumed and ended
          and _inner(held_heard) in (["holder", "music", "holder"], ["holder", "quiet", "music", "holder"])
          and _inner(after_ringback(holder_heard)) == ["held party", "quiet", "held party"])
    return {"ok": ok, "call": "%s -> %s" % (caller, callee), "path": path, "held_party_heard": held_heard,
            "holder_heard": holder_heard, "held": held_ok, "resumed": resumed}


def hold_and_resume(lab, caller, callee, seconds, tag, callee_args=()):
    """caller (1000 Hz) calls callee (1400 Hz, with callee_args); once each has heard the other a
    while it holds callee until callee has heard the music 1.5 s (and caller silence), resumes,
    and hangs up once both hear each other again: (callee's phone, caller's phone, connected,
    held, resumed, ended); held and resumed are False when the audio asked for never came."""
    held = ConsolePhone(lab, callee, "%s-%s-%s" % (tag, callee, caller), "--send", "tone:1400", *callee_args)
    holder = ConsolePhone(lab, caller, "%s-%s-%s" % (tag, caller, callee), "--send", "tone:1000")
    labels = HOLD_LABELS
    talk_ms = int(max(1.0, seconds / 2) * 1000)
    try:
        holder.command("!call " + callee)
        held.wait_line("incoming call")
        held.command("!answer")
        connected = (holder.wait_line("connected") and held.wait_heard(labels, "holder", talk_ms) is not None
                     and holder.wait_heard(labels, "held party", talk_ms) is not None)
        marks = held.mark(), holder.mark()
        holder.command("!hold")
        held_ok = (holder.wait_line("call held") and held.wait_heard(labels, "music", 1500, marks[0]) is not None
                   and holder.wait_heard(labels, "quiet", 1000, marks[1]) is not None)
        marks = held.mark(), holder.mark()
        holder.command("!resume")
        resumed = (holder.wait_line("call resumed") and held.wait_heard(labels, "holder", talk_ms, marks[0]) is not None
                   and holder.wait_heard(labels, "held party", talk_ms, marks[1]) is not None)
        holder.command("!hangup")
        ended = held.wait_line("call ended: normal clearing")
    finally:
        holder.quit()
        held.quit()
    return held, holder, connected, held_ok, resumed, ended


# ringback (440 + 480 Hz) by its 480 Hz: both at once dominate no single frequency
HOLD_LABELS = {"holder": (1000,), "held party": (1400,), "music": NOTES_HZ, "ringback": (480,)}


def call_waiting(lab, seconds):
    """(tools/calls_demo.py) 301 (sending 1400 Hz) calls 101 (1000 Hz);
    201 (1800 Hz) calls 101, which hears the call-waiting beep, answers (301 is held and hears
    the music), swaps back, hangs up on 301 and resumes 201 (the held line)."""
    from upbx.tools import calls_demo
    return calls_demo.call_waiting(lab, seconds)


def blind_transfer(lab, seconds):
    """101 (site A) in a call with 301 transfers it to 201 (site B) blind: 301 hears 101, the music
    while 201 rings, then 201; 201 hears 301; the records link the new call to the first."""
    from upbx.tools import calls_demo
    return calls_demo.transfer(lab, seconds, blind=True)


def attended_transfer(lab, seconds):
    """101 in a call with 301 consults 201 (301 hears the music, 101 and 201 talk), then completes:
    301 and 201 talk; 101's two calls end "transferred"."""
    from upbx.tools import calls_demo
    return calls_demo.transfer(lab, seconds, blind=False)


def alaw(lab, seconds):
    """An A-law phone hears music on hold and a conference's mix (tools/demo_alaw.py)."""
    from upbx.tools.demo_alaw import alaw as scenario
    return scenario(lab, seconds)


def voicemail_b4(lab, seconds):
    """The site's copy of its mailboxes while the main host is down (tools/demo_voicemail_b4.py)."""
    from upbx.tools.demo_voicemail_b4 import voicemail_b4 as scenario
    return scenario(lab, seconds)


def transfer_via_main(lab, seconds):
    """101 (site A) transfers 301 to 302, both at the main host: the main host joins them."""
    from upbx.tools import calls_demo
    return calls_demo.transfer_via_main(lab, seconds)


def conference_via_main(lab, seconds):
    """101 (site A) with 301 and 302 (both at the main host): the main host mixes, one stream each
    way over site A's uplink (tools/demo_conference.py)."""
    from upbx.tools.demo_conference import three_way
    result = three_way(lab, seconds, "101", "301", "302", "main", "relay", tag="conf-via-main")
    handed = lab.status("site-a")["stats"]["counters"].get("conferences handed to the main host", 0)
    result["handed_to_main_host"] = handed
    result["ok"] = result["ok"] and handed >= 1
    return result


def transfer_recall(lab, seconds):
    """301 calls 101, which transfers it blind to 201; 201 does not answer: 101 rings again (recall)."""
    from upbx.tools import calls_demo
    return calls_demo.transfer_recall(lab, seconds)


SCENARIOS = {"call_waiting": call_waiting, "blind_transfer": blind_transfer, "attended_transfer": attended_transfer,
             "hold": hold, "dnd": dnd, "forward_always": forward_always, "forward_busy": forward_busy,
             "forward_no_answer": forward_no_answer, "conference": conference, "transfer_recall": transfer_recall, "transfer_via_main": transfer_via_main,
             "conference_via_main": conference_via_main,
             "alaw": alaw, "voicemail_b4": voicemail_b4}

from upbx.tools.demo_groups import SCENARIOS as _GROUPS   # noqa: E402  ring_group, hunt_group, pickup, paging
SCENARIOS.update(_GROUPS)


def _scenario(name):
    from upbx.tools import demo_voicemail   # voicemail, message_waiting, auto_attendant
    return SCENARIOS.get(name) or demo_voicemail.SCENARIOS.get(name)


def run_features(lab, seconds=2.0, names=FEATURES + EXTRA):
    out = []
    for name in names:
        scenario = _scenario(name)
        if scenario is None:
            out.append({"name": name, "ok": False, "error": "not built yet"})
            continue
        try:
            result = scenario(lab, seconds)
        except Exception as exc:     # one scenario failing is its own result, not the demo's end
            result = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
        out.append(dict({"name": name}, **result))
    return out


def run(args, phone_args=()):
    import shutil
    import sys
    print("starting main host, remote hosts for sites A and B, phones at sites A, B, C ...", file=sys.stderr)
    lab = LoopbackExchange(phone_args=phone_args, ring_timeout_s=20, remote_settings={"transfer_recall_s": RECALL_S,
                                                                                     "keepalive_s": 3})
    try:
        lab.provision()
        lab.start()
        results = run_features(lab, args.seconds)
    finally:
        lab.close()
        if not args.keep:
            shutil.rmtree(lab.dir, ignore_errors=True)
    if args.json:
        print(json.dumps({"features": results}))
    else:
        for r in results:
            evidence = r.get("error") or ", ".join("%s=%s" % (k, v) for k, v in r.items() if k not in ("name", "ok"))
            print("%-18s %-4s %s" % (r["name"], "ok" if r["ok"] else "NO", evidence))
        if args.keep:
            print("\nlogs and recordings: %s" % lab.dir)
    return 0 if all(r["ok"] for r in results if r.get("error") != "not built yet") else 1
