"""What both host cores share: datagrams out, counters, the bandwidth meter, the tick, call control.

A core is sans-IO, as aioquic's QuicConnection: datagrams and time go in
(`receive_datagram(data, addr, now)`, `handle_timer(now)`), datagrams come out
(`datagrams_to_send()` -> [(bytes, address, dscp)]), and `get_timer()` says when
`handle_timer` is next due. No socket, no event loop, no clock: the daemon
(host/daemon.py) holds a core and moves bytes and time; tests drive cores in memory
(tests/inprocess.py). Time is integer milliseconds of a monotonic clock; wall-clock
time (for call records) is that plus `wall_offset_ms`, which the daemon keeps set.
"""
from upbx.common import wire
from upbx.host.callstats import CallStats
from upbx.host.conference import Conferences
from upbx.host import lines
from upbx.host.moh import MusicOnHold
from upbx.host.switch import other_leg, send_on_leg

DSCP_EF = 46 << 2    # voice
DSCP_CS3 = 24 << 2   # signalling
TICK_MS = 20


class Stats:
    """Counters of a host: packets in/out by kind and drops by reason."""

    def __init__(self):
        self.counters = {}
        self.drops = {}

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    def drop(self, reason):
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def as_dict(self):
        return {"counters": dict(self.counters), "drops": dict(self.drops),
                "dropped": sum(self.drops.values())}


class BandwidthMeter:
    """Bytes on the wire per peer group, as kbps over a sliding window, with the peak seen.

    Every datagram counts its UDP payload plus the IPv4 and UDP headers. Bytes are
    counted by address as they pass; every INTERVAL_MS they are handed to the groups
    that own the address then (a peer's address may change, B7).
    """

    INTERVAL_MS = 250
    WINDOW = 4                 # intervals: a one-second sliding window

    def __init__(self):
        self._pending = {}     # address -> [bytes in, bytes out] since the last sample
        self._last_ms = None
        self.groups = {}       # name -> {"ring": [(ms, in, out)], "in_kbps", "out_kbps", "peak_*"}
        self.totals = {}       # name -> [bytes in, bytes out] since the start (host/metrics.py)

    def add(self, address, n, out):
        counts = self._pending.get(address)
        if counts is None:
            counts = self._pending[address] = [0, 0]
        counts[1 if out else 0] += n + wire.IP_UDP_HEADERS

    def sample(self, now, owners_of):
        """Close an interval when due; owners_of() maps (host, port) -> names of the groups it belongs
        to, called only then (a main host with 10,000 phones builds it 4 times a second, not 50)."""
        if self._last_ms is None:
            self._last_ms = now
            return
        elapsed = now - self._last_ms
        if elapsed < self.INTERVAL_MS:
            return
        self._last_ms = now
        pending, self._pending = self._pending, {}
        owners = owners_of() if pending else {}
        totals = {}
        for address, (n_in, n_out) in pending.items():
            for name in owners.get(tuple(address[:2]), ("unattributed",)):
                t = totals.setdefault(name, [0, 0])
                t[0] += n_in
                t[1] += n_out
                total = self.totals.setdefault(name, [0, 0])
                total[0] += n_in
                total[1] += n_out
        for name in set(self.groups) | set(totals):
            group = self.groups.setdefault(name, {"ring": [], "in_kbps": 0.0, "out_kbps": 0.0,
                                                  "peak_in_kbps": 0.0, "peak_out_kbps": 0.0})
            ring = group["ring"]
            n_in, n_out = totals.get(name, (0, 0))
            ring.append((elapsed, n_in, n_out))
            del ring[:-self.WINDOW]
            span = max(sum(r[0] for r in ring), self.INTERVAL_MS * self.WINDOW)  # bytes * 8 / ms = kbit/s
            group["in_kbps"] = sum(r[1] for r in ring) * 8.0 / span
            group["out_kbps"] = sum(r[2] for r in ring) * 8.0 / span
            group["peak_in_kbps"] = max(group["peak_in_kbps"], group["in_kbps"])
            group["peak_out_kbps"] = max(group["peak_out_kbps"], group["out_kbps"])

    def as_dict(self):
        return {name: {k: round(v, 1) for k, v in g.items() if k != "ring"}
                for name, g in sorted(self.groups.items())}


class HostCore:
    """Base of MainHost and RemoteHost: the sans-IO surface and the call control both hosts share.

    A subclass sets self.switch, self.groups (host.groups.GroupCalls) and self.peers (host.peers.PeerTable) and implements
    on_datagram, on_tick, on_call_event (what the host adds to an alerting/answer/release
    it passes on), on_call_ended (its record), bandwidth_owners and status.
    """

    def __init__(self, name, log):
        self.name = name
        self.log = log
        self.stats = Stats()
        self.call_stats = CallStats()   # calls ended, their frames, set-up times (host/metrics.py)
        self.call_ending = None     # f(call) before an ended call is counted and recorded (host/relay_workers.py)
        self.meter = BandwidthMeter()
        self.wall_offset_ms = 0     # wall-clock ms = monotonic ms + this (the daemon keeps it set)
        self.now = 0                # the time of the last input, for what is flushed without one
        self._out = []
        self._next_tick = None
        self.held = set()           # calls held by a phone of this host: music on hold goes out every tick
        self.calls_changed = None   # a set while relay tables run (host/relay_workers.py): calls a HOLD changed
        # f() while relay tables run (the daemon's _pump_table): a long tick calls it at each step and each call it
        # looks at, so the table relays what waits on the socket meanwhile (it touches no object of the core);
        # f itself relays only when enough time has passed since it last did
        self.pump = None
        self.moh = MusicOnHold()    # a subclass may set its configured WAV
        self.conferences = Conferences(self)   # a subclass sets max_parties from its configuration
        self.sip = None             # SipEdge (host/sip/edge.py) of a host that serves SIP phones
        self.sip_listen = None      # its UDP address; the daemon opens it only while sip_wanted()
        self.sip_calls = None       # SipCalls (host/sip/calls.py): SIP phones' calls as legs of the switch
        self._sip_expiry_ms = 0

    # the sans-IO surface

    def start(self, now):
        """The host begins (a remote host logs in); the first tick is due at once."""
        self.now = now
        self._next_tick = now
        self.on_start(now)

    def stop(self, now):
        self.now = now
        self.on_stop(now)

    def receive_datagram(self, data, addr, now):
        """One datagram from addr; anything malformed is dropped and counted, never raised."""
        self.now = now
        self.stats.count("datagrams in")
        self.stats.count("bytes in", len(data))
        self.meter.add(addr, len(data), False)
        try:
            self.on_datagram(data, addr, now)
        except wire.DecodeError as exc:
            self.stats.drop("malformed: " + exc.field)
            self.log.debug("drop", reason=str(exc), source="%s:%d" % addr[:2])

    def get_timer(self):
        """When handle_timer is next due (ms), or None before start()."""
        return self._next_tick

    def handle_timer(self, now):
        """The 20 ms tick: trunks leave, timers run, the bandwidth meter samples."""
        self.now = now
        if self._next_tick is None or now < self._next_tick:
            return
        self._next_tick += TICK_MS
        if now - self._next_tick > 10 * TICK_MS:
            self._next_tick = now + TICK_MS   # far behind (a stalled process): skip, do not burst
        if self.conferences.active:
            self.conferences.tick(now)    # queued before on_tick flushes the trunks
        if self.held:
            lines.recall(self, now)       # blind transfers not answered in time (host/lines.py)
        self.on_tick(now)
        if self.pump is not None:
            self.pump()
        if self.sip_calls is not None:
            self.sip_calls.tick(now)
        if self.sip is not None and now - self._sip_expiry_ms >= 1000:
            self._sip_expiry_ms = now
            self.sip.handle_timer(now)
        self.meter.sample(now, self.bandwidth_owners)

    # SIP phones (docs/sip.md): datagrams of the SIP port, which the daemon holds apart

    def sip_wanted(self):
        """True while some extension served here has a SIP password (the daemon opens the port)."""
        return False

    def receive_sip(self, data, addr, now):
        self.now = now
        self.sip.receive_datagram(data, addr, now)

    def sip_datagrams_to_send(self):
        """[(bytes, address)] for the SIP port."""
        return self.sip.datagrams_to_send() if self.sip is not None else []

    def rtp_ports(self):
        """The local ports of SIP calls' RTP (the daemon opens them beside the SIP port)."""
        return self.sip_calls.rtp_wanted() if self.sip_calls is not None else set()

    def receive_rtp(self, port, data, addr, now):
        self.now = now
        self.sip_calls.rtp_in(port, data, addr, now)

    def rtp_datagrams_to_send(self):
        """[(bytes, address, local port)] of SIP calls' RTP."""
        if self.sip_calls is None:
            return []
        out, self.sip_calls.rtp_out = self.sip_calls.rtp_out, []
        return out

    def datagrams_to_send(self):
        """[(bytes, address, dscp)] queued since the last call, in order; relayed trunk frames and
        every peer's signalling are flushed into it first (they leave once the waiting input is handled)."""
        self.switch.flush_relayed()
        self.flush_signalling()
        out, self._out = self._out, []
        return out

    def status(self):
        raise NotImplementedError

    # output

    def send(self, data, address, voice=False):
        """Queue one datagram (copied: media comes from buffers reused frame after frame)."""
        self._out.append((bytes(data), address, DSCP_EF if voice else DSCP_CS3))
        counters = self.stats.counters
        key = "media out" if voice else "signalling out"
        counters[key] = counters.get(key, 0) + 1
        counters["bytes out"] = counters.get("bytes out", 0) + len(data)
        self.meter.add(address, len(data), True)

    def flush_signalling(self):
        """Every peer's queued signalling goes out, to the peer's current address."""
        for peer in self.peers.take_dirty():
            for datagram in peer.channel.datagrams_to_send(self.now):
                self.send(datagram, peer.address)
            self.peers.schedule(peer)

    def wall_ms(self, now):
        return now + self.wall_offset_ms

    def handshake(self, data, addr, now):
        """A HELLO or RESPONSE: the reply (a CHALLENGE) goes back to addr; the new peer once a
        login completes (the subclass attaches it), else None."""
        reply, peer = self.peers.handle_handshake(data, addr, now)
        if reply:
            self.send(reply, addr)
        return peer

    # call control both hosts share

    def count_message(self, msg_type):
        self.stats.count("msg " + wire.MESSAGE_NAMES.get(msg_type, "0x%02x" % msg_type))

    def refuse_setup(self, link, ies, cause, now, caller=None, extra=None, why=None):
        """RELEASE for a SETUP that made no call (no leg, no call number): the phone shows the cause. extra: more
        IEs for the RELEASE; why: what the log says instead of the cause's text."""
        release = {wire.IE_PEER_CALL_NO: ies.get(wire.IE_CALL_NO, 0) or 1, wire.IE_CAUSE: cause}
        release.update(extra or ())
        link.send_signal(wire.RELEASE, release, now)
        self.log.info("call-refused", caller=caller or ies.get(wire.IE_CALLING, link.name),
                      called=ies.get(wire.IE_CALLED), cause=why or wire.CAUSE_TEXT[cause])

    def call_message(self, link, msg_type, ies, now):
        """ALERTING, ANSWER, RELEASE or DTMF on one of link's legs: applied to the leg and its call,
        passed on to the other leg; a message for no leg of link, or out of turn, is dropped."""
        leg = self.switch.leg_for(ies, link, release=msg_type == wire.RELEASE)
        if leg is None:
            self.stats.drop("unknown call")
            return
        if leg.call.conference is not None:
            return self.conferences.message(leg, msg_type, ies, now)
        if self.groups.call_message(leg, msg_type, ies, now):   # a group call ringing, a page
            return
        passed = self.switch.pass_on(leg, msg_type, ies, now)
        if passed is None:
            self.stats.drop("message out of turn")
            return
        call = leg.call
        if passed == wire.RELEASE:
            self.end_call(call, call.cause, now)
            return
        if passed == wire.ANSWER:
            self.log.info("call-answered", call=call.uid, setup_ms=now - call.started_ms)
            if call.linked is not None:
                lines.answered(self, call, now)
        self.on_call_event(call, passed, now)

    def hold_message(self, link, ies, now):
        """HOLD from a phone (its host plays music on hold to the other party) or from a host on
        the way (the held party's voice stops at its first host): passed on towards the held
        party as far as the last host."""
        leg = self.switch.leg_for(ies, link)
        flag = ies.get(wire.IE_STATE)
        if leg is None:
            self.stats.drop("unknown call")
            return
        call = leg.call
        if call.conference is not None:
            return self.conferences.hold(leg, flag, now)
        if call.state == "answered" and (call.held_by is leg if flag == 1 else flag == 0 and call.held_by is None):
            # held (or not) already as it says: a client that switched says so of each of its calls (its node may
            # have died before the call's key said so: common/standby.py _answers)
            self.stats.count("hold states said again")
            return
        if call.state != "answered" or flag not in (0, 1) or (
                call.held_by is not None if flag else call.held_by is not leg):
            self.stats.drop("message out of turn")   # held already (by either side), or not held from here
            return
        self.set_held(call, leg if flag else None)
        other = other_leg(leg)
        if other is not None and other.link.kind != "phone":
            send_on_leg(other, wire.HOLD, {wire.IE_STATE: flag}, now)
        self.log.info("call-held" if flag else "call-resumed", call=call.uid, by=link.name)

    def set_held(self, call, leg):
        """call is held by leg's party (None: resumed); this host plays the music when that party is its own
        phone (or SIP), unless the call is a conference's at the main host (hold_message; a held call taken over
        after a node's loss, host/cluster/calls.py)."""
        call.held_by = leg
        if self.calls_changed is not None:   # the relay tables look at it at the next tick, not in a scan
            self.calls_changed.add(call)
        if leg is not None and (leg.link.kind == "phone" or getattr(leg.link, "sip", False)) and not call.mixed_at_main:
            self.held.add(call)
            call.moh_pos = 0
        else:
            self.held.discard(call)

    def conference_message(self, link, ies, now):
        """CONFERENCE from a phone of this host: its two calls become one conference (host/conference.py)."""
        self.conferences.join(link, ies, now)

    def play_music_on_hold(self, now):
        """One 20 ms frame of music on hold to every party a phone of this host holds."""
        for call in self.held:
            self.switch.music_on_hold(call, self.moh.frame(call.moh_pos), now)
            call.moh_pos += 1

    def release_calls(self, link, cause, now):
        """link is gone (logged out, expired, logged in again): its calls end, the other legs hear why. In a timer
        turn the relay table reads its socket between the calls (pump): a remote host with 2,000 calls took
        0.7 s of CPU to let go (docs/benchmarks.md, relay, Session 10)."""
        self.groups.link_gone(link, now)     # a group's member: the group call goes on without it
        pump = self.pump
        for call in self.switch.calls_of(link, pump):
            if pump is not None:
                pump()
            if call.conference is not None:   # the other parties carry on
                self.conferences.link_gone(call, link, cause, now)
                continue
            other = call.b if call.a.link is link else call.a
            if other is not None:
                self.switch.release(other, cause, now)
            self.end_call(call, cause, now)

    def end_call(self, call, cause, now, record=True):
        self.held.discard(call)
        self.groups.released_forks(call, cause, now)
        if not self.switch.end_call(call, cause, now):
            return
        if self.call_ending is not None:   # the main host's relay workers give back what they relayed of it
            self.call_ending(call)
        self.call_stats.call_ended(call, wire.CAUSE_TEXT.get(cause, str(cause)))
        self.log.info("call-ended", call=call.uid, cause=wire.CAUSE_TEXT.get(cause, cause), path=call.path,
                      frames=call.frames)
        if record:
            self.on_call_ended(call, cause, now)

    # for subclasses

    def on_start(self, now):
        pass

    def on_stop(self, now):
        pass

    def on_datagram(self, data, addr, now):
        raise NotImplementedError

    def on_tick(self, now):
        pass

    def on_call_event(self, call, msg_type, now):
        """After an ALERTING, ANSWER or DTMF was passed on from one leg of call to the other."""

    def on_call_ended(self, call, cause, now):
        """A call ended: the host keeps its record."""

    def media_through_here(self, call, now):
        """call is joined into another here (a transfer, a conference): its media must pass this
        host. The main host takes back a direct path between two remote hosts (B2); a remote host's
        phone-to-phone calls (B3) are given new keys by the joining code itself."""

    def bandwidth_owners(self):
        """{(host, port): (group names)} for the bandwidth meter."""
        return {}

