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

from upbx.common import cluster, cluster_make, wire
from upbx.common.call import CONNECTED, CallLeg
from upbx.common.media import MediaLeg
from upbx.common.phone import Dtmf
from upbx.host.cluster.calls import Takeover, call_value
from upbx.host.core import Stats
from upbx.host.switch import Call, Link, Switch, trunk_class
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


def test_a_node_numbers_each_remote_host_session_on_its_own_and_its_own_endpoints_node_wide():
    switch = Switch(lambda *a: None, Stats())
    switch.set_node(5)
    call = Call(b"12345678", "1", "2", 0)
    site_a, site_b, phone = Link("site-a", "host"), Link("site-b", "host"), Link("301", "phone")
    app = Link("voicemail", "app")
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
    # the host's own endpoints (voicemail, SIP): node-unique numbers with the node id, 2,048, whatever the
    # sessions hold
    shared = _legs(switch, app, cluster.LOCAL_CALLS, call)
    assert all(cluster.call_no_node(n) == 5 for n in shared) and len(set(shared)) == cluster.LOCAL_CALLS
    assert switch.admit(app) == wire.CAUSE_NETWORK_BUSY
    assert switch.admit(site_a) is None and switch.admit(phone) is None and switch.admit(site_a, app) == wire.CAUSE_NETWORK_BUSY
    assert switch.stats.drops["no free call number"] == 2
    # a leg that goes frees its number on its own link only
    leg = switch.leg(site_a, x)
    switch._forget_leg(leg, 0)
    assert switch.leg(site_a, x) is None and switch.leg(site_b, x) is not None
    assert (site_a, x) in switch._ended and x not in switch._ended
    one = switch.legs[shared[0]]
    switch._forget_leg(one, 0)
    assert switch.admit(app) is None and switch.allocate_call_no(app) == shared[0]


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


def _phone_call(switch, caller, callee, now=0):
    """A connected call between two phones' links at switch; (call, the caller's MediaLeg, the callee's), each
    phone's end of its leg as common/phone.py holds it (sealing mini frames that name the node's number)."""
    call = Call(os.urandom(8), caller.name, callee.name, now)
    ends = []
    for link, role in ((caller, 1), (callee, 0)):
        assert switch.admit(link) is None
        leg = switch.new_leg(link, os.urandom(16), role, call)
        leg.learn_peer(7)
        leg.state = CONNECTED
        setattr(call, "a" if role else "b", leg)
        ends.append(MediaLeg(leg.media_key, 1 - role, 7, leg.call_no))
    switch.calls[call.call_id] = call
    return call, ends[0], ends[1]


def _phone(n):
    return Link("3%04d" % n, "phone", address=("198.18.%d.%d" % (8 + n // 250, 1 + n % 250), 40000))


def test_a_node_numbers_each_phone_session_on_its_own_more_than_2048_phone_legs():
    """A node's phones are numbered per session (2,048 each, the node id in them): 3,000 phones in calls at
    once, more than layout 1's 2,048 on the node, and node trunks keep their own 2,048. A mini frame whose
    number two phones' legs share goes to the one whose phone sent it (its address), or, from an address no
    leg's phone has (it moved, B7), to the one whose key opens it; one that no key opens is dropped."""
    sent = []
    switch = Switch(lambda data, address, voice: sent.append((bytes(data), address)), Stats())
    switch.set_node(5)
    calls = [_phone_call(switch, _phone(2 * k), _phone(2 * k + 1)) for k in range(1500)]
    numbers = [leg.call_no for call, _x, _y in calls for leg in (call.a, call.b)]
    assert len(numbers) == 3000 and all(cluster.call_no_node(n) == 5 for n in numbers)
    assert len(set(numbers[:cluster.LOCAL_CALLS])) == cluster.LOCAL_CALLS   # unique while fewer than 2,048
    assert len(set(numbers)) == cluster.LOCAL_CALLS and switch.own_legs == 3000 and not [
        k for k in switch.legs if type(k) is not tuple]
    trunk = _trunk("node 6")
    assert len(set(_legs(switch, trunk, cluster.LOCAL_CALLS, Call(b"12345678", "1", "2", 0)))) == cluster.LOCAL_CALLS
    assert switch.admit(trunk) == wire.CAUSE_NETWORK_BUSY and switch.admit(_phone(9000)) is None
    # a phone's session holds at most 2,048 legs (its number's 11 bits)
    busy = _phone(9001)
    while switch.admit(busy) is None:
        switch.new_leg(busy, bytes(16), 0, Call(b"12345678", "1", "2", 0))
    assert busy.legs == cluster.LOCAL_CALLS and switch.allocate_call_no(busy) is None
    # two calls whose callers' legs have the same number: each caller's frames reach its own partner
    (one, x1, y1), (two, x2, y2) = next((c, d) for c, d in zip(calls, calls[cluster.LOCAL_CALLS // 2:])
                                        if c[0].a.call_no == d[0].a.call_no)
    number = one.a.call_no
    assert type(switch.minis[number]) is list and {one.a, two.a} <= set(switch.minis[number])
    voice = bytes(range(160))
    for talker, link, listener_link, end in ((x1, one.a.link, one.b.link, y1), (x2, two.a.link, two.b.link, y2)):
        del sent[:]
        assert switch.mini_in(bytearray(talker.seal_mini(40, voice)), 0, link.address).link is link
        assert [address for _data, address in sent] == [listener_link.address]
        assert end.open_mini(bytearray(sent[0][0])) == 40                    # sealed for its own partner
    # the second caller moved (B7): its frame comes from an address no leg's phone has, and its key opens it
    del sent[:]
    assert switch.mini_in(bytearray(x2.seal_mini(60, voice)), 0, ("198.18.99.1", 5000)) is two.a
    assert [address for _data, address in sent] == [two.b.link.address]
    # a frame naming that number that no leg's key opens (a forgery, or a replay) is dropped, whatever its address
    forged = MediaLeg(os.urandom(16), 0, 7, number)
    for address in (one.a.link.address, ("198.18.99.2", 5000)):
        assert switch.mini_in(bytearray(forged.seal_mini(80, voice)), 0, address) is None
    assert switch.mini_in(bytearray(x1.seal_mini(40, voice)), 0, one.a.link.address) is None   # replayed
    assert switch.stats.drops["media rejected"] == 3 and len(sent) == 1
    # a leg that goes leaves the number to the other; the last one leaves it free
    switch._forget_leg(two.a, 0)
    assert two.a not in (switch.minis[number] if type(switch.minis[number]) is list else [switch.minis[number]])
    for leg in list(switch.legs.values()):
        switch._forget_leg(leg, 0)
    assert not switch.minis and switch.own_legs == 0


def _trunk(name):
    """A node trunk's link: "node N" (our login to node N) or "@N" (node N's login to us)."""
    link = Link(name, "node")
    link.node = int(name[5:] if name.startswith("node ") else name[1:])
    return link


def test_node_trunk_number_classes_never_meet_in_a_claim_or_an_adoption():
    """trunk_class: of one node, a class per peer (a claim moves a leg between two of one node's trunks); for
    one peer, a class per node (an adoption puts a lost node's leg on another node's trunk to that peer)."""
    nodes = range(1, cluster.MAX_NODE + 1)
    for x in nodes:
        assert len({trunk_class(x, q) for q in nodes if q != x}) == cluster.MAX_NODE - 1
        assert len({trunk_class(q, x) for q in nodes if q != x}) == cluster.MAX_NODE - 1
        assert all(1 <= trunk_class(x, q) <= cluster.MAX_NODE for q in nodes)


def test_a_node_numbers_node_trunk_legs_per_pair_and_a_claim_or_an_adoption_meets_no_leg():
    """Node 5 gives 2,048 legs to each other node's trunks (its two sessions with that node share them), 6,144
    here with three, more than layout 1's 2,048 on the node. Node 6 is lost and its successor 7 takes its
    halves over: every held leg moves to 7's trunk, where 5 has 2,048 of its own, and none meets one (a claim,
    NodeTrunks.claim); node 7 adopts node 6's legs towards 5 onto its own trunk to 5, full of its own, and none
    meets one (an adoption, Takeover.adopt). Only with two nodes lost at once can a moved leg meet one: it
    does not move (the call ends after the hold)."""
    n5 = Switch(lambda *a: None, Stats())
    n5.set_node(5)
    call = Call(b"12345678", "1", "2", 0)
    to6, from6, to7, to8 = _trunk("node 6"), _trunk("@6"), _trunk("@7"), _trunk("node 8")
    on6 = _legs(n5, to6, 1500, call) + _legs(n5, from6, 548, call)
    on7, on8 = _legs(n5, to7, cluster.LOCAL_CALLS, call), _legs(n5, to8, cluster.LOCAL_CALLS, call)
    assert len(set(on6 + on7 + on8)) == 3 * cluster.LOCAL_CALLS              # unique on the node
    assert {cluster.call_no_node(n) for n in on6} == {trunk_class(5, 6)} and \
        {cluster.call_no_node(n) for n in on7} == {trunk_class(5, 7)}
    assert n5.admit(to6) == n5.admit(from6) == n5.admit(to7) == wire.CAUSE_NETWORK_BUSY
    assert n5.admit(_trunk("node 9")) is None and n5.admit(Link("301", "phone")) is None
    # node 6 lost, its successor 7 carries its halves on: every held leg moves to 7's trunk, meeting none
    held = [n5.leg(to6, n) for n in on6[:1500]] + [n5.leg(from6, n) for n in on6[1500:]]
    assert all(n5.move(leg, to7) for leg in held)
    assert [n5.leg(to7, n) for n in on6] == held and all(n5.leg(to7, n).link is to7 for n in on7)
    assert to7.legs == 2 * cluster.LOCAL_CALLS and to6.legs == from6.legs == 0
    # node 7 adopts node 6's legs towards 5 (numbered by 6 on its trunk to 5) onto its own trunk to 5
    n6, n7 = Switch(lambda *a: None, Stats()), Switch(lambda *a: None, Stats())
    n6.set_node(6)
    n7.set_node(7)
    lost = _legs(n6, _trunk("node 5"), cluster.LOCAL_CALLS, call)
    to5 = _trunk("node 5")
    ours = _legs(n7, to5, cluster.LOCAL_CALLS, call)
    for number in lost:
        assert n7.key(to5, number) not in n7.legs                       # Takeover.adopt's check
        leg = CallLeg(number, bytes(16), 0)
        leg.link, leg.call = to5, call
        n7.place(leg)
    assert len({n7.leg(to5, n) for n in lost + ours}) == 2 * cluster.LOCAL_CALLS and to5.legs == 2 * cluster.LOCAL_CALLS
    assert len(n7.trunk_own) == cluster.LOCAL_CALLS                     # 6's numbers are not 7's to give out
    # two nodes lost at once: 5 holds a leg numbered for 6 (class 12) where node 4's, adopted by 5 on its
    # trunk to 7 (class (4 + 7) % 15 + 1 = 12), has its number: it does not move
    n5._forget_leg(n5.leg(to7, on6[0]), 0)
    back = n5.new_leg(to6, bytes(16), 0, call)
    assert trunk_class(4, 7) == trunk_class(5, 6) == cluster.call_no_node(back.call_no)
    squatter = CallLeg(back.call_no, bytes(16), 0)
    squatter.link, squatter.call = to7, call
    n5.place(squatter)
    assert not n5.move(back, to7) and n5.leg(to6, back.call_no) is back and n5.leg(to7, back.call_no) is squatter


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


def _takeover_at(main):
    """A Takeover on main's core, as ClusterService makes one (host/cluster/node.py): its cluster key."""
    cluster_key = os.urandom(32)
    main.takeover = Takeover(main, cluster_key)
    main.switch.reserved = main.takeover.asked
    return cluster_key


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
        cluster_key = _takeover_at(main)
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


def test_a_lost_nodes_call_between_two_phones_that_had_the_same_number_there_goes_on_here(tmp_path):
    """A lost node numbered its phones per session, so two of its phones' legs may have had the same number
    (node 9's id in it): the survivor takes the call over with those numbers (Takeover, as a phone's NODES
    standby 0 asks), keyed by each phone's session here, and each phone's frames, which name that number
    alone, reach the other phone by the address they come from."""
    world, p = _node_world(tmp_path)
    try:
        main = world.main
        switch = main.switch
        cluster_key = _takeover_at(main)
        world.call("301", "302")
        call = next(iter(switch.calls.values()))
        links = (call.a.link, call.b.link)
        assert [link.name for link in links] == ["301", "302"] and all(cluster.call_no_node(leg.call_no) == 2
                                                                     for leg in (call.a, call.b))
        world.run(200)
        value = json.loads(call_value(call, "n9", cluster_key, main.wall_ms(world.net.now)))
        # as node 9 gave them out: both phones' legs the same number, which each phone names its call by
        number = cluster_make.make_call_no(9, 77)
        for side, phone in (("a", "301"), ("b", "302")):
            value["legs"][side]["call_no"] = number
            p[phone].phone.call.media.peer_call_no = number
        switch.end_call(call, wire.CAUSE_NORMAL, world.net.now)   # this node never had it
        switch._ended.clear()
        world.run(100)
        assert not switch.legs and main.stats.drops["unknown call number"] > 0   # node 9 is no live node
        for link in links:                        # each phone's NODES standby 0 names its call
            main.takeover.moved(link, number, world.net.now)
        assert main.takeover.wanted(world.net.now) == {("phone", "301", number), ("phone", "302", number)}
        assert main.takeover.adopt(value, world.net.now, main.wall_ms(world.net.now)) is None
        adopted = switch.calls[bytes.fromhex(value["uid"])]
        assert (switch.leg(links[0], number), switch.leg(links[1], number)) == (adopted.a, adopted.b)
        assert sorted(switch.minis[number], key=lambda leg: leg.link.name) == [adopted.a, adopted.b]
        rejected = main.stats.drops.get("media rejected", 0)
        marks = _mark(p["302"], p["301"]), _mark(p["301"], p["302"])
        world.run(600)
        _heard_in_order(p["302"], p["301"], 25, marks[0])
        _heard_in_order(p["301"], p["302"], 25, marks[1])
        assert main.stats.counters["mini frames of a shared number"] >= 50
        assert main.stats.drops.get("media rejected", 0) == rejected
        # a new call here meanwhile: node 2's numbers, on sessions of their own
        p["303"] = world.add_phone("303", 7)
        world.run_until(lambda: p["303"].phone.registered, 5000, "303 registered")
        world.call("303", "101")
        new = next(c for c in switch.calls.values() if c.caller == "303")
        assert cluster.call_no_node(new.a.call_no) == 2 and new.a.call_no not in (number,)
        world.hangup("301")
        world.run_until(lambda: p["301"].idle and p["302"].idle, 3000, "the taken-over call released")
        assert number not in switch.minis and switch.calls.keys() == {new.call_id}
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


def test_a_call_taken_over_twenty_times_keeps_its_timestamps_within_reach(tmp_path):
    """A call goes round the cluster's nodes, each taking it over from the key the one before wrote at its own
    takeover, before any frame reached it (kill -9 of the node a call is at, again and again: `upbx bench cluster`'s
    node-kill rounds). A taken-over leg's replay window starts TS_SLACK_MS below the timestamp guessed from the key;
    until session 23 the key written then said that start, so each takeover put the guess 2 s further behind, and
    after about 16 a frame's 16-bit timestamp was extended 65.5 s wrong: every trunk frame of the call was rejected
    (a bench run of 50 kills lost one direction of its call at the 10th). Here the call runs 5 s at each node
    (20 takeovers, one node's core standing for each: its copy ends unheard, the next adopts the key the last wrote)
    and the phones hear each other in order after each, every trunk frame opened."""
    world, p = _node_world(tmp_path)
    try:
        main = world.main
        switch = main.switch
        cluster_key = _takeover_at(main)
        world.call("101", "201")
        world.run(600)
        call = next(iter(switch.calls.values()))
        value = json.loads(call_value(call, "n9", cluster_key, main.wall_ms(world.net.now)))
        for _ in range(20):
            world.run(5000)
            switch.end_call(call, wire.CAUSE_NORMAL, world.net.now)   # lost with its node: the phones know nothing
            switch._ended.clear()
            assert main.takeover.adopt(value, world.net.now, main.wall_ms(world.net.now)) is None
            call = switch.calls[bytes.fromhex(value["uid"])]
            # the node writes the call's key at once, before any frame of it reached it
            value = json.loads(call_value(call, "n9", cluster_key, main.wall_ms(world.net.now)))
            rejected = main.stats.drops.get("trunk rejected", 0)
            marks = _mark(p["201"], p["101"]), _mark(p["101"], p["201"])
            world.run(600)
            _heard_in_order(p["201"], p["101"], 25, marks[0])
            _heard_in_order(p["101"], p["201"], 25, marks[1])
            assert main.stats.drops.get("trunk rejected", 0) == rejected
        assert main.stats.counters["calls taken over"] == 20
        # the last key said the guess, within TS_SLACK_MS of site a's timestamps as they came: not 20 x 2 s behind
        assert abs(value["legs"]["a"]["ts"] + 600 - call.a.media.replay.highest) <= 2000
        world.hangup("201")
        world.run_until(lambda: p["201"].idle and p["101"].idle, 3000, "released")
        assert not world.net.errors
    finally:
        world.close()
