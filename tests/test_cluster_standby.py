"""Standby sessions at a cluster's nodes (issue 16 item 3, docs/cluster.md "Failover"): what a node
lists and what a client gives up, on real engines, real `upbx main` nodes and a real remote host
(tools/cluster_lab.py). Every wait is for a state (a status, a log line), never for a time; the
timeouts only guard against a hang.
"""
import os

import pytest

from upbx.common import cluster
from upbx.tools.lab import free_port

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")

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


def add_node(lab, node):
    """One more node, started on the lab's engines."""
    lab.nodes.append(node)
    lab.node_ports[node] = free_port()
    lab._write_config(node)
    lab.start_node(node)
    lab.wait_for(lambda: lab.status(node)["cluster"]["engines"]["etcd"] == "up", "node %s joined" % node, timeout=60,
                 watch=(node,))


def by_name(state):
    return {n["name"]: n for n in state["nodes"]}


def logged_out_lines(lab, node, name):
    """The node's log lines saying name logged out (a BYE), not that it expired."""
    with open(lab.path(node + ".log"), "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()
    return [line for line in lines if " logout " in line and "name=%s " % name in line + " "
            and "reason=logged out" in line]


def test_cluster_status_tells_home_from_standby_and_a_standby_given_up_is_logged_out(engines):
    lab = cluster_lab.ClusterExchange(engines, nodes=("n1", "n2"), remote_settings=SETTINGS)
    try:
        lab.provision(sites=("a",), remote_sites=("a",), phones={"a": ["101"]})
        lab.start()
        ids = {n: lab.status(n)["cluster"]["node_id"] for n in lab.nodes}
        # site a logs in to n1 (its configuration) and keeps its standby at n1's successor, n2
        lab.wait_for(lambda: (lab.status("site-a")["main"]["standby"] or {}).get("state") == "up", "standby up",
                     timeout=30)
        lab.wait_for(lambda: by_name(lab.cluster_status())["n2"]["standby_sites"] == ["a"],
                     "n2 lists site a as a standby", timeout=30)
        state = by_name(lab.cluster_status())
        assert state["n1"]["sites"] == ["a"] and state["n1"]["standby_sites"] == []
        assert state["n2"]["sites"] == [] and state["n2"]["standby"] == 1
        assert [h.get("standby") for h in lab.status("n2")["remote_hosts"]] == [True]
        assert [h.get("standby") for h in lab.status("n1")["remote_hosts"]] == [None]
        # nodes join until one of them is n1's successor: site a's standby moves there, and n2, whose
        # session site a gave up, is told so (BYE) and stops listing it at once (its expiry is 75 s)
        extra = 0
        while cluster.successor(ids["n1"], sorted(ids.values())) == ids["n2"]:
            extra += 1
            assert extra <= 6, "no node joined ahead of n2 in n1's order"
            node = "n%d" % (2 + extra)
            add_node(lab, node)
            ids[node] = lab.status(node)["cluster"]["node_id"]
        new = {v: k for k, v in ids.items()}[cluster.successor(ids["n1"], sorted(ids.values()))]
        lab.wait_for(lambda: lab.status("site-a")["main"]["standby"]["address"] == "127.0.0.1:%d" % lab.node_ports[new]
                     and lab.status("site-a")["main"]["standby"]["state"] == "up", "standby at %s" % new, timeout=30)
        lab.wait_for(lambda: not lab.status("n2")["remote_hosts"], "n2 no longer lists site a", timeout=20)
        assert logged_out_lines(lab, "n2", "site-a")
        assert lab.status("site-a")["stats"]["counters"]["standby sessions logged out"] == 1
        lab.wait_for(lambda: by_name(lab.cluster_status())[new]["standby_sites"] == ["a"],
                     "%s lists site a as a standby" % new, timeout=30)
        state = by_name(lab.cluster_status())
        assert state["n2"]["sites"] == [] and state["n2"]["standby_sites"] == []
        assert state["n1"]["sites"] == ["a"]
    finally:
        lab.close()
