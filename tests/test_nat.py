"""B2 through real NAT and B7 dynamic addresses, in the network lab (root only).

The main host, the remote hosts and the virtual handsets (the real firmware under the
MicroPython unix port) each run in their own namespace of tools.netlab.Lab, behind
nftables masquerade routers. Paths are proven with the daemons' packet counters (read
through their control sockets), audio with the frames the far phone recorded, and the
B7 recovery time with the gap in those recordings (frames carry the sender's timestamp).
"""
import json
import os
import signal
import time

import pytest

from tests.support import require_root
from upbx.tools.lab import audio_match
from upbx.tools.netlab_exchange import NetlabExchange, talk

KEEPALIVE_S = 3   # idle keepalive of the remote hosts in these tests (docs/nat-and-roaming.md)


def lab_prefix():
    return "upxn%s-" % os.urandom(2).hex()


@pytest.fixture(scope="module")
def cone():
    require_root()
    from upbx.tools.netlab import Lab
    lab = Lab(lab_prefix())
    try:
        lab.up(nat="cone", phones=2)
        with NetlabExchange(lab, keepalive_s=KEEPALIVE_S, ring_timeout_s=15) as ex:
            ex.provision()
            ex.start()
            yield ex
    finally:
        lab.down()


def last_call_path(ex):
    return json.loads(ex.admin("calls", "--json", "--limit", "1"))[0]["path"]


def change_and_watch(site, address):
    """during() for talk(): move the site's public address, then time until main knows it."""
    def during(ex):
        started = time.monotonic()
        ex.lab.change_wan_address(site, address)
        while time.monotonic() - started < 5:
            seen = ex.host_address_at_main(site)
            if seen and seen.split(":")[0] == address:
                return int((time.monotonic() - started) * 1000)
            time.sleep(0.01)
        return None
    return during


def assert_both_ways(row, a, b, seconds, max_gap_ms=0):
    """Audio both ways, frame for frame (tools.lab.frames_heard: every frame the sender recorded
    sending arrived, in order, nothing else; the caller `a` hangs up, so the callee's frames sent
    after that may miss it), and the recovery bound of B7 (a call recovers within a second) as the
    gap in the far phone's recording, counted in the sender's 20 ms frame timestamps (the time it
    takes main to learn the address is printed; a busy machine's scheduling would move it, not the
    frames). Nothing here counts frames per second of the clock: a phone descheduled on a busy
    machine loses microphone frames as a handset's overrun DMA queue does, before they are sent."""
    for direction in ("%s->%s" % (a, b), "%s->%s" % (b, a)):
        leg = row[direction]
        if max_gap_ms == 0:
            # the caller's own last frame or two may reach the callee after its hang-up did (media and
            # signalling take different paths: a direct media path, the release through the hosts),
            # and the callee has stopped listening: as tests/test_quality.py allows, at most 2, at the end
            whole = leg["received"] and not leg["foreign"] and leg["in_order"] and not leg["missing_head"] \
                and not leg["missing_inside"]
            assert leg["match"] or (direction == "%s->%s" % (a, b) and whole and leg["missing_tail"] <= 2), \
                "%s %r" % (direction, leg)
        else:   # an address change: the frames lost to it, wherever they fell, add up to at most the bound
            assert leg["received"] and not leg["foreign"] and leg["in_order"], "%s %r" % (direction, leg)
            assert (leg["missing_head"] + leg["missing_inside"]) * 20 <= max_gap_ms, "%s %r" % (direction, leg)
            # after the change the call carried on to its end: the caller's last frame or two may still race
            # its own hang-up (as above, at most 2); a path that never recovered misses every frame after the
            # change at the tail (50 a second)
            assert direction == "%s->%s" % (b, a) or leg["missing_tail"] <= 2, "%s %r" % (direction, leg)
        assert leg["gap_ms"] <= max_gap_ms, (direction, leg)
    assert row["call"]["cause"] == "normal clearing", row["call"]


def test_b2_media_flows_directly_between_cone_nat_sites(cone):
    row = talk(cone, "101", "201", seconds=3)
    assert_both_ways(row, "101", "201", 3)
    assert row["media_at_hosts"]["main"] == 0
    assert row["media_at_hosts"]["site-a"] >= 140 and row["media_at_hosts"]["site-b"] >= 140
    assert last_call_path(cone) == "direct"
    # the path the remote hosts punched runs between the routers' public addresses
    assert cone.status("site-a")["pairs"]["site-b"] == {"up": True, "address": "198.18.2.1:4570"}


def test_callee_frames_sent_after_the_caller_hung_up_are_not_lost_audio(cone):
    """What a busy machine once did to the symmetric-NAT test below: the caller's hang-up was slow to
    reach the callee, which went on sending. Here site b's remote host is stopped for 1.5 s across
    the hang-up (SIGSTOP): the callee's frames sent meanwhile reach a caller that has left. They are
    no lost audio (frames_heard); counted against the callee's total (audio_match, the test's old
    measure) they were, and the call "failed"."""
    site_b = [p for p in cone.procs if p.upbx_name == "site-b"][-1]

    def hold_site_b(ex):
        os.killpg(site_b.pid, signal.SIGSTOP)
        try:
            time.sleep(1.5)
        finally:
            os.killpg(site_b.pid, signal.SIGCONT)
    row = talk(cone, "101", "201", seconds=3, during_after_s=2.5, during=hold_site_b)
    assert_both_ways(row, "101", "201", 3, max_gap_ms=0)
    back = row["201->101"]
    assert back["missing_tail"] >= 10, back              # the hold spanned the hang-up
    # the caller's last frames came before its hang-up: all but the last one or two, which may reach the callee
    # after the hang-up did (media and release take different paths; assert_both_ways allows it: a CI run under
    # load, session 17, lost 1)
    assert row["101->201"]["missing_tail"] <= 2
    assert not audio_match(cone.path("201.wav"), row["records"]["101"], back["sent"])[0]


def test_b7_address_change_during_a_relayed_call(cone):
    """Site A (remote host) <-> site C (phone at the main host): media crosses the main host."""
    row = talk(cone, "101", "301", seconds=4, during=change_and_watch("a", "198.18.1.101"))
    learned_ms = row["during"]
    assert learned_ms is not None, "main never saw the new address"
    assert_both_ways(row, "101", "301", 4, max_gap_ms=1000)
    assert row["media_at_hosts"]["main"] >= 300
    assert any("peer=site-a address=198.18.1.101:" in line for line in cone.log_lines("main", "address-changed"))
    assert cone.status("site-a")["main"]["logins"] == 1
    print("B7 relayed call: main learned in %d ms; gaps %d ms (C->A), %d ms (A->C)"
          % (learned_ms, row["301->101"]["gap_ms"], row["101->301"]["gap_ms"]))


def test_b7_address_change_during_a_direct_call(cone):
    """Site A <-> site B directly: both remote hosts must learn the new address (re-offered pair)."""
    # 2 s into the call the change falls between two of the remote host's 1 s call PINGs, so
    # the pair-silence probe (300 ms) is what tells main the new address (docs/nat-and-roaming.md)
    row = talk(cone, "102", "202", seconds=4, during_after_s=2.0, during=change_and_watch("a", "198.18.1.102"))
    learned_ms = row["during"]
    assert learned_ms is not None, "main never saw the new address"
    assert_both_ways(row, "102", "202", 4, max_gap_ms=1000)
    assert row["media_at_hosts"]["main"] == 0           # the direct path came back; no relay
    assert cone.status("site-b")["pairs"]["site-a"]["address"] == "198.18.1.102:4570"
    assert cone.status("site-a")["main"]["logins"] == 1
    assert cone.status("site-b")["main"]["logins"] == 1
    print("B7 direct call: main learned in %d ms; gaps %d ms (B->A), %d ms (A->B); pair silence probes %s"
          % (learned_ms, row["202->102"]["gap_ms"], row["102->202"]["gap_ms"],
             cone.status("site-a")["stats"]["counters"].get("pair silence probes")))


def test_b7_address_change_of_a_site_without_remote_host_during_a_call(cone):
    """Site C's phone talks straight to the main host: main learns its new address from media."""
    def move(ex):
        started = time.monotonic()
        ex.lab.change_wan_address("c", "198.18.3.104")
        while time.monotonic() - started < 5:
            if any(p["address"].startswith("198.18.3.104:") for p in ex.status("main")["phones"]):
                return int((time.monotonic() - started) * 1000)
            time.sleep(0.01)
        return None
    row = talk(cone, "302", "201", seconds=3, during=move)
    assert row["during"] is not None, "main never saw the new address"
    assert_both_ways(row, "302", "201", 3, max_gap_ms=1000)
    print("B7 phone at the main host: main learned in %d ms; gaps %d ms (B->C), %d ms (C->B)"
          % (row["during"], row["201->302"]["gap_ms"], row["302->201"]["gap_ms"]))


def test_b7_idle_site_stays_reachable_after_an_address_change(cone):
    """The phone at site A is registered and idle; A's address moves; site C calls it at once."""
    def move(ex):
        time.sleep(0.5)   # the registration's PHONE_STATE has reached main: site A is idle now
        ex.lab.change_wan_address("a", "198.18.1.103")
        return time.monotonic()
    row = talk(cone, "302", "101", seconds=2, before_call=move)
    assert_both_ways(row, "302", "101", 2)
    assert row["call"]["cause"] == "normal clearing"
    assert cone.host_address_at_main("a").startswith("198.18.1.103:")
    assert any("peer=site-a address=198.18.1.103:" in line for line in cone.log_lines("main", "address-changed"))
    assert cone.status("site-a")["main"]["logins"] == 1
    # the SETUP to the old address is lost; main resends it to the address A's next keepalive
    # shows: the ring comes at most a keepalive plus a resend interval late (that bound is asserted
    # on a virtual clock in tests/test_roaming.py; here the phone's setup time is reported)
    print("B7 idle: call from site C alerted at site A after %d ms (keepalive %d s)"
          % (row["call"]["setup_ms"], KEEPALIVE_S))


def test_b2_falls_back_to_relay_when_one_site_has_symmetric_nat():
    require_root()
    from upbx.tools.netlab import Lab
    lab = Lab(lab_prefix())
    try:
        lab.up(nat={"a": "cone", "b": "symmetric"}, sites=("a", "b"), phones=1)
        with NetlabExchange(lab, keepalive_s=KEEPALIVE_S) as ex:
            ex.provision(sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
            ex.start()
            row = talk(ex, "101", "201", seconds=3)
            assert_both_ways(row, "101", "201", 3)
            assert row["media_at_hosts"]["main"] >= 280
            assert last_call_path(ex) == "relay"
            assert ex.status("site-a")["pairs"]["site-b"]["up"] is False
            relay = ex.log_lines("site-a", "relay-path") + ex.log_lines("site-b", "relay-path")
            assert relay and all("within 2000 ms" in line for line in relay)
    finally:
        lab.down()
