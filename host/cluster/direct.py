"""B2 between sites at two nodes: media straight between the two remote hosts (docs/cluster.md,
"Direct media between sites at two nodes").

On one main host a call between two remote hosts' sites is offered a direct path: the main host sends
each remote host a PUNCH_OFFER (the other's public address as it sees it, a pair key, a role), both
punch, and once the callee rings (or answers, when the call may still be forwarded) a MEDIA_PEER with a
fresh media key tells each to send the call's media straight to the other (host/main_host.py, B2).
Across two nodes each node knows only its own site: its public address, its call number. The nodes
exchange them on their trunk session (host/cluster/trunk.py), which only nodes can log in to, with the
call messages a remote host already knows, and each node then says to its site exactly what a single
main host would (a remote host cannot tell that its peer is at another node):

- the caller's node (X, site A) puts A's name, A's public address and the pair key in its SETUP to the
  callee's node (Y, site B), with IE state 1 when it made that key just now;
- Y checks that A is the caller's site's remote host, settles the key (X's when X made it just now or
  when it is Y's too; else a new one: B may have logged in again since, which only Y knows), offers A to
  B, and answers X with a PUNCH_OFFER on the trunk naming B (host_name: X's site, peer_name: B, B's
  address, the key), which X passes on to A;
- when X would send MEDIA_PEER to two remote hosts of its own, it sends one on the trunk instead: the
  trunk leg's number at Y, A's own call number, a fresh media key, B's role; Y passes it on to B with B's
  number and answers with B's number, which X passes on to A;
- each PUNCH_RESULT a site reports is passed to the other node, so both know the call's path (the
  caller's node records it); a site's new public address (B7) is passed on as a PUNCH_OFFER again;
- a MEDIA_PEER without a key on the trunk takes the direct path back at both ends (a transfer or
  conference joined the call at one node).

Only a node names a peer: a PUNCH_OFFER, PUNCH_RESULT or MEDIA_PEER from a remote host or phone is
dropped and counted as before, and one on a trunk must name the two remote hosts of a live call over
that very trunk (and a MEDIA_PEER answer the key its call was given), else it is dropped and counted
(`node trunk: bad direct offer`) and nothing is sent to any site. A call whose offer never comes back,
or whose sites cannot reach each other, is relayed over the trunk as before (the remote hosts use a
direct path only once their punches met).
"""
import os

from upbx.common import wire

BAD = "node trunk: bad direct offer"


class CrossPair:
    """A call's direct path between our site's remote host and the other node's site."""

    __slots__ = ("host", "peer", "trunk", "key", "address", "offered", "media_key")

    def __init__(self, host, peer, trunk, key, address=None):
        self.host = host            # our remote host's name
        self.peer = peer            # the other node's site's remote host
        self.trunk = trunk          # the node trunk link the call's other half is on
        self.key = key              # the pair key both remote hosts were (or will be) given
        self.address = address      # the peer's public address, as its node sees it
        self.offered = False        # both nodes have offered the pair to their site
        self.media_key = None       # MEDIA_PEER's key, once one was sent or passed on


def role(host, peer):
    """PUNCH_OFFER's role for host: 0 for the remote host whose name sorts first."""
    return 0 if host < peer else 1


class DirectAcrossNodes:
    """The direct-path half of a node's calls between its site and another node's (one per MainHost)."""

    def __init__(self, core):
        self.core = core

    def _drop(self, why):
        self.core.stats.drop(BAD)
        self.core.log.warning("direct-offer-dropped", why=why)

    def _offer_to_site(self, link, pair, now):
        link.send_signal(wire.PUNCH_OFFER, {wire.IE_PEER_NAME: pair.peer, wire.IE_ADDRESS: pair.address,
                                            wire.IE_PEER_KEY: pair.key, wire.IE_ROLE: role(pair.host, pair.peer)}, now)

    @staticmethod
    def _offer_on_trunk(pair, address, now):
        """Our site (at address) to the other node: its PUNCH_OFFER to its site names ours."""
        pair.trunk.send_signal(wire.PUNCH_OFFER, {wire.IE_HOST_NAME: pair.peer, wire.IE_PEER_NAME: pair.host,
                                                  wire.IE_ADDRESS: address, wire.IE_PEER_KEY: pair.key}, now)

    # the caller's node

    def setup_ies(self, link, target, called):
        """(IEs for the SETUP to the callee's node, CrossPair) when the call may go direct, else (None, None):
        the caller a remote host here, the callee behind another site's remote host at the node of target."""
        core = self.core
        if not core.config.direct_media or link.kind != "host" or target.kind != "node" or link.session is None:
            return None, None
        ext = core.directory.extension(called)
        host = core.directory.remote_host_of_site(ext.site) if ext is not None else None
        if host is None or host.name == link.name:
            return None, None
        names = frozenset((link.name, host.name))
        key = core.pair_keys.get(names)
        fresh = key is None
        if fresh:
            key = core.pair_keys[names] = os.urandom(32)
        ies = {wire.IE_PEER_NAME: link.name, wire.IE_ADDRESS: link.address, wire.IE_PEER_KEY: key,
               wire.IE_STATE: 1 if fresh else 0}
        return ies, CrossPair(link.name, host.name, target, key)

    # the callee's node

    def setup_in(self, call, trunk, ies, target, now):
        """A SETUP from the caller's node, offered to target: its direct-path IEs (if any) checked and
        settled, the pair offered to our site and, on the trunk, to the caller's node."""
        core = self.core
        if wire.IE_PEER_KEY not in ies:
            return
        if not core.config.direct_media or target.kind != "host":
            return   # relayed: the caller's node gets no offer back and sends no MEDIA_PEER
        peer, address = ies.get(wire.IE_PEER_NAME), ies.get(wire.IE_ADDRESS)
        site = core.directory.site_of_extension(call.caller)
        host = core.directory.remote_host_of_site(site) if site is not None else None
        if peer is None or address is None or host is None or host.name != peer or peer == target.name:
            return self._drop("setup names %r, not the caller's remote host" % (peer,))
        names = frozenset((peer, target.name))
        key = ies[wire.IE_PEER_KEY]
        if not ies.get(wire.IE_STATE) and core.pair_keys.get(names) != key:
            key = os.urandom(32)   # theirs is old, and ours is gone (our site logged in again) or another
        core.pair_keys[names] = key
        pair = call.xpair = CrossPair(target.name, peer, trunk, key, tuple(address))
        pair.offered = True
        self._offer_to_site(target, pair, now)
        self._offer_on_trunk(pair, target.address, now)
        core.stats.count("node trunk: direct paths offered")
        core.log.info("punch-offer", a=peer, b=target.name, via=trunk.name)

    # either node

    def _pairs(self, trunk, host, peer):
        return [c.xpair for c in self.core.switch.calls.values()
                if c.xpair is not None and c.xpair.trunk is trunk and c.xpair.host == host and c.xpair.peer == peer]

    def offer_from_node(self, trunk, ies, now):
        """A PUNCH_OFFER on a trunk: the other node's site (its address, the pair key) for our site, the
        answer to our SETUP's offer or a new address (B7). Passed on to our site if it names the two remote
        hosts of a live call over this trunk."""
        host, peer = ies.get(wire.IE_HOST_NAME), ies.get(wire.IE_PEER_NAME)
        address, key = ies.get(wire.IE_ADDRESS), ies.get(wire.IE_PEER_KEY)
        pairs = self._pairs(trunk, host, peer) if None not in (host, peer, address, key) else []
        link = self.core.links_by_name.get(("host", host)) if pairs else None
        if link is None:
            return self._drop("offer for %r and %r, no such call over %s" % (host, peer, trunk.name))
        self.core.pair_keys[frozenset((host, peer))] = key
        for pair in pairs:
            pair.key, pair.address, pair.offered = key, tuple(address), True
        self._offer_to_site(link, pairs[0], now)
        self.core.log.info("punch-offer", a=host, b=peer, via=trunk.name)

    def moved(self, link, now):
        """Our remote host link has a new public address (B7): each peer at another node is offered it again,
        through its node, and our host its peers again (as a single main host re-offers both sides)."""
        done = set()
        for call in list(self.core.switch.calls.values()):
            pair = call.xpair
            if pair is None or not pair.offered or pair.host != link.name or (pair.trunk, pair.peer) in done:
                continue
            done.add((pair.trunk, pair.peer))
            self._offer_to_site(link, pair, now)
            self._offer_on_trunk(pair, link.address, now)

    def media_peers(self, call, now):
        """The caller's node: the call's media straight between the sites from now on (MEDIA_PEER on the
        trunk; each node then tells its own site)."""
        pair = call.xpair
        a, b = call.a, call.b
        if pair is None or not pair.offered or call.peered or not a.peer_call_no or not b.peer_call_no:
            return
        pair.media_key = os.urandom(16)
        send = {wire.IE_PEER_CALL_NO: b.peer_call_no, wire.IE_CALL_NO: a.peer_call_no,
                wire.IE_MEDIA_KEY: pair.media_key, wire.IE_ROLE: 1, wire.IE_PEER_NAME: pair.host}
        b.link.send_signal(wire.MEDIA_PEER, send, now)

    def media_peer_from_node(self, trunk, ies, now):
        """A MEDIA_PEER on a trunk, naming our leg on it: passed on to our site with its own call number (and
        answered with it, when we did not start it); without a key, the direct path is taken back here."""
        core = self.core
        leg = core.switch.leg(trunk, ies.get(wire.IE_PEER_CALL_NO, 0))
        if leg is None:
            core.stats.drop("unknown call")
            return
        call = leg.call
        if wire.IE_MEDIA_KEY not in ies:
            return core.media_through_here(call, now, from_node=True)
        pair = call.xpair
        other = call.b if leg is call.a else call.a
        if (pair is None or pair.trunk is not trunk or not pair.offered or ies.get(wire.IE_PEER_NAME) != pair.peer
                or other is None or other.link.kind != "host" or other.link.name != pair.host
                or not other.peer_call_no or not ies.get(wire.IE_CALL_NO)
                or (pair.media_key is not None and pair.media_key != ies[wire.IE_MEDIA_KEY])):
            return self._drop("media peer for call %s does not match its offer" % call.uid)
        started = pair.media_key is not None
        pair.media_key = key = ies[wire.IE_MEDIA_KEY]
        their_role = ies.get(wire.IE_ROLE, 0)
        other.link.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: other.peer_call_no,
                                                 wire.IE_CALL_NO: ies[wire.IE_CALL_NO], wire.IE_MEDIA_KEY: key,
                                                 wire.IE_ROLE: their_role, wire.IE_PEER_NAME: pair.peer}, now)
        call.peered = True
        if not started:
            trunk.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: leg.peer_call_no,
                                                wire.IE_CALL_NO: other.peer_call_no, wire.IE_MEDIA_KEY: key,
                                                wire.IE_ROLE: 1 - their_role, wire.IE_PEER_NAME: pair.host}, now)
        core.log.info("media-peer", call=call.uid, a=pair.host, b=pair.peer, via=trunk.name)

    def take_back(self, call, now):
        """The direct path of call is taken back here (host/main_host.py media_through_here): the other node
        takes its end back too."""
        for leg in (call.a, call.b):
            if leg is not None and leg.link.kind == "node" and leg.peer_call_no:
                leg.link.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: leg.peer_call_no,
                                                       wire.IE_CALL_NO: leg.call_no}, now)

    def punch_result(self, link, peer, path, now):
        """Our remote host reported the path to a peer at another node: the calls between them know it, and
        their other node is told."""
        told = set()
        for call in list(self.core.switch.calls.values()):
            pair = call.xpair
            if pair is None or pair.host != link.name or pair.peer != peer:
                continue
            self._note(call, link.name, path)
            if pair.trunk not in told:
                told.add(pair.trunk)
                pair.trunk.send_signal(wire.PUNCH_RESULT, {wire.IE_HOST_NAME: link.name, wire.IE_PEER_NAME: peer,
                                                           wire.IE_PATH: path}, now)

    def punch_result_from_node(self, trunk, ies, now):
        """The other node's site reported its path to our site."""
        reporter, peer, path = ies.get(wire.IE_HOST_NAME), ies.get(wire.IE_PEER_NAME), ies.get(wire.IE_PATH)
        pairs = self._pairs(trunk, peer, reporter) if path in (wire.PATH_RELAY, wire.PATH_DIRECT) else []
        if not pairs:
            return self._drop("punch result of %r for %r, no such call over %s" % (reporter, peer, trunk.name))
        for call in list(self.core.switch.calls.values()):
            if call.xpair in pairs:
                self._note(call, reporter, path)

    def _note(self, call, host, path):
        call.punch[host] = path
        if call.punched_path() is not None and call.path != call.punched_path():
            call.path = call.punched_path()
            self.core.log.info("call-path", call=call.uid, path=call.path)
