"""A conference mixed by a node that is lost goes on at its successor (issue 16: "no call dropped"; docs/cluster.md,
"A conference through the mixing node's loss").

tests/test_cluster_phone_lines.py's two nodes on the real host cores in one process, Redis's call keys played by
tests/test_cluster_direct_loss.py's `CallKeys` (each node's CallMirror writes them, each node's Takeover reads them):
site a (101) at node 2 with its standby session at node 1, phones 301 and 302 straight at node 2 keeping their
standby sessions at node 1 as a handset does, 303 straight at node 1. 301 calls 101, holds, calls a third party
(302 at node 2, or 303 at node 1: a half at each node) and joins the two calls: node 2 mixes. Node 2 is lost as a
node killed -9 is. Until session 18 a conference was not taken over: node 1 carried its calls on as plain calls,
the one left with a single party (101's: 301's leg of it was released when it joined) was not adopted at all, and
101 heard nobody until its site ended the call "main host lost". Now node 1 makes the conference again from its
calls' keys. Each phone sends its own tone (tests/test_conference.py): Goertzel on what each receives says whom it
hears, every party the others and never itself.
"""
from collections import deque

import pytest

from upbx.common import cluster, wire
from upbx.common.call import RINGING
from upbx.host import conference
from upbx.host.cluster import trunk
from tests.inprocess import MAIN, SITE_A, SITE_B, PhoneEnd
from tests.test_cluster_forward import NODE1
from tests.test_cluster_phone_lines import Keys
from tests.test_cluster_relocate import ADDRESSES
from tests.test_cluster_xtransfer_third import LosableThree
from tests.test_cluster_xconf import TONES, _everyone_hears_the_others, _hears, _parties, _three_way
from tests.test_conference import ToneEnd, _tone_frames


class Tone(ToneEnd):
    def __init__(self, net, number, secret, address, host, dead_ms=None):
        PhoneEnd.__init__(self, net, number, secret, address, host, dead_ms)
        self.frames = _tone_frames(TONES[number])


class ToneKeys(Keys):
    """Keys' two nodes, its phones sending their tones."""

    def add_tone(self, number, index, host, dead_ms=2000):
        end = Tone(self.net, number, self.secrets[number], ("198.18.2.%d" % index, 40000), host, dead_ms)
        self.phones[number] = end
        end.phone.start(self.net.now)
        end.flush()
        return end


@pytest.fixture
def world(tmp_path):
    world = ToneKeys(tmp_path)
    try:
        p = world.phones
        world.add_tone("101", 1, SITE_A)
        for i, number in enumerate(("301", "302"), 2):
            world.add_tone(number, i, MAIN).standby = True
        world.add_tone("303", 7, NODE1, dead_ms=None)
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        world.run_until(lambda: world.a.standby_link.up and tuple(world.a.standby_link.address[:2]) == NODE1
                        and p["301"].standby_up(NODE1) and p["302"].standby_up(NODE1), 5000,
                        "site a's, 301's and 302's standby sessions at node 1")
        yield world
    finally:
        world.close()


def _records(world):
    return sorted((r.caller, r.callee, r.cause) for r in world.n1.directory.call_records())


@pytest.mark.parametrize("holder, first, third", [("301", "101", "302"), ("301", "101", "303"), ("101", "301", "302")])
def test_a_conference_whose_mixing_node_is_lost_is_mixed_again_at_its_successor(world, holder, first, third):
    """holder 301 (a phone at node 2) with 101 (site a) and 302 (node 2) or 303 (node 1: node 1 splices that call's
    half and makes it a party's); or holder 101, whose site hands the conference to node 2 (both its calls go
    through node 2: the site's leg of 101's one call left is the holder's party there)."""
    p, n1 = world.phones, world.n1
    _three_way(world, holder, first, third)        # node 2 mixes the conference of holder with first and third
    assert _parties(world.main) == [sorted((first, holder, third))] and _parties(n1) == []
    _everyone_hears_the_others(world, (first, holder, third))
    uid = getattr(world.main.conferences.active[0], "uid", None)   # (None before session 18: the failure shows below)
    world.run(400)                                  # the calls' keys written (the 200 ms writer)

    world.stop_main()
    lost = world.net.now
    world.run_until(lambda: _parties(n1) == [sorted((first, holder, third))], 5000, "node 1 mixes the conference")
    conf = n1.conferences.active[0]
    assert conf.uid == uid and conf.holder_name == holder
    assert n1.stats.counters["conferences rebuilt"] == 1
    assert sorted((c.caller, c.callee) for c in n1.switch.calls.values()) == [(holder, first), (holder, third)]
    assert not n1.xnode.held                        # the half towards node 2 (303's) is node 1's alone now
    _everyone_hears_the_others(world, (first, holder, third))
    # past the hold and the site's grace period: nothing ended
    world.run_until(lambda: world.net.now - lost >= trunk.HOLD_MS + 1000, trunk.HOLD_MS + 2000, "past the hold")
    assert p[holder].causes() == [wire.CAUSE_CONFERENCE] and p[first].causes() == [] == p[third].causes()
    # the conference goes on as one that was never moved: a party leaves, the other two talk, then one is left
    world.hangup(third)
    world.run(200)
    _hears(world, first, {holder})
    _hears(world, holder, {first})
    world.hangup(first)
    world.run_until(lambda: p[holder].idle, 1000, "the holder's call ends")
    assert p[holder].causes() == [wire.CAUSE_CONFERENCE, wire.CAUSE_NORMAL]
    assert p[first].causes() == [wire.CAUSE_NORMAL] == p[third].causes()
    world.run(1500)                                 # (site a's own records reach node 1)
    assert not n1.switch.calls and not n1.switch.legs and _parties(n1) == []
    assert _records(world) == [(holder, first, "normal clearing"), (holder, third, "normal clearing")]
    assert MAIN not in world.net.endpoints and not world.net.errors


def test_a_rebuilt_conference_whose_other_parties_never_come_back_ends_main_host_lost(world):
    """Only 101's call of the conference is in Redis when node 2 is lost (the test drops the other's key): node 1
    makes the conference again with 101 alone, and after conference.REBUILD_MS ends 101's call "main host lost"
    rather than leave it in silence."""
    p, n1 = world.phones, world.n1
    _three_way(world, "301", "101", "302")
    world.run(400)
    for key in [k for k, v in world.calls.keys.items() if k.startswith("upbx:call:") and '"302"' in v]:
        del world.calls.keys[key]                   # the call 301 -> 302: Redis lost its key
    world.stop_main()
    world.run_until(lambda: _parties(n1) == [["101"]], 5000, "node 1 has 101's party")
    made = world.net.now
    world.run_until(lambda: p["101"].idle, conference.REBUILD_MS + 1000, "101's call ends")
    assert conference.REBUILD_MS <= world.net.now - made <= conference.REBUILD_MS + 200
    assert p["101"].causes() == [wire.CAUSE_MAIN_LOST]
    assert n1.stats.counters["conferences rebuilt alone"] == 1 and _parties(n1) == []
    world.run_until(lambda: p["301"].idle and p["302"].idle, 12000, "301's and 302's call ends (nobody took it)")
    assert not n1.switch.calls and not world.net.errors


class ToneThree(LosableThree):
    """tests/test_cluster_xtransfer_third.py's three nodes with Redis's call keys, its phones sending their tones."""

    add_tone = ToneKeys.add_tone


def test_a_conference_with_a_party_at_a_third_node_is_mixed_again_at_the_successor(tmp_path):
    """301 (node 2) conferences 101 (site a, node 2) and 303, straight at the node that is not node 2's successor.
    Node 2 lost: its successor makes the conference again, 303's party a leg on its trunk to 303's node, whose
    held leg towards node 2 moves to that trunk when the successor names it (as for any third node's takeover)."""
    world = ToneThree(tmp_path)
    try:
        p = world.phones
        successor = cluster.successor(2, [1, 2, 3])
        other = ({1, 3} - {successor}).pop()
        world.add_tone("101", 1, SITE_A)
        world.add_tone("301", 2, MAIN).standby = True
        world.add_tone("303", 7, ADDRESSES[other], dead_ms=None)
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        world.run_until(lambda: world.a.standby_link.up and p["301"].standby_up(), 5000,
                        "site a's and 301's standby sessions")
        world.run_until(lambda: len(world.locations.keys) >= 3, 2000, "location keys")
        _three_way(world, "301", "101", "303")
        assert _parties(world.main) == [["101", "301", "303"]]
        _everyone_hears_the_others(world, ("101", "301", "303"))
        world.run(400)

        world.stop_main()
        s, y = world.nodes[successor], world.nodes[other]
        world.run_until(lambda: _parties(s) == [["101", "301", "303"]] and not y.xnode.held, 5000,
                        "the successor mixes the conference, 303's node's leg on its trunk")
        assert y.stats.counters["node trunk: calls moved to another node"] == 1
        conf = s.conferences.active[0]
        assert sorted(q.leg.link.kind for q in conf.parties) == ["host", "node", "phone"]
        assert next(q.leg.link.node for q in conf.parties if q.leg.link.kind == "node") == other
        _everyone_hears_the_others(world, ("101", "301", "303"))
        world.run(trunk.HOLD_MS + 1000)             # past the hold: nothing ended
        assert p["301"].causes() == [wire.CAUSE_CONFERENCE] and p["101"].causes() == [] == p["303"].causes()
        world.hangup("303")
        world.run(200)
        _hears(world, "101", {"301"})
        world.hangup("301")
        world.run_until(lambda: p["101"].idle and p["303"].idle, 1000, "the conference ends")
        assert p["101"].causes() == [wire.CAUSE_NORMAL] == p["303"].causes()
        assert not world.net.errors
    finally:
        world.close()


def test_a_mixing_node_that_was_only_stopped_leaves_the_conference_to_its_successor(world):
    """Node 2 stopped (SIGSTOP) rather than killed: node 1 mixes the conference again; node 2 then runs on, its copy
    of the conference still there. The clients' sessions at node 2 log in again as their standbys, which ends node 2's
    copies without a word to the phones, and its ended keys do not overwrite node 1's (ENDED_IF_OURS). The
    conference goes on at node 1, and each call is recorded once, with its real end: node 2's records of its copies
    (the call with 101 "unreachable", as its site's session logged in again) wait for the ended keys and are dropped
    (MainHost.records_settled); before, PostgreSQL kept node 2's, the first written."""
    p, n1 = world.phones, world.n1
    _three_way(world, "301", "101", "302")
    _everyone_hears_the_others(world, ("101", "301", "302"))
    world.run(400)
    world.pause_main()
    world.run_until(lambda: _parties(n1) == [["101", "301", "302"]], 5000, "node 1 mixes the conference")
    world.run(2000)
    node2 = world.paused
    world.resume_main()
    world.run_until(lambda: not node2.switch.calls and node2.status()["conferences"] == [], 15000,
                    "node 2 let its copies go")
    assert _parties(n1) == [["101", "301", "302"]]
    _everyone_hears_the_others(world, ("101", "301", "302"))
    assert p["301"].causes() == [wire.CAUSE_CONFERENCE] and p["101"].causes() == [] == p["302"].causes()
    world.hangup("302")
    world.hangup("101")
    world.run_until(lambda: p["301"].idle, 2000, "the conference ended")
    world.run(2000)
    assert _records(world) == [("301", "101", "normal clearing"), ("301", "302", "normal clearing")]
    assert not world.net.errors


@pytest.mark.parametrize("third", ["201", "303"])
def test_a_conference_goes_on_at_the_standby_node_when_its_node_falls_silent_towards_one_party(tmp_path, third):
    """A one-sided switch with a conference (docs/cluster.md, "A conference in a one-sided switch"): 301 (a phone at
    node 2) conferences 101 (site a) and 201 (site b), both sites at node 2 too, every client's standby at node 1.
    Site a's path to node 2 alone is cut: site a switches to node 1, which takes 101's call over, makes the
    conference again, and asks Redis for its other call by its uid (the key lists the conference's calls): 301's
    and 201's legs of it are on their standby sessions at node 1, named there; 301 switches to node 1, site b moves
    its leg there, and node 2, told so, lets that call go unheard. Everyone hears the other two through node 1; when
    the path is back, node 2's copy of 101's call ends with site a's standby login there, unheard and unrecorded.
    Or the third party is 303, straight at node 1: node 1 splices node 2's half of that call to its own and names
    301's leg on 301's standby session there."""
    from tests.test_cluster_onesided import OneSided

    class ToneOneSided(OneSided):
        add_tone = ToneKeys.add_tone

    world = ToneOneSided(tmp_path)
    try:
        p, n1, n2 = world.phones, world.n1, world.main
        world.add_tone("101", 1, SITE_A)
        world.add_tone(third, 2, SITE_B if third == "201" else NODE1)
        world.add_tone("301", 3, MAIN).standby = True
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        world.run_until(lambda: all(h.standby_link.up and tuple(h.standby_link.address[:2]) == NODE1
                                    for h in (world.a, world.b))
                        and p["301"].standby_up(NODE1), 5000,
                        "every client's standby session at node 1")
        everyone = sorted(("101", third, "301"))
        _three_way(world, "301", "101", third)
        assert _parties(n2) == [everyone]
        _everyone_hears_the_others(world, everyone)
        world.run(400)
        world.cut = True
        world.run_until(lambda: _parties(n1) == [everyone]
                        and not any(third in (c.caller, c.callee) for c in n2.switch.calls.values()), 5000,
                        "node 1 mixes the conference, node 2 let the call with %s go" % third)
        assert tuple(p["301"].host) == NODE1 and tuple(world.b.main_address[:2]) == MAIN
        assert world.b.standby_link.legs == (1 if third == "201" else 0)
        assert n2.stats.counters["calls taken over by another node"] == 1
        _everyone_hears_the_others(world, everyone)
        world.cut = False
        world.run_until(lambda: not n2.switch.calls and n2.status()["conferences"] == [], 15000,
                        "node 2's copy of 101's call ended when site a's standby logged in there")
        _everyone_hears_the_others(world, everyone)
        assert all(p[n].causes() == ([wire.CAUSE_CONFERENCE] if n == "301" else []) for n in p), {
            n: p[n].causes() for n in p}
        world.hangup("101")
        world.hangup(third)
        world.run_until(lambda: p["301"].idle, 2000, "the conference ended")
        world.run(500)
        assert _records(world) == [("301", "101", "normal clearing"), ("301", third, "normal clearing")]
        assert not world.net.errors
    finally:
        world.close()


def test_a_conference_asked_for_as_its_node_dies_is_mixed_at_the_standby_node(world):
    """301 (node 2, standby at node 1) talks to 303 (node 1), holds it and calls 101 (site a, node 2); node 2 dies
    and 301 asks for the conference at once: its CONFERENCE goes to the dead node. At its switch 301 names both
    calls and says the CONFERENCE again; node 1 takes both over and keeps it until it has both (host/cluster/calls.py
    defer), then mixes the three: 301's held line ends "joined conference" and each hears the other two. Before,
    the CONFERENCE was lost with the node: 301 kept talking to 101 with 303 held."""
    from collections import deque
    from upbx.common import conference as phone_conference
    from tests.test_conference import _call_on_the_second_line
    p, n1 = world.phones, world.n1
    world.call("301", "303")
    world.run(200)
    assert p["301"].phone.hold(world.net.now)
    p["301"].flush()
    world.run(100)
    _call_on_the_second_line(world, "301", "101")
    world.run(400)                                  # the calls' keys written (the 200 ms writer)
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)   # what node 2 said last never leaves
    world.stop_main()
    assert phone_conference.conference(p["301"].phone, world.net.now)
    p["301"].flush()
    world.run_until(lambda: _parties(n1) == [["101", "301", "303"]] and p["301"].phone.other is None, 5000,
                    "node 1 mixes the conference, 301's held line let go")
    assert tuple(p["301"].host) == NODE1
    assert p["301"].causes() == [wire.CAUSE_CONFERENCE] and p["303"].causes() == [] == p["101"].causes()
    _everyone_hears_the_others(world, ("101", "301", "303"))
    assert not world.net.errors


def _answered_as_node_2_dies(world, caller, callee):
    """caller calls callee, who answers once node 2's calls' keys stop reaching Redis (the key still says the call
    rings: the writer had not looked since, as in the last 20 ms before a kill); node 2 then dies before it says
    anything more. Both were connected by node 2."""
    p, n1 = world.phones, world.n1
    a, b = p[caller], p[callee]
    assert a.phone.dial(callee, world.net.now)
    a.flush()
    world.run_until(lambda: b.phone.state == RINGING, 3000, "%s rings" % callee)
    world.run(400)                                  # the ringing call's keys written
    writes = world.calls.serve
    world.calls.serve = lambda name, core, now: writes(name, core, now) if core is n1 else None
    assert b.phone.answer(world.net.now)
    b.flush()
    world.run_until(lambda: a.connected and b.connected, 2000, "connected by node 2")
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
    world.stop_main()
    world.calls.serve = writes


@pytest.mark.parametrize("callee", ["302", "101"])
def test_a_call_answered_just_before_its_node_dies_stays_answered_at_the_successor(world, callee):
    """301 (node 2) calls 302 (node 2) or site a's 101 (node 2), which answers just before node 2 dies, its key still
    saying the call rings. The callee's client says its ANSWER again at its switch (a phone: common/standby.py; a
    remote host: `_switch_to_standby`), and node 1, having taken the call over as ringing, answers it: the call
    stays up past the ring timeout, the two hear each other, "normal clearing", one record. Before, node 1 kept
    it ringing and ended it "no answer" at the ring timeout (30 s), while the two were talking."""
    p, n1 = world.phones, world.n1
    _answered_as_node_2_dies(world, "301", callee)
    world.run_until(lambda: [c.state for c in n1.switch.calls.values()] == ["answered"], 5000,
                    "node 1 has the call, answered")
    world.run(31000)                                # past the ring timeout
    assert p["301"].connected and p[callee].connected and [c.state for c in n1.switch.calls.values()] == ["answered"]
    _hears(world, "301", {callee})
    _hears(world, callee, {"301"})
    world.hangup("301")
    world.run_until(lambda: p[callee].idle, 2000, "hung up")
    assert p["301"].causes() == [wire.CAUSE_NORMAL] == p[callee].causes()
    world.run(1500)
    assert _records(world) == [("301", callee, "normal clearing")]
    assert not n1.switch.calls and not world.net.errors


@pytest.mark.parametrize("holder", ["301", "101"])
@pytest.mark.parametrize("resume", [False, True], ids=["held", "resumed"])
def test_a_call_held_or_resumed_just_before_its_node_dies_is_so_at_the_successor(world, holder, resume):
    """holder (301, a phone at node 2; or site a's 101) talks to 302 (node 2) and holds the call (or resumes it) once
    node 2's keys stop reaching Redis, its HOLD acknowledged; node 2 then dies. Each client that switches says again
    whether it holds each of its answered calls (common/standby.py `_answers`, host/remote_host.py
    `_switch_to_standby`): node 1 has the call held by holder (302 hears the music, not holder's voice) or not held
    (the two hear each other). Before, node 1 had it as the key said: resumed while held, held while resumed (302 heard the
    music while holder talked)."""
    p, n1 = world.phones, world.n1
    world.call(holder, "302")
    world.run(400)
    if resume:
        assert p[holder].phone.hold(world.net.now)
        p[holder].flush()
        world.run(400)                              # the held call's keys written
    writes = world.calls.serve
    world.calls.serve = lambda name, core, now: writes(name, core, now) if core is n1 else None
    assert (p[holder].phone.resume if resume else p[holder].phone.hold)(world.net.now)
    p[holder].flush()
    world.run(300)                                  # node 2 holds (or resumes) it, and says so
    assert all((c.held_by is None) is resume for c in world.main.switch.calls.values())
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
    world.stop_main()
    world.calls.serve = writes
    world.run_until(lambda: [c.state for c in n1.switch.calls.values()] == ["answered"] and all(
        (c.held_by is None) is resume for c in n1.switch.calls.values()), 5000,
        "node 1 has the call, %s" % ("resumed" if resume else "held"))
    world.run(1000)
    if resume:
        _hears(world, holder, {"302"})
        _hears(world, "302", {holder})
    else:   # 302 hears the music (node 1's for 301, site a's for 101), none of the holder's voice frames
        p["302"].received = []
        world.run(1000)
        assert len(p["302"].received) >= 40 and not set(p["302"].received) & set(p[holder].frames)
    assert not world.net.errors
