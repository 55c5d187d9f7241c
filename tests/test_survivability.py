"""B4 survivability end to end on loopback: real daemons killed -9, real firmware phones.

One exchange, in phases (the tests run in file order and share it):
  1. main host killed -9 while a local call (site a) and an inter-site call (a -> b) are up:
     the local call goes on without a gap, the inter-site call is held through the remote hosts'
     grace period (main_grace_s, 2 s here) and then ends "main host lost" on both phones (a main
     host killed and started again has lost its calls);
  2. main host still down: new local calls at both sites work from the cached directories;
  3. remote host a killed -9 and restarted: its phone is registered again;
  4. main host restarted (twice, the second time killed again once it has stored a record, most
     often in the middle of the upload): every remote host logs in and every record reaches the
     main host once.
How fast each transition happens (the bounds of docs/survivability.md) is asserted on a virtual
clock in tests/test_survivability_timing.py, with the main host killed mid-upload for certain:
here the clock is the machine's, and a busy machine would move the times, not the outcomes.
"""
import json
import os
import threading
import time

import pytest

from upbx.common import wire
from upbx.common.login import BACKOFF, UP, Login, LoginDown
from upbx.host.records import RecordStore
from upbx.tools.lab import LoopbackExchange, audio_match, place_call, read_g711_record, write_noise_wav

BACKOFF_MAX_S = 2.0
SYNTHETIC_RECORDS = 1500     # a long upload: the second kill most often lands in its middle


@pytest.fixture(scope="module")
def lab():
    settings = {"keepalive_s": 2, "login_backoff_initial_s": 0.5, "login_backoff_max_s": BACKOFF_MAX_S,
                "main_grace_s": 2}
    with LoopbackExchange(remote_settings=settings) as lab:
        lab.provision(sites=("a", "b"), phones={"a": ["101", "102", "103", "104", "105"], "b": ["201", "202"]})
        lab.admin("ext", "bar", "105")
        lab.start()
        lab.local_uids = set()
        yield lab


def remote_records(lab, site):
    with RecordStore(lab.path("upbx-remote-site-%s.sqlite" % site)) as store:
        return store.all()


def main_records(lab):
    return json.loads(lab.admin("calls", "--json", "--limit", "100000"))


def wav(lab, number, seconds=30):
    path = lab.path(number + ".wav")
    if not os.path.exists(path):
        write_noise_wav(path, seconds, int(number))
    return path


def test_main_killed_during_local_and_inter_site_calls(lab):
    idle = lab.phone("104", "--exit-after", "120", tag="idle-104")   # used in phase 3
    rec = lab.path("local.rx.g711")
    local_callee = lab.phone("102", "--answer", "--record-g711", rec, "--exit-after-call", "--exit-after", "30",
                             tag="local-102")
    remote_callee = lab.phone("201", "--answer", "--exit-after-call", "--exit-after", "40", tag="inter-201")
    lab.wait_registered("102")
    lab.wait_registered("201")
    local_caller = lab.phone("101", "--send", wav(lab, "101"), "--call", "102", "--call-after", "0.5",
                             "--duration", "7", "--exit-after-call", "--exit-after", "30", tag="local-101")
    remote_caller = lab.phone("103", "--send", wav(lab, "103"), "--call", "201", "--call-after", "0.5",
                              "--duration", "30", "--exit-after-call", "--exit-after", "40", tag="inter-103")
    lab.wait_for(lambda: sorted(c["path"] for c in lab.status("site-a")["calls"] if c["state"] == "answered")
                 == ["local", "relay"] or sorted(c["path"] for c in lab.status("site-a")["calls"]
                                                 if c["state"] == "answered") == ["direct", "local"],
                 "both calls answered")
    time.sleep(1.5)
    killed_at = time.time()
    lab.kill("main")

    # (c) the inter-site call ends "main host lost" on both phones once the grace period is over
    ended = {}
    for proc in (remote_caller, remote_callee):
        proc.wait(30)
        ended[proc.upbx_name] = time.time() - killed_at
    for tag in ("inter-103", "inter-201"):
        calls = lab.summary(tag)["calls"]
        assert [c["cause"] for c in calls] == ["main host lost"], (tag, calls)
    print("inter-site call ended on the phones %s s after the kill" % {k: round(v, 2) for k, v in ended.items()})
    assert lab.status("site-a")["main"]["state"] != "up"

    # (a) the local call went on across the kill: contiguous timestamps, the caller's audio, in order
    local_caller.wait(30)
    local_callee.wait(30)
    caller = lab.summary("local-101")
    caller_call = caller["calls"][0]
    assert caller_call["path"] == "local" and caller_call["cause"] == "normal clearing"
    # 7 s of audio: each 20 ms frame sent, or lost by the caller's microphone while a loaded machine stalled
    # the process (not the exchange's doing); and what was sent arrived
    assert caller_call["frames_sent"] + caller["mic_frames_lost"] >= 0.97 * 7000 / 20, (caller_call, caller)
    frames = read_g711_record(rec)
    assert len(frames) >= 0.97 * caller_call["frames_sent"], (len(frames), caller_call)
    steps = {b[0] - a[0] for a, b in zip(frames, frames[1:])}
    assert steps == {20}, steps
    match, matched = audio_match(wav(lab, "101"), rec, caller_call["frames_sent"])
    assert match, matched
    lab.test_state = {"idle": idle, "killed_at": killed_at}


def test_local_calls_work_from_the_cached_directory_while_main_is_down(lab):
    assert lab.status("site-a")["main"]["state"] != "up" and lab.status("site-b")["main"]["state"] != "up"
    rows = {}
    threads = [threading.Thread(target=lambda c=c, d=d: rows.__setitem__(c, place_call(lab, c, d, "B4b", 2)))
               for c, d in (("101", "102"), ("201", "202"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for row in rows.values():
        assert row["path"] == "local" and row["cause"] == "normal clearing" and row["audio_match"], row
        assert row["media_at_hosts"]["site-a"] == 0 and row["media_at_hosts"]["site-b"] == 0
    # the cached directory still bars 105
    assert place_call(lab, "105", "101", "B4b-barred", 1, callee_phone=False)["cause"] == "not permitted"
    # kept on disk: (a)'s call and this one at site a, this one at site b
    assert len(remote_records(lab, "a")) == 2 and len(remote_records(lab, "b")) == 1
    assert lab.status("site-a")["records_pending"] == 2


def test_remote_host_restarted_registers_its_phones_within_10_s(lab):
    lab.wait_registered("104")
    lab.kill("site-a")
    # records made while the remote host was down stand for a long outage (phase 4 uploads them)
    # (real ones: the main host takes only records that could be, docs/security.md)
    start = int(time.time() * 1000) - SYNTHETIC_RECORDS * 60000
    with RecordStore(lab.path("upbx-remote-site-a.sqlite")) as store:
        for i in range(SYNTHETIC_RECORDS):
            t = start + 60000 * i
            store.add({"uid": "%016x" % (0x5e00000000000000 + i), "origin": "site-a", "caller": "101",
                       "callee": "102", "path": "local", "started_ms": t, "answered_ms": t + 500,
                       "ended_ms": t + 900, "cause": "normal clearing", "setup_ms": 120})
    restarted_at = time.time()
    lab.restart("site-a")
    lab.wait_registered("104", timeout=30)
    print("phone 104 registered again %.1f s after the remote host restarted" % (time.time() - restarted_at))
    assert lab.status("site-a")["records_pending"] == 2 + SYNTHETIC_RECORDS


def logged_in(lab, since_logins):
    status = {s: lab.status("site-" + s)["main"] for s in ("a", "b")}
    return all(v["state"] == "up" and v["logins"] > since_logins[s] for s, v in status.items())


def test_main_back_every_remote_logs_in_and_uploads_once(lab):
    expected = {r["uid"] for s in ("a", "b") for r in remote_records(lab, s)}
    assert len(expected) == 3 + SYNTHETIC_RECORDS
    logins = {s: lab.status("site-" + s)["main"]["logins"] for s in ("a", "b")}
    lab.restart("main")
    ready = time.time()
    lab.wait_for(lambda: logged_in(lab, logins), "remote hosts logged in again", timeout=30)
    print("remote hosts logged in again %.2f s after the main host was up" % (time.time() - ready))

    # the main host dies again in the middle of the upload
    deadline = time.time() + 10
    while lab.status("main")["stats"]["counters"].get("records stored", 0) < 1 and time.time() < deadline:
        time.sleep(0.002)
    lab.kill("main")
    first_round = len(main_records(lab))
    logins = {s: lab.status("site-" + s)["main"]["logins"] for s in ("a", "b")}
    lab.restart("main")
    lab.wait_for(lambda: logged_in(lab, logins), "remote hosts logged in after the second restart", timeout=30)
    lab.wait_for(lambda: all(lab.status("site-" + s)["records_pending"] == 0 for s in ("a", "b")),
                 "records uploaded", timeout=60)
    rows = [r for r in main_records(lab) if r["origin"] in ("site-a", "site-b")]
    uids = [r["uid"] for r in rows]
    assert len(uids) == len(set(uids)), "duplicates"
    assert set(uids) == expected, "lost: %s" % sorted(expected - set(uids))[:5]
    assert {r["origin"] for r in rows if r["uid"].startswith("5e")} == {"site-a"}
    # where the second kill landed depends on the machine's timing (the deterministic case is in
    # tests/test_survivability_timing.py): reported, not asserted
    print("second kill after %d of %d records; duplicates absorbed by the main host: %d"
          % (first_round, len(expected), lab.status("main")["stats"]["counters"].get("records duplicate", 0)))


def test_login_backoff_is_capped_with_jitter_and_silence_is_noticed():
    """Sans-IO: waits between login attempts double up to the cap, jitter only shortens them."""
    login = Login(wire.IE_HOST_NAME, "site-a", b"k" * 16, 7, os.urandom, keepalive_ms=20000,
                  backoff_initial_ms=500, backoff_max_ms=2000, dead_ms=5000)
    now, hellos = 0, []
    login.start(now)
    for _ in range(200):
        hellos += [now for d in login.datagrams_to_send(now) if wire.parse_full(d)[3] == wire.HELLO]
        now = login.next_timer()
        login.handle_timer(now)
    gaps = [b - a for a, b in zip(hellos, hellos[1:])]
    # HELLOs never further apart than the cap: a host that comes back is found within it
    assert max(gaps) <= 2000 and min(gaps) >= 1000, gaps
    backoffs = [g for g in gaps if g > 1000]
    assert len(backoffs) > 20 and len(set(backoffs)) > 10 and min(backoffs) >= 1500, backoffs
    # keepalive and liveness: set_keepalive tightens at once; silence past keepalive + dead is "down"
    login.state, login.last_heard_ms, login._keepalive_at = UP, now, now + 20000
    from upbx.common.reliable import Channel
    from upbx.common.session import SessionCrypto
    login.channel = Channel(SessionCrypto(b"a" * 32, b"b" * 16, b"c" * 32, b"d" * 16), 1)
    login.set_keepalive(1000, 2000, now + 100)
    assert login.next_timer() == now + 100                # a PING at once
    login.handle_timer(now + 100)
    assert login.state == UP
    login.handle_timer(now + 2999)  # heard at now: down at now + 1000 + 2000
    assert login.state == UP
    login.handle_timer(now + 3000)
    assert login.state == BACKOFF and isinstance(login.take_events()[-1], LoginDown)
