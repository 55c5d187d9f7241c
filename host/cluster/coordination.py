"""What the nodes agree on, in etcd (v3 API through aetcd): identity, shared secrets, membership.

Keys, all under /upbx/:
  layout                 the session index / call number layout version (INDEX_LAYOUT); a node
                         that knows another refuses to start (common/cluster.py)
  cookie-secret          32 bytes: the HELLO cookie secret every node uses, so a RESPONSE to one
                         node's CHALLENGE is accepted by any (host/peers.py)
  cluster-key            32 bytes: seals the media keys in the per-call Redis keys (calls.py)
  node-ids/NAME          a node's number, 1..MAX_NODES, kept for good (a restart gets it back)
  node-id-owner/N        its name: two names never get one number
  nodes/NAME             JSON of a live node (id, listen address, pid, its load), on a lease of
                         lease_s that the node renews: killed or cut off, it is gone lease_s later

The first node creates the secrets, each in one transaction (create if absent): nodes that
start together all end up with the one that won.
"""
import hashlib
import json
import secrets

import aetcd
import aetcd.leases

from upbx.common import cluster
from upbx.host.daemon import ServiceError

PREFIX = b"/upbx/"
INDEX_LAYOUT = cluster.LAYOUT   # common/cluster.py: node and worker ids in session indexes and call numbers
MAX_NODES = cluster.MAX_NODE    # the node ids layout 1 has room for


class CoordinationError(ServiceError):
    """etcd cannot be reached, or says this node must not start; one line for the operator."""


def endpoint_order(name, endpoints):
    """endpoints ([(host, port)]) in node `name`'s rendezvous order: the first the one it talks to, the
    others where it goes, in that order, when that one does not answer. Each endpoint's weight is the first
    8 bytes of SHA-256(name || 0x00 || "host:port"), the highest first, as common/cluster.py ranks nodes; a
    tie (2**-64) keeps the configured order. So the nodes of a cluster spread over the etcd members (each
    ~1/N of them on each), where the configured order alone put every node on the first one; without a
    name (`upbx cluster status`, a tool), the configured order."""
    if name is None:
        return list(endpoints)

    def weight(item):
        index, (host, port) = item
        digest = hashlib.sha256(name.encode() + b"\x00" + ("%s:%d" % (host, port)).encode()).digest()
        return (-int.from_bytes(digest[:8], "big"), index)
    return [endpoint for _index, endpoint in sorted(enumerate(endpoints), key=weight)]


async def connect(endpoints, name=None, before=None):
    """An aetcd.Client on the first endpoint that answers, in node `name`'s order (endpoint_order); its
    `upbx_rank` is that endpoint's place in the order (0: the first) and `upbx_member` its "host:port".
    before: only the endpoints ranked ahead of that place (a node moving back to a member that returned)."""
    problems = []
    for rank, (host, port) in enumerate(endpoint_order(name, endpoints)[:before]):
        client = aetcd.Client(host=host, port=port, timeout=5)
        try:
            await client.connect()
            await client.get(PREFIX + b"layout")
        except Exception as exc:   # aetcd raises its own ConnectionFailedError, grpc's errors, OSError
            problems.append("%s:%d: %s" % (host, port, exc.__class__.__name__))
            await client.close()
            continue
        client.upbx_rank, client.upbx_member = rank, "%s:%d" % (host, port)
        return client
    raise CoordinationError("etcd unreachable (%s)" % "; ".join(problems))


async def create_or_get(client, key, value):
    """The value at key: value if this call created it, else the one already there."""
    key = PREFIX + key
    created, _ = await client.transaction(compare=[client.transactions.version(key) == 0],
                                          success=[client.transactions.put(key, value)], failure=[])
    if created:
        return value
    return (await client.get(key)).value


async def node_id(client, name):
    """This node's number (1..MAX_NODES): the one it had, or the lowest free one."""
    by_name = PREFIX + b"node-ids/" + name.encode()
    for number in range(1, MAX_NODES + 1):
        had = await client.get(by_name)
        if had is not None:
            return int(had.value)
        owner = PREFIX + b"node-id-owner/%d" % number
        taken, _ = await client.transaction(
            compare=[client.transactions.version(owner) == 0, client.transactions.version(by_name) == 0],
            success=[client.transactions.put(owner, name.encode()), client.transactions.put(by_name, b"%d" % number)],
            failure=[])
        if taken:
            return number
    had = await client.get(by_name)
    if had is not None:
        return int(had.value)
    raise CoordinationError("no free node number: %d nodes have been named (etcd %snode-ids/)"
                            % (MAX_NODES, PREFIX.decode()))


async def identity(client, name):
    """{"node_id", "cookie_secret", "cluster_key", "layout"} of this node; CoordinationError when the
    cluster's layout is not this code's."""
    layout = int(await create_or_get(client, b"layout", b"%d" % INDEX_LAYOUT))
    if layout != INDEX_LAYOUT:
        raise CoordinationError("the cluster's index layout is version %d; this node knows version %d"
                                % (layout, INDEX_LAYOUT))
    return {
        "node_id": await node_id(client, name),
        "cookie_secret": await create_or_get(client, b"cookie-secret", secrets.token_bytes(32)),
        "cluster_key": await create_or_get(client, b"cluster-key", secrets.token_bytes(32)),
        "layout": layout,
    }


class Membership:
    """This node's key under nodes/, on a lease it renews; `update(info)` rewrites what it says."""

    def __init__(self, client, name, lease_s):
        self.client = client
        self.key = PREFIX + b"nodes/" + name.encode()
        self.lease_s = lease_s
        self.lease = None
        self.info = {}

    async def join(self, info):
        """Take nodes/NAME on a new lease; CoordinationError while another live node has the name."""
        self.info = info
        self.lease = await self.client.lease(self.lease_s)
        value = json.dumps(info, sort_keys=True).encode()
        taken, _ = await self.client.transaction(
            compare=[self.client.transactions.version(self.key) == 0],
            success=[self.client.transactions.put(self.key, value, lease=self.lease)], failure=[])
        if not taken:
            await self.lease.revoke()
            self.lease = None
            held = await self.client.get(self.key)
            raise CoordinationError("node name %r is held by a live node: %s"
                                    % (self.key[len(PREFIX) + 6:].decode(), held.value.decode() if held else "?"))

    async def attach(self, client, info):
        """Join on client; after a lost connection, keep the lease this node still holds if it has not
        expired (the node never left), else join anew."""
        self.client = client
        if self.lease is not None:
            self.lease = aetcd.leases.Lease(self.lease.id, self.lease_s, client)
            if await self.renew():
                self.info = {}
                await self.update(info)
                return
            self.lease = None
        await self.join(info)

    async def renew(self):
        """Refresh the lease; False when it had expired (the node must join again)."""
        response = await self.lease.refresh()
        return response.TTL > 0

    async def update(self, info):
        if info != self.info:
            self.info = info
            await self.client.put(self.key, json.dumps(info, sort_keys=True).encode(), lease=self.lease)

    async def leave(self):
        if self.lease is not None:
            await self.lease.revoke()
            self.lease = None


async def members(client):
    """{name: info} of the live nodes."""
    out = {}
    for item in await client.get_prefix(PREFIX + b"nodes/"):
        out[item.key[len(PREFIX) + 6:].decode()] = json.loads(item.value)
    return out
