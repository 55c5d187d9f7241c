"""Group calls and blind transfers across two nodes, on the real host cores in one process (issue 16;
docs/cluster.md "Calls between nodes", docs/features.md "Groups" and "Transfer").

Two MainHost cores are nodes 1 and 2 of a cluster on the same directory and cookie secret (what
PostgreSQL and etcd give the nodes of a real cluster), each with its real NodeTrunks
(host/cluster/trunk.py): the trunk session between them is a real login over the virtual network.
Site a's remote host (101, 102) and phones 301-303 are at node 2, site b's remote host (201, 202) at
node 1. The one part that talks to Redis, LocationService, is played by `Locations` below: it does what
that service does with the core's writes and questions (`take_writes`, `asked`, `answered`) on a dict,
one round per tick, as the service does on each wake-up. What is asserted is what the phones see (who
rings, causes, PARTY), the voice frames that arrive (each names its sender), and the nodes' calls.
tests/test_cluster_xnode.py runs the same features on real `upbx main` nodes with real Redis.
"""
import json

import pytest

from upbx.common import lines, wire
from upbx.common.call import RINGING
from upbx.common.phone import Incoming
from upbx.host.cluster.trunk import NodeTrunks
from upbx.host.config import load_main_config, load_remote_config
from upbx.host.directory import Directory
from upbx.host.log import StructuredLog
from upbx.host.main_host import MainHost
from upbx.host.remote_host import RemoteHost
from tests.inprocess import MAIN, SITE_B, WALL_MS, PhoneEnd, World, attach_host, flush_host
from tests.test_cluster_forward import make_node

NODE1 = ("198.18.0.11", 4569)


class Locations:
    """Redis's location keys, as host/cluster/trunk.py LocationService keeps them for each node."""

    def __init__(self):
        self.keys = {}            # (kind, name) -> node id
        self.asks = 0
        self.deaf = False         # Redis does not answer (a SETUP waits, then is refused)

    def serve(self, node_id, xnode, now):
        if self.deaf:
            return
        for identity, how in xnode.take_writes().items():
            if how == "set" or (how == "nx" and self.keys.get(identity, node_id) == node_id):
                self.keys[identity] = node_id
            elif how is None and self.keys.get(identity) == node_id:
                del self.keys[identity]
        if xnode.asked:
            asked = sorted(xnode.asked)
            self.asks += 1
            xnode.asked.clear()
            xnode.answered({identity: self.keys.get(identity) for identity in asked}, now)


class TwoNodes(World):
    """World's main host is node 2 (site a, phones 3xx); node 1 (self.n1) serves site b."""

    def __init__(self, tmp_path, main_settings="", remote_settings=None, site_b_settings=None, site_b_at=None):
        """remote_settings: more [remote] keys of site a's remote host; site_b_settings: of site b's; site_b_at:
        the node site b logs in to (NODE1 unless MAIN is given: then both sites are at node 2)."""
        World.__init__(self, tmp_path, site_b=True, main_settings="direct_media = false\n" + main_settings,
                       remote_settings=remote_settings)
        self.n1 = None
        self.locations = Locations()
        secret = self.main.peers._cookie_secret
        make_node(self.main, 2, MAIN, secret)
        self.main.xnode = NodeTrunks(self.main, 2, secret)
        self.n1 = MainHost(load_main_config(str(self.tmp / "main.toml")), StructuredLog("n1", "error"))
        attach_host(self.net, self.n1, NODE1)
        self.n1.wall_offset_ms = WALL_MS - 1000
        make_node(self.n1, 1, NODE1, secret)
        self.n1.xnode = NodeTrunks(self.n1, 1, secret)
        self.n1.start(self.net.now)
        for host in (self.main, self.n1):
            host.set_cluster_nodes({1: NODE1, 2: MAIN}, self.net.now)
            flush_host(self.net, host)
        # site b's remote host logs in to node 1
        config = (self.tmp / "site-b.toml").read_text().replace("%s:%d" % MAIN, "%s:%d" % (site_b_at or NODE1))
        for key, value in (site_b_settings or {}).items():
            config = "\n".join(line for line in config.split("\n") if not line.startswith(key + " ="))
            config += "%s = %s\n" % (key, json.dumps(value))
        (self.tmp / "site-b.toml").write_text(config)
        self.b.records.close()
        self.b = RemoteHost(load_remote_config(str(self.tmp / "site-b.toml")), StructuredLog("site-b", "error"))
        attach_host(self.net, self.b, SITE_B)
        self.b.wall_offset_ms = WALL_MS - 1000
        self.start_remote()
        self.run_until(lambda: all(t["state"] == "up" for h in (self.main, self.n1)
                                   for t in h.xnode.status().values()), 5000, "the trunk sessions up")

    @property
    def hosts(self):
        return tuple(h for h in (self.main, self.a, self.b, getattr(self, "n1", None)) if h is not None)

    def tick(self, until=None):
        """World's tick, then Redis's location keys for each node that runs (one may be lost: a test's)."""
        done = World.tick(self, until)
        if done:
            return done   # until() holds: the rest stays in flight (Redis answers at the next tick)
        running = [(host, node) for host, node in ((self.main, 2), (self.n1, 1))
                   if host is not None and host.xnode is not None]   # none before __init__ made them nodes
        for host, node in running:
            self.locations.serve(node, host.xnode, self.net.now)
            flush_host(self.net, host)
        if running:
            self.settle()
        return done

    def add_phone_at(self, number, index, node):
        """A phone straight at node 1 or 2 (its extension of site c)."""
        end = PhoneEnd(self.net, number, self.secrets[number], ("198.18.2.%d" % index, 40000),
                       NODE1 if node == 1 else MAIN)
        self.phones[number] = end
        end.phone.start(self.net.now)
        end.flush()
        return end

    def close(self):
        if self.n1 is not None:   # a test may have lost it
            self.n1.directory.close()
        World.close(self)


def with_phones(world, **phone_args):
    """world with its phones registered (101-302 at their hosts, 303 straight at node 1; phone_args: to
    add_phone) and every client's key written: site a, 301, 302 at node 2; site b, 303 at node 1."""
    for i, number in enumerate(("101", "102", "201", "202", "301", "302"), 1):
        world.add_phone(number, i, **phone_args)
    world.add_phone_at("303", 7, 1)
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 5000, "registered")
    world.run_until(lambda: len(world.locations.keys) == 5, 2000, "location keys")
    return world


@pytest.fixture
def world(tmp_path):
    world = TwoNodes(tmp_path, main_settings="transfer_recall_s = 6\n")
    try:
        yield with_phones(world)
    finally:
        world.close()


def _group(world, group):
    with Directory(world.tmp / "main.sqlite") as directory:
        directory.set_group(dict({"ring_s": 5}, **group))
    world.run(1500)      # the directory (with the group) reaches the remote hosts


def _dial(world, caller, number):
    end = world.phones[caller]
    assert end.phone.dial(number, world.net.now)
    end.flush()


def _ringing(world):
    return {n for n, e in world.phones.items() if e.phone.state == RINGING}


def _answer(world, number):
    end = world.phones[number]
    world.run_until(lambda: end.phone.state == RINGING, 3000, "%s rings" % number)
    assert end.phone.answer(world.net.now)
    end.flush()


def _heard(end):
    """The numbers whose voice end received (each frame names its sender, tests/inprocess.py)."""
    return {payload.split(b" ")[0].decode() for payload in end.received if b" " in payload}


def _listen(world, ms=600):
    for end in world.phones.values():
        end.sent, end.received = [], []
    world.run(ms)


def _in_order(listener, talker, at_least):
    """Since _listen, listener heard talker's frames in order, none missing but the few on their way."""
    got = listener.received
    assert len(got) >= at_least and got[0] in talker.sent, (len(got), at_least)
    first = talker.sent.index(got[0])
    assert first <= 3 and got == talker.sent[first:first + len(got)] and len(talker.sent) - first - len(got) <= 3


def _parties(end):
    """Who end was told it talks to now (PARTY: an Incoming event with waiting 2), this test long."""
    end.take()
    return [e.number for e in end.log if isinstance(e, Incoming) and e.waiting == 2]


def _counters_since(host, run):
    """The counters of host that moved while run() ran."""
    before = dict(host.stats.counters)
    run()
    return {name for name, value in host.stats.counters.items() if value != before.get(name)}


def _no_calls(world):
    return all(h.status()["calls"] == [] and not h.switch.legs for h in world.hosts)


def test_ring_all_rings_a_member_at_another_node_first_to_answer_wins(world):
    p = world.phones
    _group(world, {"number": "600", "strategy": "ring-all", "members": ["101", "201", "303"]})
    world.main.xnode.cache.clear()           # nothing known of site b's and 303's node yet: Redis is asked
    asks = world.locations.asks
    _dial(world, "301", "600")               # at node 2: 101 there, 201 (site b) and 303 at node 1
    world.run_until(lambda: _ringing(world) == {"101", "201", "303"}, 2000, "every member rings")
    assert world.locations.asks > asks
    _answer(world, "201")
    world.run_until(lambda: p["301"].connected and p["201"].connected, 2000, "connected to 201")
    world.run_until(lambda: p["101"].idle and p["303"].idle, 1000, "the others stop ringing")
    assert p["101"].causes() == [wire.CAUSE_ANSWERED_ELSEWHERE] == p["303"].causes()
    _listen(world)
    assert _heard(p["301"]) == {"201"} and _heard(p["201"]) == {"301"}
    _in_order(p["301"], p["201"], 20)
    assert not p["101"].received and not p["303"].received
    world.hangup("301")
    world.run_until(lambda: p["201"].idle, 1000, "201's call ends")
    assert p["201"].causes() == [wire.CAUSE_NORMAL]
    assert _no_calls(world) and not world.main.groups.active
    records = world.main.directory.call_records()
    assert [(r.caller, r.callee, r.cause) for r in records] == [("301", "201", "normal clearing")]
    # the new directory (the group) went to the clients, not over the trunk (a node drops a SYSINFO)
    assert not any(h.stats.drops.get("unexpected message from a node") for h in (world.main, world.n1))
    assert not world.net.errors


def test_hunt_goes_through_members_at_both_nodes_in_order_skipping_a_busy_one(world):
    p = world.phones
    world.main.directory.set_features("201", dict(world.main.directory.features("201"), waiting=False))
    _group(world, {"number": "610", "strategy": "hunt", "members": ["303", "201", "102"], "ring_s": 3})
    world.call("201", "202")                 # 201 busy (call waiting off), at site b behind node 1
    world.main.xnode.cache.clear()
    _dial(world, "301", "610")
    world.run_until(lambda: _ringing(world) == {"303"}, 2000, "303 (node 1) rings first")
    started = world.net.now
    world.run_until(lambda: _ringing(world) == {"102"}, 5000, "then 102 (node 2): 201 is busy")
    assert world.net.now - started >= 3000   # 303 rang its ring_s
    assert p["303"].causes() == [wire.CAUSE_NO_ANSWER] and p["201"].connected
    p["201"].take()
    assert not any(isinstance(e, Incoming) for e in p["201"].log)   # refused busy by its remote host
    assert p["301"].phone.state == 2 and not p["301"].idle      # ring-back throughout
    _answer(world, "102")
    world.run_until(lambda: p["301"].connected and p["102"].connected, 2000, "connected to 102")
    _listen(world)
    assert _heard(p["301"]) == {"102"} and _heard(p["102"]) == {"301"}
    world.hangup("301")
    world.hangup("201")
    world.run_until(lambda: _no_calls(world), 2000, "no call left")
    assert not world.net.errors


def test_a_member_whose_node_redis_does_not_say_is_skipped_after_locate_ms(world):
    from upbx.host import groups
    p = world.phones
    _group(world, {"number": "600", "strategy": "ring-all", "members": ["101", "201"]})
    _group(world, {"number": "620", "strategy": "hunt", "members": ["201", "303"]})
    world.main.xnode.cache.clear()
    world.locations.deaf = True              # Redis does not answer
    _dial(world, "301", "600")
    world.run_until(lambda: _ringing(world) == {"101"}, 1000, "101 rings at once")
    waited = world.run_until(lambda: world.main.groups.active and not world.main.groups.active[0].group.waiting,
                             groups.LOCATE_MS + 200, "201 given up")
    assert waited >= groups.LOCATE_MS - 200 and _ringing(world) == {"101"}
    assert world.main.stats.counters["group: member not located in time"] == 1
    _answer(world, "101")
    world.run_until(lambda: p["301"].connected, 1000, "connected to 101")
    world.hangup("301")
    # every member at another node: the caller hears "unreachable" once none could be located
    _dial(world, "302", "620")
    took = world.run_until(lambda: p["302"].idle, 2 * groups.LOCATE_MS + 500, "302's call refused")
    assert took >= groups.LOCATE_MS and p["302"].causes() == [wire.CAUSE_UNREACHABLE]
    assert _ringing(world) == set() and _no_calls(world) and not world.main.groups.active
    assert not world.net.errors


def _act(world, number, action):
    end = world.phones[number]
    assert action(end.phone, world.net.now), (number, action)
    end.flush()
    world.run(100)


def test_blind_transfer_to_a_site_at_another_node_the_party_that_stays_hears_music_then_talks(world):
    from tests.test_lines import _heard as heard_music
    p = world.phones
    world.call("301", "101")                       # node 2's phone calls site a (node 2)
    p["301"].take()
    world.main.xnode.cache.clear()
    _act(world, "101", lambda ph, now: lines.consult(ph, "201", now, True))   # blind, to site b at node 1
    world.run_until(lambda: p["201"].phone.state == RINGING and p["101"].idle, 3000, "201 rings, 101 is done")
    assert p["101"].causes()[-2:] == [wire.CAUSE_TRANSFERRED, wire.CAUSE_TRANSFERRED]
    assert p["201"].phone.call.number == "301"     # told who stays (PARTY across the nodes)
    assert world.main.stats.counters.get("transfers handed to the main host", 0) == 0
    assert world.a.stats.counters["transfers handed to the main host"] == 1   # node 2 joined the two calls
    _listen(world, 1500)
    assert heard_music(p["301"]) == ([], True)     # node 2's music while 201 rings at node 1
    _answer(world, "201")
    world.run_until(lambda: p["201"].connected, 1000, "201 answers")
    _listen(world, 1000)
    assert heard_music(p["301"]) == (["201"], False) and heard_music(p["201"]) == (["301"], False)
    _in_order(p["201"], p["301"], 40)
    assert _parties(p["301"]) == ["201"]
    calls = world.main.status()["calls"]
    assert [(c["caller"], c["callee"], c["state"]) for c in calls] == [("301", "201", "answered")]
    assert world.a.status()["calls"] == []         # the joined call no longer turns at site a
    world.hangup("201")
    world.run_until(lambda: p["301"].idle, 1000, "301's call ends")
    assert p["301"].causes()[-1] == wire.CAUSE_NORMAL and _no_calls(world)
    records = world.main.directory.call_records()
    first = next(r.uid for r in records if (r.caller, r.callee) == ("301", "101"))
    assert sorted((r.origin, r.caller, r.callee, r.cause, r.linked) for r in records) == sorted([
        ("main", "301", "101", "transferred", None), ("main", "101", "201", "transferred", first),
        ("main", "301", "201", "normal clearing", first)])
    assert not world.net.errors


def test_blind_transfer_by_a_phone_at_one_node_to_one_at_the_other_recalled_when_unanswered(world):
    p = world.phones
    world.call("101", "302")                       # site a calls 302 (both at node 2)
    _act(world, "302", lambda ph, now: lines.consult(ph, "303", now, True))   # to 303, straight at node 1
    world.run_until(lambda: p["303"].phone.state == RINGING and p["302"].idle, 3000, "303 rings")
    assert p["303"].phone.call.number == "101"
    # not answered within transfer_recall_s (6 s here): 303 stops, 302 rings again with 101
    world.run_until(lambda: p["302"].phone.state == RINGING, 7000, "302 recalled")
    assert p["302"].take()[-1].name == "recall: 303 no answer"
    world.run_until(lambda: p["303"].idle, 1000, "303 stops ringing")
    assert p["303"].causes()[-1] == wire.CAUSE_NO_ANSWER and world.n1.status()["calls"] == []
    _answer(world, "302")
    _listen(world, 600)
    assert _heard(p["101"]) == {"302"} and _heard(p["302"]) == {"101"}
    world.hangup("101")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    # the transfer again, answered this time: 101 and 303 talk across the nodes
    world.call("101", "302")
    _act(world, "302", lambda ph, now: lines.consult(ph, "303", now, True))
    _answer(world, "303")
    world.run_until(lambda: p["101"].connected and p["303"].connected, 1000, "101 and 303 connected")
    _listen(world, 600)
    assert _heard(p["101"]) == {"303"} and _heard(p["303"]) == {"101"}
    _in_order(p["303"], p["101"], 20)
    world.hangup("303")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert not world.net.errors


def test_a_call_from_another_node_transferred_back_to_that_node_is_joined_there(world):
    p = world.phones
    world.call("201", "301")                       # site b (node 1) calls 301 (node 2)
    _act(world, "301", lambda ph, now: lines.consult(ph, "303", now, True))   # to 303, at node 1 again
    _answer(world, "303")
    world.run_until(lambda: p["201"].connected and p["303"].connected and p["301"].idle, 1000, "201 and 303 talk")
    assert p["301"].causes()[-2:] == [wire.CAUSE_TRANSFERRED] * 2
    assert p["303"].phone.call.number == "201" and _parties(p["201"]) == ["303"]
    # both far legs were on node 2's trunk with node 1: node 2 handed the join to node 1, which joined its two
    # halves into one call of its own (no trunk hop left); node 2 keeps nothing of it. Before: node 2 joined
    # them and the call turned there (node 1 -> node 2 -> node 1), two calls at node 1
    assert world.main.status()["calls"] == [] and not world.main.switch.legs
    assert world.main.stats.counters["transfers handed to a node"] == 1
    _listen(world, 600)
    _in_order(p["303"], p["201"], 20)
    _in_order(p["201"], p["303"], 20)
    calls = world.n1.status()["calls"]
    assert [(c["caller"], c["callee"], c["state"]) for c in calls] == [("201", "303", "answered")]
    assert all(leg.link.kind != "node" for leg in world.n1.switch.legs.values())
    moved = _counters_since(world.main, lambda: _listen(world, 200))   # node 2 relays nothing of it
    assert not moved & {"media in", "media out", "trunks in", "trunks out"}, moved
    _in_order(p["303"], p["201"], 5)
    world.hangup("201")
    world.run_until(lambda: p["303"].idle and _no_calls(world), 1000, "no call left")
    assert p["303"].causes()[-1] == wire.CAUSE_NORMAL
    # each call recorded once, linked to the first: node 1 (the caller's node) its call from site b, ended
    # "transferred" at the join, and the joined call with 303; node 2 the consultation
    records = world.main.directory.call_records()
    first = next(r.uid for r in records if (r.caller, r.callee) == ("201", "301"))
    assert sorted((r.caller, r.callee, r.cause, r.linked) for r in records) == sorted([
        ("201", "301", "transferred", None), ("301", "303", "transferred", first),
        ("201", "303", "normal clearing", first)])
    assert not world.net.errors


def test_a_transfer_handed_to_the_other_node_is_recalled_over_the_trunk_when_unanswered(world):
    p = world.phones
    world.call("301", "201")                       # 301 (node 2) calls 201 (site b, node 1): node 2's call
    _act(world, "301", lambda ph, now: lines.consult(ph, "303", now, True))   # blind to 303, at node 1 too
    world.run_until(lambda: p["303"].phone.state == RINGING and p["301"].idle, 3000, "303 rings")
    # handed to node 1 (the held call runs on node 2's trunk session, the consultation on node 1's): node 2
    # keeps nothing, node 1 rings 303 for 201
    assert world.main.status()["calls"] == [] and not world.main.switch.legs
    assert [(c["caller"], c["callee"]) for c in world.n1.status()["calls"]] == [("201", "303")]
    # not answered within node 1's transfer_recall_s (6 s): 303 stops, node 1 rings 301 again over the trunk
    world.run_until(lambda: p["301"].phone.state == RINGING, 7000, "301 recalled")
    assert p["301"].take()[-1].name == "recall: 303 no answer"
    world.run_until(lambda: p["303"].idle, 1000, "303 stops ringing")
    assert p["303"].causes() == [wire.CAUSE_NO_ANSWER]
    _answer(world, "301")
    _listen(world, 600)
    _in_order(p["301"], p["201"], 20)
    _in_order(p["201"], p["301"], 20)
    world.hangup("201")
    world.run_until(lambda: p["301"].idle and _no_calls(world), 1000, "no call left")
    # node 2 its two calls, node 1 the joined call (201 rung back to 301), linked to node 2's first
    records = world.main.directory.call_records()
    first = next(r.uid for r in records if (r.caller, r.callee) == ("301", "201"))
    assert sorted((r.caller, r.callee, r.cause, r.linked) for r in records) == sorted([
        ("301", "201", "transferred", None), ("301", "303", "transferred", first),
        ("201", "301", "normal clearing", first)])
    assert not world.net.errors


def test_a_sites_transfer_of_two_calls_with_the_other_node_is_handed_on_to_that_node(world):
    p = world.phones
    world.call("201", "101")                       # site b (node 1) calls 101 (site a, node 2)
    _act(world, "101", lambda ph, now: lines.consult(ph, "303", now, True))   # blind to 303, at node 1
    _answer(world, "303")
    world.run_until(lambda: p["201"].connected and p["303"].connected and p["101"].idle, 1000, "201 and 303 talk")
    assert p["101"].causes()[-2:] == [wire.CAUSE_TRANSFERRED] * 2
    assert p["303"].phone.call.number == "201" and _parties(p["201"]) == ["303"]
    # site a hands the join to node 2 (both calls through it), node 2 on to node 1 (both over its trunk with it)
    assert world.a.stats.counters["transfers handed to the main host"] == 1
    assert world.main.stats.counters["transfers handed to a node"] == 1
    assert all(h.status()["calls"] == [] and not h.switch.legs for h in (world.a, world.main))
    _listen(world, 600)
    _in_order(p["303"], p["201"], 20)
    _in_order(p["201"], p["303"], 20)
    assert [(c["caller"], c["callee"], c["state"]) for c in world.n1.status()["calls"]] == [("201", "303", "answered")]
    world.hangup("303")
    world.run_until(lambda: p["201"].idle and _no_calls(world), 1000, "no call left")
    records = world.main.directory.call_records()
    first = next(r.uid for r in records if (r.caller, r.callee) == ("201", "101"))
    assert sorted((r.caller, r.callee, r.cause, r.linked) for r in records) == sorted([
        ("201", "101", "transferred", None), ("101", "303", "transferred", first),
        ("201", "303", "normal clearing", first)])
    assert not world.net.errors


def test_an_overflow_and_a_forward_on_no_answer_to_another_node_wait_for_its_location(world):
    from upbx.host.main_host import FORWARD_LOCATE_MS
    p = world.phones
    _group(world, {"number": "630", "strategy": "hunt", "members": ["101"], "ring_s": 3, "overflow": "303"})
    _dial(world, "301", "630")
    world.run_until(lambda: _ringing(world) == {"101"}, 1000, "101 rings")
    world.main.xnode.cache.clear()           # where 303 is: not known when the group overflows
    world.run_until(lambda: _ringing(world) == {"303"}, 4000, "then the overflow, 303 at node 1")
    assert p["101"].causes() == [wire.CAUSE_NO_ANSWER] and not world.main.forwards_waiting
    _answer(world, "303")
    world.run_until(lambda: p["301"].connected and p["303"].connected, 1000, "301 and 303 connected")
    _listen(world, 600)
    _in_order(p["303"], p["301"], 20)
    _in_order(p["301"], p["303"], 20)
    world.hangup("301")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    # 302 forwards on no answer to 201 (site b, node 1); Redis does not answer: the caller hears why
    world.main.directory.set_features("302", dict(world.main.directory.features("302"), noanswer="201", noanswer_s=5))
    world.main.xnode.cache.clear()
    world.locations.deaf = True
    _dial(world, "301", "302")
    world.run_until(lambda: _ringing(world) == {"302"}, 1000, "302 rings")
    world.run_until(lambda: p["302"].idle, 6000, "302 rang its no-answer time")
    took = world.run_until(lambda: p["301"].idle, FORWARD_LOCATE_MS + 500, "the forward given up")
    assert took >= FORWARD_LOCATE_MS - 100 and p["301"].causes()[-1] == wire.CAUSE_UNREACHABLE
    assert _ringing(world) == set() and _no_calls(world) and not world.main.forwards_waiting
    assert world.main.stats.counters["location: not answered in time"] == 1
    # Redis answers again: the same forward rings 201 at node 1
    world.locations.deaf = False
    _dial(world, "301", "302")
    world.run_until(lambda: _ringing(world) == {"302"}, 1000, "302 rings")
    world.main.xnode.cache.clear()
    world.run_until(lambda: _ringing(world) == {"201"}, 6000, "then 201 at node 1")
    _answer(world, "201")
    world.run_until(lambda: p["301"].connected and p["201"].connected, 1000, "301 and 201 connected")
    world.hangup("301")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert not world.net.errors


def test_an_attended_transfer_and_an_intercom_across_the_nodes(world):
    p = world.phones
    world.call("102", "302")                       # site a calls 302 (node 2)
    _act(world, "302", lambda ph, now: lines.consult(ph, "201", now))   # consults 201 (site b, node 1): 102 held
    _answer(world, "201")
    _listen(world, 600)
    assert _heard(p["302"]) == {"201"} and _heard(p["201"]) == {"302"}
    _act(world, "302", lambda ph, now: lines.transfer(ph, now))
    world.run_until(lambda: p["302"].idle, 1000, "302 is done")
    assert p["302"].causes()[-2:] == [wire.CAUSE_TRANSFERRED] * 2
    assert p["102"].phone.call.number == "201" and p["201"].phone.call.number == "102"   # PARTY both ways
    _listen(world, 600)
    _in_order(p["201"], p["102"], 20)
    _in_order(p["102"], p["201"], 20)
    world.hangup("102")
    world.run_until(lambda: p["201"].idle and _no_calls(world), 1000, "no call left")
    # intercom: *80N to a phone at the other node answers by itself there too
    _dial(world, "301", "*80303")
    world.run_until(lambda: p["301"].connected and p["303"].connected, 2000, "303 answered by itself")
    _listen(world, 600)
    _in_order(p["303"], p["301"], 20)
    world.hangup("301")
    world.run_until(lambda: _no_calls(world), 1000, "no call left")
    assert not world.net.errors


def test_a_transfer_is_not_handed_to_a_node_of_older_code_and_is_joined_here(world):
    """As test_a_call_from_another_node_transferred_back_to_that_node_is_joined_there, but node 2 reads node
    1's etcd record as one of the code before session 13 (a rolling upgrade: no "speaks", host/cluster/node.py
    read_members): node 2 sends it no TRANSFER, which that code would drop, and joins the two calls itself,
    as before session 12 (node 1 -> node 2 -> node 1); both parties talk, each told the other."""
    from upbx.host.cluster.node import read_members
    p = world.phones
    nodes, speaks = read_members({"n1": {"id": 1, "listen": "%s:%d" % NODE1},
                                  "n2": {"id": 2, "listen": "%s:%d" % MAIN, "speaks": ["pickup", "transfer"]}})
    world.main.set_cluster_nodes(nodes, world.net.now, speaks)
    world.call("201", "301")                       # site b (node 1) calls 301 (node 2)
    _act(world, "301", lambda ph, now: lines.consult(ph, "303", now, True))   # to 303, at node 1 again
    _answer(world, "303")
    world.run_until(lambda: p["201"].connected and p["303"].connected and p["301"].idle, 1000, "201 and 303 talk")
    assert "transfers handed to a node" not in world.main.stats.counters
    assert [(c["caller"], c["callee"]) for c in world.main.status()["calls"]] == [("201", "303")]
    assert p["303"].phone.call.number == "201" and _parties(p["201"]) == ["303"]
    _listen(world, 600)
    _in_order(p["303"], p["201"], 20)
    _in_order(p["201"], p["303"], 20)
    world.hangup("201")
    world.run_until(lambda: p["303"].idle and _no_calls(world), 1000, "no call left")
    assert p["303"].causes()[-1] == wire.CAUSE_NORMAL
    assert not world.net.errors
