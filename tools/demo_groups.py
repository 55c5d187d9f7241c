"""`upbx demo features`' scenarios for groups (docs/features.md, "Groups"): ring_group, hunt_group,
pickup and paging, with firmware phones (the MicroPython unix port) and real host daemons.

Every phone sends its own tone (`--send tone:HZ`); what each speaker played is read back from its
recording 100 ms at a time (tools/lab.py frequencies_heard), so "who heard whom" is evidence.
"""
import json
import time

from upbx.tools.lab import frequencies_heard

WAIT_S = 60      # the most a wait for a state may take (tools/demo_features.py's, which imports this module)
TONE_HZ = {"101": 1000, "102": 1400, "103": 1600, "201": 1800, "202": 2000, "301": 2200, "302": 2600}
LABELS = {number: (hz,) for number, hz in TONE_HZ.items()}


def _phones(lab, tag, numbers):
    from upbx.tools.demo_features import ConsolePhone     # demo_features imports this module
    phones = {}
    try:
        for n in numbers:
            phones[n] = ConsolePhone(lab, n, "%s-%s" % (tag, n), "--send", "tone:%d" % TONE_HZ[n])
    except BaseException:
        _quit(phones)
        raise
    return phones


def _quit(phones):
    for phone in phones.values():
        phone.quit()


def heard(phone):
    """The phones whose tone phone's speaker played, in order (silence left out)."""
    return [label for label in frequencies_heard(phone.wav, LABELS) if label != "quiet"]


def _record(lab, caller):
    """The newest call record of caller (the group call's), waited for (WAIT_S at most)."""
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        for record in json.loads(lab.admin("calls", "--json", "--limit", "5")):
            if record["caller"] == caller:
                return {k: record[k] for k in ("caller", "callee", "path", "cause")}
        time.sleep(0.2)
    return None


def _talk(phones, pairs, seconds, missed, step="talk"):
    """Wait until each (listener, talker) pair's speaker played the talker's tone for `seconds`
    since now (the marks taken here): True when all did; the others are named in missed."""
    marks = {n: p.mark() for n, p in phones.items()}
    ok = True
    for listener, talker in pairs:
        if phones[listener].wait_heard(LABELS, talker, int(seconds * 1000), marks[listener]) is None:
            missed.append((step, "%s did not hear %s" % (listener, talker)))
            ok = False
    return ok


def ring_group(lab, seconds):
    """Group 600 rings 102 (site A), 201 (site B) and 301 (main host) at once: 101 calls it, all
    three ring, 201 answers; 102 and 301 stop with "answered elsewhere"; 101 hears 201's tone and
    201 hears 101's, nobody else hears anything."""
    lab.admin("group", "add", "600", "--members", "102,201,301", "--strategy", "ring-all")
    lab.wait_sites_current()
    phones, missed = _phones(lab, "ring", ("101", "102", "201", "301")), []
    try:
        phones["101"].command("!call 600")
        rang = {n: phones[n].wait_line("incoming call from 101") for n in ("102", "201", "301")}
        phones["201"].command("!answer")
        connected = phones["101"].wait_line("connected")
        stopped = {n: phones[n].wait_line("call ended: answered elsewhere") for n in ("102", "301")}
        connected = connected and _talk(phones, [("101", "201"), ("201", "101")], seconds, missed)
        phones["101"].command("!hangup")
        ended = phones["201"].wait_line("call ended: normal clearing")
    finally:
        _quit(phones)
    who = {n: heard(phones[n]) for n in phones}
    ok = (all(rang.values()) and connected and all(stopped.values()) and ended and who["101"] == ["201"]
          and who["201"] == ["101"] and who["102"] == [] and who["301"] == [])
    return {"ok": ok, "group": "600 ring-all 102,201,301", "rang": rang, "answered_by": "201",
            "others_stopped": stopped, "heard": who, "record": _record(lab, "101"), "missed": missed}


def hunt_group(lab, seconds):
    """Group 610 hunts 301 then 102, 3 s each: 201 calls it; 301 rings and stops with "no answer"
    after 3 s, then 102 rings and answers; 201 and 102 hear each other's tones."""
    lab.admin("group", "add", "610", "--members", "301,102", "--strategy", "hunt", "--ring-s", "3")
    lab.wait_sites_current()
    phones, missed = _phones(lab, "hunt", ("201", "301", "102")), []
    try:
        phones["201"].command("!call 610")
        first = phones["301"].wait_line("incoming call from 201")
        started = time.time()
        second = phones["102"].wait_line("incoming call from 201")
        after_s = round(time.time() - started, 1)
        first_stopped = phones["301"].wait_line("call ended: no answer")
        phones["102"].command("!answer")
        connected = (phones["201"].wait_line("connected")
                     and _talk(phones, [("201", "102"), ("102", "201")], seconds, missed))
        phones["201"].command("!hangup")
        ended = phones["102"].wait_line("call ended: normal clearing")
    finally:
        _quit(phones)
    who = {n: heard(phones[n]) for n in phones}
    ok = (first and second and first_stopped and connected and ended and who["201"] == ["102"]
          and who["102"] == ["201"] and who["301"] == [])
    return {"ok": ok, "group": "610 hunt 301,102 3 s each", "first_rang": first, "first_stopped": first_stopped,
            "second_rang_after_s": after_s, "heard": who, "record": _record(lab, "201"), "missed": missed}


def pickup(lab, seconds):
    """301 calls 101, which rings and is not answered; 102 (same site) gives `!pickup` (*8): 101
    stops with "picked up", 102 is connected to 301 and they hear each other's tones."""
    phones, missed = _phones(lab, "pickup", ("301", "101", "102")), []
    try:
        phones["301"].command("!call 101")
        rang = phones["101"].wait_line("incoming call from 301")
        phones["102"].command("!pickup")
        picked = phones["102"].wait_line("connected")
        stopped = phones["101"].wait_line("call ended: picked up")
        picked = picked and _talk(phones, [("301", "102"), ("102", "301")], seconds, missed)
        phones["301"].command("!hangup")
        ended = phones["102"].wait_line("call ended: normal clearing")
    finally:
        _quit(phones)
    who = {n: heard(phones[n]) for n in phones}
    ok = rang and picked and stopped and ended and who["301"] == ["102"] and who["102"] == ["301"] and who["101"] == []
    return {"ok": ok, "rang": rang, "picked_up_by": "102" if picked else None, "rung_phone_stopped": stopped,
            "heard": who, "record": _record(lab, "301"), "missed": missed}


def directed_pickup(lab, seconds):
    """301 calls 101 and then 201 calls 103 (both site A), neither answered; 102 gives `!pickup 103`
    (**103): 103 stops with "picked up", 102 talks with 201 (each hears the other's tone), and 101,
    which rang first (`!pickup` would have taken its call), goes on ringing. 103 is added to site A
    for it (`upbx admin ext add`), if the lab has no 103."""
    if "103" not in lab.secrets:
        lab.secrets["103"] = lab.admin("ext", "add", "103", "--site", "a", "--name", "Phone 103")
        lab.phone_site["103"] = "a"
        lab.wait_sites_current()
    phones, missed = _phones(lab, "dpickup", ("301", "101", "201", "103", "102")), []
    try:
        phones["301"].command("!call 101")
        rang_first = phones["101"].wait_line("incoming call from 301")
        phones["201"].command("!call 103")
        rang = phones["103"].wait_line("incoming call from 201")
        phones["102"].command("!pickup 103")
        picked = phones["102"].wait_line("connected")
        stopped = phones["103"].wait_line("call ended: picked up")
        picked = picked and _talk(phones, [("201", "102"), ("102", "201")], seconds, missed)
        still_ringing = "call ended" not in phones["101"].log()
        phones["201"].command("!hangup")
        ended = phones["102"].wait_line("call ended: normal clearing")
        phones["301"].command("!hangup")
    finally:
        _quit(phones)
    who = {n: heard(phones[n]) for n in phones}
    ok = (rang_first and rang and picked and stopped and ended and still_ringing and who["201"] == ["102"]
          and who["102"] == ["201"] and who["103"] == [] and who["101"] == [])
    return {"ok": ok, "ringing": ["101 (from 301, first)", "103 (from 201)"], "command": "!pickup 103",
            "picked_up_by": "102" if picked else None, "named_phone_stopped": stopped,
            "first_call_still_ringing": still_ringing, "heard": who, "record": _record(lab, "201"), "missed": missed}


def paging(lab, seconds):
    """Page group 700 of site A: 101 pages, 102 answers by itself with its microphone muted and
    plays 101's tone; 101 hears nothing back; the main host receives no media while it lasts
    (the page is switched on the LAN by site A's remote host)."""
    lab.admin("group", "add", "700", "--strategy", "page", "--site", "a")
    lab.wait_sites_current()
    phones, missed = _phones(lab, "page", ("101", "102")), []
    try:
        before = lab.media_counters()
        phones["101"].command("!call 700")
        answered = phones["102"].wait_line("connected")
        connected = phones["101"].wait_line("connected")
        answered = answered and _talk(phones, [("102", "101")], max(2.0, seconds), missed)
        phones["101"].command("!hangup")
        ended = phones["102"].wait_line("call ended: normal clearing")
        after = lab.media_counters()
    finally:
        _quit(phones)
    who = {n: heard(phones[n]) for n in phones}
    at_hosts = {k: after[k] - before.get(k, 0) for k in after}
    ok = (answered and connected and ended and who["102"] == ["101"] and who["101"] == []
          and at_hosts.get("main") == 0 and at_hosts.get("site-a", 0) > 0)
    return {"ok": ok, "group": "700 page site a", "answered_by_itself": answered, "heard": who,
            "media_frames_at_hosts": at_hosts, "record": _record(lab, "101"), "missed": missed}


SCENARIOS = {"ring_group": ring_group, "hunt_group": hunt_group, "pickup": pickup, "paging": paging,
             "directed_pickup": directed_pickup}
