"""A site moves to the first node of its rendezvous order once idle (docs/cluster.md, "A site moves to its
first node"; issue 16: "adding a node moves at most 1/N of the sites and drops no call").

tests/test_cluster_xgroup.py's two nodes on the real host cores in one process, with the part of Redis that
keeps the location keys (`Locations`: set, set-unless-another's and delete-if-ours as the Lua scripts do).
Site a's remote host is configured at node 2, but its rendezvous order starts with node 1 (a node that
joined ahead of its home, or its first node back after a failover): with `rebalance_s` it moves there when
it has no call, make before break. What is asserted: the site stays while a call is up (the call's audio
goes on), then moves with no new login, the location key names node 1, node 2 keeps its session as the
standby, and calls to and from the site's phones reach them through node 1 afterwards.
"""
import pytest

from upbx.common import wire
from upbx.host import remote_host
from upbx.host.cluster.trunk import NodeTrunks
from upbx.host.config import load_main_config
from upbx.host.log import StructuredLog
from upbx.host.main_host import MainHost
from tests.inprocess import MAIN, SITE_A, WALL_MS, attach_host, flush_host
from tests.test_cluster_forward import NODE1, make_node
from tests.test_cluster_xgroup import TwoNodes, _in_order, _listen, with_phones

REBALANCE_S = 4


@pytest.fixture
def world(tmp_path):
    world = TwoNodes(tmp_path, remote_settings={"rebalance_s": REBALANCE_S})
    try:
        yield with_phones(world, dead_ms=2000)
    finally:
        world.close()


def _at(world, node_address):
    return tuple(world.a.main_address[:2]) == node_address


def _talks(world, caller, callee):
    """caller calls callee: both connected, frames both ways in order; hung up, both idle."""
    p = world.phones
    world.call(caller, callee)
    _listen(world, 600)
    _in_order(p[callee], p[caller], 20)
    _in_order(p[caller], p[callee], 20)
    world.hangup(caller)
    world.run_until(lambda: p[caller].idle and p[callee].idle, 2000, "%s and %s idle" % (caller, callee))
    assert p[caller].causes()[-1] == p[callee].causes()[-1] == wire.CAUSE_NORMAL


def test_an_idle_site_moves_to_its_first_node_with_no_new_login_and_its_calls_follow(world):
    a, p = world.a, world.phones
    assert [n for n, _address in a.cluster_nodes] == [1, 2] and _at(world, MAIN)
    assert world.locations.keys[("host", "site-a")] == 2
    # its standby session is at its home's successor, node 1, which is also the node it moves to
    world.run_until(lambda: a.standby_link.up and tuple(a.standby_link.address[:2]) == NODE1, 3000, "standby up")
    logins = (a.login.logins, a.standby.logins)
    world.run_until(lambda: a.move_at is not None, 1000, "the move planned")
    due = a.move_at - world.net.now
    assert REBALANCE_S * 500 <= due <= REBALANCE_S * 1000 and a.status()["cluster"]["move"] == due

    # a call between the sites (node 2 -> node 1) up past the move's moment: the site stays while it lasts
    world.call("101", "201")
    world.run(REBALANCE_S * 1000 + 1000)
    assert _at(world, MAIN) and a.stats.counters.get("moves to the first node") is None
    _listen(world, 600)
    _in_order(p["201"], p["101"], 20)
    _in_order(p["101"], p["201"], 20)
    world.hangup("101")
    # idle: it moves at once (the standby session there is up, no handshake), the old home's session the standby
    took = world.run_until(lambda: _at(world, NODE1), 1000, "site a at node 1")
    assert p["101"].causes()[-1] == p["201"].causes()[-1] == wire.CAUSE_NORMAL
    assert a.stats.counters["moves to the first node"] == 1 and "moves put off" not in a.stats.counters
    world.run(remote_host.MOVE_LEAVE_MS + 500)
    # node 1 is site a's home now, node 2 its standby (node 1's successor): the two sessions swapped, nobody
    # logged in again
    assert (a.login.logins, a.standby.logins) == logins[::-1]
    assert tuple(a.standby_link.address[:2]) == MAIN and a.standby_link.up and a.main_link.up
    assert ("host", "site-a") in world.n1.xnode.homes and ("host", "site-a") in world.main.xnode.standbys
    assert world.locations.keys[("host", "site-a")] == 1
    assert a.move_at is None and a.status()["cluster"]["move"] is None
    print("site a moved %d ms after its last call ended (planned %d ms after it noticed)" % (took, due))

    # calls follow: within site b's node (101 <-> 201 at node 1 alone), and from node 2's phone through Redis
    # to node 1 (node 2 has only the site's standby session: it routes there no call)
    _talks(world, "101", "201")
    assert not world.main.switch.calls
    _talks(world, "301", "102")
    _talks(world, "102", "302")
    assert not world.net.errors


def test_a_move_whose_first_node_does_not_answer_is_put_off_and_the_site_keeps_working(world):
    """Site a's datagrams to node 1 are lost: its standby session there is down, the move cannot log in and
    is put off after MOVE_LOGIN_MS (planned again later); the site stays at node 2, whose calls go on. Once
    node 1 answers again, the site moves."""
    a = world.a
    world.run_until(lambda: a.standby_link.up, 3000, "standby up")
    send = world.net.send
    lost = {"on": True}

    def lossy(data, source, destination):
        if lost["on"] and tuple(source) == SITE_A and tuple(destination[:2]) == NODE1:
            return
        send(data, source, destination)
    world.net.send = lossy
    world.run_until(lambda: not a.standby_link.up, 10000, "standby down")
    world.run_until(lambda: a.moving is not None, REBALANCE_S * 1000 + 1000, "the move logging in")
    world.run_until(lambda: a.moving is None, remote_host.MOVE_LOGIN_MS + 1000, "the move put off")
    assert a.stats.counters["moves put off"] == 1 and _at(world, MAIN)
    # tried again later, twice as late as the first time (a node this site cannot reach is not tried at
    # rebalance_s all the time)
    assert REBALANCE_S * 1000 <= a.move_at - world.net.now <= REBALANCE_S * 2000
    assert world.locations.keys[("host", "site-a")] == 2
    _talks(world, "101", "301")
    lost["on"] = False
    world.run_until(lambda: _at(world, NODE1), REBALANCE_S * 2000 + 5000, "site a at node 1")
    world.run(remote_host.MOVE_LEAVE_MS + 500)
    assert world.locations.keys[("host", "site-a")] == 1 and a.move_put_offs == 0
    _talks(world, "301", "101")


def test_a_move_waits_for_the_last_call_record_to_be_stored(world):
    """A local call at site a (101 -> 102, switched by its remote host) up past the move's moment: the site
    stays; the call ends and its record goes to node 2, the home then. The move waits for node 2 to have it
    (its acknowledgement comes on that session, which is the standby after the move, whose messages are
    ignored): the record is uploaded once and stored once, and nothing is left pending at the site."""
    a, p = world.a, world.phones
    world.run_until(lambda: a.move_at is not None, 3000, "the move planned")
    world.call("101", "102")
    world.run(REBALANCE_S * 1000 + 1000)
    assert _at(world, MAIN) and a.status()["calls"][0]["path"] == "local"
    # node 2's answers to site a are lost for 300 ms after the hang-up (its acknowledgement of the record comes
    # again later): until session 16's fix the site moved meanwhile and uploaded the record to node 1 as well
    send, hung_up = world.net.send, world.net.now

    def slow(data, source, destination):
        if tuple(source) == MAIN and tuple(destination[:2]) == SITE_A and world.net.now < hung_up + 300:
            return
        send(data, source, destination)
    world.net.send = slow
    world.hangup("101")
    world.run_until(lambda: _at(world, NODE1), 3000, "site a at node 1")
    world.run(remote_host.MOVE_LEAVE_MS + 500)
    assert a.status()["records_pending"] == 0 and not a.uploading
    # the two nodes share one database here (main.toml), as a cluster's share PostgreSQL: stored once, uploaded once
    stored = [(r.origin, r.caller, r.callee, r.path) for r in world.main.directory.call_records()]
    assert stored == [("site-a", "101", "102", "local")]
    assert a.stats.counters["records uploaded"] == 1
    assert world.main.stats.counters["msg RECORDS"] == 1 and "msg RECORDS" not in world.n1.stats.counters


class Node1Returns(TwoNodes):
    """TwoNodes whose node 1 can be lost (kill -9: nothing reaches it, it runs no timer) and started again
    with the same node id, as a node restarted on the same name takes its number back (etcd, played here:
    each node's list of live nodes, set_cluster_nodes; TwoNodes.tick runs the node left)."""

    def lose_node_1(self):
        del self.net.endpoints[NODE1]
        self.n1.directory.close()
        self.n1 = None

    def start_node_1(self):
        n1 = MainHost(load_main_config(str(self.tmp / "main.toml")), StructuredLog("n1", "error"))
        attach_host(self.net, n1, NODE1)
        n1.wall_offset_ms = WALL_MS - 1000
        secret = self.main.peers._cookie_secret
        make_node(n1, 1, NODE1, secret)
        n1.xnode = NodeTrunks(n1, 1, secret)
        n1.start(self.net.now)
        self.n1 = n1
        for host in (self.main, n1):
            host.set_cluster_nodes({1: NODE1, 2: MAIN}, self.net.now)
            flush_host(self.net, host)


def test_a_site_failed_over_goes_back_to_its_first_node_when_that_node_returns(tmp_path):
    """Site b's remote host at node 1, its first node (standby at node 2). Node 1 is lost: site b switches to its
    standby session at node 2 (no handshake), node 2's list is {2}. Node 1 starts again: node 2 sends its sessions
    the list {1, 2}; site b, idle, moves back to node 1 within rebalance_s, its standby session there first (a
    login: node 1 is new), with no further login at the swap, and its old home's session (node 2) stays as its
    standby. Calls between site a (node 2) and site b go through both nodes again; Redis names node 1 for site b.
    Until session 16 site b stayed at node 2 until its next login."""
    world = with_phones(Node1Returns(tmp_path, site_b_settings={"rebalance_s": REBALANCE_S}), dead_ms=2000)
    try:
        b, p = world.b, world.phones
        world.run_until(lambda: b.standby_link.up and tuple(b.standby_link.address[:2]) == MAIN, 3000, "standby up")
        assert tuple(b.main_address[:2]) == NODE1 and [n for n, _a in b.cluster_nodes] == [1, 2]
        _talks(world, "201", "101")
        world.lose_node_1()
        world.run_until(lambda: tuple(b.main_address[:2]) == MAIN, 6000, "site b switched to node 2")
        world.main.set_cluster_nodes({2: MAIN}, world.net.now)    # node 1's lease ends
        world.run_until(lambda: [n for n, _a in b.cluster_nodes] == [2], 2000, "site b hears node 2 alone")
        world.run_until(lambda: world.locations.keys.get(("host", "site-b")) == 2, 2000, "Redis names node 2")
        _talks(world, "101", "201")               # at node 2 alone now
        assert b.stats.counters["standby switches"] == 1 and "moves to the first node" not in b.stats.counters

        world.start_node_1()
        world.run_until(lambda: [n for n, _a in b.cluster_nodes] == [1, 2], 2000, "site b hears node 1 again")
        # its old session logs in again at node 1 as the standby (node 2's successor), and is the one it moves to
        world.run_until(lambda: b.standby_link.up and tuple(b.standby_link.address[:2]) == NODE1, 5000,
                        "site b's standby session at node 1")
        assert tuple(b.main_address[:2]) == MAIN
        session = (b.standby.local_index, world.n1.peers.by_identity[("host", "site-b")].index)
        world.run_until(lambda: tuple(b.main_address[:2]) == NODE1, REBALANCE_S * 1000 + 1000, "site b at node 1")
        assert (b.login.local_index, world.n1.peers.by_identity[("host", "site-b")].index) == session
        world.run(remote_host.MOVE_LEAVE_MS + 500)
        assert b.stats.counters["moves to the first node"] == 1
        assert tuple(b.standby_link.address[:2]) == MAIN and b.standby_link.up
        assert ("host", "site-b") in world.n1.xnode.homes and ("host", "site-b") in world.main.xnode.standbys
        assert world.locations.keys[("host", "site-b")] == 1
        world.run_until(lambda: all(t["state"] == "up" for h in (world.main, world.n1)
                                    for t in h.xnode.status().values()), 5000, "the trunk sessions up")
        _talks(world, "101", "201")
        _talks(world, "202", "102")
        assert not world.net.errors
    finally:
        world.close()
