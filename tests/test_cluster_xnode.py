"""Calls between clients of two nodes (docs/cluster.md, "Calls between nodes"): real PostgreSQL, Redis
and etcd (tools/cluster_lab.py), real `upbx main` nodes, real remote hosts and firmware phones.

Site a's remote host logs in to n1, site b's to n2; site c has no remote host and its phone 301 is
straight at a node. A call between two of them is switched by both nodes: the caller's node finds the
callee's node in Redis (upbx:loc:KIND:NAME) and chains the call over its trunk session to it.
"""
import contextlib
import json
import os
import socket
import time

import pytest

from upbx.common import cluster, wire
from upbx.common.session import handshake_key, seal_handshake
from upbx.tools.lab import write_noise_wav
from upbx.tools.netlab_exchange import talk
from tests.clusterkit import (TAIL_FRAMES, Call, assert_audio_arrived, engines, frames,  # noqa: F401
                              hang_up_and_compare, netlab_cluster, own_engines, start_call, wait_audio_flows)
from tests.support import micropython_binary

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")

SETTINGS = {"keepalive_s": 2, "login_backoff_initial_s": 0.5, "login_backoff_max_s": 2}


class TwoHomes(cluster_lab.ClusterExchange):
    """ClusterExchange with each remote host (and each phone straight at a node) logged in to the node
    `homes` names, not all at the first."""

    def __init__(self, engines, homes, **kwargs):
        cluster_lab.ClusterExchange.__init__(self, engines, **kwargs)
        self.homes = homes

    def start(self):
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_for(lambda: self.status(node)["cluster"]["engines"]["etcd"] == "up", "node %s joined" % node,
                          timeout=60, watch=(node,))
        if callable(self.homes):   # chosen once the nodes' ids are known
            self.homes = self.homes(self)
        for site in self.remote_sites:
            self._start_remote(site)
        self.wait_for(lambda: all(self.status("site-" + s)["main"]["state"] == "up" for s in self.remote_sites),
                      "remote hosts logged in", timeout=60, watch=tuple(self.nodes))
        # every node's trunk session to every other one up
        self.wait_for(lambda: all(t["state"] == "up" for n in self.nodes
                                  for t in self.status(n)["cluster"]["trunks"].values())
                      and all(len(self.status(n)["cluster"]["trunks"]) == len(self.nodes) - 1 for n in self.nodes),
                      "trunk sessions between the nodes up", timeout=60, watch=tuple(self.nodes))

    def _start_remote(self, site):
        from upbx.tools.lab import free_port, upbx
        port = self.remote_ports[site] = free_port()
        name = "site-" + site
        with open(self.path(name + ".toml"), "w") as f:
            f.write('[remote]\nname = "%s"\nsecret = "%s"\nmain = "127.0.0.1:%d"\nlisten = "127.0.0.1:%d"\n'
                    'control_socket = "%s"\nlog_level = "%s"\n'
                    % (name, self.secrets[name], self.node_ports[self.homes[site]], port, self.path(name + ".sock"),
                       self.log_level))
            for key, value in self.remote_settings.items():
                f.write("%s = %s\n" % (key, json.dumps(value)))
        self.spawn(name, upbx("remote", "--config", self.path(name + ".toml")))

    def host_of(self, number):
        site = self.phone_site[number]
        if site in self.remote_ports:
            return "127.0.0.1:%d" % self.remote_ports[site]
        return "127.0.0.1:%d" % self.node_ports[self.homes[number]]


@pytest.fixture(scope="module")
def lab(engines):
    """Two nodes, site a at n1, site b at n2, phone 301 (site c, no remote host) straight at n1: one for
    the module's tests (the directory is provisioned once)."""
    micropython_binary()
    lab = _lab(engines, {"a": "n1", "b": "n2", "301": "n1"})
    try:
        lab.start()
        yield lab
    finally:
        lab.close()


def _lab(engines, homes, nodes=("n1", "n2"), **kwargs):
    lab = TwoHomes(engines, homes, nodes=nodes, direct_media=False, remote_settings=SETTINGS, **kwargs)
    lab.provision(sites=("a", "b", "c"), remote_sites=("a", "b"),
                  phones={"a": ["101", "102"], "b": ["201", "202"], "c": ["301"]})
    return lab


def _talk(lab, caller, callee, seconds=3, dtmf=None):
    """caller calls callee, each sending its own noise and recording what it hears; the caller hangs up
    after `seconds`. Returns each side's summary of the call."""
    procs = {}
    for number in (callee, caller):
        wav = lab.path(number + ".wav")
        write_noise_wav(wav, 60, int(number))
        args = ["--send", wav, "--record-g711", lab.path(number + ".rx.g711"), "--record-sent-g711",
                lab.path(number + ".tx.g711"), "--exit-after-call", "--exit-after", "120"]
        if number == callee:
            args += ["--answer"]
        else:
            args += ["--call", callee, "--call-after", "1", "--duration", str(seconds)]
            if dtmf:
                args += ["--dtmf", dtmf]
        procs[number] = lab.phone(number, *args, tag="x-" + number)
        lab.wait_registered(number, timeout=60)
    for proc in procs.values():
        proc.wait(120)
    return {n: lab.summary("x-" + n)["calls"][0] for n in (caller, callee)}


def _audio_both_ways(lab, calls, caller, callee):
    """Each one's audio at the other (_talk's call: the caller hangs up, so the callee's tail is not counted)."""
    for sender, receiver in ((caller, callee), (callee, caller)):
        sent = calls[sender]["frames_sent"]
        assert sent > 50, calls[sender]
        assert_audio_arrived(lab, sender, lab.path(receiver + ".rx.g711"), sent, 10,
                             lab.path(sender + ".tx.g711") if receiver == caller else None)


def _records(engines):
    import psycopg
    with psycopg.connect(engines.postgres_dsn) as db:
        return db.execute("SELECT caller, callee, cause FROM call_records ORDER BY id").fetchall()


def test_call_between_sites_at_two_nodes_audio_both_ways_dtmf_and_one_record(lab, engines):
    import redis
    r = redis.Redis.from_url(engines.redis_url)
    try:
        ids = {n: lab.status(n)["cluster"]["node_id"] for n in lab.nodes}
        # each remote host's location key names its node
        lab.wait_for(lambda: r.get("upbx:loc:host:site-b") == str(ids["n2"]).encode(), "site b's location key")
        assert r.get("upbx:loc:host:site-a") == str(ids["n1"]).encode(), (ids, lab.status("site-a")["main"], lab.node_ports)
        assert 0 < r.ttl("upbx:loc:host:site-a") <= 30
        before = len(_records(engines))
        calls = _talk(lab, "101", "201", dtmf="42")
        for number in ("101", "201"):
            assert calls[number]["cause"] == "normal clearing", calls[number]
        _audio_both_ways(lab, calls, "101", "201")
        # the DTMF went through both nodes to the callee's remote host
        for node in lab.nodes:
            assert lab.status(node)["stats"]["counters"].get("msg DTMF", 0) >= 2, lab.status(node)["stats"]
        # each node switched its half: n1 caller <-> trunk, n2 trunk <-> callee; nothing left
        for node in lab.nodes:
            status = lab.status(node)
            assert status["calls"] == [] and status["stats"]["counters"].get("msg SETUP", 0) >= 1
        # the call's record is stored once (the caller's node keeps it)
        lab.wait_for(lambda: len(_records(engines)) == before + 1, "the call's record", timeout=30)
        time.sleep(1.5)
        rows = _records(engines)[before:]
        assert rows == [("101", "201", wire.CAUSE_NORMAL)] or [tuple(x[:2]) for x in rows] == [("101", "201")], rows
    finally:
        r.close()


def test_refusal_causes_cross_nodes_busy_and_not_registered(lab, engines):
    # 202 is not registered at its remote host (at n2): the cause comes back to 101 at n1
    proc = lab.phone("101", "--call", "202", "--call-after", "1", "--exit-after-call", "--exit-after", "60",
                     tag="x-unreg")
    lab.wait_registered("101", timeout=60)
    proc.wait(60)
    call = lab.summary("x-unreg")["calls"][0]
    assert call["cause"] == wire.CAUSE_TEXT[wire.CAUSE_UNREACHABLE], call
    assert lab.status("n2")["stats"]["counters"].get("msg SETUP", 0) >= 1
    # 201 ringing for 202 (both at site b), so busy: 101's call to 201 is refused busy by 201's phone
    answer = lab.phone("201", "--exit-after-call", "--exit-after", "60", tag="x-201")
    lab.wait_registered("201", timeout=60)
    talk = lab.phone("202", "--call", "201", "--call-after", "1", "--exit-after-call", "--exit-after", "60",
                     tag="x-202")
    lab.wait_registered("202", timeout=60)
    lab.wait_for(lambda: any(c["state"] == "alerting" for c in lab.status("site-b")["calls"]),
                 "202's call to 201 ringing", timeout=60)
    proc = lab.phone("101", "--call", "201", "--call-after", "1", "--exit-after-call", "--exit-after", "60",
                     tag="x-busy")
    proc.wait(60)
    call = lab.summary("x-busy")["calls"][0]
    assert call["cause"] == wire.CAUSE_TEXT[wire.CAUSE_BUSY], call
    # nothing left on either node of the refused calls
    for node in lab.nodes:
        assert lab.status(node)["calls"] == []
    talk.stdin.write(b"!hangup\n")
    talk.stdin.flush()
    talk.wait(60)
    answer.wait(60)


def test_phone_straight_at_one_node_and_site_at_the_other(lab, engines):
    import redis
    r = redis.Redis.from_url(engines.redis_url)
    try:
        ids = {n: lab.status(n)["cluster"]["node_id"] for n in lab.nodes}
        # 201 (site b, at n2) calls 301, a phone straight at n1: n2 finds it by its phone location key
        calls = _talk(lab, "201", "301")
        for number in ("201", "301"):
            assert calls[number]["cause"] == "normal clearing", calls[number]
        _audio_both_ways(lab, calls, "201", "301")
        assert lab.status("n2")["stats"]["counters"].get("location: setups waiting", 0) >= 1
        # 301 logged out (its phone quit): its location key is gone with it, deleted by n1
        lab.wait_for(lambda: r.get("upbx:loc:phone:301") is None, "301's location key deleted", timeout=10)
        phone = lab.phone("301", "--exit-after", "60", tag="x-301-again")
        lab.wait_registered("301", timeout=60)
        lab.wait_for(lambda: r.get("upbx:loc:phone:301") == str(ids["n1"]).encode(), "301's location key", timeout=10)
        assert 0 < r.ttl("upbx:loc:phone:301") <= 30
        phone.kill()
        phone.wait(30)
    finally:
        r.close()


def _noisy_phone(lab, number, tag, *args):
    """A firmware phone sending its own noise (seeded by its number), recording what it hears and what it
    sends (tests/clusterkit.py's records); quits after its first call."""
    wav = lab.path(number + ".wav")
    write_noise_wav(wav, 60, int(number))
    rx, tx = lab.path("%s-%s.rx.g711" % (tag, number)), lab.path("%s-%s.tx.g711" % (tag, number))
    proc = lab.phone(number, "--send", wav, "--record-g711", rx, "--record-sent-g711", tx, "--exit-after-call",
                     "--exit-after", "120", *args, tag="%s-%s" % (tag, number))
    lab.wait_registered(number, timeout=60)
    return proc, rx, tx


def _sites_current(lab, versions):
    """Wait until each site's remote host has a newer system information than `versions` ({site: version})."""
    lab.wait_for(lambda: all(lab.status("site-" + s)["sysinfo_version"] > v for s, v in versions.items()),
                 "the remote hosts have the new directory", timeout=60)


def test_a_group_call_at_one_node_rings_its_members_at_both_nodes_first_to_answer_wins(lab, engines):
    versions = {s: lab.status("site-" + s)["sysinfo_version"] for s in ("a", "b")}
    lab.admin("group", "add", "600", "--members", "102,201", "--strategy", "ring-all")
    _sites_current(lab, versions)
    before = len(_records(engines))
    setups = lab.status("n2")["stats"]["counters"].get("msg SETUP", 0)
    procs, records, sent = {}, {}, {}
    # 102 (site a, at n1 as the caller) rings and does not answer; 201 (site b, at n2) answers
    for number, args in (("201", ["--answer"]), ("102", []), ("101", ["--call", "600", "--call-after", "0.5"])):
        procs[number], records[number], sent[number] = _noisy_phone(lab, number, "g600", *args)
    talkers = ("101", "201")
    call = Call("101", "201", "g600", {n: procs[n] for n in talkers}, {n: records[n] for n in talkers}, sent)
    wait_audio_flows(lab, call, "101 and 201 talk across the nodes")
    procs["102"].wait(60)
    assert lab.summary("g600-102")["calls"][0]["cause"] == "answered elsewhere", lab.summary("g600-102")
    hang_up_and_compare(lab, call)
    assert frames(records["102"]) == 0                     # 102 heard nothing of it
    assert lab.status("n2")["stats"]["counters"].get("msg SETUP", 0) > setups   # 201 rang over n1's trunk to n2
    for node in lab.nodes:
        assert lab.status(node)["calls"] == []
    # the call's record, once, by the group call's node: the member that answered is the callee
    lab.wait_for(lambda: len(_records(engines)) > before, "the group call's record", timeout=30)
    assert [row[:2] for row in _records(engines)[before:]] == [("101", "201")]


def test_a_blind_transfer_to_a_site_at_another_node_is_routed_there_and_both_talk(lab, engines):
    from upbx.tools.lab import read_g711_record, wav_frames_g711
    before = len(_records(engines))
    n2_before = lab.status("n2")["stats"]
    # 301 (straight at n1) calls 101 (site a, at n1); 101 transfers it blind to 201 (site b, at n2)
    call, records, sent = _blind_transfer(lab, "bt", "101")
    procs = call.procs
    wait_audio_flows(lab, call, "301 and 201 talk across the nodes")
    procs["301"].stdin.write(b"!hangup\n")
    procs["301"].stdin.flush()
    for number in ("301", "201"):
        procs[number].wait(60)
        assert lab.summary("bt-" + number)["calls"][0]["cause"] == "normal clearing", lab.summary("bt-" + number)
    # 201 heard 301 alone, in order, from the first of 301's frames it got to 301's hang-up (a few in flight)
    noise = {n: {frame: i for i, frame in enumerate(wav_frames_g711(lab.path(n + ".wav")))}
             for n in ("101", "201", "301")}
    at_201 = [noise["301"].get(p) for _ts, p in read_g711_record(records["201"])]
    assert at_201 and None not in at_201 and at_201 == sorted(set(at_201)), at_201[:5]
    sent_301 = [noise["301"][p] for _ts, p in read_g711_record(sent["301"])]
    assert len(at_201) >= 0.95 * (len(sent_301) - sent_301.index(at_201[0])) - 5, (len(at_201), len(sent_301))
    # 301 heard 101, then (music while 201 rang), then 201 alone, in order, until it hung up
    at_301 = [p for _ts, p in read_g711_record(records["301"])]
    first_201 = next(i for i, p in enumerate(at_301) if p in noise["201"])
    before_201 = [noise["101"][p] for p in at_301[:first_201] if p in noise["101"]]
    assert len(before_201) >= 50 and before_201 == sorted(set(before_201))
    after = [noise["201"].get(p) for p in at_301[first_201:]]
    sent_201 = [noise["201"][p] for _ts, p in read_g711_record(sent["201"])]
    assert None not in after and after == sorted(set(after)) and after[0] == sent_201[0], (after[:3], sent_201[:3])
    assert len(after) >= 0.95 * len(sent_201) - TAIL_FRAMES, (len(after), len(sent_201))   # its tail after 301 left
    # the new party was told who it talks to (PARTY, across the nodes)
    with open(lab.path("phone-bt-201.log")) as f:
        assert "now talking to 301" in f.read()
    n2 = lab.status("n2")["stats"]
    assert n2["counters"].get("msg PARTY", 0) > n2_before["counters"].get("msg PARTY", 0), n2
    assert n2["drops"].get("unexpected message from a node") == n2_before["drops"].get("unexpected message from a node")
    for node in lab.nodes:
        assert lab.status(node)["calls"] == []
    # n1 joined and recorded every call of it, once, each linked to the first
    lab.wait_for(lambda: len(_records(engines)) >= before + 3, "the transfer's records", timeout=30)
    rows = _linked_records(engines)[before:]
    first = next(uid for uid, caller, callee, _c, _l in rows if (caller, callee) == ("301", "101"))
    assert sorted(r[1:] for r in rows) == sorted([("301", "101", "transferred", None),
                                                  ("101", "201", "transferred", first),
                                                  ("301", "201", "normal clearing", first)]), rows


def _blind_transfer(lab, tag, by):
    """201 and 101 answer, 301 calls 101 and they talk; `by` (101 or 301) transfers the other one blind to 201 and
    leaves the call ("transferred"). Returns the Call between the one that stays (its caller) and 201, and each
    phone's records of what it heard and what it sent (tests/clusterkit.py)."""
    procs, records, sent = {}, {}, {}
    for number, args in (("201", ["--answer"]), ("101", ["--answer"]),
                         ("301", ["--call", "101", "--call-after", "0.5"])):
        procs[number], records[number], sent[number] = _noisy_phone(lab, number, tag, *args)
    lab.wait_for(lambda: frames(records["101"]) >= 50, "301 and 101 talk", timeout=60)
    procs[by].stdin.write(b"!transfer 201\n")
    procs[by].stdin.flush()
    procs[by].wait(60)
    summary = lab.summary("%s-%s" % (tag, by))
    assert [c["cause"] for c in summary["calls"]][:1] == ["transferred"], summary
    stays = "301" if by == "101" else "101"
    talkers = (stays, "201")
    return Call(stays, "201", tag, {n: procs[n] for n in talkers}, {n: records[n] for n in talkers}, sent), records, sent


def _linked_records(engines):
    import psycopg
    with psycopg.connect(engines.postgres_dsn) as db:
        return db.execute("SELECT uid, caller, callee, cause, linked FROM call_records ORDER BY id").fetchall()


def test_forged_node_to_node_datagrams_are_dropped_and_counted(lab, engines):
    n1 = ("127.0.0.1", lab.node_ports["n1"])
    before = lab.status("n1")
    own = before["cluster"]["node_id"]
    other = lab.status("n2")["cluster"]["node_id"]
    (trunk,) = before["cluster"]["trunks"].values()   # n1's login to n2
    n2_before = lab.status("n2")["cluster"]["trunks"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        key = handshake_key(b"\x00" * 32)   # not a key of the cluster's
        # a node's trunk login (n2's identity) under a key that is not the cluster's: refused, no session
        s.sendto(seal_handshake(key, 0, wire.HELLO, {wire.IE_HOST_NAME: "@%d" % other, wire.IE_SESSION_INDEX: 7,
                                                     wire.IE_NONCE: b"n" * 16}), n1)
        # n1's own identity: no node logs in to itself
        s.sendto(seal_handshake(key, 0, wire.HELLO, {wire.IE_HOST_NAME: "@%d" % own,
                                                     wire.IE_SESSION_INDEX: 7, wire.IE_NONCE: b"n" * 16}), n1)
        # a signalling frame and a trunk frame to n1's login index at n2, from an address that is not n2's
        frame = bytearray(64)
        wire.pack_full_header(frame, trunk["index"], 1, 0, wire.SETUP)
        s.sendto(bytes(frame), n1)
        frame[0] |= 0xC0   # the same index as a trunk frame
        s.sendto(bytes(frame), n1)
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recvfrom(2048)   # no CHALLENGE, nothing at all
    lab.wait_for(lambda: lab.status("n1")["stats"]["drops"].get("node trunk: from another address", 0)
                 > before["stats"]["drops"].get("node trunk: from another address", 0), "the forged frame counted",
                 timeout=10)
    after = lab.status("n1")
    drops = lambda status, reason: status["stats"]["drops"].get(reason, 0)
    assert drops(after, "bad tag") > drops(before, "bad tag")                     # n2's identity, wrong key
    assert drops(after, "unknown identity") > drops(before, "unknown identity")   # its own identity
    # nothing created: the trunk session is the one it was, no call, no new login
    assert after["cluster"]["trunks"] == before["cluster"]["trunks"] and after["calls"] == []
    assert after["stats"]["counters"].get("login refused: bad tag", 0) > before["stats"]["counters"].get(
        "login refused: bad tag", 0)
    assert drops(after, "node trunk: from another address") - drops(before, "node trunk: from another address") == 2
    assert lab.status("n2")["cluster"]["trunks"] == n2_before


def test_node_killed_while_a_cross_node_call_rings_it_is_answered_at_the_successor(engines):
    """The callee's node killed -9 while 201 rings: 201 goes on ringing, 101 hearing it ring; site b's remote
    host switches to its standby session at n1 and names the ringing call, n1 takes n2's half over from Redis
    and splices it to its own; 201 answers 10 s after it began to ring, and they talk, audio both ways. Until
    session 15 a ringing call was not carried on: 101 heard "main host lost" when the trunk went silent."""
    micropython_binary()
    with cluster_lab.Engines() as own:   # a node is killed: not the module's lab
        _killed_ringing(own)


def test_node_killed_while_a_cross_node_call_rings_a_third_node_carries_its_half_to_the_answer(engines):
    """Three nodes: site a at X, site b at Y, Y's successor Z. 101 calls 201; Y killed -9 while 201 rings: site b
    switches to Z and names the ringing call, Z takes Y's half over (its leg towards X on the trunk X-Z) and names
    X's held leg at once (NODES: a ringing call sends no frame); 201 answers 6 s after it began to ring, the
    ANSWER goes site b -> Z -> X -> 101, and they talk. Until session 15 the call ended "main host lost"."""
    micropython_binary()
    with cluster_lab.Engines() as own:
        _killed_ringing(own, ("n1", "n2", "n3"), _successor_plan, answer_after=6)


def _killed_ringing(engines, nodes=("n1", "n2"), homes=None, answer_after=10):
    """101 (site a, node X) calls 201 (site b, node Y); Y is killed -9 while 201 rings; 201 answers answer_after
    seconds after it began to ring: audio both ways, nothing lost at X, one record."""
    with contextlib.closing(_lab(engines, homes or {"a": "n1", "b": "n2", "301": "n1"}, nodes)) as lab:
        lab.start()
        x, y = lab.homes["a"], lab.homes["b"]
        lab.wait_for(lambda: (lab.status("site-b")["main"]["standby"] or {}).get("state") == "up",
                     "site b's standby up", timeout=60)
        procs = {}
        for number in ("201", "101"):
            wav = lab.path(number + ".wav")
            write_noise_wav(wav, 60, int(number))
            args = ["--send", wav, "--record-g711", lab.path(number + ".rx.g711"), "--record-sent-g711",
                    lab.path(number + ".tx.g711"), "--exit-after-call", "--exit-after", "120"]
            args += ["--answer-after", str(answer_after)] if number == "201" else ["--call", "201", "--call-after", "1",
                                                                      "--duration", "3"]
            procs[number] = lab.phone(number, *args, tag="k-" + number)
            lab.wait_registered(number, timeout=60)
        lab.wait_for(lambda: any(c["state"] == "alerting" for c in lab.status(x)["calls"]), "201 ringing",
                     timeout=60)
        # Y's key of its half says it rings (written within 200 ms: a call killed before has no key to take
        # over, docs/cluster.md)
        import redis
        r = redis.Redis.from_url(engines.redis_url)
        try:
            lab.wait_for(lambda: any(json.loads(r.get(k) or b"{}").get("node") == y
                                     and json.loads(r.get(k) or b"{}").get("state") == "alerting"
                                     for k in r.keys("upbx:call:*")), "Y's key of the ringing call", timeout=30)
        finally:
            r.close()
        lab.kill(y)
        z = lab.plan["successor"] if len(lab.nodes) == 3 else x
        lab.wait_for(lambda: lab.status("site-b")["main"]["address"] == "127.0.0.1:%d" % lab.node_ports[z],
                     "site b switched to Y's successor", timeout=30)
        for proc in procs.values():
            proc.wait(120)
        calls = {n: lab.summary("k-" + n)["calls"][0] for n in ("101", "201")}
        for number in ("101", "201"):
            assert calls[number]["cause"] == "normal clearing", calls[number]
        _audio_both_ways(lab, calls, "101", "201")
        status = lab.status(x)
        assert status["calls"] == [] and status["cluster"]["calls_lost_with_a_node"] == 0
        # X's leg moved to Z's trunk: held first (X noticed Y's loss before Z named it: `claim`) or still live (Z
        # named it first: `claim_live`), as the machine's load orders the two (a loaded run saw the second)
        counters = status["stats"]["counters"]
        assert counters.get("node trunk: calls carried on", 0) + counters.get("node trunk: calls moved to another node",
                                                                              0) == 1, counters
        lab.wait_for(lambda: _records(engines), "the call's record", timeout=30)
        assert [row[:2] for row in _records(engines)] == [("101", "201")]   # recorded once, by the caller's node


def test_a_call_dialled_just_after_its_node_is_killed_is_set_up_at_the_successor(own_engines):
    engines = own_engines   # a node is killed, and the module lab provisioned these sites: not its engines
    """Site a at n1 (its standby session at n2), site b at n2. n1 is killed with -9, and 101 dials 201 at once: its
    remote host, which notices the silence only within 4 s, sends the SETUP to the dead n1. When it switches to its
    standby session it says that unacknowledged SETUP again there (docs/cluster.md "A call dialled as its node
    dies"; until session 21 the call waited for the phone's 20 s set-up timer and ended "unreachable"): 201 rings
    through n2 and answers, they talk, "normal clearing", one record."""
    micropython_binary()
    with contextlib.closing(_lab(engines, {"a": "n1", "b": "n2", "301": "n2"})) as lab:
        lab.start()
        lab.wait_for(lambda: (lab.status("site-a")["main"]["standby"] or {}).get("state") == "up",
                     "site a's standby up at n2", timeout=60)
        before = len(_records(engines))
        procs, records, sent = {}, {}, {}
        for number, args in (("201", ["--answer"]), ("101", [])):
            procs[number], records[number], sent[number] = _noisy_phone(lab, number, "sd", *args)
        lab.kill("n1")
        procs["101"].stdin.write(b"!call 201\n")   # within the seconds before site a notices: to the dead node
        procs["101"].stdin.flush()
        call = Call("101", "201", "sd", procs, records, sent)
        wait_audio_flows(lab, call, "101 and 201 talk through n2", timeout=60)
        site = lab.status("site-a")
        assert site["main"]["address"] == "127.0.0.1:%d" % lab.node_ports["n2"], site["main"]
        # the dial reached the remote host before it switched: its SETUP went to n1 and was said again at n2
        assert site["stats"]["counters"].get("calls set up again after a switch") == 1, site["stats"]["counters"]
        hang_up_and_compare(lab, call)
        lab.wait_for(lambda: len(_records(engines)) > before, "the call's record", timeout=30)
        time.sleep(1)
        assert [row[:3] for row in _records(engines)[before:]] == [("101", "201", "normal clearing")]


# the frozen image at 64K keeps a standby session at n2 and switches to it; at 48K it has too little free heap for
# one, and logs in at n1's successor in its grace period (tag, heap, the line that says which it did)
DIAL_AS_IT_DIES = [pytest.param(("sp", "64K", "switched to the standby session"), id="standby-64K"),
                   pytest.param(("gr", "48K", "next login at"), id="no-standby-48K")]


@pytest.mark.parametrize("build", DIAL_AS_IT_DIES)
def test_a_phone_at_a_node_that_dials_just_after_its_node_is_killed_sets_the_call_up_at_the_successor(
        own_engines, unix32_frozen, build):
    """301 straight at n1, the 32-bit build with upbx frozen in; 201 of site b at n2. n1 is killed with -9 and 301
    dials 201 at once: the SETUP goes to the dead n1. At 64K 301 keeps a standby session at n2: the call's tighter
    keepalive finds n1 silent within 1.5 s, it switches and says the unacknowledged SETUP again there
    (common/standby.py). At 48K it keeps none: it notices the loss within 4 s (2 s keepalive, 2 s of silence), keeps
    the call, logs in at n2 (n1's successor) with a plain handshake and says the SETUP again there (common/grace.py;
    before session 22 its call ended "unreachable"). Either way 201 answers, they talk, "normal clearing", one record
    (docs/cluster.md "A call dialled as its node dies")."""
    tag, heap, said = build
    engines = own_engines   # (as above)
    micropython_binary()
    homes = {"a": "n2", "b": "n2", "301": "n1"}
    with contextlib.closing(_lab(engines, homes, phone_args=("--micropython", unix32_frozen, "--heapsize",
                                                             heap))) as lab:
        lab.start()
        before = len(_records(engines))
        procs, records, sent = {}, {}, {}
        for number, args in (("201", ["--answer"]), ("301", [])):
            procs[number], records[number], sent[number] = _noisy_phone(lab, number, tag, *args)
        if heap == "64K":
            lab.wait_for(lambda: [p["extension"] for p in lab.status("n2")["phones"] if p.get("standby")] == ["301"],
                         "301's standby session at n2", timeout=60)
        else:
            lab.wait_for(lambda: _lines_of(lab, "phone-gr-301", "no standby session: too little free heap"),
                         "301 keeps no standby", timeout=30)
        lab.kill("n1")
        procs["301"].stdin.write(b"!call 201\n")   # before it notices: to the dead node
        procs["301"].stdin.flush()
        call = Call("301", "201", tag, procs, records, sent)
        wait_audio_flows(lab, call, "301 and 201 talk through n2", timeout=60)
        assert _lines_of(lab, "phone-%s-301" % tag, said) and not _lines_of(lab, "phone-%s-301" % tag, "unreachable")
        hang_up_and_compare(lab, call)
        print("a %s frozen phone's call dialled as its node died: set up at n2; peak live %s" % (
            heap, lab.summary("%s-301" % tag)["heap"].get("peak_live")))
        lab.wait_for(lambda: len(_records(engines)) > before, "the call's record", timeout=30)
        time.sleep(1)
        assert [row[:3] for row in _records(engines)[before:]] == [("301", "201", "normal clearing")]


def _lines_of(lab, name, words):
    with open(lab.path(name + ".log"), "rb") as f:
        return [line for line in f.read().decode("utf-8", "replace").splitlines() if words in line]


def _successor_plan(lab):
    """Homes for three nodes such that site b's node has a successor that is neither site a's node nor
    its own: site a at X, site b at Y, succ(Y) = Z (the lost node's half goes to a third node)."""
    ids = {n: lab.status(n)["cluster"]["node_id"] for n in lab.nodes}
    lab.wait_for(lambda: all(len(lab.status(n)["cluster"]["nodes"]) == 3 for n in lab.nodes), "every node known")
    by_id = {v: k for k, v in ids.items()}
    for y in lab.nodes:
        z = by_id[cluster.successor(ids[y], sorted(ids.values()))]
        x = next(n for n in lab.nodes if n not in (y, z))
        lab.plan = {"a": x, "b": y, "successor": z}
        return {"a": x, "b": y, "301": x}


@contextlib.contextmanager
def _callee_node_killed(nodes, homes, kill="b"):
    """On engines of the test's own (a node is killed: not the module's lab), 101 (site a) calls 201 (site b,
    at another node), both sending noise, and the callee's node (kill="a": the caller's) is killed with -9.
    Yields (lab, engines, the clusterkit.Call, the node killed, seconds from the kill to audio at both phones
    again); the lab and the engines are closed at the end, however the test ends."""
    with cluster_lab.Engines() as engines, contextlib.closing(_lab(engines, homes, nodes)) as lab:
        lab.start()
        lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("state") == "up"
                                 for s in "ab"), "the remote hosts' standby sessions up", timeout=60)
        call = _answered_call(lab)
        killed = time.time()
        lost = lab.homes[kill]
        lab.kill(lost)
        wait_audio_flows(lab, call, "audio both ways after the kill", timeout=40)
        yield lab, engines, call, lost, time.time() - killed


def _answered_call(lab):
    """101 (site a) calls 201 (site b), both sending noise and recording what they hear (clusterkit.start_call,
    tag "k"): the Call once it is answered, its audio flows both ways and its keys are in Redis."""
    call = start_call(lab, "101", "201", tag="k")
    home_b = lab.homes["b"]
    lab.wait_for(lambda: any(c["state"] == "answered" for c in lab.status(home_b)["calls"]), "the call answered",
                 timeout=60)
    lab.wait_for(lambda: all(n > 50 for n in call.frames().values()), "audio both ways", timeout=30)
    time.sleep(1)   # the call keys written (every 200 ms)
    return call


def test_node_killed_during_a_cross_node_call_its_successor_carries_it_on(engines):
    """Two nodes: site b's node killed -9; site b switches to its standby, n1 (the caller's node), which
    takes the lost half over from Redis and splices it into its own half: the call is n1's alone."""
    micropython_binary()
    with _callee_node_killed(("n1", "n2"), {"a": "n1", "b": "n2", "301": "n1"}) as (lab, _own, call, lost, back):
        status = lab.status("n1")
        assert status["stats"]["counters"].get("node trunk: calls carried on") == 1
        assert status["cluster"]["calls_lost_with_a_node"] == 0
        assert [c["callee"] for c in status["calls"]] == ["201"]
        gaps = hang_up_and_compare(lab, call)
        print("kill -9 of the callee's node (2 nodes): audio both ways again %.1f s after the kill; gap at 101 "
              "%d ms, at 201 %d ms" % (back, gaps["101"], gaps["201"]))


def test_caller_node_killed_during_a_cross_node_call_the_callee_node_carries_it_on(engines):
    """Two nodes, the caller's node killed -9 this time: site a switches to n2, which splices n1's half
    into its own; the call goes on and its record is stored once, by n2."""
    micropython_binary()
    with _callee_node_killed(("n1", "n2"), {"a": "n1", "b": "n2", "301": "n1"}, kill="a") as (lab, own, call, lost,
                                                                                                back):
        status = lab.status("n2")
        assert status["stats"]["counters"].get("node trunk: calls carried on") == 1
        assert [c["caller"] for c in status["calls"]] == ["101"]
        before = len(_records(own))
        gaps = hang_up_and_compare(lab, call)
        lab.wait_for(lambda: len(_records(own)) == before + 1, "the call's record", timeout=30)
        time.sleep(1)
        assert [r[:2] for r in _records(own)[before:]] == [("101", "201")]
        print("kill -9 of the caller's node (2 nodes): audio both ways again %.1f s after the kill; gap at 101 "
              "%d ms, at 201 %d ms" % (back, gaps["101"], gaps["201"]))


def test_caller_node_stopped_and_run_again_the_call_is_recorded_once(engines):
    """Two nodes, the caller's node n1 stopped (SIGSTOP) during a call rather than killed: site a switches to
    n2, which splices n1's half into its own and carries the call on; n1 runs again (SIGCONT) with its copy,
    which the standby login ends there, and records it. Both records are of one call under one uid (n1's,
    from its SETUP and its key), so PostgreSQL keeps one. Until session 15 n2 recorded the spliced call under
    its own uid: two records of one call."""
    micropython_binary()
    import signal
    import redis
    with cluster_lab.Engines() as own, contextlib.closing(_lab(own, {"a": "n1", "b": "n2", "301": "n1"})) as lab:
        lab.start()
        lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("state") == "up"
                                 for s in "ab"), "the remote hosts' standby sessions up", timeout=60)
        call = _answered_call(lab)
        r = redis.Redis.from_url(own.redis_url)
        try:
            uid = next(v["uid"] for v in (json.loads(r.get(k) or b"{}") for k in r.keys("upbx:call:*"))
                       if v.get("node") == "n1" and v.get("caller") == "101")
        finally:
            r.close()
        n1 = [p for p in lab.procs if p.upbx_name == "n1"][0]
        os.killpg(n1.pid, signal.SIGSTOP)
        try:
            lab.wait_for(lambda: lab.status("n2")["stats"]["counters"].get("node trunk: calls carried on") == 1,
                         "n2 spliced n1's half", timeout=30)
        finally:
            os.killpg(n1.pid, signal.SIGCONT)
        lab.wait_for(lambda: lab.status("n1")["calls"] == [], "n1 back, its copy of the call ended", timeout=60)
        wait_audio_flows(lab, call, "audio both ways after n1 came back")
        hang_up_and_compare(lab, call)
        lab.wait_for(lambda: lab.status("n2")["calls"] == [], "the call over", timeout=30)
        # both nodes ended their copies and wrote a record of it (n1 its own, n2 the spliced call), under n1's uid
        with open(lab.path("n1.log")) as f:
            assert "call-ended call=%s" % uid in f.read()
        lab.wait_for(lambda: lab.status("n1")["cluster"]["records_waiting"] == 0
                     and lab.status("n2")["cluster"]["records_waiting"] == 0, "both nodes' records stored", timeout=30)
        import psycopg
        with psycopg.connect(own.postgres_dsn) as db:
            rows = db.execute("SELECT uid, caller, callee FROM call_records").fetchall()
        assert [(u, a, b) for u, a, b in rows] == [(uid, "101", "201")], rows


def test_node_killed_during_a_cross_node_call_a_third_node_carries_its_half_on(engines):
    """Three nodes: site a at X, site b at Y, Y's successor Z. Y killed -9: site b switches to Z, which
    takes Y's half over from Redis (its leg towards X on the trunk X-Z); X moves its leg to Z's trunk at
    Z's first frame. Audio both ways again, the call ends "normal clearing"."""
    micropython_binary()
    with _callee_node_killed(("n1", "n2", "n3"), _successor_plan) as (lab, _own, call, lost, back):
        x, z = lab.plan["a"], lab.plan["successor"]
        # X's leg moved to Z's trunk: held first (`claim`) or, when Z's first frame came before X noticed Y's loss,
        # still live (`claim_live`), as the machine's load orders the two (a loaded CI run saw the second)
        counters = lab.status(x)["stats"]["counters"]
        assert counters.get("node trunk: calls carried on", 0) + counters.get("node trunk: calls moved to another node",
                                                                              0) == 1, counters
        assert lab.status(z)["stats"]["counters"].get("calls taken over") == 1
        assert [c["callee"] for c in lab.status(z)["calls"]] == ["201"]
        gaps = hang_up_and_compare(lab, call)
        print("kill -9 of the callee's node (3 nodes, its half to a third): audio both ways again %.1f s after "
              "the kill; gap at 101 %d ms, at 201 %d ms" % (back, gaps["101"], gaps["201"]))


def test_a_call_joined_at_a_node_that_is_killed_goes_on_between_the_two_other_nodes(own_engines):
    engines = own_engines   # a node is killed, and the module lab provisioned these sites: not its engines
    """Three nodes: phone 301 straight at X, site a at Y, site b at Z. 301 calls 101 and transfers it blind to 201:
    X joins the call, its media Y -> X -> Z, and no client of X is left in it. X is killed with -9: Y and Z each
    hold their leg towards X, find X's call by it in Redis, and the lower of the two splices its half to a leg on
    the trunk Y-Z (docs/cluster.md "A call joined by a transfer at a node that is lost"; until now tested in
    memory only). 101 and 201 hear each other again, in order, with one gap; the call ends "normal clearing" and is
    recorded once, linked to the call it continues."""
    from upbx.tools.lab import read_g711_record, wav_frames_g711
    micropython_binary()
    homes = {"301": "n1", "a": "n2", "b": "n3"}
    with contextlib.closing(_lab(engines, homes, ("n1", "n2", "n3"))) as lab:
        lab.start()
        before = len(_records(engines))
        call, records, sent = _blind_transfer(lab, "jk", "301")
        procs, talkers = call.procs, ("101", "201")
        wait_audio_flows(lab, call, "101 and 201 talk, joined at n1", timeout=60)
        assert [c["callee"] for c in lab.status("n1")["calls"]] == ["201"], lab.status("n1")["calls"]
        time.sleep(1)   # the joined call's key written (within 20 ms of the join, docs/cluster.md)
        killed = time.time()
        lab.kill("n1")
        wait_audio_flows(lab, call, "101 and 201 talk again after n1's kill", timeout=40)
        back = time.time() - killed
        procs["101"].stdin.write(b"!hangup\n")
        procs["101"].stdin.flush()
        for number in talkers:
            procs[number].wait(60)
            assert lab.summary("jk-" + number)["calls"][0]["cause"] == "normal clearing", lab.summary("jk-" + number)
        noise = {n: {frame: i for i, frame in enumerate(wav_frames_g711(lab.path(n + ".wav")))}
                 for n in ("101", "201", "301")}
        # 201 heard 101 alone, in order, with one gap (the kill), to 101's hang-up
        at_201 = [noise["101"].get(p) for _ts, p in read_g711_record(records["201"])]
        assert at_201 and None not in at_201 and at_201 == sorted(set(at_201)), at_201[:5]
        # 101 heard 301, then 201 alone, in order
        at_101 = [p for _ts, p in read_g711_record(records["101"])]
        first_201 = next(i for i, p in enumerate(at_101) if p in noise["201"])
        after = [noise["201"].get(p) for p in at_101[first_201:]]
        assert None not in after and after == sorted(set(after)), after[:5]
        for heard, sender in ((at_201, "101"), (after, "201")):
            sent_ = [noise[sender][p] for _ts, p in read_g711_record(sent[sender])]
            lost = len(sent_) - sent_.index(heard[0]) - len(heard)
            gap = max(b - a for a, b in zip(heard, heard[1:]))
            print("n1 killed under a joined call: %s's audio at the other again %.1f s after the kill, gap %d ms, "
                  "%d frames not heard" % (sender, back, gap * 20, lost))
            assert lost <= gap + TAIL_FRAMES, (sender, lost, gap)   # the gap, and the tail after 101 hung up
        counters = {n: lab.status(n)["stats"]["counters"] for n in ("n2", "n3")}
        assert sum(c.get("calls taken over", 0) for c in counters.values()) == 1, counters   # by the lower node
        for node in ("n2", "n3"):
            assert lab.status(node)["calls"] == [], lab.status(node)["calls"]
        lab.wait_for(lambda: any(r[3] == "normal clearing" for r in _linked_records(engines)[before:]),
                     "the joined call's record", timeout=30)
        time.sleep(1)
        rows = _linked_records(engines)[before:]
        first = next(uid for uid, caller, callee, _c, _l in rows if (caller, callee) == ("301", "101"))
        ended = [r for r in rows if r[3] == "normal clearing"]
        assert len(ended) == 1 and ended[0][4] == first and set(ended[0][1:3]) == {"101", "201"}, rows


def test_a_held_call_whose_node_is_lost_drops_its_media_to_the_lost_trunk_and_ends_after_the_hold(engines):
    """The callee's node and the callee's remote host killed -9 together: nobody takes the lost half over.
    The caller's node holds the call (HOLD_MS, 10 s) while 101 goes on talking; its voice for the trunk to
    the lost node, whose login is down (no keys), is dropped and counted (it raised AttributeError in the
    flush once: `internal-error ... where=flush` right after `node-lost`); then 101 hears "main host lost"."""
    micropython_binary()
    # nodes are killed: not the module's lab
    with cluster_lab.Engines() as own, contextlib.closing(_lab(own, {"a": "n1", "b": "n2", "301": "n1"})) as lab:
        lab.start()
        call = _answered_call(lab)
        lab.kill("site-b")   # first: it must not switch to its standby at n1
        lab.kill("n2")
        call.procs["101"].wait(90)
        ended = lab.summary("k-101")["calls"][0]
        assert ended["cause"] == wire.CAUSE_TEXT[wire.CAUSE_MAIN_LOST], ended
        status = lab.status("n1")
        assert status["calls"] == [] and status["cluster"]["calls_lost_with_a_node"] == 1
        assert status["stats"]["drops"].get("media to a link that is down", 0) >= 1, status["stats"]["drops"]
        with open(lab.path("n1.log")) as f:
            log = f.read()
        assert "node-lost" in log and "internal-error" not in log, [
            line for line in log.splitlines() if "internal-error" in line][:3]
        call.procs["201"].kill()
        call.procs["201"].wait(30)


class TwoHomesNetlab(cluster_lab.ClusterNetlabExchange):
    """ClusterNetlabExchange with site a's remote host at n1 and site b's at n2 (each behind its NAT)."""

    def start(self):
        from upbx.tools.lab import upbx
        sites, self.remote_sites = self.remote_sites, ("a",)
        try:
            cluster_lab.ClusterNetlabExchange.start(self)   # the nodes, and site a's remote host at n1
        finally:
            self.remote_sites = sites
        ip, port = self.node_addresses["n2"]
        name = "site-b"
        self.remote_ports["b"] = cluster_lab.NETLAB_REMOTE_PORT
        with open(self.path(name + ".toml"), "w") as f:
            f.write('[remote]\nname = "%s"\nsecret = "%s"\nmain = "%s:%d"\nlisten = "%s:%d"\ncontrol_socket = "%s"\n'
                    'log_level = "%s"\nkeepalive_s = %d\n'
                    % (name, self.secrets[name], ip, port, self.remote_ip("b"), cluster_lab.NETLAB_REMOTE_PORT,
                       self.path(name + ".sock"), self.log_level, self.keepalive_s))
            for key, value in self.remote_settings.items():   # rebalance_s = 0: site b stays at n2
                f.write("%s = %s\n" % (key, json.dumps(value)))
        self.spawn(name, upbx("remote", "--config", self.path(name + ".toml")), node="site-b/remote")
        self.wait_for(lambda: self.status("site-b")["main"]["state"] == "up", "site b at n2", timeout=60)


def test_in_the_network_lab_a_call_between_sites_behind_nat_at_two_nodes():
    """The network lab (root): nodes n1 and n2 on their own Internet addresses (198.18.0.11 and .12),
    the engines beside them, sites a and b each behind a cone NAT router (nftables masquerade) with its
    remote host and a firmware phone; site a at n1, site b at n2. 101 calls 201: the media goes site a
    -> n1 -> n2 -> site b and back, each remote host's only through the NAT mapping it opened to its node."""
    with netlab_cluster("upxx", dict(nat="cone", sites=("a", "b"), remote_sites=("a", "b"), phones=1),
                        exchange=TwoHomesNetlab, nodes=("n1", "n2"), direct_media=False, keepalive_s=2) as (_l, _e, ex):
        ex.provision(sites=("a", "b"), remote_sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
        ex.start()
        assert ex.status("site-a")["main"]["address"] == "%s:%d" % ex.node_addresses["n1"]
        assert ex.status("site-b")["main"]["address"] == "%s:%d" % ex.node_addresses["n2"]
        ex.wait_for(lambda: all(t["state"] == "up" for n in ex.nodes
                                for t in ex.status(n)["cluster"]["trunks"].values()), "trunk sessions up", timeout=60)
        calls = _talk(ex, "101", "201", seconds=3)
        for number in ("101", "201"):
            assert calls[number]["cause"] == "normal clearing", calls[number]
        _audio_both_ways(ex, calls, "101", "201")
        for node in ex.nodes:   # each node switched a half
            assert ex.status(node)["stats"]["counters"].get("msg ANSWER", 0) >= 1


class DirectNetlab(TwoHomesNetlab):
    """TwoHomesNetlab whose media counters are each node's and each remote host's (talk() reads them)."""

    def media_counters(self):
        return {daemon: self.status(daemon)["stats"]["counters"].get("media in", 0)
                for daemon in list(self.nodes) + ["site-" + s for s in self.remote_sites]}


def _record_path(ex, caller):
    """The path of caller's last call record, once the caller's node has stored it in PostgreSQL."""
    found = []

    def stored():
        rows = [r for r in json.loads(ex.admin("calls", "--json", "--limit", "5")) if r["caller"] == caller]
        found[:] = rows[:1]
        return bool(rows)
    ex.wait_for(stored, "the call record in PostgreSQL", timeout=30)
    return found[0]["path"]


def _talk_direct(ex, caller, callee, seconds):
    """talk (tools/netlab_exchange.py), and once the callee has heard 1.5 s: each daemon's media counter while
    the callee hears 50 frames more (the direct path is up by then: what the nodes count meanwhile they relayed)."""
    def window(ex):
        before = ex.media_counters()
        record = [p for p in sorted(os.listdir(ex.dir)) if p.endswith("-%s.rx.g711" % callee)][-1]
        size = os.path.getsize(os.path.join(ex.dir, record))
        ex.wait_for(lambda: os.path.getsize(os.path.join(ex.dir, record)) >= size + 50 * 164,
                    "50 frames more at %s" % callee, timeout=20)
        after = ex.media_counters()
        return {k: after[k] - before.get(k, 0) for k in after}
    return talk(ex, caller, callee, seconds=seconds, during=window)


def _heard_both_ways(row, caller, callee):
    """Each phone heard the other's frames as the other sent them, in order, nothing foreign, no gap (the
    callee's last frames, after the caller hung up, may miss the caller; the caller's last one or two may
    reach the callee after its release did, by the other path)."""
    for direction in ("%s->%s" % (caller, callee), "%s->%s" % (callee, caller)):
        leg = row[direction]
        assert leg["received"] and not leg["foreign"] and leg["in_order"] and not leg["missing_head"] \
            and not leg["missing_inside"], (direction, leg)
        assert leg["match"] or (direction.startswith(caller) and leg["missing_tail"] <= 2), (direction, leg)
        assert leg["gap_ms"] == 0, (direction, leg)
    assert row["call"]["cause"] == "normal clearing", row["call"]


def test_in_the_network_lab_sites_behind_cone_nat_at_two_nodes_talk_directly():
    """B2 across nodes: sites a (at n1) and b (at n2) behind cone NAT routers. Each node offers its site the
    other site at the public address the other node sees (the nodes tell each other over their trunk); the
    remote hosts punch and send the media straight to each other. While the callee hears 50 frames neither
    node counts a frame in; the pair runs between the routers' public addresses; the record says direct."""
    with netlab_cluster("upxd", dict(nat="cone", sites=("a", "b"), remote_sites=("a", "b"), phones=1),
                        exchange=DirectNetlab, nodes=("n1", "n2"), keepalive_s=2) as (_l, _e, ex):
        ex.provision(sites=("a", "b"), remote_sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
        ex.start()
        ex.wait_for(lambda: all(t["state"] == "up" for n in ex.nodes
                                for t in ex.status(n)["cluster"]["trunks"].values()), "trunk sessions up", timeout=60)
        row = _talk_direct(ex, "101", "201", seconds=4)
        print("media in, whole call:", row["media_at_hosts"], "while 201 heard 50 frames:", row["during"])
        _heard_both_ways(row, "101", "201")
        assert row["during"]["n1"] == 0 and row["during"]["n2"] == 0, row["during"]
        assert row["during"]["site-a"] >= 45 and row["during"]["site-b"] >= 45, row["during"]
        assert ex.status("site-a")["pairs"]["site-b"] == {"up": True, "address": "198.18.2.1:4570"}
        assert ex.status("site-b")["pairs"]["site-a"] == {"up": True, "address": "198.18.1.1:4570"}
        assert _record_path(ex, "101") == "direct"
        for node in ex.nodes:   # each node offered its own site, and nothing was dropped as a bad offer
            assert ex.log_lines(node, "punch-offer"), node
            assert not ex.status(node)["stats"]["drops"].get("node trunk: bad direct offer"), node
        # B7 during such a call: site a's router changes its public address 2 s into the call. n1 learns it
        # (site a's pair-silence probe), re-offers, and tells n2, which offers site b the new address: the
        # pair never goes down, neither node relays a frame, the audio gap stays within B7's second
        from tests.test_nat import change_and_watch
        row = talk(ex, "101", "201", seconds=4, during_after_s=2.0, during=change_and_watch("a", "198.18.1.102"))
        print("B7 direct call across nodes: n1 learned in %s ms; gaps %d ms (201->101), %d ms (101->201); media in %s"
              % (row["during"], row["201->101"]["gap_ms"], row["101->201"]["gap_ms"], row["media_at_hosts"]))
        assert row["during"] is not None, "n1 never saw site a's new address"
        for direction in ("101->201", "201->101"):
            leg = row[direction]
            assert leg["received"] and not leg["foreign"] and leg["in_order"], (direction, leg)
            assert (leg["missing_head"] + leg["missing_inside"]) * 20 <= 1000, (direction, leg)
            assert leg["gap_ms"] <= 1000, (direction, leg)
            # the end: the caller's last frame or two may pass its release; the callee's after the release not
            assert leg["missing_tail"] <= (2 if direction == "101->201" else 25), (direction, leg)
        assert row["media_at_hosts"]["n1"] == 0 and row["media_at_hosts"]["n2"] == 0, row["media_at_hosts"]
        assert ex.status("site-b")["pairs"]["site-a"]["address"] == "198.18.1.102:4570"
        assert ex.status("site-a")["main"]["logins"] == 1 and ex.status("site-b")["main"]["logins"] == 1


def test_in_the_network_lab_sites_at_two_nodes_without_a_direct_path_are_relayed():
    """The fallback: site b behind a symmetric NAT, so the punches never meet; both remote hosts report relay
    after the punch timeout and both nodes relay every frame over their trunk (the media was relayed from the
    first frame: a pair is used only once it is up), audio both ways with no gap, the record says relay."""
    with netlab_cluster("upxr", dict(nat={"a": "cone", "b": "symmetric"}, sites=("a", "b"), remote_sites=("a", "b"),
                                     phones=1),
                        exchange=DirectNetlab, nodes=("n1", "n2"), keepalive_s=2) as (_l, _e, ex):
        ex.provision(sites=("a", "b"), remote_sites=("a", "b"), phones={"a": ["101"], "b": ["201"]})
        ex.start()
        ex.wait_for(lambda: all(t["state"] == "up" for n in ex.nodes
                                for t in ex.status(n)["cluster"]["trunks"].values()), "trunk sessions up", timeout=60)
        row = _talk_direct(ex, "101", "201", seconds=4)
        print("media in, whole call:", row["media_at_hosts"], "while 201 heard 50 frames:", row["during"])
        _heard_both_ways(row, "101", "201")
        # each node relayed the 50 frames the callee heard meanwhile (and the callee's, the other way)
        assert row["during"]["n1"] >= 50 and row["during"]["n2"] >= 50, row["during"]
        assert row["media_at_hosts"]["n1"] >= 280 and row["media_at_hosts"]["n2"] >= 280, row["media_at_hosts"]
        assert ex.status("site-a")["pairs"]["site-b"]["up"] is False
        relay = ex.log_lines("site-a", "relay-path") + ex.log_lines("site-b", "relay-path")
        assert relay and all("within 2000 ms" in line for line in relay), relay
        assert _record_path(ex, "101") == "relay"


def _revoke_lease(engines, node, seconds):
    """Revoke node's membership lease in etcd for `seconds` (each new one as it appears), as a lease that
    lapsed would end (a node starved of CPU for lease_s, or cut off from etcd alone): etcd lists it no
    more, though it runs on; it joins again when left alone. Returns how many leases were revoked."""
    import asyncio
    import aetcd

    async def revoke():
        host, port = engines.etcd_endpoint.split(":")
        client = aetcd.Client(host=host, port=int(port))
        await client.connect()
        revoked = 0
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                item = await client.get(b"/upbx/nodes/" + node.encode())
                if item is not None and item.lease:
                    await client.revoke_lease(item.lease)
                    revoked += 1
                await asyncio.sleep(0.05)
        finally:
            await client.close()
        return revoked
    return asyncio.run(revoke())


def test_a_node_etcd_no_longer_lists_but_that_answers_on_its_trunk_keeps_its_calls(own_engines):
    """A node whose membership lease lapsed (revoked here) is not lost while it answers on its trunk
    session: the other node keeps the trunk and every call over it (counted "unlisted but alive", no
    node-lost), frames cross both ways before, during and after, and the node joins again by itself.
    (Dropping the trunk at once cost `upbx bench cluster` a fifth of its frames on a loaded machine.)"""
    engines = own_engines
    from upbx.tools import bench_cluster, bench_net
    lab = cluster_lab.ClusterExchange(engines, nodes=("n1", "n2"), direct_media=False, log_level="info")
    pair = None
    try:
        lab.provision(sites=("a", "b"), remote_sites=("a", "b"), phones={"a": ["10000%d" % i for i in range(4)],
                                                                          "b": ["20000%d" % i for i in range(4)]})
        lab.remote_sites = ()   # sites a and b: emulated remote hosts (tools/bench_net.py), a at n1, b at n2
        lab.start()
        lab.wait_for(lambda: all(len(lab.status(x)["cluster"]["nodes"]) == 2 for x in lab.nodes), "both nodes listed",
                     timeout=60)
        secrets = {n: bytes.fromhex(lab.secrets[n]) for n in ("site-a", "site-b")}
        pair = bench_net.TrunkPair(bench_cluster._Node(("127.0.0.1", lab.node_ports["n1"]), secrets), 4,
                                   main_b=bench_cluster._Node(("127.0.0.1", lab.node_ports["n2"]), secrets))
        r = bench_net.run_trunk_load(pair, pair.calls, 1, 1472, quiet_s=1.0, longest_s=30)
        assert r["received"] == r["sent"] > 0
        n2_id = str(lab.status("n2")["cluster"]["node_id"])
        import threading
        revoked = []
        revoker = threading.Thread(target=lambda: revoked.append(_revoke_lease(engines, "n2", 4)))
        revoker.start()
        try:
            lab.wait_for(lambda: n2_id not in lab.status("n1")["cluster"]["nodes"], "n1 no longer lists n2", timeout=30)
            # frames cross both ways while etcd does not list n2
            r = bench_net.run_trunk_load(pair, pair.calls, 1, 1472, quiet_s=1.0, longest_s=30)
        finally:
            revoker.join()
        assert revoked[0] >= 1
        assert r["received"] == r["sent"] > 0
        assert lab.status("n1")["stats"]["counters"].get("node trunk: unlisted but alive", 0) >= 1
        lab.wait_for(lambda: n2_id in lab.status("n1")["cluster"]["nodes"], "n2 listed again", timeout=60)
        r = bench_net.run_trunk_load(pair, pair.calls, 1, 1472, quiet_s=1.0, longest_s=30)
        assert r["received"] == r["sent"] > 0
        for x in lab.nodes:
            status = lab.status(x)
            assert len(status["calls"]) == 4, (x, status["calls"])
            assert not status["stats"]["counters"].get("node trunk: calls lost"), x
        with open(lab.path("n1.log")) as f:
            log = f.read()
        assert "node-lost" not in log and "unlisted-alive" in log
        with open(lab.path("n2.log")) as f:
            assert "the lease expired" in f.read()   # n2 noticed, and joined again
    finally:
        if pair is not None:
            pair.close()
        lab.close()


def test_a_phone_logging_in_again_after_its_node_died_takes_its_location_key_over(own_engines):
    """A phone straight at a node with no standby says nothing of its home at login (docs/cluster.md): its
    node writes its location key unless another node has it. A key naming a node whose loss this node saw
    (listed in etcd, then gone from it with its trunk silent: killed -9 here) is taken over, whether the
    phone logged in before the loss was known (taken when it is) or after (at once), not left naming the
    dead node until it expires (calls to the phone meanwhile went to the dead node). A key naming a node
    this node never saw (absent from its list, as every node is from a node that has not read etcd yet) is
    left alone."""
    engines = own_engines
    import redis
    from upbx.tools import bench_net
    lab = cluster_lab.ClusterExchange(engines, nodes=("n1", "n2"), direct_media=False)
    r = redis.Redis.from_url(engines.redis_url)
    clients = []

    def log_in(number, node):
        c = bench_net.Client(wire.IE_EXTENSION, number, bytes.fromhex(lab.secrets[number]),
                             ("127.0.0.1", lab.node_ports[node]))
        c.start(bench_net._now_ms())
        clients.append(c)
        bench_net.pump([c], lambda: c.up)

    def left():   # n2's writes that found another node's key and left it
        return lab.status("n2")["stats"]["counters"].get("location: another node's key left", 0)
    try:
        lab.provision(sites=("c",), remote_sites=(), phones={"c": ["381", "382", "383"]})
        lab.start(one_by_one=True)
        ids = {n: lab.status(n)["cluster"]["node_id"] for n in lab.nodes}
        assert 9 not in ids.values()
        n1, n2 = (str(ids[n]).encode() for n in ("n1", "n2"))
        # 382's key names node 9, which n2 never saw (absent from its list): left alone (n2's only client)
        r.set("upbx:loc:phone:382", "9", ex=600)
        log_in("382", "n2")
        lab.wait_for(lambda: left() >= 1, "n2 left 382's key to node 9", timeout=30)
        assert r.get("upbx:loc:phone:382") == b"9"
        # 381 at n1; then at n2 too (a phone that noticed its node's loss before n2 did): n1 is alive, its
        # key is left alone
        log_in("381", "n1")
        lab.wait_for(lambda: r.get("upbx:loc:phone:381") == n1, "381's key names n1", timeout=30)
        was = left()
        log_in("381", "n2")
        lab.wait_for(lambda: left() > was, "n2 left a key", timeout=30)
        assert r.get("upbx:loc:phone:381") == n1
        lab.kill("n1")
        # the keys n1 wrote, as if written just before it died, with a life long enough that their expiry
        # is not what moves them
        r.set("upbx:loc:phone:381", n1, ex=600)
        r.set("upbx:loc:phone:383", n1, ex=600)
        lab.wait_for(lambda: ids["n1"] in lab.status("n2")["cluster"]["lost_nodes"], "n2 saw n1's loss", timeout=60)
        # 381, logged in before: its key taken over once n2 knew
        lab.wait_for(lambda: r.get("upbx:loc:phone:381") == n2, "381's key taken over by n2", timeout=30)
        assert 0 < r.ttl("upbx:loc:phone:381") <= 30
        # 383 logs in after: taken over at its login
        log_in("383", "n2")
        lab.wait_for(lambda: r.get("upbx:loc:phone:383") == n2, "383's key taken over by n2", timeout=30)
        assert 0 < r.ttl("upbx:loc:phone:383") <= 30
        # node 9 was never seen to go: 382's key still names it, though n2 wrote it again with 381's when it
        # saw n1's loss (one pipeline)
        assert r.get("upbx:loc:phone:382") == b"9"
        with open(lab.path("n2.log")) as f:
            assert "node-gone node=%d" % ids["n1"] in f.read()
    finally:
        for c in clients:
            c.sock.close()
        lab.close()
        r.close()
