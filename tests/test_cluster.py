"""The main host cluster's state on real engines (docs/cluster.md, issue 16 item 1).

PostgreSQL, Redis and etcd are the Debian packages' servers, started once for the module
on loopback (tools/cluster_lab.py); the nodes are `upbx main` processes with a [cluster]
table, administered with `upbx admin --config`. Every wait is for a state (a node's
status, a row, a key), never for a time; the timeouts only guard against a hang.
"""
import asyncio
import json
import select
import time

import pytest

from upbx.common import wire
from upbx.common.login import UP
from upbx.host import features
from upbx.host.main_host import STAR_CODE_WAIT_MS
from tests.intruder import Intruder, now_ms
from tests.support import micropython_binary

cluster_lab = pytest.importorskip("upbx.tools.cluster_lab")
from tests.clusterkit import acknowledged, acknowledgements, engines, record, sql, upload  # noqa: E402,F401  (tests/clusterkit.py)

NODES = ("n1", "n2", "n3")


@pytest.fixture(scope="module")
def lab(engines):
    lab = cluster_lab.ClusterExchange(engines, nodes=NODES)
    try:
        lab.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301", "302", "303"]})
        lab.secrets["site-d"] = _add_site_with_host(lab, "d", "401")
        lab.start()
        yield lab
    finally:
        lab.close()


def _add_site_with_host(lab, site, number):
    """A site whose remote host the test plays itself (Intruder): its secret."""
    from upbx.host.cluster.postgres import PostgresDirectory
    with PostgresDirectory(lab.engines.postgres_dsn) as directory:
        directory.add_site(site)
        secret = directory.add_remote_host("site-" + site, site).hex()
        lab.secrets[number] = directory.add_extension(number, site).hex()
    return secret


def node_address(lab, node):
    return ("127.0.0.1", lab.node_ports[node])


def logged_in(lab, node, kind, name):
    status = lab.status(node)
    if kind == "phone":
        return any(p["extension"] == name for p in status["phones"])
    return any(h["name"] == name for h in status["remote_hosts"])


# directory: one PostgreSQL, every node's copy refreshed by NOTIFY

def test_extension_added_through_one_node_is_known_to_the_others(lab, engines):
    before = lab.status("n2")["cluster"]["directory_refreshes"]
    secret = lab.admin("ext", "add", "350", "--site", "c", "--name", "New")
    version = sql(engines, "SELECT max(version) FROM sysinfo")[0][0]
    # the node's copy follows PostgreSQL: its system information version is PostgreSQL's
    lab.wait_for(lambda: lab.status("n2")["sysinfo_version"] == version, "n2 at version %d" % version, timeout=30)
    assert lab.status("n2")["cluster"]["directory_refreshes"] > before
    with Intruder.phone("350", secret, node_address(lab, "n2")) as phone:
        phone.log_in()
        assert logged_in(lab, "n2", "phone", "350")
    # and the CLI reads the same directory through any node's main.toml
    listed = json.loads(lab.admin("ext", "list", "--site", "c", "--json"))
    assert "350" in [e["number"] for e in listed]


def first_reply(device, timeout=15):
    """The first datagram the host sends a device that has just sent HELLO (resent on its timer)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if select.select([device.sock], [], [], 0.05)[0]:
            return device.sock.recvfrom(65536)[0]
        timer = device.login.next_timer()
        if timer is not None and timer <= now_ms():
            device.login.handle_timer(now_ms())
            device._flush(now_ms())
    raise TimeoutError("no reply to HELLO")


def test_cookie_issued_by_one_node_is_refused_by_another(lab):
    # each node keeps its own used nonces: only the node that issued a cookie takes its RESPONSE
    # (tests/test_cluster_standby_security.py replays one to a second node)
    with Intruder.phone("302", lab.secrets["302"], node_address(lab, "n1")) as phone:
        phone.login.start(now_ms())
        phone._flush(now_ms())                                        # HELLO to n1
        phone.login.receive(first_reply(phone), now_ms())             # n1's CHALLENGE, with n1's cookie
        refused = lab.status("n2")["stats"]["counters"].get("login refused: cookie of another node", 0)
        phone.server = node_address(lab, "n2")                        # the RESPONSE goes to n2
        phone._flush(now_ms())
        lab.wait_for(lambda: lab.status("n2")["stats"]["counters"].get("login refused: cookie of another node", 0)
                     > refused, "n2 refuses n1's cookie")
        assert not logged_in(lab, "n2", "phone", "302")
        assert phone.login.state != UP


# call records: exactly once, acknowledged after commit

def test_record_uploaded_to_two_nodes_is_stored_once(lab, engines):
    uid = "00c1a55e5eed0001"
    with Intruder.host("site-d", lab.secrets["site-d"], node_address(lab, "n1")) as one, \
            Intruder.host("site-d", lab.secrets["site-d"], node_address(lab, "n2")) as two:
        one.log_in()
        two.log_in()
        for n, host in enumerate((one, two, one)):
            upload(host, record(uid))
            # each upload's own acknowledgement: one's first would also answer for its second (the clean-clone
            # CI read n1's counters before n1 had handled the second, 1 duplicate of 2)
            want = 2 if n == 2 else 1
            host.pump_until(lambda: acknowledgements(host, uid) >= want, "RECORDS acknowledged", others=(one, two))
    rows = sql(engines, "SELECT origin, caller, path, cause FROM call_records WHERE uid = %s", uid)
    assert rows == [("site-d", "401", "local", "normal clearing")]
    counters = [lab.status(n)["stats"]["counters"] for n in ("n1", "n2")]
    assert counters[0].get("records stored", 0) + counters[1].get("records stored", 0) == 1
    assert counters[0].get("records duplicate", 0) + counters[1].get("records duplicate", 0) == 2


def test_postgres_restart_loses_no_record_and_needs_no_login(lab, engines):
    uid = "00c1a55e5eed0002"
    site_a_logins = lab.status("site-a")["main"]["logins"]
    with Intruder.host("site-d", lab.secrets["site-d"], node_address(lab, "n1")) as host:
        host.log_in()
        engines.stop_postgres()
        try:
            upload(host, record(uid))
            lab.wait_for(lambda: lab.status("n1")["cluster"]["records_deferred"] == 1, "the upload deferred")
            assert not acknowledged(host, uid)       # not stored, so not acknowledged
            # logins need no database: a phone logs in while PostgreSQL is down
            with Intruder.phone("303", lab.secrets["303"], node_address(lab, "n1")) as phone:
                phone.log_in()
        finally:
            engines.start_postgres()
        host.pump_until(lambda: acknowledged(host, uid), "RECORDS acknowledged after PostgreSQL is back",
                        timeout=60)
        assert host.login.state == UP
    assert sql(engines, "SELECT count(*) FROM call_records WHERE uid = %s", uid) == [(1,)]
    lab.wait_for(lambda: lab.status("n1")["cluster"]["engines"]["postgres"] == "up", "n1 listening again")
    assert lab.status("n1")["cluster"]["records_deferred"] == 0
    assert lab.status("site-a")["main"]["logins"] == site_a_logins   # the site never logged in again
    # and the directory still follows PostgreSQL: the listener came back
    lab.admin("ext", "add", "351", "--site", "c")
    version = sql(engines, "SELECT max(version) FROM sysinfo")[0][0]
    lab.wait_for(lambda: lab.status("n1")["sysinfo_version"] == version, "n1 refreshed after the restart", timeout=30)


def _releases(phone, call_no):
    """The causes of the RELEASEs the node sent the phone for its SETUP call_no."""
    return [ies[wire.IE_CAUSE] for t, ies in phone.inbox if t == wire.RELEASE and ies.get(wire.IE_PEER_CALL_NO) == call_no]


def _dial(phone, call_no, code):
    phone.send(wire.SETUP, {wire.IE_CALL_NO: call_no, wire.IE_CALLED: code, wire.IE_MEDIA_KEY: bytes(16)})


def _features_in_postgres(engines, number):
    return [json.loads(data) for (data,) in sql(engines, "SELECT data FROM features WHERE number = %s", number)]


def _waiting(lab, node, count):
    return lab.status(node)["cluster"].get("writes_waiting") == count


def test_star_code_waits_for_postgres_and_is_answered_when_it_commits(lab, engines):
    """Star codes (and a remote host's feature change) through a node while PostgreSQL is stopped wait for
    it (host/main_host.py STAR_CODE_WAIT_MS): no answer meanwhile; PostgreSQL back within the bound, the
    writes are made, in order, once, and the caller hears "feature on" (until session 13: "network busy"
    at once)."""
    failed = lab.status("n1")["stats"]["counters"].get("directory writes failed", 0)
    with Intruder.phone("303", lab.secrets["303"], node_address(lab, "n1")) as phone, \
            Intruder.host("site-d", lab.secrets["site-d"], node_address(lab, "n1")) as host:
        phone.log_in()
        host.log_in()
        engines.stop_postgres()
        try:
            _dial(phone, 21, "*78")
            _dial(phone, 23, "*72302")
            host.send(wire.FEATURES, {wire.IE_EXTENSION: "401", wire.IE_DATA: features.encode({"dnd": True})})
            # all three wait at n1's writer; the phone is not refused meanwhile
            phone.pump_until(lambda: _releases(phone, 21) or _waiting(lab, "n1", 3), "the star codes waiting",
                             others=(host,))
            assert _releases(phone, 21) == [] and _releases(phone, 23) == []
            assert not [t for t, _ in host.inbox if t == wire.FEATURES]
        finally:
            engines.start_postgres()
        phone.pump_until(lambda: _releases(phone, 21), "the star code's answer once PostgreSQL is back",
                         timeout=STAR_CODE_WAIT_MS / 1000 + 5, others=(host,))
        phone.pump_until(lambda: _releases(phone, 23), "the second star code's answer", others=(host,))
        assert _releases(phone, 21) == [wire.CAUSE_FEATURE_ON] and _releases(phone, 23) == [wire.CAUSE_FEATURE_ON]
        host.pump_until(lambda: [t for t, _ in host.inbox if t == wire.FEATURES], "FEATURES acknowledged",
                        others=(phone,))
    # in order, each on what the one before stored (the second did not take dnd back off)
    assert [(f["dnd"], f["always"]) for f in _features_in_postgres(engines, "303")] == [(True, "302")]
    assert [f["dnd"] for f in _features_in_postgres(engines, "401")] == [True]
    assert lab.status("n1")["stats"]["counters"].get("directory writes failed", 0) == failed
    assert lab.status("n1")["cluster"]["writes_waiting"] == 0


def test_star_code_is_refused_network_busy_when_postgres_stays_away_past_the_bound(lab, engines):
    failed = lab.status("n1")["stats"]["counters"].get("directory writes failed", 0)
    with Intruder.phone("303", lab.secrets["303"], node_address(lab, "n1")) as phone:
        phone.log_in()
        engines.stop_postgres()
        try:
            dialled = time.monotonic()
            _dial(phone, 22, "*90302")
            phone.pump_until(lambda: _releases(phone, 22), "the star code refused", timeout=STAR_CODE_WAIT_MS / 1000 + 15)
            waited = time.monotonic() - dialled
            assert _releases(phone, 22) == [wire.CAUSE_NETWORK_BUSY]
            assert waited >= STAR_CODE_WAIT_MS / 1000 - 0.5, waited
        finally:
            engines.start_postgres()
    assert lab.status("n1")["stats"]["counters"].get("directory writes failed", 0) == failed + 1
    # the refused write was dropped, not made when PostgreSQL came back
    lab.wait_for(lambda: lab.status("n1")["cluster"]["engines"]["postgres"] == "up", "n1 on PostgreSQL again",
                 timeout=30)
    lab.wait_for(lambda: _waiting(lab, "n1", 0), "nothing waiting at n1's writer")
    assert all(f["busy"] is None for f in _features_in_postgres(engines, "303"))


def test_a_star_code_whose_caller_hangs_up_while_it_waits_is_not_made(lab, engines):
    """PostgreSQL stopped: *90302 (forward on busy) waits at n1's writer; the caller hangs up (RELEASE of
    its SETUP): the write is withdrawn, nothing answers the call it gave up, and PostgreSQL back, it is not
    made (a star code dialled after it is, so the withdrawn one would have been made first). Until session
    14 a star code that waited was made whatever the caller did."""
    counters = lambda: lab.status("n1")["stats"]["counters"]
    withdrawn = counters().get("star codes withdrawn", 0)
    with Intruder.phone("303", lab.secrets["303"], node_address(lab, "n1")) as phone:
        phone.log_in()
        engines.stop_postgres()
        try:
            _dial(phone, 26, "*90302")
            phone.pump_until(lambda: _waiting(lab, "n1", 1), "the star code waiting")
            phone.send(wire.RELEASE, {wire.IE_CALL_NO: 26, wire.IE_CAUSE: wire.CAUSE_NORMAL})
            phone.pump_until(lambda: _waiting(lab, "n1", 0), "the star code withdrawn")
            assert counters().get("star codes withdrawn", 0) == withdrawn + 1
        finally:
            engines.start_postgres()
        _dial(phone, 27, "*92302*25")
        phone.pump_until(lambda: _releases(phone, 27), "the next star code's answer once PostgreSQL is back",
                         timeout=STAR_CODE_WAIT_MS / 1000 + 5)
        assert _releases(phone, 27) == [wire.CAUSE_FEATURE_ON]
        assert _releases(phone, 26) == []
    assert [(f["busy"], f["noanswer_s"]) for f in _features_in_postgres(engines, "303")] == [(None, 25)]
    assert lab.status("n1")["cluster"]["writes_waiting"] == 0


def test_star_code_waits_through_a_hung_postgres_and_is_answered_when_it_runs_again(lab, engines):
    """PostgreSQL hung (SIGSTOP) for 7 s, not stopped: the write hangs at the writer, or (its connection made
    anew, after the restart of the tests before) times out connecting (the lab's connect_timeout 5 s) and
    waits; the node's LISTEN, woken by that failure, reaches PostgreSQL when it runs again and the write is
    made: the caller hears "feature on", not "network busy" (without the wake: at the bound)."""
    with Intruder.phone("303", lab.secrets["303"], node_address(lab, "n1")) as phone:
        phone.log_in()
        engines.pause_postgres()
        try:
            _dial(phone, 24, "*92302*20")
            phone.pump(7)                  # PostgreSQL hangs this long: longer than a connection attempt waits
            assert _releases(phone, 24) == []
        finally:
            engines.resume_postgres()
        phone.pump_until(lambda: _releases(phone, 24), "the star code's answer once PostgreSQL runs",
                         timeout=STAR_CODE_WAIT_MS / 1000 + 5)
        assert _releases(phone, 24) == [wire.CAUSE_FEATURE_ON]
    assert [(f["noanswer"], f["noanswer_s"]) for f in _features_in_postgres(engines, "303")] == [("302", 20)]
    assert lab.status("n1")["cluster"]["writes_waiting"] == 0


def test_main_host_records_wait_in_the_node_file_while_postgres_is_away(engines, tmp_path):
    from upbx.host.cluster.replica import ReplicaDirectory
    from upbx.host.directory import MAIN_ORIGIN, StoreUnavailable
    copy, problem = ReplicaDirectory.open(tmp_path / "node.sqlite", engines.postgres_dsn)
    assert problem is None
    mine = {"uid": "00c1a55e5eed0003", "origin": MAIN_ORIGIN, "caller": "301", "callee": "302", "path": "relay"}
    engines.stop_postgres()
    try:
        assert copy.add_call_record(dict(mine)) is True                  # kept in the node's file
        with pytest.raises(StoreUnavailable):                          # a remote host's: not stored at all
            copy.add_call_record({"uid": "00c1a55e5eed0004", "origin": "site-d"})
        assert [r.uid for r in copy.outbox()] == [mine["uid"]]
        assert copy.extension("301") is not None                       # reads go on from the copy
    finally:
        engines.start_postgres()
    copy.connect_primary()
    for _ in range(2):   # the first statement on the old connection finds it gone
        try:
            copy.refresh()
            break
        except StoreUnavailable:
            pass
    assert copy.flush_outbox() == 1
    assert copy.flush_outbox() == 0 and copy.outbox() == []
    assert sql(engines, "SELECT origin, caller FROM call_records WHERE uid = %s", mine["uid"]) == [("main", "301")]
    copy.close()


# Redis: one key per call

def test_call_key_in_redis_holds_its_legs_and_expires_after_the_call(lab, engines):
    micropython_binary()
    import redis
    from upbx.host.cluster.calls import unseal
    r = redis.Redis.from_url(engines.redis_url)
    callee = lab.phone("301", "--answer", "--exit-after-call", "--exit-after", "600", tag="redis-callee")
    lab.wait_registered("301", timeout=60)
    # the call lasts until the test hangs up (the caller's console): no step below races its end
    caller = lab.phone("302", "--send", "tone:440", "--call", "301", "--exit-after-call", "--exit-after", "600",
                       tag="redis-caller")

    def answered():
        for key in r.scan_iter(match="upbx:call:*"):
            value = r.get(key)
            call = json.loads(value) if value else {}
            if call.get("caller") == "302" and call.get("state") == "answered":
                return key, call
        return None

    lab.wait_for(lambda: answered() is not None, "an answered call's key in Redis", timeout=60,
                 watch=("phone-redis-caller", "phone-redis-callee"))
    key, call = answered()
    assert call["node"] == "n1" and call["callee"] == "301" and not call["ended"]
    assert {side: leg["link"] for side, leg in call["legs"].items()} == {
        "a": {"kind": "phone", "name": "302"}, "b": {"kind": "phone", "name": "301"}}
    assert all(1 <= leg["call_no"] <= wire.MAX_CALL_NO and leg["peer_call_no"] for leg in call["legs"].values())
    assert 0 < r.ttl(key) <= 3600
    cluster_key = asyncio.run(_etcd_value(engines, b"/upbx/cluster-key"))
    keys = {side: unseal(cluster_key, leg["media_key"], ("%s/%s" % (call["uid"], side)).encode())
            for side, leg in call["legs"].items()}
    assert all(len(k) == 16 for k in keys.values()) and keys["a"] != keys["b"]
    # while it lasts, `upbx cluster status` counts it on n1
    status = lab.cluster_status()
    assert {n["name"]: n["calls_in_redis"] for n in status["nodes"]}["n1"] >= 1
    caller.stdin.write(b"!hangup\n")
    caller.stdin.flush()
    caller.wait(120)
    callee.wait(120)
    lab.wait_for(lambda: json.loads(r.get(key) or b'{"ended": true}')["ended"], "the key marked ended", timeout=30)
    # the node's own record of the call is PostgreSQL's
    lab.wait_for(lambda: sql(engines, "SELECT origin, caller, callee FROM call_records WHERE uid = %s", call["uid"])
                 == [("main", "302", "301")], "the call's record in PostgreSQL")
    lab.wait_for(lambda: not r.exists(key), "the ended call's key expired", timeout=60)
    r.close()


async def _etcd_value(engines, key):
    import aetcd
    async with aetcd.Client(host="127.0.0.1", port=engines.etcd_port) as client:
        return (await client.get(key)).value


# etcd: membership leases

def test_killed_node_leaves_the_cluster_when_its_lease_expires(lab):
    lab.wait_for(lambda: lab.status("n1")["cluster"]["members"] == list(NODES), "n1 sees every node")
    status = lab.cluster_status()
    ids = {n["name"]: n["id"] for n in status["nodes"]}
    assert set(ids) == set(NODES) and len(set(ids.values())) == len(NODES)
    # each says in etcd which node messages beyond a plain call it takes (a rolling upgrade: docs/cluster.md)
    assert all(n["speaks"] == ["claim", "pickup", "transfer"] for n in status["nodes"])
    sites = {n["name"]: n["sites"] for n in status["nodes"]}
    # site-a's remote host is logged in to n1; a node's sites are those with a session there, standby
    # sessions included (docs/cluster.md), so site a is listed at other nodes too
    assert "a" in sites["n1"]
    lab.kill("n3")                                                              # kill -9: no goodbye
    for node in ("n1", "n2"):   # the survivors see it gone (their view of etcd), then the CLI does
        lab.wait_for(lambda: lab.status(node)["cluster"]["members"] == ["n1", "n2"], node + " sees n3 gone", timeout=60)
    assert [n["name"] for n in lab.cluster_status()["nodes"]] == ["n1", "n2"]
    # the same name comes back with its number
    lab.start_node("n3")
    lab.wait_for(lambda: lab.status("n1")["cluster"]["members"] == list(NODES), "n1 sees n3 back", timeout=60)
    assert {n["name"]: n["id"] for n in lab.cluster_status()["nodes"]} == ids


def test_membership_survives_an_etcd_restart_on_its_lease(engines):
    from upbx.host.cluster import coordination

    async def before():
        client = await coordination.connect([("127.0.0.1", engines.etcd_port)])
        member = coordination.Membership(client, "restart-probe", 30)
        await member.join({"id": 99})
        await client.close()
        return member

    async def after(member):
        client = await coordination.connect([("127.0.0.1", engines.etcd_port)])
        try:
            lease = member.lease.id
            await member.attach(client, {"id": 99, "calls": 1})
            assert member.lease.id == lease                        # the same lease: the node never left
            assert (await coordination.members(client))["restart-probe"] == {"id": 99, "calls": 1}
            await member.leave()
            assert "restart-probe" not in await coordination.members(client)
        finally:
            await client.close()

    member = asyncio.run(before())
    engines.restart_etcd()
    asyncio.run(after(member))


def test_nodes_spread_over_the_etcd_members_in_their_rendezvous_order():
    from upbx.host.cluster.coordination import endpoint_order
    members = [("10.0.0.1", 2379), ("10.0.0.2", 2379), ("10.0.0.3", 2379)]
    orders = {name: endpoint_order(name, members) for name in ("n1", "n2", "n3")}
    # every node has every member, each its own order; the three nodes start at three different members
    assert all(sorted(order) == members for order in orders.values())
    assert len({order[0] for order in orders.values()}) == 3
    assert orders == {name: endpoint_order(name, list(reversed(members))) for name in orders}   # not the file's order
    assert endpoint_order(None, members) == members          # a tool without a node name: as configured


def test_a_node_whose_first_etcd_member_is_down_connects_to_the_next(engines):
    from upbx.host.cluster import coordination
    from upbx.tools.lab import free_ports
    dead = ("127.0.0.1", free_ports(1))                   # nothing listens there
    live = ("127.0.0.1", engines.etcd_port)
    name = next(n for n in ("n%d" % i for i in range(1, 100))
                if coordination.endpoint_order(n, [live, dead])[0] == dead)

    async def run():
        client = await coordination.connect([live, dead], name)
        try:
            assert (client._host, client._port) == live
            await client.put(coordination.PREFIX + b"probe/" + name.encode(), b"1")   # it is an etcd that answers
            assert (await client.get(coordination.PREFIX + b"probe/" + name.encode())).value == b"1"
            await client.delete(coordination.PREFIX + b"probe/" + name.encode())
        finally:
            await client.close()
    asyncio.run(run())


class Forwarder:
    """A TCP port that forwards to another (an etcd member that is down until open(), and again after
    close()): a stand-in for a second etcd member in front of the engines' real one."""

    def __init__(self, port, target):
        self.port, self.target = port, target
        self.listener, self.socks, self.accepted = None, [], 0

    def open(self):
        import socket
        import threading
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener):
        import socket
        import threading
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            far = socket.create_connection(self.target)
            self.socks += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        import socket
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        import socket
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() of its thread: close alone does not
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.socks = []


def test_a_node_moves_back_to_its_first_etcd_member_when_it_answers_again(engines):
    """A node whose first etcd member (in its rendezvous order) does not answer talks to the next; when the
    first answers again, the node moves back to it within `etcd_return_s`, keeping its lease (it never
    leaves the cluster, its etcd state stays "up"); when that member goes again it is back on the next.
    Until session 15 it stayed on the second member until that one failed (docs/cluster.md)."""
    from upbx.host.cluster import coordination
    from upbx.tools.lab import free_ports
    live = ("127.0.0.1", engines.etcd_port)
    first = ("127.0.0.1", free_ports(1))           # nothing listens there yet
    name = next(n for n in ("etcd-back-%d" % i for i in range(100))
                if coordination.endpoint_order(n, [live, first])[0] == first)
    members = "%s:%d,%s:%d" % (live + first)
    proxy = Forwarder(first[1], live)
    lab = cluster_lab.ClusterExchange(engines, nodes=(name,), cluster_settings={"etcd": members, "etcd_return_s": 2})

    def lease():
        async def read():
            client = await coordination.connect([live])
            try:
                return (await client.get(coordination.PREFIX + b"nodes/" + name.encode())).lease
            finally:
                await client.close()
        return asyncio.run(read())
    try:
        lab.start()
        cluster = lab.status(name)["cluster"]
        assert cluster["engines"]["etcd"] == "up" and cluster["etcd_member"] == "%s:%d" % live
        held = lease()
        proxy.open()                                # the first member answers again
        lab.wait_for(lambda: lab.status(name)["cluster"]["etcd_member"] == "%s:%d" % first,
                     "the node back on its first etcd member", timeout=60)
        assert proxy.accepted >= 1 and lease() == held   # through the proxy, on the lease it had
        with open(lab.path(name + ".log")) as f:
            etcd_lines = [line for line in f if "cluster-etcd" in line]
        assert any("moved back" in line for line in etcd_lines), etcd_lines
        assert not any("down" in line for line in etcd_lines), etcd_lines   # never lost etcd on the way
        assert lab.status(name)["cluster"]["engines"]["etcd"] == "up"
        proxy.close()                               # and gone again: the next member, as at start
        lab.wait_for(lambda: lab.status(name)["cluster"]["etcd_member"] == "%s:%d" % live,
                     "the node on its second etcd member again", timeout=60)
        lab.wait_for(lambda: lab.status(name)["cluster"]["engines"]["etcd"] == "up", "etcd up", timeout=60)
    finally:
        proxy.close()
        lab.close()


# configuration and the CLI without engines

def test_cluster_table_needs_all_three_engines(tmp_path):
    from upbx.host.config import ConfigError, load_main_config
    path = tmp_path / "main.toml"
    path.write_text('[main]\n\n[cluster]\nnode = "n1"\npostgres = "host=db"\netcd = "db:2379"\n')
    with pytest.raises(ConfigError) as error:
        load_main_config(path)
    assert (error.value.key, error.value.problem) == ("cluster.redis", "required with cluster.postgres (docs/cluster.md)")
    path.write_text('[main]\n\n[cluster]\netcd = "db:2379,db2:x"\n')
    with pytest.raises(ConfigError) as error:
        load_main_config(path)
    assert error.value.key == "cluster.etcd"
    path.write_text('[main]\n')
    assert load_main_config(path).cluster_postgres == ""   # no table: SQLite alone, as before


def test_admin_refuses_what_a_cluster_does_not_keep_yet(tmp_path):
    import subprocess
    from upbx.tools.lab import ROOT, upbx
    path = tmp_path / "main.toml"
    path.write_text('[main]\n\n[cluster]\nnode = "n1"\npostgres = "host=127.0.0.1 port=1"\nredis = "redis://x"\n'
                    'etcd = "127.0.0.1:1"\n')
    out = subprocess.run(upbx("admin", "--config", str(path), "token", "list"), cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 1 and "a cluster keeps no API tokens yet" in out.stderr
    out = subprocess.run(upbx("admin", "--config", str(path), "site", "list"), cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 1 and "key 'cluster.postgres'" in out.stderr and "Traceback" not in out.stderr


# one Directory, two databases: directory.py's own behaviours, on PostgreSQL

@pytest.fixture
def pg_directory(engines):
    import psycopg
    from upbx.host.cluster.postgres import PostgresDirectory
    admin = engines.postgres_dsn.replace("dbname=upbx", "dbname=postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS directory_behaviours")
        conn.execute("CREATE DATABASE directory_behaviours")
    directory = PostgresDirectory(engines.postgres_dsn.replace("dbname=upbx", "dbname=directory_behaviours"))
    yield directory
    directory.close()


def _sqlite_behaviours():
    from tests import test_directory as on_sqlite
    return [on_sqlite.test_refusals_are_clear_and_change_nothing, on_sqlite.test_removing_in_order,
            on_sqlite.test_barring, on_sqlite.test_call_record_uploaded_twice_is_stored_once,
            on_sqlite.test_call_record_validation, on_sqlite.test_sysinfo_is_versioned_and_directory_changes_bump_it]


@pytest.mark.parametrize("behaviour", _sqlite_behaviours(), ids=lambda f: f.__name__[len("test_"):])
def test_directory_behaves_the_same_on_postgres(pg_directory, behaviour):
    behaviour(pg_directory)


def test_directory_features_groups_and_music_on_postgres(pg_directory):
    d = pg_directory
    d.add_site("north")
    d.add_extensions([("201", "north", "Ann"), ("202", "north", "Bob")])
    with pytest.raises(Exception, match="extensions not added"):
        d.add_extensions([("201", "north", "again")])
    d.set_features("201", {"dnd": True})
    d.set_features("201", {"dnd": False})                  # INSERT OR REPLACE: the second wins
    assert d.features("201")["dnd"] is False
    d.set_group({"number": "600", "strategy": "ring-all", "members": ["201", "202"]})
    assert d.group("600")["members"] == ["201", "202"] and d.site_groups("north").keys() == {"600"}
    assert d.set_music_on_hold("jingle", b"\xff" * 160) == 1
    assert d.set_music_on_hold("jingle", b"\x7f" * 160) == 2
    assert d.music_on_hold() == (2, "jingle", b"\x7f" * 160)
    password = d.set_sip_password("202")
    assert d.sip_passwords("north") == {"202": password}
    d.remove_extension("202")                              # ON DELETE CASCADE, as on SQLite
    assert d.sip_passwords() == {} and d.extension("202") is None
