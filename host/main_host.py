"""The main host's core: directory, logins, routing, relay, permissions, call records (B1-B3).

Sans-IO (host/core.py): datagrams and time in, datagrams out; the daemon holds it.
"""
import json
import os
import sys

from upbx.common import wire
from upbx.common.call import ALERTING_SENT, ANSWER_SENT, CONNECTED, RELEASE_RECEIVED
from upbx.common.chunks import chunk_ies
from upbx.host import codec, features, firmware, groups, lines
from upbx.host.call_rounds import CallRounds
from upbx.host.cluster.direct import DirectAcrossNodes
from upbx.host.firmware_transfer import FirmwareServer, PhoneStates
from upbx.host.core import HostCore
from upbx.host.directory import MAIN_ORIGIN, Directory, StoreUnavailable, wire_text
from upbx.host.moh import MusicOnHold
from upbx.host.peers import PeerTable
from upbx.host.policy import local_call_cause
from upbx.host.records import call_record, decode_upload
from upbx.host.sip import trunk
from upbx.host.sip.calls import SipCalls
from upbx.host.sip.edge import SIP_REALM, SipEdge
from upbx.host.switch import Link, Switch, send_on_leg
from upbx.host import voicemail, voicemail_sync, voicemail_upload
from upbx.host.voicemail import Endpoint, VoicemailStore, divert

PHONE_KEEPALIVE_MS = 20000
PENDING = "pending"   # host/cluster/trunk.py's: a SETUP waits for Redis to say where its callee is
# a star code through a cluster's node while PostgreSQL is away waits for it this long (a Patroni failover,
# ttl 10 s: every node on the new primary within about 12 s, docs/cluster.md), then is refused "network busy";
# below the phone's own 20 s set-up timer (common/phone.py _SETUP_TIMEOUT_MS), so the phone hears the cause
STAR_CODE_WAIT_MS = 15000
# a SETUP from a client that switched here this recently may be said again for a call the node it left had passed on
# to us (MainHost._half_from_a_lost_node): longer than the node takes to notice a trunk's silence (trunk.DEAD_MS)
SWITCHED_MS = 5000
# the IEs holding our call numbers of the two calls a TRANSFER or a CONFERENCE names (the one it goes on, the other)
TWO_CALLS = {wire.TRANSFER: (wire.IE_PEER_CALL_NO, wire.IE_JOIN_CALL_NO),
             wire.CONFERENCE: (wire.IE_PEER_CALL_NO, wire.IE_CONF_CALL_NO)}
# a remote host's feature change (FEATURES) waits longer: nobody listens for its answer, and one not
# acknowledged is sent again only at the remote host's next login
FEATURES_WAIT_MS = 600000
FORWARD_LOCATE_MS = 1500   # a forward waits at most this long for Redis (as trunk.PARK_MS), then it is unreachable
# what a trunk session between two nodes carries: PARTY tells the other node's half of a call who its party is
# after a transfer joined it here; TRANSFER hands a phone's transfer whose two far legs are both on the trunk to
# that node (host/lines.py); the last three are B2's between their sites (host/cluster/direct.py)
NODE_MESSAGES = frozenset((wire.SETUP, wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.DTMF, wire.HOLD, wire.PARTY,
                           wire.TRANSFER, wire.PING, wire.ACK, wire.PUNCH_OFFER, wire.PUNCH_RESULT, wire.MEDIA_PEER,
                           wire.NODES))
# what this node's code does for other nodes beyond a plain call (docs/cluster.md, "Rolling upgrades"): its etcd
# record says it ("speaks", host/cluster/node.py), and a node sends another such a message only if that one says
# it: "transfer", a hand-over of a transfer's join (host/lines.py _hand_over); "pickup", a **N or *8 of a call
# ringing there (_pickup_at_node, _pickup_at_nodes); "claim", NODES naming a leg it holds towards a lost node whose
# half we took over (host/cluster/calls.py adopt). A node of older code says none, and gets none of them
NODE_SPEAKS = frozenset(("transfer", "pickup", "claim"))
RING_SCAN_TICKS = 10     # an answered call is looked at for a ring timeout once in this many ticks (_ring_calls)
MAX_CALLS_PER_PHONE = 2   # a phone has one call; a second may ring in while it dials out (it answers busy)


def encode(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _address_key(address):
    """(host, port) of a peer's address (an IPv6 one has four items)."""
    return address if type(address) is tuple and len(address) == 2 else tuple(address[:2])


def _no_pump():
    """core.pump without relay tables: nothing to relay."""


RECORD_WAIT_MS = 10000   # a call record waits at most this long for its call's ended key (records_settled)


def _switched_lately(link, now):
    """link's client switched its home here in the last SWITCHED_MS (NODES standby 0 from a standby session)."""
    at = getattr(link, "switched_ms", None)
    return at is not None and now - at < SWITCHED_MS


class MainHost(HostCore):
    def __init__(self, config, log):
        HostCore.__init__(self, "main", log)
        self.config = config
        self.conferences.max_parties = config.conference_parties
        self.cluster = None      # host.cluster.node.ClusterNode when main.toml has a [cluster] table
        self.cluster_state = {}  # each engine's "up"/"down", kept by the node's ClusterService
        self.etcd_member = None  # "host:port" of the etcd member it talks to (ClusterService)
        self.cluster_members = []   # names of the live nodes (etcd's leases), kept by the ClusterService
        self.node_speaks = None  # {node id: what it speaks (NODE_SPEAKS)} from etcd; None: all speak ours
        self.takeover = None     # host.cluster.calls.Takeover on a node: calls of a silent node carried on here
        # a node whose call keys are written (ClusterService's CallMirror): the record of a call that ends waits for
        # its ended key's write, which says whether the call is still ours (records_settled); None: written at once
        self.records_waiting = None   # call uid -> (record, when it ended)
        self.standby_links = set()   # links whose client keeps them as its standby session (NODES standby 1)
        # call -> (number, reason, give-up ms): a forward (no answer, busy, a group's overflow) to a number whose
        # node Redis is asked for; _forward again each tick (docs/cluster.md)
        self.forwards_waiting = {}
        self.star_codes_waiting = {}   # (link, the phone's call number) -> its write waiting for PostgreSQL (a cluster)
        if getattr(config, "cluster_postgres", ""):
            from upbx.host.cluster.node import ClusterNode   # psycopg, redis, aetcd: the cluster extra
            self.cluster = ClusterNode(config, log)
            self.directory = self.cluster.directory        # a copy of PostgreSQL's, kept by LISTEN/NOTIFY
        else:
            self.directory = Directory(config.database)
        self.deferred_records = []   # (remote host, record) uploaded while PostgreSQL was away: not yet acknowledged
        self._retrying = False       # retry_records is storing them (on a cluster node: off the loop, one by one)
        for warning in self.directory.warnings:
            self.log.warning("file-permissions", problem=warning)
        # phones straight at the main host only need their NAT binding kept open: 20 s, not the
        # 2 s a LAN phone uses to notice its remote host restarting (10,000 phones x 2 s is a load)
        self.peers = PeerTable(self._secret_of, self.stats, config.registration_ttl_s * 1000,
                               phone_keepalive_ms=min(PHONE_KEEPALIVE_MS, config.registration_ttl_s * 250),
                               host_ttl_ms=config.keepalive_timeout_s * 1000,
                               cookie_secret=self.cluster.cookie_secret if self.cluster else None)
        self.switch = Switch(self.send, self.stats, config.trunk_mtu,
                             max_legs={"phone": MAX_CALLS_PER_PHONE, "host": config.max_calls_per_host})
        self.router = None       # host.cluster.route.Router on a node: whose a datagram is, FORWARDED
        if self.cluster is not None:
            from upbx.host.cluster.route import Router
            self.router = Router(self.cluster.node_id, self.cluster.cookie_secret, self.stats)
            self.peers.node_id = self.cluster.node_id     # indexes and call numbers carry the node id
            self.switch.set_node(self.cluster.node_id)
        self.xnode = None        # host.cluster.trunk.NodeTrunks on a node: calls to another node's clients
        if self.cluster is not None:
            from upbx.host.cluster.trunk import NodeTrunks
            self.xnode = NodeTrunks(self, self.cluster.node_id, self.cluster.cookie_secret)
        self.xdirect = DirectAcrossNodes(self)   # B2 between our sites and another node's (host/cluster/direct.py)
        self.links = {}          # Peer.index -> Link
        self.links_by_name = {}  # (kind, name) -> Link
        self.host_links = {}     # Peer.index -> Link of the remote hosts' logins alone (the relay tables' links)
        self._links_changed = 0  # logins and logouts so far: the relay tables look at the host links after one
        self._owners = (None, {})   # (peers.moves when built, {address: owner names}): bandwidth_owners
        self._owner_names = {}       # site -> ("site " + site,), one tuple a site
        self.pair_keys = {}      # frozenset of two host names -> 32-byte key
        self.local_calls = {}    # site -> set of call ids granted and not yet ended
        self._last_expiry_ms = 0
        # the tick's ring timeouts (on_tick, _ring_calls): the calls whose callee leg was not answered when last
        # looked at, every call made since, and a tenth of the answered ones a tick (RING_SCAN_TICKS)
        self._ring_watch = {}       # call id -> call
        self._ring_rounds = CallRounds(self.switch.calls, RING_SCAN_TICKS)
        self._sysinfo_version = None
        self._sysinfo_cache = {}  # (version, site) -> (encoded system information, its SYSINFO payloads)
        self.sysinfo_sent = {}   # link name -> (copies, datagrams) of system information sent (B6)
        self._sent_counts = {}   # each (copies, datagrams) pair once
        self.sysinfo_sent_ms = {}   # link name -> when its last copy went out (host/metrics.py)
        self.sysinfo_acked = {}     # phone here -> the version it acknowledged
        self.site_phones = {}    # remote host name -> {extension: wall ms registered} its PHONE_STATEs told (the API)
        self.gone = {}           # (kind, name) -> {"address", "last_seen_ms" (wall)} of peers that logged out (the API)
        self.music_version = 0   # the operator's music on hold (0: the generated default), docs/features.md
        self.music_acked = {}    # remote host name -> the music version it said it has
        self.groups = groups.GroupCalls(self)
        self.firmware = firmware.FirmwareStore(self.directory)   # over-the-air updates (host/firmware.py)
        self.firmware_server = FirmwareServer(self.firmware, self.stats)
        self.firmware_phones = PhoneStates(self.log)   # the phones attached here
        self._load_music()
        store = VoicemailStore(str(config.database) + ".voicemail") if str(config.database) != ":memory:" else None
        self.voicemail = Endpoint(self, store, MAIN_ORIGIN, self._mailbox_changed)
        self.voicemail_uploads = voicemail_upload.Receiver(self)
        self.mailbox_sync = voicemail_sync.MailboxSender(self)   # each site's copy at its remote host (B4)
        self.sip = SipEdge(SIP_REALM, self._sip_password, self.stats, offer=config.sip_digest.split(","),
                           nonce_ttl_ms=config.sip_nonce_s * 1000)
        self.sip_listen = config.sip_listen
        self.sip_calls = SipCalls(self, self.sip, (config.sip_rtp_base, config.sip_rtp_base + 2000))

    # directory

    def _secret_of(self, identity):
        """(secret, site) of an identity that logs in here, else None (host/peers.py keeps both)."""
        kind, name = identity
        if self.xnode is not None and kind == "host" and name.startswith("@"):
            return self.xnode.secret_of(name)   # another node's trunk login (host/cluster/trunk.py)
        if kind == "phone":
            row = self.directory.extension_login(name)
            if row is None or row[2] is not None:
                return None  # phones of a site with a remote host register there, not here
            secret, site = row[0], row[1]
        else:
            row = self.directory.remote_host(name)
            if row is None:
                return None
            secret, site = row.secret, row.site
        return secret, sys.intern(site)   # one string for a site's phones

    def _sip_password(self, number):
        """SIP phones of sites without a remote host register here (docs/sip.md)."""
        row = self.directory.extension(number)
        if row is None or self.directory.remote_host_of_site(row.site) is not None:
            return None
        return self.directory.sip_password(number)

    def sip_wanted(self):
        return bool(self.trunk_rows()) or any(self._sip_password(n) for n in self.directory.sip_passwords())

    def trunk_rows(self):
        """The main host's own trunks (a site's own trunk is its remote host's: host/sip/trunk.py)."""
        return trunk.trunks(self.directory, site=None)

    def did_target(self, number):
        return trunk.did_target(self.directory, number)

    def _site_directory(self, site):
        """The extensions of a site with their secrets, for its remote host's cache."""
        site_row = self.directory.site(site)
        sip = self.directory.sip_passwords(site)
        return {
            "site": site,
            "local_calls": bool(site_row.local_calls),
            "local_call_quota": site_row.local_call_quota,
            "extensions": {e.number: dict({"name": e.name, "secret": e.secret.hex(), "barred": bool(e.barred)},
                                          **({"sip_password": sip[e.number]} if e.number in sip else {}))
                           for e in self.directory.extensions(site)},
            "features": self.directory.site_features(site),
            "groups": self.directory.site_groups(site),
            **trunk.site_part(self.directory, site),   # its own trunk, the routes, its DIDs (B4)
        }

    # datagrams

    def on_datagram(self, data, addr, now, forwarded=False):
        kind = wire.frame_kind(data)
        if self.router is not None and not forwarded and self._elsewhere(kind, data, addr, now):
            return
        if self.xnode is not None and self.xnode.receive(kind, data, addr, now):
            return   # our own login to another node (host/cluster/trunk.py)
        if kind == wire.KIND_MINI:
            leg = self.switch.mini_in(data, now, addr)   # a new media frame: its phone is at addr (B7)
            if leg is not None and leg.link.session is not None:
                self._touch(leg.link.session, addr, now)
        elif kind == wire.KIND_TRUNK:
            peer = self.peers.peers.get(wire.session_of(data))
            link = self.links.get(peer.index) if peer else None
            if link is None:
                self.stats.drop("unknown session")
                return
            if link.kind == "node" and self.xnode.held:   # a lost node's successor carries its half on?
                self.xnode.claim_trunk(link, data, now)
            takeover = self.takeover   # a cluster's node: another node's calls? (host/cluster/calls.py)
            drops = self.stats.drops
            # a frame naming a call number we do not have is rejected whole (its tag covers timestamps
            # extended from each call's own): either count says it may be another node's calls
            missed = (drops.get("trunk rejected"), drops.get("unknown call number")) if takeover is not None else None
            if self.switch.trunk_in(data, link, now):   # True only when it carried new media
                self._touch(peer, addr, now)
            if takeover is not None and (drops.get("trunk rejected"), drops.get("unknown call number")) != missed:
                takeover.trunk(link, data, now)
        else:
            msg_type = wire.parse_full(data)[3]
            if msg_type == wire.FORWARDED and self.router is not None and not forwarded:
                inner = self.router.unwrap(data)   # another node's: a frame of ours, from a client's address
                if inner is not None:
                    self.on_datagram(inner[0], inner[1], now, forwarded=True)
                return
            if msg_type in wire.HANDSHAKE_TYPES:
                peer = self.handshake(data, addr, now)
                if peer:
                    self._logged_in(peer, now)
                return
            peer, messages = self.peers.receive(data, addr, now)
            if peer is None:
                return
            if peer.moved:   # only a new frame moves a peer; a replayed one never does
                self._moved(peer, now)
            for msg_type, ies in messages:
                self._message(self.links[peer.index], msg_type, ies, now)

    def _elsewhere(self, kind, data, addr, now):
        """True when data is another live node's (its session index or call number says so, and it is
        not one of ours, as a call taken over from a node would be): sent on to it one hop."""
        if kind == wire.KIND_MINI:
            if len(data) < 2:
                return False
            call_no = (data[0] << 8) | data[1]
            if call_no in self.switch.minis:   # a phone's leg here (a node's phones' legs are keyed by session)
                return False
            node = self.router.call_owner(call_no)
        else:
            if len(data) < 3:
                return False
            index = wire.session_of(data)
            if not index or index in self.peers.peers:
                return False
            node = self.router.index_owner(index)
        if node is None:
            return False
        if ":" in addr[0]:
            self.stats.drop("cluster: forward of an IPv6 source")
            return True
        if self.router.may_forward(kind, data, addr, now):   # bounded: the node cannot check the frame's tag
            self.send(*self.router.wrap(node, data, addr))
        return True

    def set_cluster_nodes(self, nodes, now, speaks=None):
        """The live nodes {node id: (ipv4, port)}, from etcd (host/cluster/node.py): WELCOME and SYSINFO say them;
        speaks: {node id: the node messages it takes beyond a plain call (NODE_SPEAKS)}, as etcd says (None:
        each takes all of ours)."""
        self.node_speaks = speaks
        if self.router.set_nodes(nodes):
            self.peers.cluster_nodes = self.router.encoded
            # every session hears of it (NODES), not only those that log in from now on
            payload = wire.encode_ies({wire.IE_CLUSTER_NODES: self.router.encoded})
            for link in self.links.values():
                if link.session is not None and link.kind != "node":   # a node knows the nodes from etcd
                    link.session.send_encoded(wire.NODES, payload, now)
            self.stats.count("cluster nodes lists sent", len(self.links))
        if self.xnode is not None:
            self.xnode.set_nodes(self.router.nodes, now)   # a trunk session to each other node

    def speaks(self, node, feature):
        """Whether node (an id) takes feature's node messages (NODE_SPEAKS): a node whose etcd record does not
        say it runs older code (a rolling upgrade), and is sent none of them (docs/cluster.md)."""
        return self.node_speaks is None or feature in self.node_speaks.get(node, ())

    def trunk_route(self, session):
        """(peer, link, receive key) of the logged-in host a trunk frame to this session index comes from,
        else None: the daemon's C fast path (host/fastpath.py) takes such frames as on_datagram does."""
        peer = self.peers.peers.get(session)
        link = self.links.get(peer.index) if peer is not None else None
        if link is None or link.session is None:
            return None
        return peer, link, peer.channel.crypto.recv_auth

    def _touch(self, peer, addr, now):
        """A new authenticated trunk frame from peer: its address is noted (B7)."""
        if self.peers.touch(peer, addr, now):
            self._moved(peer, now)

    def _moved(self, peer, now):
        """peer's address changed (B7): logged, signalling resent there, its pairs re-offered."""
        self.log.info("address-changed", peer=peer.name, address="%s:%d" % peer.address)
        peer.channel.resend_now(now)  # what went to the old address is lost: send it again now
        link = self.links.get(peer.index)
        if link is not None and link.kind == "host":
            self._reoffer_pairs(link, now)
            self.xdirect.moved(link, now)

    def _logged_in(self, peer, now):
        old = self.links_by_name.get((peer.kind, peer.name))
        if old is not None:
            self._link_down(old, now, "logged in again")
        if self.xnode is not None and peer.kind == "host" and peer.name.startswith("@"):
            return self._node_logged_in(peer, now)
        link = Link(peer.name, peer.kind, session=peer)
        site = self.peers.site_of(peer.identity)
        if site is not None:
            link.site = site   # as its secret's look-up said: no query at each login (_site_of)
        self.links[peer.index] = link
        if link.kind == "host":
            self.host_links[peer.index] = link
        self._links_changed += 1
        self._own(link, True)
        self.links_by_name[peer.identity] = link
        self.log.info("login", kind=link.kind, name=peer.name, address="%s:%d" % peer.address)
        if self.xnode is not None:
            self.xnode.logged_in(peer.identity)   # its location key in Redis (host/cluster/trunk.py)
        if link.kind == "host":
            # a new login may be a rebooted host: it has forgotten its pairs and its clock (PUNCH
            # time) may have started again from zero. New pair keys make both sides start afresh.
            for pair in [p for p in self.pair_keys if peer.name in p]:
                del self.pair_keys[pair]
            site = self.directory.remote_host(peer.name).site
            self._send_blob(link, wire.DIRECTORY, 0, encode(self._site_directory(site)), now)
        self._send_sysinfo(link, now)
        if link.kind == "host":
            self._send_music(link, now)
            self.mailbox_sync.logged_in(link, now)
        else:
            self._message_waiting(link.name, now, registered=True)

    def _node_logged_in(self, peer, now):
        """Another node's trunk login (host/cluster/trunk.py): a link of kind "node", no site, no directory."""
        link = Link(peer.name, "node", session=peer)
        link.site = "@nodes"
        link.node = int(peer.name[1:])   # "@ID": its secret was found (xnode.secret_of), so ID is a node id
        self.links[peer.index] = link
        self.links_by_name[peer.identity] = link
        self._links_changed += 1
        self.log.info("login", kind="node", name=peer.name, address="%s:%d" % peer.address)

    # music on hold (host/moh.py): the operator's, from the directory, to every remote host

    def _load_music(self):
        version, name, ulaw = self.directory.music_on_hold()
        self.music_version = version
        self.moh = MusicOnHold(ulaw, name)
        if version:
            self.log.info("music-on-hold", version=version, name=self.moh.name, frames=len(self.moh.frames))

    def _send_music(self, link, now):
        """The music to a remote host that does not have this version (its MUSIC said which it has)."""
        if self.music_version and self.music_acked.get(link.name) != self.music_version:
            self._send_blob(link, wire.MUSIC, self.music_version, self.directory.music_on_hold()[2], now)

    def _send_blob(self, link, msg_type, version, data, now):
        """data (bytes) to link in chunks (common/chunks.py); returns how many."""
        chunks = chunk_ies(version, data)
        for ies in chunks:
            link.send_signal(msg_type, ies, now)
        self.stats.count("%s copies sent" % wire.MESSAGE_NAMES[msg_type].lower())
        return len(chunks)

    def _sysinfo(self, site, now):
        """(version, encoded JSON) of the system information for one site, built once per version.

        The directory in it is the site's own extensions (number -> name) and the
        list of sites: a handset with 100 KB of heap cannot hold a whole
        organisation's directory, and a login must not cost the size of it.
        """
        version, data = self.directory.sysinfo()
        key = (version, site)
        cached = self._sysinfo_cache.get(key)
        if cached is None:
            if len(self._sysinfo_cache) > 1024 or any(v != version for v, _s in self._sysinfo_cache):
                self._sysinfo_cache.clear()
            info = dict(data)
            extensions = self.directory.extensions(site)   # one query for both (no index on site: a scan)
            offer = firmware.site_offer(info, site, [e.number for e in extensions], self.firmware.entry)
            info.pop(firmware.ROLLOUT_KEY, None)
            if offer is not None:
                info["firmware"] = offer
            info["site"] = site
            info["sites"] = [s.name for s in self.directory.sites()]
            info["directory"] = {e.number: e.name for e in extensions}
            info["time"] = self.wall_ms(now) // 1000
            data = encode(info)
            # the messages' IEs, encoded once for all of the site's phones (and their bytes shared)
            cached = self._sysinfo_cache[key] = (data, [wire.encode_ies(ies) for ies in chunk_ies(version, data)])
        return version, cached

    def _send_sysinfo(self, link, now):
        version, (info, payloads) = self._sysinfo(self._site_of(link), now)
        if link.session is not None:
            for i, payload in enumerate(payloads):
                if not i and self.router is not None and self.router.encoded is not None:
                    # a node: where the cluster's nodes are, in the first chunk (docs/protocol.md section 14)
                    payload = payload + wire.encode_ies({wire.IE_CLUSTER_NODES: self.router.encoded})
                link.session.send_encoded(wire.SYSINFO, payload, now)
            self.stats.count("%s copies sent" % wire.MESSAGE_NAMES[wire.SYSINFO].lower())
            chunks = len(payloads)
        else:
            chunks = self._send_blob(link, wire.SYSINFO, version, info, now)
        copies, datagrams = self.sysinfo_sent.get(link.name, (0, 0))
        sent = (copies + 1, datagrams + chunks)
        if len(self._sent_counts) > 1024:
            self._sent_counts.clear()
        self.sysinfo_sent[link.name] = self._sent_counts.setdefault(sent, sent)   # 10,000 phones share a few
        self.sysinfo_sent_ms[link.name] = now

    # signalling

    def _message(self, link, msg_type, ies, now):
        self.count_message(msg_type)
        if link.kind == "node":
            if msg_type not in NODE_MESSAGES:
                self.stats.drop("unexpected message from a node")
                return
            if self.xnode.held and wire.IE_PEER_CALL_NO in ies:   # a lost node's successor carries its half
                self.xnode.claim(link, (ies[wire.IE_PEER_CALL_NO],), now)
        if link.kind == "phone" and wire.IE_CODEC in ies:
            codec.note(link, ies, self.stats)      # an A-law phone (host/codec.py)
        if msg_type == wire.PHONE_STATE and link.kind == "host":
            number = ies.get(wire.IE_EXTENSION)
            row = self.directory.extension(number) if number else None
            if row is None or row.site != self._site_of(link):
                self.stats.drop("phone state of another site's extension")
                return
            phones = self.site_phones.setdefault(link.name, {})
            if ies.get(wire.IE_STATE) == 1:
                phones[number] = self.wall_ms(now)
                return self._message_waiting(number, now, registered=True)
            phones.pop(number, None)
            return
        if msg_type == wire.SYSINFO_ACK:
            self.sysinfo_acked[link.name] = ies.get(wire.IE_VERSION)
        if msg_type in (wire.PING, wire.ACK, wire.SYSINFO_ACK, wire.PHONE_STATE):
            return
        if msg_type == wire.SETUP:
            self._setup(link, ies, now)
        elif msg_type == wire.LOCAL_REQUEST:
            self._local_request(link, ies, now)
        elif msg_type == wire.RECORDS:
            self._records(link, ies, now)
        elif msg_type == wire.PUNCH_RESULT and link.kind == "node":
            self.xdirect.punch_result_from_node(link, ies, now)
        elif msg_type == wire.PUNCH_RESULT:
            self._punch_result(link, ies, now)
        elif msg_type == wire.PUNCH_OFFER and link.kind == "node":
            self.xdirect.offer_from_node(link, ies, now)
        elif msg_type == wire.MEDIA_PEER and link.kind == "node":
            self.xdirect.media_peer_from_node(link, ies, now)
        elif msg_type in (wire.PUNCH_OFFER, wire.MEDIA_PEER):
            self.stats.drop("direct path named by a client")   # only the main host (or a node) names a peer
        elif msg_type == wire.FEATURES:
            self._features(link, ies, now)
        elif msg_type == wire.HOLD:
            # (deferred: a call another node switched, said again after a switch)
            if self.takeover is None or not self.takeover.defer(link, msg_type, ies, now):
                self.hold_message(link, ies, now)
        elif msg_type in (wire.CONFERENCE, wire.TRANSFER) and self.takeover is not None and self.takeover.defer(
                link, msg_type, ies, now, TWO_CALLS[msg_type]):
            pass   # said again after a switch: handled once both its calls are taken over (host/cluster/calls.py)
        elif msg_type == wire.CONFERENCE:   # from a phone, or a remote host handing its phone's over
            self.conference_message(link, ies, now)
        elif msg_type == wire.TRANSFER:
            lines.transfer(self, link, ies, now)
        elif msg_type == wire.PARTY:
            # (deferred: said again after a remote host's switch, for a call the node takes over)
            if self.takeover is None or not self.takeover.defer(link, msg_type, ies, now):
                lines.party(self, link, ies, now)
        elif msg_type == wire.VOICEMAIL:
            self.voicemail_uploads.receive(link, ies, now)
        elif msg_type == wire.MAILBOX_CHANGE:
            self.mailbox_sync.receive(link, ies, now)
        elif msg_type == wire.MUSIC and link.kind == "host":
            self.music_acked[link.name] = ies.get(wire.IE_VERSION)
        elif msg_type == wire.FIRMWARE_WANT:
            self.firmware_server.want(link, self._site_of(link), ies, now)
        elif msg_type == wire.FIRMWARE_STATE:
            number = link.name if link.kind == "phone" else ies.get(wire.IE_EXTENSION)
            row = self.directory.extension(number) if number else None
            if row is not None and (link.kind == "phone" or row.site == self._site_of(link)):
                self.firmware_phones.update(number, ies)
            else:
                self.stats.drop("firmware state of another site's extension")
        elif msg_type == wire.NODES and link.kind == "node":
            # a lost node's successor naming our held leg: claimed already (host/cluster/trunk.py claim); or a node
            # that took one of our calls over while we live (a one-sided switch, IE_CALL_ID): our copy goes
            if wire.IE_CALL_ID in ies:
                self._taken_over_elsewhere(link, ies[wire.IE_CALL_ID], now)
            elif ies.get(wire.IE_STANDBY) == 0 and ies.get(wire.IE_PEER_CALL_NO) and self.xnode is not None:
                self.xnode.claim_live(link, ies[wire.IE_PEER_CALL_NO], ies.get(wire.IE_CALL_NO), now)
            elif ies.get(wire.IE_STANDBY) == 1 and ies.get(wire.IE_PEER_CALL_NO):
                self._leg_moved_away(link, ies[wire.IE_PEER_CALL_NO], now)
        elif (msg_type == wire.NODES and self.router is not None and ies.get(wire.IE_STANDBY) == 1
              and ies.get(wire.IE_PEER_CALL_NO) and link in self.standby_links):
            self._moved_here(link, ies[wire.IE_PEER_CALL_NO], now)
        elif msg_type == wire.NODES and self.router is not None and wire.IE_STANDBY in ies:
            # what this session is to its client: its standby (kept to switch to) or its home (docs/cluster.md)
            was_standby = link in self.standby_links
            (self.standby_links.add if ies[wire.IE_STANDBY] else self.standby_links.discard)(link)
            if self.xnode is not None and link.kind in ("host", "phone"):
                # its location key names this node (home) or never does (a standby: host/cluster/trunk.py)
                (self.xnode.standby if ies[wire.IE_STANDBY] else self.xnode.home)((link.kind, link.name))
            call_no = ies.get(wire.IE_PEER_CALL_NO)
            if was_standby and not ies[wire.IE_STANDBY]:
                link.switched_ms = now   # a client that switched here: a SETUP it says again may be a call of ours
            if not ies[wire.IE_STANDBY] and call_no and self.takeover is not None:
                self.takeover.moved(link, call_no, now)   # a phone that switched here names its call
                leg = self.switch.leg(link, call_no) if was_standby and link.kind == "phone" else None
                if leg is not None:   # ours already: a call we took over and named to it (a one-sided switch)
                    self._carried_here(leg.call, link, now)
            elif not ies[wire.IE_STANDBY] and call_no and link.kind == "phone" and self.switch.leg(link, call_no) is None:
                # a node that cannot look calls up (no Redis): a phone's call named here ends at once, "main host
                # lost", rather than staying up in silence (common/cluster.py: the grace period's login names it)
                self.end_named_call(link, call_no, now)
        elif msg_type == wire.BYE:
            self._link_down(link, now, "logged out")
            self.peers.remove(link.session)
        elif msg_type in (wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.DTMF):
            self.call_message(link, msg_type, ies, now)
        else:
            self.stats.drop("unexpected message")

    def end_named_call(self, link, call_no, now):
        """A client's call it named to us (NODES standby 0 with our number for it) that nobody here carries on:
        ended at the client, "main host lost" (a RELEASE with our number, which the client knows its call by)."""
        link.send_signal(wire.RELEASE, {wire.IE_CALL_NO: call_no, wire.IE_CAUSE: wire.CAUSE_MAIN_LOST}, now)

    def _target_link(self, number, wait=False, local=False):
        """(link, None) of where number is served, else (None, cause); on a cluster's node a client at
        another node is reached over the trunk to it (cause PENDING while Redis is asked, with wait),
        unless local (a SETUP from another node is never sent on to a third)."""
        if self.voicemail.handles(number):
            return self.voicemail.link, None
        ext = self.directory.extension(number)
        if ext is None:
            return None, wire.CAUSE_UNKNOWN_EXTENSION
        host = self.directory.remote_host_of_site(ext.site)
        if host is not None:
            peer = self.peers.by_identity.get(("host", host.name))
            if (peer is not None and peer.index in self.links and self.xnode is not None and not local
                    and ("host", host.name) not in self.xnode.homes):
                # a session that did not say it is the site's home (NODES standby 0): a standby (its home
                # is where Redis says), or a remote host that does not say (its home when Redis names no other)
                return self.xnode.route(("host", host.name), self.now, wait, self.links[peer.index])
        else:
            peer = self.peers.by_identity.get(("phone", number))
            if (peer is not None and peer.index in self.links and self.xnode is not None and not local
                    and ("phone", number) in self.xnode.standbys):
                # the phone's standby session: its calls go to its home node while Redis names one
                return self.xnode.route(("phone", number), self.now, wait, self.links[peer.index])
        if (peer is None or peer.index not in self.links) and self.xnode is not None and not local:
            # at another node? (its location key in Redis, host/cluster/trunk.py)
            return self.xnode.route(("host", host.name) if host is not None else ("phone", number), self.now, wait)
        if peer is None or peer.index not in self.links:
            sip_link = self.sip_calls.link_of(number, self.now) if host is None else None
            return (sip_link, None) if sip_link is not None else (None, wire.CAUSE_UNREACHABLE)
        return self.links[peer.index], None

    def place_sip_call(self, link, ies, now):
        """A SIP phone's INVITE, as a SETUP from its link (host/sip/calls.py)."""
        self._setup(link, ies, now)

    def _setup(self, link, ies, now):
        """Route a SETUP from a phone or a remote host. It is checked completely first: a refused
        SETUP leaves no call, no leg and no call number behind."""
        if wire.IE_CALL_NO not in ies or wire.IE_CALLED not in ies or wire.IE_MEDIA_KEY not in ies:
            self.stats.drop("setup missing IEs")
            return
        if link.kind == "node":   # another node's half of a call (host/cluster/trunk.py)
            return self._setup_from_node(link, ies, now)
        if getattr(link, "trunk", None) is not None:   # a call in from a SIP trunk: the provider's caller
            caller = ies.get(wire.IE_CALLING) or "anonymous"
        elif link.kind == "phone" or getattr(link, "sip", False):
            caller = link.name
        else:
            # a remote host places calls for its own site's extensions only: no caller id from elsewhere
            caller = ies.get(wire.IE_CALLING)
            if caller is None or self.directory.site_of_extension(caller) != self._site_of(link):
                self.stats.drop("caller not of the host's site")
                return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now)
        called = ies[wire.IE_CALLED]
        switched = self.xnode is not None and _switched_lately(link, now)
        if switched or (self.xnode is not None and self.xnode.held):
            call = self._half_from_a_lost_node(link, caller, called, switched)
            if call is not None:   # said again after a switch: the lost node had passed it on to us already
                return self._setup_again(call, link, ies, now)
        if called.startswith("*") and not self.voicemail.handles(called):
            if called == groups.PICKUP_CODE or groups.intercom_target(called) or groups.directed_pickup_target(called):
                return self._group_code(link, ies, caller, called, now)
            return self._star_code(link, ies, now)
        own = self.directory.extension(called) is not None or self.directory.group(called) is not None
        out = trunk.route_for(self.directory, called) if not own else None   # our own numbers win
        if out is not None and out[0] is not None and getattr(link, "trunk", None) is None:   # outside: a trunk
            return self.sip_calls.trunk_call(link, ies, caller, self._caller_name(caller), out[0]["name"], out[1], now)
        tried = []
        routed, cause = features.route(called, self.directory.features, self._phone_busy, seen=tried)
        if routed is None:
            routed = self._to_voicemail(tried[-1], cause)
            if routed is None:
                return self.refuse_setup(link, ies, cause, now, caller=caller)
        if routed != called:
            self.log.info("call-forwarded", caller=caller, called=called, to=routed)
            called = routed
        target, cause = self._target_link(called, wait=self.xnode is not None)
        if cause == PENDING:      # another node's client, maybe: routed again once Redis answers
            return self.xnode.park(self._client_of(called), link, ies, now)
        group = self.directory.group(called) if cause == wire.CAUSE_UNKNOWN_EXTENSION else None
        if group is not None:     # a group (host/groups.py), dialled or forwarded to
            return self._group_call(link, ies, caller, group, tried, now)
        if target is not None and target.kind == "phone" and self._phone_busy(called):
            target, cause = None, wire.CAUSE_BUSY
        if target is None and self._to_voicemail(called, cause) is not None:
            called = self._to_voicemail(called, cause)
            target, cause = self._target_link(called)
        if target is None:
            return self.refuse_setup(link, ies, cause, now)
        if target is link:
            return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now)
        cause = self.switch.admit(link, target)   # call numbers left, calls per peer
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now)
        caller_ext = self.directory.extension(caller)
        name = wire_text(caller_ext.name if caller_ext else "", wire.IE_SPEC[wire.IE_CALLING_NAME][3])
        if link.kind == "host":   # a local call its remote host forwarded off the site: no longer local
            self.local_calls.get(self._site_of(link), set()).discard(ies.get(wire.IE_CALL_ID))
        call = self.switch.new_call(caller, called, now)   # the main host chooses the call id
        call.tried = tried
        call.noanswer = self._noanswer_of(called)
        if getattr(link, "trunk", None) is not None:
            call.path = "trunk"
        self.switch.incoming(call, link, ies)
        extra, call.xpair = self.xdirect.setup_ies(link, target, called)   # a site at another node: B2 there
        if switched and target.kind == "node":
            # its client switched here lately: the callee's node may have this call from the node it left, not yet
            # known lost there (_setup_from_node)
            extra = dict(extra or {})
            extra[wire.IE_STANDBY] = 0
        self.switch.offer(call, target, now, name, extra=extra)
        call.b2 = link.kind == "host" and target.kind == "host"
        if call.b2 and self.config.direct_media:
            self._offer_pair(link, target, now)
        self.log.info("call-setup", call=call.uid, caller=caller, called=called,
                      via="%s->%s" % (link.name, target.name))

    def _half_from_a_lost_node(self, link, caller, called, switched):
        """Our half of a call from caller to called whose caller's node is lost, not a conference's: the call a SETUP
        said again after the caller's client switched (to us, or to the node link is the trunk of) is (its client
        never heard that the lost node had it: the acknowledgement was lost with the node). Our leg towards that
        node is held (host/cluster/trunk.py), or, when switched (the client switched in the last SWITCHED_MS: before
        we notice the node's silence, a client in a call notices within 1.5 s; or its node alive, silent towards
        that client alone), not held yet."""
        halves = [leg for _until, _node, leg, _since in self.xnode.held.values()]
        if switched:
            halves += [c.a for c in self.switch.calls.values() if c.a is not None and c.a.link.kind == "node"]
        for leg in halves:
            call = leg.call
            if (call.a is leg and leg.link is not link and call.caller == caller and call.callee == called
                    and call.conference is None and call.state in ("setup", "alerting", "answered")):
                return call
        return None

    def _setup_again(self, call, link, ies, now):
        """A SETUP said again (common/standby.py, common/grace.py, host/remote_host.py) for our half of a call whose
        caller's node was lost after it passed the call on (_half_from_a_lost_node): the client's new leg takes
        the place of our held leg towards the lost node, and the callee rings on (or talks: it answered
        meanwhile). Before, the SETUP was a second call to the callee: busy, or a waiting call, while the first
        rang for nobody until the hold ended (docs/cluster.md "A call dialled as its node dies")."""
        cause = self.switch.admit(link)
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now)
        own = call.a
        if self.xnode.held.pop(own.call_no, None) is None and call.recorded_as is not None:
            # that node may live, fallen silent towards its client alone: it forgets its half, unheard and
            # unrecorded, as for a call taken over from it (MainHost._taken_over_elsewhere)
            own.link.send_signal(wire.NODES, {wire.IE_STANDBY: 0, wire.IE_CALL_ID: bytes.fromhex(call.recorded_as)}, now)
        self.switch._forget_leg(own, now)
        self.switch.incoming(call, link, ies)
        new = call.a
        if link.kind == "node":   # the third node is the caller's now, and records the call under its uid
            call.recorded_as = bytes(ies[wire.IE_CALL_ID]).hex() if wire.IE_CALL_ID in ies else None
        elif call.recorded_as is not None:   # the lost node recorded the call under its uid: so do we now
            call.record_uid = call.recorded_as
        if call.state in ("alerting", "answered") and new.apply(ALERTING_SENT) is not None:
            send_on_leg(new, wire.ALERTING, {}, now)
        if call.state == "answered" and new.apply(ANSWER_SENT) is not None:
            send_on_leg(new, wire.ANSWER, {}, now)
        self.switch.moves += 1   # its key written again (CallMirror)
        self.stats.count("calls set up again: their half from a lost node")
        self.log.info("call-setup-again", call=call.uid, caller=call.caller, called=call.callee, via=link.name)

    def _setup_from_node(self, link, ies, now):
        """A SETUP from another node (host/cluster/trunk.py): its caller's node checked the caller and
        followed the callee's forwarding; here it goes to the callee's link, or is refused with the cause
        (busy, unreachable: the caller's node forwards on busy or to voicemail as for its own calls)."""
        caller = ies.get(wire.IE_CALLING)
        called = ies[wire.IE_CALLED]
        if caller is None:
            self.stats.drop("setup missing IEs")
            return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now)
        switched = ies.get(wire.IE_STANDBY) == 0   # its client switched to that node lately (_setup)
        if switched or self.xnode.held:
            call = self._half_from_a_lost_node(link, caller, called, switched)
            if call is not None:
                # said again by the caller's client at a third node it switched to (not ours): our half goes on
                # with that node's leg in place of ours towards the lost node
                return self._setup_again(call, link, ies, now)
        number = groups.directed_pickup_target(called)
        if number is not None or called == groups.PICKUP_CODE:
            # **N or *8 from a phone at the caller's node, which checked that it may (_group_code): what rings
            # here in its scope (_pickup_at_node, _pickup_at_nodes)
            scope = {number} if number is not None else self.directory.pickup_scope(caller)
            if not self.groups.pickup(link, ies, now, scope, picker_number=caller):
                self.refuse_setup(link, ies, wire.CAUSE_NO_ANSWER, now, caller=caller)
            return None
        target, cause = self._target_link(called, local=True)
        if target is not None and (target.kind == "node" or getattr(target, "sip", False)):
            target, cause = None, wire.CAUSE_UNREACHABLE
        if (target is None and cause == wire.CAUSE_UNREACHABLE) or target in self.standby_links:
            # its client is not at home here (only its standby session, or none): the caller's node had where it
            # was from its cache, behind a move. Refused saying so (IE standby 1): that node asks Redis again and
            # sends the call on to where the client is now (_relocate)
            self.stats.count("setups from a node for a client not at home here")
            return self.refuse_setup(link, ies, wire.CAUSE_UNREACHABLE, now, caller=caller, extra={wire.IE_STANDBY: 1},
                                     why="not at home here")
        if target is not None and target.kind == "phone" and self._phone_busy(called):
            target, cause = None, wire.CAUSE_BUSY
        answer = ies.get(wire.IE_ANSWER)
        if answer == groups.ANSWER_PAGE and target is not None and (target.kind != "phone" or target.legs):
            # the caller's node pages its site's phones here too: idle phones only (a page group of a
            # site with a remote host is paged by that host, never through a node)
            target, cause = None, wire.CAUSE_BUSY if target.kind == "phone" else wire.CAUSE_NOT_PERMITTED
        if target is None:
            return self.refuse_setup(link, ies, cause, now, caller=caller)
        cause = self.switch.admit(link, target)
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now, caller=caller)
        call = self.switch.new_call(caller, called, now)
        call.noanswer = None       # the caller's node rings it on no answer
        if wire.IE_CALL_ID in ies:   # a transfer joining it here links to the caller's node's record of it
            call.recorded_as = bytes(ies[wire.IE_CALL_ID]).hex()
        self.switch.incoming(call, link, ies)
        name = ies.get(wire.IE_CALLING_NAME)
        # an intercom (*80N) or a page of the caller's node answers by itself here too (a page: muted)
        extra = {wire.IE_ANSWER: answer} if answer in (groups.ANSWER_INTERCOM, groups.ANSWER_PAGE) else None
        self.switch.offer(call, target, now, name, extra=extra)
        self.xdirect.setup_in(call, link, ies, target, now)   # the caller's site offered as a direct peer (B2)
        self.log.info("call-setup", call=call.uid, caller=caller, called=called, via="%s->%s" % (link.name, target.name))

    # groups, pickup, intercom (host/groups.py)

    def _caller_name(self, caller):
        ext = self.directory.extension(caller)
        return wire_text(ext.name if ext else "", wire.IE_SPEC[wire.IE_CALLING_NAME][3])

    def _group_call(self, link, ies, caller, group, tried, now, answer=None):
        """A call to a group (or an intercom, answer=1): leg a now, the members' legs by GroupCalls."""
        if group["strategy"] == "pickup":     # *8 picks up in it; its number rings nobody
            return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now, caller=caller)
        if group["strategy"] == "page":
            site = self._site_of(link) if link.kind == "phone" else self.directory.site_of_extension(caller)
            if site != group["site"]:
                return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now, caller=caller)
            group = dict(group, members=group["members"] or [e.number for e in self.directory.extensions(site)])
        cause = self.switch.admit(link)
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now, caller=caller)
        if link.kind == "host":
            self.local_calls.get(self._site_of(link), set()).discard(ies.get(wire.IE_CALL_ID))
        call = self.switch.new_call(caller, group["number"], now)
        call.tried = tried
        if getattr(link, "trunk", None) is not None:   # a DID of the group: a trunk call (docs/sip.md)
            call.path = "trunk"
        self.switch.incoming(call, link, ies)
        self.groups.start(call, group, self._caller_name(caller), now, answer)

    def _group_code(self, link, ies, caller, called, now):
        """*8 (pickup) and **N (directed pickup) from a phone here, *80N (intercom to N) from any phone."""
        directed = groups.directed_pickup_target(called)
        if called == groups.PICKUP_CODE or directed:
            if link.kind != "phone":
                return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now, caller=caller)
            scope, cause = self.directory.pickup_scope(caller), None
            if directed:
                target = self.directory.extension(directed)
                scope = {directed}
                cause = (wire.CAUSE_UNKNOWN_EXTENSION if target is None else wire.CAUSE_NOT_PERMITTED
                         if target.site != self.directory.site_of_extension(caller) else None)
            if cause is not None:
                return self.refuse_setup(link, ies, cause, now, caller=caller)
            if self.groups.pickup(link, ies, now, scope):
                return None
            if directed:
                cause = self._pickup_at_node(link, ies, caller, directed, now)
            else:
                cause = self._pickup_at_nodes(link, ies, caller, scope, now)
            if cause is not None:
                self.refuse_setup(link, ies, cause, now, caller=caller)   # nothing rings
            return None
        number = groups.intercom_target(called)
        if self.directory.extension(number) is None:
            return self.refuse_setup(link, ies, wire.CAUSE_UNKNOWN_EXTENSION, now, caller=caller)
        intercom = {"number": number, "strategy": "ring-all", "members": [number], "ring_s": groups.RING_S[0],
                    "overflow": None, "site": None}
        self._group_call(link, ies, caller, intercom, [number], now, answer=groups.ANSWER_INTERCOM)

    def _pickup_at_node(self, link, ies, caller, number, now):
        """**N from a phone here for a phone N at another node of a cluster (Redis's location of it): the
        SETUP goes on to that node, which picks up the call ringing there and records it (_setup_from_node),
        as one call; this node's half is never recorded. None when sent on (or waiting for Redis), else the
        cause for the picker: "no answer" as for a phone here that does not ring."""
        if self.xnode is None:
            return wire.CAUSE_NO_ANSWER
        target, cause = self._target_link(number, wait=True)
        if cause == PENDING:      # routed again (from _setup) once Redis answers
            return self.xnode.park(("phone", number), link, ies, now)
        if target is None or target.kind != "node":
            return wire.CAUSE_NO_ANSWER
        if not self.speaks(target.node, "pickup"):   # older code there: it would refuse the **N as unknown
            self.stats.count("pickups not sent to a node of older code")
            self.log.info("pickup-not-at-node", picker=caller, called=ies[wire.IE_CALLED], node=target.node)
            return wire.CAUSE_NO_ANSWER
        return self._pickup_via(link, ies, caller, target, (), now)

    def _pickup_at_nodes(self, link, ies, caller, scope, now):
        """*8 from a phone here that finds nothing ringing here in its scope, on a cluster's node where a
        number of the scope is not a phone logged in here (it may ring at another node): the SETUP goes on
        to the other live nodes one after the other, in node id order, until one picks up (each as for **N,
        _setup_from_node, which takes its longest-ringing call in the scope; a refusal offers the next,
        call_message). None when sent on, else "no answer"; recorded as a **N is (_pickup_at_node)."""
        if self.xnode is None or all(self._phone_home_here(number) for number in scope if number != caller):
            return wire.CAUSE_NO_ANSWER
        nodes = [node for node in self.xnode.live() if self.speaks(node, "pickup")]   # not a node of older code
        if not nodes:
            return wire.CAUSE_NO_ANSWER
        return self._pickup_via(link, ies, caller, self.xnode.up(nodes[0]), nodes[1:], now)

    def _pickup_via(self, link, ies, caller, target, then, now):
        """The picker's SETUP (a **N or *8) on to the node of trunk link target, then to the nodes then if
        that one refuses (call_message): None when sent, else the cause. This node's half is never
        recorded: the node that picks up records the call (_setup_from_node)."""
        cause = self.switch.admit(link, target)
        if cause is not None:
            return cause
        call = self.switch.new_call(caller, ies[wire.IE_CALLED], now)
        call.recorded_elsewhere = True
        call.pickup_at = list(then) or None
        self.switch.incoming(call, link, ies)
        self.switch.offer(call, target, now, self._caller_name(caller))
        self.log.info("call-pickup-at-node", call=call.uid, picker=caller, called=ies[wire.IE_CALLED], node=target.node)
        return None

    def _next_pickup_node(self, call):
        """The trunk link to the next live node a *8 sent on may ask (_pickup_at_nodes), else None."""
        while call.pickup_at:
            target = self.xnode.up(call.pickup_at.pop(0))
            if target is not None and self.switch.admit(target) is None:
                return target
        return None

    def _phone_home_here(self, number):
        """number's phone is logged in here, and not as a standby: a call to it rings here."""
        peer = self.peers.by_identity.get(("phone", number))
        return (peer is not None and peer.index in self.links
                and (self.xnode is None or ("phone", number) not in self.xnode.standbys))

    def group_target(self, number, call):
        """Where a group's member rings: (link, None), or (None, cause) when it cannot now. On a cluster's
        node a member at another node rings over the trunk to it, as a call to it would (docs/cluster.md):
        (None, PENDING) while Redis is asked where it is (host/groups.py asks again each tick)."""
        target, cause = self._target_link(number, wait=self.xnode is not None)
        if target is not None and target.kind == "phone" and self._phone_busy(number):
            return None, wire.CAUSE_BUSY      # in a call with call waiting on, it is offered a waiting call
        if target is not None and target.kind == "phone" and target.legs and call.group is not None and call.group.page:
            return None, wire.CAUSE_BUSY      # ... but not a page: idle phones only
        if target is not None and self.directory.features(number)["dnd"]:
            return None, wire.CAUSE_DND
        return target, cause

    def group_overflow(self, call, number, now):
        self._forward(call, number, "group overflow", now)

    def group_answered(self, call, now):
        """A member answered: B2 as for a forwarded call (the pair is offered now, the media follows)."""
        call.b2 = call.a.link.kind == "host" and call.b.link.kind == "host" and call.a.link is not call.b.link
        if call.b2 and self.config.direct_media:
            self._offer_pair(call.a.link, call.b.link, now)
            self._media_peers(call, now)

    def _phone_busy(self, number):
        """A phone at the main host is busy when it has a leg; a remote host's phone: not known here
        (its remote host forwards on busy, host/remote_host.py)."""
        link = self.links_by_name.get(("phone", number))
        if link is None or not link.legs:
            return False
        calls = self.switch.calls_of(link)
        if link.legs > len(calls):   # it rings for a group or is paged: legs no Call holds as its a or b
            return True
        return lines.busy(calls, self.directory.features(number))

    # station features (host/features.py, docs/features.md)

    def _star_code(self, link, ies, now):
        """A star code from a phone registered here: its settings change in the directory."""
        if link.kind != "phone":
            return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now)
        try:
            changes, cause = features.star_code(ies[wire.IE_CALLED])
            settings = self.directory.features(link.name)
            settings.update(changes)
            features.check(settings)
        except features.FeatureError as exc:
            self.log.info("star-code", extension=link.name, error=str(exc))
            return self.refuse_setup(link, ies, wire.CAUSE_UNKNOWN_EXTENSION, now)

        key = (link, ies.get(wire.IE_CALL_NO))

        def done(settings, error, later):
            self.star_codes_waiting.pop(key, None)
            if isinstance(error, features.FeatureError):
                self.log.info("star-code", extension=link.name, error=str(error))
                return self.refuse_setup(link, ies, wire.CAUSE_UNKNOWN_EXTENSION, later or now)
            if error is not None:   # a cluster's PostgreSQL away for STAR_CODE_WAIT_MS: the phone may dial it again
                self._write_failed("change_features", error)
                return self.refuse_setup(link, ies, wire.CAUSE_NETWORK_BUSY, later or now)
            self.log.info("features", extension=link.name, settings=settings)
            self.refuse_setup(link, ies, cause, later or now)
        # the changes, not the settings: applied to what is stored when written (one that waited keeps another's)
        write = self._write_later("change_features", (link.name, changes), done, link, STAR_CODE_WAIT_MS)
        if write is not None and not write.answered:   # waiting for a cluster's PostgreSQL: the caller may hang up
            self.star_codes_waiting[key] = write

    def _withdraw_star_code(self, key, why):
        """A star code waiting for PostgreSQL whose caller hung up (or left): not made, if it still can be."""
        write = self.star_codes_waiting.pop(key)
        made = not self.directory.withdraw(write)
        self.stats.count("star codes withdrawn" + (" too late" if made else ""))
        self.log.info("star-code-withdrawn", extension=key[0].name, why=why,
                      result="may still be made" if made else "not made")
    def _write_later(self, name, args, done, link=None, wait_ms=0):
        """directory.name(*args), then done(result, error, now): at once on SQLite; on a cluster node its
        PostgreSQL part runs off the loop (host/cluster/replica.py write_later) and done comes when it
        answered (now: the time then), if `link` is still up; its errors reach done. With wait_ms it waits
        that long for a PostgreSQL that is away (the write is made when it is back, in order, once).
        Returns the cluster's write while it waits (replica.py withdraw), else None."""
        later = getattr(self.directory, "write_later", None)
        if later is None:
            try:
                result = getattr(self.directory, name)(*args)
            except features.FeatureError as exc:
                done(None, exc, None)
                return None
            except (StoreUnavailable, ValueError, TypeError, KeyError) as exc:
                if name != "add_call_record":
                    raise
                done(None, exc, None)
                return None
            done(result, None, None)
            return None

        def finished(result, error, now):
            if link is None or link.up:
                done(result, error, now)
        return later(name, args, finished, wait_ms)

    def _write_failed(self, name, error):
        """A directory write on a cluster node that PostgreSQL did not take (away, or it refused it)."""
        self.stats.count("directory writes failed")
        self.log.warning("directory-write", write=name, error="%s: %s" % (error.__class__.__name__, error))

    def _features(self, link, ies, now):
        """A remote host's phone changed its settings (a star code there): stored, acknowledged."""
        number = ies.get(wire.IE_EXTENSION)
        if link.kind != "host" or number is None or self.directory.site_of_extension(number) != self._site_of(link):
            self.stats.drop("features not of the host's site")
            return
        try:
            settings = features.decode(ies.get(wire.IE_DATA, b""))
        except features.FeatureError as exc:
            self.stats.drop("bad features")
            self.log.warning("bad-features", host=link.name, error=str(exc))
            return

        key = (link, ies.get(wire.IE_CALL_NO))

        def done(settings, error, later):
            self.star_codes_waiting.pop(key, None)
            if isinstance(error, features.FeatureError):
                self.stats.drop("bad features")
                self.log.warning("bad-features", host=link.name, error=str(error))
                return
            if error is not None:   # not acknowledged: the remote host keeps it and sends it at its next login
                return self._write_failed("set_features", error)
            self.log.info("features", extension=number, settings=settings, via=link.name)
            link.send_signal(wire.FEATURES, {wire.IE_EXTENSION: number, wire.IE_DATA: features.encode(settings)},
                             later or now)
        self._write_later("set_features", (number, settings), done, link, FEATURES_WAIT_MS)

    def _noanswer_of(self, number):
        """(number, ms) where a call to number goes when it rings that long unanswered, else None."""
        settings = self.directory.features(number)
        target = settings["noanswer"] or divert(number, wire.CAUSE_NO_ANSWER, settings)
        return (target, settings["noanswer_s"] * 1000) if target else None

    def _to_voicemail(self, number, cause):
        """The mailbox number (*98N) a call to number that would end with cause goes to, else None."""
        return divert(number, cause, self.directory.features(number)) if self.voicemail.store is not None else None

    def _mailbox_changed(self, mailbox, now):
        self._message_waiting(mailbox, now)
        self.mailbox_sync.mailbox_changed(mailbox, now)

    def _message_waiting(self, mailbox, now, registered=False):
        """A mailbox's new-message count to its phone (MESSAGE_WAITING), directly or through its
        site's remote host, when it changed and when the phone registers (if it is not 0)."""
        if self.voicemail.store is None or mailbox is None:
            return
        new = min(255, self.voicemail.store.counts(mailbox)[0])
        if registered and not new:
            return
        target, _ = self._target_link(mailbox)
        if target is not None and target.kind in ("phone", "host"):
            target.send_signal(wire.MESSAGE_WAITING, {wire.IE_EXTENSION: mailbox, wire.IE_STATE: new}, now)

    def _forward_no_answer(self, call, now):
        """The callee rang for its no-answer time: its leg goes, the call is offered where it forwards."""
        number = call.noanswer[0]
        self.switch.drop_callee(call, wire.CAUSE_NO_ANSWER, now)
        self._forward(call, number, "no answer", now)

    def call_message(self, link, msg_type, ies, now):
        """A remote host's phone was busy (the main host cannot know that beforehand): forward on
        busy happens here, the caller keeps its call; everything else as every host does."""
        if self.takeover is not None and self.takeover.defer(link, msg_type, ies, now):
            return   # a call another node switched: handled once it is taken over from Redis
        if msg_type == wire.ANSWER and self.takeover is not None:
            leg = self.switch.leg_for(ies, link)
            if leg is not None and leg is leg.call.b and leg.state == CONNECTED:
                # a client that switched says again the ANSWER of each call it answered (its node may have died
                # before the call's key said so: common/standby.py _answers): this one was answered here already
                self.stats.count("answers said again, the call answered already")
                return None
        leg = self.switch.leg_for(ies, link) if msg_type == wire.RELEASE else None
        if (leg is None and msg_type == wire.RELEASE and wire.IE_PEER_CALL_NO not in ies
                and (link, ies.get(wire.IE_CALL_NO)) in self.star_codes_waiting):
            return self._withdraw_star_code((link, ies.get(wire.IE_CALL_NO)), "hung up")
        call = leg.call if leg is not None else None
        if (call is not None and leg is call.b and leg.link.kind == "node" and ies.get(wire.IE_STANDBY) == 1
                and call.state == "setup" and not call.relocated and self.xnode is not None):
            return self._relocate(call, leg, ies, now)
        if call is not None and leg is call.b and call.pickup_at and call.state == "setup":
            target = self._next_pickup_node(call)   # a node found nothing for a *8: the next one is asked
            if target is not None:
                leg.apply(RELEASE_RECEIVED)
                self.switch.drop_callee(call, ies.get(wire.IE_CAUSE, wire.CAUSE_NO_ANSWER), now)
                self.log.info("call-pickup-at-node", call=call.uid, picker=call.caller, node=target.node)
                self.switch.offer(call, target, now, self._caller_name(call.caller))
                return None
        if (call is not None and leg is call.b and ies.get(wire.IE_CAUSE) in voicemail.DIVERT_CAUSES
                and call.state in ("setup", "alerting") and call.a.link.kind != "node"):   # the caller's node does
            cause = ies[wire.IE_CAUSE]
            settings = self.directory.features(call.callee)
            number = (settings["busy"] if cause == wire.CAUSE_BUSY else None) or self._to_voicemail(call.callee, cause)
            if number is not None:
                leg.apply(RELEASE_RECEIVED)
                self.switch.drop_callee(call, cause, now)
                return self._forward(call, number, wire.CAUSE_TEXT[cause], now)
        HostCore.call_message(self, link, msg_type, ies, now)

    def _relocate(self, call, leg, ies, now):
        """The node we sent a call to says its callee is not at home there (_setup_from_node: our cache of where
        the callee is was behind a move, host/cluster/trunk.py CACHE_MS). Once per call: what we cached is
        forgotten, Redis is asked again, and the call goes to where it names (the caller hears nothing of it;
        nowhere: unreachable, or the callee's voicemail, as for a first try)."""
        self.xnode.cache.pop(self._client_of(call.callee), None)
        call.relocated = True
        leg.apply(RELEASE_RECEIVED)
        self.switch.drop_callee(call, ies.get(wire.IE_CAUSE, wire.CAUSE_UNREACHABLE), now)
        self.stats.count("location: calls sent on after a move")
        self.forwards_waiting[call] = (call.callee, "moved", now + FORWARD_LOCATE_MS)
        return self._forward(call, call.callee, "moved", now)

    def _client_of(self, number):
        """The client a cluster locates number by (host/cluster/trunk.py): its site's remote host, else its phone."""
        ext = self.directory.extension(number)
        host = self.directory.remote_host_of_site(ext.site) if ext is not None else None
        return ("host", host.name) if host is not None else ("phone", number)

    def forward_call(self, call, number, now):
        """The auto-attendant routes its call on (host/voicemail.py, Endpoint.route_on)."""
        self._forward(call, number, "attendant", now)

    def _forward(self, call, number, reason, now):
        """Offer a call whose callee leg is gone to number, following that number's forwarding."""
        waiting = self.forwards_waiting.pop(call, None)
        if waiting is None:    # the first try: the number's own forwarding, its place (asked again each tick)
            routed, cause = features.route(number, self.directory.features, self._phone_busy, seen=call.tried)
        else:                  # routed before: what it was routed to, as then (its number is in call.tried)
            routed, cause = waiting[0], None
        target = None
        group = None
        if routed is not None:
            target, cause = self._target_link(routed, wait=self.xnode is not None)
            if cause == PENDING:   # at another node, maybe: asked of Redis, the caller hears ring-back meanwhile
                until = waiting[2] if waiting is not None else now + FORWARD_LOCATE_MS
                if now < until:
                    self.forwards_waiting[call] = (routed, reason, until)
                    return None
                self.stats.count("location: not answered in time")
                target, cause = None, wire.CAUSE_UNREACHABLE
            group = self.directory.group(routed) if cause == wire.CAUSE_UNKNOWN_EXTENSION else None
        if group is not None and group["strategy"] in ("ring-all", "hunt"):   # a group is a forward target too
            self.log.info("call-forwarded", call=call.uid, called=call.callee, to=routed, reason=reason)
            call.callee = routed
            call.noanswer = None
            return self.groups.start(call, group, self._caller_name(call.caller), now)
        if target is not None and (target is call.a.link and target.kind == "phone"):
            target, cause = None, wire.CAUSE_FORWARD_LOOP
        if target is not None and target.kind == "phone" and self._phone_busy(routed):
            target, cause = None, wire.CAUSE_BUSY
        mailbox = self._to_voicemail(call.tried[-1], cause) if target is None and call.tried else None
        if mailbox is not None:       # the number it went to is busy, in DND or away: its voicemail
            routed = mailbox
            target, cause = self._target_link(mailbox)
        if target is not None:
            cause = self.switch.admit(target)
        if cause is not None:
            self.log.info("call-forward-failed", call=call.uid, to=number, cause=wire.CAUSE_TEXT[cause])
            self.switch.release(call.a, cause, now)
            return self.end_call(call, cause, now)
        self.log.info("call-forwarded", call=call.uid, called=call.callee, to=routed, reason=reason)
        caller_ext = self.directory.extension(call.caller)
        name = wire_text(caller_ext.name if caller_ext else "", wire.IE_SPEC[wire.IE_CALLING_NAME][3])
        call.callee = routed
        call.offered_ms = now
        call.noanswer = self._noanswer_of(routed)
        call.punch = {}
        call.b2 = call.a.link.kind == "host" and target.kind == "host" and target is not call.a.link
        extra, call.xpair = self.xdirect.setup_ies(call.a.link, target, routed)
        self.switch.offer(call, target, now, name, extra=extra)
        if call.b2 and self.config.direct_media:
            self._offer_pair(call.a.link, target, now)

    def on_call_event(self, call, msg_type, now):
        # B2: media straight between the remote hosts once the callee rings; a call that may still
        # be forwarded on no answer waits for the answer (a direct path is not taken back)
        if (call.b2 or call.xpair is not None) and self.config.direct_media and (
                (msg_type == wire.ALERTING and call.noanswer is None) or
                (msg_type == wire.ANSWER and call.noanswer is not None)):
            if call.b2:
                self._media_peers(call, now)
            elif call.b.link.kind == "node":   # the caller's node: both nodes tell their sites (host/cluster/direct.py)
                self.xdirect.media_peers(call, now)

    def on_call_ended(self, call, cause, now):
        if call.picked_up_as is not None and call.b is not None and call.b.link.kind == "node" and not call.b.link.up:
            # a pickup at the node that records it, lost during the call and not taken over: recorded here, as that
            # node would have (under its uid, so a copy it wrote after all is the same record)
            uid, rang = call.picked_up_as
            record = call_record(call, MAIN_ORIGIN, cause, now, self.wall_ms(now))
            record.update(uid=uid, caller=call.callee, callee=call.caller, linked=None,
                          dialled=rang if rang != call.caller else None)
            self.directory.add_call_record(record)
            return
        if call.record_here:
            pass   # a lost node's call that it joined between two other nodes, spliced here: ours to record now
        elif call.recorded_elsewhere and call.a is not None and call.a.link.kind == "phone":
            return   # a phone's pickup (**N) of a call ringing at another node: recorded there (_pickup_at_node)
        elif call.a is not None and call.a.link.kind == "node" and (call.a.link.up or call.recorded_elsewhere):
            # another node's call: recorded there, once (here only when that node was lost, unless that node
            # had joined it by a transfer into a call from another node, which records it: host/lines.py)
            return
        # under Call.record_as: a lost node's call under that node's uid, so that a copy it writes after all is one
        record = call_record(call, MAIN_ORIGIN, cause, now, self.wall_ms(now))
        if self.records_waiting is None:
            self.directory.add_call_record(record)
        else:   # until its ended key is written: another node may carry the call now (records_settled)
            self.records_waiting[call.uid] = (record, now)

    def records_settled(self, ended, keyed, now):
        """The call keys' writer wrote the ended keys of `ended` ({call uid: still ours}; host/cluster/node.py
        ENDED_IF_OURS) and has keys for the live calls `keyed` (uids). A call ended here whose key another node
        had made its own (it took the call over while this node was stopped or cut off, and this node ended its
        copy only when it ran again) is recorded by that node: its record here, with this node's cause and end
        (a client's session logged in again: "unreachable"), is dropped, where PostgreSQL would have kept the
        first one written. A call that never had a key, or whose key is ours, is recorded now; a record that
        waited RECORD_WAIT_MS (Redis down) is written anyway."""
        waiting = self.records_waiting
        for uid, (record, when) in list(waiting.items()):
            ours = ended.get(uid)
            if ours is None and uid in keyed and now - when < RECORD_WAIT_MS:
                continue   # its ended key not written yet
            del waiting[uid]
            if ours is False:
                self.stats.count("call records of calls another node carries dropped")
                self.log.info("call-record-dropped", call=uid, why="the call is another node's")
            else:
                self.directory.add_call_record(record)

    # B2: hole punching between remote hosts

    def _offer_pair(self, a, b, now):
        key = self.pair_keys.setdefault(frozenset((a.name, b.name)), os.urandom(32))
        first, second = sorted((a, b), key=lambda link: link.name)
        for role, link, peer in ((0, first, second), (1, second, first)):
            link.send_signal(wire.PUNCH_OFFER, {wire.IE_PEER_NAME: peer.name, wire.IE_ADDRESS: peer.address,
                                                wire.IE_PEER_KEY: key, wire.IE_ROLE: role}, now)
        self.log.info("punch-offer", a=first.name, b=second.name)

    def _reoffer_pairs(self, link, now):
        """link's pairs with the remote hosts at home here, offered again (B7). A standby session on a
        cluster is no site's home: its pairs are its home node's to offer (host/cluster/direct.py), which
        may hold another key for them."""
        if link in self.standby_links:
            return
        for pair in list(self.pair_keys):
            if link.name in pair:
                other_name = next(n for n in pair if n != link.name)
                other = self.links_by_name.get(("host", other_name))
                if other is not None and other not in self.standby_links:
                    self._offer_pair(link, other, now)

    def _media_peers(self, call, now):
        key = os.urandom(16)
        a, b = call.a, call.b
        call.peered = True
        a.link.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: a.peer_call_no, wire.IE_CALL_NO: b.peer_call_no,
                                             wire.IE_MEDIA_KEY: key, wire.IE_ROLE: 0,
                                             wire.IE_PEER_NAME: b.link.name}, now)
        b.link.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: b.peer_call_no, wire.IE_CALL_NO: a.peer_call_no,
                                             wire.IE_MEDIA_KEY: key, wire.IE_ROLE: 1,
                                             wire.IE_PEER_NAME: a.link.name}, now)

    def media_through_here(self, call, now, from_node=False):
        """This host joins call into another (a transfer, a conference): media it had sent straight
        between two remote hosts (B2) comes through here again. Each remote host still in the call
        gets a MEDIA_PEER without a key; one whose MEDIA_PEER was still on its way, lost once and
        sent again, gets the two in order (the reliable layer), so it ends up sending to us. A call
        direct between our site and another node's: that node takes its end back too (unless it is
        the one that said so, from_node)."""
        if not call.peered:
            return
        call.peered = False
        call.path = "relay"
        if call.xpair is not None and not from_node:
            self.xdirect.take_back(call, now)
        for leg in (call.a, call.b):
            if leg is not None and leg.link.kind == "host" and leg.peer_call_no:
                leg.link.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: leg.peer_call_no,
                                                       wire.IE_CALL_NO: leg.call_no}, now)
        self.stats.count("direct paths taken back")
        self.log.info("call-path", call=call.uid, path="relay", why="joined here")

    def _punch_result(self, link, ies, now):
        peer_name = ies.get(wire.IE_PEER_NAME)
        path = ies.get(wire.IE_PATH, wire.PATH_RELAY)
        if link.kind != "host" or peer_name is None or path not in (wire.PATH_RELAY, wire.PATH_DIRECT):
            self.stats.drop("bad punch result")
            return
        self.log.info("punch-result", host=link.name, peer=peer_name, path=wire.PATH_NAMES[path])
        self.xdirect.punch_result(link, peer_name, path, now)   # a peer at another node (host/cluster/direct.py)
        for call in self.switch.calls.values():
            if call.b2 and {call.a.link.name, call.b.link.name} == {link.name, peer_name}:
                call.punch[link.name] = path
                if call.punched_path() is not None:
                    call.path = call.punched_path()
                    self.log.info("call-path", call=call.uid, path=call.path)

    # B3: permission for local calls

    def _local_request(self, link, ies, now):
        calling, called = ies.get(wire.IE_CALLING), ies.get(wire.IE_CALLED)
        call_id = ies.get(wire.IE_CALL_ID)
        if link.kind != "host" or calling is None or called is None or call_id is None:
            self.stats.drop("bad local request")
            return
        host = self.directory.remote_host(link.name)
        cause = None
        a, b = self.directory.extension(calling), self.directory.extension(called)
        group = self.directory.group(called) if b is None else None
        if group is not None and group["strategy"] in ("ring-all", "hunt") and group["members"]:
            sites = {self.directory.site_of_extension(m) for m in group["members"]}
            b = a if len(sites) == 1 and a is not None and sites == {a.site} else None   # a group of the site
        if host is None or a is None or b is None or a.site != host.site or b.site != host.site:
            cause = wire.CAUSE_UNKNOWN_EXTENSION
        else:
            site = self.directory.site(host.site)
            active = self.local_calls.setdefault(host.site, set())
            if call_id in active:
                pass   # asked again: the same grant
            else:
                cause = local_call_cause(site.local_calls, site.local_call_quota, a.barred, len(active))
                if cause == wire.CAUSE_NETWORK_BUSY:
                    self.stats.count("admission refused: local call quota")
                if cause is None and len(active) >= self.config.max_calls_per_host:
                    self.stats.drop("calls per peer")   # grants held for a host are bounded even without a quota
                    cause = wire.CAUSE_NETWORK_BUSY
                if cause is None:
                    active.add(call_id)
        reply = {wire.IE_CALL_ID: call_id}
        if cause is None:
            link.send_signal(wire.LOCAL_GRANT, reply, now)
        else:
            reply[wire.IE_CAUSE] = cause
            link.send_signal(wire.LOCAL_REFUSE, reply, now)
        self.log.info("local-call", site=host.site if host else None, caller=calling, called=called,
                      granted=cause is None, cause=wire.CAUSE_TEXT.get(cause))

    def _records(self, link, ies, now):
        """A call record uploaded by a remote host, about its own site; stored once per (host, uid).

        Anything else (a phone uploading, another site's extensions, a field of the
        wrong type or out of range) is dropped, counted and logged, and not acknowledged.
        """
        if link.kind != "host":
            self.stats.drop("records from a phone")
            return
        site = self._site_of(link)
        try:
            record = decode_upload(ies.get(wire.IE_DATA, b""), link.name, site, self.directory.site_of_extension,
                                   self.wall_ms(now))
        except (ValueError, TypeError, KeyError) as exc:
            self.stats.drop("bad record")
            self.log.warning("bad-record", host=link.name, error=str(exc))
            return

        def done(stored, error, later):
            if isinstance(error, StoreUnavailable):
                # a cluster's PostgreSQL is away: acknowledged once it is stored (retry_records)
                self.stats.count("records deferred")
                self.log.warning("record-deferred", host=link.name, uid=record["uid"], error=str(error))
                self.deferred_records.append((link.name, record))
                return
            if isinstance(error, (ValueError, TypeError, KeyError)):
                self.stats.drop("bad record")
                self.log.warning("bad-record", host=link.name, error=str(error))
                return
            if error is not None:   # not acknowledged: the remote host uploads it again at its next login
                return self._write_failed("add_call_record", error)
            self._record_stored(link, site, record, stored, later or now)
        self._write_later("add_call_record", (record,), done, link)

    def _record_stored(self, link, site, record, stored, now):
        self.stats.count("records stored" if stored else "records duplicate")
        self.local_calls.get(site, set()).discard(bytes.fromhex(record["uid"]))
        link.send_signal(wire.RECORDS, {wire.IE_CALL_ID: bytes.fromhex(record["uid"])}, now)

    def retry_records(self, now):
        """Store the uploads deferred while PostgreSQL was away and acknowledge them to their remote hosts
        still logged in (one that logged out uploads again at its next login: stored once by its uid)."""
        if self._retrying:
            return
        waiting, self.deferred_records = self.deferred_records, []
        self._retrying = True

        def store(n, now):
            if n == len(waiting):
                self._retrying = False
                return

            def done(stored, error, later):
                later = later or now
                if isinstance(error, StoreUnavailable):
                    self._retrying = False
                    self.deferred_records = waiting[n:] + self.deferred_records
                    return
                name, record = waiting[n]
                if error is None:
                    link = self.links_by_name.get(("host", name))
                    if link is not None and link.up:
                        self._record_stored(link, self._site_of(link), record, stored, later)
                else:
                    self._write_failed("add_call_record", error)
                store(n + 1, later)
            self._write_later("add_call_record", (waiting[n][1],), done)
        store(0, now)

    # timers

    def flush_signalling(self):
        HostCore.flush_signalling(self)
        if self.xnode is not None:
            self.xnode.flush(self.now)   # our logins to the other nodes

    def on_tick(self, now):
        pump = self.pump or _no_pump   # the relay table relays what waits between the steps (core.pump)
        if self.records_waiting:   # Redis down: a record waits at most RECORD_WAIT_MS for its key
            self.records_settled({}, set(self.records_waiting), now)
        if self.xnode is not None:
            self.xnode.tick(now)
        for call, (number, reason, _until) in list(self.forwards_waiting.items()):
            if call.released or call.b is not None:   # the caller hung up meanwhile
                del self.forwards_waiting[call]
            else:
                self._forward(call, number, reason, now)
        self.play_music_on_hold(now)
        pump()
        self.voicemail.tick(now)
        self.mailbox_sync.pump(now)
        self.switch.flush()
        pump()
        self.groups.tick(now)
        ring_ms = self.config.ring_timeout_s * 1000
        for call in self._ring_calls(pump):
            # call.state in ("setup", "alerting") with a callee leg, without the property
            pump()
            b = call.b
            ringing = b is not None and b.state != CONNECTED and not call.released and call.conference is None
            if ringing and call.noanswer is not None and now - call.offered_ms >= call.noanswer[1]:
                self._forward_no_answer(call, now)
            # a blind transfer's timer is its recall (host/lines.py): it rings on from the new party's
            # first offer, so the ring timeout would come first and end it with nobody rung back
            elif ringing and call.recall is None and now - call.offered_ms > ring_ms:
                self.switch.release(call.a, wire.CAUSE_NO_ANSWER, now)
                self.switch.release(call.b, wire.CAUSE_NO_ANSWER, now)
                self.end_call(call, wire.CAUSE_NO_ANSWER, now)
        pump()
        for peer in self.peers.due(now, pump):
            pump()
            peer.channel.handle_timer(now)
            self.peers.dirty.add(peer)    # what it resends goes out with this turn's datagrams
        pump()
        if now - self._last_expiry_ms > 1000:
            self._last_expiry_ms = now
            for peer in self.peers.expired(now, pump):
                pump()
                link = self.links.get(peer.index)
                if link is not None:
                    self._link_down(link, now, "expired" if not peer.channel.failed else peer.channel.error)
                self.peers.remove(peer)
            if self.voicemail.store is not None and self.voicemail.store.changed():
                self.voicemail.load_attendants()   # `upbx admin attendant` changed them
                self.mailbox_sync.mailbox_changed(None, now)   # or a greeting: every site's listing
            if hasattr(self.directory, "expire_writes"):
                self.directory.expire_writes()   # writes that waited for PostgreSQL past their bound: refused
            if self.deferred_records and getattr(self.directory, "available", True):
                self.retry_records(now)
            if self.directory.music_on_hold_version() != self.music_version:
                self._load_music()
                for link in list(self.links.values()):
                    if link.kind == "host":
                        self._send_music(link, now)
            version = self.directory.sysinfo()[0]
            if version != self._sysinfo_version:
                self.peers.forget_keys()   # secrets may have changed: derive handshake keys afresh
            if self._sysinfo_version is not None and version != self._sysinfo_version:
                for link in list(self.links.values()):
                    if link.kind == "node":  # another node's trunk login: it has the directory (and drops a SYSINFO)
                        continue
                    if link.kind == "host":  # the directory may have changed too: new phones' secrets
                        site = self.directory.remote_host(link.name).site
                        self._send_blob(link, wire.DIRECTORY, 0, encode(self._site_directory(site)), now)
                    self._send_sysinfo(link, now)
            self._sysinfo_version = version

    def _ring_calls(self, pump=_no_pump):
        """The calls the tick looks at for a ring timeout or a forward on no answer: every call whose callee leg
        was not answered when last looked at (or that has none yet), every call made since the last tick, and a
        slice of the others, so that each answered call is looked at again within RING_SCAN_TICKS ticks (200 ms).
        Looking at every call each tick took ~1 ms a tick at 1,000-1,500 answered calls on the bench machine
        (5 % of a core, and the relay table held meanwhile: docs/benchmarks.md, relay, Session 7). An answered call
        whose callee leg is replaced by a ringing one (a transfer, a forward) is offered anew (offered_ms), so its
        timeouts (a forward on no answer: 5 s at least) are still met on the same tick; a call whose answered callee
        leg stops being answered without a new offer is looked at within 200 ms instead of at the next tick.
        pump() at each call looked at: the slice is ~200 calls at 2,000 (0.15-0.3 ms), which held the relay table
        in one piece until session 10 (docs/benchmarks.md, relay, Session 10); the slice's answered calls are
        looked at once, in the first loop, and only the ones not answered stay for the second."""
        calls = self.switch.calls
        watch, rounds = self._ring_watch, self._ring_rounds
        for call in rounds.new(pump) + rounds.part()[0]:
            pump()
            b = call.b
            if call.released or calls.get(call.call_id) is not call or (b is not None and b.state == CONNECTED):
                watch.pop(call.call_id, None)   # gone, or answered: the scan looks at it again
            else:
                watch[call.call_id] = call
        due = []
        for call_id in list(watch):   # the keys: no tuple made per entry (each is one for the collector)
            pump()
            call = watch[call_id]
            b = call.b
            if call.released or calls.get(call_id) is not call or (b is not None and b.state == CONNECTED):
                del watch[call_id]   # gone, or answered: the scan looks at it again
            else:
                due.append(call)
        return due

    def _moved_here(self, link, call_no, now):
        """A remote host moved its leg of a call we took over onto its standby session here (host/cluster/calls.py
        Takeover.adopt names it; host/remote_host.py _moved_to_standby): the site stays at its home node, alive
        for it, which still has its copy of the call. Every other node is told the call is ours now; the one
        that has it forgets it (_taken_over_elsewhere)."""
        leg = self.switch.leg(link, call_no)
        if leg is None:
            self.stats.drop("moved: no such call")
            return
        self._carried_here(leg.call, link, now)

    def _carried_here(self, call, link, now):
        """A call we took over whose client (link) stays at, or was at, a home node that lives: every other node
        is told the call is ours now; the one that has it forgets it (_taken_over_elsewhere)."""
        if self.xnode is None:
            return
        for node in self.xnode.live():
            self.xnode.up(node).send_signal(wire.NODES, {wire.IE_STANDBY: 0, wire.IE_CALL_ID: call.call_id}, now)
        self.stats.count("calls moved to a standby session")
        self.log.info("call-moved-here", call=call.uid, client=link.name)

    def _taken_over_elsewhere(self, link, call_id, now):
        """A node took this call of ours over (a one-sided switch: one of its sites switched to that node, the
        other moved its leg there on that node's word, _moved_here; or our half of a call between us and that
        node, its client here having switched there, spliced to its own half, host/cluster/calls.py _splice):
        our copy ends here unheard (no RELEASE: its legs are that node's now) and unrecorded (that node records
        it, under the same uid). A call of a conference we mix leaves it unheard, its parties' legs that node's
        (it took the conference's calls over, host/cluster/calls.py); the rest of the conference stays until its
        calls are told so too. Not a call with a leg on a trunk to a third node."""
        call = self.switch.calls.get(bytes(call_id))
        if call is None:
            return
        legs = [leg for leg in (call.a, call.b) if leg is not None and (
            call.conference is None or call.conference.party(leg) is not None)]
        # our clients' legs, and a leg on a trunk to the node that says so (it spliced our half to its own)
        if not legs or (call.conference is None and len(legs) != 2) or any(
                leg.link.kind not in ("host", "phone") and (leg.link.kind != "node" or leg.link.node != link.node)
                for leg in legs):
            self.stats.drop("taken over elsewhere: not a call between our clients")
            return
        if call.conference is not None:
            self.conferences.forget(call)
        self._forget_copy(call, link, now)

    def _leg_moved_away(self, link, call_no, now):
        """The node at the far end of our trunk leg call_no moved its leg to a node that took our half over (a
        one-sided switch whose standby node is a third node: NodeTrunks.claim_live): our half ends here unheard
        and unrecorded, if its other leg is our client's (who switched to that node)."""
        leg = self.switch.leg(link, call_no)
        if leg is None:
            return
        call = leg.call
        other = call.b if leg is call.a else call.a
        if call.conference is not None or other is None or other.link.kind not in ("host", "phone"):
            self.stats.drop("moved away: not a half with our client")
            return
        self._forget_copy(call, link, now)

    def _forget_copy(self, call, link, now):
        """Our copy of a call another node carries now ends, with no message to its legs and no record."""
        self.end_call(call, wire.CAUSE_NORMAL, now, record=False)
        self.stats.count("calls taken over by another node")
        self.log.warning("call-taken-over-elsewhere", call=call.uid, by=link.name)

    def _link_down(self, link, now, reason):
        self.gone[(link.kind, link.name)] = {"address": "%s:%d" % link.address[:2],
                                             "last_seen_ms": self.wall_ms(link.session.last_seen_ms)}
        self.links.pop(link.session.index, None)
        self.standby_links.discard(link)
        if self.host_links.get(link.session.index) is link:
            del self.host_links[link.session.index]
        self._links_changed += 1
        if link.kind == "node":
            key = ("host", link.name)
            if self.links_by_name.get(key) is link:
                del self.links_by_name[key]
            link.up = False
            self.log.info("logout", kind="node", name=link.name, reason=reason)
            return self.release_calls(link, wire.CAUSE_MAIN_LOST, now)
        self._own(link, False)
        if self.xnode is not None:
            self.xnode.logged_out((link.kind, link.name))
        if self.links_by_name.get((link.kind, link.name)) is link:
            del self.links_by_name[(link.kind, link.name)]
        self.mailbox_sync.logged_out(link)
        for key in [k for k in self.star_codes_waiting if k[0] is link]:
            self._withdraw_star_code(key, reason)
        self.site_phones.pop(link.name, None) if link.kind == "host" else None   # it tells them all again at login
        link.up = False
        self.log.info("logout", kind=link.kind, name=link.name, reason=reason)
        self.release_calls(link, wire.CAUSE_UNREACHABLE, now)

    def _site_of(self, link):
        site = getattr(link, "site", None)
        if site is None:
            row = self.directory.remote_host(link.name) if link.kind == "host" else self.directory.extension(link.name)
            site = link.site = row.site if row is not None else "?"
        return site

    def bandwidth_owners(self):
        """Each logged-in peer's current address -> its site (per-site bandwidth in status).

        Built from every link only after an address change; a login or a logout changes its own entry
        (_own): 10,000 phones registering made a walk of every link 4 times a second (the meter's
        samples) 2-4 % of the main host's CPU. An address's own tuple is the key and a site's phones
        share one value."""
        if self._owners[0] != self.peers.moves:
            owners = {}
            for link in self.links.values():
                owners[_address_key(link.address)] = self._owner(link)
            self._owners = (self.peers.moves, owners)
        return self._owners[1]

    def _owner(self, link):
        site = self._site_of(link)
        value = self._owner_names.get(site)
        if value is None:
            value = self._owner_names[site] = ("site " + site,)
        return value

    def _own(self, link, logged_in):
        """One link's entry in bandwidth_owners, at its login or logout (a map built again anyway is left alone)."""
        if self._owners[0] != self.peers.moves:
            return
        if logged_in:
            self._owners[1][_address_key(link.address)] = self._owner(link)
        else:
            self._owners[1].pop(_address_key(link.address), None)

    def status(self):
        return {
            "name": "main",
            "bandwidth": self.meter.as_dict(),
            # a session its client keeps as its standby (a node of a cluster) says "standby": true
            "remote_hosts": [dict({"name": l.name, "site": self._site_of(l), "address": "%s:%d" % l.address[:2]},
                                  **({"standby": True} if l in self.standby_links else {}))
                             for l in self.links.values() if l.kind == "host"],
            "phones": [dict({"extension": l.name, "address": "%s:%d" % l.address[:2]},
                            **({"standby": True} if l in self.standby_links else {}))
                       for l in self.links.values() if l.kind == "phone"],
            "calls": [{"call": c.uid, "caller": c.caller, "callee": c.callee, "state": c.state, "path": c.path,
                       "frames": c.frames, "held": c.held_by is not None} for c in self.switch.calls.values()],
            "conferences": self.conferences.status(),
            "attendants": sorted(self.voicemail.attendants),   # the auto-attendant numbers it answers
            "stats": self.stats.as_dict(),
            "trunk_bytes_by_peer": dict(self.switch.bytes_out_by_link),
            "sysinfo_version": self._sysinfo_version,
            "sysinfo_sent": {k: {"copies": c, "datagrams": d} for k, (c, d) in self.sysinfo_sent.items()},
            "firmware": {"phones": dict(self.firmware_phones.phones)},
            "sip": dict(self.sip.status(self.now), trunks=self.sip_calls.trunk_status()),
            "cluster": None if self.cluster is None else {
                "node": self.cluster.name, "node_id": self.cluster.node_id, "engines": dict(self.cluster_state),
                "etcd_member": self.etcd_member,
                "members": list(self.cluster_members),
                "directory_refreshes": self.directory.refreshes, "records_deferred": len(self.deferred_records),
                "records_waiting": len(self.directory.outbox()),
                "writes_waiting": sum(not w.answered for w in self.directory.queue), "writes_retried": self.directory.retried,
                "api_waiting": self.directory.api_waiting,
                "api_withdrawn": self.directory.api_withdrawn, **self.router.status(),
                "trunks": self.xnode.status(), "calls_lost_with_a_node": self.xnode.lost,
                "lost_nodes": sorted(self.xnode.gone)},   # whose loss this node saw (host/cluster/trunk.py)
        }
