"""The handset's side of a conference (docs/features.md, Conference): one function, loaded when used.

    conference(phone, now)   the current call and the held one (phone.other) become one conference

The phone sends CONFERENCE on its current call naming the held one (conf_call_no: the host's call
number of that leg). The host that switches both answers by releasing the held line with cause
CAUSE_CONFERENCE (the phone's Ended event, line 1) and mixes the parties from then on; a refusal
(CONFERENCE state 0) changes nothing.
"""
from . import wire
from .call import CONNECTED


def conference(phone, now):
    """Ask the host to join the connected call and the held one; False when there are not both."""
    call, held = phone.call, phone.other
    if call is None or held is None or call.state != CONNECTED or held.state != CONNECTED or phone.holding:
        return False
    phone._send(wire.CONFERENCE, {wire.IE_CONF_CALL_NO: held.peer_call_no}, now)
    return True
