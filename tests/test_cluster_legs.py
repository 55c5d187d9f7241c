"""More call legs per node (issue 16; docs/cluster.md "Call legs per link").

A cluster node numbers the legs of each remote host's session on that session alone (32,767 each),
since a trunk frame and a remote host's signalling name a leg together with their session index; its
phones' and node trunks' legs keep layout 1's node-unique numbers (2,048, the node id in each), and a
standalone main host keeps its one space of 32,767 for every leg, as before. Nothing on the wire
changes. What is asserted: the numbers the switch gives out and refuses, the audio of calls whose legs
have the same number at two sites (in memory, on the virtual clock), a lost node's call taken over onto
such a session (Takeover), and a real node relaying 1,500 calls between two remote hosts' sites at
once (more than layout 1's 1,024), with one worker and with two, on real sockets; a standalone main
host's 1,500 relayed calls have numbers unique across its sites, as before.
"""
import json
import os

import pytest

from upbx.common import cluster, wire
from upbx.common.call import CallLeg
from upbx.common.phone import Dtmf
from upbx.host.cluster.calls import Takeover, call_value
from upbx.host.core import Stats
from upbx.host.switch import Call, Link, Switch
from tests.clusterkit import engines  # noqa: F401  (the module's engines, for the tests of real nodes)
from tests.inprocess import MAIN, World
from tests.test_cluster_forward import make_node


def _legs(switch, link, count, call):
    """count new legs of call on link, each admitted first; their numbers."""
    numbers = []
    for _ in range(count):
        assert switch.admit(link) is None
        numbers.append(switch.new_leg(link, bytes(16), 0, call).call_no)
    return numbers


def test_a_node_numbers_each_remote_host_session_on_its_own_and_phones_node_wide():
    switch = Switch(lambda *a: None, Stats())
    switch.set_node(5)
    call = Call(b"12345678", "1", "2", 0)
    site_a, site_b, phone = Link("site-a", "host"), Link("site-b", "host"), Link("301", "phone")
    trunk = Link("node 6", "node")
    # more legs on each remote host than layout 1's 2,048 on the whole node, the same numbers at both
    on_a, on_b = _legs(switch, site_a, 3000, call), _legs(switch, site_b, 3000, call)
    assert len(set(on_a)) == len(set(on_b)) == 3000
    assert any(cluster.call_no_node(n) != 5 for n in on_a)                     # no node id in them
    # a number site a has is free at site b; one site b has is not given to it twice
    x = on_a[0]
    switch._next_own = x - 1
    assert _legs(switch, site_b, 1, call)[0] == x
    switch._next_own = x - 1
    assert _legs(switch, site_b, 1, call)[0] not in on_b + [x]
    assert switch.leg(site_a, x) is not switch.leg(site_b, x)
    assert switch.leg(site_a, x).link is site_a and switch.leg(site_b, x).link is site_b
    assert switch.leg(phone, x) is None and x not in switch.legs                  # keyed (link, number)
    # phones and node trunks: node-unique numbers with the node id, 2,048 of them, whatever the hosts hold
    shared = _legs(switch, phone, 2000, call) + _legs(switch, trunk, 48, call)
    assert all(cluster.call_no_node(n) == 5 for n in shared) and len(set(shared)) == cluster.LOCAL_CALLS
    assert switch.admit(phone) == wire.CAUSE_NETWORK_BUSY and switch.admit(trunk) == wire.CAUSE_NETWORK_BUSY
    assert switch.admit(site_a) is None and switch.admit(site_a, phone) == wire.CAUSE_NETWORK_BUSY
    assert switch.stats.drops["no free call number"] == 3
    # a leg that goes frees its number on its own link only
    leg = switch.leg(site_a, x)
    switch._forget_leg(leg, 0)
    assert switch.leg(site_a, x) is None and switch.leg(site_b, x) is not None
    assert (site_a, x) in switch._ended and x not in switch._ended
    one = switch.leg(phone, shared[0])
    switch._forget_leg(one, 0)
    assert switch.admit(phone) is None and switch.allocate_call_no(phone) == shared[0]


def test_a_remote_host_session_of_a_node_holds_at_most_32767_legs():
    switch = Switch(lambda *a: None, Stats())
    switch.set_node(1)
    call = Call(b"12345678", "1", "2", 0)
    site = Link("site-a", "host")
    numbers = set()
    while switch.admit(site) is None:
        numbers.add(switch.new_leg(site, bytes(16), 0, call).call_no)
    assert len(numbers) == site.legs == wire.MAX_CALL_NO and switch.allocate_call_no(site) is None
    assert switch.admit(Link("site-b", "host")) is None and switch.admit(Link("301", "phone")) is None


def test_a_standalone_main_host_numbers_every_leg_in_one_space_as_before():
    switch = Switch(lambda *a: None, Stats())
    call = Call(b"12345678", "1", "2", 0)
    site_a, site_b, phone = Link("site-a", "host"), Link("site-b", "host"), Link("301", "phone")
    start = switch._next
    numbers = _legs(switch, site_a, 3, call) + _legs(switch, site_b, 3, call) + _legs(switch, phone, 3, call)
    # one after another from a random start, over every link, keyed by the number alone
    assert numbers == [(start + k) % wire.MAX_CALL_NO + 1 for k in range(9)]
    assert sorted(switch.legs) == sorted(numbers) and switch.own_legs == 0
    assert switch.leg(site_a, numbers[3]) is None and switch.leg(site_b, numbers[3]).link is site_b
    while switch.admit(site_a if len(switch.legs) % 2 else site_b) is None:
        _legs(switch, site_a if len(switch.legs) % 2 else site_b, 1, call)
    assert len(switch.legs) == wire.MAX_CALL_NO                               # 32,767 in all, not per link
    assert switch.admit(Link("site-c", "host")) == wire.CAUSE_NETWORK_BUSY


def _node_world(tmp_path):
    """World's main host as node 2 of a cluster (tests/test_cluster_forward.py make_node), sites a and b
    behind their remote hosts, every call relayed (no B2 direct path), phones 101, 102, 201, 202, 301, 302."""
    world = World(tmp_path, site_b=True, main_settings="direct_media = false\n")
    make_node(world.main, 2, MAIN, world.main.peers._cookie_secret)
    world.start_remote()
    phones = {n: world.add_phone(n, i) for i, n in enumerate(("101", "102", "201", "202", "301", "302"), 1)}
    world.run_until(lambda: all(e.phone.registered for e in phones.values()), 5000, "phones registered")
    return world, phones


def _mark(listener, talker):
    return len(listener.received), len(talker.sent)


def _heard_in_order(listener, talker, at_least, since=(0, 0)):
    """Since the mark (_mark), listener heard at least at_least of talker's frames and nobody else's, one
    run of them in order with none missing, from about the mark (a few were on their way then) to the
    last few sent (on their way now)."""
    got = listener.received[since[0]:]
    assert len(got) >= at_least, (len(got), at_least)
    assert got[0] in talker.sent, got[0]
    first = talker.sent.index(got[0])
    assert got == talker.sent[first:first + len(got)]
    assert since[1] - 3 <= first <= since[1] + 3 and len(talker.sent) - (first + len(got)) <= 3, \
        (since, first, len(got), len(talker.sent))


def test_a_node_relays_calls_whose_legs_have_the_same_numbers_at_two_sites(tmp_path):
    world, p = _node_world(tmp_path)
    try:
        main = world.main
        switch = main.switch
        site_a, site_b = main.links_by_name[("host", "site-a")], main.links_by_name[("host", "site-b")]
        # 101 (a) -> 201 (b) gets 41 at site a and 42 at site b; 202 (b) -> 102 (a) 41 at b and 42 at a
        switch._next_own = 40
        world.call("101", "201")
        switch._next_own = 40
        world.call("202", "102")
        assert {leg.call_no for leg in switch.legs.values() if leg.link is site_a} == {41, 42}
        assert {leg.call_no for leg in switch.legs.values() if leg.link is site_b} == {41, 42}
        assert switch.leg(site_a, 41).call is switch.leg(site_b, 42).call is not switch.leg(site_b, 41).call
        world.run(1000)
        for listener, talker in (("201", "101"), ("101", "201"), ("102", "202"), ("202", "102")):
            _heard_in_order(p[listener], p[talker], 40)
        # signalling names the leg by its number on the session it came on: each DTMF reaches its own call
        p["201"].take()
        p["102"].take()
        assert p["101"].phone.dtmf("7", world.net.now) and p["202"].phone.dtmf("9", world.net.now)
        p["101"].flush()
        p["202"].flush()
        world.run(200)
        assert [e.digit for e in p["201"].take() if isinstance(e, Dtmf)] == ["7"]
        assert [e.digit for e in p["102"].take() if isinstance(e, Dtmf)] == ["9"]
        # the first call ends: its numbers go at their own sites only, the second call goes on
        world.hangup("101")
        world.run_until(lambda: p["201"].idle and p["101"].idle, 3000, "101's call released")
        assert switch.leg(site_a, 41) is None and switch.leg(site_b, 42) is None
        assert switch.leg(site_b, 41) is not None and switch.leg(site_a, 42) is not None
        marks = _mark(p["102"], p["202"]), _mark(p["202"], p["102"])
        world.run(600)
        _heard_in_order(p["102"], p["202"], 25, marks[0])
        _heard_in_order(p["202"], p["102"], 25, marks[1])
        # phones straight at the node keep layout 1's numbers, with the node's id
        world.call("301", "302")
        phones = [leg.call_no for leg in switch.legs.values() if leg.link.kind == "phone"]
        assert len(phones) == 2 and all(cluster.call_no_node(n) == 2 for n in phones)
        world.run(400)
        _heard_in_order(p["302"], p["301"], 15)
        assert not main.stats.drops.get("unknown call number") and not main.stats.drops.get("trunk rejected")
        assert not world.net.errors
    finally:
        world.close()


def test_a_lost_nodes_call_is_taken_over_onto_sessions_that_number_their_own_legs(tmp_path):
    """As a survivor does (host/cluster/calls.py Takeover): the remote hosts' frames name numbers of a call
    this node does not have; they are asked for, given to no new leg meanwhile, and the call from its key
    goes on here on the two sessions with those numbers. A message for it waits until then."""
    world, p = _node_world(tmp_path)
    try:
        main = world.main
        switch = main.switch
        site_a, site_b = main.links_by_name[("host", "site-a")], main.links_by_name[("host", "site-b")]
        cluster_key = os.urandom(32)
        main.takeover = Takeover(main, cluster_key)
        switch.reserved = main.takeover.asked          # as ClusterService does (host/cluster/node.py)
        switch._next_own = 40
        world.call("101", "201")
        call = next(iter(switch.calls.values()))
        no_a, no_b = call.a.call_no, call.b.call_no
        assert (call.a.link, call.b.link) == (site_a, site_b) and (no_a, no_b) == (41, 42)
        world.run(200)
        value = json.loads(call_value(call, "n9", cluster_key, main.wall_ms(world.net.now)))
        # the node that had the call is gone; this one never had it: no leg, no ended number
        switch.end_call(call, wire.CAUSE_NORMAL, world.net.now)
        switch._ended.clear()
        world.run(100)
        asked = main.takeover.wanted(world.net.now)
        assert {("host", "site-a", 41), ("host", "site-b", 42)} <= asked
        # a new leg at site a is not given a number asked for there (site b may have it: not asked there)
        switch._next_own = 40
        assert switch.allocate_call_no(site_a) == 42
        switch._next_own = 40
        assert switch.allocate_call_no(site_b) == 41
        # 201's DTMF waits for the call
        assert p["201"].phone.dtmf("5", world.net.now)
        p["201"].flush()
        world.run(100)
        assert main.takeover.want[("host", "site-b", 42)][1]
        # a leg that took the number at site b first: the call cannot be adopted there
        squatter = CallLeg(42, bytes(16), 0)
        squatter.link, squatter.call = site_b, None
        switch.place(squatter)
        assert main.takeover.adopt(value, world.net.now, main.wall_ms(world.net.now)) == "call number 42 in use here"
        switch._forget_leg(squatter, world.net.now)
        assert main.takeover.adopt(value, world.net.now, main.wall_ms(world.net.now)) is None
        assert switch.leg(site_a, 41).call is switch.leg(site_b, 42).call
        assert main.stats.counters["calls taken over"] == 1 and not main.takeover.want
        marks = _mark(p["201"], p["101"]), _mark(p["101"], p["201"])
        world.run(600)
        assert [e.digit for e in p["101"].take() if isinstance(e, Dtmf)] == ["5"]   # the DTMF that waited
        _heard_in_order(p["201"], p["101"], 25, marks[0])
        _heard_in_order(p["101"], p["201"], 25, marks[1])
        world.hangup("201")
        world.run_until(lambda: p["201"].idle and p["101"].idle, 3000, "the taken-over call released")
        assert not switch.legs and not switch.calls
        assert not world.net.errors
    finally:
        world.close()


# A real node (`upbx main` on real engines) and two emulated remote hosts on real sockets
# (tools/bench_net.py TrunkPair, as `upbx bench cluster` relays its calls)

CALLS = 1500              # more than layout 1's 1,024 relayed calls a node
LOAD_S = 0.06             # 3 ticks of every call's voice both ways: 9,000 frames in 1,128 datagrams, which
                          # the node's socket buffer holds even if the node is not scheduled meanwhile


def _numbers(calls):
    return {"a": ["1%05d" % i for i in range(calls)], "b": ["2%05d" % i for i in range(calls)]}


def _relay_every_frame(pair):
    from upbx.tools import bench_net
    r = bench_net.run_trunk_load(pair, pair.calls, LOAD_S, 1472, quiet_s=1.0, longest_s=60)
    assert r["sent"] == 2 * CALLS * int(LOAD_S / bench_net.TICK)
    assert r["received"] == r["sent"], {k: v for k, v in r.items() if k != "latency"}
    return r


@pytest.fixture(scope="module")
def provisioned(engines):
    """Sites a and b with a remote host each and CALLS extensions each, in the engines' PostgreSQL once."""
    from upbx.host.cluster.postgres import PostgresDirectory
    secrets = {}
    with PostgresDirectory(engines.postgres_dsn) as directory:
        for site, numbers in _numbers(CALLS).items():
            directory.add_site(site)
            secrets["site-" + site] = directory.add_remote_host("site-" + site, site)
            directory.add_extensions([(n, site, "") for n in numbers])
    return secrets


@pytest.mark.parametrize("workers", [1, 2])
def test_a_node_relays_1500_calls_between_two_remote_hosts_sites_at_once(engines, provisioned, workers):
    """3,000 legs on one node (layout 1 numbers 2,048 node-wide): each site's session numbers its own.
    workers = 1: the node's C fast path (Switch.trunk_in, relay_batch); workers = 2: each site's session is
    another process's (its index names the worker), every direction delegated to a relay table."""
    cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")
    from upbx.tools import bench_cluster, bench_net

    class Lab(cluster_lab.ClusterExchange):
        def _write_config(self, node):   # tools/bench_cluster.py's settings: many calls a remote host
            with open(self.path(node + ".toml"), "w") as f:
                f.write('[main]\nlisten = "127.0.0.1:%d"\ndatabase = "%s.sqlite"\ncontrol_socket = "%s"\n'
                        'log_level = "warning"\nworkers = %d\ndirect_media = false\nring_timeout_s = 600\n'
                        'registration_ttl_s = 600\nmax_calls_per_host = 16383\n\n%s'
                        % (self.node_ports[node], node, self.path(node + ".sock"), workers,
                           self.engines.cluster_table(node)))
    name = "legs%d" % workers
    lab = Lab(engines, nodes=(name,))
    pair = None
    try:
        lab.remote_sites = ()
        lab.start()
        node_id = lab.status(name)["cluster"]["node_id"]
        pair = bench_net.TrunkPair(bench_cluster._Node(("127.0.0.1", lab.node_ports[name]), provisioned), CALLS)
        status = lab.status(name)
        assert len(status["calls"]) == CALLS and all(c["state"] == "answered" for c in status["calls"])
        # the node's numbers, as each site's host heard them: unique on its session, not node-wide
        at_a = [c.a.peer_call_no for c in pair.calls]
        at_b = [c.b.peer_call_no for c in pair.calls]
        assert len(set(at_a)) == len(set(at_b)) == CALLS and len(at_a) + len(at_b) > cluster.LOCAL_CALLS
        assert any(cluster.call_no_node(n) != node_id for n in at_a + at_b)
        if workers == 2:
            lab.wait_for(lambda: (lambda s: s["delegated_directions"] + s["delegated_here"])(lab.status(name))
                         == 2 * CALLS, "every direction delegated", timeout=60)
        _relay_every_frame(pair)
        status = lab.status(name)
        assert len(status["calls"]) == CALLS
        drops = status["stats"]["drops"]
        assert not drops.get("unknown call number") and not drops.get("trunk rejected"), drops
        if workers == 2:
            assert status["workers_died"] == 0 and status["delegated_directions"] > 0
    finally:
        if pair is not None:
            pair.close()
        lab.close()


def test_a_standalone_main_host_relays_1500_calls_with_one_space_of_numbers_as_before(tmp_path):
    from upbx.tools import bench_net
    main = bench_net.MainUnderTest(_numbers(CALLS), workdir=str(tmp_path), cpu=None)
    pair = None
    try:
        pair = bench_net.TrunkPair(main, CALLS)
        at_a = [c.a.peer_call_no for c in pair.calls]
        at_b = [c.b.peer_call_no for c in pair.calls]
        assert len(set(at_a) | set(at_b)) == 2 * CALLS   # one space over both sites, as before
        _relay_every_frame(pair)
        drops = main.status()["stats"]["drops"]
        assert not drops.get("unknown call number") and not drops.get("trunk rejected"), drops
    finally:
        if pair is not None:
            pair.close()
        main.close()
