"""A SIP phone on every path, on loopback with real daemons: Debian's baresip registered as
extension 105 at site a's remote host, handsets (`upbx phone`, the firmware's protocol core) 201
at site b and 101 at site a.

- B2: 105 calls 201 and 201 calls 105: the two remote hosts send the call's media straight to each
  other (the main host's record says "direct", its media counters do not move); baresip's RTP
  ends at site a's remote host, which seals it into upbx frames for site b.
- B3: 105 calls 101 and 101 calls 105: switched at site a's remote host (its record, path
  "local"); the main host is not in the call.
- A port of site a's RTP range held by another program: each call takes the next port, both ways.

Each side plays its own tone (baresip 1000 Hz, the handset 600 Hz) and each side's recording
holds the other's (Goertzel), as tests/test_sip_baresip_calls.py listens."""
import socket
import time

import pytest

from tests.sipkit import BS_HZ, HS_HZ, heard_both_ways, main_media, records, sip_lab, start_baresip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sippaths")
    with sip_lab(folder, sites=("a", "b"), remote_sites=("a", "b"), phones={"a": ["101"], "b": ["201"]},
                 sip={"105": "a"}) as lab:
        with start_baresip(lab, folder, "105", tone_hz=BS_HZ, seconds=120) as lab.bs:
            yield lab


def _last_record(lab, caller, callee):
    return next(r for r in records(lab) if r["caller"] == caller and r["callee"] == callee)


def _rtp_ports(lab):
    """The local RTP ports of site a's SIP calls now."""
    return {c["rtp_port"] for c in lab.status("site-a")["sip"]["calls"]}


def _baresip_calls(lab, number, tag):
    bs = lab.bs
    record = lab.path(tag + ".rx.g711")
    handset = lab.phone(number, "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711", record,
                        "--exit-after", "40", "--exit-after-call", tag=tag)
    lab.wait_registered(number)
    seen = len(bs.events)
    assert bs.dial(lab.sip_uri(number))["ok"]
    bs.wait_event("CALL_ESTABLISHED", timeout=20, since=seen)
    ports = _rtp_ports(lab)
    time.sleep(1)
    media = main_media(lab)
    time.sleep(3)
    media = main_media(lab) - media
    assert bs.hangup()["ok"]
    bs.wait_event("CALL_CLOSED", timeout=10, since=seen)
    handset.wait(30)
    return record, media, ports


def _handset_calls(lab, number, tag):
    bs = lab.bs
    record = lab.path(tag + ".rx.g711")
    seen = len(bs.events)
    caller = lab.phone(number, "--call", "105", "--call-after", "1", "--duration", "5", "--send", "tone:%d" % HS_HZ,
                       "--record-g711", record, "--exit-after-call", "--exit-after", "40", tag=tag)
    incoming = bs.wait_event("CALL_INCOMING", timeout=20, since=seen)
    assert "%s@" % number in incoming["peeruri"]
    assert bs.accept()["ok"]
    bs.wait_event("CALL_ESTABLISHED", timeout=10, since=seen)
    ports = _rtp_ports(lab)
    time.sleep(1)
    media = main_media(lab)
    time.sleep(2)
    media = main_media(lab) - media
    bs.wait_event("CALL_CLOSED", timeout=20, since=seen)
    caller.wait(30)
    return record, media, ports


def _both_ways(lab, record):
    heard_both_ways(lab.bs, record)


def test_b2_baresip_at_site_a_and_a_handset_at_site_b_direct(lab):
    record, media, _ports = _baresip_calls(lab, "201", "b2-in")
    _both_ways(lab, record)
    assert media == 0, media
    assert _last_record(lab, "105", "201")["path"] == "direct"
    record, media, _ports = _handset_calls(lab, "201", "b2-out")
    _both_ways(lab, record)
    assert media == 0, media
    assert _last_record(lab, "201", "105")["path"] == "direct"


def test_b3_baresip_and_a_handset_of_the_same_site_local(lab):
    record, media, _ports = _baresip_calls(lab, "101", "b3-in")
    _both_ways(lab, record)
    assert media == 0, media
    lab.wait_for(lambda: any(r["caller"] == "105" and r["callee"] == "101"
                             for r in records(lab)),
                 "site a's record uploaded", timeout=10)
    row = _last_record(lab, "105", "101")
    assert (row["origin"], row["path"]) == ("site-a", "local"), row
    record, media, _ports = _handset_calls(lab, "101", "b3-out")
    _both_ways(lab, record)
    assert media == 0, media
    lab.wait_for(lambda: any(r["caller"] == "101" and r["callee"] == "105"
                             for r in records(lab)),
                 "site a's record uploaded", timeout=10)
    row = _last_record(lab, "101", "105")
    assert (row["origin"], row["path"]) == ("site-a", "local"), row


def test_a_port_of_the_rtp_range_another_program_holds_is_passed_over(lab):
    """Another program holds site a's first RTP port. The host opens a call's RTP socket before its SDP
    names the port, so it passes that port over: baresip's call to 101 and 101's call to baresip take
    the next one, each side hears the other. (Before, the SDP named the held port, the host could not
    open it, and neither side heard anything for the whole call: session 9's CI, docs/tests.md.)"""
    base = lab.remote_settings["sip_rtp_base"]
    passed_over = lab.status("site-a")["stats"]["counters"].get("rtp port unavailable", 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", base))
        record, _media, ports = _baresip_calls(lab, "101", "held-in")
        _both_ways(lab, record)
        assert ports == {base + 2}, (base, ports)
        record, _media, ports = _handset_calls(lab, "101", "held-out")
        _both_ways(lab, record)
        assert ports == {base + 2}, (base, ports)
    assert lab.status("site-a")["stats"]["counters"]["rtp port unavailable"] == passed_over + 2
