"""SIP at a site while the main host is unreachable (B4), in the network lab (root only): every
daemon in its own namespace, site a behind its nftables NAT router, the main host's link taken
down (unreachable, not just stopped) as tests/test_netlab_groups.py does.

- The site's own trunk (issue 13 item 2, SRST): Debian's baresip plays an analogue gateway on site
  a's LAN (site-a/phone-3, `trunk add gw-a --site a`), a second baresip the main host's provider
  (in the main host's namespace, "the Internet"). With the main host unreachable, handset 101
  dials 9 555: the gateway answers, each side hears the other's tone; the gateway calls the DID of
  101: it rings and each side hears the other. The main host back: the same 9 555 goes out on the
  main host's trunk to the provider again, and the site's records of the gateway's calls are
  uploaded (path "trunk").
- SIP phones in B4: baresip registered as extension 105 (site-a/phone-2) calls handset 101 and is
  called by it, audio both ways, with the main host unreachable.
"""
import json
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
PROVIDER_PORT = 5080
PHONE_105 = "site-a/phone-2"
GATEWAY = "site-a/phone-3"
DID = "4415550101"


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    require_root()
    require_tool("baresip", "apt-get install baresip-core")
    from upbx.tools.netlab import Lab
    lab = Lab("upxt%s-" % os.urandom(2).hex())
    try:
        lab.up(nat="cone", sites=("a",), remote_sites=("a",), phones=3)
        remote, main = node_address("site-a/remote"), node_address("main")
        with NetlabExchange(lab, str(tmp_path_factory.mktemp("srst")), keepalive_s=2, ring_timeout_s=20,
                            main_settings={"sip_listen": "%s:%d" % (main, SIP_PORT)},
                            remote_settings={"sip_listen": "%s:%d" % (remote, SIP_PORT),
                                             "login_backoff_max_s": 2}) as ex:
            ex.provision(sites=("a",), remote_sites=("a",), phones={"a": ["101"]})
            ex.sip_password = ex.admin("ext", "add", "105", "--site", "a", "--name", "Desk 105", "--sip")
            ex.admin("trunk", "add", "prov", "--proxy", "%s:%d" % (main, PROVIDER_PORT), "--user", "acct",
                     "--password", "pw")
            ex.admin("trunk", "add", "gw-a", "--site", "a", "--proxy", "%s:5060" % node_address(GATEWAY),
                     "--user", "site-a", "--password", "gw-pw")
            ex.admin("route", "add", "9", "--trunk", "prov", "--strip", "1")
            ex.admin("did", "add", DID, "--to", "101")
            ex.start()
            ex.sip_domain = "%s:%d" % (remote, SIP_PORT)
            ex.wait_for(lambda: "gw-a" in ex.status("site-a")["sip"]["trunks"], "site a has its trunk", timeout=20)
            yield ex
    finally:
        lab.down()


class MainUnreachable:
    """The main host's link down while inside; site a has noticed on entry, logged in again on exit."""

    def __init__(self, ex):
        self.ex = ex

    def __enter__(self):
        self.ex.lab.exec("main", ["ip", "link", "set", "dev", "eth0", "down"], check=True)
        self.ex.wait_for(lambda: self.ex.status("site-a")["main"]["state"] != "up", "site a noticed", timeout=20)
        return self

    def __exit__(self, *exc):
        self.ex.lab.exec("main", ["ip", "link", "set", "dev", "eth0", "up"], check=True)
        if exc[0] is None:
            self.ex.wait_for(lambda: self.ex.status("site-a")["main"]["state"] == "up", "site a logged in again",
                             timeout=30)


def line(ex, folder, node, tone_hz, port=5060, ctrl_port=4444):
    """baresip as a line (the gateway, the provider): no registration, answers by itself."""
    return Baresip(folder, "555", node_address(node), register=False, lab=ex.lab, node=node, sip_port=port,
                   ctrl_port=ctrl_port, answer="auto", source=write_tone(os.path.join(str(folder), "tone.wav"),
                                                                          tone_hz, 30)).start()


def dial_9555(ex, tmp_path, tag):
    """Handset 101 dials 9 555 for 3 s playing 600 Hz; what it heard (16-bit PCM)."""
    record = ex.path("%s.rx.g711" % tag)
    caller = ex.phone("101", "--call", "9555", "--call-after", "1", "--duration", "3", "--send",
                      write_tone(tmp_path / ("%s.wav" % tag), 600, 30), "--record-g711", record,
                      "--exit-after-call", "--exit-after", "40", tag=tag)
    return caller, record


def test_b4_outside_calls_on_the_sites_gateway_then_the_main_hosts_trunk_again(ex, tmp_path):
    os.makedirs(tmp_path / "gw")
    os.makedirs(tmp_path / "prov")
    with line(ex, tmp_path / "gw", GATEWAY, 1000) as gw, \
            line(ex, tmp_path / "prov", "main", 800, port=PROVIDER_PORT, ctrl_port=4445) as prov:
        with MainUnreachable(ex):
            caller, record = dial_9555(ex, tmp_path, "b4-out")
            answered = gw.wait_event("CALL_ESTABLISHED", timeout=20)     # auto answer
            assert "site-a@" in answered["peeruri"]
            gw.wait_event("CALL_CLOSED", timeout=30)
            caller.wait(30)
            heard_both_ways(gw, record)

            # the gateway's call to 101's DID rings 101 (the main host still away)
            record_in = ex.path("b4-in.rx.g711")
            handset = ex.phone("101", "--answer", "--send", write_tone(tmp_path / "in.wav", 600, 30),
                               "--record-g711", record_in, "--exit-after", "40", "--exit-after-call", tag="b4-in")
            ex.wait_registered("101")
            since = len(gw.events)
            assert gw.dial("sip:%s@%s" % (DID, ex.sip_domain))["ok"]
            gw.wait_event("CALL_ESTABLISHED", timeout=20, since=since)
            time.sleep(3)
            assert gw.hangup()["ok"]
            gw.wait_event("CALL_CLOSED", timeout=10, since=since)
            handset.wait(30)
            heard_both_ways(gw, record_in)
            pending = ex.status("site-a")["records_pending"]
            assert pending >= 2

        # the main host back: the site's records go up, and 9 555 is the main host's trunk's again
        ex.wait_for(lambda: ex.status("site-a")["records_pending"] == 0, "the records uploaded", timeout=20)
        records = json.loads(ex.admin("calls", "--json", "--limit", "10"))
        assert {(r["caller"], r["callee"], r["path"]) for r in records} >= {("101", "9555", "trunk"),
                                                                             ("555", "101", "trunk")}
        gw_calls = len([e for e in gw.events if e.get("type") == "CALL_ESTABLISHED"])
        caller, record = dial_9555(ex, tmp_path, "back-out")
        answered = prov.wait_event("CALL_ESTABLISHED", timeout=20)
        assert "acct@" in answered["peeruri"]
        prov.wait_event("CALL_CLOSED", timeout=30)
        caller.wait(30)
        heard_both_ways(prov, record, 800, 600)
        assert len([e for e in gw.events if e.get("type") == "CALL_ESTABLISHED"]) == gw_calls   # not the gateway
    main_record = json.loads(ex.admin("calls", "--json", "--limit", "1"))[0]
    assert (main_record["caller"], main_record["callee"], main_record["path"]) == ("101", "9555", "trunk")


def test_b4_no_outside_line_without_the_gateway(ex, tmp_path):
    """Neither line: the main host away and the gateway silent: 101 hears "no outside line"."""
    with MainUnreachable(ex):
        caller, _record = dial_9555(ex, tmp_path, "b4-none")
        caller.wait(30)
    with open(ex.path("phone-b4-none.log"), errors="replace") as f:
        log = f.read()
    assert "call ended: no outside line" in log, log[-2000:]


def test_b4_sip_phone_and_handset_call_each_other(ex, tmp_path):
    bs = Baresip(tmp_path / "bs105", "105", ex.sip_domain, ex.sip_password, lab=ex.lab, node=PHONE_105,
                 source=write_tone(tmp_path / "bs.wav", 1000, 30))
    with MainUnreachable(ex), bs.start():
        # registered from the site's cached directory
        ex.wait_for(lambda: ex.status("site-a")["sip"]["registered"].get("105") == 1, "105 registered", timeout=20)
        # 105 calls 101
        record = ex.path("105-101.rx.g711")
        handset = ex.phone("101", "--answer", "--send", write_tone(tmp_path / "hs.wav", 600, 30), "--record-g711",
                           record, "--exit-after", "40", "--exit-after-call", tag="105-101")
        ex.wait_registered("101")
        assert bs.dial("sip:101@%s" % ex.sip_domain)["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
        handset.wait(30)
        heard_both_ways(bs, record)
        # 101 calls 105
        since = len(bs.events)
        record = ex.path("101-105.rx.g711")
        caller = ex.phone("101", "--call", "105", "--call-after", "1", "--duration", "3", "--send",
                          write_tone(tmp_path / "hs2.wav", 600, 30), "--record-g711", record,
                          "--exit-after-call", "--exit-after", "40", tag="101-105")
        incoming = bs.wait_event("CALL_INCOMING", timeout=20, since=since)
        assert "101@" in incoming["peeruri"]
        assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=10, since=since)
        bs.wait_event("CALL_CLOSED", timeout=20, since=since)
        caller.wait(30)
        heard_both_ways(bs, record)
    ex.wait_for(lambda: ex.status("site-a")["records_pending"] == 0, "the records uploaded", timeout=20)
    records = json.loads(ex.admin("calls", "--json", "--limit", "10"))
    assert {(r["caller"], r["callee"], r["path"]) for r in records} >= {("105", "101", "local"),
                                                                         ("101", "105", "local")}
