"""The hosts as sans-IO cores (host/core.py): datagrams and time in, datagrams out, nothing else.

Driven in memory with a virtual clock (tests/inprocess.py): what a core sends, with which DSCP,
when its timer is due, and how long a silent peer keeps its place.
"""
from upbx.common import wire
from upbx.common.login import UP, Login
from upbx.host.core import DSCP_CS3, DSCP_EF, TICK_MS
from tests.inprocess import SITE_A, World


def test_a_core_answers_a_login_with_datagrams_to_send_and_does_nothing_on_its_own(tmp_path):
    world = World(tmp_path)
    try:
        main = world.main
        assert main.get_timer() == world.net.now       # started: its first tick is due
        login = Login(wire.IE_HOST_NAME, "site-a", world.secrets["site-a"], 0x1234, lambda n: bytes(n))
        login.start(world.net.now)
        (hello,) = login.datagrams_to_send(world.net.now)
        main.receive_datagram(bytearray(hello), SITE_A, world.net.now)
        (challenge,) = main.datagrams_to_send()         # the CHALLENGE, to where the HELLO came from
        assert challenge[1:] == (SITE_A, DSCP_CS3) and wire.parse_full(challenge[0])[3] == wire.CHALLENGE
        assert main.datagrams_to_send() == []          # sent once
        login.receive(bytearray(challenge[0]), world.net.now)
        (response,) = login.datagrams_to_send(world.net.now)
        main.receive_datagram(bytearray(response), SITE_A, world.net.now)
        out = main.datagrams_to_send()                  # WELCOME, the site's directory and sysinfo
        assert out and all(d[1:] == (SITE_A, DSCP_CS3) for d in out)
        for data, _addr, _dscp in out:
            login.receive(bytearray(data), world.net.now)
        assert login.state == UP
        # malformed input: dropped, counted, nothing sent
        main.receive_datagram(bytearray(b"\x80\x01"), SITE_A, world.net.now)
        assert main.datagrams_to_send() == [] and main.stats.drops["malformed: full frame"] == 1
        # the tick: due every 20 ms, never before
        due = main.get_timer()
        main.handle_timer(due - 1)
        assert main.get_timer() == due
        main.handle_timer(due)
        assert main.get_timer() == due + TICK_MS
    finally:
        world.close()


def test_media_goes_out_marked_ef_and_signalling_cs3(tmp_path):
    world = World(tmp_path)
    try:
        world.start_remote()
        caller, callee = world.add_phone("301", 1), world.add_phone("302", 2)
        world.run(500)
        caller.phone.dial("302", world.net.now)
        world.run(200)
        callee.phone.answer(world.net.now)
        world.run(200)
        marks = {}
        real = world.main.datagrams_to_send

        def spy():
            out = real()
            for data, _addr, dscp in out:
                marks.setdefault(wire.frame_kind(data), set()).add(dscp)
            return out
        world.main.datagrams_to_send = spy
        world.run(200)
        assert marks[wire.KIND_MINI] == {DSCP_EF}
        assert marks.get(wire.KIND_FULL, {DSCP_CS3}) == {DSCP_CS3}
    finally:
        world.close()


def test_a_silent_remote_host_is_logged_out_after_keepalive_timeout_s_and_phones_after_their_ttl(tmp_path):
    world = World(tmp_path, main_settings="keepalive_timeout_s = 20\nregistration_ttl_s = 60\n")
    try:
        host = world.add_login(wire.IE_HOST_NAME, "site-x", ("198.18.9.1", 4570))
        phone = world.add_login(wire.IE_EXTENSION, "301", ("198.18.9.2", 40000))
        world.run(500)
        assert host.up and phone.up
        world.others.clear()          # both fall silent: no keepalives, no acknowledgements
        world.run(19000)
        status = world.main.status()
        assert [h["name"] for h in status["remote_hosts"]] == ["site-x"]
        world.run(2500)               # past keepalive_timeout_s: the host is gone, the phone is not
        status = world.main.status()
        assert status["remote_hosts"] == [] and [p["extension"] for p in status["phones"]] == ["301"]
        world.run(40000)              # past registration_ttl_s: the phone too
        assert world.main.status()["phones"] == []
    finally:
        world.close()
