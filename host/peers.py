"""The peers of a host: answers their logins, owns each one's channel and address.

A peer is its session (its keys), not its address: the address is updated from
every authenticated frame that is new (not a replay or a duplicate), so a NAT
rebinding or a new public address costs nothing (B7) and a replayed frame moves
nothing. Nothing is allocated for a datagram until it authenticates.

Handshakes are unauthenticated work: each source address has a token bucket
(host.limits), and the handshake key of an identity is derived once and kept
until the directory changes (forget_keys), so a forged HELLO costs one HMAC.
"""
import heapq
import hmac
import os
import secrets
import sys

from upbx.common import cluster, cluster_make, wire
from upbx.common.reliable import Channel
from upbx.common.session import (COOKIE_BUCKET_MS, handshake_key, identity_of, make_cookie,
                            parse_handshake, seal_handshake, session_keys, verify_handshake)
from upbx.host.limits import FAILURE_COST, TokenBuckets
from upbx.host.session_crypto import HostSessionCrypto

KEY_CACHE = 65536   # identities whose handshake key (or absence) is kept; more and the cache starts afresh
PUMP_PEERS = 64     # expired(now, pump): peers looked at between two pump() calls (a few microseconds of work)


def _shared(address):
    """address with its IP text interned: the phones of a site behind one NAT share one string."""
    return (sys.intern(address[0]),) + tuple(address[1:])


class HandshakeKey:
    """What a host keeps of an identity between its logins: the handshake key and the secret
    as one bytes object (key || secret) and the identity tuple ("phone" or "host", name) that
    the peer, its link and the host's tables share, so a registered phone's name and identity
    exist once. Tags and verifies with the stdlib's HMAC (C)."""

    __slots__ = ("material", "identity", "site")

    def __init__(self, key, secret, identity, site=None):
        self.material = bytes(key) + bytes(secret)
        self.identity = identity
        self.site = site   # the site the host's look-up named with the secret (shared by its phones), or None

    @property
    def key(self):
        return self.material[:32]

    @property
    def secret(self):
        return self.material[32:]

    def tag(self, msg, size):
        return hmac.digest(self.material[:32], bytes(msg), "sha256")[:size]

    def verify(self, msg, received, size):
        return len(received) == size and hmac.compare_digest(self.tag(msg, size), bytes(received))


class Peer:
    """One logged-in client: a phone or a remote host."""

    __slots__ = ("index", "_dirty", "identity", "kind", "name", "channel", "address", "last_seen_ms",
                 "logged_in_ms", "client_nonce", "address_changes", "moved")

    def __init__(self, index, kind, name, channel, address, now_ms, client_nonce, dirty=None, identity=None):
        self.index = index
        self._dirty = dirty if dirty is not None else set()
        self.identity = identity or (kind, name)   # the key of by_identity (and the main host's links_by_name)
        self.kind = kind            # "phone" or "host"
        self.name = name
        self.channel = channel
        self.address = address
        self.last_seen_ms = now_ms
        self.logged_in_ms = now_ms
        self.client_nonce = client_nonce
        self.address_changes = 0
        self.moved = False          # the last authenticated frame came from a new address

    def send(self, msg_type, ies, now):
        """Queue a message on this peer's channel; the daemon flushes it at the end of the turn."""
        self.channel.send(msg_type, ies, now)
        self._dirty.add(self)

    def send_encoded(self, msg_type, payload, now):
        """send, with the IEs encoded already (wire.encode_ies)."""
        self.channel.send_encoded(msg_type, payload, now)
        self._dirty.add(self)

    def __repr__(self):
        return "<Peer %s:%s #%d at %s>" % (self.kind, self.name, self.index, self.address)


class PeerTable:
    """Logins and live sessions of one host, keyed by our receive index."""

    def __init__(self, lookup_secret, stats, ttl_ms, phone_keepalive_ms=None, host_ttl_ms=None, cookie_secret=None):
        # ("phone" or "host", name) -> secret bytes, or (secret, site) to keep the site with the key, or None
        self.lookup_secret = lookup_secret
        self.stats = stats
        self.ttl_ms = ttl_ms                 # a phone's registration lives this long without a new frame
        self.host_ttl_ms = host_ttl_ms or ttl_ms   # ... and a remote host's login (keepalive_timeout_s)
        self.phone_keepalive_ms = phone_keepalive_ms  # told to phones in WELCOME (None: theirs)
        # a cluster's nodes share one (etcd, host/cluster/coordination.py): any node checks another's cookie
        self._cookie_secret = cookie_secret or secrets.token_bytes(32)
        self.peers = {}                     # index -> Peer
        self.dirty = set()                  # peers with messages queued since the last flush
        self._timers = []                   # heap of (time, index): when a channel's timer may be due
        self._used_nonces = {}              # client nonce -> time, while its cookie could still be valid
        self._prune_at = 1024
        self.by_identity = {}               # ("phone" or "host", name) -> Peer
        self._next_index = int.from_bytes(os.urandom(2), "big") + 1
        self._reserved = set()              # our indices used by something else (a login, a pair)
        self._keys = {}                     # (kind, name) -> HandshakeKey or None
        self.buckets = TokenBuckets()       # handshakes per source address
        self.moves = 0                      # peers' address changes so far (what owns an address may change)
        # a node of a cluster (docs/cluster.md): its indexes carry its node id and the worker (the socket of
        # the reuseport group, host/relay_workers.py) that is to take its trunk frames (common/cluster.py)
        self.node_id = None
        self.workers = 1
        self.cluster_nodes = None           # IE cluster_nodes for WELCOME (host/cluster/route.py), or None

    def _allocate_index(self):
        if self.node_id is not None:
            return self._allocate_node_index()
        while True:
            self._next_index = self._next_index % wire.MAX_SESSION + 1
            if self._next_index not in self.peers and self._next_index not in self._reserved:
                return self._next_index

    def _allocate_node_index(self):
        """The next free index of this node, its sessions dealt round the workers; None when all
        (8,192 a worker) are taken."""
        workers = min(self.workers, cluster.MAX_WORKERS)
        room = cluster.LOCAL_SESSIONS * workers
        for _ in range(room):
            self._next_index = (self._next_index + 1) % room
            index = cluster_make.make_index(self.node_id, self._next_index % workers, self._next_index // workers)
            if index not in self.peers and index not in self._reserved:
                return index
        return None

    def reserve_index(self):
        """An index no peer will get: for the host's own login or a pair, whose frames share the port."""
        index = self._allocate_index()
        self._reserved.add(index)
        return index

    def release_index(self, index):
        self._reserved.discard(index)

    def forget_keys(self):
        """The directory changed: look every identity up again at its next handshake."""
        self._keys.clear()

    def _handshake_key(self, identity):
        """The HandshakeKey of an identity, or None; derived once per directory version."""
        if identity in self._keys:
            return self._keys[identity]
        secret, site = self.lookup_secret(identity), None
        if isinstance(secret, tuple):
            secret, site = secret
        entry = None if secret is None else HandshakeKey(handshake_key(secret).key, secret, identity, site)
        if entry is not None:
            self.stats.count("handshake keys derived")
        if len(self._keys) >= KEY_CACHE:
            self._keys.clear()
        self._keys[identity] = entry
        return entry

    def site_of(self, identity):
        """The site the look-up named with identity's secret (while its key is kept), else None."""
        key = self._keys.get(identity)
        return key.site if key is not None else None

    def _failed(self, address, reason):
        """A handshake that failed: counted, and it costs its source extra tokens."""
        self.stats.drop(reason)
        self.stats.count("login refused: " + reason)   # "bad tag" is a session frame's drop too
        self.buckets.charge(address[0], FAILURE_COST)
        return None, None

    def handle_handshake(self, datagram, address, now):
        """Reply datagram for a HELLO or RESPONSE (or None); returns (reply, new_peer_or_None)."""
        if not self.buckets.take(address[0], now):
            self.stats.drop("handshake rate limited")
            self.stats.count("login refused: handshake rate limited")
            return None, None
        try:
            _index, msg_type, ies = parse_handshake(datagram)
        except wire.DecodeError:
            self.buckets.charge(address[0], FAILURE_COST)
            raise
        named = identity_of(ies)   # ("ext", number) or ("host", name), as the handshake names it
        if named is None or wire.IE_SESSION_INDEX not in ies or wire.IE_NONCE not in ies:
            return self._failed(address, "handshake missing IEs")
        key = self._handshake_key(("phone" if named[0] == "ext" else "host", named[1]))
        if key is None:
            return self._failed(address, "unknown identity")
        identity = key.identity   # the one tuple (and name) the peer and the tables share
        if not verify_handshake(key, datagram):
            return self._failed(address, "bad tag")
        client_index = ies[wire.IE_SESSION_INDEX]
        nonce = ies[wire.IE_NONCE]
        addr_text = "%s:%d" % address
        node = self.node_id   # a cluster's node names itself in its cookies (None: a standalone host)
        if msg_type == wire.HELLO:
            cookie = make_cookie(self._cookie_secret, named, nonce, client_index, addr_text, now, node=node)
            return seal_handshake(key, client_index, wire.CHALLENGE, {wire.IE_COOKIE: cookie}), None
        if msg_type != wire.RESPONSE or wire.IE_COOKIE not in ies:
            return self._failed(address, "unexpected handshake")
        cookie = ies[wire.IE_COOKIE]
        if node is not None and len(cookie) == 16 and cookie[15] != node:
            # another node's cookie: each node keeps its own used nonces, so only the node that issued
            # a cookie may take its RESPONSE (one replayed to a second node would open a second session)
            return self._failed(address, "cookie of another node")
        if (cookie != make_cookie(self._cookie_secret, named, nonce, client_index, addr_text, now, node=node)
                and cookie != make_cookie(self._cookie_secret, named, nonce, client_index, addr_text, now,
                                          previous=True, node=node)):
            return self._failed(address, "stale cookie")
        old = self.by_identity.get(identity)
        if old is not None and old.client_nonce == nonce:
            return None, None  # a retransmitted RESPONSE: WELCOME is already on its way
        if nonce in self._used_nonces:
            # a RESPONSE replayed while its cookie is still valid must not replace a newer session
            return self._failed(address, "replayed login")
        self._used_nonces[nonce] = now
        if len(self._used_nonces) > self._prune_at:
            # pruned when it has doubled, not at every login past 1,024 (that was O(n) a login at 2,000/s)
            horizon = now - 2 * COOKIE_BUCKET_MS
            self._used_nonces = {n: t for n, t in self._used_nonces.items() if t >= horizon}
            self._prune_at = max(1024, 2 * len(self._used_nonces))
        # the client's order (c2s auth, enc, s2c auth, enc) is the 96 bytes HKDF gave
        keys = b"".join(session_keys(key.secret, nonce, cookie, True))
        channel = Channel(HostSessionCrypto(keys), client_index)
        index = self._allocate_index()
        if index is None:
            return self._failed(address, "no free session index")
        peer = Peer(index, identity[0], identity[1], channel, _shared(address), now, nonce, self.dirty, identity)
        if old is not None:
            self.remove(old)
        self.peers[index] = peer
        self.by_identity[identity] = peer
        ttl_ms = self.ttl_ms if identity[0] == "phone" else self.host_ttl_ms
        welcome = {wire.IE_SESSION_INDEX: index, wire.IE_TTL: ttl_ms // 1000, wire.IE_TIME: int(now)}
        if identity[0] == "phone" and self.phone_keepalive_ms:
            welcome[wire.IE_KEEPALIVE] = self.phone_keepalive_ms
        if self.cluster_nodes is not None:
            welcome[wire.IE_CLUSTER_NODES] = self.cluster_nodes   # where the cluster's nodes are (docs/cluster.md)
        peer.send(wire.WELCOME, welcome, now)
        return None, peer

    def receive(self, datagram, address, now):
        """(peer, messages) for a session frame; (None, []) when dropped (counted)."""
        wire.parse_full(datagram)  # raises DecodeError for anything too short to name a session
        peer = self.peers.get(wire.session_of(datagram))
        if peer is None:
            self.stats.drop("unknown session")
            return None, []
        channel = peer.channel
        before, new_before = channel.authenticated, channel.new
        messages = channel.receive(datagram, now)
        if channel.authenticated == before:
            self.stats.drop("bad tag")
            return None, []
        if not channel.pending():
            channel.crypto.rest()   # nothing left to acknowledge: an idle session keeps only its keys
        self.dirty.add(peer)   # it may owe an acknowledgement, or an ACK freed room for queued messages
        if channel.new == new_before:
            # authentic but old (a duplicate, or a replay from anywhere): it may be acknowledged
            # again, but it says nothing about where the peer is or whether it is still there
            self.stats.count("signalling duplicates")
            peer.moved = False
        else:
            peer.moved = self.touch(peer, address, now)  # the daemon reacts to a move (B7)
        return peer, messages

    def touch(self, peer, address, now):
        """Note a new authenticated packet from peer (never a replay): roaming updates its address (B7)."""
        peer.last_seen_ms = now
        if address != peer.address:
            peer.address = _shared(address)
            peer.address_changes += 1
            self.moves += 1
            return True
        return False

    def take_dirty(self):
        """The peers with something queued, once each; the set starts afresh."""
        dirty = [p for p in self.dirty if p.index in self.peers]
        self.dirty.clear()  # the same set object: every Peer holds a reference to it
        return dirty

    def schedule(self, peer):
        """Note when peer's channel next needs its timer (retransmission)."""
        when = peer.channel.next_timer()
        if when is not None:
            heapq.heappush(self._timers, (when, peer.index))

    def due(self, now, pump=None):
        """Peers whose channel timer is due, each once, in time order (O(due), not O(peers)). pump(), when given,
        at each entry of the timers' heap looked at (after many messages, e.g. the releases of a host's calls,
        the heap holds an entry a flush)."""
        out = []
        seen = set()
        timers = self._timers
        while timers and timers[0][0] <= now:
            if pump is not None:
                pump()
            _when, index = heapq.heappop(timers)
            peer = self.peers.get(index)
            if peer is None or index in seen:
                continue
            when = peer.channel.next_timer()
            if when is None:
                continue
            if when > now:
                heapq.heappush(timers, (when, index))
                continue
            seen.add(index)
            out.append(peer)
        return out

    def remove(self, peer):
        self.peers.pop(peer.index, None)
        self.dirty.discard(peer)
        if self.by_identity.get(peer.identity) is peer:
            del self.by_identity[peer.identity]

    def expired(self, now, pump=None):
        """Peers silent for longer than their kind's lifetime, or whose channel gave up. pump(), when given, is
        called every PUMP_PEERS peers looked at (the main host's relay table relays meanwhile: a walk of 10,000
        phones' sessions is a millisecond or more)."""
        if pump is None:
            return [p for p in self.peers.values() if p.channel.failed or now - p.last_seen_ms > (
                self.ttl_ms if p.kind == "phone" else self.host_ttl_ms)]
        out, peers = [], list(self.peers.values())
        for first in range(0, len(peers), PUMP_PEERS):
            pump()
            out += [p for p in peers[first:first + PUMP_PEERS] if p.channel.failed or now - p.last_seen_ms > (
                self.ttl_ms if p.kind == "phone" else self.host_ttl_ms)]
        return out
