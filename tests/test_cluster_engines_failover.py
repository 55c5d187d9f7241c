"""Engine failover under calls (issue 16 item 3, docs/cluster.md "Engine failover"): PostgreSQL run by
Patroni (a primary and a synchronous streaming replica, etcd as its DCS) and Redis with a replica
and Sentinel (tools/cluster_lab.py ReplicatedEngines); three real nodes whose connection strings
name both PostgreSQL servers (`target_session_attrs=read-write`) and Redis's Sentinel; real remote
hosts and firmware phones; one remote host the test plays itself to upload call records.

"A PostgreSQL or Redis failover touches no login or call and loses or duplicates no record": the
primary is killed as a machine is lost (kill -9 of its server and of its Patroni, or of Redis),
during a relayed call. Every wait is for a state; the failover times are printed figures."""
import json
import time

import pytest

from upbx.common import wire
from tests.clusterkit import (require_engines, acknowledged, hang_up_and_compare, live_call, record, start_call, survivor, upload,
                              wait_audio_flows)
from tests.intruder import Intruder
from tests.support import micropython_binary

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")

NODES = ("n1", "n2", "n3")
SETTINGS = {"keepalive_s": 2, "login_backoff_initial_s": 0.5, "login_backoff_max_s": 2}


@pytest.fixture(scope="module")
def engines():
    require_engines(cluster_lab.missing_replicated)
    with cluster_lab.ReplicatedEngines() as engines:
        yield engines


@pytest.fixture(scope="module")
def lab(engines):
    micropython_binary()
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES, standby=True, direct_media=False,
                                      remote_settings=SETTINGS)
    try:
        lab.provision(sites=("a", "b", "c", "d"), remote_sites=("a", "b", "d"),
                      phones={"a": ["101", "102"], "b": ["201", "202"], "c": ["301"], "d": ["401"]})
        lab.remote_sites = ("a", "b")     # site-d's remote host is the test's own device (Intruder)
        lab.start()
        lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("state") == "up"
                                 for s in "ab"), "standby sessions up", timeout=60)
        yield lab
    finally:
        lab.close()


def sql(dsn, query, *args):
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, args or None).fetchall()


def refused_logins(lab):
    return {n: {k: v for k, v in lab.status(n)["stats"]["counters"].items() if k.startswith("login refused")}
            for n in NODES}


def primary_redis(engines):
    import redis
    return redis.Redis(port=engines.redis_primary(), socket_timeout=2)


def test_postgres_failover_under_a_call_loses_no_record_and_refuses_no_login(lab, engines):
    old = engines.postgres_primary()
    assert engines.synchronous()          # a commit is on the replica before a node acknowledges it
    logins = {s: lab.status("site-" + s)["main"]["logins"] for s in "ab"}
    refused = refused_logins(lab)
    call = start_call(lab, "101", "201", tag="pg")
    r = primary_redis(engines)
    lab.wait_for(lambda: live_call(r, "101") is not None, "the answered call's key", timeout=60)
    uid = live_call(r, "101")["uid"]
    uids = {"before": "0e9f0000000000b1", "during": "0e9f0000000000d1", "after": "0e9f0000000000a1"}
    with Intruder.host("site-d", lab.secrets["site-d"], ("127.0.0.1", lab.node_ports["n1"])) as host:
        host.log_in()
        upload(host, record(uids["before"]))
        host.pump_until(lambda: acknowledged(host, uids["before"]), "the record before, acknowledged")
        wait_audio_flows(lab, call, "audio before the failover")

        killed = time.time()
        lost = engines.kill_postgres_primary()
        assert lost == old
        upload(host, record(uids["during"]))   # stored (and acknowledged) once a primary takes it
        # logins need no PostgreSQL: a phone straight at n2 logs in while there is no primary
        with Intruder.phone("301", lab.secrets["301"], ("127.0.0.1", lab.node_ports["n2"])) as phone:
            phone.log_in()
        wait_audio_flows(lab, call, "audio while PostgreSQL has no primary")
        lab.wait_for(lambda: engines.postgres_primary() not in (None, old), "the replica promoted", timeout=60)
        promoted = time.time() - killed
        host.pump_until(lambda: acknowledged(host, uids["during"]), "the record during, acknowledged", timeout=60)
        stored = time.time() - killed
        upload(host, record(uids["after"]))
        host.pump_until(lambda: acknowledged(host, uids["after"]), "the record after, acknowledged", timeout=30)
        # the remote host uploads what it sent before again (as after a login): a duplicate, not a row
        upload(host, record(uids["before"]))
        host.pump_until(lambda: sum(1 for t, ies in host.inbox if t == wire.RECORDS and bytes(
            ies.get(wire.IE_CALL_ID, b"")) == bytes.fromhex(uids["before"])) == 2, "the duplicate acknowledged")
    new = engines.postgres_primary()
    # the directory follows NOTIFYs from the new primary, at every node
    lab.admin("ext", "add", "350", "--site", "c")
    version = sql(engines.member_dsn(new), "SELECT max(version) FROM sysinfo")[0][0]
    for node in NODES:
        lab.wait_for(lambda: lab.status(node)["sysinfo_version"] == version, node + " refreshed from the new primary",
                     timeout=30)
        assert lab.status(node)["cluster"]["engines"]["postgres"] == "up"
    gaps = hang_up_and_compare(lab, call)      # the call went on: each side's audio at the other
    # the node's own record of the relayed call (written after the failover), and the uploads: once each
    lab.wait_for(lambda: sql(engines.member_dsn(new), "SELECT count(*) FROM call_records WHERE uid = %s", uid)
                 == [(1,)], "the relayed call's record in the new primary", timeout=30)
    rows = sql(engines.member_dsn(new), "SELECT uid, count(*) FROM call_records WHERE uid = ANY(%s) GROUP BY uid",
               list(uids.values()))
    assert sorted(rows) == sorted((u, 1) for u in uids.values())
    # nothing logged in again, no login refused
    assert {s: lab.status("site-" + s)["main"]["logins"] for s in "ab"} == logins
    assert refused_logins(lab) == refused
    r.close()
    print("PostgreSQL failover (kill -9 of %s and its Patroni): %s primary after %.1f s, the record uploaded "
          "during it stored and acknowledged after %.1f s; relayed audio gaps %d / %d ms"
          % (lost, new, promoted, stored, gaps["101"], gaps["201"]))


def test_redis_failover_keys_rewritten_and_a_later_takeover_works(lab, engines):
    """Redis's primary killed during a relayed call: Sentinel promotes the replica; every node connects
    to it and rewrites its live calls' keys; then n1 (relaying the call) is killed and its successor
    takes the call over from the new Redis primary; the call goes on to its normal end."""
    logins = {s: lab.status("site-" + s)["main"]["logins"] for s in "ab"}
    call = start_call(lab, "102", "202", tag="redis")
    r = primary_redis(engines)
    lab.wait_for(lambda: live_call(r, "102") is not None, "the answered call's key", timeout=60)
    value = live_call(r, "102")
    assert value["node"] == "n1"
    key = "upbx:call:" + value["uid"]
    lab.wait_for(lambda: r.ttl(key) < 3598, "the key's time to live going down", timeout=30)
    ttl = r.ttl(key)
    old_port = engines.redis_primary()
    killed = time.time()
    engines.kill_redis_primary()
    lab.wait_for(lambda: engines.redis_primary() not in (None, old_port), "Sentinel promoted the replica",
                 timeout=60)
    promoted = time.time() - killed
    r.close()
    r = primary_redis(engines)
    # n1 wrote the key again on its new connection: a full time to live, the call's legs
    lab.wait_for(lambda: (r.ttl(key) or 0) > ttl, "n1 rewrote the call's key on the new primary", timeout=60)
    rewritten = time.time() - killed
    value = json.loads(r.get(key))
    assert value["node"] == "n1" and not value["ended"] and set(value["legs"]) == {"a", "b"}
    for node in NODES:
        lab.wait_for(lambda: lab.status(node)["cluster"]["engines"]["redis"] == "up", node + " on the new Redis")
    wait_audio_flows(lab, call, "audio after the Redis failover")
    assert {s: lab.status("site-" + s)["main"]["logins"] for s in "ab"} == logins

    # a takeover after the Redis failover: from the new primary's keys
    succ = survivor(lab, "n1")
    lab.kill("n1")
    lab.wait_for(lambda: [c["callee"] for c in lab.status(succ)["calls"]] == ["202"], "the successor took the call",
                 timeout=30)
    wait_audio_flows(lab, call, "relayed audio after n1 was killed")
    gaps = hang_up_and_compare(lab, call)
    lab.wait_for(lambda: json.loads(r.get(key) or b"{}").get("ended"), "the key marked ended", timeout=30)
    assert json.loads(r.get(key))["node"] == succ
    r.close()
    print("Redis failover (kill -9 of the primary): Sentinel named the replica after %.1f s, the call's key "
          "rewritten after %.1f s; then kill -9 of n1: taken over, relayed audio gaps %d / %d ms"
          % (promoted, rewritten, gaps["102"], gaps["202"]))
