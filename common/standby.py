"""A phone's standby session at a cluster's node (docs/cluster.md "Failover" 2b, docs/handset.md).

A phone straight at a node logs in a second time, to the home node's successor
(cluster.successor: the remote hosts' choice, host/remote_host.py, so every client of a node fails
over to the same survivor, which then has both legs of their calls), and keeps that session alive.
When the session falls silent with the standby up, the standby becomes the session as it is: its
keys, no handshake; the call goes on, and the node hears which call it is (NODES, IE standby 0 and
IE peer_call_no) and takes it over from Redis (host/cluster/calls.py). common/cluster.py loads this
module only for a phone at a node with room for it; common/phone.py calls `run` for the standby's
datagrams and timers; firmware/standby.py sends the standby's datagrams and what `cluster_out` asks.

A phone whose rendezvous order starts with a node other than its home (a node joined ahead of it, or
its first node came back after a failover) moves there once idle, make before break, as a remote host
does (docs/cluster.md "A phone moves to its first node"): at a random moment between half
`Phone.rebalance_ms` and all of it, its standby session goes to that node (kept when it is there
already), and once it is up the phone switches to it as in a failover (no handshake) and logs its old
session out (BYE). A call starting meanwhile, or the login there not up within 10 s, puts the move off
(the standby back at the home's successor, the wait doubled, up to an hour).
"""
from .call import CALLING, CONNECTED, RELEASE_SENT
from .cluster import decode_nodes, identity, index_node, ranked, successor
from .compat import const, ticks_add, ticks_diff
from .login import Login, LoginUp

# message and IE numbers as wire_names has them (a handset does not load wire_names for them)
_PING = const(0x07)
_BYE = const(0x08)
_SETUP = const(0x10)
_RELEASE = const(0x14)
_NODES = const(0x73)
_IE_CALL_NO = const(0x10)
_IE_PEER_CALL_NO = const(0x11)
_IE_CAUSE = const(0x15)
_IE_STANDBY = const(0x38)
_CAUSE_UNREACHABLE = const(3)
_STANDBY_INDEX = const(0x10000)   # the standby login's index: the session's, this bit flipped
_CALL_KEEPALIVE_MS = const(500)   # in a call with a standby up: PING every 0.5 s, 1.5 s silence and it switches
_CALL_DEAD_MS = const(1000)
_IDLE_DEAD_MS = const(2000)       # idle with a standby up: the node's keepalive (WELCOME) + 2 s
_UNCONFIRMED_MS = const(10000)    # after a switch, the call's media comes back within this, else it ends (a
                                  # remote host's main_grace_s, 10 s: a busy survivor is not cut short)
_CAUSE_MAIN_LOST = const(0x12)
_MOVE_LOGIN_MS = const(10000)     # a move's standby login at the first node up within this, else put off
_MOVE_MAX_MS = const(3600000)     # a move put off again and again waits at most an hour
_LATER_MS = const(3000)           # after a switch with calls, the new standby waits this long (see switch)
_watch = {}                       # phone -> (call, due, its highest timestamp) after a switch: taken over?
_later = {}                       # phone -> when it takes its new standby after a switch with calls
_move = {}                        # phone -> [due, the first node's address, moves put off, login deadline or None]


def _out(phone, item):
    """Something for firmware/standby.py to do with the next datagrams."""
    if phone.cluster_out is None:
        phone.cluster_out = []
    phone.cluster_out.append(item)


def _wait(phone, now, tries):
    """When a move falls due: at random between half rebalance_ms and all of it, doubled per move put off."""
    span = phone.rebalance_ms << tries if tries < 8 else _MOVE_MAX_MS
    span = span if span < _MOVE_MAX_MS else _MOVE_MAX_MS
    return ticks_add(now, span // 2 + (span >> 9) * phone.random_bytes(1)[0])   # (no long ints on a handset)


def choose(phone, now, to=None):
    """The standby login: to the successor of the node the session is at (after a login), or to `to` (the
    first node of a move); a standby given up (the successor changed) is logged out (BYE, sent by the
    firmware at once). A move is due when the phone's rendezvous order starts with another node."""
    if _later and phone in _later:
        return                                                      # after a switch: tick chooses (switch)
    if phone.standby_keepalive_ms is None:
        phone.standby_keepalive_ms = phone.login.keepalive_ms      # the node's (WELCOME)
    nodes = _nodes(phone)
    home = phone._node_up
    first = ranked(identity("phone", phone.extension), list(nodes.items()))[0] if nodes and home else None
    if first is not None and first[0] != home and phone.rebalance_ms:
        entry = _move.get(phone)
        if entry is None or entry[1] != first[1]:
            _move[phone] = [_wait(phone, now, 0), first[1], 0, None]
    else:
        _move.pop(phone, None)
    want = to or (nodes.get(successor(home, list(nodes))) if home else None)
    old = phone.standby
    if old is not None and want == phone.standby_to:
        return
    if old is not None:
        if old.send(_BYE, {}, now):
            _out(phone, ("bye", phone.standby_to, old.datagrams_to_send(now)))
        phone.standby = None
    if want is None:
        return
    if phone.cluster_out is None:
        phone.cluster_out = []   # the firmware sends the standby's datagrams while it is a list
    login = phone.login
    standby = Login(login.identity_ie, login.identity, login.secret, login.local_index ^ _STANDBY_INDEX,
                    phone.random_bytes, keepalive_ms=phone.standby_keepalive_ms, backoff_initial_ms=1000,
                    backoff_max_ms=login.backoff_max_ms, dead_ms=_IDLE_DEAD_MS)
    phone.standby, phone.standby_to = standby, want
    standby.start(now)


def switch(phone, now):
    """The standby session becomes the phone's session, with its keys, no handshake; the node hears
    it is home now and the call numbers of its calls going on, the current one and the second line's
    (it takes them over from Redis, host/cluster/calls.py); a new standby goes to the new node's
    successor."""
    old, new = phone.login, phone.standby
    phone.login, phone.standby = new, None
    _out(phone, ("host", phone.standby_to))
    phone._node_up = index_node(new.channel.peer_index)
    ies = {_IE_STANDBY: 0}
    call = phone.call
    if call is not None and call.peer_call_no:
        ies[_IE_PEER_CALL_NO] = call.peer_call_no
    new.send(_NODES, ies, now)
    # what the old node never acknowledged of our calls is said again here, in order (the old session's channel, or
    # the one it lost as it fell silent: Login.lost): an ANSWER, a RELEASE, a DTMF or a HOLD the node keeps for the
    # call it takes over (host/cluster/calls.py defer), and a SETUP, a new call (docs/cluster.md "A call dialled as its
    # node dies")
    from .grace import restate, unacked   # (let go again: common/grace.py)
    setup = False
    for t, payload in unacked(old.channel or old.lost):
        new.channel.send_encoded(t, payload, now)
        setup = setup or t == _SETUP
    if call is not None and call.state == CALLING and not call.peer_call_no and not setup:
        # dialled, and the old node acknowledged the SETUP but never named the call (no number of its own for it
        # yet): nobody can carry it on; it ends "main host lost" now, not at the set-up timer
        call.apply(RELEASE_SENT)
        phone._end(_CAUSE_MAIN_LOST)
    call = phone.other   # the second line (waiting, or held by us): named too, in a NODES of its own
    if call is not None and call.peer_call_no:
        new.send(_NODES, {_IE_STANDBY: 0, _IE_PEER_CALL_NO: call.peer_call_no}, now)
    restate(phone, now)   # each answered call's ANSWER and HOLD (common/grace.py)
    phone.standby_to = None
    if phone.call is not None or phone.other is not None:
        # the new standby goes to the new home's successor, which may be the node we left, alive (a one-sided
        # switch): a login there would end our calls it still has (any login again does) before the node we
        # switched to has taken them over. So with calls it waits a little (tick)
        _later[phone] = ticks_add(now, _LATER_MS)
    else:
        choose(phone, now)
    old.take_events()
    # a call the node does not take over (its key missing, its other party not reachable from there) would stay
    # up in silence: its media must come back within _UNCONFIRMED_MS (tick), as a remote host's (unconfirmed).
    # Not while we hold it (the held party's voice stops at the host)
    call = phone.call
    _watch.pop(phone, None)
    if call is not None and call.state == CONNECTED and not phone.holding:
        _watch[phone] = (call, ticks_add(now, _UNCONFIRMED_MS), call.media.replay.highest)


def _moving(phone, now):
    """A move to the first node that is due (choose): made once the phone is idle (tick)."""
    entry = _move[phone]
    if ticks_diff(now, entry[0]) < 0:
        return
    if phone.call is not None or phone.other is not None:
        if entry[3] is not None:
            _put_off(phone, entry, now)   # a call started while the standby logged in there: it stays home
        return
    standby = phone.standby
    if entry[3] is None:
        entry[3] = ticks_add(now, _MOVE_LOGIN_MS)
        if phone.standby_to != entry[1]:
            choose(phone, now, entry[1])  # make: the standby logs in at the first node
        elif standby is not None:
            standby.send(_PING, {}, now)  # there already: it must answer now, not only have answered before
    elif (standby is not None and phone.standby_to == entry[1] and standby.state == "up"
          and ticks_diff(standby.last_heard_ms, ticks_add(entry[3], -_MOVE_LOGIN_MS)) >= 0):
        del _move[phone]
        old, home = phone.login, _nodes(phone).get(phone._node_up)
        switch(phone, now)                # break: no handshake, the first node is home (NODES standby 0)
        if home is not None and old.send(_BYE, {}, now):
            _out(phone, ("bye", home, old.datagrams_to_send(now)))
    elif ticks_diff(now, entry[3]) >= 0:
        _put_off(phone, entry, now)


def _put_off(phone, entry, now):
    entry[2] += 1
    entry[0], entry[3] = _wait(phone, now, entry[2]), None
    if phone.standby_to == entry[1]:
        choose(phone, now)                # back to the home's successor (it may be that node: kept)


def _nodes(phone):
    """{node id: address} of the nodes the phone's host last listed."""
    try:
        return dict(decode_nodes(phone.cluster_nodes))
    except ValueError:
        return {}


def run(phone, now, datagram=None):
    """The standby session's datagram (one with its index), or its timers (datagram None), from
    common/phone.py: kept alive; a SETUP on it is refused (the phone's calls go through its home
    node); the standby node naming our call (NODES standby 0) makes the phone switch to it; anything
    else but PING and ACK is dropped."""
    standby = phone.standby
    named = False
    if datagram is None:
        standby.handle_timer(now)
    else:
        for msg_type, ies in standby.receive(datagram, now):
            if msg_type == _SETUP:
                standby.send(_RELEASE, {_IE_PEER_CALL_NO: ies.get(_IE_CALL_NO, 1), _IE_CAUSE: _CAUSE_UNREACHABLE},
                             now)
            elif msg_type == _NODES and ies.get(_IE_STANDBY) == 0:
                # the standby node took our call over while our home node lives (a one-sided switch: the
                # call's other party switched there): the phone switches there now (docs/cluster.md)
                mine = ies.get(_IE_PEER_CALL_NO)
                named = mine is not None and any(c is not None and c.call_no == mine for c in (phone.call, phone.other))
            elif msg_type != _PING and msg_type != 0x06:   # ACK
                phone.dropped += 1
    for event in standby.take_events():
        if type(event) is LoginUp:
            standby.send(_NODES, {_IE_STANDBY: 1}, now)   # the node lists it as this phone's standby
    if named and standby.state == "up":
        switch(phone, now)


def _releasing(ch):
    """True while the channel has a RELEASE it has not had acknowledged."""
    for e in ch._unacked.values():
        if e[0] == _RELEASE:
            return True
    return False


def waiting(phone):
    """True while the phone has no standby yet after a switch (switch): firmware/standby.py ticks on."""
    return phone in _later


def tick(phone, now):
    """Before the phone's datagrams go out (firmware/standby.py): with the standby up, the session's
    silence is noticed within 1.5 s in a call (PING every 0.5 s), the node's keepalive + 2 s idle.
    A call switched to the standby node whose media does not come back within 10 s ends "main host
    lost" (switch)."""
    if _later and phone in _later and ticks_diff(now, _later[phone]) >= 0:
        del _later[phone]
        choose(phone, now)
    watch = _watch.get(phone) if _watch else None   # empty but for the seconds after a switch
    if watch is not None:
        call, due, highest = watch
        if phone.call is not call or call.media.replay.highest != highest or phone.holding:
            del _watch[phone]   # it ended, or its media came back (the node took it over), or we hold it
        elif ticks_diff(now, due) >= 0:
            del _watch[phone]
            if call.apply(RELEASE_SENT) is not None:
                phone._send(_RELEASE, {_IE_CAUSE: _CAUSE_MAIN_LOST}, now, call)
            phone._end(_CAUSE_MAIN_LOST)
    if _move and phone in _move:
        _moving(phone, now)
    login, standby = phone.login, phone.standby
    if standby is None:
        return
    ch = login.channel
    # in a call, or a call's end not yet acknowledged (its RELEASE is said again at a switch, which must come
    # before the other party's node gives the call up): (its standby not up: the grace period's login must meet
    # the call, cluster.py)
    if phone.call is not None or (ch is not None and _releasing(ch)):
        login.set_keepalive(_CALL_KEEPALIVE_MS, _CALL_DEAD_MS, now)
    else:
        login.set_keepalive(phone.standby_keepalive_ms, _IDLE_DEAD_MS if standby.state == "up" else login.dead_ms, now)
