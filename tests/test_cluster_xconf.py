"""Three-way conferences with a party at the other node of a cluster, on the real host cores in one
process (issue 16; docs/cluster.md "Conferences across nodes", docs/features.md "Conference").

The two-node world of tests/test_cluster_xgroup.py (MainHost cores as nodes 1 and 2 with their real
NodeTrunks, `Locations` playing Redis): site a (101, 102) and phones 301, 302 at node 2, site b (201,
202) and phone 303 at node 1. A mixer sums what it hears, so a frame cannot name its sender here:
each phone sends its own tone (tests/test_conference.py) and Goertzel on what each received says
whom it hears: every party the others, never itself, nobody else. The last test runs in
tests/test_cluster_direct.py's world instead (direct media on: sites a and b send straight to each other).
"""
import pytest

from upbx.common import wire
from upbx.common.phone import Ended
from tests.inprocess import MAIN, SITE_A, SITE_B, PhoneEnd
from tests.test_cluster_direct import SitesAtTwoNodes
from tests.test_cluster_xgroup import NODE1, TwoNodes, _no_calls
from tests.test_conference import ToneEnd, _call_on_the_second_line, _join, _tone_frames
from tests.test_conference import _hears as _hears_of

TONES = {"101": 600, "102": 1000, "201": 1400, "202": 2600, "301": 1800, "302": 2200, "303": 3000}


class Tone(ToneEnd):
    """A phone sending its tone of TONES (ToneEnd's tick)."""

    def __init__(self, net, number, secret, address, host):
        PhoneEnd.__init__(self, net, number, secret, address, host)
        self.frames = _tone_frames(TONES[number])


def _tone_world(tmp_path, kind=TwoNodes):
    """kind's two nodes with every phone of TONES registered (a phone's world fails to close if this fails)."""
    world = kind(tmp_path)
    for i, number in enumerate(sorted(TONES), 1):
        host = {"1": SITE_A, "2": SITE_B}.get(number[0]) or (NODE1 if number == "303" else MAIN)
        end = Tone(world.net, number, world.secrets[number], ("198.18.2.%d" % i, 40000), host)
        world.phones[number] = end
        end.phone.start(world.net.now)
        end.flush()
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 5000, "registered")
    world.run_until(lambda: len(world.locations.keys) == 5, 2000, "location keys")
    return world


@pytest.fixture
def world(tmp_path):
    world = _tone_world(tmp_path)
    try:
        yield world
    finally:
        world.close()


def _hears(world, number, others, ms=1000):
    """number receives every one of others' tones and no other (its own neither)."""
    _hears_of(world, number, others, ms, TONES)


def _everyone_hears_the_others(world, numbers):
    for number in numbers:
        _hears(world, number, set(numbers) - {number})


def _three_way(world, holder, first, second, called=False):
    """holder calls first (called: first calls holder), holds, calls second and joins the two calls."""
    p = world.phones
    if called:
        world.call(first, holder)
    else:
        world.call(holder, first)
    world.run(200)
    assert p[holder].phone.hold(world.net.now)
    p[holder].flush()
    world.run(100)
    _call_on_the_second_line(world, holder, second)
    world.run(200)
    _join(world, holder)
    p[holder].take()
    assert [e.cause for e in p[holder].log if isinstance(e, Ended) and e.line][-1] == wire.CAUSE_CONFERENCE
    assert p[holder].phone.other is None and p[holder].connected


def _parties(host):
    return [sorted(c["parties"]) for c in host.status()["conferences"]]


def _calls(host):
    return sorted((c["caller"], c["callee"]) for c in host.status()["calls"])


def _hold(world, number, flag=True):
    end = world.phones[number]
    assert (end.phone.hold if flag else end.phone.resume)(world.net.now)
    end.flush()
    world.run(200)


def _records(world):
    """The call records of both nodes (one directory here, as PostgreSQL is for a real cluster)."""
    return sorted((r.origin, r.caller, r.callee, r.cause) for r in world.main.directory.call_records())


def test_a_node_phone_conferences_a_site_at_its_node_and_a_phone_at_the_other_node(world):
    p = world.phones
    _three_way(world, "301", "101", "303")          # 301 at node 2 calls 101 (site a, node 2), then 303 (node 1)
    # node 2 mixes, where 301's calls are: 303's party is node 2's leg on its trunk to node 1
    assert _parties(world.main) == [["101", "301", "303"]] and world.main.status()["conferences"][0]["holder"] == "301"
    assert _parties(world.n1) == _parties(world.a) == _parties(world.b) == []
    assert _calls(world.main) == [("301", "101"), ("301", "303")] and _calls(world.n1) == [("301", "303")]
    conf = world.main.conferences.active[0]
    assert sorted(q.leg.link.kind for q in conf.parties) == ["host", "node", "phone"]
    _everyone_hears_the_others(world, ("101", "301", "303"))
    # 303 holds (node 1 plays it music towards node 2): node 2 leaves it out, the music is not mixed in
    # (before, node 2 dropped a HOLD from a node as "message out of turn" and mixed the music: 101
    # and 301 heard it)
    dropped = world.main.stats.drops.get("conference media not mixed", 0)
    _hold(world, "303")
    assert world.main.status()["conferences"][0]["held"] == ["303"]
    _hears(world, "101", {"301"})
    _hears(world, "301", {"101"})
    assert world.n1.stats.counters["music on hold frames"] > 40
    assert world.main.stats.drops["conference media not mixed"] - dropped > 40
    assert "message out of turn" not in world.main.stats.drops
    _hold(world, "303", False)
    assert world.main.status()["conferences"][0]["held"] == []
    _everyone_hears_the_others(world, ("101", "301", "303"))
    # the party at the other node leaves: the other two carry on; then one left, its call ends
    world.hangup("303")
    world.run(200)
    assert p["303"].causes() == [wire.CAUSE_NORMAL] and world.n1.status()["calls"] == []
    _hears(world, "101", {"301"})
    _hears(world, "301", {"101"})
    world.hangup("101")
    world.run_until(lambda: p["301"].idle, 1000, "301's call ends")
    assert p["301"].causes() == [wire.CAUSE_CONFERENCE, wire.CAUSE_NORMAL]
    world.run(500)
    assert _no_calls(world) and world.main.status()["conferences"] == []
    assert _records(world) == [("main", "301", "101", "normal clearing"), ("main", "301", "303", "normal clearing")]
    assert not world.net.errors


def test_a_sites_phone_with_both_parties_at_the_other_node_is_mixed_by_its_sites_node(world):
    p = world.phones
    _three_way(world, "101", "201", "303")          # 101 (site a, node 2) calls 201 (site b, node 1), then 303 (node 1)
    # site a hands the conference to node 2 (both calls go through it), which mixes with both other
    # parties' legs on its trunk to node 1: one stream each way on site a's uplink, two on the trunk
    assert world.a.stats.counters["conferences handed to the main host"] == 1
    assert _parties(world.main) == [["101", "201", "303"]] and world.main.status()["conferences"][0]["holder"] == "101"
    assert _parties(world.n1) == _parties(world.a) == _parties(world.b) == []
    assert world.a.status()["uplink"]["calls"] == 1 and _calls(world.a) == [("101", "303")]   # its active call
    assert _calls(world.main) == [("101", "201"), ("101", "303")] == _calls(world.n1)
    _everyone_hears_the_others(world, ("101", "201", "303"))
    # the holder holds the conference: the two at node 1 hear each other through node 2, no music
    music = world.a.stats.counters.get("music on hold frames", 0)
    _hold(world, "101")
    _hears(world, "201", {"303"})
    _hears(world, "303", {"201"})
    assert world.a.stats.counters.get("music on hold frames", 0) == music
    # a fourth party, 302 at node 2: called on 101's second line, joined at node 2
    _call_on_the_second_line(world, "101", "302")
    _join(world, "101")
    assert p["101"].causes()[-1] == wire.CAUSE_CONFERENCE
    assert _parties(world.main) == [["101", "201", "302", "303"]] and world.a.status()["uplink"]["calls"] == 1
    _everyone_hears_the_others(world, ("101", "201", "302", "303"))
    # the holder leaves: the others carry on, two of them at node 1 mixed at node 2
    world.hangup("101")
    world.run(200)
    assert world.a.status()["calls"] == [] and world.a.status()["uplink"]["calls"] == 0
    _hears(world, "201", {"302", "303"})
    _hears(world, "303", {"201", "302"})
    world.hangup("302")
    world.hangup("201")
    world.run_until(lambda: p["303"].idle, 1000, "303's call ends")
    assert p["303"].causes() == [wire.CAUSE_NORMAL] and p["201"].causes() == [wire.CAUSE_NORMAL]
    world.run(500)
    assert _no_calls(world) and world.main.status()["conferences"] == []
    assert _records(world) == [("main", "101", "201", "normal clearing"), ("main", "101", "302", "normal clearing"),
                               ("main", "101", "303", "normal clearing")]
    assert not world.net.errors


def test_a_conference_at_a_site_of_the_other_node_with_a_party_calling_from_this_node(world):
    p = world.phones
    _three_way(world, "201", "301", "202", called=True)   # 301 (node 2) calls 201 (site b, node 1); 201 adds 202
    # 202 is on site b: site b mixes; 301's party is its leg towards node 1, node 1's call over the trunk
    assert _parties(world.b) == [["201", "202", "301"]]
    assert _parties(world.main) == _parties(world.n1) == _parties(world.a) == []
    assert _calls(world.main) == [("301", "201")] == _calls(world.n1)
    _everyone_hears_the_others(world, ("201", "202", "301"))
    # 301 holds: node 2 plays it music towards site b, whose mixer leaves 301 out (before: music mixed in)
    _hold(world, "301")
    assert world.b.status()["conferences"][0]["held"] == ["301"]
    _hears(world, "201", {"202"})
    _hears(world, "202", {"201"})
    assert world.main.stats.counters["music on hold frames"] > 40
    _hold(world, "301", False)
    _everyone_hears_the_others(world, ("201", "202", "301"))
    world.hangup("201")                              # the holder leaves, then 202: the call from node 2 ends
    world.hangup("202")
    world.run_until(lambda: p["301"].idle, 1000, "301's call ends")
    assert p["301"].causes() == [wire.CAUSE_NORMAL]
    world.run(1500)                                  # site b's records reach node 1
    assert _no_calls(world) and world.b.status()["conferences"] == []
    assert _records(world) == [("main", "301", "201", "normal clearing"), ("site-b", "201", "202", "normal clearing")]
    assert not world.net.errors


def test_the_other_nodes_loss_takes_its_party_out_and_the_conference_goes_on(world):
    from upbx.host.cluster import trunk
    p = world.phones
    _three_way(world, "301", "101", "303")          # node 2 mixes; 301's active call is the one to 303 (node 1)
    _everyone_hears_the_others(world, ("101", "301", "303"))
    n1, world.n1 = world.n1, None                   # node 1 dies (kill -9): nothing reaches it, it sends nothing
    del world.net.endpoints[NODE1]
    try:
        world.run_until(lambda: _parties(world.main) == [["101", "301"]], trunk.KEEPALIVE_MS + trunk.DEAD_MS + 1000,
                        "303 out of the conference")
        # only 303's party left: 301's call to 303 stays (301's own leg is a party), nothing held for
        # a successor (a conference is not taken over); before, node 2 released 301's leg "main host
        # lost" and kept the dead party, 101 left alone in the mix for ever
        assert p["301"].causes() == [wire.CAUSE_CONFERENCE] and p["301"].connected and p["101"].connected
        assert _calls(world.main) == [("301", "101"), ("301", "303")] and not world.main.xnode.held
        assert world.main.stats.counters["node trunk: calls lost"] == 1
        down = world.main.stats.drops.get("media to a link that is down", 0)
        _hears(world, "101", {"301"})
        _hears(world, "301", {"101"})
        assert world.main.stats.drops.get("media to a link that is down", 0) == down   # no mix to the lost node
        world.hangup("101")                          # two left, one leaves: the last is released
        world.run_until(lambda: p["301"].idle, 1000, "301's call ends")
        assert p["301"].causes() == [wire.CAUSE_CONFERENCE, wire.CAUSE_NORMAL]
        assert world.main.status()["calls"] == [] and not world.main.switch.legs
        assert world.main.status()["conferences"] == []
        assert world.a.status()["calls"] == [] and not world.net.errors
        assert _records(world) == [("main", "301", "101", "normal clearing"), ("main", "301", "303", "normal clearing")]
    finally:
        world.n1 = n1

class DirectSites(SitesAtTwoNodes):
    """tests/test_cluster_direct.py's world (direct media on, site a at node 2, site b at node 1), tone phones."""

    def add_phone(self, number, index, dead_ms=None):
        host = SITE_A if number.startswith("1") else SITE_B if number.startswith("2") else MAIN
        end = Tone(self.net, number, self.secrets[number], ("198.18.2.%d" % index, 40000), host)
        self.phones[number] = end
        end.phone.start(self.net.now)
        end.flush()
        return end


@pytest.mark.parametrize("second", ["102", "301"])
def test_a_sites_call_direct_to_a_site_at_the_other_node_joined_into_a_conference_the_site_mixes(tmp_path, second):
    world = DirectSites(tmp_path)
    try:
        world.add_phone(second, 3)
        world.run_until(lambda: world.phones[second].phone.registered, 5000, "registered")
        world.call("101", "201")                     # site a (node 2) to site b (node 1): straight between the sites
        world.run_until(lambda: world.node_call(world.main).path == "direct", 3000, "direct")
        p = world.phones
        _hold(world, "101")
        _call_on_the_second_line(world, "101", second)   # 102 on site a, or 301 at node 2
        world.run(200)
        _join(world, "101")
        assert p["101"].causes()[-1] == wire.CAUSE_CONFERENCE
        # not handed to node 2 (a direct path would need taking back): site a mixes, 201's stream direct
        assert _parties(world.a) == [sorted(("101", "201", second))] and world.main.status()["conferences"] == []
        assert "conferences handed to the main host" not in world.a.stats.counters
        assert world.main.status()["calls"][0]["path"] == "direct"
        before = world.media_in()
        _everyone_hears_the_others(world, ("101", "201", second))
        if second == "102":                          # neither node relays a frame of it
            assert world.media_in() == before
        world.hangup("201")
        _hears(world, "101", {second})
        world.hangup(second)
        world.run_until(lambda: p["101"].idle, 1000, "101's call ends")
        world.run(1500)
        assert all(h.status()["calls"] == [] and not h.switch.legs for h in world.hosts)
        assert not world.net.errors
    finally:
        world.close()


def test_the_mixing_nodes_loss_ends_its_parties_calls_at_the_other_node_after_the_hold(tmp_path):
    from upbx.host.cluster import trunk
    from tests.test_cluster_xtransfer_loss import LosableNodes
    world = _tone_world(tmp_path, LosableNodes)
    try:
        p = world.phones
        _three_way(world, "101", "201", "303")      # site a's 101 with 201 and 303 (node 1): node 2 mixes
        _everyone_hears_the_others(world, ("101", "201", "303"))
        world.lose_node_2()
        world.run_until(lambda: len(world.n1.xnode.held) == 2, trunk.KEEPALIVE_MS + trunk.DEAD_MS + 1000,
                        "node 1 holds both halves")
        # this world keeps no call keys (no Redis: nothing is taken over; with them node 1 mixes the conference
        # again, tests/test_cluster_conf_failover.py): node 1 has two plain calls with node 2, held for a successor
        for number in ("201", "303"):
            p[number].received = []
        world.run_until(lambda: p["201"].idle and p["303"].idle, trunk.HOLD_MS + 1000, "201 and 303 released")
        assert p["201"].causes() == [wire.CAUSE_MAIN_LOST] == p["303"].causes()
        assert not any(len(f) == wire.VOICE_BYTES for f in p["201"].received + p["303"].received)   # silence
        assert world.n1.status()["calls"] == [] and not world.n1.switch.legs and not world.n1.xnode.held
        assert world.n1.stats.counters["node trunk: calls lost"] == 2
        world.run_until(lambda: p["101"].idle, 10000, "101's call ends (its site lost its node too)")
        assert p["101"].causes() == [wire.CAUSE_CONFERENCE, wire.CAUSE_MAIN_LOST] and world.a.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()
