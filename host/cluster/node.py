"""A main host as a node of a cluster: what it needs before its first datagram, and what runs beside it.

`ClusterNode(config, log)` runs before the core takes a datagram (host/main_host.py):
it reads the node's identity from etcd (node number, the cluster's cookie secret and
cluster key, the index layout) and opens the directory copy (replica.py), refreshed
from PostgreSQL. `ClusterService` then runs on the daemon's event loop (a service of
host/daemon.py): the membership lease in etcd with the node's load, LISTEN for
directory changes, the per-call Redis keys, and moving the main host's own call
records to PostgreSQL after an outage. None of these waits blocks a login or a call:
each runs in its own task, and each reconnects with a backoff when its engine goes.
"""
import asyncio
import json
import os
import threading
import time

from upbx.common import cluster
from upbx.host.cluster import coordination
from upbx.host.cluster.calls import KEY, LEG_KEY, CallMirror, Takeover
from upbx.host.cluster.engines import redis_client
from upbx.host.cluster.postgres import CHANNEL, read_snapshot
from upbx.host.cluster.replica import ReplicaDirectory, Writer
from upbx.common.cluster import MAX_NODE
from upbx.host.cluster.route import parse_address
from upbx.host.main_host import NODE_SPEAKS

CALLS_MOVED_S = 0.02     # how often the call writer looks whether a call was set up, answered or ended (Switch.moves)
TAKEOVER_PERIOD_S = 0.05  # how often call numbers asked for are looked up in Redis (failover)
REDIS_CHECK_S = 1.0      # how often the node asks which Redis server it writes to (a failover rewrites the keys)
LOAD_PERIOD_S = 1.0      # how often the node's load in etcd is rewritten (when it changed)
BACKOFF_MAX_S = 2.0      # longest wait before reaching an engine again
# an ended call's key is written only while no other node has taken the call over: a node that was
# silent (stopped, cut off) and whose calls a survivor carries on must not mark them ended
ENDED_IF_OURS = """
local v = redis.call('GET', KEYS[1])
if v then
  local ok, call = pcall(cjson.decode, v)
  if ok and call['node'] ~= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
return 1
"""


def _run(coroutine_function, *args):
    """Run an async function to completion on a loop of its own, in a thread: the daemon's loop may
    not be running yet (or may be, in a test), and aetcd's channel belongs to the loop that made it."""
    result = {}

    def body():
        try:
            result["value"] = asyncio.run(coroutine_function(*args))
        except BaseException as exc:   # carried to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=body, name="cluster-bootstrap")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


async def _identity(config):
    client = await coordination.connect(config.cluster_etcd, config.cluster_node)
    try:
        return await coordination.identity(client, config.cluster_node)
    finally:
        await client.close()


def advertised_problem(config):
    """Why this node's address for clients cannot be [cluster] address (or main.listen), else None."""
    import ipaddress
    key, address = ("cluster.address", config.cluster_address) if config.cluster_address else ("main.listen", config.listen)
    try:
        ipaddress.IPv4Address(address[0])
    except ValueError:
        return ("key '%s' of %s: a node's address goes to clients in WELCOME and must be an IPv4 address, got %r"
                % (key, config.path, address[0]))
    if address[0] == "0.0.0.0":
        return ("key 'cluster.address' of %s is required when main.listen is 0.0.0.0: clients and the other "
                "nodes need the address that reaches this node (docs/cluster.md)" % config.path)
    return None


class ClusterNode:
    """The node's identity and directory copy, ready before the core starts."""

    def __init__(self, config, log):
        self.config = config
        self.name = config.cluster_node
        self.log = log
        self.address_problem = advertised_problem(config)
        if self.address_problem:
            raise coordination.CoordinationError(self.address_problem)
        ident = _run(_identity, config)
        self.node_id = ident["node_id"]
        self.cookie_secret = ident["cookie_secret"]
        self.cluster_key = ident["cluster_key"]
        self.layout = ident["layout"]
        if config.database == ":memory:":
            raise coordination.CoordinationError("key 'main.database' is \":memory:\": a node keeps its copy of the "
                                                 "directory and its waiting records in a file")
        self.directory, problem = ReplicaDirectory.open(config.database, config.cluster_postgres)
        self.directory.api_wait_s = config.cluster_api_wait_s
        if problem:
            log.warning("cluster-postgres", problem=problem, directory="the copy the node last had")
        log.info("cluster-node", node=self.name, node_id=self.node_id, layout=self.layout,
                 extensions=len(self.directory.extensions()))


def read_members(members):
    """({node id: (ipv4, port)}, {node id: frozenset of what it speaks}) of etcd's live nodes ({name: their
    record}, coordination.members). A record without "speaks" is a node of older code (before session 13):
    it speaks nothing beyond a plain call, and is sent no node message that needs more (NODE_SPEAKS)."""
    nodes, speaks = {}, {}
    for info in members.values():
        try:
            node = int(info["id"])
            if 1 <= node <= MAX_NODE:
                nodes[node] = parse_address(info.get("address") or info["listen"])
                said = info.get("speaks", ())
                speaks[node] = frozenset(f for f in said if isinstance(f, str)) if isinstance(said, list) else frozenset()
        except (KeyError, TypeError, ValueError):
            continue   # a member this code cannot read (another version's): not routed to
    return nodes, speaks


class ClusterService:
    """The node's tasks on the daemon's loop (start(daemon) / stop(), as host/daemon.py runs services)."""

    def __init__(self, config):
        self.config = config
        self.tasks = []
        self.core = None
        self.membership = None
        self.etcd = None
        self.redis = None
        self.state = {"etcd": "connecting", "postgres": "connecting", "redis": "connecting"}
        self.redis_run_id = None    # the Redis server written to (INFO run_id): another one gets every key again
        self.redis_rewrites = 0     # times every live call's key was rewritten (another server, a reconnection)
        self._etcd_probe = None     # a connection being tried to an etcd member ahead of ours in our order

    async def start(self, daemon):
        self.daemon = daemon
        self.core = daemon.core
        self.node = self.core.cluster
        self.core.cluster_state = self.state
        # where clients and the other nodes reach us: in WELCOME and SYSINFO from now on (host/cluster/route.py)
        self.address = tuple(self.config.cluster_address or daemon.address[:2])
        self.core.router.set_address(self.address)
        self.core.peers.cluster_nodes = self.core.router.encoded
        self.mirror = CallMirror(self.node.name, self.node.cluster_key, self.config.cluster_call_ttl_s,
                                 self.config.cluster_ended_ttl_s)
        self.core.takeover = Takeover(self.core, self.node.cluster_key)
        self.core.records_waiting = {}   # a call's record waits for its ended key (MainHost.records_settled)
        self.core.switch.reserved = self.core.takeover.asked   # a remote host's numbers a lost node's calls have
        # PostgreSQL's writes (a star code's feature change, a call record) on a thread of their own
        from upbx.host.daemon import now_ms
        self.writer = self.node.directory.writer = Writer(asyncio.get_running_loop(), now_ms, daemon._flush)
        self._reconnecting = False
        self.tasks = [asyncio.ensure_future(t()) for t in (self._membership, self._listen, self._calls,
                                                             self._takeover)]

    async def stop(self):
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        from upbx.host.daemon import now_ms
        if self.core.records_waiting:
            self.core.records_settled({}, set(), now_ms())   # the records that waited for their keys: written
        self.core.records_waiting = None                     # from now on written at once
        if self.membership is not None:
            try:
                await asyncio.wait_for(self.membership.leave(), 2)   # gone at once, not lease_s later
            except Exception:
                pass
        if self.etcd is not None:
            await self.etcd.close()
        if self.redis is not None:
            await self.redis.aclose()
        self.node.directory.writer = None
        self.writer.close()

    def _log(self, engine, state, **fields):
        if self.state.get(engine) != state:
            self.state[engine] = state
            (self.core.log.info if state == "up" else self.core.log.warning)("cluster-" + engine, state=state,
                                                                              **fields)

    # etcd: membership and load

    def _info(self):
        core = self.core
        hosts = [l for l in core.links.values() if l.kind == "host"]
        phones = [l for l in core.links.values() if l.kind == "phone"]
        # the sites a session here is home to, and those it is only the standby of (docs/cluster.md)
        standby = core.standby_links
        sites = sorted({core._site_of(l) for l in hosts + phones if l not in standby})
        standby_sites = sorted({core._site_of(l) for l in hosts + phones if l in standby} - set(sites))
        # the sites at home here whose remote host's rendezvous order starts with another node: each moves there
        # once idle (host/remote_host.py _rebalance, docs/cluster.md "A site moves to its first node")
        nodes = sorted(core.router.nodes.items())
        away = sorted({core._site_of(l) for l in hosts if l not in standby and nodes
                       and cluster.ranked(cluster.identity("host", l.name), nodes)[0][0] != self.node.node_id})
        return {"id": self.node.node_id, "listen": "%s:%d" % self.daemon.address[:2], "address": "%s:%d" % self.address,
                "pid": os.getpid(),
                "started_ms": self.started_ms, "remote_hosts": len(hosts), "phones": len(phones),
                "calls": len(core.switch.calls), "sites": sites, "standby_sites": standby_sites, "away_sites": away,
                "standby": len([l for l in hosts + phones if l in standby]),
                # datagrams sent on to other nodes and taken from them (host/cluster/route.py)
                "forwarded_out": sum(core.router.forwarded_out.values()),
                "forwarded_in": sum(core.router.forwarded_in.values()),
                # the node messages it takes beyond a plain call (a rolling upgrade: docs/cluster.md)
                "speaks": sorted(NODE_SPEAKS)}

    async def _membership(self):
        self.started_ms = int(time.time() * 1000)
        backoff = 0.1
        while True:
            try:
                if self.etcd is None:
                    self.etcd = await coordination.connect(self.config.cluster_etcd, self.node.name)
                if self.membership is None:
                    self.membership = coordination.Membership(self.etcd, self.node.name, self.config.cluster_lease_s)
                await self.membership.attach(self.etcd, self._info())
                self.core.etcd_member = self.etcd.upbx_member
                self._log("etcd", "up", lease_s=self.config.cluster_lease_s, member=self.etcd.upbx_member)
                await self._members()
                backoff = 0.1
                renew_at = time.monotonic()
                return_at = time.monotonic() + self.config.cluster_etcd_return_s
                while True:
                    # wake for the renewal when it is due, not at the next load period: on 1 s steps a
                    # lease of 5 s was renewed every 2 s, 3 s before it lapsed; now every lease_s/3
                    await asyncio.sleep(max(0.05, min(LOAD_PERIOD_S, renew_at - time.monotonic())))
                    if time.monotonic() >= renew_at:
                        if not await self.membership.renew():
                            raise coordination.CoordinationError("the lease expired")
                        renew_at = time.monotonic() + self.config.cluster_lease_s / 3
                    if self.etcd.upbx_rank and self._etcd_probe is None and time.monotonic() >= return_at:
                        # a member ahead of ours in our order may answer again: asked beside the renewals
                        # (a member that hangs holds the probe up to its 5 s timeout, never the lease)
                        self._etcd_probe = asyncio.ensure_future(coordination.connect(
                            self.config.cluster_etcd, self.node.name, before=self.etcd.upbx_rank))
                    if self._etcd_probe is not None and self._etcd_probe.done():
                        probe, self._etcd_probe = self._etcd_probe, None
                        return_at = time.monotonic() + self.config.cluster_etcd_return_s
                        if probe.exception() is None:
                            await self._etcd_move(probe.result())
                    await self.membership.update(self._info())
                    await self._members()
            except asyncio.CancelledError:
                await self._etcd_probe_dropped()
                raise
            except Exception as exc:
                self._log("etcd", "down", error="%s: %s" % (exc.__class__.__name__, exc))
                await self._etcd_probe_dropped()
                if self.etcd is not None:
                    await self.etcd.close()
                    self.etcd = None
                    self.core.etcd_member = None
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _etcd_move(self, client):
        """Talk to etcd through client (a member ahead in our order that answers again: the nodes spread
        over the members again, docs/cluster.md "Which etcd member a node talks to"), keeping the lease. A
        failure on the way is etcd's (the caller connects again from the first member)."""
        was = self.etcd
        try:
            await self.membership.attach(client, self._info())
        except BaseException:
            await client.close()
            raise
        self.etcd = client
        self.core.etcd_member = client.upbx_member
        self.core.log.info("cluster-etcd", state="moved back", member=client.upbx_member, was=was.upbx_member)
        await was.close()

    async def _etcd_probe_dropped(self):
        probe, self._etcd_probe = self._etcd_probe, None
        if probe is None:
            return
        probe.cancel()
        try:
            client = await probe
        except BaseException:   # cancelled, or it found no member: nothing to close
            return
        await client.close()

    async def _members(self):
        """The nodes alive as etcd says: their names (item 3's failover starts from a node that left) and
        their addresses, which WELCOME and SYSINFO carry and frames for them are forwarded to."""
        members = await coordination.members(self.etcd)
        self.core.cluster_members = sorted(members)
        nodes, speaks = read_members(members)
        from upbx.host.daemon import now_ms
        self.core.set_cluster_nodes(nodes, now_ms(), speaks)

    # PostgreSQL: LISTEN, refresh the copy, move waiting records

    async def _listen(self):
        """NOTIFYs on one connection, snapshots on another: a notification that arrives while a snapshot
        is read sets `changed` again, and the next snapshot has it (a burst costs one or two)."""
        import psycopg
        directory = self.node.directory
        changed = asyncio.Event()
        # a write that found PostgreSQL away (its connection timed out on a hung server, while this LISTEN
        # waits on): read a snapshot now, and each second until one succeeds, so the write is tried again
        directory.lost = changed.set
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.config.cluster_postgres,
                                                                 autocommit=True) as listener, \
                        await psycopg.AsyncConnection.connect(self.config.cluster_postgres,
                                                              autocommit=True) as reader:
                    await listener.execute("LISTEN %s" % CHANNEL)
                    waiter = asyncio.ensure_future(self._notified(listener, changed))
                    try:
                        changed.set()   # what changed while nobody listened
                        while True:
                            # while writes cannot reach PostgreSQL, look again every second even
                            # without a NOTIFY: a failed write alone does not break the listener
                            wake = asyncio.ensure_future(changed.wait())
                            await asyncio.wait([waiter, wake], return_when=asyncio.FIRST_COMPLETED,
                                               timeout=None if directory.available else 1.0)
                            wake.cancel()
                            if waiter.done():
                                waiter.result()   # the listener's connection failed: raise it here
                                raise ConnectionError("the LISTEN connection closed")
                            changed.clear()
                            directory.apply(await read_snapshot(reader))
                            self._after_refresh(directory)
                            self._log("postgres", "up")
                            backoff = 0.1
                    finally:
                        waiter.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                directory.available = False
                self._log("postgres", "down", error="%s: %s" % (exc.__class__.__name__, str(exc).strip()))
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    @staticmethod
    async def _notified(listener, changed):
        async for _notify in listener.notifies():
            changed.set()

    def _after_refresh(self, directory):
        """PostgreSQL answers again: writes may go to it (a new connection, to the primary now), and the
        records that waited for it go now; on the writer's thread (replica.py), not this loop."""
        if not directory.available:
            if not self._reconnecting:
                self._reconnecting = True
                directory.reconnect_later(self._reconnected)
        elif directory.outbox():
            directory.flush_later()

    def _reconnected(self, error):
        self._reconnecting = False
        if error is not None:
            self._log("postgres", "down", error="writer: %s: %s" % (error.__class__.__name__, str(error).strip()))

    # Redis: one key per call

    async def _calls(self):
        from upbx.host.daemon import now_ms
        backoff = 0.1
        while True:
            try:
                if self.redis is None:
                    self.redis = redis_client(self.config.cluster_redis)
                    await self.redis.ping()
                    if self.state["redis"] == "down":
                        # a new connection after a failure, maybe to a replica promoted since (Sentinel):
                        # what the old primary took last may not be there
                        self.mirror.rewrite_all()
                        self.redis_rewrites += 1
                    self._log("redis", "up")
                    backoff = 0.1
                checked = 0.0
                while True:
                    if time.monotonic() - checked >= REDIS_CHECK_S:
                        await self._redis_same_server()
                        checked = time.monotonic()
                    now = now_ms()
                    writes = self.mirror.changes(self.core.switch.calls, now, self.core.wall_ms(now))
                    ended = {}
                    if writes:
                        try:
                            async with self.redis.pipeline(transaction=False) as pipe:
                                for key, value, ttl in writes:
                                    if '"ended": true' in value:
                                        pipe.eval(ENDED_IF_OURS, 1, key, value, self.node.name, ttl)
                                    else:
                                        pipe.set(key, value, ex=ttl)
                                results = await pipe.execute()
                        except BaseException:
                            self.mirror.forget(writes)
                            raise
                        ended = {key[len(KEY % ""):]: bool(result) for (key, value, _t), result in zip(writes, results)
                                 if '"ended": true' in value}
                    if self.core.records_waiting:
                        self.core.records_settled(ended, self.mirror.uids(), now_ms())
                    await self._calls_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log("redis", "down", error="%s: %s" % (exc.__class__.__name__, exc))
                if self.redis is not None:
                    await self.redis.aclose()
                    self.redis = None
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _calls_due(self):
        """Until the next write of the call keys: calls_period_ms after this one (whatever changed: a hold, a
        transfer's new party, a rewrite before the key expires), or within CALLS_MOVED_S once a call was set up,
        answered or ended (host/switch.py `moves`). A call set up just before the node's loss is then in Redis and
        carried on by its successor; with the period alone one set up less than a period before was lost, and a
        call's record waited up to a period for its ended key (MainHost.records_waiting)."""
        switch = self.core.switch
        seen = switch.moves
        end = time.monotonic() + self.config.cluster_calls_period_ms / 1000
        while switch.moves == seen:
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(CALLS_MOVED_S, left))

    async def _redis_same_server(self):
        """Rewrite every live call's key when Redis is another server than last time (its run_id): a replica
        Sentinel promoted (redis-py's pool reconnects to it by itself, without an error here) may lack the
        primary's last writes, and a restarted Redis without persistence has none."""
        run_id = (await self.redis.info("server")).get("run_id")
        if self.redis_run_id is not None and run_id != self.redis_run_id:
            self.mirror.rewrite_all()
            self.redis_rewrites += 1
            self.core.log.info("cluster-redis", state="up", server="another (failover or restart)",
                               calls=len(self.mirror.written))
        self.redis_run_id = run_id

    # failover: calls of a silent node, taken over from Redis (calls.py Takeover)

    async def _takeover(self):
        """Every TAKEOVER_PERIOD_S while call numbers are asked for: their calls' uids from the leg keys,
        then those calls' keys (two MGETs, O(asked for)), adopting each live call found."""
        from upbx.host.daemon import now_ms
        takeover = self.core.takeover
        while True:
            try:
                await asyncio.sleep(TAKEOVER_PERIOD_S)
                if self.redis is None or not (takeover.want or takeover.held_want or takeover.uid_want):
                    continue
                wanted = takeover.wanted(now_ms())
                by_uid = set(takeover.uid_want)   # a conference's other calls, asked for by their uids
                if not wanted and not by_uid:
                    continue
                asked = sorted(wanted)
                uids = set(by_uid)
                for at in range(0, len(asked), 500):
                    uids.update(u.decode() for u in await self.redis.mget([LEG_KEY % w for w in asked[at:at + 500]])
                                if u is not None)
                uids = sorted(uids)
                for at in range(0, len(uids), 500):
                    for raw in await self.redis.mget([KEY % u for u in uids[at:at + 500]]):
                        if raw is None:
                            continue
                        value = json.loads(raw)
                        legs = (value.get("legs") or {}).values()
                        if value.get("uid") not in by_uid and not any(
                                (leg["link"]["kind"], leg["link"]["name"], leg["call_no"]) in wanted for leg in legs):
                            continue   # the leg key named a call that has this number no longer
                        now = now_ms()
                        problem = takeover.adopt(value, now, self.core.wall_ms(now))
                        if problem is not None and problem != "have it":
                            self.core.log.info("call-takeover-waits", call=value.get("uid"), reason=problem)
                self.daemon._flush()   # what adopting sent (deferred messages passed on) goes now
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.core.log.warning("call-takeover", error="%s: %s" % (exc.__class__.__name__, exc))
                await asyncio.sleep(0.5)
