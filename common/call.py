"""One call leg: its numbers, its media keys and its state, with every legal transition in one table.

A leg is one hop of a call between two ends that each hold a CallLeg: phone and host,
host and host. The phone has one leg per call; a host switching a call has two (the leg
towards the caller, on which SETUP came in, and the leg towards the callee, on which it
sent SETUP) and forwards signalling from one to the other.

    leg.apply(SETUP_SENT)          the end that sends SETUP: CALLING
    leg.apply(ALERTING_RECEIVED)   ... the far end is ringing: RINGBACK
    leg.apply(ANSWER_RECEIVED)     ... answered: CONNECTED

apply() returns the new state, or None when the event is not legal in the current state
(a message out of turn from the far end, or an action the user cannot take now): the
leg is then unchanged and the caller decides (drop and count it, or refuse the action).
"""
from .compat import const
from .media import MediaLeg

IDLE = const(0)
CALLING = const(1)      # we sent SETUP
RINGBACK = const(2)     # we sent SETUP and the far end is ringing
CALLED = const(3)       # we received SETUP
RINGING = const(4)      # we received SETUP and said we are ringing
CONNECTED = const(5)
RELEASED = const(6)
STATE_NAMES = ("idle", "calling", "ringback", "called", "ringing", "connected", "released")

SETUP_SENT = const(1)
SETUP_RECEIVED = const(2)
ALERTING_SENT = const(3)
ALERTING_RECEIVED = const(4)
ANSWER_SENT = const(5)
ANSWER_RECEIVED = const(6)
RELEASE_SENT = const(7)
RELEASE_RECEIVED = const(8)
DTMF_SENT = const(9)
DTMF_RECEIVED = const(10)
TIMEOUT = const(11)     # no answer in time (set-up timer, ring timeout)

# The table: (state, event) -> new state. Anything not here is not legal.
_TABLE = {
    (IDLE, SETUP_SENT): CALLING,
    (IDLE, SETUP_RECEIVED): CALLED,
    (CALLING, ALERTING_RECEIVED): RINGBACK,
    (CALLING, ANSWER_RECEIVED): CONNECTED,
    (RINGBACK, ANSWER_RECEIVED): CONNECTED,
    (RINGBACK, ALERTING_RECEIVED): RINGBACK,   # forwarded on no answer: another phone rings
    (CALLED, ALERTING_SENT): RINGING,
    (CALLED, ANSWER_SENT): CONNECTED,
    (RINGING, ANSWER_SENT): CONNECTED,
    (RINGING, ALERTING_SENT): RINGING,     # a host's caller leg: the call was forwarded and rings anew
    (CONNECTED, DTMF_SENT): CONNECTED,
    (CONNECTED, DTMF_RECEIVED): CONNECTED,
}
for _state in (CALLING, RINGBACK, CALLED, RINGING, CONNECTED):
    for _event in (RELEASE_SENT, RELEASE_RECEIVED, TIMEOUT):
        _TABLE[(_state, _event)] = RELEASED

# What apply() reads: the table as a matrix of bytes, the new state by state (row) and event
# (column), _NONE where there is no transition. 84 bytes, where the dict and its 25 tuples take
# 0.7 KB of a handset's heap; the dict itself goes once read.
_EVENTS = const(12)     # events are numbered 1..11; column 0 is never legal
_NONE = const(0xFF)
_NEXT = bytearray(b"\xff" * (len(STATE_NAMES) * _EVENTS))
for (_state, _event), _new in _TABLE.items():
    _NEXT[_state * _EVENTS + _event] = _new
del _TABLE, _state, _event, _new


class CallLeg:
    """One end of one hop of a call. `call_no` is ours, `peer_call_no` the far end's (learnt from
    its first message); frames we send carry the peer's number, frames we receive ours. The
    phone holds one per call (common/phone.py), a host two per call it switches (host/switch.py)."""

    __slots__ = ("call_no", "media_key", "media", "direct", "state",
                 "number", "name", "path", "started_ms", "link", "call")

    def __init__(self, call_no, media_key, role):
        self.call_no = call_no
        self.media_key = media_key        # issued by the end that sends SETUP (role 0)
        self.media = MediaLeg(media_key, role, call_no, 0)
        self.direct = None                # media that bypasses this hop: (MediaLeg, where), B2/B3
        self.state = IDLE
        self.number = ""                  # the phone's view: who is at the other end, and the name
        self.name = ""
        self.path = "relay"
        self.started_ms = 0
        self.link = None                  # a host's view: the link the leg runs on, and its call
        self.call = None

    def apply(self, event):
        """Take the transition for event; the new state, or None (leg unchanged) when not legal."""
        if not 0 < event < _EVENTS:
            return None
        state = _NEXT[self.state * _EVENTS + event]
        if state == _NONE:
            return None
        self.state = state
        return state

    @property
    def peer_call_no(self):
        """The far end's call number (0 until learnt): kept once, in the media leg that addresses frames with it."""
        return self.media.peer_call_no

    def learn_peer(self, call_no):
        """The far end's call number, from its first message that names one."""
        if call_no and not self.media.peer_call_no:
            self.media.peer_call_no = call_no
