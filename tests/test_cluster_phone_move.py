"""A phone straight at a node moves to the first node of its rendezvous order once idle (issue 16: "adding a node
moves at most 1/N of the sites"; docs/cluster.md "A phone moves to its first node").

tests/test_cluster_xgroup.py's two nodes on the real host cores in one process, Redis's location keys played by its
`Locations`. Phone 301 logs in straight at the node that is *not* first in its rendezvous order (as a handset
configured with another node's address does, or one that stayed at its successor after a failover), keeping its
standby session as a handset does (tests/inprocess.py PhoneEnd `standby`, common/standby.py). Until session 18 it
stayed there until its next login, which on a handset that stays up may be months. Now it moves once idle, make
before break, with no new handshake: common/standby.py is the firmware's own code, run here under CPython (and under
MicroPython in tests/common/test_cluster_layout.py).
"""
import pytest

from upbx.common import cluster, standby, wire
from tests.test_cluster_forward import NODE1
from tests.test_cluster_xgroup import MAIN, TwoNodes, _in_order, _listen

ADDRESS = {1: NODE1, 2: MAIN}


@pytest.fixture
def world(tmp_path):
    world = TwoNodes(tmp_path)
    try:
        world.first = cluster.rendezvous(cluster.identity("phone", "301"), [1, 2])[0]
        world.other = 3 - world.first
        mover = world.add_phone_at("301", 1, world.other)      # at the node that is not its first
        mover.standby = True
        mover.phone.rebalance_ms = 4000                          # the move falls due 2 to 4 s after the login
        world.add_phone_at("302", 2, world.other)                # stays (rebalance 0)
        world.add_phone_at("303", 7, world.first)
        p = world.phones
        world.run_until(lambda: all(e.phone.registered for e in p.values()), 5000, "registered")
        world.run_until(lambda: p["301"].standby_up(), 3000,
                        "301's standby session up")
        yield world
    finally:
        world.close()


def _node(world, n):
    return world.n1 if n == 1 else world.main


def _talk(world, a, b):
    p = world.phones
    _listen(world, 600)
    _in_order(p[a], p[b], 20)
    _in_order(p[b], p[a], 20)


def test_an_idle_phone_moves_to_the_first_node_of_its_order_with_no_new_handshake(world):
    p, mover = world.phones, world.phones["301"].phone
    assert tuple(mover.standby_to) == ADDRESS[world.first]   # two nodes: the home's successor is its first node
    assert world.locations.keys[("phone", "301")] == world.other
    # a call spans the move's moment (4 s after the login at most): nothing moves while it lasts
    world.call("302", "301")
    world.run(4500)
    assert tuple(p["301"].host) == ADDRESS[world.other] and p["301"].connected
    _talk(world, "301", "302")
    standby_session = mover.standby
    world.hangup("302")
    world.run_until(lambda: p["301"].idle, 1000, "the call ended")
    # idle: the standby session at its first node becomes its session, the old one is logged out
    world.run_until(lambda: tuple(p["301"].host) == ADDRESS[world.first], 1000, "301 moved")
    assert mover.login is standby_session                  # the same session, its keys: no handshake
    assert mover._node_up == world.first and tuple(mover.standby_to) == ADDRESS[world.other]
    world.run_until(lambda: world.locations.keys.get(("phone", "301")) == world.first
                    and p["301"].standby_up(ADDRESS[world.other]), 3000,
                    "Redis names its first node, its new standby at the old node up")
    old = _node(world, world.other)
    assert [ph["extension"] for ph in old.status()["phones"] if ph["extension"] == "301" and not ph.get("standby")] == []
    assert not standby._move                               # nothing more to do
    # calls reach it at its new node: from a phone at the old node (over the trunk) and from one at its new node
    world.call("302", "301")
    _talk(world, "301", "302")
    world.hangup("301")
    world.run_until(lambda: p["302"].idle, 1000, "hung up")
    world.call("303", "301")
    _talk(world, "301", "303")
    world.hangup("303")
    world.run_until(lambda: p["301"].idle, 1000, "hung up")
    assert p["302"].causes() == [wire.CAUSE_NORMAL] * 2 and p["303"].causes() == [wire.CAUSE_NORMAL]
    # and it stays there
    world.run(5000)
    assert tuple(p["301"].host) == ADDRESS[world.first] and not world.net.errors


def test_a_move_whose_first_node_does_not_answer_is_put_off_and_the_phone_stays_home(world):
    """The first node's address answers nothing (its datagrams are dropped) from the moment the move falls due: the
    phone's standby there cannot log in again; the phone stays at its home node, works, and tries again later."""
    p, mover = world.phones, world.phones["301"].phone
    first = ADDRESS[world.first]
    send = world.net.send

    def dropped(data, source, destination):
        if tuple(destination[:2]) == first and tuple(source[:2]) == p["301"].address:
            return
        send(data, source, destination)
    world.net.send = dropped
    entry = standby._move[mover]                           # due 2 to 4 s after the login
    world.run_until(lambda: entry[2] == 1, 20000, "the move put off")
    assert tuple(p["301"].host) == ADDRESS[world.other] and mover.registered
    world.call("302", "301")
    _talk(world, "301", "302")
    world.hangup("301")
    world.run_until(lambda: p["302"].idle, 1000, "hung up")


def test_the_rebalance_flag_refuses_what_is_not_seconds_and_reaches_the_handsets_config():
    """`upbx phone --rebalance`: a negative or non-numeric value is refused naming the flag; a good one is the
    firmware config's `rebalance_s` (firmware/appstart.py sets Phone.rebalance_ms from it)."""
    import argparse
    from upbx.tools.phone import add_arguments, device_config
    parser = argparse.ArgumentParser(prog="upbx phone")
    parser.exit = lambda status=0, message=None: (_ for _ in ()).throw(SystemExit(message))
    add_arguments(parser)
    base = ["--extension", "301", "--secret", "00" * 16, "--host", "127.0.0.1:4569"]
    for bad, why in (("-3", "must be 0 or more seconds: '-3'"), ("abc", "not a number of seconds: 'abc'")):
        with pytest.raises(SystemExit) as failed:
            parser.parse_args(base + ["--rebalance", bad])
        assert "argument --rebalance: " + why in str(failed.value)
    assert device_config(parser.parse_args(base + ["--rebalance", "2.5"]))["rebalance_s"] == 2.5
    assert "rebalance_s" not in device_config(parser.parse_args(base))
