"""A second line on the handset, as much as a conference needs (docs/features.md, Conference).

    second_line.dial(phone, "102", now)     the held call waits on the second line (phone.held)
    second_line.conference(phone, now)      CONFERENCE: the host joins the two calls

A stopgap of the conference branch, to be replaced at merge by the call-waiting work's two lines
(swap, answering a waiting call). It keeps to functions on a common.phone.Phone, loaded only when
a second call is made (a handset's heap does not carry it otherwise): the held call is
`phone.held`, the active one stays `phone.call`, so everything Phone does (media, signalling,
the app) sees one call; `phone.other_line` is set to `message`, which Phone hands the messages
that are not for its active call. Events beyond Phone's: LineEnded(cause) when the held call
ends (its far end hung up, or it joined the conference: cause CAUSE_CONFERENCE), and
Conferenced(joined) for the host's answer to CONFERENCE.
"""
from . import wire
from .call import CONNECTED, RELEASE_RECEIVED
from .login import Event
from .media import MediaLeg


class LineEnded(Event):
    """The held call is over (cause: a wire.CAUSE_* code; CAUSE_CONFERENCE: it joined the conference)."""
    __slots__ = ("cause",)


class Conferenced(Event):
    """The host's answer to CONFERENCE: joined True (one conference now) or False (refused, nothing changed)."""
    __slots__ = ("joined",)


def dial(phone, number, now):
    """Call number while the connected call is held: that call waits on the second line."""
    call = phone.call
    if call is None or phone.held is not None or not phone.holding or call.state != CONNECTED:
        return False
    phone.held, phone.call, phone.holding = call, None, False
    if phone.dial(number, now):
        phone.other_line = message
        return True
    phone.call, phone.held, phone.holding = call, None, True
    return False


def conference(phone, now):
    """Ask the host to join the connected call and the held one (it answers with Conferenced)."""
    call, held = phone.call, phone.held
    if call is None or held is None or call.state != CONNECTED or held.state != CONNECTED or phone.holding:
        return False
    phone._send(wire.CONFERENCE, {wire.IE_CONF_CALL_NO: held.peer_call_no}, now)
    return True


def message(phone, msg_type, ies, now):
    """A message Phone found not for its active call (or not a call message it knows): the held
    call's RELEASE, the host's answer to CONFERENCE; anything else is dropped and counted."""
    held, call = phone.held, phone.call
    peer = ies.get(wire.IE_PEER_CALL_NO)
    if held is not None and peer == held.call_no and msg_type == wire.RELEASE:
        held.apply(RELEASE_RECEIVED)
        phone.held = None
        phone._events.append(LineEnded(ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL)))
    elif call is not None and peer == call.call_no and msg_type == wire.CONFERENCE:
        phone._events.append(Conferenced(ies.get(wire.IE_STATE) == 1))
    elif msg_type != wire.PING and msg_type != wire.ACK:
        phone.dropped += 1


def through_host(call):
    """MEDIA_PEER path relay (the call joined a conference): a call that ran phone to phone (B3)
    sends its media to the host again, on the host's leg, whose receiving half carries on."""
    if call.direct is not None:
        media = MediaLeg(call.media_key, call.media.role, call.call_no, call.media.peer_call_no)
        media.replay = call.media.replay   # the host's frames carry on where they were
        call.media = media
        call.direct = None
        call.path = "relay"
