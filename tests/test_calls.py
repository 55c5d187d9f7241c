"""End to end on loopback: real daemons, real firmware on the MicroPython unix port, real sockets.

B1, B2 (direct and forced relay), B3; every cause a caller can be shown; DTMF;
garbage, forged and replayed datagrams sent at the daemons while a call is up.
"""
import json
import random
import socket

import pytest

from upbx.common import wire
from tests.intruder import Tap
from upbx.tools.lab import LoopbackExchange, audio_match, place_call, write_noise_wav


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


def test_each_refusal_cause_reaches_the_calling_handset(lab):
    """Four refused calls at once, each from a firmware phone: the cause it shows. (Busy, and every
    cause's decision frame by frame on a virtual clock: tests/test_routing.py; the tones each cause
    plays: tests/test_handset.py, tests/test_admission.py.)"""
    ringing = lab.phone("302", "--exit-after-call", "--exit-after", "15", tag="cause-302")   # never answers
    lab.wait_registered("302")
    callers = {tag: lab.phone(caller, "--call", callee, "--exit-after-call", "--exit-after", "15", tag=tag)
               for tag, caller, callee in (("cause-unknown", "101", "999"),
                                           ("cause-unreachable", "102", "201"),   # 201 is not running
                                           ("cause-barred", "202", "201"),        # 202 is barred: local call
                                           ("cause-no-answer", "301", "302"))}   # ring_timeout_s = 3
    for proc in list(callers.values()) + [ringing]:
        proc.wait(30)
    shown = {tag: [c["cause"] for c in lab.summary(tag)["calls"]] for tag in callers}
    assert shown == {"cause-unknown": ["unknown extension"], "cause-unreachable": ["unreachable"],
                     "cause-barred": ["not permitted"], "cause-no-answer": ["no answer"]}, shown
    assert [c["cause"] for c in lab.summary("cause-302")["calls"]] == ["no answer"]


# "network busy" (call admission, B5) is tested in tests/test_admission.py: an uplink budget
# counts incoming calls too, so it cannot share this lab, whose B2 calls go into site b.


def test_dtmf_reaches_the_far_phone(lab):
    row = place_call(lab, "101", "301", "dtmf", caller_args=("--dtmf", "1234#"))
    assert lab.summary("dtmf-101-301-callee")["dtmf_received"] == "1234#"


def _junk(rng, kind):
    """A datagram no receiver may accept: random bytes, or a header of each kind with nonsense after it."""
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    if kind == 1:      # a full frame of session 1
        return b"\x80\x00\x00\x00\x00\x00\x00\x01" + bytes(rng.getrandbits(8) for _ in range(20))
    if kind == 2:      # a mini frame of some call number
        return bytes([0x00, rng.randint(1, 255)]) + bytes(rng.getrandbits(8) for _ in range(166))
    if kind == 3:      # a trunk frame
        return bytes([0xC0, 0, rng.randint(1, 255)]) + bytes(rng.getrandbits(8) for _ in range(168))
    return b""


def _forged(rng, frame):
    """A real frame of the call with one byte after its header changed (payload, IEs or tag): it still
    names the call or session, and its tag no longer fits."""
    data = bytearray(frame)
    header = wire.MINI_HEADER if wire.frame_kind(frame) == wire.KIND_MINI else wire.FULL_HEADER
    data[rng.randrange(header, len(data))] ^= rng.randint(1, 255)
    return bytes(data)


def _counted(status):
    """What a daemon counts for datagrams it does not act on: every drop, and authentic duplicates."""
    stats = status["stats"]
    return stats["dropped"] + stats["counters"].get("signalling duplicates", 0)


def test_garbage_forged_and_replayed_datagrams_are_dropped_counted_and_harmless_during_a_call(lab):
    """A B1 call 101 -> 301 passes a tap on each phone's way to its host (site-a, main); while it is
    up, each host gets garbage, real frames of the call with one byte changed (forged), and the real
    frames captured so far sent again (replayed) from the phone's own address and from another one.
    Every one is dropped and counted, the call keeps its audio in order, and no state is created."""
    wav = lab.path("bad.wav")
    write_noise_wav(wav, 10, 11)
    record = lab.path("bad.rx.g711")
    taps = {"site-a": Tap(("127.0.0.1", lab.remote_ports["a"])), "main": Tap(("127.0.0.1", lab.main_port))}
    host_of = lab.host_of
    lab.host_of = lambda n: "127.0.0.1:%d" % taps["site-a" if n == "101" else "main"].address[1]
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    try:
        callee = lab.phone("301", "--answer", "--record-g711", record, "--exit-after-call", "--exit-after", "30",
                           tag="bad-callee")
        lab.wait_registered("301")
        caller = lab.phone("101", "--send", wav, "--call", "301", "--call-after", "0.5", "--duration", "5",
                           "--exit-after-call", "--exit-after", "30", tag="bad-caller")
        lab.host_of = host_of
        minis = lambda tap: [d for d in tap.captured if wire.frame_kind(d) == wire.KIND_MINI]
        lab.wait_for(lambda: all(len(minis(t)) >= 100 for t in taps.values()), "two seconds of the call captured", 20)
        before = {d: lab.status(d) for d in taps}
        rng = random.Random(5)
        expected = {}
        sent = {}
        for daemon, tap in taps.items():
            target = tap.target
            # the call's frames so far; the newest few may still be on their way through the tap
            real = list(tap.captured)[:-5]
            session_frames = [d for d in real if wire.frame_kind(d) == wire.KIND_MINI or (
                wire.frame_kind(d) == wire.KIND_FULL and wire.parse_full(d)[3] not in wire.HANDSHAKE_TYPES)]
            stream = [(attacker, _junk(rng, i % 5)) for i in range(150)]
            stream += [(attacker, _forged(rng, rng.choice(session_frames))) for _ in range(100)]
            # replays: every frame from the phone's own address (the tap's, as the host knows it),
            # and from elsewhere; handshake frames too (counted by neither rule below, asserted harmless)
            stream += [(tap.up, d) for d in real] + [(attacker, d) for d in real]
            rng.shuffle(stream)
            must_count = 250 + 2 * len(session_frames)
            sent[daemon] = (len(stream), len(real), len([d for d in real if wire.frame_kind(d) == wire.KIND_MINI]))
            expected[daemon] = _counted(before[daemon]) + must_count
            handshakes = set(real) - set(session_frames)
            floor = _counted(before[daemon])
            for i in range(0, len(stream), 50):
                for sock, data in stream[i:i + 50]:
                    sock.sendto(data, target)
                # paced by what the host has counted: every datagram must arrive (kernel buffers are small)
                floor += sum(1 for _s, d in stream[i:i + 50] if d not in handshakes)
                lab.wait_for(lambda: _counted(lab.status(daemon)) >= floor, "%s counted the batch" % daemon)
        during = {d: lab.status(d) for d in taps}
        caller.wait(30)
        callee.wait(30)
    finally:
        lab.host_of = host_of
        attacker.close()
        for tap in taps.values():
            tap.close()
    after = {d: lab.status(d) for d in taps}
    for daemon in taps:
        drops = {k: v - before[daemon]["stats"]["drops"].get(k, 0) for k, v in after[daemon]["stats"]["drops"].items()}
        print("%s: %d datagrams (%d real frames replayed twice, %d of them media); drops %s" % (
            daemon, sent[daemon][0], sent[daemon][1], sent[daemon][2], drops))
        assert _counted(after[daemon]) >= expected[daemon], (daemon, drops)
        # each replayed media frame was refused by the replay window, twice
        assert drops.get("media rejected", 0) >= 2 * sent[daemon][2], (daemon, drops)
        assert "internal error" not in after[daemon]["stats"]["drops"]
    # no state created: the same phones at the same addresses, the same remote hosts, one call
    for daemon in taps:
        assert during[daemon]["phones"] == before[daemon]["phones"], daemon
        assert len(during[daemon]["calls"]) == 1 and during[daemon]["calls"][0]["caller"] == "101", daemon
    assert during["main"]["remote_hosts"] == before["main"]["remote_hosts"]
    # the call kept its audio: what 101 sent arrived at 301, in order, nothing else, nothing twice
    call = lab.summary("bad-caller")["calls"][0]
    match, matched = audio_match(wav, record, call["frames_sent"])
    assert match and matched >= 240, (matched, call["frames_sent"])
    assert call["cause"] == "normal clearing"
    assert lab.summary("bad-callee")["calls"][0]["cause"] == "normal clearing"
