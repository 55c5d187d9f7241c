"""Conferences: a phone's two calls joined into one, mixed in G.711 by the phone's own host.

The host that switches a phone's calls (its site's remote host, or the main host for its own
phones) turns them into a conference when the phone sends CONFERENCE naming its active call and
its held one (docs/features.md, docs/protocol.md). The parties are legs of that host's switch:
the phone's leg of the active call, and the far leg of each call (the other party's phone on the
site, or the leg towards the main host or a direct peer host that carries the party's media).
The phone's leg of the held call is released to it (cause 16 "joined conference"); the calls stay
in the switch, each as long as one of its legs is a party, and are recorded as calls are.

Every 20 ms tick each party's next frame is taken from its own small playout queue (frames in
timestamp order, at most MAX_QUEUE deep: a late frame is dropped, an overfull queue loses its
oldest), decoded, summed, and each party is sent the sum minus its own frame, saturated to 16
bits and encoded again: every party hears the others and not itself. A party that holds the
conference (the phone that joined it, to dial one more; or any other, its HOLD coming on whatever
link leads to it: phone, remote host, main host, node trunk) is neither heard nor sent anything.

Leaving: a party that hangs up (or whose link goes) leaves, the rest carry on; two parties left
stay mixed (each hears the other); when one is left its leg is released (cause normal clearing).

Inter-site: when both of a site's phone's calls go through the main host (every other party is off
the site), its remote host does not mix but hands the conference to the main host: it sends the
same CONFERENCE on its own leg of the active call towards the main host, naming (conf_call_no)
the main host's leg of the held one. The main host joins its two calls with the site's leg of the
active call as the phone's party (`join` accepts a CONFERENCE from a remote host for two of its
own legs); the site's leg of the held call is released (cause 16, passed on to the phone), and the
phone's one call left carries the main host's mix: one stream each way over the site's uplink,
whatever the number of parties. The site's call is marked `mixed_at_main`: the phone's HOLD is
passed on to the main host (which leaves the party out of the mix) without music from the site.

A cluster's node that mixes a conference and is lost: each of the conference's calls is in Redis
with the conference's uid, its parties' legs and which of them hold (host/cluster/calls.py); the
node that takes a call over (Takeover.adopt) hands it to `rebuild`, which puts its legs back into
the conference of that uid, made again at the first of its calls (docs/cluster.md, "A conference
through the mixing node's loss"). A party whose call is never taken over is not waited for: a
rebuilt conference still alone after REBUILD_MS ends its last party's call "main host lost".
"""
import collections
import os
from array import array
from operator import sub

from upbx.common import wire
from upbx.common.g711 import ulaw_decode, ulaw_encode
from upbx.common.media import MediaLeg
from upbx.host.switch import KEEP_CN, KEEP_MS, other_leg, send_on_leg

MAX_QUEUE = 3          # frames a party's playout queue keeps (60 ms); more: the oldest goes
SILENCE = bytes(wire.VOICE_BYTES * 2)
HOLD_FROM = ("phone", "host", "main", "node")   # links a party's HOLD comes on (a SIP or voicemail leg: none)
REBUILD_MS = 10000     # a conference rebuilt after its node's loss waits this long for a second party


def mix(frames):
    """The frame each party hears: frames are the parties' mu-law frames of this tick (None:
    nothing from that party, or not heard); each gets the sum of the others, saturated."""
    pcm = [None if f is None else array("h", ulaw_decode(f)) for f in frames]
    present = [p for p in pcm if p is not None]
    if not present:
        total = array("h", SILENCE)
    elif len(present) == 1:
        total = present[0]
    else:
        total = list(map(sum, zip(*present)))
    out = []
    for own in pcm:
        if own is None:
            heard = total
        else:
            heard = list(map(sub, total, own))
        if max(heard) > 32767 or min(heard) < -32768:   # saturate (rarely needed: checked at C speed first)
            heard = [32767 if v > 32767 else -32768 if v < -32768 else v for v in heard]
        out.append(ulaw_encode(array("h", heard).tobytes()))
    return out


class Party:
    """One leg of the conference: its playout queue, whether its phone holds the conference."""

    __slots__ = ("leg", "queue", "last_ts", "held", "started")

    def __init__(self, leg):
        self.leg = leg
        self.queue = collections.deque()   # (ts, payload), oldest first
        self.last_ts = -1                 # the newest timestamp taken in (older frames are late)
        self.held = False
        self.started = False              # a frame came: from now on silence is an underrun

    @property
    def name(self):
        leg = self.leg
        if leg.link.kind == "phone":
            return leg.link.name
        return leg.call.caller if leg is leg.call.a else leg.call.callee


class Conference:
    """The parties of one conference at this host and the mixing of one tick."""

    def __init__(self, number, holder, uid=None, holder_name=None):
        self.id = number                   # this host's count of conferences, for the logs and status
        self.uid = uid or os.urandom(8).hex()   # the cluster's name of it, in its calls' keys (rebuild)
        self.holder = holder               # the phone link that joined it (a remote host's: it handed it over;
                                           # None when rebuilt after its node's loss)
        self.holder_name = holder.name if holder is not None else holder_name
                                           # the phone's number (the party's, when a remote host handed it over)
        self.parties = []
        self.calls = set()                 # the switch's calls one of whose legs is a party
        self.ticks = 0
        self.rebuilt_ms = None             # rebuilt here after its node's loss: when (rebuild), until REBUILD_MS on

    def party(self, leg):
        for p in self.parties:
            if p.leg is leg:
                return p
        return None

    def receive(self, leg, ts, payload, stats):
        """A media frame from a party's leg: into its playout queue, in timestamp order."""
        p = self.party(leg)
        if p is None or p.held:
            stats.drop("conference media not mixed")
            return
        if ts <= p.last_ts:
            stats.drop("conference frame late")
            return
        p.last_ts = ts
        p.started = True
        p.queue.append((ts, payload))
        if len(p.queue) > MAX_QUEUE:
            p.queue.popleft()
            stats.drop("conference queue overrun")

    def tick(self, switch, now, stats):
        """One 20 ms frame of the mix to every party that is not holding."""
        self.ticks += 1
        frames = []
        for p in self.parties:
            frame = None
            if p.queue:
                frame = p.queue.popleft()[1]
                if len(frame) != wire.VOICE_BYTES:
                    frame = None           # comfort noise (silence suppression): silence here
            elif p.started and not p.held:
                stats.count("conference underruns")
            frames.append(None if p.held else frame)
        mixed = mix(frames)
        for p, payload in zip(self.parties, mixed):
            leg = p.leg
            if not leg.peer_call_no:
                continue
            call = leg.call
            i = 0 if leg is call.a else 1
            ts = max(call.ts_out[i] + 20, (now - (call.answered_ms or now)) // 20 * 20)
            if p.held:   # it hears nothing but comfort noise each second, which keeps its replay window within reach
                if ts - call.ts_out[i] < KEEP_MS:   # of the mix after the resume (Switch.forward, docs/features.md)
                    continue
                payload = KEEP_CN
                stats.count("hold keepalives")
            call.ts_out[i] = ts
            switch.send_media(leg, ts, payload)
        stats.count("conference frames mixed", len(self.parties))

    def as_dict(self):
        return {"id": self.id, "uid": self.uid, "holder": self.holder_name, "parties": [p.name for p in self.parties],
                "held": [p.name for p in self.parties if p.held], "ticks": self.ticks}


class Conferences:
    """A host's conferences: CONFERENCE from its phones, the mixing tick, parties leaving.

    The host core calls join() for a CONFERENCE, tick() every 20 ms, and hands what concerns a
    leg of a conference call to message(), hold() and link_gone(); the switch hands it the media
    (Switch.forward -> Call.conference.receive)."""

    def __init__(self, core, max_parties=5):
        self.core = core
        self.max_parties = max_parties
        self.active = []
        self.made = 0

    @property
    def switch(self):
        return self.core.switch

    def _reply(self, leg, joined, now):
        send_on_leg(leg, wire.CONFERENCE, {wire.IE_STATE: 1 if joined else 0}, now)

    def _refuse(self, leg, reason, now):
        self.core.stats.drop("conference refused: " + reason)
        self.core.log.info("conference-refused", phone=leg.link.name, reason=reason)
        self._reply(leg, False, now)

    def join(self, link, ies, now):
        """CONFERENCE from one of this host's phones: its active call and its held one become one
        conference (or the held one joins the conference the active one is, or the other way)."""
        core = self.core
        active = self.switch.leg_for(ies, link)
        if active is None or link.kind not in ("phone", "host"):
            core.stats.drop("unknown call")
            return
        held = self.switch.leg(link, ies.get(wire.IE_CONF_CALL_NO))
        if held is None or held is active:
            return self._refuse(active, "no other call", now)
        if active.call.state != "answered" or held.call.state != "answered":
            return self._refuse(active, "calls not answered", now)
        far_active, far_held = other_leg(active), other_leg(held)
        if (link.kind == "phone" and far_active is not None and far_held is not None
                and far_active.link is far_held.link and far_active.link.kind == "main"
                and far_active.direct is None and far_held.direct is None and far_held.peer_call_no
                and active.call.conference is None and held.call.conference is None):
            return self._hand_over(active, far_active, far_held, now)
        confs = {c for c in (active.call.conference, held.call.conference) if c is not None}
        if len(confs) > 1:
            return self._refuse(active, "two conferences", now)
        if confs:
            conf = confs.pop()
        else:
            self.made += 1
            conf = Conference(self.made, link)
            if link.kind == "host":
                conf.holder_name = Party(active).name
        parties = [p.leg for p in conf.parties if p.leg is not held]
        new_calls = [c for c in (active.call, held.call) if c.conference is None]
        for call in new_calls:
            far = other_leg(held if call is held.call else active)
            if far is not None and far not in parties:
                parties.append(far)
        if active not in parties:
            parties.append(active)
        if len(parties) > self.max_parties:
            return self._refuse(active, "full (%d parties)" % self.max_parties, now)
        for call in new_calls:
            core.media_through_here(call, now)     # a direct path between two remote hosts comes back here
            self._unhold(call, now)
            call.conference = conf
            call.noanswer = None
            conf.calls.add(call)
        old = {p.leg: p for p in conf.parties}
        conf.parties = [old.get(leg) or Party(leg) for leg in parties]
        if conf not in self.active:
            self.active.append(conf)
        self._reply(active, True, now)
        self.switch.release_leg(held, wire.CAUSE_CONFERENCE, now)
        for leg in parties:   # B3: phones that sent to each other send to the host again, with a new key
            if leg.link.kind == "phone" and leg.call.path == "local":   # (MEDIA_PEER without an address)
                key = os.urandom(16)
                leg.media = MediaLeg(key, 1, leg.call_no, leg.peer_call_no)
                leg.link.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: leg.peer_call_no,
                                                       wire.IE_CALL_NO: leg.call_no, wire.IE_MEDIA_KEY: key,
                                                       wire.IE_ROLE: 0}, now)
        core.stats.count("conference joins")
        core.log.info("conference", id=conf.id, by=link.name, parties=[p.name for p in conf.parties])

    def _hand_over(self, active, far_active, far_held, now):
        """Every other party is off the site: the main host mixes (see the module's docstring)."""
        active.call.mixed_at_main = True
        send_on_leg(far_active, wire.CONFERENCE, {wire.IE_CONF_CALL_NO: far_held.peer_call_no}, now)
        self.core.stats.count("conferences handed to the main host")
        self.core.log.info("conference-handed-over", phone=active.link.name)

    def answer_from_main(self, ies, now):
        """The main host's CONFERENCE answer to a conference handed to it: passed on to the phone."""
        leg = self.switch.leg_for(ies, self.core.main_link)
        other = other_leg(leg) if leg is not None else None
        if other is None or other.link.kind != "phone":
            self.core.stats.drop("unknown call")
            return
        if not ies.get(wire.IE_STATE):
            leg.call.mixed_at_main = False     # refused: the site's calls stay as they were
        send_on_leg(other, wire.CONFERENCE, {wire.IE_STATE: ies.get(wire.IE_STATE, 0)}, now)

    def _unhold(self, call, now):
        """A call that was held joins: the music stops, the hosts along it pass media again."""
        holder = call.held_by
        if holder is None:
            return
        call.held_by = None
        self.core.held.discard(call)
        other = other_leg(holder)
        if other is not None and other.link.kind != "phone":
            send_on_leg(other, wire.HOLD, {wire.IE_STATE: 0}, now)

    def tick(self, now):
        stats = self.core.stats
        for conf in list(self.active):
            if conf.rebuilt_ms is not None and now - conf.rebuilt_ms >= REBUILD_MS:
                conf.rebuilt_ms = None
                if len(conf.parties) == 1:   # nobody else came back: the party alone is not kept in silence
                    self.core.stats.count("conferences rebuilt alone")
                    self.leave(conf.parties[0].leg, wire.CAUSE_MAIN_LOST, now)
                    continue
            conf.tick(self.switch, now, stats)

    def rebuild(self, call, stored, sides, now):
        """call, of a conference a lost node mixed, is taken over here (host/cluster/calls.py Takeover.adopt):
        its legs of sides ("a", "b") are parties again, of the conference stored names (its uid), made again
        here at the first of its calls to come; a party that held the conference (stored "held") still holds it."""
        uid = stored.get("uid")
        conf = next((c for c in self.active if c.uid == uid), None)
        if conf is None:
            self.made += 1
            conf = Conference(self.made, None, uid=uid, holder_name=stored.get("holder"))
            conf.rebuilt_ms = now
            self.active.append(conf)
            self.core.stats.count("conferences rebuilt")
        held = stored.get("held") or ()
        for side in sides:
            leg = getattr(call, side)
            if leg is None or conf.party(leg) is not None:
                continue
            party = Party(leg)
            party.held = side in held
            conf.parties.append(party)
        call.conference = conf
        call.noanswer = None
        conf.calls.add(call)
        self.core.log.info("conference-rebuilt", id=conf.id, uid=uid, parties=[p.name for p in conf.parties])
        return conf

    def hold(self, leg, flag, now):
        """HOLD on a conference leg: that party is neither heard nor sent the mix (the phone that
        joined the conference holds it to dial one more party). It comes from the party's phone or
        from the host on the way to it: a remote host, the main host, another node (whose phone's
        own host plays its music towards the mixer, which is dropped here, not mixed in)."""
        conf = leg.call.conference
        p = conf.party(leg)
        if p is not None and flag in (0, 1) and p.held == bool(flag) and leg.link.kind in HOLD_FROM:
            self.core.stats.count("hold states said again")   # as it was: a client that switched says so
            return
        if p is None or flag not in (0, 1) or leg.link.kind not in HOLD_FROM:
            self.core.stats.drop("message out of turn")
            return
        p.held = bool(flag)
        p.queue.clear()
        self.core.log.info("conference-held" if flag else "conference-resumed", id=conf.id, by=leg.link.name)

    def message(self, leg, msg_type, ies, now):
        """A call message on a conference leg: RELEASE takes the party out; the rest is dropped."""
        if msg_type != wire.RELEASE:
            self.core.stats.drop("message out of turn")
            return
        self.leave(leg, ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL), now, released=True)

    def link_gone(self, call, link, cause, now):
        """link is gone (a phone unregistered, the main host unreachable): its legs of call leave."""
        for leg in (call.a, call.b):
            if leg is not None and leg.link is link:
                self.leave(leg, cause, now, released=True)

    def leave(self, leg, cause, now, released=False):
        """A party leaves: its leg goes (a RELEASE is sent unless it came from there)."""
        call = leg.call
        conf = call.conference
        p = conf.party(leg) if conf is not None else None
        self.switch.release_leg(leg, cause, now, send=not released)
        if p is not None:
            conf.parties.remove(p)
            self.core.log.info("conference-left", id=conf.id, party=p.name, cause=wire.CAUSE_TEXT.get(cause, cause))
        if not any(q.leg.call is call for q in conf.parties):
            conf.calls.discard(call)
            self.core.end_call(call, cause, now)
        if len(conf.parties) == 1:
            last = conf.parties[0]
            self.leave(last.leg, wire.CAUSE_NORMAL, now)
        elif not conf.parties and conf in self.active:
            self.active.remove(conf)
            for other in list(conf.calls):
                self.core.end_call(other, cause, now)
            conf.calls.clear()
            self.core.log.info("conference-ended", id=conf.id)

    def forget(self, call):
        """call is another node's now (a one-sided switch: host/main_host.py _taken_over_elsewhere): its parties
        leave unheard, no RELEASE (their legs are that node's); a conference left with no party goes."""
        conf = call.conference
        conf.parties = [p for p in conf.parties if p.leg.call is not call]
        conf.calls.discard(call)
        call.conference = None
        if not conf.parties and conf in self.active:
            self.active.remove(conf)
            self.core.log.info("conference-ended", id=conf.id, why="taken over by another node")

    def trunked_parties(self):
        """Parties whose mixed stream goes to another host (B5: each costs the uplink a call)."""
        return sum(1 for conf in self.active for p in conf.parties if p.leg.link.trunked)

    def status(self):
        return [conf.as_dict() for conf in self.active]
