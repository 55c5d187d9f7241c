"""Datagrams to the right node (issue 16 item 2; docs/cluster.md, docs/protocol.md section 14).

A node gives out session indexes and call numbers with its node id in them (common/cluster.py),
so any node tells from a frame's first 3 bytes whose it is. `Router` is the main host's side of
that: the live nodes and their addresses (from etcd, kept by host/cluster/node.py), the IE
cluster_nodes it puts in WELCOME and SYSINFO, and FORWARDED, the one-hop envelope a node sends
another node's frame on in, with the client's source address and a tag only nodes can make.
"""
import hmac

from upbx.common import cluster, cluster_make, wire
from upbx.common.crypto import hkdf
from upbx.host.limits import TokenBuckets

FORWARD_INFO = b"upbx v2 forward"
# 80 00 00 | seq 0 | ack 0 | FORWARDED, then IE address (2 + 6) and IE node (2 + 1)
_HEAD = bytes((0x80, 0, 0, 0, 0, 0, 0))
ENVELOPE_HEAD = wire.FULL_HEADER + 8 + 3
ENVELOPE = ENVELOPE_HEAD + wire.FULL_TAG

# What a node forwards for others (docs/cluster.md, "What a node forwards"): it cannot check a frame's
# tag (the session's keys are the owner's), so what it sends on is bounded instead. A source (an IP
# address, as the handshake's buckets) gets FORWARD_RATE_PER_S a second with a burst of FORWARD_BURST:
# a site whose client has a wrong address (its trunk frames, signalling, a phone's voice at 50 a
# second) fits in it many times over; a flood from one address costs the owner at most that. All
# sources together get FORWARD_ALL_PER_S (a flood from many or spoofed addresses): 20,000 hops a second
# are about a quarter of a core at the 12 us a hop measured (docs/cluster.md).
FORWARD_RATE_PER_S = 1000
FORWARD_BURST = 2000
FORWARD_ALL_PER_S = 20000
# the least a frame of each kind is, for the owner to take it (shorter is dropped where it lands)
_LEAST = {wire.KIND_MINI: wire.MINI_HEADER + wire.MEDIA_TAG,
          wire.KIND_TRUNK: wire.TRUNK_HEADER + wire.TRUNK_ENTRY_HEADER + wire.MEDIA_TAG,
          wire.KIND_FULL: wire.FULL_HEADER + wire.FULL_TAG}


def forward_key(cookie_secret):
    """Kf: the key of FORWARDED's tag, from the cluster's cookie secret (etcd)."""
    return hkdf(bytes(cookie_secret), b"", FORWARD_INFO, 32)


def parse_address(text):
    """("a.b.c.d", port) of "a.b.c.d:port"."""
    host, _, port = text.rpartition(":")
    return host, int(port)


class Router:
    """This node's view of the cluster for datagrams: which node owns a frame, and the envelope."""

    def __init__(self, node_id, cookie_secret, stats):
        self.node_id = node_id
        self.key = forward_key(cookie_secret)
        self.stats = stats
        self.address = None          # ours, as clients and nodes reach us ([cluster] address, or the bound listen address)
        self.nodes = {}              # node id -> (ipv4, port) of every live node, ours included
        self.encoded = None          # IE cluster_nodes: ours first, then the others by id; None until we know our address
        self.forwarded_out = {}      # node id -> datagrams sent on to it
        self.forwarded_in = {}       # node id -> datagrams it sent on to us
        self.addresses = set()       # the live nodes' addresses: nothing from them is a client's
        self.per_source = TokenBuckets(FORWARD_RATE_PER_S, FORWARD_BURST)
        self.all_sources = TokenBuckets(FORWARD_ALL_PER_S, FORWARD_ALL_PER_S)

    def set_address(self, address):
        self.address = (address[0], address[1])
        self.set_nodes(dict(self.nodes))

    def set_nodes(self, nodes):
        """The live nodes {node id: (ipv4, port)} (etcd's members); ours is always one of them."""
        nodes = dict(nodes)
        if self.address is not None:
            nodes[self.node_id] = self.address
        if nodes == self.nodes and self.encoded is not None:
            return False
        self.nodes = nodes
        self.addresses = set(nodes.values())
        if self.address is not None:
            order = [self.node_id] + sorted(n for n in nodes if n != self.node_id)
            self.encoded = cluster_make.encode_nodes([(n, nodes[n]) for n in order])
        return True

    # whose is a datagram

    def index_owner(self, index):
        """The other live node a session index names, else None (ours, not a node's, a node not alive)."""
        return self._other_live(cluster.index_node(index))

    def call_owner(self, call_no):
        """The other live node a call number names, else None."""
        return self._other_live(cluster.call_no_node(call_no))

    def _other_live(self, node):
        if node is None or node == self.node_id:
            return None
        if node not in self.nodes:
            self.stats.drop("cluster: node %d not alive" % node)
            return None
        return node

    # FORWARDED

    def may_forward(self, kind, data, source, now):
        """True when a frame of another node's may be sent on (else dropped and counted): one a client
        could have sent (not from a node's own address: a node never sends another a client's frame
        but in FORWARDED, and one "from" a node could make the owner answer a node, a loop), of a form
        the owner could take, within its source's and all sources' buckets."""
        if (source[0], source[1]) in self.addresses:
            self.stats.drop("cluster: forward from a node's address")
            return False
        if len(data) < _LEAST[kind]:
            self.stats.drop("cluster: forward of a frame cut short")
            return False
        if not self.per_source.take(source[0], now):
            self.stats.drop("cluster: forward rate limited (source)")
            return False
        if not self.all_sources.take(None, now):
            self.stats.drop("cluster: forward rate limited (all sources)")
            return False
        return True

    def wrap(self, node, data, source):
        """(envelope, the node's address): data from source, on to node."""
        host, port = source[0], source[1]
        head = bytearray(_HEAD)
        head.append(wire.FORWARDED)
        head += bytes((wire.IE_ADDRESS, 6)) + bytes(int(p) for p in host.split(".")) + bytes((port >> 8, port & 0xFF))
        head += bytes((wire.IE_NODE, 1, self.node_id))
        head += data
        head += hmac.digest(self.key, bytes(head), "sha256")[:wire.FULL_TAG]
        self.forwarded_out[node] = self.forwarded_out.get(node, 0) + 1
        self.stats.count("cluster forwarded out")
        return bytes(head), self.nodes[node]

    def unwrap(self, data):
        """(datagram, client address) of a FORWARDED from a node, else None (dropped and counted)."""
        if len(data) <= ENVELOPE or data[8] != wire.IE_ADDRESS or data[9] != 6 or data[16] != wire.IE_NODE \
                or data[17] != 1 or data[1] or data[2] or data[0] & 0x3F:
            self.stats.drop("cluster: malformed forward")
            return None
        if not hmac.compare_digest(hmac.digest(self.key, bytes(data[:-wire.FULL_TAG]), "sha256")[:wire.FULL_TAG],
                                   bytes(data[-wire.FULL_TAG:])):
            self.stats.drop("cluster: forward bad tag")
            return None
        node = data[18]
        self.forwarded_in[node] = self.forwarded_in.get(node, 0) + 1
        self.stats.count("cluster forwarded in")
        address = ("%d.%d.%d.%d" % (data[10], data[11], data[12], data[13]), (data[14] << 8) | data[15])
        return bytearray(data[ENVELOPE_HEAD:-wire.FULL_TAG]), address   # opened in place, as a datagram read

    def status(self):
        return {"node_id": self.node_id, "address": "%s:%d" % self.address if self.address else None,
                "nodes": {str(n): "%s:%d" % a for n, a in sorted(self.nodes.items())},
                "forwarded_out": {str(n): c for n, c in sorted(self.forwarded_out.items())},
                "forwarded_in": {str(n): c for n, c in sorted(self.forwarded_in.items())}}
