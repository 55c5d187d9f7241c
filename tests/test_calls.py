"""End to end on loopback: real daemons, real firmware on the MicroPython unix port, real sockets.

B1, B2 (direct and forced relay), B3; every cause a caller can be shown; DTMF;
bad datagrams sent at the daemons while a call is up.
"""
import json
import os
import socket
import subprocess
import time

import pytest

from tools.lab import LoopbackExchange, audio_match, place_call, write_noise_wav


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=3) as lab:
        lab.provision()
        lab.admin("ext", "bar", "202")
        lab.start()
        yield lab


def call_path(lab):
    return json.loads(lab.admin("calls", "--json", "--limit", "1"))[0]["path"]


def test_b1_site_phone_to_main_host_phone_and_back(lab):
    row = place_call(lab, "101", "301", "B1")
    assert row["audio_match"] and row["frames_received"] >= 95
    assert row["media_at_hosts"]["main"] >= 190 and row["media_at_hosts"]["site-a"] >= 190
    assert call_path(lab) == "relay"
    back = place_call(lab, "302", "102", "B1")
    assert back["audio_match"] and back["media_at_hosts"]["main"] >= 190


def test_b2_media_flows_directly_between_remote_hosts(lab):
    row = place_call(lab, "102", "201", "B2")
    assert row["audio_match"]
    assert row["media_at_hosts"]["main"] == 0
    assert row["media_at_hosts"]["site-a"] >= 190 and row["media_at_hosts"]["site-b"] >= 190
    assert call_path(lab) == "direct"


def test_b2_relays_through_main_host_when_direct_media_is_off():
    with LoopbackExchange(direct_media=False) as lab:
        lab.provision(sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
        lab.start()
        row = place_call(lab, "101", "201", "B2")
        assert row["audio_match"]
        assert row["media_at_hosts"]["main"] >= 190
        assert call_path(lab) == "relay"


def test_b3_local_call_media_never_touches_a_host(lab):
    row = place_call(lab, "101", "102", "B3")
    assert row["path"] == "local" and row["audio_match"]
    assert row["media_at_hosts"] == {"main": 0, "site-a": 0, "site-b": 0}
    # the remote host keeps the record and the main host receives it once
    lab.wait_for(lambda: any(r["path"] == "local" and r["origin"] == "site-a"
                             for r in json.loads(lab.admin("calls", "--json"))), "local record uploaded")


def refused(lab, caller, callee, answer=True, callee_phone=False):
    row = place_call(lab, caller, callee, "cause", seconds=1, answer=answer, callee_phone=callee_phone)
    return row["cause"]


def test_unknown_extension_is_shown_to_the_caller(lab):
    assert refused(lab, "101", "999") == "unknown extension"


def test_busy_when_the_called_phone_is_in_a_call(lab):
    wav = lab.path("busy.wav")
    write_noise_wav(wav, 10, 7)
    talker = lab.phone("301", "--answer", "--exit-after", "12", tag="busy-301")
    lab.wait_registered("301")
    caller = lab.phone("302", "--send", wav, "--call", "301", "--duration", "6", "--exit-after", "10",
                       tag="busy-302")
    lab.wait_for(lambda: any(c["state"] == "answered" for c in lab.status("main")["calls"]), "first call up")
    third = lab.phone("101", "--call", "301", "--exit-after-call", "--exit-after", "8", tag="busy-101")
    third.wait(15)
    assert lab.summary("busy-101")["calls"][0]["cause"] == "busy"
    caller.wait(15)
    talker.wait(15)


def test_unreachable_when_the_called_phone_is_not_registered(lab):
    caller = lab.phone("101", "--call", "201", "--exit-after-call", "--exit-after", "8", tag="unreach")
    caller.wait(15)
    assert lab.summary("unreach")["calls"][0]["cause"] == "unreachable"


def test_not_permitted_for_a_barred_extension_local_call(lab):
    assert refused(lab, "202", "201") == "not permitted"


# "network busy" (call admission, B5) is tested in tests/test_admission.py: an uplink budget
# counts incoming calls too, so it cannot share this lab, whose B2 calls go into site b.


def test_no_answer_after_the_ring_timeout(lab):
    assert refused(lab, "101", "301", answer=False, callee_phone=True) == "no answer"


def test_dtmf_reaches_the_far_phone(lab):
    row = place_call(lab, "101", "301", "dtmf", caller_args=("--dtmf", "1234#"))
    assert lab.summary("dtmf-101-301-callee")["dtmf_received"] == "1234#"


def test_bad_datagrams_are_dropped_counted_and_harmless_during_a_call(lab):
    """Garbage, truncated, forged and replayed datagrams at both daemons while a B1 call is up."""
    wav = lab.path("bad.wav")
    write_noise_wav(wav, 10, 11)
    record = lab.path("bad.rx.g711")
    callee = lab.phone("301", "--answer", "--record-g711", record, "--exit-after-call", "--exit-after", "15",
                       tag="bad-callee")
    lab.wait_registered("301")
    caller = lab.phone("101", "--send", wav, "--call", "301", "--call-after", "0.5", "--duration", "4",
                       "--exit-after-call", "--exit-after", "14", tag="bad-caller")
    lab.wait_for(lambda: any(c["state"] == "answered" for c in lab.status("main")["calls"]), "call up")
    before = {d: lab.status(d) for d in ("main", "site-a")}
    targets = [("127.0.0.1", lab.main_port), ("127.0.0.1", lab.remote_ports["a"])]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = __import__("random").Random(5)
    sent = 0
    for target in targets:
        for i in range(300):
            kind = i % 5
            if kind == 0:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
            elif kind == 1:
                data = b"\x80\x00\x00\x00\x00\x00\x00\x01" + bytes(rng.getrandbits(8) for _ in range(20))
            elif kind == 2:
                data = bytes([0x00, rng.randint(1, 255)]) + bytes(rng.getrandbits(8) for _ in range(166))
            elif kind == 3:
                data = bytes([0xC0, 0, rng.randint(1, 255)]) + bytes(rng.getrandbits(8) for _ in range(168))
            else:
                data = b""
            sock.sendto(data, target)
            sent += 1
            if sent % 10 == 0:
                time.sleep(0.002)  # stay under the kernel's socket buffer: every datagram must arrive
    sock.close()
    caller.wait(20)
    callee.wait(20)
    after = {d: lab.status(d) for d in ("main", "site-a")}
    for daemon in ("main", "site-a"):
        drops = {k: v - before[daemon]["stats"]["drops"].get(k, 0) for k, v in after[daemon]["stats"]["drops"].items()}
        assert sum(drops.values()) >= 300, (daemon, drops)
        assert "internal error" not in after[daemon]["stats"]["drops"]
    # no state created: the same remote hosts and phones as before (the test's phones have left)
    assert [h["name"] for h in after["main"]["remote_hosts"]] == [h["name"] for h in before["main"]["remote_hosts"]]
    match, matched = audio_match(wav, record, lab.summary("bad-caller")["calls"][0]["frames_sent"])
    assert match and matched >= 190
    assert lab.summary("bad-caller")["calls"][0]["cause"] == "normal clearing"
