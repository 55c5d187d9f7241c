"""Transfer by a SIP phone (REFER, RFC 3515; Replaces, RFC 3891), mapped onto the hosts' own
transfer (host/lines.py `transfer()`), sans-IO, for the B2BUA in host/sip/calls.py.

Blind: REFER to a number in a call's dialog -> 202 and NOTIFY 100; the other party held (unless
the phone held it first); a `Consultation` (a upbx call from the phone's link, no SIP dialog of
its own) rings the number; once it rings or answers, TRANSFER joins the other party and it; the
phone's leg released "transferred" -> NOTIFY 200, and the dialog waits for the phone's BYE (ours
after 32 s). A consultation refused -> NOTIFY with the status of its cause, the call goes on.
Attended: Refer-To with Replaces naming another answered call of the same phone -> the two calls'
other parties joined at once. docs/sip.md "Transfer (REFER)" says the rest (what is refused and why).
"""

import os

from urllib.parse import unquote

from upbx.common import wire
from upbx.host import lines
from upbx.host.sip import message as sip
from upbx.host.sip.causes import sip_status
from upbx.host.sip.transaction import GIVE_UP_MS, T2_MS, Retransmit

JOIN_WAIT_MS = 10000    # a REFER's join handed to the main host that has not happened by then failed


class Consultation:
    """The upbx call a REFER makes (blind transfer): from the phone's link to the Refer-To number,
    as a handset's consultation call; no SIP dialog of its own. Once it rings or is answered, the
    phone's dialog `call` and it are joined by the host's transfer (host/lines.py)."""

    def __init__(self, call, call_no, number, we_held):
        self.link = call.link
        self.call = call                # the SipCall the phone REFERred
        self.call_no = call_no
        self.host_call_no = None
        self.number = number
        self.we_held = we_held          # we held the party that stays (the phone had not)
        self.joined = False
        self.joined_at = None           # when TRANSFER was handed to the main host (its answer is our leg's RELEASE)


class Transfers:
    """The REFERs of one host's SIP calls; `b2bua` is its SipCalls (dialogs, responses, the core)."""

    def __init__(self, b2bua):
        self.b2bua = b2bua
        self.consultations = {}         # (link name, our call number) -> Consultation

    def refer(self, call, req, addr, now):
        """A REFER in the call's dialog. Refer-To a number: a blind transfer, as a handset's `C N #`:
        the other party is held (music), a consultation call from the phone's link rings N, and as
        soon as N rings (or answers) the host joins the other party and N (host/lines.py transfer).
        Refer-To with Replaces naming another call of the same phone (RFC 3891): the attended
        transfer, which joins the two calls' other parties at once."""
        b = self.b2bua
        values = req.values("Refer-To")
        try:
            if len(values) != 1:
                raise sip.SipError(400, "one Refer-To needed")
            target = sip.parse_address(values[0], "Refer-To")
        except sip.SipError:
            return b.reply(call, req, 400, addr, now)
        if target.uri.scheme not in ("sip", "sips"):
            return b.reply(call, req, 416, addr, now)
        replaces = _replaces(target.uri.headers)
        other = None
        if replaces is not None:
            other = b.calls.get(replaces[0])
            if (other is None or other is call or other.link is not call.link or other.state != "confirmed"
                    or other.detached or {replaces[1], replaces[2]} != {other.local_tag, other.remote_tag}):
                return b.reply(call, req, 481, addr, now)
        elif not target.uri.user:
            return b.reply(call, req, 400, addr, now)
        if (call.state != "confirmed" or call.detached or call.refer is not None or call.host_call_no is None
                or call.holding or getattr(call.link, "trunk", None) is not None):
            # not now: not answered, transferred already, one under way, held by the other party;
            # and never from a trunk's provider (it would place calls as the trunk, to any number)
            return b.reply(call, req, 403, addr, now)
        b.reply(call, req, 202, addr, now, [("Contact", "<sip:%s>" % call.our_host)])
        call.refer_id = req.cseq[0]
        self.notify(call, 100, now)
        if other is not None:   # attended: both calls are answered; joined now
            call.refer = Consultation(call, None, None, False)
            call.refer.host_call_no = other.host_call_no
            joined = self._join(call, other.host_call_no, now)
            if not joined:
                self.failed(call, 403, now)
            elif joined == "handed":
                call.refer.joined_at = now
            return
        we_held = not call.held_by_phone   # baresip does not hold before its REFER; others do
        if we_held:
            b.signal_host(call, wire.HOLD, {wire.IE_STATE: 1}, now)
        cons = Consultation(call, b.new_call_no(call.link.name), target.uri.user[:31], we_held)
        call.refer = cons
        self.consultations[(call.link.name, cons.call_no)] = cons
        b.core.place_sip_call(call.link, {wire.IE_CALL_NO: cons.call_no, wire.IE_CALLED: cons.number,
                                          wire.IE_MEDIA_KEY: os.urandom(16)}, now)

    def _join(self, call, join_no, now):
        """TRANSFER as the phone's handset would send it on the call: truthy when the host took it."""
        ies = {wire.IE_CALL_NO: call.call_no, wire.IE_PEER_CALL_NO: call.host_call_no, wire.IE_JOIN_CALL_NO: join_no}
        return lines.transfer(self.b2bua.core, call.link, ies, now)

    def consultation_signal(self, cons, msg_type, ies, now):
        """What the host says about a REFER's consultation call: it rings (or answers), so join; it
        is refused (busy, unknown...), so the REFER failed with that status."""
        if wire.IE_CALL_NO in ies and cons.host_call_no is None:
            cons.host_call_no = ies[wire.IE_CALL_NO]
        call = cons.call
        if msg_type in (wire.ALERTING, wire.ANSWER) and not cons.joined and call.refer is cons:
            cons.joined = True
            joined = self._join(call, cons.host_call_no, now)
            if not joined:
                self.failed(call, 503, now)
            elif joined == "handed":
                cons.joined_at = now
        elif msg_type == wire.RELEASE:
            self.consultations.pop((cons.link.name, cons.call_no), None)
            cause = ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL)
            if call.refer is cons and cause != wire.CAUSE_TRANSFERRED:
                call.refer = None
                self.failed(call, sip_status(cause), now, cons)

    def drop(self, cons, now):
        """The consultation ends from our side (the REFER failed, the phone hung up)."""
        if self.consultations.pop((cons.link.name, cons.call_no), None) is not None and cons.host_call_no is not None:
            self.b2bua.core.call_message(cons.link, wire.RELEASE, {wire.IE_CALL_NO: cons.call_no,
                                                                   wire.IE_PEER_CALL_NO: cons.host_call_no,
                                                                   wire.IE_CAUSE: wire.CAUSE_NORMAL}, now)

    def failed(self, call, status, now, cons=None):
        """The transfer cannot be made: the phone is told (NOTIFY with the status), the call goes on,
        resumed if we held it."""
        cons = cons or call.refer
        call.refer = None
        if cons is not None and cons.call_no is not None:
            self.drop(cons, now)
        self.notify(call, status, now, final=True)
        if cons is not None and cons.we_held and call.state == "confirmed" and not call.detached:
            self.b2bua.signal_host(call, wire.HOLD, {wire.IE_STATE: 0}, now)

    def transferred(self, call, now):
        """The host joined the other party elsewhere and released our leg: the REFER succeeded. The
        dialog stays until the phone's BYE (RFC 5589: the transferor hangs up), ours after 32 s."""
        b = self.b2bua
        call.refer = None
        call.detached = True
        call.bye_due = now + GIVE_UP_MS
        b.by_host_leg.pop(call.host_call_no, None)
        b.rtp.pop(call.rtp_port, None)
        call.media = None
        self.notify(call, 200, now, final=True)

    def notify(self, call, status, now, final=False):
        """NOTIFY in the REFER's dialog with the consultation's progress as a sipfrag (RFC 3515 2.4.5)."""
        b = self.b2bua
        frag = "SIP/2.0 %d %s\r\n" % (status, sip.REASONS.get(status, "Unknown"))
        req = b.dialog_request(call, "NOTIFY", frag.encode(), [
            ("Event", "refer;id=%d" % call.refer_id),
            ("Subscription-State", "terminated;reason=noresource" if final else "active;expires=60"),
            ("Contact", "<sip:%s>" % call.our_host), ("Content-Type", "message/sipfrag;version=2.0")])
        b.send(req, call.addr)
        call.notify_rt = Retransmit(req.encode(), call.addr, now, T2_MS)

    def tick(self, call, now):
        """A join the main host has not made within JOIN_WAIT_MS fails; our NOTIFY is sent again
        until the phone answers it."""
        cons = call.refer
        if cons is not None and cons.joined_at is not None and now - cons.joined_at >= JOIN_WAIT_MS:
            self.failed(call, 503, now)   # the main host did not join (its legs were never released)
        n = call.notify_rt
        if n is not None and now >= n.next_at:
            if now >= n.until:
                call.notify_rt = None
            else:
                self.b2bua.edge.send_data(n.data, n.addr)
                n.interval = min(n.interval * 2, n.cap)
                n.next_at = now + n.interval


def _replaces(headers):
    """(Call-ID, to-tag, from-tag) of a Replaces in a Refer-To URI's headers (RFC 3891), or None."""
    for field in headers.split("&") if headers else ():
        name, _, value = field.partition("=")
        if name.lower() == "replaces":
            parts = unquote(value).split(";")
            params = dict(p.strip().partition("=")[::2] for p in parts[1:])
            return parts[0].strip(), params.get("to-tag"), params.get("from-tag")
    return None
