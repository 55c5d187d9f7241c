"""The grace period with real daemons and firmware phones on loopback (docs/survivability.md): the
main host stopped with SIGSTOP (its process group: workers too) during a call between sites a and b,
relayed through it (B1) or direct (B2).

1. Stopped until both remote hosts hold the call (3 s of silence), then SIGCONT: the call goes on,
   audio both ways, and ends "normal clearing" when the caller hangs up.
2. Stopped past the grace period: both phones' calls end "main host lost"; the main host run again,
   both remote hosts log in again.

Audio is checked by content (tools/lab.py audio_match: the sender's frames, in order, nothing
foreign); the times printed are figures of this machine, not assertions.
"""
import os
import signal
import time

import pytest

from upbx.tools.lab import LoopbackExchange, audio_match, read_g711_record, write_noise_wav

GRACE_S = 10          # the default main_grace_s


def _main_group(lab, sig):
    for proc in lab.procs:
        if proc.upbx_name == "main" and proc.poll() is None:
            os.killpg(proc.pid, sig)


def _held(lab, site):
    return lab.status("site-" + site)["main"]["calls_held"] == 1


def _frames(path):
    return len(read_g711_record(path)) if os.path.exists(path) else 0


def _call(lab, tag, path):
    """101 (site a) calls 201 (site b), each sending its own noise and recording what it receives."""
    procs = {}
    for number in ("201", "101"):
        wav = lab.path(number + ".wav")
        if not os.path.exists(wav):
            write_noise_wav(wav, 90, int(number))
        args = ["--send", wav, "--record-g711", lab.path("%s-%s.rx.g711" % (tag, number)),
                "--exit-after-call", "--exit-after", "150"]
        args += ["--answer"] if number == "201" else ["--call", "201", "--call-after", "0.5"]
        procs[number] = lab.phone(number, *args, tag="%s-%s" % (tag, number))
        lab.wait_registered(number)
    lab.wait_for(lambda: [c["path"] for c in lab.status("main")["calls"] if c["state"] == "answered"] == [path],
                 "the call answered, its path " + path, timeout=30)
    return procs


@pytest.mark.parametrize("direct", [False, True], ids=["relay-b1", "direct-b2"])
def test_main_host_stopped_during_an_inter_site_call(direct):
    path = "direct" if direct else "relay"
    settings = {"keepalive_s": 2, "login_backoff_initial_s": 0.5, "login_backoff_max_s": 2}
    with LoopbackExchange(direct_media=direct, remote_settings=settings) as lab:
        lab.provision(sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
        lab.start()
        try:
            # 1. stopped until both remote hosts hold the call; the call goes on afterwards
            procs = _call(lab, "short", path)
            time.sleep(1)
            stopped = time.time()
            _main_group(lab, signal.SIGSTOP)
            lab.wait_for(lambda: _held(lab, "a") and _held(lab, "b"), "both remote hosts hold the call", 30)
            _main_group(lab, signal.SIGCONT)
            stop_s = time.time() - stopped
            lab.wait_for(lambda: all(lab.status("site-" + s)["main"]["silent_ms"] is None for s in "ab"),
                         "the main host heard again", 30)
            back_s = time.time() - stopped
            rx101, rx201 = lab.path("short-101.rx.g711"), lab.path("short-201.rx.g711")
            at = (_frames(rx101), _frames(rx201))
            lab.wait_for(lambda: _frames(rx101) >= at[0] + 100 and _frames(rx201) >= at[1] + 100,
                         "2 s more audio both ways after the main host ran again", 30)
            procs["101"].stdin.write(b"!hangup\n")
            procs["101"].stdin.flush()
            for proc in procs.values():
                proc.wait(30)
            print("%s: stopped %.1f s; both remote hosts heard the main host %.1f s after the stop"
                  % (path, stop_s, back_s))
            gap = 0 if direct else int(back_s * 1000 / 20) + 50   # relayed frames of the stop may be lost
            for sender, receiver in (("101", "201"), ("201", "101")):
                call = lab.summary("short-" + sender)["calls"][0]
                assert call["cause"] == "normal clearing", call   # (a phone sees "relay": its host carries it)
                match, matched = audio_match(lab.path(sender + ".wav"), lab.path("short-%s.rx.g711" % receiver),
                                             call["frames_sent"], gap_frames=gap)
                assert match, (sender, matched, call["frames_sent"], gap)
                print("%s -> %s: %d of %d frames arrived, in order" % (sender, receiver, matched,
                                                                       call["frames_sent"]))
            for site in "ab":
                counters = lab.status("site-" + site)["stats"]["counters"]
                assert counters.get("main host silences") == 1 and counters.get("main host returns") == 1
                assert lab.status("site-" + site)["main"]["logins"] == 1   # the same session throughout

            # 2. stopped past the grace period: released "main host lost" on both phones
            procs = _call(lab, "long", path)
            time.sleep(1)
            stopped = time.time()
            _main_group(lab, signal.SIGSTOP)
            for proc in procs.values():
                proc.wait(GRACE_S + 60)
            ended_s = time.time() - stopped
            _main_group(lab, signal.SIGCONT)
            for number in ("101", "201"):
                calls = lab.summary("long-" + number)["calls"]
                assert [c["cause"] for c in calls] == ["main host lost"], (number, calls)
            print("%s: released 'main host lost' %.1f s after the stop (grace period %d s)" % (path, ended_s, GRACE_S))
            lab.wait_for(lambda: all(lab.status("site-" + s)["main"]["state"] == "up"
                                     and lab.status("site-" + s)["main"]["logins"] == 2 for s in "ab"),
                         "both remote hosts logged in again", 60)
        finally:
            _main_group(lab, signal.SIGCONT)
