"""A site phone's conference with every other party off the site, on the real host cores in one
process (tests/inprocess.py): its remote host hands the conference to the main host, which mixes
(docs/features.md, Conference), so the site's uplink carries one stream each way whatever the
number of parties. Each phone sends its own tone; Goertzel on what each received says whom it
hears: every party the others, never itself.
"""
from upbx.common import wire
from upbx.common.phone import Ended
from tests.test_conference import (_call_on_the_second_line, _events, _everyone_hears_the_others, _hears, _join,
                                   _three_way, _world)


def test_a_sites_phone_with_two_off_site_parties_is_mixed_by_the_main_host(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302", "303"))
    try:
        p = world.phones
        _three_way(world, "101", "301", "302")                 # both calls through the main host
        conferences = world.main.status()["conferences"]
        assert [sorted(c["parties"]) for c in conferences] == [["101", "301", "302"]]
        assert not world.a.status()["conferences"]
        assert world.a.stats.counters["conferences handed to the main host"] == 1
        assert world.a.status()["uplink"]["calls"] == 1        # one stream each way over the site's uplink
        assert len(world.a.status()["calls"]) == 1
        _everyone_hears_the_others(world, ("101", "301", "302"))
        # the holder holds the conference: the others still hear each other, and no music from site a
        music = world.a.stats.counters.get("music on hold frames", 0)     # (301 heard some before the join)
        assert p["101"].phone.hold(world.net.now)
        p["101"].flush()
        world.run(200)
        _hears(world, "301", {"302"})
        _hears(world, "302", {"301"})
        assert world.a.stats.counters.get("music on hold frames", 0) == music
        # a fourth party: a call on the second line, joined to the conference at the main host
        _call_on_the_second_line(world, "101", "303")
        _join(world, "101")
        assert [e.cause for e in _events(p["101"], Ended) if e.line][-1] == wire.CAUSE_CONFERENCE
        assert sorted(world.main.status()["conferences"][0]["parties"]) == ["101", "301", "302", "303"]
        assert world.a.status()["uplink"]["calls"] == 1
        _everyone_hears_the_others(world, ("101", "301", "302", "303"))
        world.hangup("101")                                     # the site's phone leaves: the others carry on
        _hears(world, "301", {"302", "303"})
        assert world.a.status()["calls"] == [] and world.a.status()["uplink"]["calls"] == 0
        world.hangup("302")
        world.hangup("303")
        world.run(200)
        assert all(e.idle for e in world.phones.values()) and not world.main.switch.calls
        assert not world.net.errors
    finally:
        world.close()


def test_with_a_party_on_the_site_the_site_mixes(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        _three_way(world, "101", "102", "301")                 # 102 on the site: its remote host mixes
        assert world.a.status()["conferences"] and not world.main.status()["conferences"]
        assert world.a.status()["uplink"]["calls"] == 1
        _everyone_hears_the_others(world, ("101", "102", "301"))
        assert "conferences handed to the main host" not in world.a.stats.counters
        # 301 (at the main host) holds: the main host plays it music towards the site, whose mixer
        # leaves 301 out (its HOLD comes on the site's main link; before, dropped and the music mixed in)
        p = world.phones
        assert p["301"].phone.hold(world.net.now)
        p["301"].flush()
        world.run(200)
        assert world.a.status()["conferences"][0]["held"] == ["301"]
        _hears(world, "101", {"102"})
        _hears(world, "102", {"101"})
        assert world.main.stats.counters["music on hold frames"] > 40
        assert p["301"].phone.resume(world.net.now)
        p["301"].flush()
        world.run(200)
        _everyone_hears_the_others(world, ("101", "102", "301"))
        assert not world.net.errors
    finally:
        world.close()
