"""A remote host: serves its site's phones, logs into the main host, switches local calls.

Local calls (B3) are granted by the main host and then run phone to phone on the
LAN; when the main host is unreachable the cached directory decides (B4).
Calls to other sites go to the main host, or directly to the other remote host
once the main host has arranged a hole-punched path (B2).
"""
import json
import os

from common import wire
from common.login import UP, Login
from common.media import MediaLeg
from common.media import call_kbps
from host.chunks import Reassembly, send_chunked
from host.daemon import Daemon, StructuredLog, wall_ms
from host.files import private_file, write_private
from host.records import RecordStore, call_record, encode_upload
from host.sessions import SessionTable
from host.punch import Pairs
from host.switch import Link, Switch

PAIR_SILENCE_MS = 300   # no direct media for this long in an answered call: tell main where we are (B7)
# B4: how fast the main host's loss is noticed. Idle: the keepalive_s PING must be answered
# within IDLE_DEAD_MS. While calls through the main host are up: a PING every second and
# nothing (signalling or trunk) heard for CALL_KEEPALIVE_MS + CALL_DEAD_MS = 3 s ends them.
IDLE_DEAD_MS = 5000
CALL_KEEPALIVE_MS = 1000
CALL_DEAD_MS = 2000
LOCAL_REQUEST_TIMEOUT_MS = 1500   # no LOCAL_GRANT by then: decide from the cached directory
PHONE_KEEPALIVE_MS = 2000         # LAN phones: a restarted remote host is noticed within ~4 s (B4)
MAX_CALLS_PER_PHONE = 2           # one call, and one that may ring in while the phone dials out


class RemoteHost(Daemon):
    def __init__(self, config, punch_timeout_ms=2000):
        log = StructuredLog(config.name, config.log_level, config.log_format)
        Daemon.__init__(self, config.name, config.listen, log, config.control_socket)
        self.config = config
        for warning in config.warnings:
            self.log.warning("config", problem=warning)
        self.punch_timeout_ms = punch_timeout_ms
        self.directory = self._load_cache()
        self.sessions = SessionTable(self._secret_of, self.stats, config.registration_ttl_s * 1000,
                                     phone_keepalive_ms=PHONE_KEEPALIVE_MS)
        self.switch = Switch(self, config.trunk_mtu, max_legs={"phone": MAX_CALLS_PER_PHONE})
        self.main_address = config.main
        # our index towards the main host is reserved in the session table: no phone can get it,
        # or its frames would be taken for the main host's (one port, one index space)
        self.login = Login(wire.IE_HOST_NAME, config.name, config.secret, self.sessions.reserve_index(),
                           os.urandom, keepalive_ms=config.keepalive_s * 1000,
                           backoff_initial_ms=int(config.login_backoff_initial_s * 1000),
                           backoff_max_ms=int(config.login_backoff_max_s * 1000), dead_ms=IDLE_DEAD_MS)
        self.main_link = Link("main", "main", login=self.login, address=config.main)
        self.main_link.up = False
        self.records = RecordStore(config.records_database)
        for warning in self.records.warnings:
            self.log.warning("file-permissions", problem=warning)
        self.phone_links = {}        # Peer.index -> Link
        self.pairs = Pairs(config.name, self, self._report_pair, punch_timeout_ms, self.sessions)
        self.pending_local = {}      # call id -> (call) waiting for LOCAL_GRANT
        self.blobs = {wire.DIRECTORY: Reassembly(), wire.SYSINFO: Reassembly()}
        self.sysinfo = self.directory.get("sysinfo") or {"version": None, "info": None}
        self.sysinfo_acked = {}      # extension -> version
        self.uploading = set()

    # cached directory (B4)

    def _load_cache(self):
        try:
            with open(self.config.directory_cache) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            return {"extensions": {}, "local_calls": True}
        warning = private_file(self.config.directory_cache)   # the site's phone secrets: 0600
        if warning:
            self.log.warning("file-permissions", problem=warning)
        return cache

    def _save_cache(self):
        """The cache holds the site's phone secrets: written 0600, in a 0700 directory if we make it."""
        private_file(self.config.directory_cache)
        write_private(self.config.directory_cache, json.dumps(self.directory).encode())

    def _secret_of(self, identity):
        kind, name = identity
        ext = self.directory["extensions"].get(name) if kind == "ext" else None
        return bytes.fromhex(ext["secret"]) if ext else None

    # lifecycle

    def on_start(self, now):
        self.login.start(now)
        self._flush_main(now)

    def on_stop(self, now):
        self.records.close()

    # datagrams

    def on_datagram(self, data, addr, now):
        kind = wire.frame_kind(data)
        if kind == wire.KIND_MINI:
            self.switch.mini_in(data, addr, now)
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
        elif msg_type in wire.HANDSHAKE_TYPES:
            reply, peer = self.sessions.handle_handshake(data, addr, now)
            if reply:
                self.send(reply, addr)
            if peer:
                self._phone_registered(peer, now)
        else:
            peer, messages = self.sessions.receive(data, addr, now)
            if peer is None:
                return
            link = self.phone_links[peer.index]
            for msg_type, ies in messages:
                self._from_phone(link, msg_type, ies, now)
            self._flush_phone(peer, now)
        self._flush_main(now)

    # main host side

    def _from_main(self, data, now):
        messages = self.login.receive(data, now)
        self._login_events(now)
        for msg_type, ies in messages:
            self._main_message(msg_type, ies, now)

    def _login_events(self, now):
        for event, detail in self.login.events:
            if event == "up":
                self.main_link.up = True
                self.log.info("logged-in", main="%s:%d" % self.main_address, logins=self.login.logins)
                self._upload_records(now)
                for link in self.phone_links.values():
                    self.main_link.send_signal(wire.PHONE_STATE, {wire.IE_EXTENSION: link.name, wire.IE_STATE: 1}, now)
            else:
                self.main_link.up = False
                self.log.warning("main-unreachable", reason=detail)
                self.uploading.clear()
                for call in list(self.pending_local.values()):
                    self._decide_locally(call, now)
                for call in list(self.switch.calls.values()):
                    if call.path != "local":
                        for leg in (call.a, call.b):
                            if leg.link.kind == "phone":
                                leg.send(wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_UNREACHABLE}, now)
                        self._ended(call, wire.CAUSE_UNREACHABLE, now)
        self.login.events = []

    def _flush_main(self, now):
        for datagram in self.login.datagrams_to_send(now):
            self.send(datagram, self.main_address)

    def _main_message(self, msg_type, ies, now):
        self.stats.count("msg " + wire.MESSAGE_NAMES.get(msg_type, "0x%02x" % msg_type))
        if msg_type in (wire.DIRECTORY, wire.SYSINFO):
            obj = self.blobs[msg_type].add(ies)
            if obj is None:
                return
            if msg_type == wire.DIRECTORY:
                obj["sysinfo"] = self.sysinfo
                self.directory = obj
                self.sessions.forget_keys()   # phones' secrets may have changed
                self.log.info("directory", extensions=len(obj["extensions"]))
            else:
                version = ies.get(wire.IE_VERSION, 0)
                known = version == self.sysinfo.get("version")  # again after a login: phones have it
                self.sysinfo = {"version": version, "info": obj}
                self.directory["sysinfo"] = self.sysinfo
                self.stats.count("sysinfo versions received")
                if not known:
                    for link in self.phone_links.values():
                        self._send_sysinfo(link, now)
            self._save_cache()
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
            if leg is not None and pair is not None and leg.link is self.main_link:
                leg.direct = (MediaLeg(ies[wire.IE_MEDIA_KEY], ies.get(wire.IE_ROLE, 0), leg.call_no,
                                       ies[wire.IE_CALL_NO]), pair.link)
        elif msg_type == wire.RECORDS:
            uid = ies.get(wire.IE_CALL_ID, b"").hex()
            self.records.mark_uploaded([uid])
            self.uploading.discard(uid)
            self.stats.count("records uploaded")
        elif msg_type in (wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.DTMF):
            leg = self.switch.leg_for(ies, self.main_link)
            if leg is None:
                # a refusal of our SETUP names our phone-side leg by the call number we sent
                if msg_type == wire.RELEASE:
                    leg = self.switch.legs.get(ies.get(wire.IE_PEER_CALL_NO))
                if leg is None or leg.link is not self.main_link:
                    self.stats.drop("unknown call")
                    return
            self._call_event(leg, msg_type, ies, now)

    # phones

    def _phone_registered(self, peer, now):
        for index, link in list(self.phone_links.items()):
            if link.name == peer.name:
                self._phone_gone(link, now, "registered again")
        link = Link(peer.name, "phone", session=peer)
        self.phone_links[peer.index] = link
        self.log.info("registered", extension=peer.name, address="%s:%d" % peer.address)
        self.main_link.send_signal(wire.PHONE_STATE, {wire.IE_EXTENSION: peer.name, wire.IE_STATE: 1}, now)
        self._send_sysinfo(link, now)
        self._flush_phone(peer, now)

    def _send_sysinfo(self, link, now):
        if self.sysinfo.get("info") is None:
            return
        send_chunked(link, wire.SYSINFO, self.sysinfo["version"], self.sysinfo["info"], now)
        self.stats.count("sysinfo copies to phones")

    def _flush_phones(self, now):
        """Send what this turn queued for phones, to those phones only."""
        for peer in self.sessions.take_dirty():
            self._flush_phone(peer, now)

    def _flush_phone(self, peer, now):
        for datagram in peer.channel.datagrams_to_send(now):
            self.send(datagram, peer.address)
        self.sessions.schedule(peer)

    def _phone_link(self, number):
        peer = self.sessions.by_identity.get(("ext", number))
        return self.phone_links.get(peer.index) if peer else None

    def _from_phone(self, link, msg_type, ies, now):
        self.stats.count("msg " + wire.MESSAGE_NAMES.get(msg_type, "0x%02x" % msg_type))
        if msg_type in (wire.PING, wire.ACK):
            return
        if msg_type == wire.SYSINFO_ACK:
            self.sysinfo_acked[link.name] = ies.get(wire.IE_VERSION)
        elif msg_type == wire.BYE:
            self._phone_gone(link, now, "logged out")
            self.sessions.remove(link.session)
        elif msg_type == wire.SETUP:
            self._outgoing(link, ies, now)
        elif msg_type in (wire.ALERTING, wire.ANSWER, wire.RELEASE, wire.DTMF):
            leg = self.switch.leg_for(ies, link)
            if leg is None:
                self.stats.drop("unknown call")
                return
            self._call_event(leg, msg_type, ies, now)
        else:
            self.stats.drop("unexpected message")

    def _busy(self, link):
        return bool(self.switch.calls_of(link)) or any(
            c.a.link is link for c in self.pending_local.values())

    def _outgoing(self, link, ies, now):
        if wire.IE_CALL_NO not in ies or wire.IE_CALLED not in ies or wire.IE_MEDIA_KEY not in ies:
            self.stats.drop("setup missing IEs")
            return
        called = ies[wire.IE_CALLED]
        cause = self.switch.admit(link)   # call numbers left, calls per phone: refused before any state
        if cause is not None:
            self.log.info("call-refused", caller=link.name, called=called, cause=wire.CAUSE_TEXT[cause])
            link.send_signal(wire.RELEASE, {wire.IE_PEER_CALL_NO: ies[wire.IE_CALL_NO], wire.IE_CAUSE: cause}, now)
            return
        call = self.switch.new_call(link.name, called, now)
        call.a = self.switch.new_leg(link, ies[wire.IE_MEDIA_KEY], 1, call)
        call.a.learn_peer(ies[wire.IE_CALL_NO])
        if called in self.directory["extensions"]:
            call.path = "local"
            if self.main_link.up:
                self.pending_local[call.call_id] = call
                self.main_link.send_signal(wire.LOCAL_REQUEST, {wire.IE_CALLING: link.name, wire.IE_CALLED: called,
                                                                wire.IE_CALL_ID: call.call_id}, now)
            else:
                self._decide_locally(call, now)
            return
        if not self.main_link.up:
            return self._refuse(call, wire.CAUSE_UNREACHABLE, now)
        if not self._admits() or self.switch.admit(self.main_link) is not None:
            return self._refuse(call, wire.CAUSE_NETWORK_BUSY, now)
        call.b = self.switch.new_leg(self.main_link, os.urandom(16), 0, call)
        # no call_id: the main host chooses the ids of the calls it switches
        call.b.send(wire.SETUP, {wire.IE_CALLED: called, wire.IE_CALLING: link.name,
                                 wire.IE_MEDIA_KEY: call.b.media_key}, now)
        self.log.info("call-setup", call=call.uid, caller=link.name, called=called, via="main")

    def _uplink_calls(self):
        return sum(1 for c in self.switch.calls.values() if c.path != "local" and c.b is not None)

    def _uplink_kbps(self, extra=0):
        """Uplink the site's calls cost (common.media.call_kbps): one trunk per peer host per tick."""
        peers = {"main"}
        for c in self.switch.calls.values():
            if c.path != "local" and c.b is not None:
                for leg in (c.a, c.b):
                    if leg.direct is not None and leg.direct[1].up:
                        peers.add(leg.direct[1].name)
        return call_kbps(self._uplink_calls() + extra, len(peers))

    def _admits(self):
        """Call admission (B5): one more call in or out must fit the uplink budget; local calls never count."""
        budget = self.config.uplink_kbps
        return not budget or self._uplink_kbps(1) <= budget

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
        """Permission for a local call from the cached directory, when the main host is away (B4)."""
        ext = self.directory["extensions"].get(caller, {})
        if not self.directory.get("local_calls", True) or ext.get("barred"):
            return wire.CAUSE_NOT_PERMITTED
        quota = self.directory.get("local_call_quota", 0)
        if quota and sum(1 for c in self.switch.calls.values() if c.path == "local" and c.b is not None) >= quota:
            return wire.CAUSE_NETWORK_BUSY  # the site's quota, as the main host would have said
        return None

    def _refuse(self, call, cause, now):
        call.a.send(wire.RELEASE, {wire.IE_CAUSE: cause}, now)
        self.log.info("call-refused", caller=call.caller, called=call.callee, cause=wire.CAUSE_TEXT[cause])
        self._ended(call, cause, now, record=False)

    def _connect_local(self, call, now):
        target = self._phone_link(call.callee)
        if target is None:
            return self._refuse(call, wire.CAUSE_UNREACHABLE, now)
        if self._busy(target):
            return self._refuse(call, wire.CAUSE_BUSY, now)
        cause = self.switch.admit(target)
        if cause is not None:
            return self._refuse(call, cause, now)
        call.b = self.switch.new_leg(target, os.urandom(16), 0, call)
        name = self.directory["extensions"].get(call.caller, {}).get("name", "")
        call.b.send(wire.SETUP, {wire.IE_CALLED: call.callee, wire.IE_CALLING: call.caller,
                                 wire.IE_CALLING_NAME: name, wire.IE_MEDIA_KEY: call.b.media_key,
                                 wire.IE_CALL_ID: call.call_id, wire.IE_PATH: wire.PATH_LOCAL}, now)
        self.log.info("call-setup", call=call.uid, caller=call.caller, called=call.callee, via="local")
        self._flush_phone(target.session, now)

    def _incoming(self, ies, now):
        called = ies.get(wire.IE_CALLED)
        if wire.IE_CALL_NO not in ies or wire.IE_MEDIA_KEY not in ies or called is None:
            self.stats.drop("setup missing IEs")
            return
        target = self._phone_link(called)
        cause = wire.CAUSE_UNREACHABLE if target is None else (wire.CAUSE_BUSY if self._busy(target) else None)
        if cause is None and not self._admits():
            cause = wire.CAUSE_NETWORK_BUSY  # the media would go up the uplink too
        if cause is None:
            cause = self.switch.admit(self.main_link, target)
        if cause is not None:
            self.log.info("call-refused", caller=ies.get(wire.IE_CALLING), called=called, cause=wire.CAUSE_TEXT[cause])
            self.main_link.send_signal(wire.RELEASE, {wire.IE_PEER_CALL_NO: ies[wire.IE_CALL_NO],
                                                      wire.IE_CAUSE: cause}, now)
            return
        call = self.switch.new_call(ies.get(wire.IE_CALLING, ""), called, now, ies.get(wire.IE_CALL_ID))
        call.a = self.switch.new_leg(self.main_link, ies[wire.IE_MEDIA_KEY], 1, call)
        call.a.learn_peer(ies[wire.IE_CALL_NO])
        call.b = self.switch.new_leg(target, os.urandom(16), 0, call)
        call.b.send(wire.SETUP, {wire.IE_CALLED: called, wire.IE_CALLING: call.caller,
                                 wire.IE_CALLING_NAME: ies.get(wire.IE_CALLING_NAME, ""),
                                 wire.IE_MEDIA_KEY: call.b.media_key, wire.IE_CALL_ID: call.call_id}, now)
        self._flush_phone(target.session, now)

    def _call_event(self, leg, msg_type, ies, now):
        call = leg.call
        event = self.switch.pass_on(leg, msg_type, ies, now)
        if event == "alerting" and call.path == "local":
            self._local_media(call, now)
        elif event == "released":
            self._ended(call, call.cause, now)
        self._flush_phones(now)

    def _local_media(self, call, now):
        """B3: both phones send media to each other on the LAN; no host carries it."""
        key = os.urandom(16)
        a, b = call.a, call.b
        for leg, other, role in ((a, b, 0), (b, a, 1)):
            leg.link.send_signal(wire.MEDIA_PEER, {
                wire.IE_PEER_CALL_NO: leg.peer_call_no, wire.IE_CALL_NO: other.peer_call_no,
                wire.IE_MEDIA_KEY: key, wire.IE_ROLE: role, wire.IE_ADDRESS: other.link.address,
                wire.IE_PATH: wire.PATH_LOCAL}, now)

    def _ended(self, call, cause, now, record=True):
        if not self.switch.end_call(call, cause, now):
            return
        self.log.info("call-ended", call=call.uid, cause=wire.CAUSE_TEXT.get(cause, cause), path=call.path)
        if record and call.path == "local":
            self.records.add(call_record(call, self.config.name, cause, now, wall_ms()))
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
        self.switch.flush(now)
        for call in list(self.pending_local.values()):
            if now - call.started_ms > LOCAL_REQUEST_TIMEOUT_MS:
                self._decide_locally(call, now)
        if any(c.path != "local" for c in self.switch.calls.values()):
            self.login.set_keepalive(CALL_KEEPALIVE_MS, CALL_DEAD_MS, now)
        else:
            self.login.set_keepalive(self.config.keepalive_s * 1000, IDLE_DEAD_MS, now)
        self.pairs.tick(now)
        for pair in self.pairs.values():
            if pair.link.up:
                self._probe_if_silent(pair, now)
        timer = self.login.next_timer()
        if timer is not None and timer <= now:
            self.login.handle_timer(now)
            self._login_events(now)
        self._flush_main(now)
        for peer in self.sessions.due(now):
            peer.channel.handle_timer(now)
            self._flush_phone(peer, now)
        self._flush_phones(now)
        for peer in self.sessions.expired(now):
            link = self.phone_links.get(peer.index)
            if link is not None:
                self._phone_gone(link, now, "expired")
            self.sessions.remove(peer)

    def _phone_gone(self, link, now, reason):
        self.phone_links.pop(link.session.index, None)
        link.up = False
        self.log.info("unregistered", extension=link.name, reason=reason)
        self.main_link.send_signal(wire.PHONE_STATE, {wire.IE_EXTENSION: link.name, wire.IE_STATE: 0}, now)
        for call in self.switch.calls_of(link):
            other = call.b if call.a.link is link else call.a
            if other is not None:
                other.send(wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_UNREACHABLE}, now)
            self._ended(call, wire.CAUSE_UNREACHABLE, now)

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
            "pid": os.getpid(),
            "bandwidth": self.meter.as_dict(),
            "uplink": {"budget_kbps": self.config.uplink_kbps, "calls": self._uplink_calls(),
                       "committed_kbps": round(self._uplink_kbps(), 1) if self._uplink_calls() else 0.0},
            "main": {"state": self.login.state, "logins": self.login.logins},
            "phones": [{"extension": l.name, "address": "%s:%d" % l.address[:2]} for l in self.phone_links.values()],
            "calls": [{"call": c.uid, "caller": c.caller, "callee": c.callee, "state": c.state, "path": c.path,
                       "frames": c.frames} for c in self.switch.calls.values()],
            "pairs": {p.name: {"up": p.link.up, "address": "%s:%d" % p.link.address[:2]} for p in self.pairs.values()},
            "records_pending": len(self.records.pending()),
            "sysinfo_version": self.sysinfo.get("version"),
            "sysinfo_acked": dict(self.sysinfo_acked),
            "stats": self.stats.as_dict(),
            "trunk_bytes_by_peer": dict(self.switch.bytes_out_by_link),
        }
