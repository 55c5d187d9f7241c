"""Routing decisions on the real hosts in one process (tests/inprocess.py: MainHost, RemoteHost,
their SQLite directory and configuration files, handsets' protocol cores, a virtual clock).

Every cause a caller can be shown, B1/B3 paths, and B5 call admission: what the hosts decide
and send, frame by frame. tests/test_calls.py and tests/test_admission.py place the same kinds of
calls between real firmware phones on real sockets and check what the handset shows and plays.
"""
from upbx.common import wire
from upbx.common.phone import Incoming
from upbx.common.media import call_kbps
from upbx.host.directory import Directory
from tests.inprocess import TICK_MS, World


def _world(tmp_path, phones, **kwargs):
    world = World(tmp_path, extensions=(("103", "a"), ("104", "a")), **kwargs)
    world.start_remote()
    for i, number in enumerate(phones):
        world.add_phone(number, i + 1)
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
    return world


def _refused(world, caller, callee, limit_ms=1000):
    """caller dials callee; returns (cause, virtual ms until the caller's call ended)."""
    end = world.phones[caller]
    assert end.phone.dial(callee, world.net.now)
    end.flush()
    before = len(end.causes())
    took = world.run_until(lambda: len(end.causes()) > before, limit_ms, "%s -> %s ended" % (caller, callee))
    return end.causes()[-1], took


def _rang(end):
    end.take()
    return [e for e in end.log if isinstance(e, Incoming)]


def _flowing(a, b):
    """Every frame each sent arrived at the other, once, in order, with its content."""
    return a.sent and b.sent and b.received == a.sent and a.received == b.sent


def test_every_cause_a_caller_can_be_shown(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "104", "301", "302", "303"), ring_timeout_s=3, barred=("104",))
    try:
        p = world.phones
        world.main.directory.set_features("301", dict(world.main.directory.features("301"), waiting=False))
        world.call("301", "302")     # busy: 301 has call waiting off (docs/features.md)
        assert _refused(world, "101", "999")[0] == wire.CAUSE_UNKNOWN_EXTENSION
        assert _refused(world, "101", "401")[0] == wire.CAUSE_UNREACHABLE     # site x: nobody registered
        assert _refused(world, "102", "301")[0] == wire.CAUSE_BUSY
        assert _refused(world, "104", "103")[0] == wire.CAUSE_NOT_PERMITTED   # barred: no local call
        assert not _rang(p["103"]) and len(_rang(p["302"])) == 1               # refused calls rang nobody
        cause, took = _refused(world, "101", "303", limit_ms=5000)
        assert cause == wire.CAUSE_NO_ANSWER and 3000 <= took <= 3000 + 2 * 20, took  # ring_timeout_s = 3
        assert len(_rang(p["303"])) == 1 and p["303"].causes() == [wire.CAUSE_NO_ANSWER] and p["303"].idle
        # the call that made 301 busy went on through all of it
        world.run(200)
        assert p["301"].connected and p["302"].connected and _flowing(p["301"], p["302"])
        world.hangup("301")
        assert p["302"].causes() == [wire.CAUSE_NORMAL]
        assert world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()


def test_b1_relays_through_both_hosts_and_b3_media_never_touches_a_host(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        p = world.phones
        media = lambda host: host.status()["stats"]["counters"].get("media in", 0)
        world.call("101", "301")
        assert [c["path"] for c in world.main.status()["calls"]] == ["relay"]
        before = media(world.main), media(world.a)
        world.run(1000)
        assert _flowing(p["101"], p["301"])
        # each voice frame crossed both hosts: 101's at site a (mini) then main (trunk entry), 301's at main
        assert media(world.main) - before[0] >= len(p["101"].sent) + len(p["301"].sent) - 2
        assert media(world.a) - before[1] >= len(p["101"].sent) - 1
        world.hangup("301")
        world.call("102", "101")
        assert [c["path"] for c in world.a.status()["calls"]] == ["local"] and world.main.status()["calls"] == []
        before = media(world.main), media(world.a)
        world.run(1000)
        assert _flowing(p["102"], p["101"])
        assert (media(world.main), media(world.a)) == before            # phone to phone on the LAN
        world.hangup("102")
        world.run(100)
        assert world.a.status()["records_pending"] == 0                 # its record reached the main host
        with Directory(tmp_path / "main.sqlite") as d:
            local = [r for r in d.call_records() if r.path == "local"]
        assert [(r.caller, r.callee, r.origin) for r in local] == [("102", "101", "site-a")]
        assert not world.net.errors
    finally:
        world.close()


def test_b5_call_n_plus_one_is_refused_with_network_busy_while_local_calls_work(tmp_path):
    # the budget admits exactly two trunked calls (145.2 kbps for two, 210.8 for three)
    assert call_kbps(2) <= 150 < call_kbps(3)
    world = _world(tmp_path, ("101", "102", "103", "104", "301", "302", "303"), remote_settings={"uplink_kbps": 150})
    try:
        p = world.phones
        world.call("101", "301")
        world.call("102", "302")
        uplink = world.a.status()["uplink"]
        assert uplink["calls"] == 2 and uplink["committed_kbps"] == round(call_kbps(2), 1)
        assert _refused(world, "103", "303")[0] == wire.CAUSE_NETWORK_BUSY    # outgoing call N+1
        assert not _rang(p["303"])
        assert _refused(world, "303", "104")[0] == wire.CAUSE_NETWORK_BUSY    # incoming: uses the uplink too
        assert not _rang(p["104"])
        world.call("104", "103")                                              # local: never counts
        assert world.a.status()["uplink"]["calls"] == 2
        world.run(500)
        for a, b in (("101", "301"), ("102", "302"), ("104", "103")):
            assert _flowing(p[a], p[b]), (a, b)
        world.hangup("101")
        world.call("303", "101")                                              # room again
        assert world.a.status()["uplink"]["calls"] == 2
        assert not world.net.errors
    finally:
        world.close()


def test_b5_a_budget_below_one_call_refuses_every_uplink_call(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"), remote_settings={"uplink_kbps": 50})
    try:
        assert _refused(world, "101", "301")[0] == wire.CAUSE_NETWORK_BUSY
        assert _refused(world, "301", "102")[0] == wire.CAUSE_NETWORK_BUSY
        world.call("101", "102")
        world.run(200)
        assert _flowing(world.phones["101"], world.phones["102"])
    finally:
        world.close()


def test_a_caller_hanging_up_before_the_host_answered_ends_the_call_everywhere(tmp_path):
    """The caller's RELEASE goes out before it heard anything back, so it names only its own call
    number: the host finds the leg by it. A local call still waiting for the main host's grant
    never rings the callee; a call already offered on (through the main host) stops ringing; no
    leg is left anywhere."""
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        p = world.phones
        for caller, callee in (("101", "102"), ("101", "301"), ("301", "102")):
            end = p[caller]
            assert end.phone.dial(callee, world.net.now)
            assert end.phone.hangup(world.net.now)     # at once: nothing came back from the host yet
            end.flush()
            world.run(3000)
            if caller[0] == callee[0]:   # local: the grant had not come, so it never rang
                assert not _rang(p[callee]), "%s rang for %s, who had hung up" % (callee, caller)
            assert p[callee].idle, "%s still rings for %s, who had hung up" % (callee, caller)
            assert not world.main.switch.legs and not world.a.switch.legs and not world.a.pending_local
            assert world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        world.call("101", "102")                       # and the phones call as before
        world.run(200)
        assert _flowing(p["101"], p["102"])
    finally:
        world.close()


def test_the_frame_a_caller_sends_in_the_20_ms_it_hangs_up_in_reaches_the_callee(tmp_path):
    """A remote host sends its phones' frames on its trunk at its 20 ms tick and signalling at once: a
    hang-up in the same 20 ms as the caller's last frame sent the RELEASE ahead of it, the main host
    ended the call and dropped the frame (the last 20 ms of speech; seen in test_nat under load)."""
    world = _world(tmp_path, ("101", "301"))
    world.call("101", "301")                # B1: site a's trunk to the main host
    world.run(400)
    caller, callee = world.phones["101"], world.phones["301"]
    world.net.now += TICK_MS
    caller.tick()                           # its last frame, queued at site a for the trunk's tick
    world.settle()
    world.hangup("101")                     # in the same 20 ms
    world.run(200)
    assert callee.received == caller.sent, (len(callee.received), len(caller.sent))
    assert callee.causes() == [wire.CAUSE_NORMAL]
