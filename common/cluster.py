"""A main host cluster on the wire (issue 16 item 2, docs/cluster.md "Datagrams to the right node").

What a client and every node agree on, with no table to look up:

- which node a client greets first: `rendezvous(identity, node_ids)`, highest random weight
  (Thaler and Ravishankar's rendezvous hashing; a node's loss moves only its own identities, a
  new node takes about 1/N of them);
- which node and worker a datagram belongs to: the node and worker are bits of the receiver's
  session index, and the node bits of the call number (as QUIC-LB puts a server id in a QUIC
  connection id), behind version bits, so the layout can change while sessions made with the
  old one live on;
- where the nodes are: IE cluster_nodes in WELCOME and the system information,
  `decode_nodes` (a node makes them: common/cluster_make.py).

Layout version 1 (the only one today; etcd's /upbx/layout says which one a cluster gives out):

    session index (22 bits)   vv nnnn llllllllllllll www    v version 1..3 (0: not a cluster index)
                                                             n node 1..15, l 13 bits, w worker 0..7
    call number (15 bits)     nnnn ccccccccccc              n node 1..15, c 11 bits (no version bits)

Capacity of version 1: 15 nodes; 8 workers per node, 8,192 sessions per worker (65,536 remote
hosts and phones straight at one node); 2,048 call legs per link, numbered per remote host's or
phone's session and per pair of nodes (docs/cluster.md, "Call legs per link"). A call number has
no worker bits: phones' mini frames are the main process's on every node (the workers take trunk
frames, and those name their session index). Nor version bits: a call lives minutes where a
session lives days, and the 15 bits are the cluster's whole call capacity (one version bit would
halve it); a later layout takes call numbers once the calls of the old one have ended, and a frame
a node forwards by the wrong layout meanwhile meets no leg, or another leg's key, and is dropped.
A standalone main host uses none of this: its indexes and call numbers are what they always were.

Pure functions on ints and bytes: this module imports under MicroPython (a handset picks its
node with it), and allocates nothing per frame beyond the ints it returns.
"""
from .compat import const, sha256

LAYOUT = const(1)            # the layout this code gives out
VERSION_SHIFT = const(20)
NODE_SHIFT = const(16)
LOCAL_SHIFT = const(3)
NODE_MASK = const(0xF)
LOCAL_MASK = const(0x1FFF)
WORKER_MASK = const(0x7)
MAX_NODE = const(15)
MAX_WORKERS = const(8)
LOCAL_SESSIONS = const(0x2000)    # per worker
CALL_NODE_SHIFT = const(11)
CALL_LOCAL_MASK = const(0x7FF)
LOCAL_CALLS = const(0x800)        # call legs per link (a session, a pair of nodes)
NODE_ENTRY = const(7)             # cluster_nodes: node id, IPv4 (4), port (2)


def index_version(index):
    """The layout version of a session index (0: not made by a cluster node)."""
    return (index >> VERSION_SHIFT) & 3


def index_node(index):
    """The node id in a session index, or None when its layout is not one this code reads."""
    if (index >> VERSION_SHIFT) & 3 != LAYOUT:
        return None
    node = (index >> NODE_SHIFT) & NODE_MASK
    return node or None


def index_worker(index):
    """The worker id in a session index of this code's layout (0..7), else None."""
    if (index >> VERSION_SHIFT) & 3 != LAYOUT:
        return None
    return index & WORKER_MASK


def index_local(index):
    """The node's own part of a session index (its 13 local bits)."""
    return (index >> LOCAL_SHIFT) & LOCAL_MASK


def call_no_node(call_no):
    """The node id in a call number (layout LAYOUT), or None (node 0: nobody's)."""
    node = (call_no >> CALL_NODE_SHIFT) & NODE_MASK
    return node or None


def identity(kind, name):
    """The bytes a client's rendezvous is computed on: b"host/NAME" or b"phone/EXT" (kind, name
    as in HELLO: a remote host's host_name, a phone's extension)."""
    return ("%s/%s" % (kind, name)).encode()


def _weight(identity, node):
    # the id's complement last: of two equal weights (2**-64) the lower id sorts first, with no
    # reliance on a stable sort (MicroPython's is not)
    return sha256(bytes(identity) + bytes((0, node))).digest()[:8] + bytes((255 - node,))


def rendezvous(identity, node_ids):
    """node_ids ordered by highest random weight for identity (bytes or str): the first is the
    identity's home, the second its standby. The weight is the first 8 bytes of
    SHA-256(identity || 0x00 || node id), compared as big-endian numbers; a tie (2**-64) goes to
    the lower id."""
    if isinstance(identity, str):
        identity = identity.encode()
    return sorted(node_ids, key=lambda node: _weight(identity, node), reverse=True)


def ranked(identity, nodes):
    """nodes ([(node_id, address)], as decode_nodes gives) in identity's rendezvous order: the first
    is where its client greets first, the second its standby."""
    order = rendezvous(identity, [node for node, _address in nodes])
    by_id = dict(nodes)
    return [(node, by_id[node]) for node in order]


def successor(home, node_ids):
    """The standby of every client whose home is node home: the first other node in the rendezvous
    order of b"node/HOME". One per node, not per client: all of a node's clients fail over to the
    same survivor, which then holds both legs of every call the lost node relayed (as CUCM pairs a
    subscriber with its backup); None when home is alone."""
    for node in rendezvous(identity("node", home), node_ids):
        if node != home:
            return node
    return None


def decode_nodes(data):
    """[(node_id, (ipv4, port))] of IE cluster_nodes; ValueError names what is wrong (a layout this
    code does not know, a cut entry, a node id outside 1..15 or twice, port 0)."""
    if len(data) < 1:
        raise ValueError("cluster_nodes: empty")
    if data[0] != LAYOUT:
        raise ValueError("cluster_nodes: layout %d, this code knows %d" % (data[0], LAYOUT))
    if (len(data) - 1) % NODE_ENTRY:
        raise ValueError("cluster_nodes: %d bytes after the version, not whole entries of %d"
                         % (len(data) - 1, NODE_ENTRY))
    nodes = []
    seen = set()
    for at in range(1, len(data), NODE_ENTRY):
        node = data[at]
        port = (data[at + 5] << 8) | data[at + 6]
        if not 1 <= node <= MAX_NODE or node in seen:
            raise ValueError("cluster_nodes: node id %d at offset %d" % (node, at))
        if not port:
            raise ValueError("cluster_nodes: port 0 at offset %d" % (at + 5))
        seen.add(node)
        nodes.append((node, ("%d.%d.%d.%d" % (data[at + 1], data[at + 2], data[at + 3], data[at + 4]), port)))
    return nodes


# the free heap (after a collection) a handset needs to take a standby session (common/standby.py,
# 2.2 KB of code as .mpy, and the session's 3.9 KB) and still have room for a call (docs/handset.md);
# with less (the 100K .mpy build at a node) it keeps none and logs so
_STANDBY_ROOM = const(16384)
# a phone at a node without room for a standby: PING every 2 s, 2 s of silence after that its session's loss (not the
# node's 20 s keepalive): a node's death is noticed within 4 s, in time for the grace period (common/grace.py)
_NO_STANDBY_KEEPALIVE_MS = const(2000)
_NO_STANDBY_DEAD_MS = const(2000)


def phone_event(phone, event, now=0):
    """A login event of a phone straight at a cluster's node (common/phone.py). On LoginUp: the nodes
    from the WELCOME, and a standby session to the home node's successor (common/standby.py, loaded
    only when there is room for it). On the session's loss with the standby up: the standby becomes
    the session as it is, no handshake, the call goes on (True: the phone carries on as if nothing
    happened). With no standby up but a call: the grace period (below), the calls kept while the
    phone logs in at the lost node's successor and names them there (True: the LoginDown is passed
    on, its calls are not ended). Else phone.host_next is where the next login goes: the first node in
    the phone's rendezvous order, or the second if the first was the one lost; after HELLOs that
    nobody answered, the node after that one. Here, not in common/phone.py: a handset at a standalone
    main host never loads it."""
    from .login import LoginUp
    if type(event) is LoginUp:
        phone.cluster_nodes = event.welcome.get(0x31, phone.cluster_nodes)   # IE cluster_nodes
        phone._node_up = index_node(event.welcome.get(0x03, 0))               # IE session_index
        if phone.standby is not None or _room():
            from . import standby
            standby.choose(phone, now)
        else:
            phone.no_standby = True   # said with the registration (firmware/ota.py): App.flush has nothing to do for it
            phone.login.set_keepalive(_NO_STANDBY_KEEPALIVE_MS, _NO_STANDBY_DEAD_MS, now)   # (common/grace.py)
        if getattr(phone, "grace", 0):
            from .grace import name   # calls kept through the loss: named to this node (common/grace.py)
            name(phone, now)
        _let_go(phone)
        return False
    if phone.standby is not None and phone.standby.state == "up":
        from . import standby
        standby.switch(phone, now)
        return True
    _let_go(phone)
    try:
        order = ranked(identity("phone", phone.extension), decode_nodes(phone.cluster_nodes))
    except ValueError:
        return False
    ids = [n for n, _a in order]
    if phone.call is not None:
        from .grace import lost   # a call at the loss: the grace period, or its end (common/grace.py)
        if lost(phone, event, order, ids, successor):
            return True
    if phone._node_up is not None:
        at = ids.index(phone._node_up) if phone._node_up in ids else -1
        pick = 0 if at != 0 else 1
    else:
        at = ids.index(phone._node_tried) if phone._node_tried in ids else -1
        pick = at + 1
    phone._node_up = None
    phone._node_tried = ids[pick % len(ids)]
    phone.host_next = order[pick % len(ids)][1]
    return False


def _let_go(phone):
    """A phone with no standby: this code and common/standby.py leave its heap until its next login
    event (a handset at a node without room for a standby, docs/handset.md)."""
    if phone.standby is None:
        from .compat import forget
        forget("common.standby")
        forget("common.cluster")


def _room():
    """True when the heap has room for a standby session (always on CPython)."""
    import gc
    free = getattr(gc, "mem_free", None)
    if free is None:
        return True
    gc.collect()
    return free() >= _STANDBY_ROOM
