"""A SIP trunk end to end on loopback: Debian's baresip plays the provider (no registration: it is
no registrar), the main host's trunk points at it. Handset 301 dials 9 555: the call goes out on
the trunk as sip:555@provider and baresip answers; baresip calls the DID 4415550100: handset 301
rings and answers. Each side plays a tone and hears the other's; the calls are in the records."""
import json
import time

import pytest

from tests.support import require_tool
from tests.test_sip_baresip_calls import base, handset_heard, tone_windows
from upbx.tools.baresip import Baresip, write_tone
from upbx.tools.lab import LoopbackExchange, free_port


@pytest.fixture
def lab(tmp_path):
    require_tool("baresip", "apt-get install baresip-core")
    sip = free_port()
    lab = LoopbackExchange(str(tmp_path), main_settings={"sip_listen": "127.0.0.1:%d" % sip, "sip_rtp_base": base()})
    lab.sip_port = sip
    lab.provider_port = free_port()
    try:
        lab.provision(sites=("c",), remote_sites=(), phones={"c": ["301"]})
        lab.admin("trunk", "add", "prov", "--proxy", "127.0.0.1:%d" % lab.provider_port, "--user", "acct",
                  "--password", "pw")
        lab.admin("route", "add", "9", "--trunk", "prov", "--strip", "1")
        lab.admin("did", "add", "4415550100", "--to", "301")
        lab.start()
        lab.wait_for(lambda: lab.status("main")["sip_listen"] is not None, "the main host's SIP port", timeout=20)
        yield lab
    finally:
        lab.close()


def provider(lab, tmp_path, answer):
    rtp = base()
    return Baresip(tmp_path / "provider", "555", "127.0.0.1", register=False, sip_port=lab.provider_port,
                   ctrl_port=free_port(), rtp_ports=(rtp, rtp + 40), answer=answer,
                   source=str(write_tone(tmp_path / "prov.wav", 1000, 30))).start()


def test_outbound_on_the_trunk(lab, tmp_path):
    hs_wav = write_tone(tmp_path / "hs.wav", 600, 30)
    record = lab.path("301-out.rx.g711")
    with provider(lab, tmp_path, "auto") as bs:
        caller = lab.phone("301", "--call", "9555", "--call-after", "1", "--duration", "3", "--send", str(hs_wav),
                           "--record-g711", record, "--exit-after-call", "--exit-after", "40", tag="out")
        answered = bs.wait_event("CALL_ESTABLISHED", timeout=20)   # auto answer: no CALL_INCOMING
        assert "acct@" in answered["peeruri"]
        bs.wait_event("CALL_CLOSED", timeout=30)
        caller.wait(30)
    assert sum(tone_windows(handset_heard(record), 1000, 600)) >= 15, bs.log()
    assert sum(tone_windows(bs.heard(), 600, 1000)) >= 15, bs.log()
    [rec] = json.loads(lab.admin("calls", "--json", "--limit", "1"))
    assert (rec["caller"], rec["callee"], rec["path"]) == ("301", "9555", "trunk")


def test_inbound_to_a_did(lab, tmp_path):
    hs_wav = write_tone(tmp_path / "hs.wav", 600, 30)
    record = lab.path("301-in.rx.g711")
    handset = lab.phone("301", "--answer", "--send", str(hs_wav), "--record-g711", record, "--exit-after", "40",
                        "--exit-after-call", tag="in")
    lab.wait_registered("301")
    with provider(lab, tmp_path, "manual") as bs:
        assert bs.dial("sip:4415550100@127.0.0.1:%d" % lab.sip_port)["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    handset.wait(30)
    assert sum(tone_windows(handset_heard(record), 1000, 600)) >= 15, bs.log()
    assert sum(tone_windows(bs.heard(), 600, 1000)) >= 15, bs.log()
    [rec] = json.loads(lab.admin("calls", "--json", "--limit", "1"))
    assert (rec["caller"], rec["callee"], rec["path"]) == ("555", "301", "trunk")
