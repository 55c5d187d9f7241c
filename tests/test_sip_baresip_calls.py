"""SIP phone calls end to end on loopback with real daemons: baresip (Debian's, a client nobody here
wrote) registered as extension 105 at site a's remote host calls handset 301 at the main host
(the firmware's protocol core in `upbx phone`), with PCMU and with PCMA, and 301 calls 105. Each
side plays its own tone (baresip 1000 Hz from a WAV, the handset 600 Hz) and what each heard is
the other's tone: baresip's recording against the handset's G.711 recording (Goertzel,
tests/sipkit.py). Caller id both ways: the handset shows "105 Desk 105", baresip the handset's
number and name. A digit the handset sends reaches baresip as an RFC 4733 event; baresip's hold
(re-INVITE sendonly) gives the handset music on hold, and its resume baresip's voice again."""
import time

import pytest

from tests.sipkit import BS_HZ, HS_HZ, heard_both_ways, sip_lab, start_baresip
from upbx.host.moh import NOTES_HZ
from upbx.tools.lab import frequencies_heard


@pytest.fixture
def lab(tmp_path):
    with sip_lab(tmp_path, sip={"105": "a"}) as lab:
        yield lab


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_baresip_calls_a_handset_across_the_main_host_audio_both_ways(lab, tmp_path, codec):
    record = lab.path("301.rx.g711")
    handset = lab.phone("301", "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711", record, "--exit-after", "40",
                        "--exit-after-call", tag="callee")
    lab.wait_registered("301")
    with start_baresip(lab, tmp_path, "105", tone_hz=BS_HZ, seconds=20, codecs=(codec,)) as bs:
        assert bs.dial(lab.sip_uri("301"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        # 3 s of audio each way through site a's SIP edge (frames, not a time: a busy machine is slow to start
        # the media), then the assertions are on the audio recorded
        lab.wait_for(lambda: [(c["frames_in"] >= 150, c["frames_out"] >= 150) for c in lab.status("site-a")["sip"]["calls"]]
                     == [(True, True)], "3 s of audio each way", timeout=60)
        calls = lab.status("site-a")["sip"]["calls"]
        assert [(c["extension"], c["state"], c["codec"]) for c in calls] == [("105", "confirmed", codec)]
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    handset.wait(30)
    heard_both_ways(bs, record)
    assert lab.summary("callee")["calls"][0]["cause"] in ("normal clearing", 0, "normal")
    with open(lab.path("phone-callee.log")) as f:
        assert "display ringing 105 Desk 105" in f.read()     # the caller's number and directory name
    assert lab.status("site-a")["sip"]["calls"] == []


def test_a_handset_calls_baresip_with_caller_id_audio_both_ways(lab, tmp_path):
    with start_baresip(lab, tmp_path, "105", tone_hz=BS_HZ, seconds=20) as bs:
        record = lab.path("301.rx.g711")
        caller = lab.phone("301", "--call", "105", "--call-after", "1", "--duration", "3", "--send",
                           "tone:%d" % HS_HZ, "--record-g711", record, "--exit-after-call", "--exit-after", "40",
                           tag="caller")
        incoming = bs.wait_event("CALL_INCOMING", timeout=20)
        assert "301@" in incoming["peeruri"] and incoming.get("peerdisplayname") == "Phone 301", incoming
        assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=10)
        caller.stdin.write(b"!dtmf 5\n")               # RFC 4733 from site a's remote host
        caller.stdin.flush()
        assert bs.wait_event("CALL_DTMF_START", timeout=10).get("param") == "5", bs.events
        bs.wait_event("CALL_CLOSED", timeout=20)     # the handset hangs up after its 3 s
        caller.wait(30)
    heard_both_ways(bs, record)
    assert lab.status("site-a")["sip"]["calls"] == []


def test_baresip_holds_the_handset_hears_music_then_baresip_again(lab, tmp_path):
    speaker = lab.path("301.speaker.wav")
    handset = lab.phone("301", "--answer", "--send", "tone:%d" % HS_HZ, "--record", speaker, "--exit-after", "60",
                        "--exit-after-call", tag="held")
    lab.wait_registered("301")
    with start_baresip(lab, tmp_path, "105", tone_hz=BS_HZ, seconds=40) as bs:
        assert bs.dial(lab.sip_uri("301"))["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(2.5)
        assert bs.command("hold")["ok"], bs.log()              # re-INVITE a=sendonly
        time.sleep(3)
        assert bs.command("resume")["ok"], bs.log()            # re-INVITE a=sendrecv
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
    handset.wait(30)
    heard = frequencies_heard(speaker, {"sip": (BS_HZ,), "music": tuple(NOTES_HZ)})
    talking = heard.index("sip")         # (the ringing before the answer may read as a note)
    held = heard.index("music", talking)
    assert "sip" in heard[held:], heard


def test_baresip_options_are_challenged_then_answered_with_what_the_host_allows(lab, tmp_path):
    with start_baresip(lab, tmp_path, "105") as bs:
        before = lab.status("site-a")["stats"]["counters"]
        assert bs.command("options", lab.sip_uri("301"))["ok"]
        lab.wait_for(lambda: "----- OPTIONS of" in bs.log(tail=100000) and
                     "Allow:" in bs.log(tail=100000).split("----- OPTIONS of")[1], "baresip's OPTIONS answered")
        answer = bs.log(tail=100000).split("----- OPTIONS of")[1]
    assert "SIP/2.0 200 OK" in answer and "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, REFER" in answer
    after = lab.status("site-a")["stats"]["counters"]
    assert after["sip OPTIONS"] - before.get("sip OPTIONS", 0) == 2                    # challenged, then with credentials
    assert after["sip sent 401"] > before["sip sent 401"]
