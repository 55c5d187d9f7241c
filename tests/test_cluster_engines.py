"""A node's engines under stress, with real nodes, remote hosts and firmware phones (docs/cluster.md):

- PostgreSQL hung (SIGSTOP of its server) while a node relays a call and a remote host uploads a call
  record: the node's loop goes on relaying (its writes are on a thread of their own,
  host/cluster/replica.py Writer); the record is stored and acknowledged once PostgreSQL runs again.
- A fourth node joins under calls: nobody logs in again, no call drops (audio both ways on every
  call), only the sites whose rendezvous order now starts with the new node would move (at their
  next login: 1/N of them), and the only handshakes are the standby sessions that move to it (the
  remote hosts' and those of the phones straight at a node).
"""
import pytest

from upbx.common import cluster
from tests.clusterkit import (acknowledged, engines, hang_up_and_compare, record, sql, start_call,  # noqa: F401
                              upload, wait_audio_flows)
from tests.intruder import Intruder
from tests.support import micropython_binary

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")

NODES = ("n1", "n2", "n3")
SETTINGS = {"keepalive_s": 2, "login_backoff_initial_s": 0.5, "login_backoff_max_s": 2}


@pytest.fixture(scope="module")
def lab(engines):
    """Nodes n1, n2, n3 numbered 1, 2, 3 (started one by one on the module's new etcd); the remote hosts
    and site e's phones log in to n2, whose standby successor is n3 among 1..3 and n4 once it joins
    (common/cluster.successor), so the join moves every site's standby session; site h's rendezvous
    order starts with node 1 among 1..3 and with node 4 among 1..4 (site a's and b's: node 1 both)."""
    micropython_binary()
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES + ("n4",), home="n2", standby=True, direct_media=False,
                                      remote_settings=SETTINGS)
    lab.nodes = list(NODES)    # n4's main.toml is written; it starts in the test that adds it
    try:
        lab.provision(sites=("a", "b", "h", "d", "e"), remote_sites=("a", "b", "h", "d"),
                      phones={"a": ["101", "102"], "b": ["201", "202"], "h": ["801"], "d": ["401"],
                              "e": ["501", "502", "503"]})
        lab.remote_sites = ("a", "b", "h")     # site-d's remote host is the test's own device (Intruder)
        lab.start(one_by_one=True)
        assert [lab.status(n)["cluster"]["node_id"] for n in NODES] == [1, 2, 3]
        yield lab
    finally:
        lab.close()


def handshakes(lab, nodes):
    """Sessions the nodes opened for clients so far (a RESPONSE accepted: keys derived), summed: less the
    nodes' own trunk logins to each other (docs/cluster.md "Calls between nodes": each node logs in to
    every other, a joining node to the others and they to it), each of which is a handshake at its node."""
    status = {n: lab.status(n) for n in nodes}
    keys = sum(s["stats"]["counters"].get("handshake keys derived", 0) for s in status.values())
    trunks = sum(t["logins"] for s in status.values() for t in (s["cluster"].get("trunks") or {}).values())
    return keys - trunks


def standby_phones(lab, node):
    """The extensions whose standby session is at node, sorted."""
    return sorted(p["extension"] for p in lab.status(node)["phones"] if p.get("standby"))


def logged_out(lab, node, name):
    """The node's log lines saying name logged out (a BYE), not that it expired."""
    with open(lab.path(node + ".log"), "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()
    return [line for line in lines if " logout " in line and "name=%s " % name in line + " "
            and "reason=logged out" in line]


def test_node_relays_on_while_postgres_hangs_and_stores_the_record_after(lab, engines):
    call = start_call(lab, "101", "201", tag="hung")
    wait_audio_flows(lab, call, "audio before PostgreSQL hangs", frames_more=50)
    uid = "0e9f00000000057a"
    with Intruder.host("site-d", lab.secrets["site-d"], ("127.0.0.1", lab.node_ports["n2"])) as host:
        host.log_in()
        engines.pause_postgres()      # SIGSTOP of the server and its backends: every query hangs
        try:
            upload(host, record(uid))                # n2's writer waits on the INSERT
            host.pump_until(lambda: host.acked >= host.login.channel.next_seq, "n2 received the upload")
            # the loop goes on: 4 s more of relayed audio both ways, n2 answers its control socket, a phone
            # logs in; the record is not acknowledged (not committed)
            wait_audio_flows(lab, call, "relayed audio while PostgreSQL hangs", frames_more=200)
            with Intruder.phone("503", lab.secrets["503"], ("127.0.0.1", lab.node_ports["n2"])) as phone:
                phone.log_in()
            host.pump(0.2)
            assert not acknowledged(host, uid)
        finally:
            engines.resume_postgres()
        host.pump_until(lambda: acknowledged(host, uid), "the record acknowledged once PostgreSQL runs", timeout=60)
    assert sql(engines, "SELECT count(*) FROM call_records WHERE uid = %s", uid) == [(1,)]
    hang_up_and_compare(lab, call)
    # and the node's own record of the call, written by the writer after the call
    lab.wait_for(lambda: sql(engines, "SELECT count(*) FROM call_records WHERE origin = 'main' AND caller = '101'")
                 == [(1,)], "the relayed call's record in PostgreSQL", timeout=30)


def test_rendezvous_moves_only_what_the_new_node_takes():
    """Of 10,000 sites, adding a 4th node to 3 moves 1/4 of their first choices, each to the new node."""
    names = [cluster.identity("host", "site-%d" % i) for i in range(10000)]
    moved = [n for n in names if cluster.rendezvous(n, [1, 2, 3])[0] != cluster.rendezvous(n, [1, 2, 3, 4])[0]]
    assert all(cluster.rendezvous(n, [1, 2, 3, 4])[0] == 4 for n in moved)
    assert 0.23 < len(moved) / len(names) < 0.27


def test_a_fourth_node_joins_under_calls(lab):
    relayed = start_call(lab, "102", "202", tag="join-relay")   # sites a and b, relayed by n2
    direct = start_call(lab, "501", "502", tag="join-direct")   # phones straight at n2 (site e)
    wait_audio_flows(lab, relayed, "audio before the join", frames_more=50)
    wait_audio_flows(lab, direct, "audio before the join", frames_more=50)
    sites = ("a", "b", "h")
    # the phones straight at n2 (site e, in the direct call) keep their standby at n2's successor, n3
    lab.wait_for(lambda: standby_phones(lab, "n3") == ["501", "502"], "501's and 502's standby sessions at n3",
                 timeout=60)
    before = {s: lab.status("site-" + s) for s in sites}
    ids = {n: lab.status(n)["cluster"]["node_id"] for n in NODES}
    shakes = handshakes(lab, NODES)

    lab.nodes.append("n4")
    lab.start_node("n4")
    ids["n4"] = lab.status("n4")["cluster"]["node_id"]
    everyone = sorted(ids.values())
    lab.wait_for(lambda: all(sorted(n for n, _ in lab.status("site-" + s)["cluster"]["nodes"]) == everyone
                             for s in sites), "every remote host knows n4 (NODES)", timeout=60)
    wait_audio_flows(lab, relayed, "relayed audio after the join")
    wait_audio_flows(lab, direct, "direct audio after the join")
    after = {s: lab.status("site-" + s) for s in sites}
    moved = 0
    for s in sites:
        home_before = before[s]["cluster"]["nodes"][0][0]
        home_after = after[s]["cluster"]["nodes"][0][0]
        # where the site would log in next moved only if it is to the new node (rendezvous)
        assert home_after == home_before or home_after == ids["n4"], s
        moved += home_after != home_before
        # nothing moved now: the same session at the same node, no login
        assert after[s]["main"]["address"] == before[s]["main"]["address"]
        assert after[s]["main"]["logins"] == before[s]["main"]["logins"]
    by_port = {port: node for node, port in lab.node_ports.items()}
    home = {s: by_port[int(after[s]["main"]["address"].rsplit(":", 1)[1])] for s in sites}
    to_n4 = [s for s in sites if cluster.successor(ids[home[s]], everyone) == ids["n4"]]
    lab.wait_for(lambda: all((lab.status("site-" + s)["main"]["standby"] or {}).get("address") ==
                             "127.0.0.1:%d" % lab.node_ports["n4"] for s in to_n4), "standbys moved to n4", timeout=60)
    # so do the phones straight at n2 (docs/cluster.md, 2b): their standby sessions at n4, n3's given up (a BYE:
    # n3 stops listing them at once, not at their expiry, 75 s)
    lab.wait_for(lambda: standby_phones(lab, "n4") == ["501", "502"], "501's and 502's standby sessions moved to n4",
                 timeout=60)
    lab.wait_for(lambda: standby_phones(lab, "n3") == [], "n3 no longer keeps 501's and 502's standby", timeout=30)
    assert all(logged_out(lab, "n3", n) for n in ("501", "502"))
    # the node trunk sessions: n4 logs in to each node and each node to n4 (docs/cluster.md, Calls between nodes)
    lab.wait_for(lambda: all(len(lab.status(n)["cluster"]["trunks"]) == len(NODES) and
                             all(t["state"] == "up" for t in lab.status(n)["cluster"]["trunks"].values())
                             for n in NODES + ("n4",)), "trunk sessions between n4 and every node", timeout=60)
    new_shakes = handshakes(lab, NODES + ("n4",)) - shakes
    assert to_n4 == list(sites) and moved == 1        # as the fixture chose the sites and the home
    # the clients' handshakes the join caused (the trunk logins are not counted: handshakes()): one per
    # standby session now at n4 (the sites above, any other site and any phone straight at a node whose
    # standby n4 became), nothing else
    n4 = lab.status("n4")
    standby_at_n4 = [l for l in n4["remote_hosts"] + n4["phones"] if l.get("standby")]
    assert set(to_n4) <= {l["site"] for l in n4["remote_hosts"] if l.get("standby")}, n4["remote_hosts"]
    assert new_shakes <= len(standby_at_n4), (new_shakes, to_n4, standby_at_n4)
    assert {n["name"] for n in lab.cluster_status()["nodes"]} == set(NODES) | {"n4"}
    for call in (relayed, direct):
        hang_up_and_compare(lab, call)
    print("a 4th node joined: %d of %d sites' first choice moved to it (at their next login), %d standby "
          "sessions moved to it, %d handshakes in all" % (moved, len(sites), len(to_n4), new_shakes))
