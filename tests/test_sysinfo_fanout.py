"""B6 system information fan-out to 50 phones on the real hosts in one process (tests/inprocess.py,
virtual clock): one chunked copy per remote host, duplicated to each phone, resent to a phone
that heard nothing until it acknowledges, the current version to a phone that registers late, a
new extension in the remote host's cache. tests/test_sysinfo.py does it on real sockets with
firmware phones that keep what they got in their flash.
"""
import json

from upbx.host.directory import Directory
from tests.inprocess import World

PHONES = ["1%03d" % i for i in range(50)]
LATE = "1050"
CHUNK = 250


def test_one_copy_per_remote_host_fanned_out_to_50_phones_and_resent_until_acknowledged(tmp_path):
    world = World(tmp_path)
    try:
        world.start_remote()
        world.run(1100)            # past the main host's first directory check
        world.add_extensions(PHONES + [LATE], "a")
        world.run(1100)
        for i, number in enumerate(PHONES):
            world.add_phone(number, 10 + i)
        acked = lambda version, numbers: all(world.a.status()["sysinfo_acked"].get(n) == version for n in numbers)
        v0 = world.main.status()["sysinfo_version"]
        world.run_until(lambda: acked(v0, PHONES), 3000, "the first version acknowledged by 50 phones")
        main_before = world.main.status()["sysinfo_sent"]["site-a"]
        counters_before = world.a.status()["stats"]["counters"]

        text = "".join("Announcement line %03d: the canteen is closed on Monday.\n" % i for i in range(55))
        assert len(text) > 3000
        deaf = world.phones[PHONES[0]]
        with Directory(tmp_path / "main.sqlite") as d:
            d.set_sysinfo("announcement", text)
        # the main host notices within its one-second check (and the fan-out may be over within that
        # tick): one phone hears nothing from now until 1.5 s after the latest the check can come
        deaf.deaf_until = world.net.now + 1100 + 1500
        world.run_until(lambda: world.main.status()["sysinfo_version"] != v0, 1100, "main took the change")
        version = world.main.status()["sysinfo_version"]
        took = world.run_until(lambda: acked(version, PHONES), 10000, "the new version acknowledged by 50 phones")
        print("version %d acknowledged by 50 phones %d virtual ms after the main host took it" % (version, took))
        main_after = world.main.status()["sysinfo_sent"]["site-a"]
        counters = world.a.status()["stats"]["counters"]
        datagrams = main_after["datagrams"] - main_before["datagrams"]
        # one copy for the remote host, chunked: more than one datagram, each arriving once
        assert main_after["copies"] - main_before["copies"] == 1
        assert datagrams >= len(text) // CHUNK + 1
        assert counters["msg SYSINFO"] - counters_before["msg SYSINFO"] == datagrams
        # duplicated to each phone, and each acknowledged
        assert counters["sysinfo copies to phones"] - counters_before["sysinfo copies to phones"] == len(PHONES)
        assert counters["msg SYSINFO_ACK"] - counters_before["msg SYSINFO_ACK"] >= len(PHONES)
        # the deaf phone lost the first transmission and got it from the retransmissions
        assert deaf.dropped_in >= datagrams, deaf.dropped_in
        for number in PHONES:
            end = world.phones[number]
            assert end.phone.sysinfo_version == version
            assert json.loads(bytes(end.sysinfo()))["announcement"] == text

        # a phone that was off gets the current version when it registers
        late = world.add_phone(LATE, 99)
        world.run_until(lambda: acked(version, [LATE]), 3000, "the late phone acknowledged")
        assert json.loads(bytes(late.sysinfo()))["announcement"] == text
        # an extension added while everything runs reaches the remote host's cache and registers there
        world.add_extensions(["1060"], "a")
        world.run_until(lambda: (world.a.status()["sysinfo_version"] or 0) > version, 1100, "directory fanned out")
        cache = json.loads((tmp_path / "upbx-remote-site-a.cache.json").read_text())
        assert cache["extensions"]["1060"]["name"] == "Phone 1060"
        new = world.add_phone("1060", 100)
        world.run_until(lambda: new.phone.registered, 3000, "1060 registered")
        assert not world.net.errors
        for host in world.hosts:
            assert "internal error" not in host.status()["stats"]["drops"]
    finally:
        world.close()
