"""A transfer by a site's phone whose two calls both go through the main host, on the real host
cores in one process (tests/inprocess.py): the site's remote host hands the join to the main
host, which joins its own two legs, so the joined call no longer turns at the site: the site's
uplink budget (B5) no longer counts it and no frame of it reaches the site's remote host
(docs/features.md, Transfer). Who hears whom by the voice frames (each carries its number).
tests/test_transfer_handover_netlab.py shows the site's WAN carrying none of it through real NAT.
"""
from upbx.common import lines, wire
from upbx.common.call import RINGING
from tests.test_lines import _act, _answer, _heard, _listen, _parties
from tests.test_routing import _world


def test_an_attended_transfer_of_two_outside_calls_is_joined_by_the_main_host(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302"))
    try:
        p = world.phones
        world.call("301", "102")                                     # from the main host's phone to site a
        _act(world, "102", lambda ph, now: lines.consult(ph, "302", now))     # and to another of its phones
        _answer(world, "302")
        assert world.a.status()["uplink"]["calls"] == 2
        _act(world, "102", lambda ph, now: lines.transfer(ph, now))
        world.run(200)
        assert p["102"].idle and p["102"].causes()[-2:] == [wire.CAUSE_TRANSFERRED] * 2
        assert world.a.status()["calls"] == [] and world.a.status()["uplink"]["calls"] == 0
        media_before = world.a.stats.counters.get("media in", 0)
        _listen(world, 1000)
        assert _heard(p["301"]) == (["302"], False) and _heard(p["302"]) == (["301"], False)
        assert world.a.stats.counters.get("media in", 0) == media_before   # none of it through site a
        assert _parties(p["301"]) == ["302"] and _parties(p["302"]) == ["301"]
        calls = world.main.status()["calls"]
        assert [(c["caller"], c["callee"], c["state"]) for c in calls] == [("301", "302", "answered")]
        world.hangup("302")
        assert p["301"].idle and world.main.status()["calls"] == []
        records = world.main.directory.call_records()
        first = next(r.uid for r in records if (r.caller, r.callee) == ("301", "102"))
        assert sorted((r.caller, r.callee, r.cause, r.linked) for r in records) == sorted([
            ("301", "102", "transferred", None), ("102", "302", "transferred", first),
            ("301", "302", "normal clearing", first)])
        assert not world.net.errors
    finally:
        world.close()


def test_a_blind_one_is_joined_by_the_main_host_which_plays_the_music_and_recalls(tmp_path):
    world = _world(tmp_path, ("101", "301", "302"), main_settings="transfer_recall_s = 5\n")
    try:
        p = world.phones
        world.call("301", "101")
        _act(world, "101", lambda ph, now: lines.consult(ph, "302", now, True))   # blind, to the main host's 302
        world.run_until(lambda: p["302"].phone.state == RINGING and p["101"].idle, 3000, "302 rings")
        assert world.a.status()["calls"] == [] and world.a.status()["uplink"]["calls"] == 0
        _listen(world, 1500)
        assert _heard(p["301"]) == ([], True)                        # music from the main host while 302 rings
        assert world.main.stats.counters["music on hold frames"] > 50
        # not answered: the main host recalls 101 through site a
        world.run_until(lambda: p["101"].phone.state == RINGING, 6000, "101 recalled")
        assert p["101"].take()[-1].name == "recall: 302 no answer"
        assert p["302"].causes()[-1] == wire.CAUSE_NO_ANSWER
        _answer(world, "101")
        _listen(world, 1000)
        assert _heard(p["301"]) == (["101"], False) and _heard(p["101"]) == (["301"], False)
        world.hangup("101")
        assert world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()


def test_a_transfer_with_one_call_on_the_site_is_still_joined_at_the_site(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        p = world.phones
        world.call("301", "101")
        _act(world, "101", lambda ph, now: lines.consult(ph, "102", now))      # 102 is on the site
        _answer(world, "102")
        _act(world, "101", lambda ph, now: lines.transfer(ph, now))
        _listen(world, 1000)
        assert _heard(p["301"]) == (["102"], False) and _heard(p["102"]) == (["301"], False)
        assert "transfers handed to the main host" not in world.a.stats.counters
        assert world.a.status()["uplink"]["calls"] == 1
        world.hangup("102")
        assert not world.net.errors
    finally:
        world.close()
