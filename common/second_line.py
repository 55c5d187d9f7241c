"""A second line on the handset, as much as a conference needs (docs/features.md, Conference).

    phone = TwoLinePhone("101", secret, os.urandom)
    phone.hold(now); phone.dial("102", now)   the held call waits on the second line
    phone.conference(now)                     CONFERENCE: the host joins the two calls
    phone.resume(now)                         the active call gone: the held one comes back

A stopgap of the conference branch, kept out of common/phone.py so that the call-waiting work
(two lines, swap, answer a waiting call) can replace it at merge: the held call is `held`, the
active one stays `call`, so everything Phone does (media, signalling, the app) sees one call.
Events beyond Phone's: LineEnded(cause) when the held call ends (its far end hung up, or it
joined the conference: cause CAUSE_CONFERENCE), Conferenced(joined) for the host's answer.
"""
from . import wire
from .call import CONNECTED, RELEASE_RECEIVED, RELEASE_SENT, TIMEOUT
from .login import Event
from .phone import Phone


class LineEnded(Event):
    """The held call is over (cause: a wire.CAUSE_* code; CAUSE_CONFERENCE: it joined the conference)."""
    __slots__ = ("cause",)


class Conferenced(Event):
    """The host's answer to CONFERENCE: joined True (one conference now) or False (refused, nothing changed)."""
    __slots__ = ("joined",)


class TwoLinePhone(Phone):
    def __init__(self, *args, **kwargs):
        Phone.__init__(self, *args, **kwargs)
        self.held = None          # the CallLeg of the held call while another is made, else None

    def dial(self, number, now):
        """As Phone.dial; while the connected call is held, it stays held on the second line."""
        call = self.call
        if call is None or self.held is not None or not self.holding or call.state != CONNECTED:
            return Phone.dial(self, number, now)
        self.held, self.call, self.holding = call, None, False
        if Phone.dial(self, number, now):
            return True
        self.call, self.held, self.holding = call, None, True
        return False

    def resume(self, now):
        """Resume the held call; with no other call, the one on the second line comes back."""
        if self.call is None and self.held is not None:
            self.call, self.held, self.holding = self.held, None, True
        return Phone.resume(self, now)

    def conference(self, now):
        """Ask the host to join the connected call and the held one (answered by Conferenced)."""
        call, held = self.call, self.held
        if call is None or held is None or call.state != CONNECTED or held.state != CONNECTED or self.holding:
            return False
        self._send(wire.CONFERENCE, {wire.IE_CONF_CALL_NO: held.peer_call_no}, now)
        return True

    def hangup(self, now):
        """Hang up the active call; with none, the held one."""
        if self.call is None and self.held is not None:
            self.call, self.held = self.held, None
            held = self.call
            held.apply(RELEASE_SENT)
            self._send(wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_NORMAL}, now)
            self.call = None
            self._events.append(LineEnded(wire.CAUSE_NORMAL))
            return True
        return Phone.hangup(self, now)

    def _message(self, msg_type, ies, now):
        held = self.held
        if held is not None and ies.get(wire.IE_PEER_CALL_NO) == held.call_no and msg_type != wire.SETUP:
            if msg_type == wire.RELEASE:
                held.apply(RELEASE_RECEIVED)
                self.held = None
                self._events.append(LineEnded(ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL)))
            elif msg_type == wire.MEDIA_PEER:
                self._media_peer(held, ies)
            elif msg_type not in (wire.PING, wire.ACK):
                self.dropped += 1
            return
        call = self.call
        if msg_type == wire.CONFERENCE and call is not None and ies.get(wire.IE_PEER_CALL_NO) == call.call_no:
            self._events.append(Conferenced(ies.get(wire.IE_STATE) == 1))
            return
        Phone._message(self, msg_type, ies, now)

    def _login_events(self):
        held = self.held
        Phone._login_events(self)
        if held is not None and not self.registered:   # a call does not outlive the session
            held.apply(TIMEOUT)
            self.held = None
            self._events.append(LineEnded(wire.CAUSE_UNREACHABLE))
