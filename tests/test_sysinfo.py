"""B6 system information fan-out end to end on loopback: 50 phones at one site.

3 of the 50 are real firmware phones (MicroPython unix port, separate processes); the other 47
are common.phone.Phone objects (the same protocol core the firmware runs) driven by a small
CPython UDP loop in this process, one socket each: one idle virtual handset costs about 0.065 s
of CPU per second plus 0.3 s to start, so 50 of them would need more than the 2 cores we have
(docs/sysinfo.md).
"""
import json
import os
import re
import selectors
import socket
import threading
import time

import pytest

from upbx.common import wire
from upbx.common.phone import Phone, Sysinfo
from upbx.host.directory import Directory
from upbx.tools.lab import LoopbackExchange

SIM = ["%d" % n for n in range(110, 157)]      # 47 in-process phones
FIRMWARE = ["101", "102"]                      # running from the start
LATE = "103"                                   # off while the information changes
CHUNK = 250


def now_ms():
    return int(time.monotonic() * 1000)


class SimPhones:
    """Phones of common.phone in one thread; a phone in `deaf` drops each SYSINFO frame the first time
    it comes (its sequence number is new), so it hears the system information only from the
    remote host's retransmissions: decided by the frames, not by a window of wall-clock time."""

    def __init__(self, secrets, host):
        self.host = host
        self.sel = selectors.DefaultSelector()
        self.phones = {}
        self.deaf = {}
        self.dropped = {}
        self.sysinfo = {}     # number -> the data of the last Sysinfo event (the phone keeps only the version)
        for number in secrets:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            phone = Phone(number, secrets[number], os.urandom, keepalive_ms=2000, dead_ms=2000, backoff_max_ms=5000)
            self.phones[number] = (phone, sock)
            self.sel.register(sock, selectors.EVENT_READ, number)
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        now = now_ms()
        for phone, _sock in self.phones.values():
            phone.start(now)
        self.thread.start()

    def loop(self):
        while self.running:
            events = self.sel.select(0.01)
            with self.lock:
                now = now_ms()
                for key, _ in events:
                    number = key.data
                    phone, sock = self.phones[number]
                    try:
                        data = sock.recv(2048)
                    except OSError:
                        continue
                    if number in self.deaf and self.first_sysinfo(data, self.deaf[number]):
                        self.dropped[number] = self.dropped.get(number, 0) + 1
                        continue
                    phone.receive(bytearray(data), now)
                for number, (phone, sock) in self.phones.items():
                    timer = phone.next_timer()
                    if timer is not None and timer <= now:
                        phone.handle_timer(now)
                    for event in phone.take_events():
                        if isinstance(event, Sysinfo):
                            self.sysinfo[number] = event.data
                    for datagram in phone.datagrams_to_send(now):
                        sock.sendto(datagram, self.host)

    @staticmethod
    def first_sysinfo(data, seen):
        """Whether data is a SYSINFO full frame whose sequence number `seen` does not hold yet."""
        if wire.frame_kind(data) != wire.KIND_FULL:
            return False
        _session, seq, _ack, msg_type = wire.parse_full(data)
        if msg_type != wire.SYSINFO or seq in seen:
            return False
        seen.add(seq)
        return True

    def stop(self):
        with self.lock:
            now = now_ms()
            for phone, sock in self.phones.values():
                phone.stop(now)
                for datagram in phone.datagrams_to_send(now):
                    sock.sendto(datagram, self.host)
        self.running = False
        self.thread.join(2)
        for _phone, sock in self.phones.values():
            sock.close()


def kept_sysinfo(lab, tag):
    """The system information the firmware phone kept in its sysinfo_file (path from its log)."""
    with open(lab.path("phone-%s.log" % tag)) as f:
        paths = re.findall(r"system information version \d+ kept in (\S+)", f.read())
    assert paths, "phone %s kept no system information" % tag
    with open(paths[-1]) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange() as lab:
        lab.provision(sites=("a", "b"), remote_sites=("a", "b"), phones={"a": FIRMWARE + [LATE], "b": ["201"]})
        with Directory(lab.path("main.sqlite")) as d:
            for number in SIM:
                lab.secrets[number] = d.add_extension(number, "a", "Sim " + number).hex()
                lab.phone_site[number] = "a"
        lab.start()
        yield lab


def test_one_copy_per_remote_host_fanned_out_to_50_phones(lab):
    host = ("127.0.0.1", lab.remote_ports["a"])
    sims = SimPhones({n: bytes.fromhex(lab.secrets[n]) for n in SIM}, host)
    sims.start()
    firmware = [lab.phone(n, "--exit-after", "60", tag="fw-" + n) for n in FIRMWARE]
    try:
        online = SIM + FIRMWARE
        lab.wait_for(lambda: len(lab.status("site-a")["phones"]) == len(online), "49 phones registered", 20)
        v0 = lab.status("main")["sysinfo_version"]
        acked = lambda version, numbers: all(lab.status("site-a")["sysinfo_acked"].get(n) == version
                                             for n in numbers)
        lab.wait_for(lambda: acked(v0, online), "first version acknowledged", 15)
        main_before = lab.status("main")["sysinfo_sent"]
        remote_before = lab.status("site-a")["stats"]["counters"]

        text = "".join("Announcement line %03d: the canteen is closed on Monday.\n" % i for i in range(55))
        assert len(text) > 3000
        with sims.lock:
            sims.deaf["110"] = set()     # this phone loses the first transmission of every chunk
        changed_at = time.time()
        version = int(lab.admin("sysinfo", "set", "announcement", text).rsplit(" ", 1)[1])
        assert version > v0
        lab.wait_for(lambda: acked(version, online), "new version acknowledged by 49 phones", 20)
        took = time.time() - changed_at
        main_after = lab.status("main")["sysinfo_sent"]
        remote = lab.status("site-a")
        counters = remote["stats"]["counters"]
        datagrams = main_after["site-a"]["datagrams"] - main_before["site-a"]["datagrams"]
        print("version %d (%d-byte announcement, %d datagrams) acknowledged by %d phones %.2f s after the change"
              % (version, len(text), datagrams, len(online), took))
        # one copy per remote host, chunked: more than one datagram, each arriving once
        assert main_after["site-a"]["copies"] - main_before["site-a"]["copies"] == 1
        assert main_after["site-b"]["copies"] - main_before["site-b"]["copies"] == 1
        assert datagrams >= len(text) // CHUNK + 1
        assert counters["msg SYSINFO"] - remote_before["msg SYSINFO"] == datagrams
        # the remote host duplicated it to each phone, and each acknowledged
        assert counters["sysinfo copies to phones"] - remote_before["sysinfo copies to phones"] == len(online)
        assert counters["msg SYSINFO_ACK"] - remote_before["msg SYSINFO_ACK"] >= len(online)
        # the deaf phone lost the first transmission and got it from the retransmissions
        assert sims.dropped.get("110", 0) == len(sims.deaf["110"]) == datagrams, sims.dropped
        for number in SIM:
            phone = sims.phones[number][0]
            assert phone.sysinfo_version == version
            assert json.loads(bytes(sims.sysinfo[number]))["announcement"] == text
        # the firmware phones kept it in flash
        for number in FIRMWARE:
            kept = kept_sysinfo(lab, "fw-" + number)
            assert kept["version"] == version and kept["info"]["announcement"] == text
            assert kept["info"]["directory"]["110"] == "Sim 110"
            # the directory a handset keeps is its own site's; the other sites are named only
            assert kept["info"]["site"] == "a" and sorted(kept["info"]["sites"]) == ["a", "b"]
            assert "201" not in kept["info"]["directory"]

        # a phone that was off gets the current version when it registers
        late = lab.phone(LATE, "--exit-after", "8", tag="fw-" + LATE)
        lab.wait_for(lambda: acked(version, [LATE]), "late phone acknowledged", 12)
        kept = kept_sysinfo(lab, "fw-" + LATE)
        assert kept["version"] == version and kept["info"]["announcement"] == text
        late.wait(15)
        assert lab.summary("fw-" + LATE)["sysinfo_version"] == version

        # an extension added while everything runs reaches the remote host's cache and registers there
        lab.secrets["160"] = lab.admin("ext", "add", "160", "--site", "a").split()[-1]
        lab.phone_site["160"] = "a"
        lab.wait_for(lambda: lab.status("site-a")["sysinfo_version"] > version, "directory fanned out", 5)
        new = lab.phone("160", "--exit-after", "4", tag="fw-160")
        lab.wait_registered("160", timeout=8)
        new.wait(10)
        assert json.load(open(lab.path("upbx-remote-site-a.cache.json")))["extensions"]["160"]["name"] == ""
    finally:
        sims.stop()
        for proc in firmware:
            proc.terminate()
