"""Causes both ways with a real SIP phone, on loopback with real daemons: Debian's baresip
registered as extension 105 at site a's remote host, handsets (`upbx phone`) 301 and 302 at the
main host.

upbx -> SIP: what baresip is told when its call cannot be made (CALL_CLOSED's status line):
unknown 999 -> 404; 301 busy in a call with 302 -> 486; 101 not registered (unreachable) -> 480;
302 rings and nobody answers -> 480; a directed pickup of no extension (**999) -> 403. Network
busy -> 503 is tests/test_sip_admission.py (a full uplink).

SIP -> upbx: what the handset is told when baresip refuses: baresip rejects the ringing call
(486) -> "busy"; baresip lets it ring -> "no answer" (and the INVITE is CANCELled: baresip closes
the call). The statuses baresip cannot send (403, 404, 480, 503 from a phone) come from Kamailio
as the provider: tests/test_sip_kamailio.py.

Caller id both ways: baresip sees the handset's number and directory name; the handset shows 105
and "Desk 105"."""
import pytest

from tests.sipkit import HS_HZ, sip_lab, start_baresip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sipcauses")
    with sip_lab(folder, phones={"a": ["101"], "c": ["301", "302"]}, sip={"105": "a"}, ring_timeout_s=4) as lab:
        with start_baresip(lab, folder, "105", seconds=120) as bs:
            lab.bs = bs
            yield lab


def log(lab, tag):
    with open(lab.path("phone-%s.log" % tag)) as f:
        return f.read()


def refused(lab, number):
    """The status line baresip is given for its call to number."""
    bs = lab.bs
    seen = len(bs.events)
    assert bs.dial(lab.sip_uri(number))["ok"]
    closed = bs.wait_event("CALL_CLOSED", timeout=30, since=seen, fail_on=())
    assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bs.events[seen:]), bs.events[seen:]
    return closed["param"]


def test_upbx_causes_reach_baresip_as_statuses(lab):
    assert refused(lab, "999").startswith("404"), lab.bs.log()
    assert refused(lab, "101").startswith("480")           # not registered: unreachable
    assert refused(lab, "**999").startswith("403")         # a directed pickup of nobody: not permitted
    # 301 busy: call waiting off (*71), talking to 302
    code = lab.phone("301", "--call", "*71", "--exit-after-call", "--exit-after", "20", tag="busy-71")
    code.wait(30)
    assert "waiting=False" in lab.admin("ext", "features", "301")
    h301 = lab.phone("301", "--answer", "--exit-after-call", "--exit-after", "40", tag="busy-301")
    lab.wait_registered("301")
    h302 = lab.phone("302", "--call", "301", "--duration", "40", "--exit-after-call", "--exit-after", "60",
                     tag="busy-302")
    lab.wait_for(lambda: "phone connected" in log(lab, "busy-302"), "302 talks to 301", timeout=20)
    assert refused(lab, "301").startswith("486")
    h302.stdin.write(b"!hangup\n")
    h302.stdin.flush()
    h301.wait(30)
    h302.wait(30)
    # 302 rings and is not answered: no answer
    ringing = lab.phone("302", "--exit-after", "20", tag="ring-302")
    lab.wait_registered("302")
    assert refused(lab, "302").startswith("480")
    assert "display ringing 105 Desk 105" in log(lab, "ring-302")   # baresip's caller id at the handset
    ringing.kill()
    ringing.wait(10)


def test_baresip_refusals_reach_the_handset_as_causes(lab):
    bs = lab.bs
    # baresip rejects the ringing call: 486, the handset hears busy
    seen = len(bs.events)
    caller = lab.phone("301", "--call", "105", "--call-after", "1", "--send", "tone:%d" % HS_HZ,
                       "--exit-after-call", "--exit-after", "30", tag="rej-301")
    incoming = bs.wait_event("CALL_INCOMING", timeout=20, since=seen)
    assert "301@" in incoming["peeruri"] and incoming.get("peerdisplayname") == "Phone 301", incoming
    assert bs.hangup()["ok"]
    caller.wait(30)
    assert lab.summary("rej-301")["calls"][0]["cause"] == "busy"
    # baresip lets it ring: the handset is told no answer, baresip's ringing call is cancelled
    seen = len(bs.events)
    caller = lab.phone("301", "--call", "105", "--call-after", "1", "--exit-after-call", "--exit-after", "30",
                       tag="ring-301")
    bs.wait_event("CALL_INCOMING", timeout=20, since=seen)
    bs.wait_event("CALL_CLOSED", timeout=20, since=seen, fail_on=())
    caller.wait(30)
    assert lab.summary("ring-301")["calls"][0]["cause"] == "no answer"
    assert not any(e.get("type") == "CALL_ESTABLISHED" for e in bs.events[seen:])


def test_baresip_gives_up_while_the_handset_rings_cancel(lab):
    """baresip hangs up while 302 rings: its CANCEL ends the call, 302 stops ringing."""
    bs = lab.bs
    ringing = lab.phone("302", "--exit-after", "30", tag="cancel-302")
    lab.wait_for(lambda: "phone registered as 302" in log(lab, "cancel-302"), "302 registered", timeout=20)
    seen = len(bs.events)
    assert bs.dial(lab.sip_uri("302"))["ok"]
    bs.wait_event("CALL_RINGING", timeout=20, since=seen)
    lab.wait_for(lambda: "display ringing 105" in log(lab, "cancel-302"), "302 rings", timeout=10)
    assert bs.hangup()["ok"]
    bs.wait_event("CALL_CLOSED", timeout=10, since=seen, fail_on=())
    lab.wait_for(lambda: "phone call ended" in log(lab, "cancel-302").split("display ringing 105")[1],
                 "302 stops ringing", timeout=10)
    assert lab.status("site-a")["sip"]["calls"] == [] and lab.status("main")["calls"] == []
    ringing.kill()
    ringing.wait(10)
