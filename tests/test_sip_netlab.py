"""A SIP phone behind a site's NAT in the network lab (root only): Debian's baresip in site a's
LAN (node site-a/phone-2) registered as extension 105 to site a's remote host, calls handset 301
of site c (no remote host: 301 is at the main host through site c's NAT router) and is called by
it; then calls handset 201 at site b and is called by it (B2: the media goes straight between the
two sites' remote hosts through both NAT routers, none through the main host). Every hop between
the sites crosses nftables masquerade. Each side plays a tone (baresip 1000
Hz, the handset 600 Hz) and each side's recording holds the other's: baresip's recording against
the handset's G.711 recording."""
import os
import time

import pytest

from tests.support import require_root, require_tool
from tests.sipkit import heard_both_ways
from upbx.tools.baresip import Baresip, write_tone
from upbx.tools.netlab import node_address
from upbx.tools.netlab_exchange import NetlabExchange

pytestmark = pytest.mark.root
SIP_PORT = 5060
BARESIP_NODE = "site-a/phone-2"


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    require_root()
    require_tool("baresip", "apt-get install baresip-core")
    from upbx.tools.netlab import Lab
    lab = Lab("upxs%s-" % os.urandom(2).hex())
    try:
        lab.up(nat="cone", sites=("a", "b", "c"), remote_sites=("a", "b"), phones=2)
        remote = node_address("site-a/remote")
        with NetlabExchange(lab, str(tmp_path_factory.mktemp("sipnet")), keepalive_s=3, ring_timeout_s=15,
                            remote_settings={"sip_listen": "%s:%d" % (remote, SIP_PORT)}) as ex:
            ex.provision(sites=("a", "b", "c"), remote_sites=("a", "b"), phones={"a": ["101"], "b": ["201"],
                                                                                 "c": ["301"]})
            ex.sip_password = ex.admin("ext", "add", "105", "--site", "a", "--name", "Desk 105", "--sip")
            ex.start()
            ex.sip_domain = "%s:%d" % (remote, SIP_PORT)
            yield ex
    finally:
        lab.down()


def baresip(ex, folder, tone_hz):
    wav = write_tone(folder / "bs-tone.wav", tone_hz, 30)
    phone = Baresip(folder / "bs105", "105", ex.sip_domain, ex.sip_password, lab=ex.lab, node=BARESIP_NODE,
                    source=str(wav))
    phone.start()
    ex.wait_for(lambda: ex.status("site-a")["sip"]["registered"].get("105") == 1, "105 registered", timeout=20)
    return phone


def test_baresip_behind_a_site_calls_a_handset_at_another_site(ex, tmp_path):
    hs_wav = write_tone(tmp_path / "hs.wav", 600, 30)
    record = ex.path("301-in.rx.g711")
    handset = ex.phone("301", "--answer", "--send", str(hs_wav), "--record-g711", record, "--exit-after", "40",
                       "--exit-after-call", tag="301-in")
    ex.wait_registered("301")
    with baresip(ex, tmp_path, 1000) as bs:
        assert bs.dial("sip:301@%s" % ex.sip_domain)["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    handset.wait(30)
    heard_both_ways(bs, record)


def test_a_handset_at_another_site_calls_baresip_behind_its_site(ex, tmp_path):
    hs_wav = write_tone(tmp_path / "hs.wav", 600, 30)
    record = ex.path("301-out.rx.g711")
    with baresip(ex, tmp_path, 1000) as bs:
        caller = ex.phone("301", "--call", "105", "--call-after", "1", "--duration", "3", "--send", str(hs_wav),
                          "--record-g711", record, "--exit-after-call", "--exit-after", "40", tag="301-out")
        incoming = bs.wait_event("CALL_INCOMING", timeout=20)
        assert "301@" in incoming["peeruri"]
        assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=10)
        bs.wait_event("CALL_CLOSED", timeout=20)
        caller.wait(30)
    heard_both_ways(bs, record)


def _records(ex):
    import json
    return json.loads(ex.admin("calls", "--json", "--limit", "20"))


def _main_media(ex):
    counters = ex.status("main")["stats"]["counters"]
    return counters.get("media in", 0) + counters.get("media out", 0)


@pytest.mark.parametrize("sip_calls", [True, False])
def test_baresip_behind_site_a_and_a_handset_behind_site_b_direct(ex, tmp_path, sip_calls):
    hs_wav = write_tone(tmp_path / "hs.wav", 600, 30)
    record = ex.path("201-%s.rx.g711" % sip_calls)
    tag = "201-b2-%s" % sip_calls
    with baresip(ex, tmp_path, 1000) as bs:
        if sip_calls:
            handset = ex.phone("201", "--answer", "--send", str(hs_wav), "--record-g711", record, "--exit-after",
                               "40", "--exit-after-call", tag=tag)
            ex.wait_registered("201")
            assert bs.dial("sip:201@%s" % ex.sip_domain)["ok"]
        else:
            handset = ex.phone("201", "--call", "105", "--call-after", "1", "--duration", "5", "--send", str(hs_wav),
                               "--record-g711", record, "--exit-after-call", "--exit-after", "40", tag=tag)
            bs.wait_event("CALL_INCOMING", timeout=20)
            assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(1.5)
        media = _main_media(ex)
        time.sleep(2)
        assert _main_media(ex) == media                       # none of it through the main host
        if sip_calls:
            assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=20)
        handset.wait(30)
    heard_both_ways(bs, record)
    pair = ("105", "201") if sip_calls else ("201", "105")
    assert next(r for r in _records(ex) if (r["caller"], r["callee"]) == pair)["path"] == "direct"
