"""Per-call state in Redis: one key per call, written as the call changes, with an expiry.

As rtpengine keeps each call in Redis for a standby to take over: the key
`upbx:call:UID` holds JSON of what a surviving node needs to carry the call on
(issue 16 item 3 does the taking over): the relaying node, the caller and callee,
the state and path, and each leg's link (remote host or phone), call numbers, role
and media key. Media keys are sealed with the cluster key from etcd (AES-GCM, the
call's uid and leg as associated data): a Redis dump or replica alone does not
give a call's audio away.

A live call's key expires call_ttl_s after it was last written, and is written again
at half that, so a node that dies leaves no key forever; an ended call's key is kept
ended_ttl_s more, marked ended, then expires.
"""
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY = "upbx:call:%s"


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


def fingerprint(call):
    """What of a call the key holds, as a tuple: the key is written again when it changes."""
    return (call.caller, call.callee, call.state, call.path, call.held_by is not None,
            _leg(call.a) if call.a is not None else None, _leg(call.b) if call.b is not None else None)


def call_value(call, node, cluster_key, now_wall_ms, ended=False):
    """The JSON text stored for a call."""
    uid = call.uid
    legs = {}
    for side, leg in (("a", call.a), ("b", call.b)):
        if leg is None:
            continue
        kind, name, call_no, peer_call_no, role, media_key, state = _leg(leg)
        legs[side] = {"link": {"kind": kind, "name": name}, "call_no": call_no, "peer_call_no": peer_call_no,
                      "role": role, "state": state,
                      "media_key": seal(cluster_key, media_key, ("%s/%s" % (uid, side)).encode())}
    return json.dumps({"uid": uid, "node": node, "caller": call.caller, "callee": call.callee,
                       "state": "released" if ended else call.state, "path": call.path,
                       "held": call.held_by is not None, "legs": legs, "ended": ended,
                       "written_ms": now_wall_ms}, sort_keys=True)


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
                self.written[call_id] = (print_, now_ms, call)
        for call_id in [c for c in self.written if c not in calls]:
            call = self.written.pop(call_id)[2]
            out.append((KEY % call.uid, call_value(call, self.node, self.cluster_key, wall_ms, ended=True),
                        self.ended_ttl_s))
        return out

    def forget(self, writes):
        """Writes that did not reach Redis: made again next time."""
        for key, _value, _ttl in writes:
            for call_id, had in list(self.written.items()):
                if KEY % had[2].uid == key:
                    del self.written[call_id]
