"""Call waiting and transfer with firmware phones (the MicroPython unix port) and real daemons
(`upbx demo features`' scenarios, tools/calls_demo.py): what each phone's speaker played,
found by Goertzel on its recording (every phone sends its own tone), what the phones showed,
the linked call records; the keypad; and, in the network lab, a site's own phones while the
main host is unreachable (B4). tests/test_lines.py covers the host logic frame by frame.
"""
import json
import os

import pytest

from tests.support import require_root
from upbx.common import wire
from upbx.tools import calls_demo
from upbx.tools.demo_features import ConsolePhone, run_features
from upbx.tools.impair import Relay
from upbx.tools.lab import LoopbackExchange, place_call


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=20) as lab:
        lab.provision()
        lab.start()
        yield lab


@pytest.mark.timeout(900)     # scenarios that wait for states, however slow the machine (and the lab's start)
def test_demo_scenarios_call_waiting_blind_and_attended_transfer(lab):
    results = {r["name"]: r for r in run_features(lab, 2.0, ("call_waiting", "blind_transfer", "attended_transfer"))}
    waiting = results["call_waiting"]
    assert waiting["ok"] is True, json.dumps(waiting)
    # 101 talks to 301, hears the beep over it, talks to 201 (301 hears the music), back to 301 ...
    assert waiting["heard"] == {"101": ["301", "waiting beep", "301", "201", "301", "201"],
                                "301": ["101", "music", "101"], "201": ["101", "music", "101"]}, waiting
    for name in ("blind_transfer", "attended_transfer"):
        result = results[name]
        assert result["ok"] is True, json.dumps(result)
        heard = result["heard"]
        assert heard["301"] == ["101", "music", "201"], result        # after the transfer 301 hears 201 ...
        assert heard["201"][-1] == "301", result                       # ... and 201 hears 301
        assert "201" not in heard["101"][:1] and heard["101"][-1] in ("301", "201"), result
        records = result["records"]
        assert records["first"]["cause"] == "transferred" and records["linked_to_it"], records
        assert all(r["linked"] == records["first"]["uid"] for r in records["linked_to_it"]), records
    assert results["blind_transfer"]["heard"]["101"] == ["301"]            # 101 never heard 201
    assert results["attended_transfer"]["heard"]["201"] == ["101", "301"]  # consulted first


def test_keys_answer_swap_and_reject_a_waiting_call_and_transfer_from_the_keypad(lab):
    a = ConsolePhone(lab, "102", "keys-102")
    b = ConsolePhone(lab, "302", "keys-302")
    c = ConsolePhone(lab, "202", "keys-202")
    try:
        b.command("!call 102")
        assert a.wait_line("incoming call from 302")
        a.command("A")
        assert b.wait_line("connected")
        c.command("!call 102")
        assert a.wait_line("call waiting from 202") and a.wait_line("I display waiting 202")
        a.command("D")                                   # rejected while it rings: 202 hears busy
        assert c.wait_line("call ended: busy") and a.wait_line("waiting call rejected")
        c.command("!call 102")
        assert a.wait_count("call waiting from 202", 2)
        a.command("A")                                   # answered: 302 held
        assert a.wait_line("connected to 202 (302 held)")
        a.command("B")
        assert a.wait_line("connected to 302 (202 held)")
        for key in ("C", "#"):                           # C #: transfer 202 (held) to 302
            a.command(key)
        assert a.wait_line("other line ended: transferred") and a.wait_line("call ended: transferred")
        assert b.wait_line("now talking to 202") and c.wait_line("now talking to 302")
        b.command("!hangup")
        assert c.wait_line("call ended: normal clearing")
    finally:
        for phone in (a, b, c):
            phone.quit()


class FirstRelease:
    """A relay's chosen loss (tools/impair.py, drop_down): the first RELEASE to the phone once armed (a full
    frame's type is in its clear header)."""

    def __init__(self):
        self.armed = False
        self.lost = 0

    def __call__(self, data):
        if (self.armed and not self.lost and wire.frame_kind(data) == wire.KIND_FULL
                and wire.parse_full(data)[3] == wire.RELEASE):
            self.lost = 1
            return True
        return False


def test_both_lines_ending_in_one_batch_of_events_after_a_transfer_and_the_phone_carries_on(lab):
    """302 (the firmware, behind a relay that loses the first RELEASE sent to it) talks to 101 with 301 held
    and transfers 301 to 101 (C #). The host ends the held line first, then the current one; the first
    RELEASE lost, the second waits in 302's reliable channel until the first is sent again, and both are
    delivered at once: one batch of events, the held line's end handled after the current call ended too
    (phone.call None). 302 logs both ends and carries on (it crashed: firmware/lines.py, ended)."""
    lose = FirstRelease()
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", lab.main_port), drop_down=lose)
    relay.start()
    b = c = x = None
    try:
        b = ConsolePhone(lab, "301", "batch-301")
        c = ConsolePhone(lab, "101", "batch-101")
        x = ConsolePhone(lab, "302", "batch-302", "--host", "127.0.0.1:%d" % relay.address[1])
        b.command("!call 302")
        assert x.wait_line("incoming call from 301")
        x.command("A")
        assert b.wait_line("I phone connected")
        c.command("!call 302")
        assert x.wait_line("call waiting from 101")
        x.command("A")                                   # 101 answered, 301 held
        assert x.wait_line("connected to 101 (301 held)")
        lose.armed = True
        for key in ("C", "#"):
            x.command(key)
        assert b.wait_line("now talking to 101") and c.wait_line("now talking to 301")
        assert x.wait_line("I phone call ended: transferred"), x.log()[-2000:]
        log = x.log()
        assert lose.lost == 1 and relay.counters["down"]["dropped"] == 1
        assert log.index("I phone other line ended: transferred") < log.index("I phone call ended: transferred")
        assert "crashed" not in log and "Traceback" not in log, log[-2000:]
        x.command("!call 301")                           # it carries on: 301 (talking to 101) has call waiting
        assert x.wait_line("I phone dialing 301") and b.wait_line("call waiting from 302")
        x.command("D")
        assert b.wait_line("other line ended: normal clearing")
        x.command("!quit")
        assert x.proc.wait(10) == 0
        summary = lab.summary("batch-302")
        assert [call["cause"] for call in summary["calls"]] == ["transferred", "transferred", "normal clearing"]
        assert summary["events_held"] == 0
    finally:
        for phone in (b, c, x):
            if phone is not None and phone.proc.poll() is None:
                phone.quit()
        relay.stop()
        relay.close()


def _netlab_prefix():
    return "upxc%s-" % os.urandom(2).hex()


@pytest.mark.timeout(1200)   # four scenarios and a restart: each waits for states, however slow the machine
def test_netlab_a_transfer_through_nat_and_b4_call_waiting_and_transfer_without_the_main_host():
    """In the network lab (namespaces, NAT routers): a call from site B transferred to a site A
    phone through the routers; then the main host is killed, and site A's remote host
    switches call waiting, a blind and an attended transfer among 101, 102 and 103 from its cache,
    and its records of them (linked) reach the main host once it is back."""
    require_root()
    from upbx.tools.netlab import Lab
    from upbx.tools.netlab_exchange import NetlabExchange
    net = Lab(_netlab_prefix())
    try:
        net.up(nat="cone", phones=3)
        with NetlabExchange(net, keepalive_s=2, ring_timeout_s=20) as ex:
            ex.provision(phones={"a": ["101", "102", "103"], "b": ["201"], "c": ["301"]})
            ex.start()
            # through the NAT routers first: a call from site B transferred blind to a site A phone
            cross = calls_demo.transfer(ex, 2.0, True, numbers=("101", "201", "102"), records=False)
            assert cross["ok"] is True, json.dumps(cross)
            assert cross["heard"]["201"] == ["101", "music", "102"] and cross["heard"]["102"] == ["201"]
            ex.wait_for(lambda: ex.status("site-a")["records_pending"] == 0, "site a's records uploaded")
            ex.kill("main")
            ex.wait_for(lambda: ex.status("site-a")["main"]["state"] != "up", "site a noticed", timeout=20)
            site = ("101", "102", "103")
            waiting = calls_demo.call_waiting(ex, 2.0, numbers=site)
            assert waiting["ok"] is True, json.dumps(waiting)
            blind = calls_demo.transfer(ex, 2.0, True, numbers=site, records=False)
            assert blind["ok"] is True, json.dumps(blind)
            attended = calls_demo.transfer(ex, 2.0, False, numbers=site, records=False)
            assert attended["ok"] is True, json.dumps(attended)
            assert blind["heard"]["102"] == ["101", "music", "103"] and attended["heard"]["103"] == ["101", "102"]
            pending = ex.status("site-a")["records_pending"]
            assert pending == 8, pending        # every leg of the three scenarios (2 + 3 + 3), kept for later
            ex.restart("main", wait=False)
            ex.wait_for(lambda: ex.status("site-a")["records_pending"] == 0, "records uploaded", timeout=90)
            rows = json.loads(ex.admin("calls", "--json", "--limit", "20"))
            firsts = {r["uid"] for r in rows if r["origin"] == "site-a" and r["cause"] == "transferred"
                      and r["linked"] is None}
            joined = [r for r in rows if r["linked"] in firsts and r["cause"] == "normal clearing"]
            assert sorted((r["caller"], r["callee"]) for r in joined) == [("102", "103"), ("102", "103")], rows
            assert all(r["path"] == "local" for r in joined)
    finally:
        net.down()


def test_call_waiting_off_from_the_console_a_second_caller_hears_busy(lab):
    a = ConsolePhone(lab, "102", "cwoff-102")
    b = ConsolePhone(lab, "302", "cwoff-302")
    try:
        a.command("!waiting off")
        assert a.wait_line("I display feature off *71")
        lab.wait_for(lambda: json.loads(lab.admin("ext", "features", "102", "--json"))["waiting"] is False,
                     "the main host has 102's setting", timeout=10)
        b.command("!call 102")
        assert a.wait_line("incoming call from 302")
        a.command("!answer")
        assert b.wait_line("connected")
        row = place_call(lab, "202", "102", "cwoff", 1.0, callee_phone=False)
        assert row["cause"] == "busy" and "call waiting" not in a.log()
        a.command("!hangup")
        assert b.wait_line("call ended: normal clearing")
        a.command("!waiting on")
        assert a.wait_line("I display feature on *70")
    finally:
        a.quit()
        b.quit()


def test_the_main_hosts_phone_transfers_a_call_between_two_sites(lab):
    """301 (at the main host) answers 101 (site A), consults 201 (site B) and completes: the main
    host joins two remote hosts' calls; 101 and 201 then talk (relayed), the records linked."""
    result = calls_demo.transfer(lab, 2.0, False, numbers=("301", "101", "201"))
    assert result["ok"] is True, json.dumps(result)
    assert result["heard"] == {"301": ["101", "201"], "101": ["301", "music", "201"], "201": ["301", "101"]}, result
    joined = [r for r in result["records"]["linked_to_it"] if r["cause"] == "normal clearing"]
    assert [(r["caller"], r["callee"], r["path"]) for r in joined] == [("101", "201", "relay")], result


def test_a_call_between_sites_transferred_blind_to_a_phone_of_the_site_keeps_its_path(lab):
    """201 (site B) calls 101 (site A), direct between the remote hosts (B2) once they punched a
    path, else relayed; 101 transfers it blind to 102 (site A): site A's host joins them, 201's
    media keeps its path, and 102 (whose blind-transfer call was phone to phone) gets a key for
    media through its host."""
    result = calls_demo.transfer(lab, 2.0, True, numbers=("101", "201", "102"))
    assert result["ok"] is True, json.dumps(result)
    assert result["heard"] == {"101": ["201"], "201": ["101", "music", "102"], "102": ["201"]}, result
    rows = [result["records"]["first"]] + result["records"]["linked_to_it"]
    path = rows[0]["path"]          # "direct" unless a busy machine let the punch time out
    assert path in ("direct", "relay")
    assert sorted((r["origin"], r["caller"], r["callee"], r["path"], r["cause"]) for r in rows) == [
        ("main", "201", "101", path, "transferred"), ("main", "201", "102", path, "normal clearing"),
        ("site-a", "101", "102", "local", "transferred")], rows


@pytest.mark.timeout(900)     # scenarios that wait for states, however slow the machine (and the lab's start)
def test_two_lines_fit_a_64k_heap_with_the_frozen_image(lab, unix32_frozen):
    """Phone A on the 32-bit port with upbx frozen in and a 64 KB heap (an ESP32 without PSRAM):
    call waiting (two calls' keys and buffers at once) and an attended transfer work, and its
    heap's live peak stays within the limit tests/test_handset32.py sets for one call."""
    from tests.test_handset32 import FROZEN_LIVE_LIMIT
    args = ("--micropython", unix32_frozen, "--heapsize", "64K")
    waiting = calls_demo.call_waiting(lab, 2.0, args_a=args, tag="cw64")
    assert waiting["ok"] is True, json.dumps(waiting)
    heap = lab.summary("cw64-101")["heap"]
    attended = calls_demo.transfer(lab, 2.0, False, records=False, args_a=args, tag="at64")
    assert attended["ok"] is True, json.dumps(attended)
    heaps = [heap, lab.summary("at64-101")["heap"]]
    print("64K frozen, live heap peaks: call waiting %d, attended transfer %d" % tuple(h["peak_live"] for h in heaps))
    assert all(h["total"] <= 64 * 1024 and h["peak_live"] <= FROZEN_LIVE_LIMIT for h in heaps), heaps


def test_firmware_phones_hear_each_other_after_the_held_line_waited_longer_than_a_timestamps_reach(lab):
    """docs/features.md "A hold of any length": a phone's timestamps go on in the call it talks on, so its held
    line's jumped by as long as it was held, and nothing went either way there. 101 (1000 Hz) calls 301 (1400
    Hz); 34 s in, 201 (1800 Hz) calls and 101 answers it (301 held) for 34 s, then swaps back: 101 and 301 hear
    each other again (until session 23 neither did, for good). The firmware sends comfort noise on its held line
    each second (firmware/app.py capture)."""
    from upbx.host.moh import NOTES_HZ
    labels = {"101": (1000,), "301": (1400,), "201": (1800,), "music": NOTES_HZ}
    a = ConsolePhone(lab, "101", "longswap-101", "--send", "tone:1000")
    b = ConsolePhone(lab, "301", "longswap-301", "--send", "tone:1400")
    c = ConsolePhone(lab, "201", "longswap-201", "--send", "tone:1800")
    try:
        a.command("!call 301")
        assert b.wait_line("incoming call from 101")
        b.command("!answer")
        assert a.wait_line("connected") and b.wait_heard(labels, "101", 1000) is not None
        assert a.wait_played(34000, timeout=240)
        c.command("!call 101")
        assert a.wait_line("call waiting from 201")
        a.command("A")                                   # answered: 301 held
        assert a.wait_line("connected to 201 (301 held)") and c.wait_heard(labels, "101", 1000) is not None
        assert a.wait_played(34000, timeout=240)
        marks = a.mark(), b.mark()
        a.command("B")                                   # back to 301 after 34 s
        assert a.wait_line("connected to 301 (201 held)")
        assert a.wait_heard(labels, "301", 1000, marks[0]) is not None
        assert b.wait_heard(labels, "101", 1000, marks[1]) is not None
        a.command("!hangup")
        assert b.wait_line("call ended: normal clearing")
    finally:
        for phone in (a, b, c):
            phone.quit()
