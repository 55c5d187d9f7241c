"""The grace period (issue 16 item 3, docs/survivability.md): a remote host holds its inter-site
calls while the main host is silent, for `[remote] main_grace_s`.

On the real host cores with a virtual clock (tests/inprocess.py): the main host stopped as SIGSTOP
stops it (it runs nothing, what is sent to it waits in its socket buffer) during a relayed (B1) or
a direct (B2) call between two sites and a local call (B3): the calls go on when it runs again,
audio both ways; stopped past the grace period, the inter-site call ends "main host lost" on both
phones, the local call goes on. The same with real daemons and firmware phones:
tests/test_main_grace_daemons.py.
"""
import pytest

from upbx.common import wire
from tests.inprocess import World

GRACE_MS = 10000          # the default main_grace_s
SILENT_MS = 3000          # 1 s in-call keepalive + 2 s without an answer (host/remote_host.py)
PAUSE_MS = 5000           # past SILENT_MS (the hold is used), well within the grace period


def arrived(sender, receiver, last):
    """The sender's last `last` frames are all in what the receiver got, in order."""
    tail = sender.sent[-last:]
    got = set(receiver.received)
    return len(tail) == last and all(p in got for p in tail) and receiver.received[-last:] == tail


def counters(host):
    return host.status()["stats"]["counters"]


@pytest.mark.parametrize("direct", [False, True], ids=["relay-b1", "direct-b2"])
def test_inter_site_call_held_through_a_main_host_stop_and_released_past_the_grace_period(tmp_path, direct):
    world = World(tmp_path, site_b=True, extensions=(("103", "a"),),
                  main_settings="direct_media = %s\n" % ("true" if direct else "false"))
    try:
        world.start_remote()
        for i, number in enumerate(("101", "102", "103", "201")):
            world.add_phone(number, i + 1, dead_ms=2000)    # the firmware's liveness to its remote host
        world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
        p = world.phones
        world.call("101", "201")
        world.call("102", "103")
        path = "direct" if direct else "relay"
        world.run_until(lambda: [c["path"] for c in world.main.status()["calls"]] == [path], 5000,
                        "the inter-site call's path is " + path)
        assert sorted(c["path"] for c in world.a.status()["calls"]) == ["local", "relay"]
        legs = [leg for leg in world.a.switch.legs.values() if leg.link is world.a.main_link]
        assert len(legs) == 1 and (legs[0].direct is not None) == direct
        world.run(1000)

        # 1. stopped for 5 s: both remote hosts notice (3 s), hold the call, and it goes on afterwards
        world.pause_main()
        world.run(PAUSE_MS)
        for host in (world.a, world.b):
            main = host.status()["main"]
            assert main["state"] == "up" and main["calls_held"] == 1 and main["silent_ms"] >= SILENT_MS, main
            assert counters(host).get("main host silences") == 1
        assert p["101"].connected and p["201"].connected
        if direct:   # direct media never touched the main host: it flowed throughout
            assert arrived(p["101"], p["201"], PAUSE_MS // 20) and arrived(p["201"], p["101"], PAUSE_MS // 20)
        world.resume_main()
        world.run(1000)
        for host in (world.a, world.b):
            main = host.status()["main"]
            assert main["state"] == "up" and main["silent_ms"] is None and main["logins"] == 1, main
            assert counters(host).get("main host returns") == 1
        world.run(1000)
        # the last second's audio arrived both ways (relayed through the main host again, or direct)
        assert p["101"].connected and p["201"].connected
        assert arrived(p["101"], p["201"], 40) and arrived(p["201"], p["101"], 40)
        assert p["101"].causes() == [] and p["201"].causes() == []

        # 2. stopped past the grace period: released "main host lost" on both phones, at its end
        world.pause_main()
        stopped = world.net.now
        world.run_until(lambda: p["101"].causes() and p["201"].causes(), SILENT_MS + GRACE_MS + 2000,
                        "the held call released")
        took = world.net.now - stopped
        assert p["101"].causes() == [wire.CAUSE_MAIN_LOST] and p["201"].causes() == [wire.CAUSE_MAIN_LOST]
        assert wire.CAUSE_TEXT[wire.CAUSE_MAIN_LOST] == "main host lost"
        # held for the whole grace period (after the keepalive had missed its answers), not longer
        assert SILENT_MS + GRACE_MS - 1000 <= took <= SILENT_MS + GRACE_MS + 500, took
        print("held call released %d ms after the main host stopped" % took)
        assert counters(world.a).get("calls released after the grace period") == 1

        # 3. the local call (B3) went on through both stops, every frame both ways in order
        assert p["102"].connected and p["103"].connected and p["102"].causes() == []
        assert p["103"].received == p["102"].sent and p["102"].received == p["103"].sent
        assert len(p["102"].sent) >= (PAUSE_MS + 2000 + took) // 20

        # 4. the main host runs again: both remote hosts log in again, a new inter-site call connects
        world.resume_main()
        world.run_until(lambda: all(h.status()["main"]["state"] == "up" and h.status()["main"]["logins"] == 2
                                    for h in (world.a, world.b)), 10000, "logged in again")
        world.call("101", "201")
        world.run(500)
        assert arrived(p["101"], p["201"], 10) and arrived(p["201"], p["101"], 10)
        assert not world.net.errors
        for host in world.hosts:
            assert "internal error" not in host.status()["stats"]["drops"]
    finally:
        world.close()


def test_no_grace_period_releases_when_the_silence_is_noticed(tmp_path):
    """main_grace_s = 0: as before the grace period existed, "unreachable" after 3 s of silence."""
    world = World(tmp_path, remote_settings={"main_grace_s": 0}, extensions=(("103", "a"),))
    try:
        world.start_remote()
        for i, number in enumerate(("101", "301")):
            world.add_phone(number, i + 1, dead_ms=2000)
        world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
        world.call("101", "301")
        world.run(1000)
        world.pause_main()
        took = world.run_until(lambda: world.phones["101"].causes(), SILENT_MS + 1000, "released")
        assert world.phones["101"].causes() == [wire.CAUSE_UNREACHABLE]
        assert took >= SILENT_MS - 1000
        assert "main host silences" not in counters(world.a)
    finally:
        world.close()


def test_standby_node_is_the_next_in_the_sites_rendezvous_order_from_cluster_nodes(tmp_path):
    """A WELCOME listing the cluster's nodes (IE cluster_nodes, common/cluster.py): the remote host
    keeps a standby session to its home node's successor (the same for every client of that node)
    (logging in there: a HELLO goes to that address); a cluster_nodes it cannot read is counted and
    leaves it with the list it heard before."""
    from upbx.common import cluster, cluster_make
    from tests.inprocess import MAIN, flush_host
    world = World(tmp_path)
    try:
        world.start_remote()
        nodes = [(1, MAIN), (2, ("198.18.0.12", 4569)), (3, ("198.18.0.13", 4569)), (4, ("198.18.0.14", 4569))]
        want = dict(nodes)[cluster.successor(1, [n for n, _a in nodes])]   # MAIN is node 1, its home
        world.a._learn_nodes(cluster_make.encode_nodes(nodes))   # as a WELCOME, SYSINFO or NODES brings them
        world.a._choose_standby(world.net.now)
        assert world.a.status()["main"]["standby"]["address"] == "%s:%d" % want
        world.net.queue.clear()
        flush_host(world.net, world.a)
        sent = [(data, destination) for data, _source, destination in world.net.queue]
        assert [wire.parse_full(d)[3] for d, dest in sent if dest == want] == [wire.HELLO]
        world.a._learn_nodes(b"\x01\x05")   # a cut entry: counted, the list heard before stays
        world.a._choose_standby(world.net.now)
        assert world.a.status()["stats"]["drops"].get("bad cluster_nodes") == 1
        assert world.a.status()["main"]["standby"]["address"] == "%s:%d" % want
    finally:
        world.close()


class _Ticker:
    """A second main host on the World's network, run as World runs its own (one tick each 20 ms)."""

    def __init__(self, net, host):
        self.net, self.host = net, host

    def tick(self):
        from tests.inprocess import flush_host
        timer = self.host.get_timer()
        if timer is not None and timer <= self.net.now:
            self.host.handle_timer(self.net.now)
        flush_host(self.net, self.host)


def test_standby_session_switched_to_without_a_handshake_and_a_call_nobody_takes_over_ends(tmp_path):
    """Site a's remote host with `standby` naming a second main host: logged in there beside its main
    host. The main host stops: idle, the site moves to the standby session within 4 s, with no new
    login (the second main host keeps the session it had). Then in a call relayed by the second
    main host, that one dies: the site switches back within 2 s, but that main host has no cluster
    to take the call over from: its media never comes back and the call ends "main host lost" once
    the grace period has passed, instead of staying up in silence."""
    from upbx.host.config import load_main_config
    from upbx.host.log import StructuredLog
    from upbx.host.main_host import MainHost
    from tests.inprocess import MAIN, TICK_MS, WALL_MS, PhoneEnd, attach_host, flush_host
    main2_address = ("198.18.0.2", 4569)
    world = World(tmp_path, remote_settings={"standby": "%s:%d" % main2_address})
    (tmp_path / "main2.toml").write_text('[main]\nlisten = "%s:%d"\ndatabase = "main.sqlite"\nlog_level = "error"\n'
                                         % main2_address)
    main2 = MainHost(load_main_config(str(tmp_path / "main2.toml")), StructuredLog("main2", "error"))
    try:
        attach_host(world.net, main2, main2_address)
        world.net.wan.add(main2_address)
        main2.wall_offset_ms = WALL_MS - 1000
        main2.start(world.net.now)
        flush_host(world.net, main2)
        ticker = _Ticker(world.net, main2)
        world.others.append(ticker)
        world.start_remote()
        a = world.a
        world.run_until(lambda: (a.status()["main"]["standby"] or {}).get("state") == "up", 3000, "standby up")
        assert a.status()["main"]["standby"]["address"] == "%s:%d" % main2_address
        session = main2.links_by_name[("host", "site-a")]
        world.add_phone("101", 1, dead_ms=2000)
        phone = PhoneEnd(world.net, "302", world.secrets["302"], ("198.18.9.9", 40000), main2_address)
        world.phones["302"] = phone
        phone.phone.start(world.net.now)
        phone.flush()
        world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
        world.run(3000)   # the idle keepalive settles (a PING every 2 s with a standby up)

        # 1. the main host stops while the site is idle: on the standby session within 4 s, no handshake
        world.pause_main()
        took = world.run_until(lambda: a.status()["main"]["address"] == "%s:%d" % main2_address, 6000, "switched")
        assert took <= 4000 + 2 * TICK_MS, took
        assert main2.links_by_name[("host", "site-a")] is session           # the session logged in before
        assert a.status()["main"]["logins"] == 1 and a.status()["stats"]["counters"]["standby switches"] == 1
        print("idle: on the standby session %d ms after the main host stopped" % took)
        world.resume_main()     # its session is the standby now: it logs in there again
        world.run_until(lambda: a.status()["main"]["standby"]["state"] == "up", 10000, "the old main host standby")
        assert a.status()["main"]["standby"]["address"] == "%s:%d" % MAIN

        # 2. a call relayed by the second main host, which dies: back to the first within 2 s, which has
        # no copy of the call (no cluster): no media comes, the call ends at the grace period's end
        world.call("101", "302")
        world.run(1000)
        assert world.phones["302"].received and world.phones["101"].received
        del world.net.endpoints[main2_address]    # killed
        world.others.remove(ticker)
        took = world.run_until(lambda: a.status()["main"]["address"] == "%s:%d" % MAIN, 4000, "switched back")
        assert took <= 2000 + 2 * TICK_MS, took
        assert world.phones["101"].connected    # held: its media may come back from the new node
        ended = world.run_until(lambda: world.phones["101"].causes(), GRACE_MS + 1000, "the call ended")
        assert world.phones["101"].causes() == [wire.CAUSE_MAIN_LOST]
        assert GRACE_MS - 100 <= ended <= GRACE_MS + 100, ended
        assert a.status()["stats"]["counters"]["calls not taken over"] == 1
        assert not world.net.errors
    finally:
        main2.directory.close()
        world.close()
