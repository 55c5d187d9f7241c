"""The grace period of a phone straight at a cluster's node with no standby session up (docs/cluster.md "Failover"
2b, "The grace period of a phone without a standby").

A phone with a standby up switches to it when its node falls silent (common/standby.py). One without (too little
heap for one: the 100K `.mpy` build; or its standby not up yet) keeps its calls when its session is lost: its next
login goes to the lost node's successor, where its calls' other parties switch (every client of a node fails over to
the same survivor), and once up there it names them (NODES standby 0 with the node's number for each, as a switch
does). That node takes them over from Redis, or ends them "main host lost" if it cannot within 10 s
(host/cluster/calls.py). That login not answered either (4 HELLOs), the calls end "main host lost".

The node waits for a call's parties 10 s after the first named it, so the loss must be noticed within a few
seconds, not the node's keepalive (20 s) later: a phone at a node without room for a standby keeps its session
alive every 2 s, not at the node's 20 s, and counts 2 s of silence after that as its loss (common/cluster.py), as a
phone behind a remote host does on its LAN. A phone with a standby keeps it alive every 0.5 s in a call, up or not
(common/standby.py).

Loaded only then, by common/cluster.py at a login event with a call (`lost`, `name`), and at a standby's switch
(common/standby.py: `unacked`, `restate`), and let go at once: a phone without room for a standby has a few
kilobytes to spare.
"""
from .call import CALLING, CONNECTED, RELEASE_SENT
from .compat import const, forget

_NODES = const(0x73)
_IE_STANDBY = const(0x38)
_IE_PEER_CALL_NO = const(0x11)
_CAUSE_MAIN_LOST = const(0x12)
_RELEASE = const(0x14)
_IE_CALL_NO = const(0x10)
_IE_CAUSE = const(0x15)
_CAUSE_NORMAL = const(0)
_SETUP = const(0x10)
_ANSWER = const(0x13)
_HOLD = const(0x18)
_IE_STATE = const(0x25)
# SETUP ALERTING ANSWER RELEASE DTMF HOLD TRANSFER CONFERENCE: said again at the next node (unacked)
_SAID_AGAIN = (_SETUP, 0x12, _ANSWER, _RELEASE, 0x16, _HOLD, 0x19, 0x1C)


def lost(phone, event, order, ids, successor):
    """The phone's session at a node is lost with a call (common/cluster.py phone_event; order: the nodes in its
    rendezvous order, ids their ids). True: the grace period begins, the calls stay and the LoginDown is passed on
    (the firmware sends the next login to host_next, the lost node's successor). False: the grace period's login
    was not answered either, and its calls have ended "main host lost"; or there is none (a node alone), and
    common/phone.py ends the calls as without a cluster. The next login then goes as it would (common/cluster.py).

    A call being dialled has no number of the node's to name it by. Its SETUP, if the lost session never had it
    acknowledged, is said again at the successor, where the call is set up anew (as at a standby's switch,
    docs/cluster.md "A call dialled as its node dies"); one the node acknowledged but never named ends "main host
    lost" now. The lost session's other call messages not acknowledged (an ANSWER, a HOLD, a RELEASE...) are said
    again there too, after the calls are named."""
    forget("common.grace")
    home = phone._node_up
    login = phone.login
    ch = getattr(login, "lost", None)   # the lost session's channel (common/login.py): read here, then let go
    login.lost = None
    if getattr(phone, "grace", 0):
        from .call import TIMEOUT
        phone.grace = False
        while phone.call is not None:
            phone.call.apply(TIMEOUT)
            phone._end(_CAUSE_MAIN_LOST)
        return False
    if home is None or len(ids) < 2:
        return False   # common/phone.py ends them "unreachable", as without a cluster
    said = unacked(ch)
    setups = [_call_no(e[1]) for e in said if e[0] == _SETUP]
    call = phone.call
    if call is not None and call.state == CALLING and not call.peer_call_no and call.call_no not in setups:
        call.apply(RELEASE_SENT)   # acknowledged, never named: nobody can carry it on
        phone._end(_CAUSE_MAIN_LOST)
    call, other = phone.call, phone.other
    if call is None or not (call.peer_call_no or call.call_no in setups) or (other is not None and not other.peer_call_no):
        return False   # nothing left to carry on, or nothing to name a call by: common/phone.py ends it as before
    phone.grace = ([(c.call_no, c.peer_call_no) for c in (call, other) if c is not None and c.peer_call_no], said)
    phone._events.append(event)
    nxt = successor(home, ids)
    phone._node_up = None
    phone._node_tried = nxt
    phone.host_next = order[ids.index(nxt)][1]
    return True


def unacked(ch):
    """[(type, encoded IEs)] of the call messages channel ch (None: none) never had acknowledged, in order: said
    again at the next node (here, and at a standby's switch: common/standby.py)."""
    forget("common.grace")
    said = []
    if ch is not None:
        for seq in sorted(ch._unacked):
            said.append(ch._unacked[seq][:2])
        said.extend(ch._queue)
    return [e for e in said if e[0] in _SAID_AGAIN]


def restate(phone, now):
    """Each call we answered says its ANSWER again, and each answered call whether we hold it (HOLD), acknowledged
    or not: the lost node may have died before the call's key said so (written every 20 ms), and the node taking
    the call over would have it ringing, or held as it was before. One that has it so already drops it quietly
    (host/main_host.py call_message, host/core.py hold_message). After `name`, and at a standby's switch."""
    forget("common.grace")
    for call in (phone.call, phone.other):
        if call is not None and call.state == CONNECTED and call.peer_call_no:
            if call.media.role:
                phone._send(_ANSWER, {}, now, call)
            phone._send(_HOLD, {_IE_STATE: 1 if call is phone.other or phone.holding else 0}, now, call)


def _call_no(payload):
    from .wire import decode_ies
    return decode_ies(payload).get(_IE_CALL_NO)


def name(phone, now):
    """The grace period's login is up: the calls kept are named to this node (common/cluster.py phone_event), then
    what the lost session never had acknowledged is said again, in order: a SETUP sets its call up here, the other
    messages the node keeps for the call it takes over (host/cluster/calls.py Takeover.defer). A call its user hung
    up meanwhile is named too, then released: its RELEASE had no session to go on, and the node, taking the call
    over, passes it on to the other party, who would otherwise hear silence until its own watch ended the call
    "main host lost"."""
    forget("common.grace")
    (kept, said), phone.grace = phone.grace, False
    live = [c.call_no for c in (phone.call, phone.other) if c is not None]
    released = [_call_no(payload) for t, payload in said if t == _RELEASE]
    login = phone.login
    for ours, theirs in kept:
        login.send(_NODES, {_IE_STANDBY: 0, _IE_PEER_CALL_NO: theirs}, now)
        if ours not in live and ours not in released:
            login.send(_RELEASE, {_IE_CALL_NO: ours, _IE_PEER_CALL_NO: theirs, _IE_CAUSE: _CAUSE_NORMAL}, now)
    for t, payload in said:
        if t != _SETUP or _call_no(payload) in live:   # (a call dialled then given up meanwhile: not set up)
            login.channel.send_encoded(t, payload, now)
    restate(phone, now)
