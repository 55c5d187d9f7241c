"""Two SIP phones, on loopback with real daemons: Debian's baresip as extensions 105 and 106 of
site a, both registered at its remote host.

- 105 calls 106: both RTP streams end at the remote host, which switches them (B3, record
  `local`); each baresip hears the other's tone.
- ring group 600 (`group add 600 --members 106,301`): handset 302 at the main host calls 600;
  baresip 106 rings with 302's number and answers; each side hears the other."""
import json
import time

import pytest

from tests.sipkit import HS_HZ, heard_both_ways, records, sip_lab, start_baresip, tone_windows

HZ_105, HZ_106 = 1000, 1400


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sippair")

    def group(lab):
        lab.admin("group", "add", "600", "--members", "106,301", "--strategy", "ring-all")

    with sip_lab(folder, phones={"a": ["101"], "c": ["301", "302"]}, sip={"105": "a", "106": "a"},
                 setup=group) as lab:
        with start_baresip(lab, folder, "105", tone_hz=HZ_105, seconds=60) as lab.bs105, \
                start_baresip(lab, folder, "106", tone_hz=HZ_106, seconds=60) as lab.bs106:
            yield lab


def test_a_sip_phone_calls_a_sip_phone_of_its_site(lab):
    a, b = lab.bs105, lab.bs106
    seen_a, seen_b = len(a.events), len(b.events)
    assert a.dial(lab.sip_uri("106"))["ok"]
    incoming = b.wait_event("CALL_INCOMING", timeout=20, since=seen_b)
    assert "105@" in incoming["peeruri"] and incoming.get("peerdisplayname") == "Desk 105", incoming
    assert b.accept()["ok"]
    a.wait_event("CALL_ESTABLISHED", timeout=10, since=seen_a)
    time.sleep(3)
    assert [c["extension"] for c in lab.status("site-a")["sip"]["calls"]] in (["105", "106"], ["106", "105"])
    assert a.hangup()["ok"]
    a.wait_event("CALL_CLOSED", timeout=10, since=seen_a)
    b.wait_event("CALL_CLOSED", timeout=10, since=seen_b)
    assert sum(tone_windows(a.heard(), HZ_106, HZ_105)) >= 15, a.log()
    assert sum(tone_windows(b.heard(), HZ_105, HZ_106)) >= 15, b.log()
    lab.wait_for(lambda: any(r["caller"] == "105" and r["callee"] == "106" for r in records(lab)),
                 "site a's record uploaded", timeout=10)
    row = next(r for r in records(lab) if r["caller"] == "105" and r["callee"] == "106")
    assert (row["origin"], row["path"]) == ("site-a", "local"), json.dumps(row)


def test_a_sip_phone_in_a_ring_group_answers_it(lab):
    bs = lab.bs106
    seen = len(bs.events)
    record = lab.path("302-grp.rx.g711")
    caller = lab.phone("302", "--call", "600", "--call-after", "1", "--duration", "4", "--send", "tone:%d" % HS_HZ,
                       "--record-g711", record, "--exit-after-call", "--exit-after", "40", tag="grp-302")
    incoming = bs.wait_event("CALL_INCOMING", timeout=20, since=seen)
    assert "302@" in incoming["peeruri"], incoming
    assert bs.accept()["ok"]
    bs.wait_event("CALL_ESTABLISHED", timeout=10, since=seen)
    bs.wait_event("CALL_CLOSED", timeout=20, since=seen)       # 302 hangs up after its 4 s
    caller.wait(30)
    heard_both_ways(bs, record, HZ_106, HS_HZ)
    assert lab.summary("grp-302")["calls"][0]["cause"] == "normal clearing"
