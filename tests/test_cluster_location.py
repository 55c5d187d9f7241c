"""A call to a client whose location Redis does not name yet (docs/cluster.md, "Calls between nodes").

A site logs in at one node and a call to it arrives at another an instant later: the first node's write
of the site's location key is still on its way when the second reads it. The second node's SETUP waits
(parked) and Redis is asked again until a node is named or PARK_MS passes; before, Redis's "no such key"
was believed at once and the call was refused "unreachable" (or sent to voicemail), and for 2 s every
other call to that site too (a cross-node TrunkPair in a loaded CI run never got its calls answered).

In memory: tests/inprocess.py's World, its main host a cluster's node 2 with the node's real NodeTrunks
(host/cluster/trunk.py). The test plays host/cluster/trunk.py's LocationService, the one part that talks
to Redis: it reads what the core asks (`NodeTrunks.asked`) and gives Redis's answer (`answered`).
"""
from upbx.common import wire
from upbx.host.cluster import trunk
from upbx.host.cluster.trunk import NodeTrunks
from tests.inprocess import MAIN, TICK_MS, World, flush_host
from tests.test_cluster_forward import make_node

SITE_B = ("host", "site-b")


def _node(tmp_path):
    world = World(tmp_path, site_b=True, main_settings="direct_media = false\n")
    secret = world.main.peers._cookie_secret
    make_node(world.main, 2, MAIN, secret)
    world.main.xnode = NodeTrunks(world.main, 2, secret)
    phone = world.add_phone("301", 1)
    world.run_until(lambda: phone.phone.registered, 5000, "301 registered")
    return world, phone


def _dial_site_b(world, phone):
    """301 (straight at the node) dials 201 (site b, logged in at no node yet): the SETUP waits for Redis."""
    xnode = world.main.xnode
    assert phone.phone.dial("201", world.net.now)
    phone.flush()
    world.settle()
    assert [ies[wire.IE_CALLED] for _link, ies, _when in xnode.parked[SITE_B]] == ["201"]
    assert SITE_B in xnode.asked and not world.main.switch.legs
    xnode.asked.discard(SITE_B)       # LocationService took it, and Redis has no key:
    xnode.answered({SITE_B: None}, world.net.now)


def _site_b_logs_in_here(world):
    """Site b's remote host and 201 log in at this node; when the node next asks Redis, its key names this node.
    Returns 201's PhoneEnd."""
    xnode = world.main.xnode
    world.b.start(world.net.now)
    flush_host(world.net, world.b)
    world.settle()
    callee = world.add_phone("201", 2)
    world.run_until(lambda: callee.phone.registered, 1000, "201 registered")
    world.run_until(lambda: SITE_B in xnode.asked, trunk.ABSENT_ASK_MS + 3 * TICK_MS, "asked again")
    xnode.asked.discard(SITE_B)
    xnode.answered({SITE_B: 2}, world.net.now)
    world.settle()
    return callee


def test_a_call_waits_for_a_location_redis_names_a_moment_later(tmp_path):
    world, phone = _node(tmp_path)
    xnode = world.main.xnode
    try:
        _dial_site_b(world, phone)
        # it waits on, nothing refused, and Redis is asked again within ABSENT_ASK_MS
        assert xnode.parked[SITE_B] and phone.causes() == [] and not phone.idle
        world.run_until(lambda: SITE_B in xnode.asked, trunk.ABSENT_ASK_MS + 3 * TICK_MS, "asked again")
        xnode.asked.discard(SITE_B)
        xnode.answered({SITE_B: None}, world.net.now)    # still none
        # site b logs in here meanwhile, with 201; its key (this node) is what Redis answers next
        callee = _site_b_logs_in_here(world)
        assert not xnode.parked and not xnode.absent
        world.run_until(lambda: callee.phone.call is not None,
                        1000, "201 rings")
        callee.phone.answer(world.net.now)
        callee.flush()
        world.run_until(lambda: phone.connected and callee.connected, 1000, "connected")
        world.run(400)
        # audio both ways, in order
        assert len(callee.received) >= 15 and callee.received == phone.sent[:len(callee.received)]
        assert len(phone.received) >= 15 and phone.received == callee.sent[:len(phone.received)]
        assert world.main.stats.counters.get("location: none found", 0) == 0
    finally:
        world.close()


def test_a_call_to_a_client_no_node_names_for_park_ms_is_refused_unreachable(tmp_path):
    world, phone = _node(tmp_path)
    xnode = world.main.xnode
    try:
        _dial_site_b(world, phone)
        asks = 0

        def ask_redis():   # LocationService: every ask answered "no such key"
            nonlocal asks
            if SITE_B in xnode.asked:
                asks += 1
                xnode.asked.discard(SITE_B)
                xnode.answered({SITE_B: None}, world.net.now)
            return phone.idle

        took = world.run_until(ask_redis, trunk.PARK_MS + 10 * TICK_MS, "the call refused")
        assert took >= trunk.PARK_MS
        assert phone.causes() == [wire.CAUSE_UNREACHABLE]
        assert asks >= trunk.PARK_MS // (trunk.ABSENT_ASK_MS + 2 * TICK_MS) - 1
        assert world.main.stats.counters["location: none found"] == 1
        # nothing left: no leg, no SETUP waiting, no lookup
        assert not world.main.switch.legs and not xnode.parked and not xnode.absent
        assert SITE_B not in xnode.cache
    finally:
        world.close()


def test_a_call_to_a_client_redis_names_at_a_lost_node_waits_for_its_new_location(tmp_path):
    """Redis still names node 3 for site b (a node lost a moment ago, no trunk to it up here: the site is logging in
    again elsewhere, its new node's write on its way). The SETUP waits and Redis is asked again, as for a client no
    node names yet; once it names this node (site b logged in here), 201 rings. Before (session 19), "node trunk not
    up" refused the call "unreachable" at once: two phones without a standby that log in again after their node's
    kill within the same second (tests/test_cluster_standby.py's 100K .mpy phones) lost a call placed at once."""
    world, phone = _node(tmp_path)
    xnode = world.main.xnode
    try:
        assert phone.phone.dial("201", world.net.now)
        phone.flush()
        world.settle()
        assert SITE_B in xnode.asked
        xnode.asked.discard(SITE_B)
        xnode.answered({SITE_B: 3}, world.net.now)      # node 3: lost, no trunk to it
        assert xnode.parked[SITE_B] and SITE_B not in xnode.cache and phone.causes() == [] and not phone.idle
        callee = _site_b_logs_in_here(world)
        world.run_until(lambda: callee.phone.call is not None, 1000, "201 rings")
        assert phone.causes() == [] and not xnode.parked
        assert world.main.stats.counters.get("location: none found", 0) == 0
    finally:
        world.close()


def test_a_cached_location_at_a_node_without_a_trunk_up_is_asked_again(tmp_path):
    """A location cached a moment ago names a node whose trunk is down now: the SETUP does not take it for an answer
    ("unreachable" at once) but waits while Redis is asked again; Redis saying no node for PARK_MS, it is then
    routed as a client no node names (refused "unreachable" here)."""
    world, phone = _node(tmp_path)
    xnode = world.main.xnode
    try:
        xnode.cache[SITE_B] = (3, world.net.now + 10000)
        assert phone.phone.dial("201", world.net.now)
        phone.flush()
        world.settle()
        assert xnode.parked[SITE_B] and SITE_B in xnode.asked and SITE_B not in xnode.cache
        assert world.main.stats.counters["location: node trunk not up"] == 1

        def ask_redis():
            if SITE_B in xnode.asked:
                xnode.asked.discard(SITE_B)
                xnode.answered({SITE_B: 3}, world.net.now)   # still the lost node
            return phone.idle

        took = world.run_until(ask_redis, trunk.PARK_MS + 10 * TICK_MS, "the call refused")
        assert took >= trunk.PARK_MS and phone.causes() == [wire.CAUSE_UNREACHABLE]
        assert not world.main.switch.legs and not xnode.parked and not xnode.absent
    finally:
        world.close()
