"""Pickup across two nodes, on the real host cores in one process (issue 16; docs/cluster.md "Groups,
transfers and forwards across nodes", docs/features.md "Pickup").

The world of tests/test_cluster_xgroup.py: nodes 1 and 2 are two MainHost cores with real NodeTrunks
and a real trunk login between them, `Locations` playing Redis. Site a's remote host (101, 102) and
phones 301, 302 (site c) are at node 2; site b's remote host (201, 202) and phone 303 (site c) at node
1. A call from node 1 ringing a phone at node 2 is that node's half of a cross-node call; the picker's
host (node 2 for 301, 302; site a's remote host for 101, 102) picks it up as any call ringing there.
A `**N` for a phone at the other node (303 from 302) is sent on to that node, which picks up there; a
`*8` that finds nothing in its scope ringing at the picker's node is sent on to the other nodes in turn.
What is asserted is what the phones see (who rings, causes, who they are told they talk to), the voice
frames that arrive (each names its sender, in order), the records and the nodes' calls.
"""
import pytest

from upbx.common import wire
from tests.test_cluster_xgroup import (_dial, _group, _heard, _in_order, _listen, _no_calls, _parties,
                                       _ringing, world)   # noqa: F401 (the fixture)
from tests.inprocess import MAIN
from tests.test_cluster_xgroup import NODE1
from tests.test_routing import _refused


def _talking(world, a, b):
    """a and b hear each other only, every frame in order."""
    p = world.phones
    _listen(world)
    assert _heard(p[a]) == {b} and _heard(p[b]) == {a}
    _in_order(p[a], p[b], 20)
    _in_order(p[b], p[a], 20)


def _records(world):
    return sorted((r.caller, r.callee, r.cause) for r in world.main.directory.call_records())


def _picked_up(world, caller, rung, picker):
    """picker dialled a pickup of the call from caller ringing at rung: picker and caller talk, every
    frame in order, each told the other; rung stops ("picked up"), having heard nothing."""
    p = world.phones
    world.run_until(lambda: p[picker].connected and p[caller].connected, 2000,
                    "%s picked %s's call up" % (picker, rung))
    world.run_until(lambda: p[rung].idle, 1000, "%s stops ringing" % rung)
    assert p[rung].causes() == [wire.CAUSE_PICKED_UP]
    _talking(world, caller, picker)
    assert not p[rung].received
    assert _parties(p[caller]) == [picker] and p[picker].phone.call.number == caller


def _ends_recorded_once(world, hangs_up, other, record):
    """hangs_up ends the call: other hears "normal clearing", no call is left at either node, and the
    call is recorded once, as record (caller, callee, cause)."""
    p = world.phones
    world.hangup(hangs_up)
    world.run_until(lambda: p[other].idle and _no_calls(world), 1000, "no call left")
    assert p[other].causes()[-1] == wire.CAUSE_NORMAL
    assert _records(world) == [record]
    assert not world.net.errors


def test_directed_pickup_of_a_call_from_another_node(world):
    _dial(world, "303", "301")                       # 303 at node 1 calls 301 at node 2
    world.run_until(lambda: _ringing(world) == {"301"}, 2000, "301 rings")
    assert _refused(world, "302", "**303")[0] == wire.CAUSE_NO_ANSWER    # 303 rings nothing
    _dial(world, "302", "**301")
    _picked_up(world, "303", "301", "302")
    _ends_recorded_once(world, "303", "302", ("303", "302", "normal clearing"))
    assert not world.net.errors


def test_directed_pickup_at_a_remote_host_of_a_call_from_a_site_at_another_node(world):
    _dial(world, "201", "101")                       # site b (node 1) calls site a (node 2)
    world.run_until(lambda: _ringing(world) == {"101"}, 2000, "101 rings")
    _dial(world, "102", "**101")                     # site a's remote host picks it up
    _picked_up(world, "201", "101", "102")
    # the PARTY went site a -> node 2 -> node 1 -> site b: each host's call names 102 now
    for host in (world.main, world.n1):
        assert [(c["caller"], c["callee"]) for c in host.status()["calls"]] == [("201", "102")]
    _ends_recorded_once(world, "102", "201", ("201", "102", "normal clearing"))    # node 1's, naming who took it


def test_directed_pickup_of_a_call_ringing_at_another_node(world):
    """302 (node 2) takes the call ringing at 303 (node 1): node 2 sends the **303 on to node 1, which
    picks its call up onto the trunk; the caller's call goes on, recorded once, naming 302."""
    _dial(world, "201", "303")                       # site b (node 1) calls 303 (node 1): all at node 1
    world.run_until(lambda: _ringing(world) == {"303"}, 2000, "303 rings")
    world.main.xnode.cache.clear()                   # where 303 is: Redis is asked, the pickup waits for it
    asks = world.locations.asks
    _dial(world, "302", "**303")
    _picked_up(world, "201", "303", "302")
    assert world.locations.asks > asks
    assert [(c["caller"], c["callee"]) for c in world.n1.status()["calls"]] == [("201", "302")]
    _ends_recorded_once(world, "302", "201", ("201", "302", "normal clearing"))    # node 1's, once


def test_directed_pickup_at_the_callers_node_of_its_call_ringing_at_another_node(world):
    """301 (node 2) calls 303 (node 1); 302 (node 2) takes it: node 1 joins the two trunk legs, node 2's
    call of 301 (which records it) is told who took it."""
    _dial(world, "301", "303")
    world.run_until(lambda: _ringing(world) == {"303"}, 2000, "303 rings")
    _dial(world, "302", "**303")
    _picked_up(world, "301", "303", "302")
    _ends_recorded_once(world, "301", "302", ("301", "302", "normal clearing"))    # node 2's call of 301, once


def test_directed_pickup_of_a_phone_at_another_node_that_does_not_ring(world):
    """As at one node: "no answer", whether the phone is idle or talking, and nothing is left behind."""
    p = world.phones
    assert _refused(world, "302", "**303")[0] == wire.CAUSE_NO_ANSWER    # 303 (node 1) idle
    world.call("303", "201")                                             # 303 talks: rings nothing
    world.main.xnode.cache.clear()
    assert _refused(world, "301", "**303")[0] == wire.CAUSE_NO_ANSWER
    assert p["303"].connected and p["201"].connected and not p["303"].causes()
    assert [(c["caller"], c["callee"]) for c in world.n1.status()["calls"]] == [("303", "201")]
    assert world.main.status()["calls"] == []
    world.hangup("303")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert _records(world) == [("303", "201", "normal clearing")]
    assert not world.net.errors


def test_group_pickup_of_a_call_from_another_node_in_the_pickers_pickup_group(world):
    p = world.phones
    _group(world, {"number": "680", "strategy": "pickup", "members": ["301", "302"], "site": "c",
                   "ring_s": 15})
    _dial(world, "201", "102")                       # rings at node 2 too, outside 302's pickup group
    world.run_until(lambda: _ringing(world) == {"102"}, 2000, "102 rings")
    _dial(world, "303", "301")                       # 303 (node 1) calls 301 (node 2), in the group
    world.run_until(lambda: _ringing(world) == {"102", "301"}, 2000, "301 rings")
    _dial(world, "302", "*8")
    world.run_until(lambda: p["302"].connected and p["303"].connected, 2000, "302 picked 301's call up")
    world.run_until(lambda: p["301"].idle, 1000, "301 stops ringing")
    assert p["301"].causes() == [wire.CAUSE_PICKED_UP] and _ringing(world) == {"102"}
    _talking(world, "303", "302")
    assert _parties(p["303"]) == ["302"] and p["302"].phone.call.number == "303"
    setups = world.n1.stats.counters.get("msg SETUP", 0)
    assert _refused(world, "301", "*8")[0] == wire.CAUSE_NO_ANSWER   # 102 is not in 301's group
    assert world.n1.stats.counters.get("msg SETUP", 0) == setups     # 301's group is all here: node 1 not asked
    world.hangup("302")
    world.hangup("201")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert ("303", "302", "normal clearing") in _records(world)
    assert not world.net.errors


@pytest.mark.parametrize("caller", ["201", "301"])
def test_group_pickup_of_a_call_ringing_at_a_pickup_group_member_at_another_node(world, caller):
    """302 (node 2) and 303 (node 1) are one pickup group; a call rings at 303 from site b (node 1, all at
    node 1) or from 301 (node 2, back through node 2): nothing rings at node 2, so 302's *8 goes on over
    the trunk to node 1, which picks up there; recorded once, by the caller's node, naming 302."""
    _group(world, {"number": "680", "strategy": "pickup", "members": ["302", "303"], "site": "c",
                   "ring_s": 15})
    _dial(world, caller, "303")
    world.run_until(lambda: _ringing(world) == {"303"}, 2000, "303 rings")
    _dial(world, "302", "*8")
    _picked_up(world, caller, "303", "302")
    _ends_recorded_once(world, caller, "302", (caller, "302", "normal clearing"))


def test_group_pickup_with_nothing_ringing_in_the_group_at_either_node(world):
    """302's *8 asks node 1 (303 is there) and gets "no answer"; a call ringing at node 1 outside the group
    (site b's 201) is not taken, and nothing is left on either node, nothing recorded."""
    p = world.phones
    _group(world, {"number": "680", "strategy": "pickup", "members": ["302", "303"], "site": "c",
                   "ring_s": 15})
    setups = world.n1.stats.counters.get("msg SETUP", 0)
    assert _refused(world, "302", "*8")[0] == wire.CAUSE_NO_ANSWER
    assert world.n1.stats.counters.get("msg SETUP", 0) == setups + 1     # node 1 was asked, once
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    _dial(world, "101", "201")                       # rings at node 1, not in 302's group
    world.run_until(lambda: _ringing(world) == {"201"}, 2000, "201 rings")
    assert _refused(world, "302", "*8")[0] == wire.CAUSE_NO_ANSWER
    assert _ringing(world) == {"201"} and not p["201"].causes()
    assert [(c["caller"], c["callee"]) for c in world.n1.status()["calls"]] == [("101", "201")]
    world.hangup("101")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert [(r[0], r[1]) for r in _records(world)] == [("101", "201")]    # the *8s left no record
    assert not world.net.errors


def test_group_pickup_asks_the_other_nodes_one_after_the_other(world, monkeypatch):
    """Two nodes only here: node 1 stands for two other nodes (asked twice). Each refusal offers the *8 to
    the next node; the last one's "no answer" reaches the picker; nothing left, nothing recorded."""
    _group(world, {"number": "680", "strategy": "pickup", "members": ["302", "303"], "site": "c",
                   "ring_s": 15})
    monkeypatch.setattr(world.main.xnode, "live", lambda: [1, 1])
    setups = world.n1.stats.counters.get("msg SETUP", 0)
    assert _refused(world, "302", "*8")[0] == wire.CAUSE_NO_ANSWER
    assert world.n1.stats.counters.get("msg SETUP", 0) == setups + 2
    assert world.phones["302"].causes() == [wire.CAUSE_NO_ANSWER]
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert _records(world) == []
    assert not world.net.errors


def test_a_group_call_of_another_node_picked_up_at_a_members_node(world):
    p = world.phones
    _group(world, {"number": "600", "strategy": "ring-all", "members": ["301", "201"]})
    _dial(world, "303", "600")                       # node 1 runs the group: 201 there, 301 at node 2
    world.run_until(lambda: _ringing(world) == {"301", "201"}, 2000, "both members ring")
    assert world.n1.groups.active and not world.main.groups.active
    _dial(world, "302", "*8")                        # 302 (node 2, no pickup group: site c) takes 301's
    world.run_until(lambda: p["302"].connected and p["303"].connected, 2000, "302 picked the group call up")
    world.run_until(lambda: p["301"].idle and p["201"].idle, 1000, "the members stop ringing")
    assert p["301"].causes() == [wire.CAUSE_PICKED_UP] and p["201"].causes() == [wire.CAUSE_ANSWERED_ELSEWHERE]
    _talking(world, "303", "302")
    assert not p["301"].received and not p["201"].received
    assert _parties(p["303"]) == ["302"] and p["302"].phone.call.number == "303"
    assert not world.n1.groups.active
    world.hangup("302")
    world.run_until(lambda: p["303"].idle and _no_calls(world), 1000, "no call left")
    assert p["303"].causes()[-1] == wire.CAUSE_NORMAL
    assert _records(world) == [("303", "302", "normal clearing")]   # node 1's, naming who took it
    assert not world.net.errors


def test_a_page_of_a_site_whose_phones_are_at_both_nodes_reaches_them_all_one_way(world):
    """Site c has no remote host: node 2 runs 301's page; 303, at node 1, is paged over the trunk."""
    p = world.phones
    _group(world, {"number": "710", "strategy": "page", "members": [], "site": "c"})
    world.main.xnode.cache.clear()           # where 303 is: Redis is asked while 302 is paged already
    _dial(world, "301", "710")
    world.run_until(lambda: p["301"].connected and p["302"].connected and p["303"].connected, 2000, "paged")
    assert p["302"].phone.muted and p["303"].phone.muted and not _ringing(world)
    _listen(world)
    _in_order(p["302"], p["301"], 20)
    _in_order(p["303"], p["301"], 20)        # over the trunk, in order
    assert _heard(p["303"]) == {"301"} and not p["303"].sent and not p["301"].received   # one way
    world.hangup("303")                      # leaves the page; it goes on for 302
    world.run_until(lambda: not world.n1.status()["calls"], 1000, "node 1's half ends")
    _listen(world, 300)
    assert _heard(p["302"]) == {"301"} and not p["303"].received
    world.hangup("301")
    world.run_until(lambda: p["302"].idle and _no_calls(world), 1000, "the page ends")
    assert p["302"].causes() == [wire.CAUSE_NORMAL] and not p["303"].phone.muted
    # a phone in a call is not paged (not even as a waiting call), at either node: 303 and 302 talk on
    world.call("303", "201")
    _dial(world, "301", "710")
    world.run_until(lambda: p["301"].connected and p["302"].connected, 2000, "302 paged")
    world.run(300)
    assert p["303"].phone.other is None and not p["303"].phone.muted
    _listen(world, 300)
    assert _heard(p["303"]) == {"201"} and _heard(p["302"]) == {"301"}
    world.hangup("301")
    world.call("302", "101")                 # at the pager's node, call waiting on
    _dial(world, "301", "710")
    world.run_until(lambda: p["301"].idle, 1000, "nobody idle to page")
    assert p["301"].causes()[-1] == wire.CAUSE_BUSY
    assert p["302"].phone.other is None and p["303"].phone.other is None and not _ringing(world)
    world.hangup("302")
    world.hangup("303")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert not world.net.errors


def _node1_on_older_code(world):
    """Node 2 reads node 1's etcd record as one of a node of the code before session 13 (a rolling
    upgrade): it says nothing of what it speaks (host/cluster/node.py read_members), so node 2 sends it no
    pickup (docs/cluster.md, "Rolling upgrades")."""
    from upbx.host.cluster.node import read_members
    nodes, speaks = read_members({"n1": {"id": 1, "listen": "%s:%d" % NODE1},
                                  "n2": {"id": 2, "listen": "%s:%d" % MAIN, "speaks": ["pickup", "transfer"]}})
    assert speaks == {1: frozenset(), 2: frozenset(("pickup", "transfer"))}
    world.main.set_cluster_nodes(nodes, world.net.now, speaks)


def test_no_pickup_is_sent_to_a_node_of_older_code(world):
    """**303 and *8 from 302 (node 2) for a call ringing at 303 (node 1, older code): node 1 is not asked
    (older code would take the SETUP for an unknown extension); 302 hears "no answer" as for a phone that
    does not ring, 303 rings on, and 302's *8 still picks up a call ringing at its own node."""
    _node1_on_older_code(world)
    _group(world, {"number": "680", "strategy": "pickup", "members": ["301", "302", "303"], "site": "c",
                   "ring_s": 15})
    _dial(world, "201", "303")
    world.run_until(lambda: _ringing(world) == {"303"}, 2000, "303 rings")
    setups = world.n1.stats.counters.get("msg SETUP", 0)
    assert _refused(world, "302", "**303")[0] == wire.CAUSE_NO_ANSWER
    assert _refused(world, "302", "*8")[0] == wire.CAUSE_NO_ANSWER
    assert world.n1.stats.counters.get("msg SETUP", 0) == setups          # node 1 never asked
    assert world.main.stats.counters["pickups not sent to a node of older code"] == 1
    assert _ringing(world) == {"303"}
    world.hangup("201")
    world.run_until(lambda: _no_calls(world), 2000, "201's call gone")
    _dial(world, "201", "301")                                           # rings at node 2, in the group
    world.run_until(lambda: _ringing(world) == {"301"}, 2000, "301 rings")
    _dial(world, "302", "*8")
    _picked_up(world, "201", "301", "302")
    assert world.n1.stats.counters.get("msg SETUP", 0) == setups + 1     # only 201's call to 301 went there
