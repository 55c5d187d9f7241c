"""A one-sided switch: a node alive, but silent towards one site of a call only (issue 16: "no call dropped";
docs/cluster.md, "A one-sided switch").

tests/test_cluster_xgroup.py's two nodes on the real host cores in one process, here with both sites' remote
hosts at node 2 (site a: 101, site b: 201), each keeping its standby session at node 1 (node 2's successor), and
tests/test_cluster_direct_loss.py's `CallKeys` standing for Redis's call keys (each node's CallMirror writes them,
node 1's Takeover reads them). Then the path between site a and node 2 alone is cut, both ways: node 2 runs on
and still hears site b. Site a switches to node 1, which takes the call over; until session 17 site b went on
sending to node 2, which ended the call (RELEASE to 201) when site a's session logged in there again, and 201
never heard 101 after the cut. What is asserted: what the phones hear (every voice frame names its sender),
where each node and remote host keeps the call, and the call record.
"""
import pytest

from upbx.common import cluster, wire
from tests.inprocess import MAIN, SITE_A, SITE_B
from tests.test_cluster_direct_loss import KEY, CallKeys, LosableSites
from tests.test_cluster_forward import NODE1
from tests.test_cluster_relocate import NODE3
from tests.test_cluster_xgroup import TwoNodes, _in_order, _listen


class OneSided(TwoNodes):
    def __init__(self, tmp_path):
        self.calls = None
        self.cut = False
        TwoNodes.__init__(self, tmp_path, site_b_at=MAIN)
        send = self.net.send

        def filtered(data, source, destination):
            ends = {tuple(source[:2]), tuple(destination[:2])}
            if self.cut and ends in ({SITE_A, MAIN}, {self.net.nat[SITE_A], MAIN}):
                return   # the path between site a and node 2 is lost, both ways; everything else goes
            send(data, source, destination)
        self.net.send = filtered
        self.calls = CallKeys()
        self.calls.take_over_at([self.n1])

    def tick(self, until=None):
        done = TwoNodes.tick(self, until)
        if self.calls is not None:
            self.calls.serve_all((("n2", self.main), ("n1", self.n1)), self.net.now)   # node 2 may be lost
            self.settle()
        return done


@pytest.fixture
def world(tmp_path):
    world = OneSided(tmp_path)
    try:
        for i, number in enumerate(("101", "201"), 1):
            world.add_phone(number, i, dead_ms=2000)
        world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 5000, "registered")
        world.run_until(lambda: all(h.standby_link.up and tuple(h.standby_link.address[:2]) == NODE1
                                    for h in (world.a, world.b)), 5000, "standby sessions at node 1")
        yield world
    finally:
        world.close()


def _call_at(core):
    """(caller, callee, the two legs' link names) of each call core switches."""
    return sorted((c.caller, c.callee, tuple(sorted(leg.link.name for leg in (c.a, c.b))))
                  for c in core.switch.calls.values())


def _talk_and_hang_up(world, hangs_up, other):
    """hangs_up and other hear each other in order for 1.2 s; hangs_up hangs up: both idle, "normal clearing"."""
    p = world.phones
    _listen(world, 1200)
    _in_order(p[other], p[hangs_up], 50)
    _in_order(p[hangs_up], p[other], 50)
    world.hangup(hangs_up)
    world.run_until(lambda: p[hangs_up].idle and p[other].idle, 2000, "hung up")
    assert p[hangs_up].causes()[-1] == wire.CAUSE_NORMAL == p[other].causes()[-1]


def test_a_site_cut_off_from_its_node_alone_keeps_its_call_with_a_site_that_still_hears_that_node(world):
    a, b, p = world.a, world.b, world.phones
    world.call("101", "201")
    assert _call_at(world.main) == [("101", "201", ("site-a", "site-b"))] and not world.n1.switch.calls
    world.run(400)                          # the call's key written (the 200 ms writer)
    uid = next(iter(world.main.switch.calls.values())).uid
    assert KEY % uid in world.calls.keys

    world.cut = True
    cut = world.net.now
    world.run_until(lambda: tuple(a.main_address[:2]) == NODE1, 4000, "site a switched to node 1")
    # node 1 took the call over; site b, still at home at node 2, moved its leg to its standby session at node 1
    # on node 1's word, and node 2 forgot its copy: nothing said to either phone, nothing recorded there
    world.run_until(lambda: not world.main.switch.calls and b.standby_link.legs == 1, 1000, "the call moved")
    assert world.net.now - cut <= 3000
    assert _call_at(world.n1) == [("101", "201", ("site-a", "site-b"))]
    assert tuple(b.main_address[:2]) == MAIN and b.main_link.up and b.main_link.legs == 0
    assert b.stats.counters["calls moved to the standby node"] == 1
    assert world.n1.stats.counters["calls moved to a standby session"] == 1
    assert world.main.stats.counters["calls taken over by another node"] == 1
    assert p["101"].connected and p["201"].connected and p["101"].causes() == [] == p["201"].causes()

    # audio both ways, through node 1, in order, for longer than it took node 2 to end the call before
    _listen(world, 1200)
    _in_order(p["201"], p["101"], 50)
    _in_order(p["101"], p["201"], 50)
    # the path comes back: site a's old session logs in again at node 2, as its standby; the call is untouched
    world.cut = False
    world.run_until(lambda: a.standby_link.up and tuple(a.standby_link.address[:2]) == MAIN, 15000,
                    "site a's standby session at node 2")
    _listen(world, 1200)
    _in_order(p["201"], p["101"], 50)
    _in_order(p["101"], p["201"], 50)
    assert p["101"].causes() == [] == p["201"].causes() and not world.main.switch.calls
    # site b's home is still node 2, site a's node 1 now (its rendezvous order moves it back once idle)
    assert world.locations.keys[("host", "site-b")] == 2 and world.locations.keys[("host", "site-a")] == 1

    # a forged or stale naming of a call the standby node does not have moves nothing
    standby = world.n1.links_by_name[("host", "site-b")]
    assert standby in world.n1.standby_links
    standby.send_signal(wire.NODES, {wire.IE_STANDBY: 0, wire.IE_CALL_NO: 77, wire.IE_PEER_CALL_NO: 999},
                        world.net.now)
    world.run(100)
    assert b.stats.drops["standby: no such call to move"] == 1 and b.standby_link.legs == 1

    world.hangup("201")
    world.run_until(lambda: p["101"].idle and p["201"].idle, 2000, "hung up")
    assert p["101"].causes() == [wire.CAUSE_NORMAL] == p["201"].causes()
    # recorded once (the nodes here share one database, as they share PostgreSQL), under the call's uid: node 1's
    # record; node 2 forgot its copy unrecorded
    world.run(100)                          # the record follows the call's ended key (records_settled)
    assert [(r.uid, r.caller, r.callee, r.cause) for r in world.n1.directory.call_records()] == [
        (uid, "101", "201", "normal clearing")]
    assert b.standby_link.legs == 0 and not world.n1.switch.calls and not world.main.switch.calls
    world.run(200)
    assert '"ended": true' in world.calls.keys[KEY % uid]
    # site b calls through its home node as before
    world.call("201", "101")
    assert [c.callee for c in world.main.switch.calls.values()] == ["101"]
    assert not world.net.errors


def test_a_call_moved_to_the_standby_session_goes_on_when_the_home_node_is_then_lost(world):
    """After the one-sided switch, site b's home (node 2) dies too: site b switches to node 1, where its moved
    leg already is; the leg goes back to the site's main session with it, and the call goes on."""
    a, b, p = world.a, world.b, world.phones
    world.call("101", "201")
    world.run(400)
    world.cut = True
    world.run_until(lambda: not world.main.switch.calls and b.standby_link.legs == 1, 5000, "the call moved")
    world.stop_main()                        # node 2 killed -9: site b hears nothing more from it
    world.run_until(lambda: tuple(b.main_address[:2]) == NODE1, 6000, "site b switched to node 1")
    assert b.main_link.legs == 1 and b.standby_link.legs == 0 and not b.unconfirmed
    assert p["101"].causes() == [] == p["201"].causes()
    _talk_and_hang_up(world, "101", "201")
    world.run(100)                          # the record follows the call's ended key (records_settled)
    assert [(r.caller, r.callee, r.cause) for r in world.n1.directory.call_records()] == [
        ("101", "201", "normal clearing")]
    assert not world.net.errors


@pytest.fixture
def apart(tmp_path):
    """Site a at node 2 and site b at node 1, each with its standby session at the other node
    (tests/test_cluster_direct_loss.py's world), no datagram between the two sites (the call is relayed)."""
    world = LosableSites(tmp_path)
    try:
        world.blocked |= {(SITE_A, SITE_B), (SITE_B, SITE_A)}
        world.run_until(lambda: world.a.standby_link.up and world.b.standby_link.up, 5000, "standby sessions up")
        yield world
    finally:
        world.close()


def test_a_cross_node_call_goes_on_when_its_callers_node_falls_silent_towards_the_caller_alone(apart):
    """101 (site a, node 2) calls 201 (site b, node 1): a call between the nodes, a half at each. The path between
    site a and node 2 alone is then cut, both ways: node 2 runs on, its trunk to node 1 up. Site a switches to node
    1, which splices node 2's half to its own (as when node 2 is lost, but its leg towards node 2 not held: node 2
    lives) and tells node 2, which forgets its half unheard. Before, node 1 found no held leg and never took the
    half over: 201 heard nothing from 101 until a phone hung up."""
    world, p = apart, apart.phones
    world.call("101", "201")
    theirs = world.node_call(world.main).uid       # node 2's half: the caller's node records the call
    world.run(400)
    world.blocked |= {(SITE_A, MAIN), (MAIN, SITE_A)}
    cut = world.net.now
    world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE1, 4000, "site a switched to node 1")
    world.run_until(lambda: not world.main.switch.calls and len(world.n1.switch.calls) == 1, 1000,
                    "node 1 has the whole call, node 2 none")
    assert world.net.now - cut <= 3000
    call = world.node_call(world.n1)
    assert (call.a.link.name, call.b.link.name) == ("site-a", "site-b") and not world.n1.xnode.held
    assert world.main.stats.counters["calls taken over by another node"] == 1
    assert world.main.xnode.up(1) is not None and world.n1.xnode.up(2) is not None   # the trunk never went down
    assert p["101"].causes() == [] == p["201"].causes()
    _listen(world, 1200)
    _in_order(p["201"], p["101"], 50)
    _in_order(p["101"], p["201"], 50)
    world.blocked -= {(SITE_A, MAIN), (MAIN, SITE_A)}
    world.run_until(lambda: world.a.standby_link.up and tuple(world.a.standby_link.address[:2]) == MAIN, 15000,
                    "site a's standby session at node 2 again")
    _listen(world, 1200)
    _in_order(p["201"], p["101"], 50)
    assert not world.main.switch.calls
    world.hangup("201")
    world.run_until(lambda: p["101"].idle and p["201"].idle, 2000, "hung up")
    assert p["101"].causes() == [wire.CAUSE_NORMAL] == p["201"].causes()
    # recorded once, under node 2's uid (it was the caller's node), by node 1; node 2 recorded nothing
    world.run(100)                          # the record follows the call's ended key (records_settled)
    assert [(r.uid, r.caller, r.callee, r.cause) for r in world.n1.directory.call_records()] == [
        (theirs, "101", "201", "normal clearing")]
    assert not world.net.errors


def _cuttable(world):
    """A set of address pairs (frozensets) between which nothing passes, either way, while in it."""
    cut = set()
    send = world.net.send

    def filtered(data, source, destination):
        if frozenset((tuple(source[:2]), tuple(destination[:2]))) in cut:
            return
        send(data, source, destination)
    world.net.send = filtered
    return cut


def _sites_at_three_nodes(world):
    """LosableThree's 101 (site a, node 2) and 201 (site b, node 1) registered, site a's standby up at node 3."""
    world.add_phone("101", 1, dead_ms=2000)
    world.add_phone("201", 2, dead_ms=2000)
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 5000, "registered")
    world.run_until(lambda: world.a.standby_link.up and tuple(world.a.standby_link.address[:2]) == NODE3, 5000,
                    "site a's standby at node 3")


def _dial_with_node_2_cut_from_site_a(world, cut):
    """_sites_at_three_nodes; from now on what node 2 sends site a is lost while cut["to site a"], and what site a
    sends node 2 while cut["from site a"]. 101 dials 201: node 2 passes the call on and 201 rings through node 1,
    while site a never hears its SETUP acknowledged. (101's end, 201's end)"""
    from upbx.common.call import RINGING
    from upbx.host.remote_host import unacknowledged
    _sites_at_three_nodes(world)
    p = world.phones
    send = world.net.send
    site_a = {SITE_A, tuple(world.net.nat.get(SITE_A, SITE_A)[:2])}

    def filtered(data, source, destination):
        if MAIN == tuple(source[:2]) and tuple(destination[:2]) in site_a and cut["to site a"]:
            return
        if MAIN == tuple(destination[:2]) and tuple(source[:2]) in site_a and cut["from site a"]:
            return
        send(data, source, destination)
    world.net.send = filtered
    assert p["101"].phone.dial("201", world.net.now)
    p["101"].flush()
    world.run_until(lambda: p["201"].phone.state == RINGING, 3000, "201 rings through node 1")
    assert wire.SETUP in [t for t, _ies in unacknowledged(world.a.login.channel)]
    return p["101"], p["201"]


def test_a_cross_node_call_goes_on_when_the_silent_nodes_site_switches_to_a_third_node(tmp_path):
    """Three nodes: 101 (site a, node 2) calls 201 (site b, node 1); site a's standby is node 2's successor, node
    3. The path between site a and node 2 alone is cut: site a switches to node 3, which takes node 2's half over
    from its key, with a leg on its trunk to node 1 (node 2's numbers and keys), and names it there; node 1's leg
    towards node 2, not held (node 2 lives), moves to node 3's trunk (`claim_live`), and node 2, told so on its
    trunk, forgets its half unheard. Before, node 1 ignored the naming and 201 heard nothing from 101."""
    from tests.test_cluster_xtransfer_third import LosableThree
    world = LosableThree(tmp_path)
    try:
        assert cluster.successor(2, [1, 2, 3]) == 3
        cut = _cuttable(world)
        p = world.phones
        _sites_at_three_nodes(world)
        world.call("101", "201")
        theirs = next(iter(world.main.switch.calls.values())).uid   # node 2's half: the caller's node's
        world.run(400)
        cut.add(frozenset((SITE_A, MAIN)))   # the path between site a and node 2, both ways
        started = world.net.now
        world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE3, 4000, "site a switched to node 3")
        world.run_until(lambda: not world.main.switch.calls and len(world.n3.switch.calls) == 1, 1000,
                        "node 3 has node 2's half, node 2 none")
        assert world.net.now - started <= 3000
        call = next(iter(world.n3.switch.calls.values()))
        assert call.uid == theirs and {call.a.link.name, call.b.link.kind} == {"site-a", "node"}
        legs = [leg for c in world.n1.switch.calls.values() for leg in (c.a, c.b) if leg.link.kind == "node"]
        assert [leg.link.node for leg in legs] == [3]
        assert world.n1.stats.counters["node trunk: calls moved to another node"] == 1
        assert world.main.stats.counters["calls taken over by another node"] == 1
        assert p["101"].causes() == [] == p["201"].causes()
        _talk_and_hang_up(world, "201", "101")
        # one record, under node 2's uid (the caller's node): node 3 adopted it under that uid, node 1's half is
        # recorded as the caller's node's (recorded_as), node 2 forgot its own unrecorded
        world.run(100)                          # the record follows the call's ended key (records_settled)
        assert [(r.uid, r.caller, r.callee, r.cause) for r in world.n1.directory.call_records()] == [
            (theirs, "101", "201", "normal clearing")]
        assert not world.net.errors
    finally:
        world.close()


def test_a_call_moved_to_the_standby_session_ends_main_host_lost_when_that_node_is_lost(world):
    """After the one-sided switch, node 1 (which carries the call, site b's leg on its standby session there) dies:
    site b's standby session goes down and the call it carried ends "main host lost" at 201; site b stays at home
    at node 2, its session there up."""
    b, p = world.b, world.phones
    world.call("101", "201")
    world.run(400)
    world.cut = True
    world.run_until(lambda: not world.main.switch.calls and b.standby_link.legs == 1, 5000, "the call moved")
    del world.net.endpoints[NODE1]          # node 1 killed -9: nothing more reaches it, it sends nothing
    world.n1.directory.close()
    world.n1 = None
    world.run_until(lambda: p["201"].idle, 5000, "201's call ended")
    assert p["201"].causes() == [wire.CAUSE_MAIN_LOST]
    assert b.standby_link.legs == 0 and not b.switch.calls and tuple(b.main_address[:2]) == MAIN and b.main_link.up
    assert not world.net.errors


def test_a_standby_change_waits_while_the_standby_session_carries_a_call(world):
    """After the one-sided switch site b's standby session at node 1 carries the call. Site b's home node then
    sends a node list in which its successor is node 3 (a node joined: successor(2, [1, 2, 3]) is 3): site b keeps
    the session that carries the call (`standby_again`) and the audio goes on; once the call ends its standby goes
    to node 3, and node 1 logs the old one out (its BYE). Giving it up at once would have cut the call."""
    a, b, p = world.a, world.b, world.phones
    assert cluster.successor(2, [1, 2, 3]) == 3
    world.call("101", "201")
    world.run(400)
    world.cut = True
    world.run_until(lambda: not world.main.switch.calls and b.standby_link.legs == 1, 5000, "the call moved")
    world.main.set_cluster_nodes({1: NODE1, 2: MAIN, 3: NODE3}, world.net.now)
    world.run_until(lambda: b.standby_again, 2000, "site b puts its standby's change off")
    _listen(world, 1200)
    _in_order(p["201"], p["101"], 50)
    _in_order(p["101"], p["201"], 50)
    assert tuple(b.standby_link.address[:2]) == NODE1 and b.standby_link.up and b.standby_link.legs == 1
    assert world.n1.links_by_name[("host", "site-b")] in world.n1.standby_links
    world.hangup("201")
    world.run_until(lambda: p["101"].idle and p["201"].idle, 2000, "hung up")
    assert p["101"].causes() == [wire.CAUSE_NORMAL] == p["201"].causes()
    world.run_until(lambda: tuple(b.standby_link.address[:2]) == NODE3, 2000, "site b's standby at node 3")
    assert not b.standby_again
    world.run_until(lambda: ("host", "site-b") not in world.n1.links_by_name, 2000, "node 1 logged it out")
    assert not world.net.errors


def test_a_phone_at_the_node_named_by_the_standby_node_takes_its_held_call_along(world):
    """A phone straight at node 2 (301, with its standby session at node 1) talks to 101 (site a), holds it and calls
    302 (node 2, its standby at node 1 too). The path between site a and node 2 alone is then cut: site a switches to
    node 1, which takes the held call over and names 301's leg on 301's standby session. 301 switches to node 1 as a
    whole and names both its calls there, the consultation with 302 too; node 1 takes that one over as well (302,
    named on its own standby session, follows). Node 2 keeps neither call; 301 swaps back to 101 and they talk."""
    from upbx.common import lines
    from tests.test_cluster_xgroup import _act, _answer
    p = world.phones
    for i, number in enumerate(("301", "302"), 3):
        world.add_phone(number, i, dead_ms=2000).standby = True
    world.run_until(lambda: all(p[n].phone.registered and p[n].standby_up(NODE1) for n in ("301", "302")), 5000,
                    "301 and 302 with their standby sessions at node 1")
    world.call("301", "101")
    _act(world, "301", lambda ph, now: lines.consult(ph, "302", now))   # 101 held, 302 called
    _answer(world, "302")
    world.run_until(lambda: p["301"].connected and p["302"].connected, 2000, "301 and 302 talk")
    world.run(400)                                  # both calls' keys written
    world.cut = True
    world.run_until(lambda: tuple(p["301"].host) == NODE1, 5000, "301 switched to node 1")
    world.run_until(lambda: len(world.n1.switch.calls) == 2 and not world.main.switch.calls, 5000,
                    "node 1 has both calls, node 2 none")
    assert sorted(sorted(leg.link.name for leg in (c.a, c.b)) for c in world.n1.switch.calls.values()) == [
        ["301", "302"], ["301", "site-a"]]
    _listen(world, 600)
    _in_order(p["302"], p["301"], 20)
    _in_order(p["301"], p["302"], 20)
    _act(world, "301", lambda ph, now: lines.swap(ph, now))
    _listen(world, 600)
    _in_order(p["101"], p["301"], 20)
    _in_order(p["301"], p["101"], 20)
    assert all(p[n].causes() == [] for n in ("101", "302"))
    world.hangup("301")
    world.run_until(lambda: p["101"].idle, 2000, "101's call ended")
    assert p["101"].causes() == [wire.CAUSE_NORMAL] and not world.net.errors


def test_a_node_stopped_and_run_again_does_not_record_the_calls_another_node_carried_on(world):
    """Node 2 stopped (SIGSTOP) during a call between its two sites: both switch to node 1, which takes the call
    over. Node 2 runs again with its copy; the sites' old sessions log in there again as their standbys, which ends
    the copy, cause "unreachable". Its record waits for the call's ended key, which Redis refuses (the key is node
    1's now): dropped. The call is recorded once, by node 1, when 101 hangs up: "normal clearing". Before, node 2's
    record was written first, and PostgreSQL (first one wins) kept "unreachable" with node 2's end."""
    p, n1 = world.phones, world.n1
    world.call("101", "201")
    world.run(400)
    world.pause_main()
    world.run_until(lambda: len(n1.switch.calls) == 1, 5000, "node 1 took the call over")
    world.run(2000)
    node2 = world.paused
    world.resume_main()
    world.run_until(lambda: not node2.switch.calls, 15000, "node 2 ended its copy")
    world.run(1000)
    assert node2.stats.counters["call records of calls another node carries dropped"] == 1
    assert not n1.directory.call_records() and not node2.records_waiting
    _talk_and_hang_up(world, "101", "201")
    world.run(1000)
    assert [(r.caller, r.callee, r.cause) for r in n1.directory.call_records()] == [("101", "201", "normal clearing")]
    assert not world.net.errors


def test_a_record_waits_for_its_calls_ended_key_at_most_ten_seconds(world):
    """Redis does not answer (the test stops serving the call keys): a call's record, which waits for its ended
    key's write, is written all the same RECORD_WAIT_MS after the call ended (PostgreSQL keeps one per uid)."""
    from upbx.host.main_host import RECORD_WAIT_MS
    p = world.phones
    world.call("101", "201")
    world.run(400)
    world.calls.serve = lambda *args: None
    world.hangup("201")
    world.run_until(lambda: p["101"].idle and p["201"].idle, 2000, "hung up")
    ended = world.net.now
    world.run(RECORD_WAIT_MS - 500)
    assert not world.main.directory.call_records() and len(world.main.records_waiting) == 1
    world.run_until(lambda: world.main.directory.call_records(), 1000, "the record written")
    assert RECORD_WAIT_MS <= world.net.now - ended <= RECORD_WAIT_MS + 100
    assert [(r.caller, r.callee, r.cause) for r in world.main.directory.call_records()] == [
        ("101", "201", "normal clearing")]


def test_a_claim_whose_number_is_in_use_on_the_new_trunk_moves_nothing_and_is_counted(tmp_path):
    """The same one-sided switch, with node 1's leg's number already in use on its trunks to node 3 (another call's:
    a clash of numbers classed by another pair of nodes; docs/cluster.md "Call legs per link"): node 1 cannot move
    its leg there (`Switch.move`), so it moves nothing and tells node 2 nothing, counted `node trunk: claimed number
    in use on that trunk`; its leg stays on its trunk to node 2, the other call's leg is untouched, and nothing
    fails. (Untested until session 22.)"""
    from upbx.common.call import CallLeg
    from upbx.host.switch import Call
    from tests.test_cluster_xtransfer_third import LosableThree
    world = LosableThree(tmp_path)
    try:
        cut = _cuttable(world)
        p = world.phones
        _sites_at_three_nodes(world)
        world.call("101", "201")
        world.run(400)
        n1 = world.n1
        [ours] = [leg for c in n1.switch.calls.values() for leg in (c.a, c.b) if leg.link.kind == "node"]
        assert ours.link.node == 2
        others = {}
        for link in n1.xnode._trunks():   # another call's leg with that number on each trunk session to node 3
            if link.node == 3:
                other = CallLeg(ours.call_no, bytes(16), 0)
                other.link = link
                other.call = Call(bytes(8), "302", "202", world.net.now)   # (not in the switch's calls)
                other.call.a = other
                others[n1.switch.key(link, ours.call_no)] = other
        assert others
        n1.switch.legs.update(others)
        cut.add(frozenset((SITE_A, MAIN)))
        world.run_until(lambda: n1.stats.drops.get("node trunk: claimed number in use on that trunk"), 5000,
                        "node 3's claim refused at node 1")
        world.run(500)
        assert ours.link.node == 2 and n1.switch.legs[n1.switch.key(ours.link, ours.call_no)] is ours
        assert all(n1.switch.legs[key] is leg for key, leg in others.items())
        assert "node trunk: calls moved to another node" not in n1.stats.counters
        assert "calls taken over by another node" not in world.main.stats.counters   # node 2 was told nothing
        for key in others:
            del n1.switch.legs[key]
        assert not world.net.errors
    finally:
        world.close()


def test_a_setup_said_again_at_a_third_node_goes_on_as_the_call_the_lost_node_had_passed_on(tmp_path):
    """Three nodes: 101 (site a, node 2, standby at node 3) dials 201 (site b, node 1). Nothing node 2 says to site a
    arrives (its acknowledgement of the SETUP neither); node 2 passes the call on to node 1, where 201 rings, and
    dies. Site a switches to node 3 and says the SETUP again; node 3 sends it on to node 1, which has its half of
    that call held towards node 2: node 3's leg takes the place of the held one (host/main_host.py _setup_again),
    201 rings on, rung once; they talk; one record, node 3's (the caller's node now). Before, node 3's SETUP was a
    second call at node 1: 101 heard "busy" while 201 rang for nobody until the hold ended."""
    from collections import deque
    from upbx.common.call import RINGBACK, RINGING
    from upbx.host.cluster import trunk
    from tests.test_cluster_xtransfer_third import LosableThree
    world = LosableThree(tmp_path)
    try:
        n1 = world.n1
        cut = {"to site a": True, "from site a": False}
        a, b = _dial_with_node_2_cut_from_site_a(world, cut)
        world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
        world.stop_main()
        cut["to site a"] = False
        world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE3, 6000, "site a switched to node 3")
        world.run_until(lambda: a.phone.state == RINGBACK, 3000, "101 hears 201 ring")
        assert n1.stats.counters.get("calls set up again: their half from a lost node") == 1
        world.run(trunk.HOLD_MS + 1000)
        assert a.phone.state == RINGBACK and b.phone.state == RINGING and not n1.xnode.held
        b.take()
        assert [type(e).__name__ for e in b.log].count("Incoming") == 1
        assert b.phone.answer(world.net.now)
        b.flush()
        _talk_and_hang_up(world, "201", "101")
        world.run(100)
        records = [(r.caller, r.callee, r.cause) for r in n1.directory.call_records()]
        assert records == [("101", "201", "normal clearing")]
        assert not world.net.errors
    finally:
        world.close()


def test_a_site_that_switches_after_its_node_left_the_list_keeps_its_standby_at_a_live_node(tmp_path):
    """Site a (node 2, standby at node 3) is idle; node 2 dies, and the other nodes drop it from the cluster's list
    (etcd) before site a notices the silence (4 s idle): the new list reaches site a on its standby session only.
    Site a keeps it, and once it switches to node 3 its standby goes to node 3's successor among the live nodes
    (node 1). Before, it ignored the list there, and its old session, the standby after the switch, went on logging
    in at dead node 2 for good (a clean-clone CI run's failover test saw it: "standby-down ... no answer to
    login" every 5 s)."""
    from tests.test_cluster_xtransfer_third import LosableThree
    world = LosableThree(tmp_path)
    try:
        _sites_at_three_nodes(world)
        assert cluster.successor(3, [1, 3]) == 1
        world.stop_main()
        now = world.net.now
        for core in (world.n1, world.n3):   # etcd's list without node 2
            core.set_cluster_nodes({1: NODE1, 3: NODE3}, now)
        world.run_until(lambda: sorted(n for n, _a in world.a.cluster_nodes) == [1, 3], 2000,
                        "site a heard the list on its standby session")
        world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE3, 6000, "site a switched to node 3")
        world.run_until(lambda: world.a.standby is not None and tuple(world.a.standby_link.address[:2]) == NODE1
                        and world.a.standby_link.up, 3000, "site a's standby at node 1")
        assert not world.net.errors
    finally:
        world.close()


def test_a_setup_said_again_at_a_third_node_before_its_node_is_known_lost_goes_on_as_that_call(tmp_path):
    """As above, but node 2 stays alive for the other nodes: only the path between it and site a is lost, both ways.
    Node 1 never holds its leg towards node 2 (it does when a node's trunk falls silent, 2 s), so the SETUP said
    again must say that its client has just switched (node 3 sends it with IE standby 0): node 1 takes it for its
    half from node 2 all the same, puts node 3's leg in its place and tells node 2 (NODES with the call's id), which
    forgets its half unheard and unrecorded. Before, node 3's SETUP was a second call at node 1 whenever it came
    before node 1 held its leg: 101 heard "busy" while 201 rang for nobody (until session 23 docs/cluster.md listed
    it as not done)."""
    from upbx.common.call import RINGBACK, RINGING
    from upbx.host.cluster import trunk
    from tests.test_cluster_xtransfer_third import LosableThree
    world = LosableThree(tmp_path)
    try:
        n1, n2 = world.n1, world.main
        cut = {"to site a": True, "from site a": False}
        a, b = _dial_with_node_2_cut_from_site_a(world, cut)
        cut["from site a"] = True           # nothing more between site a and node 2; node 2 runs on
        world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE3, 6000, "site a switched to node 3")
        world.run_until(lambda: a.phone.state == RINGBACK, 3000, "101 hears 201 ring")
        assert n1.stats.counters.get("calls set up again: their half from a lost node") == 1
        assert not n1.xnode.held and n1.xnode.up(2) is not None
        world.run_until(lambda: not n2.switch.calls, 1000, "node 2 forgot its half")
        assert n2.stats.counters["calls taken over by another node"] == 1
        world.run(trunk.HOLD_MS + 1000)
        assert a.phone.state == RINGBACK and b.phone.state == RINGING
        b.take()
        assert [type(e).__name__ for e in b.log].count("Incoming") == 1
        assert b.phone.answer(world.net.now)
        b.flush()
        _talk_and_hang_up(world, "201", "101")
        # the path comes back: site a's old session logs in at node 2 again, as its standby; nothing rings
        cut["to site a"] = cut["from site a"] = False
        world.run_until(lambda: world.a.standby_link.up and tuple(world.a.standby_link.address[:2]) == MAIN, 15000,
                        "site a's standby session at node 2")
        assert a.idle and b.idle and not n2.switch.calls and not n1.switch.calls
        records = [(r.caller, r.callee, r.cause) for r in n1.directory.call_records()]
        assert records == [("101", "201", "normal clearing")]
        assert not world.net.errors
    finally:
        world.close()
