"""A SIP trunk end to end on loopback: Debian's baresip plays the provider (no registration: it is
no registrar; tests/test_sip_kamailio.py has Kamailio as a registering provider), the main host's
trunk points at it. Handset 301 dials 9 555: the call goes out on the trunk as sip:555@provider
and baresip answers; baresip calls the DID 4415550100: handset 301 rings and answers; the DID
4415550200 of ring group 600 (301, 302): 302 answers; the DID 4415550500 of auto-attendant 500:
baresip hears its prompt, presses 1 (RFC 4733) and talks to 301. Each side plays a tone and hears
the other's; the calls are in the records with path "trunk"."""
import time

import pytest

from tests.sipkit import RTP_SPAN, heard_both_ways, records, rtp_base, sip_lab
from upbx.tools.baresip import Baresip, write_tone
from upbx.tools.lab import free_port, free_sip_port

from tests.sipkit import BS_HZ, HS_HZ, handset_heard, tone_windows

PROMPT_HZ = 800


def trunk_to(port):
    """The main host's trunk "prov" at 127.0.0.1:port, route 9, DID 4415550100 -> 301."""
    def setup(lab):
        lab.provider_port = port
        lab.admin("trunk", "add", "prov", "--proxy", "127.0.0.1:%d" % port, "--user", "acct", "--password", "pw")
        lab.admin("route", "add", "9", "--trunk", "prov", "--strip", "1")
        lab.admin("did", "add", "4415550100", "--to", "301")
        lab.admin("group", "add", "600", "--members", "301,302", "--strategy", "ring-all")
        lab.admin("did", "add", "4415550200", "--to", "600")
        prompt = write_tone(lab.path("prompt.wav"), PROMPT_HZ, 2)
        lab.admin("attendant", "set", "500", "--route", "1=301", "--prompt", str(prompt))
        lab.admin("did", "add", "4415550500", "--to", "500")
    return setup


@pytest.fixture
def lab(tmp_path):
    with sip_lab(tmp_path, sites=("c",), remote_sites=(), phones={"c": ["301", "302"]}, main_sip=True,
                 setup=trunk_to(free_sip_port())) as lab:
        lab.wait_for(lambda: lab.status("main")["sip_listen"] is not None, "the main host's SIP port", timeout=20)
        yield lab


def provider(lab, tmp_path, answer):
    rtp = rtp_base()
    return Baresip(tmp_path / "provider", "555", "127.0.0.1", register=False, sip_port=lab.provider_port,
                   ctrl_port=free_port(), rtp_ports=(rtp, rtp + RTP_SPAN - 1), answer=answer,
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
    heard_both_ways(bs, record)
    [rec] = records(lab, 1)
    assert (rec["caller"], rec["callee"], rec["path"]) == ("301", "9555", "trunk")


def test_inbound_to_a_did(lab, tmp_path):
    hs_wav = write_tone(tmp_path / "hs.wav", 600, 30)
    record = lab.path("301-in.rx.g711")
    handset = lab.phone("301", "--answer", "--send", str(hs_wav), "--record-g711", record, "--exit-after", "40",
                        "--exit-after-call", tag="in")
    lab.wait_registered("301")
    with provider(lab, tmp_path, "manual") as bs:
        assert bs.dial(lab.sip_uri("4415550100", "main"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    handset.wait(30)
    heard_both_ways(bs, record)
    [rec] = records(lab, 1)
    assert (rec["caller"], rec["callee"], rec["path"]) == ("555", "301", "trunk")


def test_inbound_did_of_a_ring_group(lab, tmp_path):
    """The DID of group 600 rings 301 and 302; 302 answers (301 only rings)."""
    record = lab.path("302-in.rx.g711")
    ringing = lab.phone("301", "--exit-after", "40", tag="grp-301")
    answers = lab.phone("302", "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711", record,
                        "--exit-after", "40", "--exit-after-call", tag="grp-302")
    lab.wait_registered("301")
    lab.wait_registered("302")
    with provider(lab, tmp_path, "manual") as bs:
        assert bs.dial(lab.sip_uri("4415550200", "main"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    answers.wait(30)
    ringing.kill()
    ringing.wait(10)
    heard_both_ways(bs, record)
    with open(lab.path("phone-grp-301.log")) as f:
        assert "display ringing 555" in f.read()      # the group's other member rang, with the outside number
    rec = next(r for r in records(lab) if r["caller"] == "555")
    assert rec["path"] == "trunk", rec


def test_inbound_did_of_an_auto_attendant(lab, tmp_path):
    """The DID of attendant 500: baresip hears the prompt, presses 1, and talks to 301."""
    record = lab.path("301-aa.rx.g711")
    handset = lab.phone("301", "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711", record,
                        "--exit-after", "60", "--exit-after-call", tag="aa-301")
    lab.wait_registered("301")
    lab.wait_for(lambda: "500" in lab.status("main")["attendants"], "the main host answers 500", timeout=20)
    with provider(lab, tmp_path, "manual") as bs:
        assert bs.dial(lab.sip_uri("4415550500", "main"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)          # the attendant answers
        time.sleep(1.5)
        assert bs.command("sndcode", "1")["ok"], bs.log()     # RFC 4733 telephone-event 1
        lab.wait_for(lambda: "phone connected" in open(lab.path("phone-aa-301.log")).read(), "301 answers",
                     timeout=30)
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    handset.wait(30)
    heard = bs.heard()
    prompt = [i for i, hit in enumerate(tone_windows(heard, PROMPT_HZ, HS_HZ)) if hit]
    voice = [i for i, hit in enumerate(tone_windows(heard, HS_HZ, PROMPT_HZ)) if hit]
    assert len(prompt) >= 5 and len(voice) >= 15 and max(prompt) < min(voice), (prompt, voice, bs.log())
    assert sum(tone_windows(handset_heard(record), BS_HZ, HS_HZ)) >= 15
    rows = [r for r in records(lab) if r["caller"] == "555"]
    assert rows and all(r["path"] == "trunk" for r in rows), rows
