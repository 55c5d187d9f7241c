"""A remote host's core: serves its site's phones, logs into the main host, switches local calls.

Local calls (B3) are granted by the main host and then run phone to phone on the
LAN; when the main host is unreachable the cached directory decides (B4).
Calls to other sites go to the main host, or directly to the other remote host
once the main host has arranged a hole-punched path (B2).

Sans-IO (host/core.py): datagrams and time in, datagrams out; the daemon holds it.
"""
import json
import os
import random

from upbx.common import cluster, wire
from upbx.common.call import CALLING
from upbx.common.chunks import Reassembly, chunk_ies
from upbx.common.login import UP, Login, LoginUp
from upbx.common.media import MediaLeg, call_kbps
from upbx.host import codec, features, groups, lines
from upbx.host.firmware_transfer import FirmwareFetcher, PhoneStates
from upbx.host.core import HostCore
from upbx.host.moh import MusicOnHold
from upbx.host.peers import PeerTable
from upbx.host.policy import local_call_cause, uplink_admits
from upbx.host.punch import Pairs
from upbx.host.records import RecordStore, call_record, encode_upload
from upbx.host.site_cache import SiteCache
from upbx.host.sip import trunk as trunklib
from upbx.host.sip.calls import SipCalls
from upbx.host.sip.edge import SIP_REALM, SipEdge
from upbx.host.switch import Link, Switch, send_on_leg
from upbx.host.voicemail import Endpoint, VoicemailStore, divert
from upbx.host.voicemail import mailbox_of as voicemail_mailbox
from upbx.host import voicemail_sync, voicemail_upload

PAIR_SILENCE_MS = 300   # no direct media for this long in an answered call: tell main where we are (B7)
# B4: how fast the main host's loss is noticed. Idle: the keepalive_s PING must be answered
# within IDLE_DEAD_MS. While calls through the main host are up: a PING every second and
# nothing (signalling or trunk) heard for CALL_KEEPALIVE_MS + CALL_DEAD_MS = 3 s ends them.
IDLE_DEAD_MS = 5000
CALL_KEEPALIVE_MS = 1000
CALL_DEAD_MS = 2000
# ... and then the calls through the main host are held for `main_grace_s` (docs/survivability.md):
# the main host silent for SILENT_MS puts the site in B4 for new calls, but the session and its calls
# stay; a new frame from the main host within the grace period and they go on, else they end
# "main host lost" and the login starts again
SILENT_MS = CALL_KEEPALIVE_MS + CALL_DEAD_MS
# idle with a standby session up (a cluster, docs/cluster.md): the main host's loss is noticed within
# 4 s and the site moves to the standby node (no handshake), instead of keepalive_s + 5 s
STANDBY_IDLE_KEEPALIVE_MS = 2000
STANDBY_IDLE_DEAD_MS = 2000
# ... and in calls through the main host, silent for 2 s (not 3 s): the relayed audio is back on the
# standby node within the 3 s
# a call's messages the old node never acknowledged, said again on the standby session a remote host switches to;
# the node keeps them for a call it takes over, a TRANSFER and a CONFERENCE until it has both their calls (and a
# SETUP, said again too: a call dialled as the old node died is set up at the new one, docs/cluster.md "A call
# dialled as its node dies")
RESAID = (wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.DTMF, wire.HOLD, wire.PARTY, wire.TRANSFER,
          wire.CONFERENCE)
STANDBY_CALL_KEEPALIVE_MS = 500
STANDBY_CALL_DEAD_MS = 1500
LOCAL_REQUEST_TIMEOUT_MS = 1500   # no LOCAL_GRANT by then: decide from the cached directory
PHONE_KEEPALIVE_MS = 2000         # LAN phones: a restarted remote host is noticed within ~4 s (B4)
ON_SITE = ("local", "trunk")     # paths of calls that do not cross the uplink (trunk: the site's own line)
MAX_CALLS_PER_PHONE = 2           # one call, and one that may ring in while the phone dials out
# a site whose rendezvous order starts with a node it is not logged in at moves there once idle (docs/cluster.md,
# "A site moves to its first node"): its standby session logs in there first; not up within this, or a call
# starts meanwhile, the move is put off (the standby goes back to the home's successor) and tried again later
MOVE_LOGIN_MS = 10000
# ... then the old home's session, now the standby, says so (NODES standby 1: its node stops naming the site in
# Redis) before _choose_standby may log it out; this long at most
MOVE_LEAVE_MS = 5000
# a move put off again and again (a node listed that this site cannot reach) is tried twice as late each time, up to
# an hour: at most one login there and one back at the home's successor per try
MOVE_MAX_MS = 3600 * 1000
MUSIC_MAX_CHUNKS = 8 * 30 * 1000 // 250 + 1   # 30 s of mu-law (host/moh.py MAX_SECONDS) in 250-byte chunks


def unacknowledged(channel):
    """[(type, encoded IEs)] a reliable channel (common/reliable.py) sent and had not acknowledged, then those
    waiting for window space, in order; none without a channel. Read here, not in common/: a handset never
    needs it, and there every method is heap."""
    if channel is None:
        return []
    return [tuple(channel._unacked[seq][:2]) for seq in sorted(channel._unacked)] + list(channel._queue)


class RemoteHost(HostCore):
    def __init__(self, config, log):
        HostCore.__init__(self, config.name, log)
        self.config = config
        self.conferences.max_parties = config.conference_parties
        for warning in config.warnings:
            self.log.warning("config", problem=warning)
        self.cache = SiteCache(config.directory_cache)
        for warning in self.cache.warnings:
            self.log.warning("file-permissions", problem=warning)
        self.peers = PeerTable(self._secret_of, self.stats, config.registration_ttl_s * 1000,
                               phone_keepalive_ms=PHONE_KEEPALIVE_MS)
        self.switch = Switch(self.send, self.stats, config.trunk_mtu, max_legs={"phone": MAX_CALLS_PER_PHONE})
        self.groups = groups.GroupCalls(self)
        self.main_address = config.main
        # our index towards the main host is reserved in the session table: no phone can get it,
        # or its frames would be taken for the main host's (one port, one index space)
        self.login = self._new_login()
        self.main_link = Link("main", "main", login=self.login, address=config.main)
        self.main_link.up = False
        # a cluster's nodes [(node id, address)] as the last WELCOME or SYSINFO said (docs/cluster.md), in
        # this host's rendezvous order: a login that ends goes to the next of them (_next_node)
        self.cluster_nodes = []
        self._was_up = False
        self.grace_ms = int(config.main_grace_s * 1000)
        self.main_silent_ms = None   # when the main host fell silent with calls held (the grace period), else None
        # a cluster's second node (docs/cluster.md, Failover): a session logged in and kept alive there,
        # taken over as the main host's session when the main host falls silent (no new handshake)
        self.standby = None
        self.standby_link = Link("standby", "main", address=None)
        self.standby_link.up = False
        self.standby_again = False   # the standby node was to change while the session carried a call
        self.unconfirmed = {}        # leg -> (deadline, its highest timestamp): relayed calls moved to the standby node
        self.rebalance_ms = int(config.rebalance_s * 1000)
        self.move_at = None          # when this site moves to the first node of its order once idle (_rebalance)
        self.moving = None           # the move's deadline while its standby session logs in at that node
        self.leaving = None          # the deadline of the old home's NODES standby 1 after a move
        self.move_put_offs = 0       # moves put off since the last one made: each waits twice as long
        self.records = RecordStore(config.records_database)
        for warning in self.records.warnings:
            self.log.warning("file-permissions", problem=warning)
        self.phone_links = {}        # Peer.index -> Link
        self.pairs = Pairs(config.name, self.send, self.stats, self.log, self._report_pair,
                           int(config.punch_timeout_s * 1000), self.peers)
        self.pending_local = {}      # call id -> (call) waiting for LOCAL_GRANT
        self.blobs = {wire.DIRECTORY: Reassembly(), wire.SYSINFO: Reassembly()}
        self.music = Reassembly(MUSIC_MAX_CHUNKS)   # the operator's music on hold, from the main host
        self.music_path = config.directory_cache + ".moh"
        self._load_music()
        self._sysinfo_blob = None    # (version, encoded) of the system information, for the phones
        self.sysinfo_acked = {}      # extension -> version
        self.sysinfo_sent_ms = {}    # extension -> when its last copy went out (host/metrics.py)
        self.uploading = set()
        store = (VoicemailStore(str(config.records_database) + ".voicemail")
                 if str(config.records_database) != ":memory:" else None)
        # B4: messages recorded while the main host is away, uploaded once it is back
        self.voicemail = Endpoint(self, store, config.name, self._mailbox_changed)
        self.voicemail_upload = voicemail_upload.Uploader(self)
        self.mailbox_cache = voicemail_sync.MailboxCache(self)   # the site's mailboxes, kept current (B4)
        if store is not None:
            store.track_changes = True
        # over-the-air updates: the site's bundle fetched once from the main host, served on the LAN
        self.firmware = FirmwareFetcher(str(config.directory_cache) + ".firmware", self.main_link.send_signal,
                                        self.stats, self.log)
        self.firmware_phones = PhoneStates(self.log)
        self.firmware.offered(self.cache.sysinfo["info"], 0, False)
        self.sip = SipEdge(SIP_REALM, self._sip_password, self.stats, offer=config.sip_digest.split(","),
                           nonce_ttl_ms=config.sip_nonce_s * 1000)
        self.sip_listen = config.sip_listen
        self.sip_calls = SipCalls(self, self.sip, (config.sip_rtp_base, config.sip_rtp_base + 2000))

    def _new_login(self):
        # our index towards a main host node is reserved in the session table: no phone can get it,
        # or its frames would be taken for the main host's (one port, one index space)
        config = self.config
        return Login(wire.IE_HOST_NAME, config.name, config.secret, self.peers.reserve_index(),
                     os.urandom, keepalive_ms=config.keepalive_s * 1000,
                     backoff_initial_ms=int(config.login_backoff_initial_s * 1000),
                     backoff_max_ms=int(config.login_backoff_max_s * 1000), dead_ms=IDLE_DEAD_MS)

    def _secret_of(self, identity):
        kind, name = identity
        return self.cache.secret(name) if kind == "phone" else None

    def _sip_password(self, number):
        """The site's SIP phones register here, from the cached directory (so also while the main host is away)."""
        ext = self.cache.extension(number)
        return ext.get("sip_password") if ext else None

    def sip_wanted(self):
        return bool(self.trunk_rows()) or any(ext.get("sip_password") for ext in self.cache.extensions.values())

    def trunk_rows(self):
        """The site's own trunks, from its directory (host/sip/trunk.py): registered whenever they ask
        for it, taking calls in at any time, carrying the site's outside calls while the main host is
        unreachable (B4)."""
        return list(self.cache.data.get("trunks") or ())

    def did_target(self, number):
        """The site's number a DID of its own trunk rings, or None."""
        return (self.cache.data.get("dids") or {}).get(number)

    # lifecycle

    def on_start(self, now):
        self.login.start(now)

    def on_stop(self, now):
        self.records.close()

    def flush_signalling(self):
        """The phones' signalling, and ours to the main host."""
        HostCore.flush_signalling(self)
        for datagram in self.login.datagrams_to_send(self.now):
            self.send(datagram, self.main_address)
        if self.standby is not None:
            for datagram in self.standby.datagrams_to_send(self.now):
                self.send(datagram, self.standby_link.address)

    # datagrams

    def on_datagram(self, data, addr, now):
        kind = wire.frame_kind(data)
        if kind == wire.KIND_MINI:
            leg = self.switch.mini_in(data, now)   # a new media frame: its phone is at addr (B7)
            if leg is not None and leg.link.session is not None:
                self.peers.touch(leg.link.session, addr, now)
            return
        if kind == wire.KIND_TRUNK:
            index = wire.session_of(data)
            pair = self.pairs.by_index.get(index)
            if pair is not None:
                if self.switch.trunk_in(data, pair.link, now, direct=True):
                    self.pairs.heard(pair, addr, now)
            elif index == self.login.local_index and self.login.state == UP:
                if self.switch.trunk_in(data, self.main_link, now):
                    self.login.heard(now)
            elif self.standby is not None and index == self.standby.local_index and self.standby.state == UP:
                # a call the standby node took over from our home node while we stayed there (_moved_to_standby)
                if self.switch.trunk_in(data, self.standby_link, now):
                    self.standby.heard(now)
            else:
                self.stats.drop("unknown session")
            return
        index, _seq, _ack, msg_type = wire.parse_full(data)
        if msg_type == wire.PUNCH:
            self.pairs.receive(data, addr, now)
        elif index == self.login.local_index and addr == self.main_address:
            self._from_main(data, now)
        elif index == self.login.local_index and self.login.state == UP and msg_type not in wire.HANDSHAKE_TYPES:
            self._from_main(data, now)  # main host frames authenticate by session, not address
        elif self.standby is not None and index == self.standby.local_index and (
                addr == self.standby_link.address or (self.standby.state == UP and msg_type not in wire.HANDSHAKE_TYPES)):
            self._from_standby(data, now)
        elif msg_type in wire.HANDSHAKE_TYPES:
            peer = self.handshake(data, addr, now)
            if peer:
                self._phone_registered(peer, now)
        else:
            peer, messages = self.peers.receive(data, addr, now)
            if peer is None:
                return
            link = self.phone_links[peer.index]
            for msg_type, ies in messages:
                self._from_phone(link, msg_type, ies, now)

    # main host side

    def _from_main(self, data, now):
        messages = self.login.receive(data, now)
        self._login_events(now)
        for msg_type, ies in messages:
            self._main_message(msg_type, ies, now)

    def _login_events(self, now):
        for event in self.login.take_events():
            if isinstance(event, LoginUp):
                self._was_up = True
                self._learn_nodes(event.welcome.get(wire.IE_CLUSTER_NODES))
                self.log.info("logged-in", main="%s:%d" % self.main_address, logins=self.login.logins)
                self._main_up(now)
                self._choose_standby(now)
            elif self.standby is not None and self.standby.state == UP:
                self._switch_to_standby(now, event.reason)   # held calls, if any, go on there
            else:
                held = self.main_silent_ms is not None   # the grace period is over: the main host is lost
                self.main_silent_ms = None
                if self.main_link.up:
                    self._main_away(now)
                self.log.warning("main-unreachable", reason=event.reason)
                self._next_node()   # no standby: the next login goes to the next node in this host's order
                if held:
                    self.stats.count("calls released after the grace period", self.main_link.legs)
                self.release_calls(self.main_link, wire.CAUSE_MAIN_LOST if held else wire.CAUSE_UNREACHABLE, now)

    def _main_up(self, now):
        """The main host answers (a login, or again on the same session after a silence)."""
        self.main_link.up = True
        if self.cluster_nodes:   # a node: this session is the site's home, its calls come here (docs/cluster.md)
            self.main_link.send_signal(wire.NODES, {wire.IE_STANDBY: 0}, now)
        self._upload_records(now)
        self.voicemail_upload.start(now)
        self.mailbox_cache.start(now)
        for number in self.cache.unsent_features:
            self._send_features(number, now)
        for link in self.phone_links.values():
            self.main_link.send_signal(wire.PHONE_STATE, {wire.IE_EXTENSION: link.name, wire.IE_STATE: 1}, now)

    def _main_away(self, now):
        """B4 from now on for new calls (the session may still come back: _main_liveness)."""
        self.main_link.up = False
        self.uploading.clear()
        self.voicemail_upload.stop()
        self.mailbox_cache.stop()
        for call in list(self.pending_local.values()):
            self._decide_locally(call, now)

    # a cluster's standby node (docs/cluster.md, Failover)

    def _choose_standby(self, now):
        """The standby node: from the cluster_nodes last heard (_learn_nodes), the successor of the
        node this host is logged in at (common/cluster.successor: every client of a node has the same
        standby, so a survivor gets both legs of the lost node's calls); else the first of
        `[remote] standby`. While the site moves to its first node (_rebalance): that node."""
        if self.leaving is not None:
            return   # the old home's session, the standby for now, has yet to say so (_rebalance)
        if self.standby_link.legs:
            self.standby_again = True   # it carries a call (_moved_to_standby): chosen again when that ends (on_tick)
            return
        self.standby_again = False
        here = tuple(self.main_address[:2])
        home = [node for node, a in self.cluster_nodes if tuple(a[:2]) == here]
        if self.moving is not None and self.cluster_nodes:
            nodes = [self.cluster_nodes[0][1]]
        elif home:   # the home node's successor, the same for all its clients (common/cluster.py)
            after = cluster.successor(home[0], [node for node, _a in self.cluster_nodes])
            nodes = [a for node, a in self.cluster_nodes if node == after]
        else:
            nodes = [a for _node, a in self.cluster_nodes] or self.config.standby
        nodes = [tuple(a[:2]) for a in nodes if tuple(a[:2]) != here]
        want = nodes[0] if nodes else None
        if self.standby is not None and want == self.standby_link.address:
            return
        if self.standby is not None:
            self._give_up_standby(now)
        if want is not None:
            self.standby = self.standby_link.login = self._new_login()
            self.standby_link.address = want
            self.standby.start(now)
            self.log.info("standby", node="%s:%d" % want, by="cluster_nodes" if self.cluster_nodes else "config")

    def _give_up_standby(self, now):
        """The standby node is another now (the node list changed): the session kept at the old one is
        logged out (BYE, one datagram sent at once: lost, the node lets it expire as before), so that
        node stops listing this site."""
        old, address = self.standby, self.standby_link.address
        if old.send(wire.BYE, {}, now):
            for datagram in old.datagrams_to_send(now):
                self.send(datagram, address)
            self.stats.count("standby sessions logged out")
            self.log.info("standby-given-up", node="%s:%d" % address[:2])
        self.peers.release_index(old.local_index)
        self.standby = self.standby_link.login = None
        self.standby_link.up = False

    def _from_standby(self, data, now):
        """The standby node's session: kept alive. It switches no call of ours until it is the main
        host's session: a SETUP on it is refused (a node routes a site's calls to the site's node)."""
        messages = self.standby.receive(data, now)
        self._standby_events(now)
        for msg_type, ies in messages:
            if msg_type == wire.SETUP:
                self.stats.count("standby setups refused")
                self.refuse_setup(self.standby_link, ies, wire.CAUSE_UNREACHABLE, now)
            elif msg_type == wire.NODES and ies.get(wire.IE_STANDBY) == 0 and wire.IE_PEER_CALL_NO in ies:
                self._moved_to_standby(ies, now)
            elif msg_type in (wire.NODES, wire.SYSINFO) and wire.IE_CLUSTER_NODES in ies:
                # the cluster's nodes, as every node says them: kept (its home's node, lost, may never say it), and
                # acted on at the next switch (_switch_to_standby) or when the home says it too
                self._learn_nodes(ies[wire.IE_CLUSTER_NODES])
            elif self.standby_link.legs and self._leg_message(self.standby_link, msg_type, ies, now):
                pass   # a call the standby node took over (_moved_to_standby)
            elif msg_type not in (wire.PING, wire.ACK):
                self.stats.count("standby messages ignored")

    def _leg_message(self, link, msg_type, ies, now):
        """A call message from a node for one of link's legs (the main session's, or the standby's after
        _moved_to_standby), handled; False for any other message."""
        if msg_type in (wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.DTMF):
            self.call_message(link, msg_type, ies, now)
        elif msg_type == wire.HOLD:
            self.hold_message(link, ies, now)
        elif msg_type == wire.PARTY:
            lines.party(self, link, ies, now)
        else:
            return False
        return True

    def _moved_to_standby(self, ies, now):
        """The standby node took one of our calls over from our home node, which is alive for us (docs/cluster.md,
        "A one-sided switch"): the call's other site switched to that node when our home fell silent towards it
        only. The node names our leg (NODES standby 0, as a site that switches names its call); its leg moves to
        the standby session, which carries its frames and messages from now on, while the site's other calls stay
        at home; we say so to the node (NODES standby 1 naming it), which then tells our home node to forget its
        copy of the call."""
        leg = self.switch.leg(self.main_link, ies[wire.IE_PEER_CALL_NO])
        if leg is None or leg.peer_call_no != ies.get(wire.IE_CALL_NO):
            self.stats.drop("standby: no such call to move")
            return
        self.switch.move(leg, self.standby_link)
        self.unconfirmed.pop(leg, None)
        send_on_leg(leg, wire.NODES, {wire.IE_STANDBY: 1}, now)
        self.stats.count("calls moved to the standby node")
        self.log.warning("call-moved-to-standby", call=leg.call.uid, node="%s:%d" % self.standby_link.address[:2])

    def _standby_events(self, now):
        for event in self.standby.take_events():
            self.standby_link.up = isinstance(event, LoginUp)
            if self.standby_link.up:
                self.log.info("standby-up", node="%s:%d" % self.standby_link.address, logins=self.standby.logins)
                if self.cluster_nodes:   # a node: it lists this session as the site's standby (docs/cluster.md)
                    self.standby.send(wire.NODES, {wire.IE_STANDBY: 1}, now)
            else:
                self.log.warning("standby-down", node="%s:%d" % self.standby_link.address, reason=event.reason)
                if self.standby_link.legs:   # calls the standby node took over (_moved_to_standby): gone with it
                    self.release_calls(self.standby_link, wire.CAUSE_MAIN_LOST, now)

    def _swap_sessions(self, old_up):
        """The standby session becomes the main host's and the main host's the standby (up: old_up);
        returns (the old main session, its address)."""
        old, old_address = self.login, self.main_address
        for leg in [leg for leg in self.switch.legs.values() if leg.link is self.standby_link]:
            self.switch.move(leg, self.main_link)   # at the new home already (_moved_to_standby)
        self.login = self.main_link.login = self.standby
        self.main_address = self.main_link.address = self.standby_link.address
        self.standby = self.standby_link.login = old
        self.standby_link.address = old_address
        self.standby_link.up = old_up
        return old, old_address

    def _switch_to_standby(self, now, reason):
        """The standby session becomes the main host's, as it is (no handshake): the calls through the
        main host go on on it (the node takes them over from Redis at their first frame, host/cluster/
        calls.py); the old session is the standby now, logging in again to its node."""
        there = {leg for leg in self.switch.legs.values() if leg.link is self.standby_link}   # heard there already
        old, old_address = self._swap_sessions(False)
        self.moving = self.leaving = self.move_at = None
        # the call messages the old node never acknowledged (an ANSWER sent as it died) are said again on the
        # new session: the node takes their calls over and handles them then (host/cluster/calls.py defer)
        unsaid = [(t, payload) for t, payload in unacknowledged(old.channel) if t in RESAID or t == wire.SETUP]
        old.take_events()
        old.start(now)
        self.main_silent_ms = None
        # a relayed call the new node does not take over (its key missing, the other site elsewhere)
        # would stay up in silence: its media must come back within the grace period (3 s without one)
        wait = self.grace_ms or SILENT_MS
        for leg in self.switch.legs.values():
            if leg.link is self.main_link and leg.direct is None and leg.call.state == "answered" and leg not in there:
                self.unconfirmed[leg] = (now + wait, leg.media.replay.highest)
        self.stats.count("standby switches")
        self.log.warning("main-switched", main="%s:%d" % self.main_address, was="%s:%d" % old_address,
                         reason=reason, calls=self.main_link.legs)
        self._main_up(now)
        for msg_type, payload in unsaid:
            self.main_link.send_signal(msg_type, wire.decode_ies(payload), now)
        resent = {wire.decode_ies(payload).get(wire.IE_CALL_NO) for t, payload in unsaid if t == wire.SETUP}
        if resent:
            self.stats.count("calls set up again after a switch", len(resent))
        if len(unsaid) > len(resent):
            self.stats.count("call messages said again after a switch", len(unsaid) - len(resent))
        # a call the old node acknowledged but had not named yet (no number of its own for it: no answer had come
        # back) cannot be named to the new node, and nobody carries it on: its caller hears "main host lost" now,
        # not its own set-up timer's "unreachable" 20 s later
        for leg in [leg for leg in self.switch.legs.values() if leg.link is self.main_link and leg.state == CALLING
                    and not leg.peer_call_no and leg.call_no not in resent]:
            self.stats.count("calls being set up lost with the node")
            self._refuse(leg.call, wire.CAUSE_MAIN_LOST, now)
        # a call whose media goes straight to its peer (B2), one still ringing, and one held by the far party (our
        # phone's voice stops here) send the new node nothing that names it: each is named (NODES standby 0 with its
        # call number, as a phone that switched names its call), and the node takes it over from Redis as it does a
        # relayed call at its first frame (docs/cluster.md; a ringing call since session 15, a held one since 18)
        for leg in list(self.switch.legs.values()):
            if leg.link is self.main_link and (leg.direct is not None or leg.call.state != "answered"
                                               or leg.call.held_by is not None) \
                    and leg.peer_call_no and self.cluster_nodes:
                self.main_link.send_signal(wire.NODES, {wire.IE_STANDBY: 0, wire.IE_PEER_CALL_NO: leg.peer_call_no},
                                           now)
        # each answered call says again, acknowledged or not, its ANSWER when our phone answered it, and whether our
        # phone holds it: the old node may have died before the call's key said so (written every 20 ms), and the
        # new node would take it over as ringing, or held as it was before (one that has it so drops it quietly:
        # host/main_host.py call_message, host/core.py hold_message). A call the far party holds: its client says so
        answers = {wire.decode_ies(payload).get(wire.IE_PEER_CALL_NO) for t, payload in unsaid if t == wire.ANSWER}
        for leg in list(self.switch.legs.values()):
            call = leg.call
            if leg.link is not self.main_link or call.state != "answered" or not leg.peer_call_no or not self.cluster_nodes:
                continue
            if leg is call.a and leg.peer_call_no not in answers:
                send_on_leg(leg, wire.ANSWER, {}, now)
                self.stats.count("answers said again after a switch")
            if call.held_by is not leg:
                send_on_leg(leg, wire.HOLD, {wire.IE_STATE: 0 if call.held_by is None else 1}, now)
        # the old node left the cluster already (its list came on the standby session while the home, lost, said
        # nothing): no standby there, where nothing answers, but at the new home's successor
        if self.cluster_nodes and tuple(old_address[:2]) not in [tuple(a[:2]) for _n, a in self.cluster_nodes]:
            self._choose_standby(now)

    def _rebalance(self, now):
        """A site moves to the first node of its rendezvous order when it is not logged in there (a node
        joined ahead of its home, or its first node is back after a failover; docs/cluster.md, "A site
        moves to its first node"): at a random moment between rebalance_s / 2 and rebalance_s after it
        noticed (the sites of a cluster spread their logins), with no call at the site, make before break.
        Its standby session logs in at that node, and the sessions swap as in a failover with no handshake
        at the swap: the new home says NODES standby 0 (its key in Redis names that node), the old home
        says standby 1 (its node stops naming the site) and is then the standby, or is logged out for the
        new home's successor."""
        if self.leaving is not None:
            if not unacknowledged(self.standby.channel) or now >= self.leaving or self.standby.state != UP:
                self.leaving = None
                self._choose_standby(now)
            return
        first = tuple(self.cluster_nodes[0][1][:2]) if self.cluster_nodes else None
        if (first is None or first == tuple(self.main_address[:2]) or not self.rebalance_ms
                or self.login.state != UP or not self.main_link.up or self.main_silent_ms is not None):
            if self.moving is not None:
                self._put_off_move(now, "no longer wanted")   # its standby chosen again here, or at the next login
            self.move_at = None
            return
        if self.move_at is None:
            self.move_at = self._move_due(now)
            self.log.info("move-planned", to="%s:%d" % first, main="%s:%d" % self.main_address[:2],
                          in_ms=self.move_at - now)
            return
        # idle: no call at all, and nothing on its way to the node whose answer comes on the session (a call record,
        # a voicemail, a mailbox change): the old session's answers are ignored once it is the standby
        busy = (self.switch.calls or self.pending_local or self.uploading or self.voicemail_upload.in_flight
                or self.mailbox_cache.change_in_flight)
        if self.moving is None:
            if now >= self.move_at and not busy:
                self.moving = now + MOVE_LOGIN_MS
                self._choose_standby(now)   # at the first node (kept if it is there already)
            return
        if busy or self.standby is None or tuple(self.standby_link.address[:2]) != first:
            self._put_off_move(now, "a call" if busy else "the first node changed")
        elif self.standby_link.up and self.standby.state == UP:
            self._move_home(now)
        elif now >= self.moving:
            self._put_off_move(now, "no login at %s:%d within %d ms" % (first + (MOVE_LOGIN_MS,)))

    def _move_due(self, now):
        """A random moment between half the wait and the wait: rebalance_s, doubled for each move put off."""
        wait = min(self.rebalance_ms << min(self.move_put_offs, 16), max(MOVE_MAX_MS, self.rebalance_ms))
        return now + wait // 2 + random.randrange(wait // 2 + 1)

    def _put_off_move(self, now, reason):
        self.moving = None
        self.move_put_offs += 1
        self.move_at = self._move_due(now)
        self.stats.count("moves put off")
        self.log.info("move-put-off", reason=reason, in_ms=self.move_at - now)
        if self.login.state == UP:
            self._choose_standby(now)   # the home's successor again (else at the next login, _login_events)

    def _move_home(self, now):
        """The standby session, at the first node, becomes the home; the old home's the standby."""
        old, old_address = self._swap_sessions(True)
        self.moving = self.move_at = None
        self.move_put_offs = 0
        self.stats.count("moves to the first node")
        self.log.info("main-moved", main="%s:%d" % self.main_address[:2], was="%s:%d" % old_address[:2])
        self._main_up(now)   # nothing waits for an answer on the old session (_rebalance's idle)
        old.set_keepalive(self.config.keepalive_s * 1000, IDLE_DEAD_MS, now)   # a standby's, as _new_login's
        old.send(wire.NODES, {wire.IE_STANDBY: 1}, now)
        self.leaving = now + MOVE_LEAVE_MS

    def _main_liveness(self, now):
        """The grace period (docs/survivability.md): calls through the main host and nothing heard from
        it for SILENT_MS: the site is on its own for new calls, the held calls stay (their phones keep
        them, direct media flows on); a new frame from it on the same session and everything goes on.
        The login itself ends at the grace period's end (its dead time is CALL_DEAD_MS + grace_ms)."""
        if self.login.state != UP or self.login.last_heard_ms is None:
            return
        quiet = now - self.login.last_heard_ms
        if self.main_silent_ms is not None and quiet >= SILENT_MS and self.standby_link.up:
            self._switch_to_standby(now, "nothing heard for %d ms" % quiet)   # up during the grace period
        elif self.main_silent_ms is None:
            if (quiet >= STANDBY_CALL_KEEPALIVE_MS + STANDBY_CALL_DEAD_MS and self.main_link.legs and self.main_link.up
                    and self.standby_link.up):
                self._switch_to_standby(now, "nothing heard for %d ms" % quiet)
            elif self.grace_ms and quiet >= SILENT_MS and self.main_link.legs and self.main_link.up:
                self.main_silent_ms = now
                self.stats.count("main host silences")
                self.log.warning("main-silent", silent_ms=quiet, calls_held=self.main_link.legs,
                                 grace_ms=self.grace_ms)
                self._main_away(now)
        elif quiet < SILENT_MS:
            self.stats.count("main host returns")
            self.log.info("main-back", silent_ms=now - self.main_silent_ms + SILENT_MS,
                          calls_held=self.main_link.legs)
            self.main_silent_ms = None
            self._main_up(now)

    def _learn_nodes(self, data):
        """IE cluster_nodes of a WELCOME or SYSINFO (a cluster's node; None from a standalone main host)."""
        if data is None:
            return
        try:
            nodes = cluster.decode_nodes(data)
        except ValueError as exc:
            self.stats.drop("bad cluster_nodes")
            self.log.warning("cluster-nodes", problem=str(exc))
            return
        ranked = cluster.ranked(cluster.identity("host", self.config.name), nodes)
        if ranked != self.cluster_nodes:
            self.cluster_nodes = ranked
            self.log.info("cluster-nodes", nodes=" ".join("%d=%s:%d" % ((n,) + a) for n, a in ranked))

    def _next_node(self):
        """Where the next login goes (docs/cluster.md, "First contact"): a session that was up and
        ended: the first node in this host's rendezvous order, or the second if it was the first
        that ended it; HELLOs that nobody answered: the node after that one in the order."""
        was_up, self._was_up = self._was_up, False
        if not self.cluster_nodes:
            return
        order = [a for _n, a in self.cluster_nodes]
        here = tuple(self.main_address[:2])
        at = order.index(here) if here in order else -1
        if was_up and at != 0:
            target = order[0]
        else:
            target = order[(at + 1) % len(order)]
        if target != here:
            self.log.info("cluster-next-node", main="%s:%d" % target)
        self.main_address = self.main_link.address = target

    def _main_message(self, msg_type, ies, now):
        self.count_message(msg_type)
        if msg_type in (wire.SYSINFO, wire.NODES) and wire.IE_CLUSTER_NODES in ies:
            self._learn_nodes(ies[wire.IE_CLUSTER_NODES])
            if self.main_link.up:
                self._choose_standby(now)   # a node joined or left: the standby may be another now
            if msg_type == wire.NODES:
                return
        if msg_type in (wire.DIRECTORY, wire.SYSINFO):
            blob = self.blobs[msg_type].add(ies)
            if blob is None:
                return
            try:
                obj = json.loads(blob)
            except ValueError:
                self.stats.drop("bad %s" % wire.MESSAGE_NAMES[msg_type].lower())
                return
            if msg_type == wire.DIRECTORY:
                self.cache.set_directory(obj)
                self.sip_calls.reread_trunks()   # the site's own trunk may have come or gone
                self.peers.forget_keys()   # phones' secrets may have changed
                self.log.info("directory", extensions=len(self.cache.extensions))
            else:
                version = ies.get(wire.IE_VERSION, 0)
                known = version == self.cache.sysinfo["version"]  # again after a login: phones have it
                self.cache.set_sysinfo(version, obj)
                self.stats.count("sysinfo versions received")
                self.firmware.offered(obj, now, True)
                if not known:
                    for link in self.phone_links.values():
                        self._send_sysinfo(link, now)
        elif msg_type == wire.SETUP:
            self._incoming(ies, now)
        elif msg_type in (wire.LOCAL_GRANT, wire.LOCAL_REFUSE):
            call = self.pending_local.pop(ies.get(wire.IE_CALL_ID), None)
            if call is not None:
                if msg_type == wire.LOCAL_GRANT:
                    self._connect_local(call, now)
                else:
                    self._refuse(call, ies.get(wire.IE_CAUSE, wire.CAUSE_NOT_PERMITTED), now)
        elif msg_type == wire.PUNCH_OFFER:
            self.pairs.offer(ies, now)
        elif msg_type == wire.MEDIA_PEER:
            leg = self.switch.legs.get(ies.get(wire.IE_PEER_CALL_NO))
            pair = self.pairs.get(ies.get(wire.IE_PEER_NAME))
            if leg is None:
                self.stats.drop("unknown call")       # ended meanwhile
            elif leg.link is not self.main_link:
                self.stats.drop("bad media peer")
            elif wire.IE_MEDIA_KEY not in ies:      # taken back: the main host joined the call (a transfer)
                if leg.direct is not None:
                    leg.direct = None
                    self.stats.count("direct paths taken back")
            elif pair is not None:
                leg.direct = (MediaLeg(ies[wire.IE_MEDIA_KEY], ies.get(wire.IE_ROLE, 0), leg.call_no,
                                       ies.get(wire.IE_CALL_NO, 0)), pair.link)
        elif msg_type == wire.FEATURES:
            try:
                self.cache.features_acknowledged(ies.get(wire.IE_EXTENSION), features.decode(ies.get(wire.IE_DATA, b"")))
            except features.FeatureError:
                self.stats.drop("bad features")
        elif msg_type == wire.RECORDS:
            uid = ies.get(wire.IE_CALL_ID, b"").hex()
            self.records.mark_uploaded([uid])
            self.uploading.discard(uid)
            self.stats.count("records uploaded")
        elif self._leg_message(self.main_link, msg_type, ies, now):
            pass
        elif msg_type == wire.CONFERENCE:
            self.conferences.answer_from_main(ies, now)
        elif msg_type == wire.MUSIC:
            self._music(ies, now)
        elif msg_type == wire.MESSAGE_WAITING:
            link = self._phone_link(ies.get(wire.IE_EXTENSION))
            if link is not None:
                link.send_signal(wire.MESSAGE_WAITING, {wire.IE_STATE: ies.get(wire.IE_STATE, 0)}, now)
        elif msg_type == wire.VOICEMAIL:
            self.voicemail_upload.acknowledged(ies, now)
        elif msg_type in (wire.MAILBOX, wire.MAILBOX_CHANGE):
            self.mailbox_cache.message(msg_type, ies, now)
        elif msg_type == wire.FIRMWARE:
            self.firmware.chunk(ies, now)

    # phones

    # music on hold: the operator's, kept beside the site cache (docs/features.md)

    def _load_music(self):
        version = (self.cache.data.get("music_on_hold") or {}).get("version", 0)
        try:
            with open(self.music_path, "rb") as f:
                ulaw = f.read()
        except OSError:
            version, ulaw = 0, b""
        self.music_version = version
        self.moh = MusicOnHold(ulaw, "version %d" % version)

    def _music(self, ies, now):
        data = self.music.add(ies)
        if data is None:
            return
        version = ies.get(wire.IE_VERSION, 0)
        tmp = self.music_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.music_path)
        self.cache.data["music_on_hold"] = {"version": version}
        self.cache.save()
        self._load_music()
        self.log.info("music-on-hold", version=version, frames=len(self.moh.frames))
        self.main_link.send_signal(wire.MUSIC, {wire.IE_VERSION: version}, now)

    def _phone_registered(self, peer, now):
        for index, link in list(self.phone_links.items()):
            if link.name == peer.name:
                self._phone_gone(link, now, "registered again")
        link = Link(peer.name, "phone", session=peer)
        self.phone_links[peer.index] = link
        self.log.info("registered", extension=peer.name, address="%s:%d" % peer.address)
        self.main_link.send_signal(wire.PHONE_STATE, {wire.IE_EXTENSION: peer.name, wire.IE_STATE: 1}, now)
        self._send_sysinfo(link, now)

    def _send_sysinfo(self, link, now):
        sysinfo = self.cache.sysinfo
        if sysinfo["info"] is None:
            return
        if self._sysinfo_blob is None or self._sysinfo_blob[0] != sysinfo["version"]:
            self._sysinfo_blob = (sysinfo["version"], json.dumps(sysinfo["info"], separators=(",", ":")).encode())
        for ies in chunk_ies(*self._sysinfo_blob):
            link.send_signal(wire.SYSINFO, ies, now)
        self.sysinfo_sent_ms[link.name] = now
        self.stats.count("sysinfo copies to phones")

    def _phone_link(self, number):
        """A handset's link, or a registered SIP phone's (docs/sip.md): the host treats both alike."""
        peer = self.peers.by_identity.get(("phone", number))
        link = self.phone_links.get(peer.index) if peer else None
        return link if link is not None else self.sip_calls.link_of(number, self.now)

    def place_sip_call(self, link, ies, now):
        """A SIP phone's INVITE, as a SETUP from its link (host/sip/calls.py); or a call in on the
        site's own trunk."""
        if getattr(link, "trunk", None) is not None:
            return self._trunk_incoming(link, ies, now)
        self._outgoing(link, ies, now)

    # the site's own trunk (host/sip/trunk.py, docs/sip.md): SRST-like fallback for outside calls

    def _trunk_incoming(self, link, ies, now):
        """A call in on the site's own trunk to a DID of the site's (host/sip/calls.py looked it up):
        it rings that number here, whether the main host is up or not, and this host records it."""
        called = ies[wire.IE_CALLED]
        caller = ies.get(wire.IE_CALLING) or "anonymous"
        if self.cache.extension(called) is not None:
            routed, cause = features.route(called, self._features_of, self._number_busy)
            if routed is not None and self.cache.extension(routed) is None and self._group(routed) is None:
                routed, cause = None, wire.CAUSE_UNREACHABLE   # forwarded off the site: not from this line
            if routed is None:
                return self.refuse_setup(link, ies, cause, now, caller=caller)
            called = routed
        cause = self.switch.admit(link)
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now, caller=caller)
        call = self.switch.new_call(caller, called, now)
        call.tried = [ies[wire.IE_CALLED]]
        call.path = "trunk"
        call.caller_name = ies.get(wire.IE_CALLING_NAME, "")
        self.switch.incoming(call, link, ies)
        self.log.info("call-setup", call=call.uid, caller=caller, called=called, via=link.name)
        self._connect_local(call, now)

    def _site_trunk_call(self, link, ies, out, now):
        """B4: an outside number (a route's prefix) while the main host is unreachable goes out on
        the site's own trunk; without one, or with one whose registration is not up, the caller
        hears "no outside line"."""
        row, number = out
        registration = self.sip_calls.registrations.get(row["name"]) if row is not None else None
        if row is None or (row["register"] and (registration is None or registration.state != "registered")):
            self.stats.count("outside calls without a line")
            return self.refuse_setup(link, ies, wire.CAUSE_NO_OUTSIDE_LINE, now, caller=link.name)
        name = (self.cache.extension(link.name) or {}).get("name", "")
        self.sip_calls.trunk_call(link, ies, link.name, name, row["name"], number, now)

    def _from_phone(self, link, msg_type, ies, now):
        self.count_message(msg_type)
        if wire.IE_CODEC in ies:
            codec.note(link, ies, self.stats)      # an A-law phone (host/codec.py)
        if msg_type in (wire.PING, wire.ACK):
            return
        if msg_type == wire.SYSINFO_ACK:
            self.sysinfo_acked[link.name] = ies.get(wire.IE_VERSION)
        elif msg_type == wire.FIRMWARE_WANT:
            self.firmware.want(link, ies, now)
        elif msg_type == wire.FIRMWARE_STATE:
            self.firmware_phones.update(link.name, ies)
            if self.main_link.up:   # the main host's status shows every phone's (docs/operations.md)
                state = dict(ies)
                state[wire.IE_EXTENSION] = link.name
                self.main_link.send_signal(wire.FIRMWARE_STATE, state, now)
        elif msg_type == wire.BYE:
            self._phone_gone(link, now, "logged out")
            self.peers.remove(link.session)
        elif msg_type == wire.SETUP:
            self._outgoing(link, ies, now)
        elif msg_type in (wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.DTMF):
            self.call_message(link, msg_type, ies, now)
        elif msg_type == wire.HOLD:
            self.hold_message(link, ies, now)
        elif msg_type == wire.CONFERENCE:
            self.conference_message(link, ies, now)
        elif msg_type == wire.TRANSFER:
            lines.transfer(self, link, ies, now)
        else:
            self.stats.drop("unexpected message")

    def _busy(self, link):
        """Busy for one more call: call waiting offers a second call beside an answered one (host/lines.py)."""
        held = self.switch.calls_of(link)
        if link.legs > len(held):   # it rings for a group or is paged: legs no Call holds as its a or b
            return True
        calls = held + [c for c in self.pending_local.values() if c.a.link is link]
        return lines.busy(calls, self.cache.features(link.name))

    def _outgoing(self, link, ies, now):
        if wire.IE_CALL_NO not in ies or wire.IE_CALLED not in ies or wire.IE_MEDIA_KEY not in ies:
            self.stats.drop("setup missing IEs")
            return
        called = ies[wire.IE_CALLED]
        directed = groups.directed_pickup_target(called)
        if called == groups.PICKUP_CODE or directed:
            scope = groups.pickup_scope(link.name, self.cache.extensions, (self.cache.data.get("groups") or {}).values())
            if directed:           # **N: any phone of the site (another site's is not ringing here)
                if self.cache.extension(directed) is None:
                    return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now, caller=link.name)
                scope = {directed}
            if not self.groups.pickup(link, ies, now, scope):
                self.refuse_setup(link, ies, wire.CAUSE_NO_ANSWER, now, caller=link.name)   # nothing rings
            return None
        intercom = groups.intercom_target(called)
        if intercom is not None and self.cache.extension(intercom) is not None:
            group = {"number": intercom, "strategy": "ring-all", "members": [intercom], "ring_s": groups.RING_S[0],
                     "overflow": None, "site": None}
            return self._local_group(link, ies, group, now, groups.ANSWER_INTERCOM)
        if called.startswith("*") and intercom is None and not self.voicemail.handles(called):
            return self._star_code(link, ies, now)
        group = self._group(called)
        if group is not None and group["strategy"] == "pickup":
            return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now, caller=link.name)
        if group is not None and (group["strategy"] == "page" or not self.main_link.up):
            return self._local_group(link, ies, group, now)
        if group is not None and all(self.cache.extension(m) is not None for m in group["members"]) and (
                group["overflow"] is None or self.cache.extension(group["overflow"]) is not None):
            return self._site_group(link, ies, group, now)     # an overflow elsewhere: the main host runs it
        tried = []
        if self.cache.extension(called) is not None:   # the site's own: forwarding and DND decided here
            routed, cause = features.route(called, self._features_of, self._number_busy, seen=tried)
            if routed is None:
                routed = divert(tried[-1], cause, self._features_of(tried[-1])) if self.voicemail.store else None
            if routed is None:
                return self.refuse_setup(link, ies, cause, now, caller=link.name)
            if routed != called:
                self.log.info("call-forwarded", caller=link.name, called=called, to=routed)
                called = routed
        if not self.main_link.up and self.cache.extension(called) is None and not self._own_voicemail_serves(called):
            out = trunklib.site_route(self.cache.data, called)
            if out is not None:   # an outside number: the site's own line while the main host is away
                return self._site_trunk_call(link, ies, out, now)
        cause = self.switch.admit(link)   # call numbers left, calls per phone: refused before any state
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now, caller=link.name)
        call = self.switch.new_call(link.name, called, now)
        call.tried = tried or [called]
        self.switch.incoming(call, link, ies)
        if self.cache.extension(called) is not None:
            call.path = "local"
            if self.main_link.up:
                self.pending_local[call.call_id] = call
                self.main_link.send_signal(wire.LOCAL_REQUEST, {wire.IE_CALLING: link.name, wire.IE_CALLED: called,
                                                                wire.IE_CALL_ID: call.call_id}, now)
            else:
                self._decide_locally(call, now)
            return
        if not self.main_link.up and self._own_voicemail_serves(called):
            return self._own_voicemail(call, now)
        if not self.main_link.up:
            return self._refuse(call, wire.CAUSE_UNREACHABLE, now)
        if not self._admits() or self.switch.admit(self.main_link) is not None:
            return self._refuse(call, wire.CAUSE_NETWORK_BUSY, now)
        self.switch.offer(call, self.main_link, now, call_id=False)   # the main host chooses the call ids
        self.log.info("call-setup", call=call.uid, caller=link.name, called=called, via="main")

    # groups, paging, intercom, pickup (host/groups.py): the site's own, here

    def _group(self, number):
        """A group this host may run (its site's copy, sent with the directory), or None."""
        return (self.cache.data.get("groups") or {}).get(number)

    def _local_group(self, link, ies, group, now, answer=None):
        """A group call among the site's phones: a page (always here: no WAN traffic), an intercom
        to a phone of the site, a ring or hunt group while the main host is unreachable (B4; the
        members of other sites cannot be reached then)."""
        if group["strategy"] == "page":
            if group["site"] != self.cache.data.get("site"):
                return self.refuse_setup(link, ies, wire.CAUSE_NOT_PERMITTED, now, caller=link.name)
            group = dict(group, members=group["members"] or sorted(self.cache.extensions, key=lambda n: (len(n), n)))
        cause = self._local_decision(link.name) or self.switch.admit(link)
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now, caller=link.name)
        call = self.switch.new_call(link.name, group["number"], now)
        call.tried = [group["number"]]
        call.path = "local"
        self.switch.incoming(call, link, ies)
        name = (self.cache.extension(link.name) or {}).get("name", "")
        self.groups.start(call, group, name, now, answer)

    def _site_group(self, link, ies, group, now):
        """A ring or hunt group whose members are all of this site, with the main host up: a local
        call (B3), granted as any (LOCAL_REQUEST names the group); the grant starts the ringing."""
        cause = self.switch.admit(link)
        if cause is not None:
            return self.refuse_setup(link, ies, cause, now, caller=link.name)
        call = self.switch.new_call(link.name, group["number"], now)
        call.tried = [group["number"]]
        call.path = "local"
        self.switch.incoming(call, link, ies)
        self.pending_local[call.call_id] = call
        self.main_link.send_signal(wire.LOCAL_REQUEST, {wire.IE_CALLING: link.name, wire.IE_CALLED: group["number"],
                                                        wire.IE_CALL_ID: call.call_id}, now)

    def group_target(self, number, call):
        """Where a member rings: its phone here, if registered, idle and not in do not disturb."""
        if self.cache.extension(number) is None:
            return None, wire.CAUSE_UNREACHABLE      # another site's: not from here
        target = self._phone_link(number)
        if target is None:
            return None, wire.CAUSE_UNREACHABLE
        if self._busy(target):
            return None, wire.CAUSE_BUSY
        if self.cache.features(number)["dnd"]:
            return None, wire.CAUSE_DND
        return target, None

    def group_overflow(self, call, number, now):
        """Nobody of a local group took the call: on to its overflow number, on the site."""
        routed, cause = features.route(number, self._features_of, self._number_busy, seen=call.tried)
        if routed is None:
            return self._refuse(call, cause, now)
        group = self._group(routed)
        if group is not None and group["strategy"] in ("ring-all", "hunt"):
            call.callee = routed
            return self.groups.start(call, group, (self.cache.extension(call.caller) or {}).get("name", ""), now)
        if self.cache.extension(routed) is None:
            return self._refuse(call, wire.CAUSE_UNREACHABLE, now)
        call.callee = routed
        call.noanswer = None
        self._connect_local(call, now)

    def group_answered(self, call, now):
        """A member answered (or picked the call up): a local call's phones send to each other."""
        if call.path == "local":
            self._local_media(call, now)

    # station features (host/features.py, docs/features.md): this host keeps its phones' settings

    def _features_of(self, number):
        """The settings of a number: the site's own from this host's copy; another site's are the
        main host's to apply (defaults here: the call goes there unchanged)."""
        if self.cache.extension(number) is None:
            return features.defaults()
        return self.cache.features(number)

    def _number_busy(self, number):
        link = self._phone_link(number)
        return link is not None and self._busy(link)

    def _star_code(self, link, ies, now):
        """A star code from one of our phones: the settings change here, whether or not the main
        host is reachable, and go to the main host (now, or once it is back)."""
        try:
            changes, cause = features.star_code(ies[wire.IE_CALLED])
        except features.FeatureError as exc:
            self.log.info("star-code", extension=link.name, error=str(exc))
            return self.refuse_setup(link, ies, wire.CAUSE_UNKNOWN_EXTENSION, now, caller=link.name)
        settings = self.cache.features(link.name)
        settings.update(changes)
        self.cache.set_features(link.name, settings)
        self.log.info("features", extension=link.name, settings=settings, main_up=self.main_link.up)
        self._send_features(link.name, now)
        self.refuse_setup(link, ies, cause, now, caller=link.name)

    def _send_features(self, number, now):
        if self.main_link.up:
            self.main_link.send_signal(wire.FEATURES, {wire.IE_EXTENSION: number,
                                                       wire.IE_DATA: features.encode(self.cache.features(number))}, now)

    def _uplink_calls(self):
        """Calls that cross the uplink; one whose two legs both go to the main host (a transfer this
        host joined, host/lines.py) crosses it twice; a conference counts each mixed stream to a party
        across it (host/conference.py)."""
        return sum(1 + (c.a.link is c.b.link) for c in self.switch.calls.values()
                   if c.path not in ON_SITE and c.b is not None and c.conference is None) + self.conferences.trunked_parties()

    def _uplink_peers(self):
        """The hosts the site's inter-site calls send trunks to: the main host and direct pairs."""
        peers = {"main"}
        for c in self.switch.calls.values():
            if c.path not in ON_SITE and c.b is not None:
                for leg in (c.a, c.b):
                    if leg.direct is not None and leg.direct[1].up:
                        peers.add(leg.direct[1].name)
        return peers

    def _uplink_kbps(self):
        """Uplink the site's calls cost (common.media.call_kbps): one trunk per peer host per tick."""
        return call_kbps(self._uplink_calls(), len(self._uplink_peers()))

    def _admits(self):
        """Call admission (B5): one more call in or out must fit the uplink budget; local calls never count."""
        if uplink_admits(self.config.uplink_kbps, self._uplink_calls(), len(self._uplink_peers())):
            return True
        self.stats.count("admission refused: uplink budget")   # every caller refuses the call
        return False

    def _decide_locally(self, call, now):
        self.pending_local.pop(call.call_id, None)
        cause = self._local_decision(call.caller)
        self.log.info("local-decision", caller=call.caller, called=call.callee,
                      granted=cause is None, cause=wire.CAUSE_TEXT.get(cause))
        if cause is None:
            self._connect_local(call, now)
        else:
            self._refuse(call, cause, now)

    def _local_decision(self, caller):
        """Permission for a local call from the cached directory, when the main host is away (B4):
        the same rule as the main host's (host/policy.py)."""
        ext = self.cache.extension(caller) or {}
        active = sum(1 for c in self.switch.calls.values() if c.path == "local" and c.b is not None)
        cause = local_call_cause(self.cache.local_calls, self.cache.local_call_quota, ext.get("barred"), active)
        if cause == wire.CAUSE_NETWORK_BUSY:
            self.stats.count("admission refused: local call quota")
        return cause

    def _refuse(self, call, cause, now):
        """End a call that never reached its callee: the caller hears the cause; no record."""
        self.switch.release(call.a, cause, now)
        self.log.info("call-refused", caller=call.caller, called=call.callee, cause=wire.CAUSE_TEXT[cause])
        self.end_call(call, cause, now, record=False)

    def _connect_local(self, call, now):
        group = self._group(call.callee)
        if group is not None and group["strategy"] in ("ring-all", "hunt"):   # granted: its members ring
            return self.groups.start(call, group, (self.cache.extension(call.caller) or {}).get("name", ""), now)
        target = self._phone_link(call.callee)
        if target is None or self._busy(target):
            cause = wire.CAUSE_UNREACHABLE if target is None else wire.CAUSE_BUSY
            if self._divert(call, cause, now):
                return None
            return self._refuse(call, cause, now)
        cause = self.switch.admit(target)
        if cause is not None:
            return self._refuse(call, cause, now)
        name = getattr(call, "caller_name", None) or (self.cache.extension(call.caller) or {}).get("name", "")
        self.switch.offer(call, target, now, name, local=call.path == "local")
        call.offered_ms = now
        settings = self.cache.features(call.callee)
        target = settings["noanswer"] or (divert(call.callee, wire.CAUSE_NO_ANSWER, settings) if self.voicemail.store
                                          else None)
        call.noanswer = (target, settings["noanswer_s"] * 1000) if target else None
        self.log.info("call-setup", call=call.uid, caller=call.caller, called=call.callee, via="local")

    # voicemail (host/voicemail.py): the main host's; this host's own only while it is away (B4)

    def _divert(self, call, cause, now):
        """A local call that would end with cause goes to the callee's mailbox if its voicemail is
        on; False if it is not."""
        number = divert(call.callee, cause, self.cache.features(call.callee)) if self.voicemail.store else None
        if number is None or (call.path == "trunk" and self.main_link.up):   # the main host's voicemail takes
            return False                                                     # no call from the site's line
        self.log.info("call-forwarded", call=call.uid, called=call.callee, to=number, reason=wire.CAUSE_TEXT[cause])
        call.callee = number
        call.noanswer = None
        self._off_site(call, now)
        return True

    def _off_site(self, call, now):
        """A call of the site's that now goes off the site: to the main host (with the call id: it
        forgets the local grant), or to this host's own voicemail while the main host is away. A call
        in on the site's own trunk stays on the site (the main host takes no call from it)."""
        if call.path == "trunk" and self.main_link.up:
            return self._refuse(call, wire.CAUSE_UNREACHABLE, now)
        if not self.main_link.up and self._own_voicemail_serves(call.callee):
            return self._own_voicemail(call, now)
        if not self.main_link.up:
            return self._refuse(call, wire.CAUSE_UNREACHABLE, now)
        call.path = "relay"
        if not self._admits() or self.switch.admit(self.main_link) is not None:
            return self._refuse(call, wire.CAUSE_NETWORK_BUSY, now)
        self.switch.offer(call, self.main_link, now)

    def _mailbox_changed(self, mailbox, now):
        """A message recorded here, or *97 here changed a mailbox (the main host away): sent up once
        it is back; the phone's message-waiting count from here meanwhile."""
        self.voicemail_upload.next(now)
        self.mailbox_cache.next_change(now)
        link = self._phone_link(mailbox)
        if not self.main_link.up and link is not None and self.voicemail.store is not None:
            link.send_signal(wire.MESSAGE_WAITING, {wire.IE_STATE: min(255, self.voicemail.store.counts(mailbox)[0])}, now)

    def _own_voicemail_serves(self, called):
        """While the main host is away: *97, and *98N for the site's own extensions (what it
        records must be the site's, or the main host would refuse the upload)."""
        mailbox = voicemail_mailbox(called)
        return self.voicemail.handles(called) and (mailbox is None or self.cache.extension(mailbox) is not None)

    def _own_voicemail(self, call, now):
        call.path = "voicemail"
        self.switch.offer(call, self.voicemail.link, now, (self.cache.extension(call.caller) or {}).get("name", ""))
        self.log.info("call-setup", call=call.uid, caller=call.caller, called=call.callee, via="voicemail")

    def _incoming(self, ies, now):
        called = ies.get(wire.IE_CALLED)
        if wire.IE_CALL_NO not in ies or wire.IE_MEDIA_KEY not in ies or called is None:
            self.stats.drop("setup missing IEs")
            return
        cause = None
        if ies.get(wire.IE_ANSWER):     # an intercom (host/groups.py): for this phone, not where it forwards
            cause = wire.CAUSE_DND if self.cache.features(called)["dnd"] else None
        elif self.cache.extension(called) is not None:
            routed, cause = features.route(called, self._features_of, self._number_busy)
            if routed is not None and routed != called:
                if self.cache.extension(routed) is None:
                    cause = wire.CAUSE_BUSY   # forwarded to another site: the main host forwards on busy
                else:
                    self.log.info("call-forwarded", called=called, to=routed)
                    called = routed
        target = self._phone_link(called)
        if cause is None:
            cause = wire.CAUSE_UNREACHABLE if target is None else (wire.CAUSE_BUSY if self._busy(target) else None)
        if cause is None and not self._admits():
            cause = wire.CAUSE_NETWORK_BUSY  # the media would go up the uplink too
        if cause is None:
            cause = self.switch.admit(self.main_link, target)
        if cause is not None:
            return self.refuse_setup(self.main_link, ies, cause, now)
        call = self.switch.new_call(ies.get(wire.IE_CALLING, ""), called, now, ies.get(wire.IE_CALL_ID))
        self.switch.incoming(call, self.main_link, ies)
        answer = ies.get(wire.IE_ANSWER)    # an intercom: the phone answers by itself
        self.switch.offer(call, target, now, ies.get(wire.IE_CALLING_NAME, ""),
                          extra={wire.IE_ANSWER: answer} if answer else None)

    def on_call_event(self, call, msg_type, now):
        # B3: the phones send media to each other once the callee rings; a call that may still be
        # forwarded on no answer waits for the answer (the caller's phone cannot take it back)
        if call.path == "local" and ((msg_type == wire.ALERTING and call.noanswer is None) or
                                     (msg_type == wire.ANSWER and call.noanswer is not None)):
            self._local_media(call, now)

    def _forward_no_answer(self, call, now):
        """A local call rang for the callee's no-answer time: offered where it forwards, on the
        site (still local) or through the main host (no longer local: the main host records it)."""
        number = call.noanswer[0]
        self.switch.drop_callee(call, wire.CAUSE_NO_ANSWER, now)
        routed, cause = features.route(number, self._features_of, self._number_busy, seen=call.tried)
        if routed is None:
            return self._refuse(call, cause, now)
        self.log.info("call-forwarded", call=call.uid, called=call.callee, to=routed, reason="no answer")
        call.callee = routed
        call.noanswer = None
        if self.cache.extension(routed) is not None:
            return self._connect_local(call, now)
        self._off_site(call, now)

    def _local_media(self, call, now):
        """B3: both phones send media to each other on the LAN; no host carries it (but for an A-law
        and a mu-law phone: this host carries it on the LAN and converts, host/codec.py; and a SIP
        phone's media is this host's to carry, host/sip/calls.py)."""
        a, b = call.a, call.b
        if a.link.kind == "app" or b.link.kind == "app":
            return
        if a.link.codec != b.link.codec:
            return
        key = os.urandom(16)
        for leg, other, role in ((a, b, 0), (b, a, 1)):
            leg.link.send_signal(wire.MEDIA_PEER, {
                wire.IE_PEER_CALL_NO: leg.peer_call_no, wire.IE_CALL_NO: other.peer_call_no,
                wire.IE_MEDIA_KEY: key, wire.IE_ROLE: role, wire.IE_ADDRESS: other.link.address,
                wire.IE_PATH: wire.PATH_LOCAL}, now)

    def on_call_ended(self, call, cause, now):
        """Local calls are this host's to record (the main host records the calls it switches)."""
        if self.pending_local.pop(call.call_id, None) is not None:   # its grant, if one comes, is for nothing
            self.log.info("local-request-abandoned", call=call.uid)
        if call.path in ON_SITE:   # and the calls on the site's own trunk (uploaded as local calls are)
            self.records.add(call_record(call, self.config.name, cause, now, self.wall_ms(now)))
            self._upload_records(now)

    def _upload_records(self, now):
        if not self.main_link.up:
            return
        for record in self.records.pending():
            if record["uid"] in self.uploading:
                continue
            data = encode_upload(record)
            if self.main_link.send_signal(wire.RECORDS, {wire.IE_DATA: data}, now):
                self.uploading.add(record["uid"])

    # B2: hole punching

    def _report_pair(self, pair, path, now):
        if pair.reported != path:
            pair.reported = path
            self.main_link.send_signal(wire.PUNCH_RESULT, {wire.IE_PEER_NAME: pair.name, wire.IE_PATH: path}, now)

    def _probe_if_silent(self, pair, now):
        """B7: direct media from the pair stopped in an answered call (a router's public address
        changed, most likely ours or theirs). PING the main host at once: the PING shows main
        our current public address, main re-offers the pair to both sides with the addresses it
        sees (host/main.py _reoffer_pairs), and both send media to the right place again."""
        if now - pair.last_heard_ms < PAIR_SILENCE_MS or now - pair.probe_ms < PAIR_SILENCE_MS:
            return
        for call in self.switch.calls.values():
            if call.state != "answered" or now - call.answered_ms < PAIR_SILENCE_MS:
                continue
            if any(leg is not None and leg.direct is not None and leg.direct[1] is pair.link
                   for leg in (call.a, call.b)):
                pair.probe_ms = now
                self.stats.count("pair silence probes")
                self.log.info("pair-silent", peer=pair.name, silent_ms=now - pair.last_heard_ms)
                self.login.send(wire.PING, {}, now)
                return

    # timers

    def on_tick(self, now):
        self.play_music_on_hold(now)
        self.voicemail.tick(now)
        self.voicemail_upload.pump(now)
        self.switch.flush()
        self.groups.tick(now)
        for call in list(self.pending_local.values()):
            if now - call.started_ms > LOCAL_REQUEST_TIMEOUT_MS:
                self._decide_locally(call, now)
        for call in list(self.switch.calls.values()):
            if (call.noanswer is not None and call.path == "local" and call.b is not None
                    and call.state in ("setup", "alerting") and now - call.offered_ms >= call.noanswer[1]):
                self._forward_no_answer(call, now)
        # calls through the main host (a call the standby node took over is not: _moved_to_standby)
        through = (self.main_link.legs > 0 if self.standby_link.legs
                   else any(c.path not in ON_SITE for c in self.switch.calls.values()))
        if through and self.standby_link.up:
            self.login.set_keepalive(STANDBY_CALL_KEEPALIVE_MS, STANDBY_CALL_DEAD_MS + self.grace_ms, now)
        elif through:
            self.login.set_keepalive(CALL_KEEPALIVE_MS, CALL_DEAD_MS + self.grace_ms, now)
        elif self.standby_link.up:
            self.login.set_keepalive(min(self.config.keepalive_s * 1000, STANDBY_IDLE_KEEPALIVE_MS),
                                     STANDBY_IDLE_DEAD_MS, now)
        else:
            self.login.set_keepalive(self.config.keepalive_s * 1000, IDLE_DEAD_MS, now)
        if self.standby is not None and self.leaving is None:
            if self.standby_link.legs:   # a call the standby node took over: watched as a call's session is
                self.standby.set_keepalive(CALL_KEEPALIVE_MS, CALL_DEAD_MS, now)
            else:
                self.standby.set_keepalive(self.config.keepalive_s * 1000, IDLE_DEAD_MS, now)
                if self.standby_again and self.login.state == UP:
                    self._choose_standby(now)
        self.pairs.tick(now)
        self.firmware.tick(now, self.main_link.up)
        for pair in self.pairs.values():
            if pair.link.up:
                self._probe_if_silent(pair, now)
        timer = self.login.next_timer()
        if timer is not None and timer <= now:
            self.login.handle_timer(now)
            self._login_events(now)
        if self.standby is not None:
            timer = self.standby.next_timer()
            if timer is not None and timer <= now:
                self.standby.handle_timer(now)
                self._standby_events(now)
        self._main_liveness(now)
        self._rebalance(now)
        for leg, (deadline, highest) in list(self.unconfirmed.items()):
            if self.switch.legs.get(leg.call_no) is not leg or leg.media.replay.highest != highest:
                del self.unconfirmed[leg]     # ended, or its media came from the new node: taken over
            elif now >= deadline:
                del self.unconfirmed[leg]
                call = leg.call
                self.stats.count("calls not taken over")
                self.log.warning("call-not-taken-over", call=call.uid, main="%s:%d" % self.main_address[:2])
                for end in (call.a, call.b):
                    if end is not None:
                        self.switch.release(end, wire.CAUSE_MAIN_LOST, now)
                self.end_call(call, wire.CAUSE_MAIN_LOST, now)
        for peer in self.peers.due(now):
            peer.channel.handle_timer(now)
            self.peers.dirty.add(peer)    # what it resends goes out with this turn's datagrams
        for peer in self.peers.expired(now):
            link = self.phone_links.get(peer.index)
            if link is not None:
                self._phone_gone(link, now, "expired")
            self.peers.remove(peer)

    def _phone_gone(self, link, now, reason):
        self.phone_links.pop(link.session.index, None)
        link.up = False
        self.log.info("unregistered", extension=link.name, reason=reason)
        self.main_link.send_signal(wire.PHONE_STATE, {wire.IE_EXTENSION: link.name, wire.IE_STATE: 0}, now)
        self.release_calls(link, wire.CAUSE_UNREACHABLE, now)

    def bandwidth_owners(self):
        """The WAN (main host and direct peers) and the LAN (phones), by current address."""
        owners = {tuple(self.main_address[:2]): ("wan", "main")}
        for pair in self.pairs.values():
            owners[tuple(pair.link.address[:2])] = ("wan", "pair " + pair.name)
        for link in self.phone_links.values():
            owners[tuple(link.address[:2])] = ("lan",)
        return owners

    def status(self):
        return {
            "name": self.config.name,
            "bandwidth": self.meter.as_dict(),
            # a cluster's nodes in this host's rendezvous order, and where it logs in (docs/cluster.md)
            "cluster": {"nodes": [[n, "%s:%d" % a] for n, a in self.cluster_nodes],
                        "main": "%s:%d" % tuple(self.main_address[:2]),
                        # a move to the first node (_rebalance): due in ms once idle, or "logging in" there
                        "move": ("logging in" if self.moving is not None else
                                 max(0, self.move_at - self.now) if self.move_at is not None else None)},
            "uplink": {"budget_kbps": self.config.uplink_kbps, "calls": self._uplink_calls(),
                       "committed_kbps": round(self._uplink_kbps(), 1) if self._uplink_calls() else 0.0},
            "main": {"state": self.login.state, "logins": self.login.logins,
                     "silent_ms": None if self.main_silent_ms is None else self.now - self.main_silent_ms + SILENT_MS,
                     "calls_held": self.main_link.legs if self.main_silent_ms is not None else 0,
                     "grace_ms": self.grace_ms, "address": "%s:%d" % self.main_address[:2],
                     "standby": None if self.standby is None else {
                         "address": "%s:%d" % self.standby_link.address[:2], "state": self.standby.state,
                         "logins": self.standby.logins, "calls": self.standby_link.legs}},
            "sip": dict(self.sip.status(self.now), trunks=self.sip_calls.trunk_status()),
            "phones": [{"extension": l.name, "address": "%s:%d" % l.address[:2]} for l in self.phone_links.values()],
            "calls": [{"call": c.uid, "caller": c.caller, "callee": c.callee, "state": c.state, "path": c.path,
                       "frames": c.frames, "held": c.held_by is not None} for c in self.switch.calls.values()],
            "conferences": self.conferences.status(),
            "pairs": {p.name: {"up": p.link.up, "address": "%s:%d" % p.link.address[:2]} for p in self.pairs.values()},
            "records_pending": len(self.records.pending()),
            "voicemail_pending": len(self.voicemail.store.pending_upload()) if self.voicemail.store else 0,
            "mailbox_changes_pending": len(self.voicemail.store.pending_changes()) if self.voicemail.store else 0,
            "sysinfo_version": self.cache.sysinfo["version"],
            "sysinfo_acked": dict(self.sysinfo_acked),
            "firmware": {"fetch": self.firmware.status(), "phones": dict(self.firmware_phones.phones)},
            "stats": self.stats.as_dict(),
            "trunk_bytes_by_peer": dict(self.switch.bytes_out_by_link),
        }
