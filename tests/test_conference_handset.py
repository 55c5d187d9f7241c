"""Conference with firmware phones (the MicroPython unix port) and real daemons on loopback
(`upbx demo features`' conference scenario, tools/demo_conference.py): each phone sends its own
tone, and Goertzel on each phone's speaker recording shows it heard the other two together and
never itself; the keypad's `C N A` and `C *`; B4: a site's own conference with the main host's
daemon killed. tests/test_conference.py covers the mixing host frame by frame.
"""
import json

import pytest

from upbx.tools.demo_conference import conference, three_way
from upbx.tools.demo_features import ConsolePhone
from upbx.tools.lab import LoopbackExchange


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=20) as lab:
        lab.provision()
        lab.start()
        yield lab


def test_a_conference_mixed_by_site_as_remote_host_each_speaker_plays_the_other_two_and_never_itself(lab):
    result = conference(lab, 2.0)
    assert result["ok"] is True, json.dumps(result)   # whole: what was missed, who heard what
    assert result["mixed_by"] == "site-a" and sorted(result["conference"]["parties"]) == ["101", "102", "301"]
    for number, others in (("101", "102+301"), ("102", "101+301"), ("301", "101+102")):
        assert result["heard_both_others_ms"][number] >= 2000, result
        assert others in result["heard"][number], result
        assert result["own_tone_peak_share"][number] < 0.01, result
    assert result["heard"]["102"][:2] == ["101", "other"]  # before: the first call, then music on hold
    assert result["heard"]["102"][-1] == "101+301"         # ... then the conference until it hung up
    assert result["after_102_left"] == {"101": ["301"], "301": ["101"]}


def test_an_inter_site_conference_of_a_main_host_phone_is_mixed_by_the_main_host(lab):
    result = three_way(lab, 2.0, "301", "201", "302", "main", "relay", tag="conf-main")
    assert result["ok"] is True, json.dumps(result)   # whole: what was missed, who heard what
    assert sorted(result["conference"]["parties"]) == ["201", "301", "302"]


def test_a_conference_with_a_party_on_the_direct_path_between_remote_hosts(lab):
    """101's call to 201 runs straight between site A's and site B's remote hosts (B2): the mix for
    201 goes that way too."""
    before = lab.status("site-a")["trunk_bytes_by_peer"].get("site-b", 0)
    result = three_way(lab, 2.0, "101", "201", "102", "site-a", "local", tag="conf-b2")
    assert result["ok"] is True, json.dumps(result)   # whole: what was missed, who heard what
    # site A sent site B's remote host the mix for 201 straight, some 50 trunk frames a second
    assert lab.status("site-a")["trunk_bytes_by_peer"].get("site-b", 0) - before > 50 * 5 * 100
    assert sorted(result["conference"]["parties"]) == ["101", "102", "201"]


def test_the_keypad_c_n_a_calls_a_second_party_and_c_star_joins_them(lab):
    phones = {n: ConsolePhone(lab, n, "keys-conf-" + n) for n in ("202", "201", "302")}
    try:
        holder = phones["202"]
        holder.command("!call 201")
        assert phones["201"].wait_line("incoming call")
        phones["201"].command("!answer")
        assert holder.wait_line("connected")
        for key in "C302A":                                   # C N A: hold this call, call N (firmware/lines.py)
            holder.command(key)
        assert holder.wait_line("consulting 302")
        assert phones["302"].wait_line("incoming call")
        phones["302"].command("!answer")
        assert holder.wait_line("connected (relay)")
        holder.command("C")
        holder.command("*")                                   # C *: conference
        assert holder.wait_line("other line ended: joined conference") and holder.wait_line("I display conference")
        assert sorted(lab.status("site-b")["conferences"][0]["parties"]) == ["201", "202", "302"]
        phones["201"].command("!hangup")
        assert phones["201"].wait_line("call ended: normal clearing")
        lab.wait_for(lambda: sorted(lab.status("site-b")["conferences"][0]["parties"]) == ["202", "302"], "201 left")
        holder.command("D")
        assert phones["302"].wait_line("call ended: normal clearing")
        lab.wait_for(lambda: lab.status("site-b")["conferences"] == [], "the conference ended")
    finally:
        for phone in phones.values():
            phone.quit()


def test_b4_a_sites_own_conference_keeps_working_with_the_main_host_daemon_killed():
    with LoopbackExchange(ring_timeout_s=20, remote_settings={"login_backoff_max_s": 1, "keepalive_s": 2}) as lab:
        lab.provision(phones={"a": ["101", "102", "103"], "c": ["301"]})
        lab.start()
        lab.kill("main")                                      # B4: site a's remote host is on its own
        lab.wait_for(lambda: lab.status("site-a")["main"]["state"] != "up", "site a noticed", timeout=15)
        result = three_way(lab, 2.0, "101", "102", "103", "site-a", "local", tag="conf-b4")
        assert result["ok"] is True, json.dumps(result)   # whole: what was missed, who heard what
        assert lab.status("site-a")["main"]["state"] != "up"  # all of it without the main host


def test_b4_in_the_network_lab_a_sites_conference_behind_its_nat_router_works_without_the_main_host():
    """The same with every daemon and phone in its own namespace behind site a's nftables router."""
    import os
    from tests.support import require_root
    from upbx.tools.netlab import Lab
    from upbx.tools.netlab_exchange import NetlabExchange
    require_root()
    lab = Lab("upxc%s-" % os.urandom(2).hex())
    try:
        lab.up(nat="cone", phones=3)
        with NetlabExchange(lab, keepalive_s=2, ring_timeout_s=15) as ex:
            ex.provision(phones={"a": ["101", "102", "103"], "b": ["201"], "c": ["301"]})
            ex.start()
            ex.kill("main")                                   # B4: site a's remote host is on its own
            ex.wait_for(lambda: ex.status("site-a")["main"]["state"] != "up", "site a noticed", timeout=15)
            result = three_way(ex, 2.0, "101", "102", "103", "site-a", "local", tag="conf-netlab")
            assert result["ok"] is True, json.dumps(result)   # whole: what was missed, who heard what
            assert ex.status("site-a")["main"]["state"] != "up"
    finally:
        lab.down()
