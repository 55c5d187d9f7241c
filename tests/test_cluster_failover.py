"""Failover of a main host cluster (issue 16 item 3, docs/cluster.md "Failover"): real nodes on real
PostgreSQL, Redis and etcd (tools/cluster_lab.py), real remote hosts, firmware phones.

Three nodes; the remote hosts of sites a, b and c log in to n1 and keep a standby session to n1's
successor, called n2 below (common/cluster.successor, from the cluster_nodes of their WELCOME).
A call from 101 (site a) to 201 (site b), relayed by n1, each phone sending its own noise and recording what it receives. n1 killed with -9: both remote hosts switch to their
standby session (no new handshake), n2 takes the call over from Redis at its first frames, the
relayed audio comes back both ways and the call ends "normal clearing" when the caller hangs up.
Idle site c moves to n2 the same way. Audio is checked by content (the sender's frames, in order,
nothing foreign); the gap in each phone's received audio is the failover time, printed as a figure.
"""
import json
import os
import time

import pytest

from upbx.common import cluster
from upbx.tools.lab import audio_match, read_g711_record, write_noise_wav
from tests.support import micropython_binary, require_root

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")

NODES = ("n1", "n2", "n3")
SETTINGS = {"keepalive_s": 2, "login_backoff_initial_s": 0.5, "login_backoff_max_s": 2}


@pytest.fixture(scope="module")
def engines():
    problem = cluster_lab.missing()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    with cluster_lab.Engines() as engines:
        yield engines


def survivor(lab, lost="n1"):
    """The node every client of lost keeps its standby session to (common/cluster.successor)."""
    ids = {n: lab.status(n)["cluster"]["node_id"] for n in NODES}
    by_id = {v: k for k, v in ids.items()}
    return by_id[cluster.successor(ids[lost], sorted(ids.values()))]


def _gap_ms(path):
    """The longest gap in a recorded stream (sender timestamps of consecutive frames received)."""
    frames = read_g711_record(path)
    return max((b[0] - a[0] for a, b in zip(frames, frames[1:])), default=0)


def _frames(path):
    return len(read_g711_record(path)) if os.path.exists(path) else 0


def test_node_killed_during_a_relayed_call_survivor_takes_it_over(engines):
    micropython_binary()
    import redis
    r = redis.Redis.from_url(engines.redis_url)
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES, standby=True, direct_media=False,
                                      remote_settings=SETTINGS)
    try:
        lab.provision(sites=("a", "b", "c"), remote_sites=("a", "b", "c"),
                      phones={"a": ["101"], "b": ["201"], "c": ["301"]})
        lab.start()
        succ = survivor(lab)   # "n2" below: the successor of n1, where its clients keep their standby
        n2 = "127.0.0.1:%d" % lab.node_ports[succ]
        lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("address") == n2 and lab.status(
            "site-" + s)["main"]["standby"]["state"] == "up" for s in "abc"),
                     "every remote host's standby session at n2 (all the nodes known) up", timeout=60)
        assert all(lab.status("site-" + s)["main"]["standby"]["address"] == n2 for s in "abc")
        standby_logins = {s: lab.status("site-" + s)["main"]["standby"]["logins"] for s in "abc"}

        procs = {}
        for number in ("201", "101"):
            wav = lab.path(number + ".wav")
            write_noise_wav(wav, 120, int(number))
            args = ["--send", wav, "--record-g711", lab.path(number + ".rx.g711"), "--exit-after-call",
                    "--exit-after", "300"]
            args += ["--answer"] if number == "201" else ["--call", "201", "--call-after", "0.5"]
            procs[number] = lab.phone(number, *args, tag="failover-" + number)
            lab.wait_registered(number, timeout=60)

        def answered_key():
            for key in r.scan_iter(match="upbx:call:*"):
                call = json.loads(r.get(key) or b"{}")
                if call.get("caller") == "101" and call.get("state") == "answered" and not call.get("ended"):
                    return call
            return None

        lab.wait_for(lambda: answered_key() is not None, "the answered call's key in Redis", timeout=60)
        call = answered_key()
        assert call["node"] == "n1" and call["path"] == "relay"
        key = "upbx:call:" + call["uid"]
        time.sleep(1)
        before = {n: _frames(lab.path(n + ".rx.g711")) for n in ("101", "201")}
        killed = time.time()
        lab.kill("n1")

        # both remote hosts on n2, on the session that was their standby; n2 has the call
        lab.wait_for(lambda: all(lab.status("site-" + s)["main"]["address"] == n2 for s in "ab"),
                     "sites a and b switched to n2", timeout=30)
        switched = time.time() - killed
        lab.wait_for(lambda: [c["callee"] for c in lab.status(succ)["calls"]] == ["201"], "n2 took the call over",
                     timeout=30)
        taken = time.time() - killed
        assert lab.status(succ)["stats"]["counters"].get("calls taken over") == 1
        # relayed audio back both ways: 2 s more of each phone's audio at the other
        lab.wait_for(lambda: all(_frames(lab.path(n + ".rx.g711")) >= before[n] + 100 for n in ("101", "201")),
                     "relayed audio after the failover", timeout=30)
        lab.wait_for(lambda: lab.status("site-c")["main"]["address"] == n2, "idle site c re-homed to n2", timeout=30)
        rehomed = time.time() - killed
        for site in "abc":
            main = lab.status("site-" + site)["main"]
            # no new handshake: the session on n2 is the standby logged in before the kill
            assert main["state"] == "up" and main["logins"] == standby_logins[site], (site, main)
            assert lab.status("site-" + site)["stats"]["counters"].get("standby switches") == 1

        procs["101"].stdin.write(b"!hangup\n")
        procs["101"].stdin.flush()
        for proc in procs.values():
            proc.wait(60)
        gaps = {}
        for sender, receiver in (("101", "201"), ("201", "101")):
            call = lab.summary("failover-" + sender)["calls"][0]
            assert call["cause"] == "normal clearing", call       # no call dropped
            gaps[receiver] = _gap_ms(lab.path(receiver + ".rx.g711"))
            match, matched = audio_match(lab.path(sender + ".wav"), lab.path(receiver + ".rx.g711"),
                                         call["frames_sent"], gap_frames=gaps[receiver] // 20 + 5)
            assert match, (sender, matched, call["frames_sent"], gaps[receiver])
        print("kill -9 of n1: sites switched after %.1f s, n2 had the call after %.1f s, idle site re-homed after "
              "%.1f s; relayed audio gap at 101: %d ms, at 201: %d ms" % (switched, taken, rehomed, gaps["101"],
                                                                         gaps["201"]))
        # n2 carried the call to its end: its key is n2's, marked ended
        lab.wait_for(lambda: json.loads(r.get(key) or b"{}").get("ended"), "the call's key marked ended", timeout=30)
        assert json.loads(r.get(key))["node"] == succ
    finally:
        lab.close()
        r.close()


def test_in_the_network_lab_node_killed_relayed_audio_back_idle_site_rehomed():
    """The same in the network lab (root): three nodes on three Internet addresses, the engines beside
    them, sites a, b and c behind their NAT routers; kill -9 of the node relaying the a-b call. No
    address moves: the remote hosts send to n2's own address, through their NAT (a mapping of its
    own, opened by the standby session's keepalives)."""
    require_root()
    micropython_binary()
    from upbx.tools.netlab import Lab
    from upbx.tools.netlab_exchange import gaps_ms
    lab = Lab("upxf%s-" % os.urandom(2).hex())
    engines = ex = r = None
    try:
        lab.up(nat="cone", sites=("a", "b", "c"), remote_sites=("a", "b", "c"), phones=1)
        engines = cluster_lab.engines_in(lab)
        ex = cluster_lab.ClusterNetlabExchange(lab, engines, nodes=NODES, direct_media=False, keepalive_s=2,
                                               remote_settings={"login_backoff_initial_s": 0.5,
                                                                "login_backoff_max_s": 2})
        ex.provision(sites=("a", "b", "c"), remote_sites=("a", "b", "c"),
                     phones={"a": ["101"], "b": ["201"], "c": ["301"]})
        ex.start()
        succ = survivor(ex)
        n2 = "%s:%d" % ex.node_addresses[succ]
        ex.wait_for(lambda: all((ex.status("site-" + s)["main"]["standby"] or {}).get("address") == n2 and ex.status(
            "site-" + s)["main"]["standby"]["state"] == "up" for s in "abc"),
                    "every remote host's standby session at n2 (all the nodes known) up", timeout=60)
        standby_logins = {s: ex.status("site-" + s)["main"]["standby"]["logins"] for s in "abc"}
        import redis
        with lab.inside("main"):
            r = redis.Redis.from_url(engines.redis_url)
            r.ping()   # connected from inside the namespace: the socket stays there

        records, procs = {}, {}
        for number in ("201", "101"):
            wav = ex.path(number + ".wav")
            write_noise_wav(wav, 120, int(number))
            records[number] = ex.path(number + ".rx.g711")
            args = ["--send", wav, "--record-g711", records[number], "--exit-after-call", "--exit-after", "300"]
            args += ["--answer"] if number == "201" else ["--call", "201", "--call-after", "0.5"]
            procs[number] = ex.phone(number, *args, tag="netlab-" + number)
            ex.wait_registered(number, timeout=60)

        def live_call():
            for key in r.scan_iter(match="upbx:call:*"):
                call = json.loads(r.get(key) or b"{}")
                if call.get("caller") == "101" and call.get("state") == "answered" and not call.get("ended"):
                    return call
            return None

        ex.wait_for(lambda: live_call() is not None, "the answered call's key in Redis", timeout=60)
        relaying = live_call()["node"]
        assert relaying == "n1" and live_call()["path"] == "relay"
        time.sleep(1)
        before = {n: _frames(records[n]) for n in records}
        killed = time.time()
        ex.kill(relaying)
        ex.wait_for(lambda: [c["callee"] for c in ex.status(succ)["calls"]] == ["201"], "n2 took the call over",
                    timeout=30)
        taken = time.time() - killed
        ex.wait_for(lambda: all(_frames(records[n]) >= before[n] + 100 for n in records),
                    "relayed audio after the failover", timeout=30)
        ex.wait_for(lambda: ex.status("site-c")["main"]["address"] == n2, "idle site c re-homed to n2", timeout=30)
        rehomed = time.time() - killed
        for site in "abc":
            main = ex.status("site-" + site)["main"]
            assert main["address"] == n2 and main["logins"] == standby_logins[site], (site, main)
        procs["101"].stdin.write(b"!hangup\n")
        procs["101"].stdin.flush()
        for proc in procs.values():
            proc.wait(60)
        gaps = {}
        for sender, receiver in (("101", "201"), ("201", "101")):
            call = ex.summary("netlab-" + sender)["calls"][0]
            assert call["cause"] == "normal clearing", call      # no call dropped
            gaps[receiver] = gaps_ms(records[receiver])[0]
            match, matched = audio_match(ex.path(sender + ".wav"), records[receiver], call["frames_sent"],
                                         gap_frames=gaps[receiver] // 20 + 5)
            assert match, (sender, matched, call["frames_sent"], gaps[receiver])
        print("network lab, kill -9 of %s: n2 had the call after %.1f s, idle site re-homed after %.1f s; relayed "
              "audio gap at 101: %d ms, at 201: %d ms" % (relaying, taken, rehomed, gaps["101"], gaps["201"]))
    finally:
        if r is not None:
            r.close()
        if ex is not None:
            ex.close()
        if engines is not None:
            engines.close()
        lab.down()


def test_node_stopped_and_run_again_leaves_the_taken_over_call_to_the_survivor(engines):
    """n1 stopped (SIGSTOP) rather than killed: the remote hosts switch to n2, which takes the call
    over; n1 run again (SIGCONT) still has its copy, and gets the remote hosts' standby logins: it ends
    its copy, but neither phone hears of it, and the Redis key stays n2's, live, until the call ends."""
    micropython_binary()
    import signal
    import redis
    r = redis.Redis.from_url(engines.redis_url)
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES, standby=True, direct_media=False,
                                      remote_settings=SETTINGS)
    try:
        lab.provision(sites=("d", "e"), remote_sites=("d", "e"), phones={"d": ["402"], "e": ["502"]})
        lab.start()
        succ = survivor(lab)   # "n2" below: the successor of n1, where its clients keep their standby
        lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("state") == "up" for s in "de"),
                     "standby sessions up", timeout=60)
        procs, records = {}, {}
        for number in ("502", "402"):
            wav = lab.path(number + ".wav")
            write_noise_wav(wav, 120, int(number))
            records[number] = lab.path(number + ".rx.g711")
            args = ["--send", wav, "--record-g711", records[number], "--exit-after-call", "--exit-after", "300"]
            args += ["--answer"] if number == "502" else ["--call", "502", "--call-after", "0.5"]
            procs[number] = lab.phone(number, *args, tag="stopped-" + number)
            lab.wait_registered(number, timeout=60)

        def live_call():
            for key in r.scan_iter(match="upbx:call:*"):
                call = json.loads(r.get(key) or b"{}")
                if call.get("caller") == "402" and not call.get("ended") and call.get("state") == "answered":
                    return call
            return None

        lab.wait_for(lambda: live_call() is not None, "the call's key", timeout=60)
        key = "upbx:call:" + live_call()["uid"]
        n1 = [p for p in lab.procs if p.upbx_name == "n1"][0]
        os.killpg(n1.pid, signal.SIGSTOP)
        try:
            lab.wait_for(lambda: [c["callee"] for c in lab.status(succ)["calls"]] == ["502"], "n2 took the call over",
                         timeout=30)
            lab.wait_for(lambda: json.loads(r.get(key))["node"] == succ, "the key n2's", timeout=10)
        finally:
            os.killpg(n1.pid, signal.SIGCONT)
        # n1 runs again: the standby sessions log in to it anew, it ends its own copy of the call
        lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("state") == "up" for s in "de")
                     and lab.status("n1")["calls"] == [], "n1 back, its copy of the call ended", timeout=60)
        time.sleep(1)   # n1's Redis writer had a turn (every 200 ms)
        value = json.loads(r.get(key))
        assert value["node"] == succ and not value["ended"], value
        before = {n: _frames(records[n]) for n in records}
        lab.wait_for(lambda: all(_frames(records[n]) >= before[n] + 100 for n in records),
                     "audio both ways after n1 came back", timeout=30)
        procs["402"].stdin.write(b"!hangup\n")
        procs["402"].stdin.flush()
        for proc in procs.values():
            proc.wait(60)
        for sender, receiver in (("402", "502"), ("502", "402")):
            call = lab.summary("stopped-" + sender)["calls"][0]
            assert call["cause"] == "normal clearing", call
            gap = _gap_ms(records[receiver])
            match, matched = audio_match(lab.path(sender + ".wav"), records[receiver], call["frames_sent"],
                                         gap_frames=gap // 20 + 5)
            assert match, (sender, matched, call["frames_sent"], gap)
        lab.wait_for(lambda: json.loads(r.get(key) or b"{}").get("ended"), "the key marked ended by n2", timeout=30)
        assert json.loads(r.get(key))["node"] == succ
    finally:
        lab.close()
        r.close()
