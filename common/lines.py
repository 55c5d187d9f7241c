"""A phone's second line: swap, reject a waiting call, transfer (docs/features.md).

Functions of a common.phone.Phone that a handset runs rarely (a key, a console command): a
handset imports this module for each use and forgets it again (common.compat.forget,
firmware.hal.rarely), so that its code does not stay on the heap. The state they work on
(Phone.call, the current line; Phone.other, a waiting or held call) is the Phone's.

    consult(phone, N, now, blind)  the current call is held and N called (blind: transferred once it rings)
    swap(phone, now)            the other line becomes current (a waiting call is answered)
    reject_waiting(phone, now)  the waiting call is refused with "busy"
    transfer(phone, now)        the held call's far end and the current call's are joined
"""
from . import wire
from .call import ANSWER_SENT, CALLING, CONNECTED, IDLE, RELEASE_SENT


def consult(phone, number, now, blind=False):
    """Hold the connected call and call number: a consultation, the second call of a transfer
    (blind: the phone sends TRANSFER as soon as number rings). False when not possible now."""
    held = phone.call
    if held is None or phone.other is not None or held.state != CONNECTED:
        return False
    holding = phone.holding
    phone.call = None
    if not phone.dial(number, now):
        phone.call = held
        return False
    if not holding:
        phone._send(wire.HOLD, {wire.IE_STATE: 1}, now, held)
    phone.other = held
    phone.holding = False
    phone.blind = blind
    return True


def swap(phone, now):
    """Two lines: the other becomes current, the current is held. A waiting call is answered (the
    current call is held first); a held one is resumed. False when there is nothing to swap."""
    call, other = phone.call, phone.other
    if other is None or call is None or call.state != CONNECTED:
        return False
    if other.state == CONNECTED:
        phone._send(wire.HOLD, {wire.IE_STATE: 0}, now, other)
    elif other.apply(ANSWER_SENT) is not None:
        phone._send(wire.ANSWER, {}, now, other)
    else:
        return False
    if not phone.holding:
        phone._send(wire.HOLD, {wire.IE_STATE: 1}, now)
    phone.call, phone.other = other, call
    phone.holding = phone.blind = False
    return True


def reject_waiting(phone, now):
    """The waiting call is refused (its caller hears busy); the current call goes on."""
    other = phone.other
    if other is None or other.state == CONNECTED or other.apply(RELEASE_SENT) is None:
        return False
    phone._send(wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_BUSY}, now, other)
    phone.other = None
    return True


def transfer(phone, now):
    """Join the held call's far end with the current call's (ringing or answered): the host
    connects them and ends both our calls (cause "transferred"). False when not two such lines."""
    call, other = phone.call, phone.other
    if (call is None or other is None or other.state != CONNECTED or not call.peer_call_no
            or call.state == IDLE or call.state == CALLING):
        return False
    phone._send(wire.TRANSFER, {wire.IE_JOIN_CALL_NO: call.peer_call_no}, now, other)
    phone.blind = False
    return True
