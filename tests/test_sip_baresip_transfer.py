"""Transfer with a real SIP phone, and a SIP phone at the main host, on loopback with real daemons:
Debian's baresip (a client nobody here wrote) and the firmware's protocol core in `upbx phone`.

- baresip 105 (site a's remote host) talks to handset 301 (main host) and transfers it with its
  `/transfer` command (a REFER, RFC 3515) to handset 302: 301 hears baresip, then 302; 302 hears
  301; 301's display says who it talks to now; baresip is told (NOTIFY 200) and hangs up; the
  records are linked.
- handset 301 talks to baresip 105 and transfers it (`!transfer 302` on its console): baresip
  hears 301, then 302, and 302 hears baresip.
- baresip 305 registered at the main host (site c has no remote host) calls handset 101 at site
  a's remote host and is called by it: audio both ways.

Every side plays its own tone; what each heard is found by Goertzel in its recording."""
import time

import pytest

from tests.sipkit import BS_HZ, LoopbackSniffer, heard_both_ways, records, sip_lab, start_baresip, tone_windows
from tests.support import require_root
from upbx.common.g711 import ulaw_decode
from upbx.host.moh import NOTES_HZ
from upbx.tools.lab import frequencies_heard

H301_HZ, H302_HZ = 600, 1400
LABELS = {"sip": (BS_HZ,), "301": (H301_HZ,), "302": (H302_HZ,), "music": tuple(NOTES_HZ)}


@pytest.fixture
def lab(tmp_path):
    with sip_lab(tmp_path, phones={"a": ["101"], "c": ["301", "302"]}, sip={"105": "a", "305": "c"},
                 main_sip=True) as lab:
        yield lab


def _console(proc, line):
    proc.stdin.write((line + "\n").encode())
    proc.stdin.flush()


def _log(lab, tag):
    with open(lab.path("phone-%s.log" % tag)) as f:
        return f.read()


def test_baresip_transfers_the_handset_it_talks_to_by_refer(lab, tmp_path):
    wav301, wav302 = lab.path("301.speaker.wav"), lab.path("302.speaker.wav")
    h301 = lab.phone("301", "--answer", "--send", "tone:%d" % H301_HZ, "--record", wav301, "--exit-after", "60",
                     "--exit-after-call", tag="x301")
    h302 = lab.phone("302", "--answer", "--send", "tone:%d" % H302_HZ, "--record", wav302,
                     "--exit-after", "60", "--exit-after-call", tag="x302")
    lab.wait_registered("301")
    lab.wait_registered("302")
    with start_baresip(lab, tmp_path, "105") as bs:
        assert bs.dial(lab.sip_uri("301"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(2.5)
        assert bs.command("transfer", lab.sip_uri("302"))["ok"], bs.log()
        bs.wait_event("CALL_CLOSED", timeout=20, fail_on=())        # told 200 by NOTIFY, baresip hangs up
        lab.wait_for(lambda: "display connected 301" in _log(lab, "x302"), "302 talks to 301", timeout=20)
        time.sleep(3)
        _console(h302, "!hangup")
        h302.wait(20)
        h301.wait(20)
        assert lab.status("site-a")["sip"]["calls"] == [], bs.log()
    heard301 = frequencies_heard(wav301, LABELS)
    heard302 = frequencies_heard(wav302, LABELS)
    assert "sip" in heard301 and "302" in heard301[heard301.index("sip"):], heard301
    assert heard301[-1] == "302" or heard301[-2:] == ["302", "quiet"], heard301
    assert "301" in heard302 and "sip" not in heard302, heard302
    assert "now talking to 302" in _log(lab, "x301")
    records_ = records(lab)
    first = next(r for r in records_ if r["caller"] == "105" and r["callee"] == "301")
    joined = [r for r in records_ if {r["caller"], r["callee"]} == {"301", "302"}]
    assert first["cause"] == "transferred" and joined and joined[0]["linked"] == first["uid"], records_


class RtpArriving(LoopbackSniffer):
    """RTP arriving on loopback at ports [low, high) (AF_PACKET, root): what a phone was sent."""

    def __init__(self, low, high):
        LoopbackSniffer.__init__(self)
        self.low, self.high = low, high
        self.packets = []

    def take(self, ip, sport, dport, payload):
        if self.low <= dport < self.high and len(payload) >= 12:
            self.packets.append(payload)

    def payloads(self):
        """PCMU payloads in the order they arrived, RTCP and telephone-events left out."""
        return [p[12:] for p in self.packets if p[0] >> 6 == 2 and p[1] & 0x7F == 0]


@pytest.mark.root
def test_handset_transfers_baresip_to_another_handset(lab, tmp_path):
    require_root()
    wav302 = lab.path("302.speaker.wav")
    h302 = lab.phone("302", "--answer", "--send", "tone:%d" % H302_HZ, "--record", wav302,
                     "--exit-after", "60", "--exit-after-call", tag="y302")
    lab.wait_registered("302")
    with start_baresip(lab, tmp_path, "105") as bs, RtpArriving(*bs.rtp_ports) as rtp:
        h301 = lab.phone("301", "--call", "105", "--call-after", "1", "--send", "tone:%d" % H301_HZ,
                         "--exit-after", "60", "--exit-after-call", tag="y301")
        bs.wait_event("CALL_INCOMING", timeout=20)
        assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=10)
        time.sleep(2.5)
        _console(h301, "!transfer 302")
        h301.wait(20)                                                 # its calls end: "transferred"
        lab.wait_for(lambda: "display connected 105" in _log(lab, "y302"), "302 talks to 105", timeout=20)
        time.sleep(4)
        _console(h302, "!hangup")
        h302.wait(20)
        bs.wait_event("CALL_CLOSED", timeout=10)
        calls = lab.status("site-a")["sip"]["calls"]
        assert calls == [], calls
    # what reached baresip's RTP port, decoded: baresip 1.0's own recording (sndfile) stops at the
    # first re-INVITE of a call (301's hold), though it goes on playing what arrives
    pcm = b"".join(ulaw_decode(payload) for payload in rtp.payloads())
    of301 = [i for i, hit in enumerate(tone_windows(pcm, H301_HZ, H302_HZ)) if hit]
    of302 = [i for i, hit in enumerate(tone_windows(pcm, H302_HZ, H301_HZ)) if hit]
    assert len(of301) >= 10 and len(of302) >= 20, (of301, of302, bs.log())
    assert max(of301) < min(of302), (of301, of302)                         # 301 first, then 302
    heard302 = frequencies_heard(wav302, LABELS)
    assert "sip" in heard302 and "301" not in heard302, heard302
    assert "ended: transferred" in _log(lab, "y301")


def test_baresip_at_the_main_host_calls_a_site_handset_and_is_called(lab, tmp_path):
    """Extension 305 of site c (no remote host) is baresip registered at the main host: it calls
    handset 101 behind site a's remote host (B1 through the main host), then 101 calls it."""
    record = lab.path("101-in.rx.g711")
    h101 = lab.phone("101", "--answer", "--send", "tone:%d" % H301_HZ, "--record-g711", record,
                     "--exit-after", "40", "--exit-after-call", tag="z101-in")
    lab.wait_registered("101")
    with start_baresip(lab, tmp_path, "305", "main") as bs:
        assert bs.dial(lab.sip_uri("101", "main"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)
        calls = lab.status("main")["sip"]["calls"]
        assert [(c["extension"], c["state"]) for c in calls] == [("305", "confirmed")]
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
        h101.wait(30)
        heard_both_ways(bs, record, BS_HZ, H301_HZ)
        record2 = lab.path("101-out.rx.g711")
        seen = len(bs.events)
        caller = lab.phone("101", "--call", "305", "--call-after", "1", "--duration", "3", "--send",
                           "tone:%d" % H301_HZ, "--record-g711", record2, "--exit-after-call", "--exit-after", "40",
                           tag="z101-out")
        incoming = bs.wait_event("CALL_INCOMING", timeout=20, since=seen)
        assert "101@" in incoming["peeruri"]
        assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=10, since=seen)
        bs.wait_event("CALL_CLOSED", timeout=20, since=seen)
        caller.wait(30)
    heard_both_ways(bs, record2, BS_HZ, H301_HZ)
    paths = {(r["caller"], r["callee"]): r["path"] for r in records(lab)}
    assert paths.get(("305", "101")) == "relay" and paths.get(("101", "305")) == "relay", paths
