"""The JSON API of a cluster's node (docs/cluster.md "The API and web page of a node").

Real engines (tools/cluster_lab.py), two `upbx main` nodes each with `api_listen`, real HTTP. A
write through one node's API is PostgreSQL's: the other node has it too, a phone logs in there with
the secret it gave; and neither a stopped nor a hung PostgreSQL holds up the node's loop, which
relays media, while the API waits for it.
"""
import threading

import pytest

from tests.test_api import call_api, free_tcp_port

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")
from tests.clusterkit import engines  # noqa: E402,F401  (tests/clusterkit.py)

NODES = ("n1", "n2")
API_WAIT_S = 30   # [cluster] api_wait_s: how long the hung PostgreSQL's requests are seen waiting


@pytest.fixture(scope="module")
def lab(engines):
    api = {node: free_tcp_port() for node in NODES}
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES,
                                      node_settings={n: {"api_listen": "127.0.0.1:%d" % api[n]} for n in NODES},
                                      cluster_settings={"api_wait_s": API_WAIT_S})
    lab.api_ports = api
    try:
        lab.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301"]})
        lab.start()
        lab.wait_for(lambda: lab.status("n1")["cluster"]["engines"]["postgres"] == "up", "n1 has PostgreSQL",
                     timeout=60)
        # a node's API tokens are its own (its SQLite file, as `upbx admin --database` writes them)
        lab.tokens = {n: _token(lab, n) for n in NODES}
        yield lab
    finally:
        lab.close()


def _token(lab, node):
    import subprocess
    from upbx.tools.lab import ROOT, upbx
    out = subprocess.run(upbx("admin", "--database", lab.path(node + ".sqlite"), "token", "add", "ops",
                              "--role", "admin"), cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def api(lab, node, method, path, body=None):
    return call_api("http://127.0.0.1:%d" % lab.api_ports[node], method, path, lab.tokens[node], body,
                    timeout=API_WAIT_S + 60)


def _in_postgres(lab, number):
    from upbx.host.cluster.postgres import PostgresDirectory
    with PostgresDirectory(lab.engines.postgres_dsn) as d:
        return {e.number: e for e in d.extensions()}.get(number)


def _listed(lab, node, number):
    status, _h, body = api(lab, node, "GET", "/api/extensions")
    assert status == 200, body
    return [e for e in body if e["number"] == number]


def test_an_extension_added_through_a_nodes_api_is_the_clusters(lab):
    """Added at n2, changed at n1, removed at n2: each change is PostgreSQL's (until session 14 the API
    of a node wrote into the node's own SQLite copy only: no other node saw it, and the node's next
    refresh wiped it), read back at once by the node that made it, and seen by the other."""
    status, _h, body = api(lab, "n2", "POST", "/api/extensions", {"number": "302", "site": "c", "name": "Desk"})
    assert status == 201, body
    assert _in_postgres(lab, "302") is not None and _in_postgres(lab, "302").name == "Desk"
    assert [e["name"] for e in _listed(lab, "n2", "302")] == ["Desk"]
    # the other node has it from its NOTIFY: site c's phones are straight at the home node n1, and 302
    # logs in there with the secret n2's API gave
    lab.wait_for(lambda: _listed(lab, "n1", "302"), "n1 lists 302", timeout=30)
    lab.secrets["302"], lab.phone_site["302"] = body["secret"], "c"
    phone = lab.phone("302", "--exit-after", "120")
    try:
        lab.wait_registered("302", timeout=60)
    finally:
        phone.terminate()
    status, _h, body = api(lab, "n1", "PATCH", "/api/extensions/302", {"barred": True})
    assert status == 200, body
    assert _in_postgres(lab, "302").barred
    lab.wait_for(lambda: [e["barred"] for e in _listed(lab, "n2", "302")] == [True], "n2 sees 302 barred", timeout=30)
    status, _h, body = api(lab, "n2", "DELETE", "/api/extensions/302")
    assert status == 200, body
    assert _in_postgres(lab, "302") is None
    assert not _listed(lab, "n2", "302")
    lab.wait_for(lambda: not _listed(lab, "n1", "302"), "n1 no longer lists 302", timeout=30)


def test_a_hung_postgres_holds_the_api_not_the_nodes_loop(lab):
    """PostgreSQL hung (SIGSTOP): a write and a call record export through n1's API wait for it, off the
    loop: n1's status answers meanwhile and counts them (`api_waiting`); both are answered 503 after
    `api_wait_s`. A second write, queued behind the first on the writer's thread, is withdrawn when it is
    given up on: its 503 says nothing was changed, and nothing is (until session 15 it was made when
    PostgreSQL ran again, after its 503). Resumed, the first write, which PostgreSQL held, is made (as its
    503 says it may be). Until session 14 the export read PostgreSQL on the loop, which stalled until
    PostgreSQL ran."""
    from upbx.host.daemon import query_status
    answers = {}

    def ask(name, method, path, body=None):
        answers[name] = api(lab, "n1", method, path, body)

    def waiting():
        return query_status(lab.path("n1.sock"), timeout=30)["cluster"]["api_waiting"]
    status, _h, body = api(lab, "n1", "GET", "/api/calls.csv")   # the reader's connection made
    assert status == 200, body
    withdrawn = lab.status("n1")["cluster"]["api_withdrawn"]
    lab.engines.pause_postgres()
    try:
        asks = [threading.Thread(target=ask, args=("write", "POST", "/api/extensions", {"number": "303", "site": "c"})),
                threading.Thread(target=ask, args=("export", "GET", "/api/calls.csv"))]
        for t in asks:
            t.start()
        # the loop answers while both wait (a loop held up by PostgreSQL would not: the status waits 30 s)
        lab.wait_for(lambda: waiting() == 2, "n1 counts two API requests waiting for PostgreSQL", timeout=60)
        # the writer's thread is held by the first write (or earlier work): this one waits behind it
        asks.append(threading.Thread(target=ask, args=("queued", "POST", "/api/extensions",
                                                       {"number": "305", "site": "c"})))
        asks[-1].start()
        lab.wait_for(lambda: waiting() == 3, "n1 counts the second write waiting", timeout=60)
        for t in asks:
            t.join(150)
    finally:
        lab.engines.resume_postgres()
    status, _h, body = answers["write"]
    assert status == 503 and "did not answer" in body["error"] and "may still be made" in body["error"], body
    status, _h, body = answers["export"]
    assert status == 503 and "did not answer within %d s" % API_WAIT_S in body["error"], body
    status, _h, body = answers["queued"]
    assert status == 503 and "nothing was changed" in body["error"], body
    assert lab.status("n1")["cluster"]["api_waiting"] == 0
    assert lab.status("n1")["cluster"]["api_withdrawn"] == withdrawn + 1   # the second write (the export ran)
    lab.wait_for(lambda: _in_postgres(lab, "303") is not None, "the write that waited made", timeout=60)
    lab.wait_for(lambda: _listed(lab, "n1", "303"), "n1 lists 303", timeout=30)
    # one writer's thread, in order: a write made after this one would have been after 305's
    status, _h, body = api(lab, "n1", "POST", "/api/extensions", {"number": "306", "site": "c"})
    assert status == 201, body
    assert _in_postgres(lab, "305") is None and not _listed(lab, "n1", "305")


def test_a_stopped_postgres_refuses_api_writes_at_once_and_changes_nothing(lab):
    """PostgreSQL stopped: the node knows it is away; a write through its API is 503 at once naming
    PostgreSQL, nothing changes in the node's copy; a read of the directory is still answered from the
    copy. Started again, the same write goes through."""
    before = _listed(lab, "n1", "101")
    lab.engines.stop_postgres()
    try:
        lab.wait_for(lambda: lab.status("n1")["cluster"]["engines"]["postgres"] != "up", "n1 sees PostgreSQL away",
                     timeout=60)
        status, _h, body = api(lab, "n1", "POST", "/api/extensions", {"number": "304", "site": "c"})
        assert status == 503 and "PostgreSQL" in body["error"] and "nothing was changed" in body["error"], body
        assert not _listed(lab, "n1", "304")
        assert _listed(lab, "n1", "101") == before
    finally:
        lab.engines.start_postgres()
    # tried again until PostgreSQL is back for the node's writes: each refusal changed nothing
    answers = []
    lab.wait_for(lambda: answers.append(api(lab, "n1", "POST", "/api/extensions", {"number": "304", "site": "c"}))
                 or answers[-1][0] != 503, "a write through n1 once PostgreSQL is back", timeout=60)
    assert answers[-1][0] == 201, answers[-1]
    assert _in_postgres(lab, "304") is not None
