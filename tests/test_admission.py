"""B5 call admission end to end with firmware phones: a site's uplink budget admits exactly the
calls it can carry; local calls never count.

The budget is set for exactly two trunked calls (common.media.call_kbps: 145.2 kbps for two,
210.8 for three). With two calls up, a third outgoing call and an incoming one are refused
with "network busy" (the caller's phone plays the reorder tone), while a local call still works.
"""
import wave

import pytest

from upbx.common.media import call_kbps
from firmware.audio.dtmf import goertzel_power
from upbx.tools.lab import LoopbackExchange, write_noise_wav

BUDGET = 150


def test_budget_formula_admits_two_calls_not_three():
    assert call_kbps(2) <= BUDGET < call_kbps(3)
    assert round(call_kbps(1), 1) == 79.6            # (3 + 4 + 160 + 4 + 28) bytes per 20 ms
    assert round(call_kbps(10) / 10, 1) == 67.0      # trunking shares the headers


def tone_bursts(path):
    """Lengths (in 20 ms frames) of the bursts of 480 + 620 Hz in a WAV (the busy/reorder pair)."""
    with wave.open(path) as w:
        data = w.readframes(w.getnframes())
    bursts, run = [], 0
    for i in range(0, len(data) - 319, 320):
        frame = data[i:i + 320]
        pair = min(goertzel_power(frame, 160, 480), goertzel_power(frame, 160, 620))
        others = max(goertzel_power(frame, 160, hz) for hz in (350, 1000, 1400))
        if pair > 1e10 and pair > 5 * others:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    return bursts


@pytest.fixture(scope="module")
def lab():
    with LoopbackExchange(ring_timeout_s=10, uplink_kbps={"a": BUDGET, "b": 50}) as lab:
        lab.provision(phones={"a": ["101", "102", "103", "104", "105"], "b": ["201"],
                              "c": ["301", "302", "303", "304"]})
        lab.start()
        yield lab


def test_call_n_plus_one_is_refused_with_network_busy_while_local_calls_work(lab):
    wav = lab.path("talk.wav")
    write_noise_wav(wav, 12, 9)
    calls = []
    for caller, callee in (("101", "301"), ("102", "302")):
        calls.append(lab.phone(callee, "--answer", "--exit-after-call", "--exit-after", "25", tag="up-" + callee))
        lab.wait_registered(callee)
        calls.append(lab.phone(caller, "--send", wav, "--call", callee, "--duration", "9", "--exit-after-call",
                               "--exit-after", "25", tag="up-" + caller))
    lab.wait_for(lambda: sum(c["state"] == "answered" for c in lab.status("site-a")["calls"]) == 2,
                 "two uplink calls answered")
    assert lab.status("site-a")["uplink"]["committed_kbps"] == round(call_kbps(2), 1)

    # outgoing call N+1: refused at the remote host, the phone plays reorder
    third = lab.phone("103", "--call", "303", "--record", lab.path("103.wav"), "--exit-after-call",
                      "--exit-after", "10", tag="third")
    # incoming call to the site: its media would use the uplink too
    callee = lab.phone("104", "--answer", "--exit-after", "10", tag="incoming-104")
    lab.wait_registered("104")
    incoming = lab.phone("304", "--call", "104", "--exit-after-call", "--exit-after", "10", tag="incoming-304")
    third.wait(15)
    incoming.wait(15)
    callee.wait(15)
    refused = lab.summary("third")["calls"][0]
    assert refused["cause"] == "network busy" and refused["tone"] == "reorder"
    bursts = tone_bursts(lab.path("103.wav"))  # reorder: 250 ms on, 250 off (busy is 500/500)
    assert len(bursts) >= 2 and all(12 <= b <= 14 for b in bursts), bursts
    assert lab.summary("incoming-304")["calls"][0]["cause"] == "network busy"

    # a local call (B3) at the same site, while the uplink is full
    talker = lab.phone("105", "--answer", "--exit-after-call", "--exit-after", "12", tag="local-105")
    lab.wait_registered("105")
    local = lab.phone("104", "--send", wav, "--call", "105", "--duration", "1.5", "--exit-after-call",
                      "--exit-after", "12", tag="local-104")
    local.wait(15)
    talker.wait(15)
    summary = lab.summary("local-104")
    row = summary["calls"][0]
    # 1.5 s: each 20 ms frame sent, or lost by the microphone while a loaded machine stalled the process;
    # and what was sent arrived
    assert row["path"] == "local" and row["cause"] == "normal clearing"
    assert row["frames_sent"] + summary["mic_frames_lost"] >= 60, (row, summary["mic_frames_lost"])
    assert lab.summary("local-105")["frames_received"] >= 0.95 * row["frames_sent"]
    for proc in calls:
        proc.wait(20)
    assert all(lab.summary("up-" + n)["calls"][0]["cause"] == "normal clearing" for n in ("101", "102"))


# A budget below one call, and every admission decision frame by frame on a virtual clock:
# tests/test_routing.py.
