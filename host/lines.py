"""A phone's second line on the hosts: call waiting and transfer (docs/features.md).

    busy(calls, settings)                    does one more call to this phone get "busy"?
    transfer(host, link, ies, now)           TRANSFER from a phone registered at host
    party(host, link, ies, now)              PARTY from a host along a call: passed on
    answered(host, call, now)                a call joined by a blind transfer was answered
    recall(host, now)                        the tick: a blind transfer not answered in time rings back

A transfer is done by the host the transferring phone is registered at, which switches both
of that phone's calls: the far leg of the held call (y1, towards the party that stays) and the
far leg of the other call (y2, towards the new party, ringing or answered) become one new call,
the phone's own two legs are released with cause 12 "transferred", and both far ends are told
who they talk to now (PARTY, passed along by every host on the way). When both far legs go the
same way (a remote host's through the main host, a cluster node's over the trunk to one other node)
the host there joins them instead (`_hand_over`). The two calls that ended
are recorded with cause "transferred" as any call is; the new call's record names the call it
continues (`linked`, the first call of a chain of transfers): item 10 of issue 12.

A blind transfer the new party does not answer within `transfer_recall_s` (the joining host's
configuration) is recalled: the new party stops ringing ("no answer") and the transferring phone
rings again with the party that stayed, its caller id naming the recall ("recall: 201 no
answer"); a recall not answered within the same time ends the call ("no answer").
"""
import copy
import os

from upbx.common import wire
from upbx.common.call import CALLING, CONNECTED, RINGBACK
from upbx.common.media import MediaLeg
from upbx.host.switch import other_leg, send_on_leg


def busy(calls, settings):
    """Whether a phone in `calls` (its host's Call objects) is busy for one more: it has two calls,
    or call waiting is off, or it forwards on busy (the forward is what its user asked for), or
    its one call is not answered yet (a phone that dials out or rings is not offered a second)."""
    if not calls:
        return False
    if len(calls) > 1 or not settings.get("waiting", True) or settings.get("busy") is not None:
        return True
    return calls[0].state != "answered"


def _number(call, leg):
    """The number at the far end of leg in call (the caller for leg a, the callee for leg b)."""
    return call.caller if leg is call.a else call.callee


def _name(host, number):
    """An extension's name as this host knows it ("" when it does not)."""
    directory = getattr(host, "directory", None)
    if directory is not None:
        ext = directory.extension(number)
        return ext.name if ext is not None else ""
    return (host.cache.extension(number) or {}).get("name", "")


def _last_ts(call, leg):
    """The last media timestamp call sent towards leg (0: none)."""
    return call.ts_out[0 if leg is call.a else 1]


def _phone(link):
    """A phone's link: a handset's, or a SIP phone's (host/sip/calls.py, whose REFER comes here)."""
    return link.kind == "phone" or getattr(link, "sip", False)


def transfer(host, link, ies, now):
    """A phone of host joins the far ends of two of its calls: ies name the held one (call_no,
    peer_call_no) and join_call_no our leg of the other. Anything out of turn is dropped, counted.
    Returns True when joined here, "handed" when handed on (_hand_over), None when dropped. The TRANSFER
    of a remote host or a node handing its phone's over names two legs of its own (a node's may be on
    the two trunk sessions between us: IE state 1, docs/protocol.md)."""
    switch = host.switch
    x1 = switch.leg_for(ies, link)
    # a node's hand-over (_hand_over): its other call may run on the other trunk session between us
    other = host.xnode.other_session(link) if link.kind == "node" and ies.get(wire.IE_STATE) == 1 else link
    x2 = switch.leg(other, ies.get(wire.IE_JOIN_CALL_NO)) if other is not None else None
    if not (_phone(link) or link.kind in ("host", "node")) or x1 is None or x2 is None or x2.call is x1.call:
        host.stats.drop("bad transfer")
        return
    c1, c2 = x1.call, x2.call
    y1, y2 = other_leg(x1), other_leg(x2)
    if (y1 is None or y2 is None or x1.state != CONNECTED or y1.state != CONNECTED
            or c1.held_by is y1 or c2.held_by is y2
            or not (y2.state == CONNECTED or (y2 is c2.b and y2.state in (CALLING, RINGBACK)))):
        host.stats.drop("message out of turn")
        return
    stays, new = _number(c1, y1), _number(c2, y2)
    if link.kind != "node" and _joined_further(y1, y2) and (y1.link.kind != "node" or host.speaks(y1.link.node, "transfer")):
        _hand_over(host, link, c1, c2, y1, y2, stays, new, now)
        return "handed"
    for c in (c1, c2):                           # a direct path between two remote hosts comes back here
        host.media_through_here(c, now)
    back = link.name if _phone(link) else _number(c1, x1)   # the transferring phone's number
    hold_sent = [c.held_by is x and y.link.kind != "phone" for c, x, y in ((c1, x1, y1), (c2, x2, y2))]
    was_local = {y1: c1.path == "local", y2: c2.path == "local"}
    call = switch.new_call(stays, new, now)
    # a cluster node's half of another node's call is recorded there, under that node's uid (host/main_host.py),
    # while that node is up; a half spliced here from a lost node (its caller's leg no longer a trunk's) is ours
    elsewhere = [c.recorded_as is not None and c.a.link.kind == "node" and c.a.link.up for c in (c1, c2)]
    call.linked = c1.linked or c1.record_as   # its record here, or the other node's (Call.record_as)
    call.a, call.b = y1, y2
    y1.call = y2.call = call
    call.offered_ms = c2.offered_ms
    call.tried = list(c2.tried)
    call.alerted_ms = now if y2.state != CALLING else None
    call.answered_ms = now if y2.state == CONNECTED else None
    last = [_last_ts(c1, y1), _last_ts(c2, y2)]
    call.ts_out = list(last)
    call.moh_last = [t or None for t in last]    # each side's media carries on after what it had
    c2.linked = call.linked
    for c, x, theirs in ((c1, x1, elsewhere[0]), (c2, x2, elsewhere[1])):   # the phone's own legs end; both
        # calls are recorded (once). A node's leg keeps its side: a call of ours whose callee's side was on the
        # trunk (a transfer handed to us, _hand_over) is recorded by its caller's side (MainHost.on_call_ended)
        c.a, c.b = (None, x) if x.link.kind == "node" and x is c.b else (x, None)
        switch.release(x, wire.CAUSE_TRANSFERRED, now)
        host.end_call(c, wire.CAUSE_TRANSFERRED, now, record=not theirs)
    if y2.state == CONNECTED:                     # attended: both far ends talk at once
        for y, sent in zip((y1, y2), hold_sent):
            if sent:
                send_on_leg(y, wire.HOLD, {wire.IE_STATE: 0}, now)
    else:                                         # blind: the party that stays hears music until the answer
        call.held_by = y2
        call.hold_sent = hold_sent[0]
        host.held.add(call)
        recall_ms = getattr(host.config, "transfer_recall_s", 0) * 1000
        if recall_ms:
            call.recall = (link, back, new, now + recall_ms, recall_ms)
    _paths(host, call, was_local, now)
    for leg, number in ((y1, new), (y2, stays)):
        ies = {wire.IE_CALLING: number, wire.IE_CALLING_NAME: _name(host, number)[:63]}
        if leg is y2 and leg.link.kind == "node" and elsewhere[0]:
            # the joined call is recorded by the held call's caller's node (we record neither, above), which
            # keeps its call whatever becomes of us: the new party's node must not record its half of our
            # consultation even if we are lost (it did, a second time, when it was that same node). The uid:
            # the held call's record there, which the joined call's is linked to
            ies[wire.IE_CALL_ID] = bytes.fromhex(c1.recorded_as)
        send_on_leg(leg, wire.PARTY, ies, now)
    host.log.info("call-transferred", call=call.uid, linked=call.linked, by=link.name, stays=stays, to=new,
                  answered=y2.state == CONNECTED, path=call.path)
    return True


def _joined_further(y1, y2):
    """Whether both far legs go the same way, so that the host there joins them (_hand_over): a remote
    host's, through the main host; a cluster node's, over the trunk to one other node (a call from it
    runs on its trunk session, one to it on ours). Not a direct path (B2), which the main host would
    not see; not a call whose far leg is not numbered yet (a consultation waiting for its node)."""
    if not y2.peer_call_no or y1.direct is not None or y2.direct is not None:
        return False
    if y1.link.kind == "main":
        return y2.link is y1.link
    return y1.link.kind == "node" == y2.link.kind and y1.link.node == y2.link.node


def _hand_over(host, link, c1, c2, y1, y2, stays, new, now):
    """Both of the phone's calls go through the main host (a remote host's), or over the trunk to the
    same other node (a cluster node's, docs/cluster.md): that host joins them itself (the same TRANSFER,
    from this host, naming its legs), so the joined call no longer turns here (a site's uplink, or a
    second trunk hop each way that would end with this node); it then releases our legs towards it
    with cause "transferred", which reach the phone's legs as any RELEASE does, and end our calls."""
    if y1.link.kind == "node":
        # our consultation is recorded here as a transfer's is, linked to the first call: the held one's
        # uid, the other node's when it is that node's call (it records it, and the joined call)
        c2.linked = c1.linked or c1.record_as
    ies = {wire.IE_JOIN_CALL_NO: y2.peer_call_no}
    if y2.link is not y1.link:   # two trunk sessions with that node: a call from it runs on its, one to it on ours
        ies[wire.IE_STATE] = 1
    send_on_leg(y1, wire.TRANSFER, ies, now)
    host.stats.count("transfers handed to the main host" if y1.link.kind == "main" else "transfers handed to a node")
    host.log.info("call-transfer-handed-over", by=link.name, stays=stays, to=new, link=y1.link.kind)


def _paths(host, call, was_local, now):
    """The joined call's media path. A remote host with both parties on its LAN: phone to phone
    (B3, new keys); otherwise through this host: a phone that sent its media straight to the
    transferring phone gets a key for media through the host (MEDIA_PEER without an address).
    The main host joining two remote hosts' legs keeps relaying them: each side's timestamps carry
    on after what it had only where the joining host shifts them (a direct path would bypass it)."""
    a, b = call.a, call.b
    phones = [leg for leg in (a, b) if leg.link.kind == "phone"]
    if len(phones) == 2 and hasattr(host, "_local_media"):
        call.path = "local"
        host._local_media(call, now)
        return
    # a SIP phone and a handset of a remote host's site: still a local call (B3, the host's record),
    # its media through the host, which is where a SIP phone's RTP ends (docs/sip.md)
    local = hasattr(host, "_local_media") and all(_phone(leg.link) for leg in (a, b))
    call.path = "local" if local else "relay"
    for leg in phones:
        if was_local[leg]:
            key = os.urandom(16)
            leg.media = MediaLeg(key, 1, leg.call_no, leg.peer_call_no)
            leg.link.send_signal(wire.MEDIA_PEER, {wire.IE_PEER_CALL_NO: leg.peer_call_no, wire.IE_CALL_NO: leg.call_no,
                                                   wire.IE_MEDIA_KEY: key, wire.IE_ROLE: 0}, now)


def answered(host, call, now):
    """The new party of a blind transfer answered: the music stops, both talk."""
    if call.held_by is call.b:
        call.held_by = call.recall = None
        host.held.discard(call)
        if getattr(call, "hold_sent", False):
            send_on_leg(call.a, wire.HOLD, {wire.IE_STATE: 0}, now)


def recall(host, now):
    """Every tick: a blindly transferred call still ringing at its recall time rings the
    transferring phone again (once); a recall still ringing at its own time ends the call."""
    for call in [c for c in host.held if c.recall is not None]:
        link, back, new, due, period = call.recall
        if now < due or call.released or call.b is None or call.held_by is not call.b:
            continue
        if link is None or not link.up or host.switch.admit(link) is not None:   # nobody to ring back
            host.log.info("transfer-recall-failed" if link else "transfer-recall-unanswered", call=call.uid)
            call.recall = None
            host.switch.release(call.a, wire.CAUSE_NO_ANSWER, now)
            host.switch.release(call.b, wire.CAUSE_NO_ANSWER, now)
            host.end_call(call, wire.CAUSE_NO_ANSWER, now)
            continue
        host.switch.drop_callee(call, wire.CAUSE_NO_ANSWER, now)
        call.callee = back
        call.tried.append(back)
        call.offered_ms = now
        call.alerted_ms = None
        call.recall = (None, back, new, now + period, period)
        call.held_by = host.switch.offer(call, link, now, ("recall: %s no answer" % new)[:63],
                                         local=call.path == "local")
        send_on_leg(call.a, wire.PARTY, {wire.IE_CALLING: back, wire.IE_CALLING_NAME: _name(host, back)[:63]}, now)
        host.log.info("transfer-recall", call=call.uid, to=back, unanswered=new)


def picked_up_party(host, call, picker, now):
    """A ringing call was picked up (host/groups.py pickup): the picker is told the caller, and the
    caller's side the picker (PARTY with cause 15, sent before the caller's ANSWER: every host on the
    way names the picker as the callee of the same call, across nodes too, and its phone shows it)."""
    ies = {wire.IE_CALLING: call.caller, wire.IE_CALLING_NAME: _name(host, call.caller)[:63]}
    if picker.link.kind == "node" and call.a is not None and call.a.link.kind != "node":
        # a picker at another node: told the uid we record the call under and the number that rang, so that its
        # node records it (once, by that uid) if we are lost during the call (host/main_host.py on_call_ended)
        ies[wire.IE_CALL_ID] = call.call_id
        ies[wire.IE_CALLED] = call.tried[0] if call.tried else call.callee
    send_on_leg(picker, wire.PARTY, ies, now)
    send_on_leg(call.a, wire.PARTY, {wire.IE_CALLING: picker.number, wire.IE_CAUSE: wire.CAUSE_PICKED_UP,
                                     wire.IE_CALLING_NAME: _name(host, picker.number)[:63]}, now)


def party(host, link, ies, now):
    """PARTY from a host along a call: the far end changed; passed on towards its phone. The
    call's numbers change with it (its record names who talked last); the call goes on. A call
    picked up further on (cause 15) before it was answered is the same call with another callee."""
    leg = host.switch.leg_for(ies, link)
    number = ies.get(wire.IE_CALLING)
    if leg is None or number is None or link.kind == "phone":
        host.stats.drop("bad party")
        return
    call = leg.call
    if link.kind == "node" and wire.IE_CALL_ID in ies and leg is call.a:
        call.recorded_elsewhere = True   # joined at that node into a call another node records (transfer above)
    elif (link.kind == "node" and wire.IE_CALL_ID in ies and leg is call.b and call.recorded_elsewhere
          and call.picked_up_as is None):
        # our **N or *8, picked up at that node (picked_up_party): recorded there, and here if it is lost
        call.picked_up_as = (bytes(ies[wire.IE_CALL_ID]).hex(), ies.get(wire.IE_CALLED))
    out = {wire.IE_CALLING: number, wire.IE_CALLING_NAME: ies.get(wire.IE_CALLING_NAME, "")}
    if ies.get(wire.IE_CAUSE) == wire.CAUSE_PICKED_UP and call.answered_ms is None:
        out[wire.IE_CAUSE] = wire.CAUSE_PICKED_UP
        leg.number = number                 # a group's member leg: who answers on it (host/groups.py)
        if leg is call.a:
            call.caller = number
        else:
            call.callee = number
    else:
        _relabel(host, call, leg, number, now)
    other = other_leg(leg)
    if other is not None:
        send_on_leg(other, wire.PARTY, out, now)


def _relabel(host, call, leg, number, now):
    """A call this host switches was joined by a transfer further on: its record so far is kept
    (cause "transferred"), and it goes on under a new uid linked to the first, with the new party."""
    before = copy.copy(call)
    host.on_call_ended(before, wire.CAUSE_TRANSFERRED, now)
    host.switch.renumber(call, before.call_id)
    call.linked = before.linked or before.record_as
    call.record_uid = None
    call.started_ms = now
    call.alerted_ms = now if call.alerted_ms is not None else None
    call.answered_ms = now if call.answered_ms is not None else None
    if leg is call.a:
        call.caller = number
    else:
        call.callee = number
    call.tried = [call.callee]
