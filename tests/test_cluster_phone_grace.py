"""A phone straight at a node with no standby session up keeps its call through the node's loss (issue 16 item 3;
docs/cluster.md "Failover", 2b, "The grace period of a phone without a standby").

A handset with too little heap for a standby session (the 100K .mpy build, docs/handset.md) or whose standby is
not up had its call end "unreachable" the moment its session was lost. Now it keeps the call, logs in at the lost
node's successor (where its call's other party's standby is: all of a node's clients fail over to the same
survivor), names the call there (NODES standby 0 with its number, as a switch does) and the node takes it over
from Redis. tests/test_cluster_phone_lines.py's world: two real node cores in one process, tests/inprocess.py's
PhoneEnd for the phones (following the phone's `host_next` as firmware/events.py does), `CallKeys` for Redis's call
keys. Phones 301 and 302 are at node 2, 303 at node 1; a phone keeps a standby session only where a test says so.
What is asserted: the voice frames that arrive, in order, both ways, the causes the phones see, the nodes' calls.
"""
import pytest

from upbx.common import call as wire_call, wire
from upbx.host.cluster import trunk
from tests.inprocess import MAIN
from tests.test_cluster_forward import NODE1
from tests.test_cluster_phone_lines import Keys
from tests.test_cluster_phone_move import _talk


@pytest.fixture
def world(tmp_path, monkeypatch):
    # the phones take no standby at login, as a handset with too little free heap for one (common/cluster.py _room);
    # _standby gives one to a phone that a test says keeps one
    from upbx.common import cluster
    monkeypatch.setattr(cluster, "_room", lambda: False)
    world = Keys(tmp_path)
    try:
        for i, number in enumerate(("301", "302"), 1):
            world.add_phone(number, i, dead_ms=2000)        # the firmware's keepalive and dead_ms (2 s each)
        world.add_phone_at("303", 7, 1)
        p = world.phones
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        yield world
    finally:
        world.close()


def _standby(world, number):
    end = world.phones[number]
    end.standby = True
    end.phone.standby_keepalive_ms = None
    from upbx.common import standby
    standby.choose(end.phone, world.net.now)
    end.flush()
    world.run_until(lambda: end.standby_up(NODE1), 5000, "%s's standby session at node 1" % number)


def test_a_phone_without_a_standby_keeps_its_call_through_its_nodes_loss(world):
    """301 (no standby) talks to 302 (standby at node 1), both at node 2. Node 2 is lost: 302 switches to node 1 at
    once; 301 notices it within 4 s (a phone at a node without a standby keeps its session alive every 2 s, and 2 s
    of silence after that is its loss), logs in at node 1 (node 2's successor) after its login's first backoff (at
    most 1 s), names the call, and node 1 takes it over: they talk again. Before, 301 noticed the loss 22 s later
    (the node's 20 s keepalive) and its call then ended "unreachable"; 302's ended "main host lost" 10 s after its
    switch."""
    p, n1 = world.phones, world.n1
    _standby(world, "302")
    assert p["301"].phone.standby is None
    world.call("301", "302")
    world.run(400)                                             # the call's key written (the 200 ms writer)
    world.stop_main()
    lost = world.net.now
    world.run_until(lambda: tuple(p["301"].host) == NODE1 and p["301"].phone.registered, 8000,
                    "301 logged in at node 1")
    relogged = world.net.now - lost
    assert p["301"].phone.call is not None and p["301"].causes() == []
    world.run_until(lambda: len(n1.switch.calls) == 1 and {
        leg.link.name for c in n1.switch.calls.values() for leg in (c.a, c.b)} == {"301", "302"}, 2000,
        "node 1 has the call")
    _talk(world, "301", "302")
    assert 2000 <= relogged <= 5000, relogged   # (virtual time) 2 s keepalive + 2 s, the first backoff
    assert n1.stats.counters.get("calls taken over") == 1
    world.hangup("301")
    world.run_until(lambda: p["302"].idle, 2000, "302's call ended")
    assert p["302"].causes() == [wire.CAUSE_NORMAL] and p["301"].causes() == [wire.CAUSE_NORMAL]
    assert MAIN not in world.net.endpoints and not world.net.errors


def test_two_phones_without_a_standby_both_log_in_at_the_successor_and_talk_on(world):
    """Neither phone keeps a standby: both keep the call, both log in at node 1 (the lost node's successor, not each
    its own rendezvous order's next node: a call's two parties must meet at one survivor), and node 1 adopts it
    once both named it."""
    p, n1 = world.phones, world.n1
    world.call("301", "302")
    world.run(400)
    world.stop_main()
    world.run_until(lambda: len(n1.switch.calls) == 1, 9000, "node 1 has the call")
    assert all(tuple(p[n].host) == NODE1 and p[n].phone.registered for n in ("301", "302"))
    _talk(world, "301", "302")
    world.hangup("302")
    world.run_until(lambda: p["301"].idle, 2000, "301's call ended")
    assert p["301"].causes() == [wire.CAUSE_NORMAL]


def test_a_phone_without_a_standby_in_a_call_to_another_node_logs_in_there_and_talks_on(world):
    """301 (node 2, no standby) talks to 303 (node 1): a half at each node. Node 2 is lost; 301 logs in at node 1,
    names the call, and node 1 splices node 2's half to its own: 301 and 303 talk again, node 1 alone."""
    p, n1 = world.phones, world.n1
    world.call("301", "303")
    world.run(400)
    world.stop_main()
    world.run_until(lambda: len(n1.switch.calls) == 1 and not n1.xnode.held and all(
        leg.link.kind == "phone" for c in n1.switch.calls.values() for leg in (c.a, c.b)), 9000,
        "node 1 has the call, spliced")
    _talk(world, "301", "303")
    assert p["301"].causes() == [] == p["303"].causes()


def test_a_phone_whose_grace_login_is_not_answered_ends_its_call_main_host_lost(world):
    """Both nodes are lost: 301's login at node 1 is not answered (4 HELLOs), and its call ends "main host lost", not
    "unreachable" at once; its next login goes to the node after node 1 in its order."""
    p = world.phones
    world.call("301", "302")
    world.run(400)
    world.stop_main()
    del world.net.endpoints[NODE1]                             # node 1 gone too: nothing reaches it
    lost = world.net.now
    world.run_until(lambda: tuple(p["301"].host) == NODE1, 6000, "301's login goes to node 1")
    assert p["301"].phone.call is not None and p["301"].causes() == []
    world.run_until(lambda: p["301"].idle, 9000, "301's call ended")
    assert p["301"].causes() == [wire.CAUSE_MAIN_LOST]
    assert 7000 <= world.net.now - lost <= 10000, world.net.now - lost   # 4 s, the backoff, 4 HELLOs a second apart
    assert tuple(p["301"].host) == MAIN                       # the node after node 1 in a two-node cluster


def test_a_call_a_phone_names_that_the_node_cannot_take_over_ends_main_host_lost(world):
    """Redis lost the call's key: 301 (no standby) logs in at node 1 and names its call, which node 1 cannot find.
    10 s later node 1 ends it at the phone "main host lost" (a RELEASE with its own number for it): before, the
    call stayed up in silence until the user hung up."""
    p, n1 = world.phones, world.n1
    world.call("301", "302")
    world.run(400)
    world.calls.keys.clear()
    writes = world.calls.serve
    world.calls.serve = lambda name, core, now: writes(name, core, now) if core is n1 else None   # node 2's writes lost
    world.stop_main()
    world.run_until(lambda: tuple(p["301"].host) == NODE1 and p["301"].phone.registered, 8000,
                    "301 logged in at node 1")
    named = world.net.now
    world.run_until(lambda: p["301"].idle, 12000, "301's call ended")
    assert 9500 <= world.net.now - named <= 10700, world.net.now - named
    assert p["301"].causes() == [wire.CAUSE_MAIN_LOST]
    assert n1.stats.counters.get("takeover: phone's call ended, not found") >= 1
    assert not n1.switch.calls and not world.net.errors


def test_a_conference_party_without_a_standby_comes_back_to_the_conference_mixed_again(tmp_path, monkeypatch):
    """tests/test_cluster_conf_failover.py's conference through its mixing node's loss, one party without a standby:
    301 (node 2, standby at node 1) conferences 101 (site a, node 2, standby at node 1) and 302 (node 2, no standby).
    Node 2 is lost: 301 and site a switch at once and node 1 mixes the conference again from the calls' keys; 302
    notices within 4 s, logs in at node 1 and names its call, which node 1 puts back into the conference. Everyone
    hears the other two (each phone sends its own tone, Goertzel on what each receives), never itself."""
    from upbx.common import cluster
    from tests.inprocess import SITE_A
    from tests.test_cluster_conf_failover import ToneKeys
    from tests.test_cluster_xconf import _everyone_hears_the_others, _parties, _three_way
    monkeypatch.setattr(cluster, "_room", lambda: False)
    world = ToneKeys(tmp_path)
    try:
        p, n1 = world.phones, world.n1
        world.add_tone("101", 1, SITE_A)
        world.add_tone("301", 2, MAIN)
        world.add_tone("302", 3, MAIN)
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        _standby(world, "301")
        world.run_until(lambda: world.a.standby_link.up, 5000, "site a's standby session at node 1")
        assert p["302"].phone.standby is None
        everyone = ["101", "301", "302"]
        _three_way(world, "301", "101", "302")
        assert _parties(world.main) == [everyone]
        _everyone_hears_the_others(world, everyone)
        world.run(400)
        world.stop_main()
        lost = world.net.now
        world.run_until(lambda: _parties(n1) == [everyone] and p["302"].phone.registered, 9000,
                        "node 1 mixes the conference again, 302 among its parties")
        assert world.net.now - lost <= 6000 and tuple(p["302"].host) == NODE1
        _everyone_hears_the_others(world, everyone)
        assert p["301"].causes() == [wire.CAUSE_CONFERENCE] and p["101"].causes() == [] == p["302"].causes()
        world.hangup("302")
        world.hangup("101")
        world.run_until(lambda: p["301"].idle, 2000, "the conference ended")
        assert not world.net.errors
    finally:
        world.close()


def test_a_caller_node_stopped_and_run_again_leaves_the_record_of_its_spliced_half_to_the_other_node(world):
    """301 (node 2, no standby) calls 303 (node 1): a half at each node, node 2 the caller's, which records the call.
    Node 2 is stopped (SIGSTOP): node 1 sees its trunk fall silent within 2 s and holds its half; 301 notices within
    4 s, logs in at node 1 and names the call, and node 1 splices node 2's half into its own (recording the call under
    node 2's uid from then on), and makes node 2's key of the call its own (`spliced_into`). Node 2 runs again with its
    copy: once node 1's trunk login to it is up again, node 1 tells it the call is carried on elsewhere, and node 2
    forgets its copy, unheard and unrecorded. One record of the call, node 1's, "normal clearing" when 303 hangs up.
    Before (docs/cluster.md, "Not covered" until session 19), node 2's copy stayed (90 s and more: its phone's
    session had not timed out), and the key was still node 2's, so its record, whenever its copy ended, would have
    been written first, "unreachable": PostgreSQL keeps the first of a uid. (A phone that switches within 1.5 s,
    before node 1 sees the trunk's silence, names the call while node 2 still looks alive: node 1 then tells node 2
    at once, a message node 2 reads first when it runs again.)"""
    import json
    from upbx.host.cluster.calls import KEY
    p, n1 = world.phones, world.n1
    world.call("301", "303")
    world.run(400)
    [theirs] = world.main.switch.calls.values()
    world.pause_main()
    world.run_until(lambda: len(n1.switch.calls) == 1 and not n1.xnode.held and all(
        leg.link.kind == "phone" for c in n1.switch.calls.values() for leg in (c.a, c.b)), 9000,
        "node 1 spliced node 2's half")
    assert n1.stats.counters.get("calls taken over") == 1
    world.run(1000)
    assert json.loads(world.calls.keys[KEY % theirs.uid])["node"] == "n1"
    node2 = world.paused
    world.resume_main()
    world.run_until(lambda: not node2.switch.calls, 90000, "node 2 ended its copy")
    world.run(1000)
    assert not node2.records_waiting and not node2.directory.call_records() and not n1.directory.call_records()
    assert n1.stats.counters.get("node trunk: spliced calls told to their node") == 1
    assert node2.stats.counters.get("calls taken over by another node") == 1
    _talk(world, "301", "303")
    world.hangup("303")
    world.run_until(lambda: p["301"].idle, 2000, "301's call ended")
    world.run(1000)
    assert p["301"].causes() == [wire.CAUSE_NORMAL]
    # (both nodes' directories are the one database, as PostgreSQL is a real cluster's)
    assert [(r.caller, r.callee, r.cause, r.uid) for r in n1.directory.call_records()] == [
        ("301", "303", "normal clearing", theirs.uid)]
    assert not world.net.errors


def test_a_call_hung_up_during_the_grace_period_ends_at_the_other_party_once_the_phone_logs_in(world):
    """301 (no standby) talks to 302 (standby at node 1), both at node 2. Node 2 is lost; 302 switches at once. 301's
    user hangs up after 301 noticed the loss and before its login at node 1 is up: its RELEASE has no session to go
    on. Once up at node 1, 301 names the call and then releases it: node 1 takes the call over (302 named it too)
    and passes the RELEASE on, and 302's call ends "normal clearing" at once. Before, 302 heard silence until its
    switch's watch ended the call "main host lost" 10 s after the switch."""
    p, n1 = world.phones, world.n1
    _standby(world, "302")
    world.call("301", "302")
    world.run(400)
    world.stop_main()
    world.run_until(lambda: tuple(p["301"].host) == NODE1 and not p["301"].phone.registered, 8000,
                    "301 lost its session, its next login at node 1")
    assert p["301"].phone.call is not None and p["302"].phone.call is not None
    world.hangup("301")
    assert p["301"].causes() == [wire.CAUSE_NORMAL]
    world.run_until(lambda: p["301"].phone.registered, 3000, "301 logged in at node 1")
    up = world.net.now
    world.run_until(lambda: p["302"].idle, 2000, "302's call ended")
    assert world.net.now - up <= 500, world.net.now - up
    assert p["302"].causes() == [wire.CAUSE_NORMAL]
    assert n1.stats.counters.get("calls taken over") == 1 and not n1.switch.calls
    assert not world.net.errors


# a call being dialled, or answered, as the node dies (docs/cluster.md "A call dialled as its node dies"): a phone
# without a standby says again at the successor what the lost session never had acknowledged, as a switch does

def _dial(world, caller, callee):
    end = world.phones[caller]
    assert end.phone.dial(callee, world.net.now)
    end.flush()


def _dies_silently(world):
    """Node 2 is lost as a node killed -9 is: what it said last never leaves it."""
    from collections import deque
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
    world.stop_main()


def _set_up_at_node_1(world, lost):
    """301 (no standby) logged in at node 1, its SETUP said again there: 303 rings, answers, they talk, 301 hangs
    up; node 1 records the call once. 303 rang 2-6 s after the loss (virtual time; lost None: not checked)."""
    from tests.test_cluster_setup_loss import _phone_talks
    a, b = world.phones["301"], world.phones["303"]
    world.run_until(lambda: b.phone.state == wire_call.RINGING and tuple(a.host) == NODE1, 8000, "303 rings")
    if lost is not None:
        assert 2000 <= world.net.now - lost <= 6000, world.net.now - lost
    assert a.phone.state == wire_call.RINGBACK and a.causes() == []
    _phone_talks(world)


def test_a_phone_without_a_standby_that_dials_after_its_node_died_sets_the_call_up_at_the_successor(world):
    """301 (node 2, no standby) dials 303 (node 1) after node 2 died: its SETUP is never acknowledged. 301 notices
    the loss within 4 s, keeps the call, logs in at node 1 and says the SETUP again there: 303 rings, they talk.
    Before, 301's call ended "unreachable" the moment its session was lost."""
    world.stop_main()
    lost = world.net.now
    world.run(300)
    _dial(world, "301", "303")
    _set_up_at_node_1(world, lost)


def test_a_phone_without_a_standby_whose_setup_its_node_read_as_it_died_sets_it_up_at_the_successor(world):
    """Node 2 reads 301's SETUP and dies before anything it said leaves it: the same, the SETUP said again."""
    _dial(world, "301", "303")
    assert any(world.tick(until=lambda: world.main.stats.counters.get("msg SETUP")) for _ in range(10))
    _dies_silently(world)
    _set_up_at_node_1(world, world.net.now)


def test_a_phone_without_a_standby_whose_call_its_node_acknowledged_and_never_named_ends_main_host_lost(world):
    """Node 2 acknowledged 301's SETUP and dies before it named the call (no number of its for it): nothing can carry
    the call on. 301 ends it "main host lost" as it notices the loss (before: "unreachable"), logs in at node 1 as
    it would idle, and its next call goes through."""
    from upbx.host.remote_host import unacknowledged
    a = world.phones["301"]
    _dial(world, "301", "303")
    assert any(world.tick(until=lambda: not unacknowledged(a.phone.login.channel)) for _ in range(10))
    _dies_silently(world)
    assert a.phone.call is not None and not a.phone.call.peer_call_no
    lost = world.net.now
    world.run_until(lambda: a.idle, 5000, "301's call ended")
    assert a.causes() == [wire.CAUSE_MAIN_LOST] and world.net.now - lost <= 4500
    world.run_until(lambda: tuple(a.host) == NODE1 and a.phone.registered, 4000, "301 logged in at node 1")
    world.run(trunk.HOLD_MS + 1000)   # 303, rung by node 2 or not, is idle again once node 1's hold ends
    assert world.phones["303"].idle
    a.take()
    a.log = []
    _dial(world, "301", "303")
    _set_up_at_node_1(world, None)


def test_a_phone_without_a_standby_that_answers_as_its_node_dies_is_connected_at_the_successor(world):
    """303 (node 1) calls 301 (node 2, no standby); 301 rings; node 2 dies and 301 answers at once: its ANSWER goes
    to the dead node. 301 keeps the call, logs in at node 1, names it and says the ANSWER again; node 1, taking node
    2's half over, passes it on: 303 is connected and they talk. Before, 301 talked to nobody while 303 heard it ring
    until node 1's hold of its half ended (10 s)."""
    from tests.test_cluster_xgroup import _in_order, _listen
    p, n1 = world.phones, world.n1
    a, b = p["303"], p["301"]
    _dial(world, "303", "301")
    world.run_until(lambda: b.phone.state == wire_call.RINGING and a.phone.state == wire_call.RINGBACK, 3000,
                    "301 rings")
    world.run(400)                                  # the keys written
    _dies_silently(world)
    assert b.phone.answer(world.net.now)
    b.flush()
    world.run_until(lambda: a.connected and b.connected and tuple(b.host) == NODE1, 8000, "303 connected")
    _listen(world, 600)
    _in_order(b, a, 20)
    _in_order(a, b, 20)
    assert n1.stats.counters.get("calls taken over") == 1
    world.hangup("303")
    world.run_until(lambda: a.idle and b.idle, 2000, "hung up")
    assert a.causes() == [wire.CAUSE_NORMAL] == b.causes() and not world.net.errors


def test_a_call_answered_just_before_the_node_dies_stays_answered_when_neither_phone_has_a_standby(world):
    """tests/test_cluster_conf_failover.py's call answered as node 2 dies, its key still ringing, between two phones
    without a standby: both log in at node 1, name the call, and 302, which answered it, says its ANSWER again
    (common/grace.py `name`): node 1 answers the call it took over as ringing, and it stays up past the ring
    timeout (30 s). Before, node 1 ended it "no answer" then."""
    from tests.test_cluster_conf_failover import _answered_as_node_2_dies
    p, n1 = world.phones, world.n1
    _answered_as_node_2_dies(world, "301", "302")
    world.run_until(lambda: [c.state for c in n1.switch.calls.values()] == ["answered"], 9000,
                    "node 1 has the call, answered")
    world.run(31000)
    assert p["301"].connected and p["302"].connected and [c.state for c in n1.switch.calls.values()] == ["answered"]
    _talk(world, "301", "302")
    world.hangup("301")
    world.run_until(lambda: p["302"].idle, 2000, "hung up")
    assert p["301"].causes() == [wire.CAUSE_NORMAL] == p["302"].causes() and not world.net.errors
