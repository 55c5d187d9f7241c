"""Groups, pickup and paging in the network lab (root only): every daemon and firmware phone in its
own namespace behind nftables NAT routers (tools/netlab.py, tools/netlab_exchange.py).

- Ring-all, hunt and pickup across sites through NAT: `upbx demo features`' scenarios
  (tools/demo_groups.py) with members at site a, site b (both behind their routers, with remote
  hosts) and site c (a phone behind its router, registered at the main host).
- A page is switched on site a's LAN by its remote host: the media frames leaving the site's
  router on its WAN interface are counted by an nftables counter there, and none is a page's.
- B4: with the main host's link down (unreachable, not just stopped), site a's phones still ring
  a ring group and a hunt group among themselves, pick up each other's calls and page; who hears
  whom is read from each phone's speaker recording (Goertzel, a tone per phone).
"""
import json
import os
import time

import pytest

from tests.support import require_root
from upbx.tools.demo_features import run_features
from upbx.tools.demo_groups import _phones, _quit, heard
from upbx.tools.netlab_exchange import NetlabExchange

MEDIA_BYTES = 150     # an IP packet this long or longer leaving the router is a media frame (168 + 28)


@pytest.fixture(scope="module")
def ex():
    require_root()
    from upbx.tools.netlab import Lab
    prefix = "upxg%s-" % os.urandom(2).hex()
    lab = Lab(prefix)
    try:
        lab.up(nat="cone", phones=3, sites=("a", "b", "c"), remote_sites=("a", "b"))
        with NetlabExchange(lab, keepalive_s=2, ring_timeout_s=20) as ex:
            ex.provision(sites=("a", "b", "c"), remote_sites=("a", "b"),
                         phones={"a": ["101", "102", "103"], "b": ["201"], "c": ["301"]})
            ex.start()
            ex.admin("group", "add", "650", "--members", "102,103,301", "--strategy", "ring-all")
            ex.admin("group", "add", "651", "--members", "301,102,103", "--strategy", "hunt", "--ring-s", "3")
            ex.admin("group", "add", "700", "--strategy", "page", "--site", "a")
            ex.wan_table = "upbx_groups_" + prefix.strip("-")
            lab.count_leaving("a", ex.wan_table, {"media": MEDIA_BYTES})
            time.sleep(2.5)         # the main host sends site a's directory, with the groups, within a second
            yield ex
    finally:
        lab.down()


def wan_media_packets(ex):
    """Media-sized packets that left site a's router towards the Internet so far (its nft counter)."""
    return ex.lab.counted("a", ex.wan_table)["media"]


def test_ring_hunt_and_pickup_across_sites_through_nat(ex):
    results = {r["name"]: r for r in run_features(ex, 1.5, names=("ring_group", "hunt_group", "pickup"))}
    ring, hunt, pickup = results["ring_group"], results["hunt_group"], results["pickup"]
    assert ring["ok"] is True and ring["heard"] == {"101": ["201"], "201": ["101"], "102": [], "301": []}, ring
    assert hunt["ok"] is True and hunt["heard"] == {"201": ["102"], "102": ["201"], "301": []}, hunt
    assert pickup["ok"] is True and pickup["heard"] == {"301": ["102"], "102": ["301"], "101": []}, pickup


def test_a_page_is_switched_on_the_lan_no_media_frame_leaves_the_site(ex):
    phones = _phones(ex, "nl-page", ("101", "102", "103"))
    try:
        before = wan_media_packets(ex)
        phones["101"].command("!call 700")
        assert phones["102"].wait_line("connected") and phones["103"].wait_line("connected")
        assert phones["101"].wait_line("connected")
        time.sleep(2.0)
        phones["101"].command("!hangup")
        assert phones["102"].wait_line("call ended: normal clearing")
        during = wan_media_packets(ex) - before
    finally:
        _quit(phones)
    assert heard(phones["102"]) == ["101"] and heard(phones["103"]) == ["101"]   # the pager reaches both
    assert heard(phones["101"]) == []                                          # and nothing comes back
    assert during == 0


def test_b4_ring_hunt_pickup_and_page_among_the_sites_phones_with_the_main_host_unreachable(ex):
    ex.lab.exec("main", ["ip", "link", "set", "dev", "eth0", "down"], check=True)
    try:
        ex.wait_for(lambda: ex.status("site-a")["main"]["state"] != "up", "site a noticed", timeout=20)
        phones = _phones(ex, "nl-b4", ("101", "102", "103"))
        try:
            p = phones
            p["101"].command("!call 650")                # ring-all: 301 (main host) cannot ring now
            assert p["102"].wait_line("incoming call from 101") and p["103"].wait_line("incoming call from 101")
            p["103"].command("!answer")
            assert p["101"].wait_line("connected") and p["102"].wait_line("call ended: answered elsewhere")
            time.sleep(1.5)
            p["101"].command("!hangup")
            assert p["103"].wait_line("call ended: normal clearing")
        finally:
            _quit(phones)
        ring = {n: heard(p[n]) for n in p}    # the recordings, complete once the phones quit
        phones = _phones(ex, "nl-b4h", ("101", "102", "103"))
        try:
            p = phones
            p["101"].command("!call 651")                # hunt: 301 skipped, 102 for 3 s, then 103
            assert p["102"].wait_line("incoming call from 101")
            assert p["103"].wait_line("incoming call from 101", 10) and p["102"].wait_line("call ended: no answer")
            p["102"].command("!pickup")                  # 102 picks up the call now ringing at 103
            assert p["102"].wait_line("connected") and p["103"].wait_line("call ended: picked up")
            time.sleep(1.5)
            p["101"].command("!hangup")
            assert p["102"].wait_line("call ended: normal clearing", 5)
        finally:
            _quit(phones)
        hunt = {n: heard(p[n]) for n in p}    # the recordings, complete once the phones quit
        phones = _phones(ex, "nl-b4p", ("101", "102", "103"))
        try:
            p = phones
            p["103"].command("!call 700")
            assert p["101"].wait_line("connected") and p["102"].wait_line("connected")
            time.sleep(1.5)
            p["103"].command("!hangup")
            assert p["101"].wait_line("call ended: normal clearing")
        finally:
            _quit(phones)
        page = {n: heard(p[n]) for n in p}    # the recordings, complete once the phones quit
    finally:
        ex.lab.exec("main", ["ip", "link", "set", "dev", "eth0", "up"], check=True)
    assert ring == {"101": ["103"], "103": ["101"], "102": []}
    assert hunt == {"101": ["102"], "102": ["101"], "103": []}
    assert page == {"101": ["103"], "102": ["103"], "103": []}
    ex.wait_for(lambda: ex.status("site-a")["main"]["state"] == "up", "site a logged in again", timeout=30)
    ex.wait_for(lambda: ex.status("site-a")["records_pending"] == 0, "the records uploaded", timeout=15)
    records = json.loads(ex.admin("calls", "--json", "--limit", "10"))
    local = [(r["caller"], r["callee"], r["path"]) for r in records if r["origin"] == "site-a"]
    assert ("101", "103", "local") in local and ("101", "102", "local") in local and ("103", "700", "local") in local
