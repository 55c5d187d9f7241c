"""B5 with SIP phones, on loopback with real daemons: Debian's baresip registered as extension 105
at site a's remote host, whose uplink budget carries exactly two trunked calls (150 kbps;
common.media.call_kbps: 145.2 for two, 210.8 for three), as tests/test_admission.py proves it for
handsets. A SIP phone's call is an uplink call like a handset's:

- it counts: with baresip talking to 301 (at the main host) and handset 101 to 302, the site
  commits call_kbps(2), and a third call (handset 103 to 303) is refused "network busy";
- its frames are trunked with the other calls': the datagrams site a sends the main host carry
  both calls' frames in one trunk frame per tick, marked DSCP EF (sniffed on lo, root);
- over a full uplink, baresip's own call out is refused with 503 (network busy), a handset's call
  in to it is refused "network busy" before it rings, and its local call (B3) to a handset of
  its own site still works, audio both ways."""
import time

import pytest

from tests.sipkit import BS_HZ, HS_HZ, LoopbackSniffer, heard_both_ways, sip_lab, start_baresip
from tests.support import require_root
from upbx.common import wire
from upbx.common.media import call_kbps
from upbx.common.trunk import parse_trunk

BUDGET = 150
EF = 46 << 2


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sipadm")
    with sip_lab(folder, phones={"a": ["101", "102", "103", "104"], "c": ["301", "302", "303", "304"]},
                 sip={"105": "a"}, uplink_kbps={"a": BUDGET}, ring_timeout_s=10) as lab:
        lab.folder = folder
        yield lab


def uplink_calls(lab):
    return lab.status("site-a")["uplink"]


def hang_up(proc):
    """`!hangup` on a handset's console."""
    proc.stdin.write(b"!hangup\n")
    proc.stdin.flush()


def handset_call(lab, caller, callee, tag, seconds=40):
    """callee answers and plays HS_HZ, caller calls it for at most `seconds` playing HS_HZ too."""
    answer = lab.phone(callee, "--answer", "--send", "tone:%d" % HS_HZ, "--exit-after-call", "--exit-after", "40",
                       tag=tag + "-" + callee)
    lab.wait_registered(callee)
    call = lab.phone(caller, "--call", callee, "--send", "tone:%d" % HS_HZ, "--duration", str(seconds),
                     "--exit-after-call", "--exit-after", "40", tag=tag + "-" + caller)
    return answer, call


class Uplink(LoopbackSniffer):
    """Trunk frames site a's remote host sends the main host on lo (AF_PACKET, root): per datagram,
    its TOS byte and the call numbers of its entries."""

    def __init__(self, sport, dport):
        LoopbackSniffer.__init__(self)
        self.ports = sport, dport
        self.seen = []

    def take(self, ip, sport, dport, payload):
        if (sport, dport) == self.ports and payload and wire.frame_kind(payload) == wire.KIND_TRUNK:
            self.seen.append((ip[1], [entry[0] for entry in parse_trunk(payload)]))


@pytest.mark.root
def test_a_sip_call_takes_its_share_of_the_budget_and_is_trunked_with_the_others(lab):
    require_root()
    assert call_kbps(2) <= BUDGET < call_kbps(3)
    record = lab.path("301.rx.g711")
    h301 = lab.phone("301", "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711", record,
                     "--exit-after-call", "--exit-after", "60", tag="share-301")
    lab.wait_registered("301")
    with start_baresip(lab, lab.folder, "105", seconds=60) as bs:
        assert bs.dial(lab.sip_uri("301"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        lab.wait_for(lambda: uplink_calls(lab)["calls"] == 1, "the SIP call on the uplink")
        assert uplink_calls(lab)["committed_kbps"] == round(call_kbps(1), 1)
        a302, a101 = handset_call(lab, "101", "302", "share")
        lab.wait_for(lambda: uplink_calls(lab)["calls"] == 2, "two calls on the uplink", timeout=20)
        assert uplink_calls(lab)["committed_kbps"] == round(call_kbps(2), 1)

        with Uplink(lab.remote_ports["a"], lab.main_port) as uplink:
            lab.wait_for(lambda: sum(len(set(calls)) == 2 for _tos, calls in uplink.seen) >= 25,
                         "trunk frames carrying both calls", timeout=20)
        # the third call: refused at site a's remote host, the phone told "network busy"
        third = lab.phone("103", "--call", "303", "--exit-after-call", "--exit-after", "15", tag="share-103")
        third.wait(30)
        assert lab.summary("share-103")["calls"][0]["cause"] == "network busy"
        assert lab.status("site-a")["stats"]["counters"]["admission refused: uplink budget"] >= 1
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
        hang_up(a101)
        for proc in (h301, a302, a101):
            proc.wait(40)
    both = [calls for _tos, calls in uplink.seen if len(set(calls)) == 2]
    assert len({frozenset(calls) for calls in both}) <= 2, both   # the same two calls (one call number each way)
    assert {tos for tos, _calls in uplink.seen} == {EF}, uplink.seen[:5]
    heard_both_ways(bs, record)
    assert lab.summary("share-101")["calls"][0]["cause"] == "normal clearing"


def test_over_a_full_uplink_the_sip_phone_gets_503_is_not_rung_and_calls_its_site(lab):
    calls = handset_call(lab, "101", "301", "full1") + handset_call(lab, "102", "302", "full2")
    lab.wait_for(lambda: uplink_calls(lab)["calls"] == 2, "two handset calls on the uplink", timeout=20)
    refused = lab.status("site-a")["stats"]["counters"].get("admission refused: uplink budget", 0)
    with start_baresip(lab, lab.folder, "105", seconds=40) as bs:
        # out: baresip's INVITE to a handset at the main host is refused with 503
        seen = len(bs.events)
        assert bs.dial(lab.sip_uri("303"))["ok"]
        closed = bs.wait_event("CALL_CLOSED", timeout=20, since=seen, fail_on=())
        assert closed["param"].startswith("503"), closed
        assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bs.events[seen:])
        # in: handset 304's call to 105 is refused at site a before baresip rings
        seen = len(bs.events)
        caller = lab.phone("304", "--call", "105", "--exit-after-call", "--exit-after", "15", tag="full-304")
        caller.wait(30)
        assert lab.summary("full-304")["calls"][0]["cause"] == "network busy"
        assert not any(e.get("type") == "CALL_INCOMING" for e in bs.events[seen:]), bs.events[seen:]
        counters = lab.status("site-a")["stats"]["counters"]
        assert counters["admission refused: uplink budget"] >= refused + 2
        # local (B3): 105 calls 103 of its own site while the uplink is full
        record = lab.path("103.rx.g711")
        h103 = lab.phone("103", "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711", record,
                         "--exit-after-call", "--exit-after", "40", tag="full-103")
        lab.wait_registered("103")
        seen = len(bs.events)
        assert bs.dial(lab.sip_uri("103"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20, since=seen)
        assert uplink_calls(lab)["calls"] == 2          # the local call does not count
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10, since=seen)
        h103.wait(30)
    heard_both_ways(bs, record, BS_HZ, HS_HZ)
    hang_up(calls[1])
    hang_up(calls[3])
    for proc in calls:
        proc.wait(40)
    assert lab.summary("full1-101")["calls"][0]["cause"] == "normal clearing"
