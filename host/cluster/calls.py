"""Per-call state in Redis: one key per call, written as the call changes, with an expiry.

As rtpengine keeps each call in Redis for a standby to take over: the key
`upbx:call:UID` holds JSON of what a surviving node needs to carry the call on
(`Takeover` below does the taking over): the relaying node, the caller and callee,
the state and path, and each leg's link (remote host or phone), call numbers, role
and media key. Media keys are sealed with the cluster key from etcd (AES-GCM, the
call's uid and leg as associated data): a Redis dump or replica alone does not
give a call's audio away. A call direct between our site and another node's (B2,
host/cluster/direct.py) also holds its pair: the two remote hosts' names and, sealed
the same way (the uid and "xpair" as associated data), the pair key and the peer's
public address, so that a third node taking the half over can offer the pair again
on a B7 change.

A live call's key expires call_ttl_s after it was last written, and is written again
at half that, so a node that dies leaves no key forever; an ended call's key is kept
ended_ttl_s more, marked ended, then expires.
"""
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from upbx.common import wire
from upbx.common.call import ALERTING_SENT, ANSWER_SENT, CALLED, CONNECTED, RINGING, CallLeg
from upbx.host.cluster.direct import CrossPair
from upbx.host.switch import send_on_leg

KEY = "upbx:call:%s"
LEG_KEY = "upbx:leg:%s:%s:%d"   # a live leg's link kind, link name and call number -> its call's uid


def seal(cluster_key, media_key, aad):
    nonce = os.urandom(12)
    return (nonce + AESGCM(cluster_key).encrypt(nonce, bytes(media_key), aad)).hex()


def unseal(cluster_key, text, aad):
    """The media key from a sealed one (cryptography's InvalidTag when key or text is wrong)."""
    data = bytes.fromhex(text)
    return AESGCM(cluster_key).decrypt(data[:12], data[12:], aad)


def _leg(leg):
    link = leg.link
    return (link.kind, link.name, leg.call_no, leg.peer_call_no, leg.media.role if hasattr(leg, "media") else None,
            bytes(leg.media_key), leg.state)


def _pair(call):
    pair = call.xpair
    if pair is None or not pair.offered or pair.address is None:
        return None
    return (pair.host, pair.peer, bytes(pair.key), tuple(pair.address))


def _stored_legs(call):
    """(side, leg) of call's legs the key holds: both; a conference's call, only those that are its parties (the
    holder's leg of the held call was released when it joined, host/conference.py)."""
    conf = call.conference
    return [(side, leg) for side, leg in (("a", call.a), ("b", call.b))
            if leg is not None and (conf is None or conf.party(leg) is not None)]


def _conference(call, legs):
    """What the key says of the conference call is in: its uid, its holder's number, the sides that hold it, the
    uids of all its calls (a node that takes one over asks for the others: a one-sided switch)."""
    conf = call.conference
    if conf is None:
        return None
    return (conf.uid, conf.holder_name, tuple(side for side, leg in legs if conf.party(leg).held),
            tuple(sorted(c.uid for c in conf.calls)))


def fingerprint(call):
    """What of a call the key holds, as a tuple: the key is written again when it changes."""
    legs = _stored_legs(call)
    return (call.caller, call.callee, call.state, call.path, call.held_by is not None,
            tuple((side, _leg(leg)) for side, leg in legs), _pair(call), _conference(call, legs))


def seal_pair(cluster_key, uid, pair):
    """A direct call's pair in its key: the names in clear, the key and the peer's address sealed."""
    host, peer, key, address = pair
    secret = bytes((len(key),)) + key + ("%s:%d" % address).encode()   # the key's length first: any length
    return {"host": host, "peer": peer, "sealed": seal(cluster_key, secret, ("%s/xpair" % uid).encode())}


def unseal_pair(cluster_key, uid, value):
    """(host, peer, pair key, peer's address) from seal_pair's value."""
    secret = unseal(cluster_key, value["sealed"], ("%s/xpair" % uid).encode())
    n = secret[0]
    ip, port = secret[1 + n:].decode().rsplit(":", 1)
    return value["host"], value["peer"], secret[1:1 + n], (ip, int(port))


def call_value(call, node, cluster_key, now_wall_ms, ended=False):
    """The JSON text stored for a call."""
    uid = call.uid
    legs = {}
    stored = _stored_legs(call)
    guesses = call.ts_guess or {}
    for side, leg in stored:
        kind, name, call_no, peer_call_no, role, media_key, state = _leg(leg)
        ts = leg.media.replay.highest
        guess = guesses.get(leg)
        if guess is not None and ts == guess[0]:   # taken over, no frame from it since: the guess, carried on
            ts = guess[1] + max(0, now_wall_ms - guess[2])
        legs[side] = {"link": {"kind": kind, "name": name}, "call_no": call_no, "peer_call_no": peer_call_no,
                      "role": role, "state": state, "ts": ts,
                      "ts_out": call.ts_out[0 if side == "a" else 1],
                      "media_key": seal(cluster_key, media_key, ("%s/%s" % (uid, side)).encode())}
    value = {"uid": uid, "node": node, "caller": call.caller, "callee": call.callee,
             "state": "released" if ended else call.state, "path": call.path,
             "held": call.held_by is not None, "legs": legs, "ended": ended, "written_ms": now_wall_ms}
    if call.held_by is not None:   # the side whose party holds the call (its host plays the music)
        value["held_by"] = "a" if call.held_by is call.a else "b"
    pair = _pair(call)
    if pair is not None and not ended:
        value["xpair"] = seal_pair(cluster_key, uid, pair)
    conf = _conference(call, stored)
    if conf is not None and not ended:
        value["conference"] = {"uid": conf[0], "holder": conf[1], "held": list(conf[2]), "calls": list(conf[3])}
    if call.linked is not None:   # a call a transfer joined: the uid of the call it continues (its record's link)
        value["linked"] = call.linked
    return json.dumps(value, sort_keys=True)


def spliced_value(call, node, now_wall_ms, ended=False):
    """The key of the half that call spliced in (Call.spliced), as this node writes it: the node is ours, the call
    it went into named, no legs (nothing to take over: the legs are in our call's key). A node that was only stopped
    and runs again with its copy of that half then finds its key another node's: its ended write is refused
    (host/cluster/node.py ENDED_IF_OURS) and its record of the copy dropped (MainHost.records_settled), where
    PostgreSQL would have kept its record, written first, "unreachable"."""
    return json.dumps({"uid": call.spliced[0], "node": node, "spliced_into": call.uid, "caller": call.caller,
                       "callee": call.callee, "state": "released" if ended else call.state, "legs": {},
                       "ended": ended, "written_ms": now_wall_ms}, sort_keys=True)


class CallMirror:
    """Which calls' keys are stale: `changes(calls, now)` gives the writes that bring Redis up to date."""

    def __init__(self, node, cluster_key, call_ttl_s, ended_ttl_s):
        self.node = node
        self.cluster_key = cluster_key
        self.call_ttl_s = call_ttl_s
        self.ended_ttl_s = ended_ttl_s
        self.written = {}    # call id -> (fingerprint, when written in ms, the Call)

    def changes(self, calls, now_ms, wall_ms):
        """[(key, value, ttl_s)] for calls new, changed, due for rewriting, or ended since the last time."""
        out = []
        due = now_ms - self.call_ttl_s * 500
        for call_id, call in calls.items():
            print_ = fingerprint(call)
            had = self.written.get(call_id)
            if had is None or had[0] != print_ or had[1] <= due:
                out.append((KEY % call.uid, call_value(call, self.node, self.cluster_key, wall_ms), self.call_ttl_s))
                if call.spliced is not None:
                    out.append((KEY % call.spliced[0], spliced_value(call, self.node, wall_ms), self.call_ttl_s))
                for leg in (call.a, call.b):   # how a survivor finds the call from a frame's call number
                    if leg is not None:
                        out.append((LEG_KEY % (leg.link.kind, leg.link.name, leg.call_no), call.uid, self.call_ttl_s))
                self.written[call_id] = (print_, now_ms, call)
        for call_id in [c for c in self.written if c not in calls]:
            call = self.written.pop(call_id)[2]
            out.append((KEY % call.uid, call_value(call, self.node, self.cluster_key, wall_ms, ended=True),
                        self.ended_ttl_s))
            if call.spliced is not None:
                out.append((KEY % call.spliced[0], spliced_value(call, self.node, wall_ms, ended=True), self.ended_ttl_s))
        return out

    def uids(self):
        """The uids of the live calls whose keys are written (MainHost.records_settled)."""
        return {had[2].uid for had in self.written.values()}

    def rewrite_all(self):
        """Every live call's keys written again at the next changes() (a Redis failover: a replica promoted
        may lack the last writes its primary acknowledged)."""
        for call_id, (_print, when, call) in list(self.written.items()):
            self.written[call_id] = (None, when, call)

    def forget(self, writes):
        """Writes that did not reach Redis: made again next time."""
        for key, _value, _ttl in writes:
            for call_id, had in list(self.written.items()):
                if KEY % had[2].uid == key:
                    del self.written[call_id]


# Taking a call over (issue 16 item 3, docs/cluster.md "Failover")

WANT_MS = 10000          # a call number asked for this long and not found (or not adoptable) is given up
MAX_WANT = 4096          # call numbers asked for at once: a forged trunk frame (its tag cannot be checked
                         # before its calls are known) must not grow the list without bound
TS_SLACK_MS = 2000       # an adopted leg's replay window starts this far below the estimated timestamp


class Takeover:
    """A node's side of failover: a remote host whose node fell silent sends its calls' frames on its
    standby session, to this node; the call numbers this node does not have are looked up in Redis
    (ClusterService: `wanted()`, then `adopt()` of each key found) and the call is carried on here,
    with the same call numbers, media keys and state. Messages for such a call (a RELEASE) wait
    until it is adopted, then are handled as if they had just come."""

    def __init__(self, core, cluster_key):
        self.core = core
        self.cluster_key = cluster_key
        self.want = {}           # (link kind, link name, call no) -> (first asked ms, [(link, msg_type, ies)])
        self.held_want = {}      # (the lost node's link kind, name, call no) of our held legs -> first asked ms
                                 # (joined): apart, so that they never crowd out what switched clients ask for
        self.uid_want = {}       # call uid -> first asked ms: the other calls of a conference taken over here
        self.namers = {}         # a want's key -> the client's link that named it (moved): told when it is given up

    def _ask(self, link, call_no, now):
        switch = self.core.switch
        key = switch.key(link, call_no)
        if key in switch.legs or key in switch._ended:   # ours, or one that just ended here
            return None
        key = (link.kind, link.name, call_no)
        entry = self.want.get(key)
        if entry is None:
            if len(self.want) >= MAX_WANT:
                self.core.stats.drop("takeover: too many asked for")
                return None
            entry = self.want[key] = (now, [])
            self.core.stats.count("takeover: call numbers asked for")
        return entry

    def asked(self, link, call_no):
        """True while link's call_no is asked for: the switch gives it to no new leg (Switch.reserved), since
        a remote host's legs are numbered on its session alone and a lost node's may have it."""
        return (link.kind, link.name, call_no) in self.want

    def trunk(self, link, frame, now):
        """A trunk frame from a remote host: the call numbers in it this node does not know."""
        try:
            entries = wire.parse_trunk(frame)
        except wire.DecodeError:
            return
        for call_no, _ts, _start, _end in entries:
            self._ask(link, call_no, now)

    def moved(self, link, call_no, now):
        """A client that switched its session to this node (NODES, IE standby 0: a phone straight at a
        node, common/cluster.py; a remote host, for a call that sends no frame that would name it: a ringing,
        held or direct one) names its call going on: looked for as a trunk frame's would be (a phone's mini
        frames name no session, so they cannot say whose they are). A call given up (wanted) is ended at the
        client, "main host lost": a phone's would stay up in silence, a site's ringing one would ring on for its
        caller for good (its key never written: the lost node died within 20 ms of the SETUP)."""
        if self._ask(link, call_no, now) is not None and link.kind in ("phone", "host"):
            self.namers[(link.kind, link.name, call_no)] = link

    def joined(self, kind, name, call_no, now):
        """Our leg towards a lost node is held (host/cluster/trunk.py _lost): the lost node's call that has it is
        looked for under the lost node's name for our trunk (kind, name) and its call number. A call the lost node
        joined between two other nodes' clients (a transfer: both its legs on trunks) has no client of the lost
        node that would switch and name it: adopt() splices it here when we are the lower of the two nodes, and
        leaves every other call to its client's switch."""
        key = (kind, name, call_no)
        if key in self.held_want:
            return
        if len(self.held_want) >= MAX_WANT:
            self.core.stats.drop("takeover: too many held legs asked for")
            return
        self.held_want[key] = now
        self.core.stats.count("takeover: legs towards a lost node asked for")

    def defer(self, link, msg_type, ies, now, names=(wire.IE_PEER_CALL_NO,)):
        """True when a call message names a call number of ours we do not have: kept for after the
        call is adopted (or dropped with the want). A remote host's that switched here, or a phone's that logged
        in here in its grace period (common/grace.py: the RELEASE of a call its user hung up meanwhile).
        names: the IEs that hold our call numbers (a TRANSFER's and a CONFERENCE's name two calls): the message
        waits for the first we do not have, and handled then, for the next (it comes back here)."""
        if link.kind not in ("host", "phone"):
            return False
        for name in names:
            call_no = ies.get(name)
            entry = self._ask(link, call_no, now) if call_no else None
            if entry is None:
                continue
            if len(entry[1]) >= 16:   # a call's few messages (ANSWER, DTMF, HOLD, RELEASE): more is not a call's
                self.core.stats.drop("takeover: too many messages waiting")
                return True
            entry[1].append((link, msg_type, dict(ies)))
            return True
        return False

    def wanted(self, now):
        """The (kind, name, call no) asked for, after dropping those asked for too long ago."""
        for key in [k for k, (first, _m) in self.want.items() if now - first > WANT_MS]:
            del self.want[key]
            self.core.stats.count("takeover: not found")
            self._give_up(key, now)
        for key in [k for k in self.namers if k not in self.want]:
            del self.namers[key]   # taken over
        for key in [k for k, first in self.held_want.items() if now - first > WANT_MS]:
            del self.held_want[key]
        for uid in [u for u, first in self.uid_want.items() if now - first > WANT_MS]:
            del self.uid_want[uid]
        return set(self.want) | set(self.held_want)

    def _give_up(self, key, now):
        """A client's call it named to us (moved) that we did not take over: ended at the client, "main host lost"
        (RELEASE with our number for it, which the client knows its call by), as a remote host ends a call whose
        media does not come back after its switch. The client is still logged in on the link that named it."""
        link = self.namers.pop(key, None)
        if link is not None and self.core.links_by_name.get((link.kind, link.name)) is link:
            self.core.end_named_call(link, key[2], now)
            self.core.stats.count("takeover: phone's call ended, not found" if link.kind == "phone" else
                                  "takeover: site's call ended, not found")

    def _leg_from(self, leg, key, link, value, wall_ms, call):
        cl = CallLeg(leg["call_no"], key, leg["role"] or 0)
        cl.learn_peer(leg["peer_call_no"])
        cl.state = leg["state"]
        cl.link = link
        cl.call = call
        # timestamps carry on from where they were: the stored one plus the time since (a 16-bit
        # timestamp on the wire is extended from the window's highest, within 32 s of it)
        highest = leg.get("ts", -1)
        if highest is not None and highest >= 0:
            guess = highest + max(0, wall_ms - value.get("written_ms", wall_ms))
            cl.media.replay.highest = start = max(0, guess - TS_SLACK_MS)
            # the key we write before its first frame says the guess, not the window's start: each takeover
            # of a call would otherwise put its timestamp TS_SLACK_MS further behind, until (after about 16)
            # its frames fell outside the 32 s and were all rejected (call_value)
            if call.ts_guess is None:
                call.ts_guess = {}
            call.ts_guess[cl] = (start, guess, wall_ms)
        return cl

    def _name(self, cl, now, trunk=True):
        """A leg placed here that nothing else would name where it is, named there (NODES standby 0 with its numbers):
        - on a trunk (trunk True) to a node that holds its leg towards the lost one (host/cluster/trunk.py) until a
          message on our trunk names it: a ringing call sends none (since session 15), nor a call the lost node
          joined; that node moves the leg to our trunk (`claim`);
        - on a client's standby session here: the client stays at its home node, which lives (a one-sided switch,
          or a conference's other call asked for by its uid), and sends the call there. Its remote host moves the leg
          to this session and says so (NODES standby 1, MainHost._moved_here), and its home node then forgets its
          copy; a phone straight at a node switches to this session (common/standby.py run) and names its call."""
        core = self.core
        if not cl.peer_call_no:
            return
        if cl.link.kind == "node":
            if trunk and core.speaks(cl.link.node, "claim"):
                send_on_leg(cl, wire.NODES, {wire.IE_STANDBY: 0}, now)
        elif cl.link in getattr(core, "standby_links", ()):
            send_on_leg(cl, wire.NODES, {wire.IE_STANDBY: 0}, now)
            core.stats.count("takeover: legs named to a standby session")

    def _conference(self, call, value, legs, sides, now, wall_ms):
        """call was in a conference the lost node mixed: its legs of sides are parties again here
        (host/conference.py rebuild), and the mix goes on towards them on the timeline it was on (the stored
        timestamp sent plus the time since: a phone's replay window would drop a timeline started again)."""
        since = max(0, wall_ms - value.get("written_ms", wall_ms))
        for side in sides:
            i = 0 if side == "a" else 1
            call.ts_out[i] = max(call.ts_out[i], (legs[side].get("ts_out") or 0) + since)
        self.core.conferences.rebuild(call, value["conference"], sides, now)
        # its other calls: taken over here too when their keys say so (their clients' legs on their standby
        # sessions here, named to them: a one-sided switch; after a node's loss their clients name them anyway)
        for uid in value["conference"].get("calls") or ():
            if bytes.fromhex(uid) not in self.core.switch.calls and uid not in self.uid_want:
                if len(self.uid_want) >= MAX_WANT:
                    self.core.stats.drop("takeover: too many asked for")
                    break
                self.uid_want[uid] = now

    def _splice(self, value, legs, links, keys, now, wall_ms):
        """A lost node's half of a call between it and this node (host/cluster/trunk.py), its client now here:
        our leg towards the lost node (held) is replaced by the lost node's leg to that client, and the call
        is this node's alone."""
        core = self.core
        switch = core.switch
        ours_side = next(side for side, link in links.items() if link == "self")
        theirs_side = "b" if ours_side == "a" else "a"
        own = core.xnode.held_leg(legs[ours_side]["peer_call_no"])
        alive = own is None   # not held: that node lives, fallen silent towards its client alone (a one-sided switch)
        if alive:
            own = core.xnode.live_leg(legs[ours_side]["peer_call_no"], legs[ours_side]["call_no"])
        if own is None:
            return "no held leg %s here" % legs[ours_side]["peer_call_no"]
        call = own.call
        lost_node = None if alive else core.xnode.held[own.call_no][1]
        if alive:   # that node forgets its half, unheard and unrecorded (MainHost._taken_over_elsewhere)
            own.link.send_signal(wire.NODES, {wire.IE_STANDBY: 0, wire.IE_CALL_ID: bytes.fromhex(value["uid"])}, now)
        new = self._leg_from(legs[theirs_side], keys[theirs_side], links[theirs_side], value, wall_ms, call)
        # that half's key is ours from now on (CallMirror), and a node only stopped or cut off is told when its trunk is
        # up again (NodeTrunks._events): it forgets its copy unheard and unrecorded, as if told at once (alive, above)
        call.spliced = (value["uid"], lost_node)
        if all(leg["link"]["kind"] == "node" for leg in legs.values()):
            # a call the lost node joined between two other nodes' clients (a transfer), which that node recorded:
            # recorded here now as it would have (its uid, its parties, the call it continues), whichever side our
            # half had it on (our caller's leg may be a trunk's: MainHost.on_call_ended)
            call.record_here = True
            call.record_uid = value["uid"]
            call.linked = value.get("linked", call.linked)
            call.caller, call.callee = value["caller"], value["callee"]
        said = own.state   # what we said towards the lost node (before _forget_leg releases the leg)
        core.xnode.held.pop(own.call_no, None)
        switch._forget_leg(own, now)
        switch.place(new)
        if call.held_by is own:   # held by the lost node's client, now ours: we play it the music
            core.set_held(call, new)
        if call.a is own:
            call.a = new
            # the lost node was the caller's: it recorded the call, under its uid. Recorded here under that uid, so
            # that its own record, if it was only stalled and writes it when it runs again, is the same one
            if call.linked is None:
                call.record_uid = value["uid"]
        else:
            call.b = new
        # what we said towards the lost node while our leg was held (a ringing call answered here meanwhile)
        # went nowhere: said again on the leg that replaces it, the caller's (which had received the SETUP)
        if new.state == CALLED and said in (RINGING, CONNECTED) and new.apply(ALERTING_SENT) is not None:
            send_on_leg(new, wire.ALERTING, {}, now)
        if new.state == RINGING and said == CONNECTED and new.apply(ANSWER_SENT) is not None:
            send_on_leg(new, wire.ANSWER, {}, now)
        self._name(new, now)   # the lost node's joined call's leg to a third node, or a client's standby session
        core.xnode.carried += 1
        core.stats.count("calls taken over")
        core.stats.count("node trunk: calls carried on")
        core.log.info("call-taken-over", call=call.uid, node=value.get("node"), spliced=value["uid"],
                      caller=call.caller, callee=call.callee)
        if value.get("conference") and call.conference is None:
            # the lost node mixed it, our client its party: our half's two legs are parties here (the sides of
            # our half are the lost node's: the caller's leg is "a" at both)
            self._conference(call, value, legs, ("a", "b"), now, wall_ms)
        leg = legs[theirs_side]
        entry = self.want.pop((leg["link"]["kind"], leg["link"]["name"], leg["call_no"]), None)
        for link, msg_type, ies in (entry[1] if entry else ()):
            core._message(link, msg_type, ies, now)
        return None

    def _restore_pair(self, call, value, now):
        """A lost node's half of a call direct between its site and another node's (B2), adopted here with
        its leg on our trunk to that node: its pair as the key holds it, so that a B7 change of either site
        is offered again as that node would have (host/cluster/direct.py). That node is sent the pair
        again at once, naming its leg: a direct call sends it no frame, and its leg held towards the lost
        node moves to our trunk at the first message naming it (else it ends at the hold's end)."""
        core = self.core
        try:
            host, peer, key, address = unseal_pair(self.cluster_key, value["uid"], value["xpair"])
        except (InvalidTag, KeyError, TypeError, ValueError, IndexError):
            core.stats.drop("takeover: bad direct pair")
            return
        site = next((leg for leg in (call.a, call.b) if leg.link.kind == "host" and leg.link.name == host), None)
        trunk = next((leg for leg in (call.a, call.b) if leg.link.kind == "node"), None)
        if site is None or trunk is None or peer == host:
            core.stats.drop("takeover: bad direct pair")
            return
        core.pair_keys[frozenset((host, peer))] = key
        pair = call.xpair = CrossPair(host, peer, trunk.link, key, address)
        pair.offered = True
        trunk.link.send_signal(wire.PUNCH_OFFER, {wire.IE_HOST_NAME: peer, wire.IE_PEER_NAME: host,
                                                  wire.IE_ADDRESS: site.link.address, wire.IE_PEER_KEY: key,
                                                  wire.IE_PEER_CALL_NO: trunk.peer_call_no}, now)

    def adopt(self, value, now, wall_ms):
        """Carry on the call stored as value (the JSON object) here; the reason when it cannot be
        (yet: its other remote host may not have switched to this node), else None."""
        core = self.core
        switch = core.switch
        uid = value["uid"]
        call_id = bytes.fromhex(uid)
        legs = value.get("legs") or {}
        if value.get("ended"):
            return "ended"
        if sorted(legs) != ["a", "b"] and not (value.get("conference") and legs):
            return "not two legs"   # a conference's call keeps only its parties' legs: one may be left
        if call_id in switch.calls:
            self.uid_want.pop(uid, None)
            return "have it"
        named = [(leg["link"]["kind"], leg["link"]["name"], leg["call_no"]) for leg in legs.values()]
        if (any(key in self.held_want for key in named)
                and not any(key in self.want for key in named)
                and any(key[0] != "node" for key in named)):
            for key in named:   # asked for by a held leg only (joined): a client's call, its client's switch says
                self.held_want.pop(key, None)
            return "a client's call: taken over where its client switches"
        links = {}
        xnode = getattr(core, "xnode", None)
        for side, leg in legs.items():
            link = core.links_by_name.get((leg["link"]["kind"], leg["link"]["name"]))
            if link is None and xnode is not None:   # a half of a call between two nodes (host/cluster/trunk.py)
                link = xnode.link_for(leg["link"]["kind"], leg["link"]["name"])
            if link is None:
                return "waiting for %s %s" % (leg["link"]["kind"], leg["link"]["name"])
            if link != "self" and switch.key(link, leg["call_no"]) in switch.legs:
                return "call number %d in use here" % leg["call_no"]
            links[side] = link
        if len(legs) == 1 and any(link == "self" or link.kind == "node" for link in links.values()):
            return "a conference's party at another node: not carried on"
        keys = {side: unseal(self.cluster_key, leg["media_key"], ("%s/%s" % (uid, side)).encode())
                for side, leg in legs.items()}
        if all(key[0] == "node" for key in named):
            # a call the lost node joined between two other nodes' clients: the lower of the two nodes splices it
            # (joined), the other's held leg moves to its trunk when it is named there
            other = next((link for link in links.values() if link != "self"), None)
            if other is None or "self" not in links.values():
                return "not a half of ours"
            if other.node is not None and other.node < xnode.node_id:
                for key in named:
                    self.held_want.pop(key, None)
                return "node %d takes it over" % other.node
        if "self" in links.values():
            problem = self._splice(value, legs, links, keys, now, wall_ms)
            if problem is None:
                self.uid_want.pop(uid, None)
                for key in named:
                    self.held_want.pop(key, None)
            return problem
        call = switch.new_call(value["caller"], value["callee"], now, call_id)
        call.path = value.get("path", "relay")
        for side, leg in legs.items():
            cl = self._leg_from(leg, keys[side], links[side], value, wall_ms, call)
            switch.place(cl)
            setattr(call, side, cl)
        call.b2 = len(links) == 2 and all(link.kind == "host" for link in links.values()) and not value.get("conference")
        if value.get("held_by") in legs:   # held: the holder's resume (HOLD 0) is passed on, its host plays music
            core.set_held(call, getattr(call, value["held_by"]))
        if call.path == "direct":
            call.peered = True
            call.punch = {link.name: wire.PATH_DIRECT for link in links.values()}
        if call.state in ("alerting", "answered"):
            call.alerted_ms = now
        if call.state == "answered":
            call.answered_ms = now
        core.stats.count("calls taken over")
        core.log.info("call-taken-over", call=uid, node=value.get("node"), caller=call.caller, callee=call.callee,
                      path=call.path)
        if value.get("conference"):
            self._conference(call, value, legs, sorted(legs), now, wall_ms)
        if value.get("xpair") is not None:
            self._restore_pair(call, value, now)
        for cl in (call.a, call.b):   # (a conference's call may have one leg)
            if cl is not None:   # a direct call's trunk leg: its pair offer above names it
                self._name(cl, now, trunk=value.get("xpair") is None)
        for side, leg in legs.items():
            entry = self.want.pop((leg["link"]["kind"], leg["link"]["name"], leg["call_no"]), None)
            for link, msg_type, ies in (entry[1] if entry else ()):
                core._message(link, msg_type, ies, now)
        for key in named:
            self.held_want.pop(key, None)
        self.uid_want.pop(uid, None)
        return None
