"""Hundreds of phones through the real hosts in one process (tests/inprocess.py, virtual clock):
300 phones register, 112 calls at once (75 relayed between site a and the main host's site c,
37 local at site a), every voice frame arrives once and in order, the site's uplink carries the
75 calls in ceil(75 / 8) trunk datagrams per 20 ms tick, every call ends normally and leaves one
record. tests/test_load.py runs 200 phones on real sockets for 30 s (loss, memory growth).
"""
from upbx.common import wire
from upbx.common.call import RINGING
from upbx.host.directory import Directory
from tests.inprocess import World

SITE_A = ["1%03d" % i for i in range(150)]      # behind remote host a
SITE_C = ["3%03d" % i for i in range(150)]      # at the main host
RELAYED = 75
LOCAL = 37
TRUNK_ENTRIES = (1472 - wire.TRUNK_HEADER - wire.MEDIA_TAG) // (wire.TRUNK_ENTRY_HEADER + wire.VOICE_BYTES)


def test_300_phones_112_calls_every_frame_in_order(tmp_path):
    world = World(tmp_path)
    try:
        world.start_remote()
        # (a change in the main host's first second after it started is never sent to a remote host
        # that logged in before it: the host's first directory check takes it as the baseline)
        world.run(1100)
        world.add_extensions(SITE_A, "a")
        world.add_extensions(SITE_C, "c")
        world.run(1100)            # the main host reads the new directory and gives site a its share
        for i, number in enumerate(SITE_A + SITE_C):
            world.add_phone(number, 300 + i)
        took = world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 5000, "registered")
        assert len(world.a.status()["phones"]) == len(SITE_A) and len(world.main.status()["phones"]) == len(SITE_C)
        print("300 phones registered in %d virtual ms" % took)

        pairs = [(SITE_A[i], SITE_C[i]) for i in range(RELAYED)]
        pairs += [(SITE_A[RELAYED + 2 * j], SITE_A[RELAYED + 2 * j + 1]) for j in range(LOCAL)]
        p = world.phones
        for caller, callee in pairs:
            assert p[caller].phone.dial(callee, world.net.now)
            p[caller].flush()

        def all_up():
            for _caller, callee in pairs:
                if p[callee].phone.state == RINGING:
                    p[callee].phone.answer(world.net.now)
                    p[callee].flush()
            return all(p[a].connected and p[b].connected for a, b in pairs)
        world.run_until(all_up, 3000, "112 calls connected")
        assert len(world.main.status()["calls"]) == RELAYED
        assert sorted(c["path"] for c in world.a.status()["calls"]) == ["local"] * LOCAL + ["relay"] * RELAYED
        for end in p.values():
            end.sent, end.received = [], []

        trunks = lambda: world.a.status()["stats"]["counters"].get("trunks out", 0)
        world.tick()
        before, ticks = trunks(), 50
        world.run(ticks * 20)
        assert trunks() - before == ticks * -(-RELAYED // TRUNK_ENTRIES)      # 10 datagrams a tick
        world.run(100)             # the last frames arrive
        for a, b in pairs:
            assert p[a].sent and p[b].received == p[a].sent and p[a].received == p[b].sent, (a, b)

        for caller, _callee in pairs:
            assert p[caller].phone.hangup(world.net.now)
            p[caller].flush()
        world.run(1000)
        assert all(p[b].causes() == [wire.CAUSE_NORMAL] for _a, b in pairs)
        assert world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        assert world.a.status()["records_pending"] == 0
        with Directory(tmp_path / "main.sqlite") as d:
            records = d.call_records(limit=1000)
        assert sorted((r.caller, r.callee) for r in records) == sorted(pairs)
        assert not world.net.errors
        for host in world.hosts:
            assert "internal error" not in host.status()["stats"]["drops"]
    finally:
        world.close()
