"""A cluster's node side of the wire layout (common/cluster.py, docs/cluster.md "Datagrams to the right node"):
making session indexes, call numbers and the node list (IE cluster_nodes).

Apart from common/cluster.py, which reads them: a handset only reads them, and loads common/cluster.py at every
login event at a node, with its heap at its tightest (the 100K `.mpy` build: docs/handset.md). These three take
784 B of it on the 32-bit build, and a handset never calls them. Pure functions: imports under MicroPython
(tests/common/test_cluster_layout.py checks them under both interpreters).
"""
from .cluster import (CALL_NODE_SHIFT, LAYOUT, LOCAL_CALLS, LOCAL_SESSIONS, LOCAL_SHIFT, MAX_NODE, MAX_WORKERS,
                      NODE_SHIFT, VERSION_SHIFT)


def make_index(node, worker, local):
    """The session index of node's worker's local number (0..8191), in layout LAYOUT."""
    if not 1 <= node <= MAX_NODE or not 0 <= worker < MAX_WORKERS or not 0 <= local < LOCAL_SESSIONS:
        raise ValueError("node %d, worker %d, local %d outside layout %d" % (node, worker, local, LAYOUT))
    return (LAYOUT << VERSION_SHIFT) | (node << NODE_SHIFT) | (local << LOCAL_SHIFT) | worker


def make_call_no(node, local):
    """The call number of node's local number (0..2047), in layout LAYOUT."""
    if not 1 <= node <= MAX_NODE or not 0 <= local < LOCAL_CALLS:
        raise ValueError("node %d, call %d outside layout %d" % (node, local, LAYOUT))
    return (node << CALL_NODE_SHIFT) | local


def encode_nodes(nodes):
    """IE cluster_nodes of [(node_id, (ipv4, port))]: the layout version (1 byte), then per node its
    id (1 byte), IPv4 address (4) and UDP port (2), in the order given."""
    out = bytearray((LAYOUT,))
    for node, address in nodes:
        host, port = address
        parts = host.split(".")
        if not 1 <= node <= MAX_NODE or len(parts) != 4 or not 0 < port < 65536:
            raise ValueError("cluster node %r at %r" % (node, address))
        out.append(node)
        for part in parts:
            out.append(int(part))
        out.append(port >> 8)
        out.append(port & 0xFF)
    if len(out) > 255:
        raise ValueError("%d cluster nodes do not fit in one IE" % len(nodes))
    return bytes(out)
