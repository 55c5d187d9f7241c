"""B4 survivability on a virtual clock: the bounds of docs/survivability.md, and the main host
killed in the middle of a record upload, deterministically.

tests/test_survivability.py kills real daemons (-9) under real firmware phones and checks the
outcomes; how fast each transition happens is asserted here, on the real host objects in one
process (tests/inprocess.py: virtual network and clock), where the time is the code's and not
the machine's: the same bounds, and the same result on a busy machine.
"""
from upbx.common import wire
from upbx.host.directory import Directory
from upbx.host.records import RecordStore
from tests.inprocess import World

BACKOFF_MAX_MS = 2000
SETTINGS = {"keepalive_s": 2, "login_backoff_initial_s": 0.5, "login_backoff_max_s": BACKOFF_MAX_MS / 1000,
            "main_grace_s": 0}   # the calls end as the silence is noticed (the grace period: test_main_grace.py)
CALL_END_BOUND_MS = 3500      # 1 s in-call keepalive + 2 s without an answer + the RELEASE
REGISTER_AGAIN_BOUND_MS = 10000
SYNTHETIC_RECORDS = 300         # the kill lands after the 100th: deterministic, no need for a long upload
FIRMWARE_DEAD_MS = 2000       # the firmware's default (firmware/app.py)


def main_state(world):
    return world.a.status()["main"]


def in_order(end_from, end_to):
    """Every frame end_from sent arrived at end_to once, in order, with its content."""
    return end_to.received == end_from.sent


def test_main_loss_and_return_within_the_bounds_and_an_interrupted_upload_loses_nothing(tmp_path):
    world = World(tmp_path, remote_settings=SETTINGS, extensions=(("103", "a"), ("104", "a")))
    try:
        world.start_remote()
        for i, number in enumerate(("101", "102", "103", "104", "301")):
            world.add_phone(number, i + 1, dead_ms=FIRMWARE_DEAD_MS)
        world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
        p = world.phones

        # 1. the main host dies during a local call and an inter-site call
        world.call("101", "102")
        world.call("103", "301")
        assert {c["path"] for c in world.a.status()["calls"]} == {"local", "relay"}
        world.run(1000)
        world.stop_main()
        took = world.run_until(lambda: p["103"].causes(), CALL_END_BOUND_MS, "the inter-site call ends at 103")
        assert p["103"].causes() == [wire.CAUSE_UNREACHABLE], p["103"].log
        assert main_state(world)["state"] != "up"
        assert [c["path"] for c in world.a.status()["calls"]] == ["local"]
        print("inter-site call ended at the site's phone %d ms after the main host died" % took)
        # the local call went on: every frame both ways, in order, no gap
        world.run(2000)
        assert p["101"].connected and p["102"].connected
        assert in_order(p["101"], p["102"]) and in_order(p["102"], p["101"])
        assert len(p["101"].sent) >= (1000 + took + 2000) // 20 - 1
        world.hangup("101")
        assert p["101"].causes() == [wire.CAUSE_NORMAL] and p["102"].causes() == [wire.CAUSE_NORMAL]

        # 2. main host still away: a new local call from the cached directory, kept on disk
        world.call("104", "103")
        world.run(500)
        assert in_order(p["104"], p["103"]) and in_order(p["103"], p["104"]) and p["104"].sent
        world.hangup("104")
        assert world.a.status()["records_pending"] == 2

        # 3. remote host a killed and started again: its phones register again within the bound
        world.restart_remote()
        took = world.run_until(lambda: {x["extension"] for x in world.a.status()["phones"]} >= {"101", "102", "103",
                                                                                                "104"},
                               REGISTER_AGAIN_BOUND_MS, "the site's phones registered again")
        print("phones registered again %d ms after the remote host restarted" % took)
        assert world.a.status()["records_pending"] == 2

        # records of a long outage wait for the main host
        store = RecordStore(tmp_path / "upbx-remote-site-a.sqlite")
        t0 = 1_700_000_000_000 - SYNTHETIC_RECORDS * 60000
        for i in range(SYNTHETIC_RECORDS):
            t = t0 + 60000 * i
            store.add({"uid": "%016x" % (0x5e00000000000000 + i), "origin": "site-a", "caller": "101",
                       "callee": "102", "path": "local", "started_ms": t, "answered_ms": t + 500,
                       "ended_ms": t + 900, "cause": "normal clearing", "setup_ms": 120})
        expected = {r["uid"] for r in store.all()}
        store.close()
        assert len(expected) == 2 + SYNTHETIC_RECORDS

        # 4. the main host back: the remote host logs in within the backoff cap (plus the handshake)
        logins = main_state(world)["logins"]
        world.start_main()

        def stored():
            return world.main.status()["stats"]["counters"].get("records stored", 0)

        def logged_in():
            return main_state(world)["state"] == "up" and main_state(world)["logins"] > logins

        # delivered one datagram at a time: the main host dies again right after storing its
        # 100th record, with the upload under way
        back_at, login_at = world.net.now, []

        def hundred_stored():
            if not login_at and logged_in():
                login_at.append(world.net.now)
            return stored() >= 100

        while not world.tick(until=hundred_stored):
            assert world.net.now - back_at < 10000, "no upload 10 s after the main host came back"
        world.stop_main()
        assert login_at and login_at[0] - back_at <= BACKOFF_MAX_MS + 100, (login_at, back_at)
        print("remote host logged in %d ms after the main host came back" % (login_at[0] - back_at))
        with Directory(tmp_path / "main.sqlite") as d:
            first_round = {r.uid for r in d.call_records(limit=10 ** 6) if r.origin == "site-a"}
        assert len(first_round) == 100
        assert world.a.status()["records_pending"] > 0

        logins = main_state(world)["logins"]
        world.start_main()
        # it had not noticed the main host was gone: its session ends first (unanswered retransmissions)
        took = world.run_until(logged_in, 10000, "logged in after the second return")
        print("second return: logged in again after %d ms" % took)
        world.run_until(lambda: world.a.status()["records_pending"] == 0, 20000, "records uploaded")
        with Directory(tmp_path / "main.sqlite") as d:
            uids = [r.uid for r in d.call_records(limit=10 ** 6) if r.origin == "site-a"]
        assert len(uids) == len(set(uids)), "duplicates"
        assert set(uids) == expected, "lost: %s" % sorted(expected - set(uids))[:5]
        counters = world.main.status()["stats"]["counters"]
        # what the first main host had stored and not yet acknowledged comes again: absorbed
        assert counters.get("records stored", 0) == len(expected) - len(first_round)
        assert not world.net.errors
        for host in world.hosts:
            assert "internal error" not in host.status()["stats"]["drops"]
    finally:
        world.close()
