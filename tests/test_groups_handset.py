"""Groups with firmware phones and real daemons (`upbx demo features`' ring_group, hunt_group,
pickup and paging, tools/demo_groups.py): each phone sends its own tone and its speaker's
recording says whom it heard (Goertzel, 100 ms at a time). tests/test_groups.py covers the host
logic frame by frame on the virtual clock, the B4 case in tests/test_netlab_groups.py.
"""
import pytest

from upbx.tools.demo_features import run_features
from upbx.tools.lab import LoopbackExchange


@pytest.fixture(scope="module")
def results():
    with LoopbackExchange(ring_timeout_s=20) as lab:
        lab.provision()
        lab.start()
        yield {r["name"]: r for r in run_features(lab, 1.5, names=("ring_group", "hunt_group", "pickup", "paging"))}


def test_ring_all_rings_members_at_every_site_and_the_first_answer_wins(results):
    r = results["ring_group"]
    assert r["ok"] is True, r
    assert r["rang"] == {"102": True, "201": True, "301": True} and r["others_stopped"] == {"102": True, "301": True}
    assert r["heard"] == {"101": ["201"], "201": ["101"], "102": [], "301": []}
    assert (r["record"]["caller"], r["record"]["callee"], r["record"]["cause"]) == ("101", "201", "normal clearing")


def test_hunt_moves_on_after_the_ring_time(results):
    r = results["hunt_group"]
    assert r["ok"] is True, r
    assert r["first_rang"] and r["first_stopped"] and r["second_rang_after_s"] >= 2.5   # never before its 3 s
    assert r["heard"] == {"201": ["102"], "102": ["201"], "301": []}


def test_pickup_from_another_phone_of_the_site(results):
    r = results["pickup"]
    assert r["ok"] is True, r
    assert r["rung_phone_stopped"] and r["heard"] == {"301": ["102"], "102": ["301"], "101": []}


def test_a_page_is_heard_one_way_and_never_reaches_the_main_host(results):
    r = results["paging"]
    assert r["ok"] is True, r
    assert r["answered_by_itself"] and r["heard"] == {"101": [], "102": ["101"]}
    assert r["media_frames_at_hosts"]["main"] == 0 and r["media_frames_at_hosts"]["site-a"] > 0
    assert r["record"]["path"] == "local" and r["record"]["callee"] == "700"
