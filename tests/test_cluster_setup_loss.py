"""A call dialled as its node dies (issue 16; docs/cluster.md "A call dialled as its node dies").

tests/test_cluster_direct_loss.py's world: site a's remote host at node 2 with its standby session at node 1, site
b's at node 1; node 2 is lost as a node killed -9 is (nothing more reaches it, it sends nothing). 101 (site a)
dials 201 (site b) at three moments of node 2's death:

- after it: the SETUP goes to the dead node and is never acknowledged;
- as node 2 reads the SETUP: node 2 has the call, but nothing it sent (the acknowledgement, the SETUP to node 1)
  leaves it;
- after node 2 acknowledged the SETUP and before any answer came back: node 2 had the call and said nothing that
  names it (no number of its own for it).

Until session 21 each of these waited for the phone's own 20 s set-up timer and ended "unreachable". Now the
remote host says again on the session it switches to every SETUP the old node never acknowledged (a new call
there), and ends at once, "main host lost", a call the old node acknowledged but never named: nothing can carry
it on.
"""
from collections import deque

import pytest

from upbx.common import wire
from upbx.common.call import RINGBACK, RINGING
from upbx.host.cluster import trunk
from upbx.host.remote_host import unacknowledged
from tests.inprocess import MAIN, SITE_A
from tests.test_cluster_direct_loss import world, NODE1, _answer, _talk_and_hang_up  # noqa: F401
from tests.test_cluster_phone_lines import Keys
from tests.test_cluster_xgroup import _answer as _xanswer, _in_order as _xin_order, _listen

_SETUP_SAID = wire.SETUP


def _dial(world, caller, callee):
    a = world.phones[caller]
    assert a.phone.dial(callee, world.net.now)
    a.flush()


def _switched(world):
    world.run_until(lambda: tuple(world.a.main_address[:2]) == NODE1, 5000, "site a at node 1")


def _set_up_at_node_1(world):
    """Site a switches to node 1 and says the SETUP again there: 201 rings, 101 hears it; they talk, 101 hangs
    up, node 1 records the call once."""
    _switched(world)
    a, b = world.phones["101"], world.phones["201"]
    world.run_until(lambda: b.phone.state == RINGING and a.phone.state == RINGBACK, 3000, "201 rings")
    assert world.a.stats.counters.get("calls set up again after a switch") == 1
    assert world.a.stats.counters.get("call messages said again after a switch") is None
    _answer(world, "201")
    _talk_and_hang_up(world, "101", "201")


def test_a_call_dialled_after_its_node_died_is_set_up_at_the_successor(world):
    world.lose_node_2()
    world.run(300)
    _dial(world, "101", "201")
    world.run(100)
    assert wire.SETUP in [t for t, _ies in unacknowledged(world.a.login.channel)]   # towards the dead node
    _set_up_at_node_1(world)


def test_a_setup_node_2_read_as_it_died_is_set_up_at_the_successor(world):
    _dial(world, "101", "201")
    # node 2 reads it, and dies before it says anything back: what it sent for it never leaves
    assert any(world.tick(until=lambda: world.main.stats.counters.get("msg SETUP")) for _ in range(10))
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
    world.lose_node_2()
    assert wire.SETUP in [t for t, _ies in unacknowledged(world.a.login.channel)]
    _set_up_at_node_1(world)


@pytest.mark.parametrize("rings", [False, True], ids=["before-node-1-heard-of-it", "ringing-at-node-1"])
def test_a_call_the_lost_node_acknowledged_and_never_named_ends_main_host_lost_at_the_switch(world, rings):
    """Node 2 acknowledged the SETUP; it dies before it names the call to site a (its ALERTING): as it asks where
    201 is (rings False), or once its SETUP reached node 1 and 201 rings there (rings True). 101's call ends "main
    host lost" as site a switches; a 201 that rings goes on ringing for nobody until node 1's hold of its half
    ends, "main host lost". Then 101 calls 201 again, through node 1."""
    _dial(world, "101", "201")
    if rings:
        assert any(world.tick(until=lambda: bool(world.n1.switch.calls)) for _ in range(20))
    else:   # up to the moment site a hears node 2's acknowledgement of its SETUP
        assert any(world.tick(until=lambda: not unacknowledged(world.a.login.channel)) for _ in range(10))
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)   # what node 2 said last never leaves
    world.lose_node_2()
    a, b = world.phones["101"], world.phones["201"]
    leg = next(leg for leg in world.a.switch.legs.values() if leg.link is world.a.main_link)
    assert not leg.peer_call_no and not unacknowledged(world.a.login.channel)   # acknowledged, not named
    _switched(world)
    world.run_until(lambda: a.idle, 100, "101's call ended at the switch")
    assert a.causes() == [wire.CAUSE_MAIN_LOST]
    assert not world.a.switch.calls and world.a.stats.counters.get("calls set up again after a switch") is None
    assert world.a.stats.counters.get("calls being set up lost with the node") == 1
    assert (b.phone.state == RINGING) is rings
    world.run(trunk.HOLD_MS + 1000)
    assert b.idle and b.causes() == ([wire.CAUSE_MAIN_LOST] if rings else [])
    assert not world.n1.switch.calls and not world.b.switch.calls and not world.net.errors
    assert world.n1.stats.counters.pop("node trunk: calls lost", 0) == (1 if rings else 0)   # its half
    # the caller's node records a call: node 2, lost with it; node 1 records the half it ended
    lost = [("101", "201", "main host lost")] if rings else []
    assert [(r.caller, r.callee, r.cause) for r in world.n1.directory.call_records()] == lost
    # 101 calls again, now at node 1: it goes through
    a.take()
    b.take()
    a.log, b.log = [], []   # the first call's events: asserted above
    _dial(world, "101", "201")
    world.run_until(lambda: b.phone.state == RINGING, 3000, "201 rings")
    _answer(world, "201")
    _talk_and_hang_up(world, "101", "201", earlier=lost)


# a phone straight at a node with a standby session (common/standby.py `switch`): the same three moments

@pytest.fixture
def phones(tmp_path):
    """tests/test_cluster_phone_lines.py's world: 301 straight at node 2 with its standby session at node 1,
    303 straight at node 1."""
    world = Keys(tmp_path)
    try:
        world.add_phone("301", 1, dead_ms=2000).standby = True
        world.add_phone_at("303", 7, 1)
        p = world.phones
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        world.run_until(lambda: p["301"].standby_up(NODE1), 5000, "301's standby session at node 1")
        yield world
    finally:
        world.close()


def _phone_switched(world):
    world.run_until(lambda: tuple(world.phones["301"].host) == NODE1, 4000, "301 switched to node 1")


def _phone_talks(world):
    """301's SETUP said again at node 1: 303 rings, they talk, 301 hangs up; node 1 records the call once."""
    a, b = world.phones["301"], world.phones["303"]
    _xanswer(world, "303")
    world.run_until(lambda: a.connected and b.connected, 2000, "301 and 303 talk")
    _listen(world, 600)
    _xin_order(b, a, 20)
    _xin_order(a, b, 20)
    world.hangup("301")
    world.run_until(lambda: a.idle and b.idle, 2000, "hung up")
    assert a.causes() == [wire.CAUSE_NORMAL] == b.causes()
    world.run(100)
    assert [(r.caller, r.callee, r.cause) for r in world.n1.directory.call_records()] == [
        ("301", "303", "normal clearing")]
    assert not world.n1.switch.calls and not world.net.errors


def _node_2_dies_silently(world):
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)   # what node 2 said last never leaves
    world.stop_main()


def test_a_phone_at_a_node_that_died_sets_its_call_up_at_its_standby_node(phones):
    world = phones
    world.stop_main()
    world.run(300)
    _dial(world, "301", "303")
    world.run(100)
    assert _SETUP_SAID in [t for t, _ies in unacknowledged(world.phones["301"].phone.login.channel)]
    _phone_switched(world)
    _phone_talks(world)


def test_a_phone_whose_setup_its_node_read_as_it_died_sets_it_up_at_its_standby_node(phones):
    world = phones
    _dial(world, "301", "303")
    assert any(world.tick(until=lambda: world.main.stats.counters.get("msg SETUP")) for _ in range(10))
    _node_2_dies_silently(world)
    _phone_switched(world)
    _phone_talks(world)


def test_a_phones_call_its_node_acknowledged_and_never_named_ends_main_host_lost_at_the_switch(phones):
    world = phones
    a = world.phones["301"]
    _dial(world, "301", "303")
    assert any(world.tick(until=lambda: not unacknowledged(a.phone.login.channel)) for _ in range(10))
    _node_2_dies_silently(world)
    call = a.phone.call
    assert call is not None and not call.peer_call_no
    _phone_switched(world)
    assert a.idle and a.causes() == [wire.CAUSE_MAIN_LOST]
    world.run(trunk.HOLD_MS + 1000)
    assert world.phones["303"].idle and not world.n1.switch.calls and not world.net.errors
    a.take()
    a.log = []   # the first call's events: asserted above
    _dial(world, "301", "303")
    _phone_talks(world)


# a call's messages in flight as the node dies: said again at the switch, kept by the node for the call it takes over

def test_a_phone_that_answers_as_its_node_dies_is_connected_at_its_standby_node(phones):
    """303 (node 1) calls 301 (node 2); 301 rings; node 2 dies and 301 answers at once: its ANSWER goes to the dead
    node. At its switch 301 says it again; node 1, taking node 2's half over from Redis, keeps it for the call and
    passes it on: 303 is connected and they talk (before, 301 talked to nobody while 303 heard it ring)."""
    world = phones
    a, b = world.phones["303"], world.phones["301"]
    _dial(world, "303", "301")
    world.run_until(lambda: b.phone.state == RINGING and a.phone.state == RINGBACK, 3000, "301 rings")
    world.run(400)                                  # the keys written
    _node_2_dies_silently(world)
    assert b.phone.answer(world.net.now)
    b.flush()
    _phone_switched(world)
    world.run_until(lambda: a.connected and b.connected, 3000, "303 connected")
    _listen(world, 600)
    _xin_order(b, a, 20)
    _xin_order(a, b, 20)
    assert world.n1.stats.counters.get("calls taken over") == 1
    world.hangup("303")
    world.run_until(lambda: a.idle and b.idle, 2000, "hung up")
    assert a.causes() == [wire.CAUSE_NORMAL] == b.causes() and not world.net.errors


def test_a_phone_that_hangs_up_as_its_node_dies_ends_the_call_at_its_standby_node(phones):
    """301 (node 2) talks to 303 (node 1); node 2 dies and 301 hangs up at once: its RELEASE goes to the dead node.
    At its switch 301 says it again; node 1 takes the call over and ends it: 303 hears "normal clearing" at once,
    not "main host lost" when node 1's hold of its half ends (10 s); one record."""
    world = phones
    a, b = world.phones["301"], world.phones["303"]
    _dial(world, "301", "303")
    _xanswer(world, "303")
    world.run_until(lambda: a.connected and b.connected, 2000, "301 and 303 talk")
    world.run(400)
    _node_2_dies_silently(world)
    world.hangup("301")
    assert a.idle and b.connected
    world.run_until(lambda: b.idle, 4000, "303's call ended")
    assert b.causes() == [wire.CAUSE_NORMAL] and world.net.now < 100000
    assert tuple(a.host) == NODE1                   # 301 switched (idle: it named no call, it said the RELEASE)
    world.run(100)
    assert [(r.caller, r.callee, r.cause) for r in world.n1.directory.call_records()] == [
        ("301", "303", "normal clearing")]
    assert not world.n1.switch.calls and not world.n1.xnode.held and not world.net.errors


def test_a_hold_said_as_its_node_dies_holds_the_call_at_the_successor(world):
    """101 (site a, node 2) talks to 201 (site b, node 1); node 2 dies and 101 holds the call at once: the HOLD goes
    to the dead node. Site a's remote host says it again on the session it switches to; node 1 keeps it for the
    call it takes over and applies it: the call is held there (201 hears site a's music), and 101 resumes it."""
    a, b = world.phones["101"], world.phones["201"]
    _dial(world, "101", "201")
    world.run_until(lambda: b.phone.state == RINGING, 3000, "201 rings")
    _answer(world, "201")
    world.run_until(lambda: a.connected and b.connected, 3000, "101 and 201 talk")
    world.run(400)
    world.lose_node_2()
    assert a.phone.hold(world.net.now)
    a.flush()
    _switched(world)
    world.run_until(lambda: world.n1.switch.calls and all(c.held_by is not None
                                                          for c in world.n1.switch.calls.values()), 3000,
                    "node 1's call held")
    assert world.a.stats.counters.get("call messages said again after a switch") == 1
    assert a.phone.resume(world.net.now)
    a.flush()
    world.run_until(lambda: all(c.held_by is None for c in world.n1.switch.calls.values()), 2000, "resumed")
    _talk_and_hang_up(world, "101", "201")


def _two_lines_at_node_2(world, blind=False):
    """301 (node 2, standby at node 1) talks to 303 (node 1), holds it and calls 302 (node 1), who answers (blind:
    who rings); the calls' keys written. Returns (301, 303, 302)."""
    from upbx.common import lines
    p = world.phones
    world.add_phone_at("302", 8, 1)
    world.run_until(lambda: p["302"].phone.registered, 5000, "302 registered")
    a, b, c = p["301"], p["303"], p["302"]
    _dial(world, "301", "303")
    _xanswer(world, "303")
    world.run_until(lambda: a.connected and b.connected, 2000, "301 and 303 talk")
    assert lines.consult(a.phone, "302", world.net.now)
    a.flush()
    _xanswer(world, "302")
    world.run_until(lambda: a.connected and c.connected, 2000, "301 and 302 talk, 303 held")
    world.run(400)                                  # the keys written
    return a, b, c


def test_a_transfer_said_as_its_node_dies_joins_the_calls_at_the_standby_node(phones):
    """301 (node 2) has 303 held and talks to 302, both at node 1; node 2 dies and 301 transfers at once: its TRANSFER
    goes to the dead node. At its switch 301 names both calls and says the TRANSFER again; node 1 takes both over
    and keeps the TRANSFER until it has both (host/cluster/calls.py defer): 303 and 302 talk, 301's two calls end
    "transferred", one record each. Before, the TRANSFER was lost with the node: 301 kept both calls."""
    from upbx.common import lines
    world = phones
    a, b, c = _two_lines_at_node_2(world)
    _node_2_dies_silently(world)
    assert lines.transfer(a.phone, world.net.now)
    a.flush()
    _phone_switched(world)
    world.run_until(lambda: a.idle and a.phone.other is None, 4000, "301's calls ended")
    assert a.causes() == [wire.CAUSE_TRANSFERRED, wire.CAUSE_TRANSFERRED]
    assert b.connected and c.connected and b.causes() == [] == c.causes()
    _listen(world, 600)
    _xin_order(b, c, 20)
    _xin_order(c, b, 20)
    world.hangup("303")
    world.run_until(lambda: b.idle and c.idle, 2000, "hung up")
    assert c.causes() == [wire.CAUSE_NORMAL]
    assert not world.n1.switch.calls and not world.net.errors



def test_a_transfer_a_site_joins_as_its_node_dies_names_the_new_parties_at_the_successor(world):
    """Site a's 101 (node 2) has 201 (site b, node 1) held and talks to 202 (site b); node 2 dies and 101 transfers
    at once. Site a joins the two calls itself (both far ends relayed through it now) and tells node 2, dead, of
    each call's new party (PARTY). At its switch site a says both again; node 1 takes the calls over and keeps them
    for the calls (host/cluster/calls.py defer), then passes them on: 201 is told it talks to 202 and 202 to 201,
    and they talk. Before, the PARTY messages were lost with the node: 201 and 202 still showed 101."""
    from upbx.common import lines
    from tests.test_cluster_direct_loss import check
    from tests.test_cluster_xgroup import _parties
    p = world.phones
    world.add_phone("202", 3)
    world.run_until(lambda: p["202"].phone.registered, 5000, "202 registered")
    a, b, c = p["101"], p["201"], p["202"]
    _dial(world, "101", "201")
    world.run_until(lambda: b.phone.state == RINGING, 3000, "201 rings")
    _answer(world, "201")
    world.run_until(lambda: a.connected and b.connected, 3000, "101 and 201 talk")
    assert lines.consult(a.phone, "202", world.net.now)
    a.flush()
    world.run_until(lambda: c.phone.state == RINGING, 3000, "202 rings")
    _answer(world, "202")
    world.run_until(lambda: a.connected and c.connected, 3000, "101 and 202 talk, 201 held")
    world.run(400)                                  # the keys written
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
    world.lose_node_2()
    assert lines.transfer(a.phone, world.net.now)
    a.flush()
    world.run_until(lambda: a.idle and a.phone.other is None, 1000, "101's calls ended")
    assert a.causes() == [wire.CAUSE_TRANSFERRED, wire.CAUSE_TRANSFERRED]
    assert [t for t, _ies in unacknowledged(world.a.login.channel)].count(wire.PARTY) == 2   # towards the dead node
    _switched(world)
    world.run_until(lambda: _parties(b) == ["202"] and _parties(c) == ["201"], 3000, "201 and 202 told")
    assert world.a.stats.counters.get("call messages said again after a switch", 0) >= 2
    assert b.connected and c.connected
    b.sent, b.received, c.sent, c.received = [], [], [], []
    world.run(1000)
    for heard, said in ((b.received, c.sent), (c.received, b.sent)):
        check(heard, said, missing=2)
        assert len(heard) >= 40
    assert b.causes() == [] == c.causes() and not world.net.errors


def test_a_sites_ringing_call_whose_key_never_reached_redis_ends_main_host_lost_at_the_successor(world):
    """101 (site a, node 2) calls 201 (site b, node 1), which rings; node 2's keys never reach Redis (as for a call
    set up in the last 20 ms before a kill), and node 2 dies. Site a switches and names the ringing call; node 1
    cannot find it, and 10 s after the naming ends it at site a, "main host lost" (host/cluster/calls.py _give_up, as
    for a phone's): 101 hears the cause; 201's half, held at node 1, ends "main host lost" too. Before, 101 heard
    ringback for good (nothing ends a ringing call at a remote host)."""
    p, n1 = world.phones, world.n1
    a, b = p["101"], p["201"]
    writes = world.calls.serve
    world.calls.serve = lambda name, core, now: writes(name, core, now) if core is n1 else None
    _dial(world, "101", "201")
    world.run_until(lambda: b.phone.state == RINGING and a.phone.state == RINGBACK, 3000, "201 rings")
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
    world.lose_node_2()
    world.calls.serve = writes
    _switched(world)
    named = world.net.now
    world.run_until(lambda: a.idle, 15000, "101's call ended")
    assert a.causes() == [wire.CAUSE_MAIN_LOST] and world.net.now - named <= 12000
    assert n1.stats.counters.get("takeover: site's call ended, not found") == 1
    world.run_until(lambda: b.idle, 5000, "201's call ended")
    assert b.causes() == [wire.CAUSE_MAIN_LOST]
    assert not world.a.switch.calls and not n1.switch.calls and not world.net.errors


# an acknowledgement lost with the node: the node had passed the call on, the client says its SETUP again

def _ack_lost_as_node_2_dies(world, answered):
    """101 (site a, node 2) dials 201 (site b, node 1). Nothing node 2 says to site a arrives (its acknowledgement of
    the SETUP neither); node 2 passes the call on to node 1, where 201 rings (answered: and answers once node 2 is
    dead, before site a switches); node 2 dies. Site a still has the SETUP unacknowledged."""
    p, n1 = world.phones, world.n1
    public_a = world.net.nat[SITE_A]
    send = world.net.send

    def filtered(data, source, destination):
        if tuple(source[:2]) == MAIN and tuple(destination[:2]) in (SITE_A, tuple(public_a[:2])):
            return
        send(data, source, destination)
    world.net.send = filtered
    _dial(world, "101", "201")
    world.run_until(lambda: p["201"].phone.state == RINGING, 3000, "201 rings through node 1")
    assert wire.SETUP in [t for t, _ies in unacknowledged(world.a.login.channel)]
    world.net.queue = deque(d for d in world.net.queue if d[1] != MAIN)
    world.lose_node_2()
    world.net.send = send
    [theirs] = [c.recorded_as for c in n1.switch.calls.values()]   # node 2's uid of the call (the caller's node)
    if answered:
        world.run(300)
        _answer(world, "201")
    return theirs


@pytest.mark.parametrize("answered", [False, True], ids=["ringing", "answered-meanwhile"])
def test_a_setup_said_again_whose_call_the_lost_node_had_passed_on_goes_on_as_that_call(world, answered):
    """The acknowledgement of 101's SETUP was lost with node 2, which had passed the call on: site a switches to node
    1 and says the SETUP again there. Node 1 has its half of that call, held towards node 2: the SETUP takes the
    place of its held leg (host/main_host.py _setup_again), and 201 rings on (or, having answered meanwhile, talks):
    one call, 201 rung once, recorded once under node 2's uid. Before, the SETUP was a second call to 201, ringing:
    refused busy, so 101 heard "busy" while 201 rang for nobody until node 1's hold ended."""
    p, n1 = world.phones, world.n1
    a, b = p["101"], p["201"]
    theirs = _ack_lost_as_node_2_dies(world, answered)
    _switched(world)
    if answered:
        world.run_until(lambda: a.connected, 3000, "101 connected")
    else:
        world.run_until(lambda: a.phone.state == RINGBACK, 3000, "101 hears 201 ring")
        world.run(trunk.HOLD_MS + 1000)                 # past node 1's hold: the call goes on
        assert a.phone.state == RINGBACK and b.phone.state == RINGING
        _answer(world, "201")
    assert n1.stats.counters.get("calls set up again: their half from a lost node") == 1
    assert len(n1.switch.calls) == 1 and not n1.xnode.held
    b.take()
    assert [type(e).__name__ for e in b.log].count("Incoming") == 1   # rung once
    record = _talk_and_hang_up(world, "101", "201")
    assert record.uid == theirs


def test_a_phones_setup_said_again_whose_call_the_lost_node_had_passed_on_goes_on_as_that_call(phones):
    """The same for 301 straight at node 2 (its standby at node 1) calling 303 at node 1: the acknowledgement lost,
    node 2 dead, 301 switches and says the SETUP again; node 1's half goes on with 301's new leg: 303 rung once, they
    talk, one record."""
    world = phones
    p, n1 = world.phones, world.n1
    a, b = p["301"], p["303"]
    send = world.net.send

    def filtered(data, source, destination):
        if tuple(source[:2]) == MAIN and tuple(destination[:2]) == tuple(a.address[:2]):
            return
        send(data, source, destination)
    world.net.send = filtered
    _dial(world, "301", "303")
    world.run_until(lambda: b.phone.state == RINGING, 3000, "303 rings through node 1")
    _node_2_dies_silently(world)
    world.net.send = send
    _phone_switched(world)
    world.run_until(lambda: a.phone.state == RINGBACK, 3000, "301 hears 303 ring")
    assert n1.stats.counters.get("calls set up again: their half from a lost node") == 1
    b.take()
    assert [type(e).__name__ for e in b.log].count("Incoming") == 1
    _phone_talks(world)
