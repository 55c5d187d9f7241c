"""SIP phone calls end to end on loopback with real daemons: baresip (Debian's, a client nobody here
wrote) registered as extension 105 at site a's remote host calls handset 301 at the main host
(the firmware's protocol core in `upbx phone`), and 301 calls 105. Each side plays its own tone
(baresip 1000 Hz from a WAV, the handset 600 Hz) and what each heard is the other's tone:
baresip's recording against the handset's G.711 recording (Goertzel, as tests/test_baresip.py)."""
import os
import time

import pytest

from tests.support import require_tool
from upbx.common.g711 import ulaw_decode
from upbx.tools.baresip import Baresip, write_tone
from upbx.tools.lab import LoopbackExchange, free_port, goertzel_power, read_g711_record


def tone_windows(pcm, hz, other):
    """Per 100 ms of pcm: whether hz dominates (10x other's power and loud enough)."""
    out = []
    for start in range(0, len(pcm) - 1600 + 1, 1600):
        chunk = pcm[start:]
        p = goertzel_power(chunk, 800, hz)
        out.append(p > 1e9 and p > 10 * goertzel_power(chunk, 800, other))
    return out


def base():
    return free_port() // 2 * 2


@pytest.fixture
def lab(tmp_path):
    require_tool("baresip", "apt-get install baresip-core")
    ports = {"main": free_port(), "site-a": free_port()}
    lab = LoopbackExchange(str(tmp_path), main_settings={"sip_listen": "127.0.0.1:%d" % ports["main"],
                                                         "sip_rtp_base": base()},
                           remote_settings={"sip_listen": "127.0.0.1:%d" % ports["site-a"], "sip_rtp_base": base()})
    lab.sip_ports = ports
    try:
        lab.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301"]})
        lab.sip_password = lab.admin("ext", "add", "105", "--site", "a", "--name", "Desk 105", "--sip")
        lab.start()
        yield lab
    finally:
        lab.close()


def start_baresip(lab, tmp_path, tone_hz):
    wav = write_tone(tmp_path / "bs-tone.wav", tone_hz, 20)
    rtp = base()
    phone = Baresip(tmp_path / "bs105", "105", "127.0.0.1:%d" % lab.sip_ports["site-a"], lab.sip_password,
                    sip_port=free_port(), ctrl_port=free_port(), rtp_ports=(rtp, rtp + 40), source=str(wav))
    phone.start()
    lab.wait_for(lambda: lab.status("site-a")["sip"]["registered"].get("105") == 1, "105 registered", timeout=20)
    return phone


def handset_heard(record):
    return b"".join(ulaw_decode(payload) for _ts, payload in read_g711_record(record))


def test_baresip_calls_a_handset_across_the_main_host_audio_both_ways(lab, tmp_path):
    hs_wav = write_tone(tmp_path / "hs-tone.wav", 600, 30)
    record = lab.path("301.rx.g711")
    handset = lab.phone("301", "--answer", "--send", str(hs_wav), "--record-g711", record, "--exit-after", "40",
                        "--exit-after-call", tag="callee")
    lab.wait_registered("301")
    with start_baresip(lab, tmp_path, 1000) as bs:
        assert bs.dial("sip:301@127.0.0.1:%d" % lab.sip_ports["site-a"])["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)    # the assertions are on the audio recorded, not on this
        calls = lab.status("site-a")["sip"]["calls"]
        assert [(c["extension"], c["state"], c["codec"]) for c in calls] == [("105", "confirmed", "PCMU")]
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    handset.wait(30)
    heard_by_handset = tone_windows(handset_heard(record), 1000, 600)
    heard_by_bs = tone_windows(bs.heard(), 600, 1000)
    assert sum(heard_by_handset) >= 15, (len(heard_by_handset), bs.log())
    assert sum(heard_by_bs) >= 15, (len(heard_by_bs), bs.log())
    assert lab.summary("callee")["calls"][0]["cause"] in ("normal clearing", 0, "normal")
    assert lab.status("site-a")["sip"]["calls"] == []


def test_a_handset_calls_baresip_with_caller_id_audio_both_ways(lab, tmp_path):
    hs_wav = write_tone(tmp_path / "hs-tone.wav", 600, 30)
    with start_baresip(lab, tmp_path, 1000) as bs:
        record = lab.path("301.rx.g711")
        caller = lab.phone("301", "--call", "105", "--call-after", "1", "--duration", "3", "--send", str(hs_wav),
                           "--record-g711", record, "--exit-after-call", "--exit-after", "40", tag="caller")
        incoming = bs.wait_event("CALL_INCOMING", timeout=20)
        assert "301@" in incoming["peeruri"] and "Phone 301" in incoming.get("peerdisplayname", "Phone 301")
        assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=10)
        bs.wait_event("CALL_CLOSED", timeout=20)     # the handset hangs up after its 3 s
        caller.wait(30)
    assert sum(tone_windows(handset_heard(record), 1000, 600)) >= 15, bs.log()
    assert sum(tone_windows(bs.heard(), 600, 1000)) >= 15, bs.log()
    assert lab.status("site-a")["sip"]["calls"] == []
