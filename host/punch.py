"""B2: direct paths between remote hosts, hole-punched on the main host's word.

The main host sends each side a PUNCH_OFFER: the other's public address as it
sees it, a 32-byte pair key and a role. Both sides then send PUNCH frames to
each other every 100 ms, tagged with the pair key and carrying a heard-you flag;
a side's path is up once it receives a PUNCH whose flag says the other side
heard it, so both directions are proven. A path not up within the punch timeout
is reported as relay, and media stays with the main host.

The main host makes a new pair key whenever either side logs in again, so a
peer that rebooted (its clock, which PUNCH's time IE carries, may restart from
zero) is met with a new Pair here, not with the replay check of the old one.
"""

from upbx.common import wire
from upbx.common.crypto import HmacKey
from upbx.common.session import seal_handshake, verify_handshake
from upbx.host.switch import Link, pair_keys

PUNCH_INTERVAL_MS = 100
KEEP_OPEN_MS = 15000   # PUNCH on an up path this often keeps both NAT bindings open


class Pair:
    """A direct path to another remote host."""

    def __init__(self, name, key, role, address, local_index, now):
        self.name = name
        self.key = key
        self.role = role
        self.link = Link(name, "pair", address=address)
        self.link.trunk_auth, self.link.trunk_recv_auth = pair_keys(key, role)
        self.link.up = False
        self.handshake = HmacKey(key)
        self.local_index = local_index
        self.heard = False
        self.started_ms = now
        self.next_punch_ms = now
        self.reported = None
        self.last_time = -1
        self.last_heard_ms = now     # last authenticated frame (trunk or PUNCH) from the peer
        self.probe_ms = 0            # last PING to the main host because this pair went silent


class Pairs:
    """The pairs of one remote host, by peer name and by our receive index."""

    def __init__(self, host_name, send, stats, log, report, punch_timeout_ms, peers):
        self.host_name = host_name
        self.peers = peers                # our receive indices come from its table (one port, one space)
        self.send = send                  # send(data, address): the core's outbox
        self.stats = stats
        self.log = log
        self.report = report              # report(pair, path, now): tell the main host
        self.punch_timeout_ms = punch_timeout_ms
        self.by_name = {}
        self.by_index = {}

    def values(self):
        return self.by_name.values()

    def get(self, name):
        return self.by_name.get(name)

    def offer(self, ies, now):
        """A PUNCH_OFFER from the main host: start (or restart) punching towards the peer."""
        name = ies.get(wire.IE_PEER_NAME)
        if name is None or wire.IE_PEER_KEY not in ies or wire.IE_ADDRESS not in ies:
            self.stats.drop("punch offer missing IEs")
            return
        pair = self.by_name.get(name)
        if pair is None or pair.key != ies[wire.IE_PEER_KEY]:
            if pair is not None:   # a new key: the peer or we logged in again; start afresh
                self.by_index.pop(pair.local_index, None)
                self.peers.release_index(pair.local_index)
                pair.link.up = False
            index = self.peers.reserve_index()
            pair = Pair(name, ies[wire.IE_PEER_KEY], ies.get(wire.IE_ROLE, 0), ies[wire.IE_ADDRESS], index, now)
            self.by_name[name] = pair
            self.by_index[index] = pair
        else:
            pair.link.address = ies[wire.IE_ADDRESS]
            pair.started_ms = now
            pair.reported = None
        self.log.info("punch-start", peer=name, address="%s:%d" % pair.link.address)
        if pair.link.up:   # direct already: said again for the call this offer is for (its record's path)
            self.report(pair, wire.PATH_DIRECT, now)

    def _send(self, pair, now):
        ies = {wire.IE_HOST_NAME: self.host_name, wire.IE_SESSION_INDEX: pair.local_index,
               wire.IE_STATE: 1 if pair.heard else 0, wire.IE_TIME: now}
        self.send(seal_handshake(pair.handshake, pair.link.peer_index, wire.PUNCH, ies), pair.link.address)

    def receive(self, data, addr, now):
        """A PUNCH frame from another remote host; forged or replayed ones are dropped and counted."""
        ies = wire.decode_ies(memoryview(data)[wire.FULL_HEADER:len(data) - wire.FULL_TAG], wire.FULL_HEADER)
        pair = self.by_name.get(ies.get(wire.IE_HOST_NAME))
        if pair is None or not verify_handshake(pair.handshake, data):
            self.stats.drop("punch rejected")
            return
        sent_at = ies.get(wire.IE_TIME, 0)
        if sent_at <= pair.last_time:
            self.stats.drop("punch replayed")
            return
        pair.last_time = sent_at
        pair.link.peer_index = ies.get(wire.IE_SESSION_INDEX, 0)
        pair.link.address = addr
        pair.last_heard_ms = now
        first = not pair.heard
        pair.heard = True
        if ies.get(wire.IE_STATE) == 1 and not pair.link.up:
            pair.link.up = True
            self.log.info("direct-path", peer=pair.name, address="%s:%d" % addr)
            self.report(pair, wire.PATH_DIRECT, now)
        if first or not pair.link.up:
            self._send(pair, now)

    def heard(self, pair, addr, now):
        """An authenticated trunk frame came from the pair: it is alive at addr."""
        pair.link.address = addr
        pair.last_heard_ms = now

    def tick(self, now):
        for pair in self.by_name.values():
            if not pair.link.up and now - pair.started_ms < self.punch_timeout_ms:
                if now >= pair.next_punch_ms:
                    pair.next_punch_ms = now + PUNCH_INTERVAL_MS
                    self._send(pair, now)
            elif not pair.link.up and pair.reported is None:
                self.log.info("relay-path", peer=pair.name,
                                     reason="no direct path within %d ms" % self.punch_timeout_ms)
                self.report(pair, wire.PATH_RELAY, now)
            elif pair.link.up and now >= pair.next_punch_ms:
                pair.next_punch_ms = now + KEEP_OPEN_MS
                self._send(pair, now)
