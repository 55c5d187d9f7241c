"""A SIP phone on every path, on loopback with real daemons: Debian's baresip registered as
extension 105 at site a's remote host, handsets (`upbx phone`, the firmware's protocol core) 201
at site b and 101 at site a.

- B2: 105 calls 201 and 201 calls 105: the two remote hosts send the call's media straight to each
  other (the main host's record says "direct", its media counters do not move); baresip's RTP
  ends at site a's remote host, which seals it into upbx frames for site b.
- B3: 105 calls 101 and 101 calls 105: switched at site a's remote host (its record, path
  "local"); the main host is not in the call.

Each side plays its own tone (baresip 1000 Hz, the handset 600 Hz) and each side's recording
holds the other's (Goertzel), as tests/test_sip_baresip_calls.py listens."""
import json
import time

import pytest

from tests.support import require_tool
from tests.test_sip_baresip_calls import base, handset_heard, tone_windows
from upbx.tools.baresip import Baresip, write_tone
from upbx.tools.lab import LoopbackExchange, free_port

BS_HZ, HS_HZ = 1000, 600


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_tool("baresip", "apt-get install baresip-core")
    folder = tmp_path_factory.mktemp("sippaths")
    port = free_port()
    lab = LoopbackExchange(str(folder), remote_settings={"sip_listen": "127.0.0.1:%d" % port, "sip_rtp_base": base()})
    lab.sip_port = port
    try:
        lab.provision(sites=("a", "b"), remote_sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
        lab.password = lab.admin("ext", "add", "105", "--site", "a", "--name", "Desk 105", "--sip")
        lab.start()
        wav = write_tone(folder / "bs-tone.wav", BS_HZ, 120)
        rtp = base()
        lab.bs = Baresip(folder / "bs105", "105", "127.0.0.1:%d" % port, lab.password, sip_port=free_port(),
                         ctrl_port=free_port(), rtp_ports=(rtp, rtp + 40), source=str(wav))
        lab.bs.start()
        lab.wait_for(lambda: lab.status("site-a")["sip"]["registered"].get("105") == 1, "105 registered", timeout=20)
        yield lab
        lab.bs.stop()
    finally:
        lab.close()


def _main_media(lab):
    counters = lab.status("main")["stats"]["counters"]
    return counters.get("media in", 0) + counters.get("media out", 0)


def _last_record(lab, caller, callee):
    records = json.loads(lab.admin("calls", "--json", "--limit", "20"))
    return next(r for r in records if r["caller"] == caller and r["callee"] == callee)


def _baresip_calls(lab, number, tag):
    bs = lab.bs
    record = lab.path(tag + ".rx.g711")
    handset = lab.phone(number, "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711", record,
                        "--exit-after", "40", "--exit-after-call", tag=tag)
    lab.wait_registered(number)
    seen = len(bs.events)
    assert bs.dial("sip:%s@127.0.0.1:%d" % (number, lab.sip_port))["ok"]
    bs.wait_event("CALL_ESTABLISHED", timeout=20, since=seen)
    time.sleep(1)
    media = _main_media(lab)
    time.sleep(3)
    media = _main_media(lab) - media
    assert bs.hangup()["ok"]
    bs.wait_event("CALL_CLOSED", timeout=10, since=seen)
    handset.wait(30)
    return record, media


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
    time.sleep(1)
    media = _main_media(lab)
    time.sleep(2)
    media = _main_media(lab) - media
    bs.wait_event("CALL_CLOSED", timeout=20, since=seen)
    caller.wait(30)
    return record, media


def _both_ways(lab, record):
    assert sum(tone_windows(handset_heard(record), BS_HZ, HS_HZ)) >= 15, lab.bs.log()
    assert sum(tone_windows(lab.bs.heard(), HS_HZ, BS_HZ)) >= 15, lab.bs.log()


def test_b2_baresip_at_site_a_and_a_handset_at_site_b_direct(lab):
    record, media = _baresip_calls(lab, "201", "b2-in")
    _both_ways(lab, record)
    assert media == 0, media
    assert _last_record(lab, "105", "201")["path"] == "direct"
    record, media = _handset_calls(lab, "201", "b2-out")
    _both_ways(lab, record)
    assert media == 0, media
    assert _last_record(lab, "201", "105")["path"] == "direct"


def test_b3_baresip_and_a_handset_of_the_same_site_local(lab):
    record, media = _baresip_calls(lab, "101", "b3-in")
    _both_ways(lab, record)
    assert media == 0, media
    lab.wait_for(lambda: any(r["caller"] == "105" and r["callee"] == "101"
                             for r in json.loads(lab.admin("calls", "--json", "--limit", "20"))),
                 "site a's record uploaded", timeout=10)
    row = _last_record(lab, "105", "101")
    assert (row["origin"], row["path"]) == ("site-a", "local"), row
    record, media = _handset_calls(lab, "101", "b3-out")
    _both_ways(lab, record)
    assert media == 0, media
    lab.wait_for(lambda: any(r["caller"] == "101" and r["callee"] == "105"
                             for r in json.loads(lab.admin("calls", "--json", "--limit", "20"))),
                 "site a's record uploaded", timeout=10)
    row = _last_record(lab, "101", "105")
    assert (row["origin"], row["path"]) == ("site-a", "local"), row
