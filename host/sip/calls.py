"""The B2BUA: SIP phones' calls as upbx call legs of the host's switch, sans-IO.

A registered SIP extension is, to the host, a `SipLink` (a switch Link of kind "app", named by
the extension's number): the host routes a SETUP to it as to a handset's link, and the link
turns it into an INVITE to the phone; an INVITE from the phone becomes a SETUP from the link
(`core.place_sip_call`). Each SIP dialog is one `SipCall` holding the upbx leg's numbers and
the call's media (`SipMediaLeg`, host/sip/media.py, on an RTP port of its own).

upbx -> SIP: SETUP -> INVITE (with our SDP offer); RELEASE -> CANCEL before the answer, BYE
after; DTMF -> RFC 4733; HOLD -> re-INVITE sendonly / sendrecv.
SIP -> upbx: 180/183 -> ALERTING; 200 -> ACK and ANSWER; 4xx-6xx -> ACK and RELEASE with the
cause below; INVITE -> SETUP; ACK stops our 200's retransmission; BYE or CANCEL -> RELEASE;
re-INVITE sendonly/inactive -> HOLD, sendrecv -> resume; REFER -> the hosts' transfer
(host/sip/refer.py).

Causes (host/sip/causes.py): busy 486 <-> CAUSE_BUSY; no answer 480 (and 408, 487) <-> CAUSE_NO_ANSWER; not
permitted 403 <-> CAUSE_NOT_PERMITTED; unknown 404 <-> CAUSE_UNKNOWN_EXTENSION; network busy
503 <-> CAUSE_NETWORK_BUSY; unreachable 480; do not disturb 486 (and 600/603 -> busy).

Transactions over UDP (RFC 3261 17): our INVITE and BYE/CANCEL are sent again at T1, 2T1, ...
(capped at T2 for non-INVITE) until a response, our 2xx to an INVITE until its ACK, a final
error until its ACK; each gives up after 64*T1 (the call ends; host/sip/transaction.py). A request the phone sends again
is answered again with the response it had.
"""

import os
import re

from upbx.common import wire
from upbx.host.sip import message as sip
from upbx.host.sip import sdp as sdplib
from upbx.host.sip import trunk as trunklib
from upbx.host.sip.causes import sip_status, upbx_cause
from upbx.host.sip.refer import Transfers
from upbx.host.sip.transaction import GIVE_UP_MS, T2_MS, Retransmit
from upbx.host.sip.media import SipMedia, SipMediaLeg
from upbx.host.switch import Link

# A trunk (a provider, a site's gateway) answers an INVITE with 100 Trying at once; one that has sent
# nothing for this long is down: the caller hears "no outside line" now, not when a handset's own
# 20 s setup timeout ends the call as "unreachable"
TRUNK_SILENT_MS = 5000
RTP_PORTS = (16384, 16384 + 2 * 1000)   # even ports, one per call
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")

def token():
    return os.urandom(6).hex()


class SipLink(Link):
    """The host's side of one SIP extension: what the host sends it goes to its SIP calls."""

    def __init__(self, calls, number):
        Link.__init__(self, number, "app")
        self.calls = calls
        self.sip = True

    def send_signal(self, msg_type, ies, now):
        self.calls.upbx_signal(self, msg_type, ies, now)
        return True

    def media(self, leg, ts, payload):
        call = self.calls.by_host_leg.get(leg.call_no)
        if call is not None and call.media is not None:
            call.media.media(ts, payload)


class TrunkLink(SipLink):
    """A SIP trunk, as a link of the main host's switch: calls out to the provider, calls in from it."""

    def __init__(self, calls, row):
        SipLink.__init__(self, calls, "trunk:" + row["name"])
        self.trunk = row
        self.proxy = trunklib._proxy_addr(row["proxy"])


class SipCall:
    """One SIP dialog and the upbx leg it stands for."""

    def __init__(self, link, call_no, addr, outgoing):
        self.link = link
        self.call_no = call_no          # our own number for the call on link (the upbx side's peer)
        self.host_call_no = None        # the host leg's number
        self.addr = addr                # where the phone is reached (its requests' source)
        self.outgoing = outgoing        # True: we sent the INVITE (the phone is called)
        self.state = "early"            # early, confirmed, ended
        self.call_id = None
        self.local_tag = token()
        self.remote_tag = None
        self.local_uri = self.remote_uri = None   # From/To header values of our requests (without tags)
        self.remote_target = None
        self.local_cseq = 1
        self.invite = None              # the phone's INVITE (we answer it) or ours (it answers)
        self.invite_branch = None
        self.offer = None               # the phone's SDP offer (an INVITE from it)
        self.answer_text = None
        self.codec = None
        self.rtp_port = None
        self.our_host = None            # our address as the phone knows it (for SDP and Contact)
        self.media = None               # SipMediaLeg once answered
        self.sdp_version = 1
        self.session_id = int.from_bytes(os.urandom(4), "big")
        self.final = None               # our final response to its INVITE (bytes), sent again on a repeat
        self.retransmit = None          # Retransmit of what waits for an answer
        self.cancel_pending = False
        self.held_by_phone = False
        self.holding = False
        self.alerted = False
        self.authed = False
        self.refer = None               # the Consultation of a REFER the phone sent in this dialog
        self.notify_rt = None           # Retransmit of our NOTIFY (the REFER's progress)
        self.detached = False           # transferred away: the upbx leg is gone, the dialog waits for BYE
        self.bye_due = None             # ...until then; we send BYE ourselves if the phone does not
        self.refer_id = None            # CSeq of its REFER (the NOTIFYs' Event id)
        self.party = None               # (number, name) the phone talks to now, after a transfer (PARTY)
        self.reinvite = None            # our re-INVITE in flight (hold, resume, the party's identity)
        self.reinvite_again = False     # what it says changed while it was in flight: one more after it
        self.reinvite_acked = None      # CSeq of the last re-INVITE we ACKed (its 2xx again: ACK again)


class SipCalls:
    """Every SIP call of a host (see the module docstring); `edge` is the host's SipEdge."""

    def __init__(self, core, edge, rtp_ports=RTP_PORTS):
        self.core = core
        self.edge = edge
        edge.calls = self
        self.links = {}                 # number -> SipLink
        self.calls = {}                 # SIP Call-ID -> SipCall
        self.by_host_leg = {}           # the host leg's call number -> SipCall
        self.by_our_no = {}             # (number, our call number) -> SipCall
        self._next_no = 1
        self.rtp_ports = rtp_ports
        self.rtp = {}                   # local RTP port -> SipCall
        # the daemon's open_rtp(port): True once port's RTP socket is open, False when another program holds
        # the port; None (in memory, a World): every port of the range is free
        self.open_rtp = None
        self.rtp_out = []               # [(datagram, address, local port)]
        self.recent = {}                # (Call-ID, branch, method) -> (response bytes, forget at)
        self.deferred = []              # [(link, RELEASE ies)] for SETUPs that could not be offered
        self.trunk_links = {}           # trunk name -> TrunkLink (the main host's, from its directory)
        self.registrations = {}         # trunk name -> trunk.Registration
        self._trunks_read = None
        self.transfers = Transfers(self)  # REFERs (host/sip/refer.py)

    # helpers

    def link_of(self, number, now):
        """The SipLink of a registered SIP extension, or None (not a SIP phone or not registered)."""
        if not self.edge.contacts_of(number, now):
            return None
        link = self.links.get(number)
        if link is None:
            link = self.links[number] = SipLink(self, number)
        return link

    def new_call_no(self, number):
        """Our call number for a new upbx call of the SIP phone `number` (one space for every phone)."""
        no = self._next_no
        self._next_no = no % 32000 + 1
        return no

    # trunks (host/sip/trunk.py): the main host's directory says which

    def reread_trunks(self):
        """The directory changed: read the trunks again at the next tick."""
        self._trunks_read = None

    def refresh_trunks(self, rows, now):
        """The trunks as the directory has them now: links made, registrations started or dropped."""
        names = {r["name"] for r in rows}
        for name in list(self.trunk_links):
            if name not in names:
                del self.trunk_links[name]
                self.registrations.pop(name, None)
        for row in rows:
            link = self.trunk_links.get(row["name"])
            if link is None or link.trunk != row:
                self.trunk_links[row["name"]] = TrunkLink(self, row)
                self.registrations.pop(row["name"], None)
            if row["register"] and row["name"] not in self.registrations:
                self.registrations[row["name"]] = trunklib.Registration(row, self.our_address())
            elif not row["register"]:
                self.registrations.pop(row["name"], None)

    def our_address(self):
        """host:port of our SIP port as a provider should reach it."""
        listen = self.core.sip_listen or ("0.0.0.0", 5060)
        host = listen[0] if listen[0] != "0.0.0.0" else self.core.config.listen[0]
        return "%s:%d" % (host, listen[1])

    def trunk_at(self, addr):
        """The trunk whose proxy sent from addr (IP and port), or None."""
        if self._trunks_read is None and hasattr(self.core, "trunk_rows"):   # before the first tick
            self.refresh_trunks(self.core.trunk_rows(), self.core.now)
        for link in self.trunk_links.values():
            if link.proxy == tuple(addr[:2]):   # its address and port: not every device at that IP
                return link
        return None

    def trunk_call(self, link, ies, caller, name, trunk_name, number, now):
        """A call from link (a phone, a remote host, a SIP phone) out on a trunk: leg a, then the
        trunk's leg b with the number as the provider is to see it."""
        core = self.core
        if trunk_name not in self.trunk_links:   # added since the last look at the directory
            self.refresh_trunks(core.trunk_rows(), now)
        trunk = self.trunk_links.get(trunk_name)
        if trunk is None:
            return core.refuse_setup(link, ies, wire.CAUSE_UNREACHABLE, now, caller=caller)
        cause = core.switch.admit(link, trunk)
        if cause is not None:
            return core.refuse_setup(link, ies, cause, now, caller=caller)
        call = core.switch.new_call(caller, ies[wire.IE_CALLED], now)
        call.path = "trunk"
        core.switch.incoming(call, link, ies)
        core.switch.offer(call, trunk, now, name, called=number)
        core.log.info("call-setup", call=call.uid, caller=caller, called=number, via=trunk.name)

    def media_address(self, our_host):
        """The IPv4 address our SDP gives for RTP: the one the phone reaches us at (its Request-URI's
        host) when that is an address, else the SIP port's own address when it is bound to one."""
        host = our_host.rsplit(":", 1)[0] if our_host.count(":") == 1 else our_host
        if _IPV4.fullmatch(host):
            return host
        listen = self.core.sip_listen
        return listen[0] if listen and listen[0] != "0.0.0.0" else host

    def _rtp_port(self):
        """An even port of the range for a new call's RTP, its socket already open (open_rtp), or None when
        none is: a port another program holds is passed over, or the SDP would name a port no audio of
        the call reaches (docs/sip.md, "RTP ports")."""
        for port in range(self.rtp_ports[0], self.rtp_ports[1], 2):
            if port not in self.rtp and (self.open_rtp is None or self.open_rtp(port)):
                return port
        return None

    def send(self, msg, addr):
        self.edge.send(msg, addr)

    def signal_host(self, call, msg_type, ies, now):
        """A message from the SIP side into the host, as a handset's would come."""
        ies = dict(ies)
        ies[wire.IE_CALL_NO] = call.call_no
        if call.host_call_no is not None:
            ies[wire.IE_PEER_CALL_NO] = call.host_call_no
        if msg_type == wire.HOLD:
            return self.core.hold_message(call.link, ies, now)
        self.core.call_message(call.link, msg_type, ies, now)

    def dialog_request(self, call, method, body=b"", extra=()):
        """A request within the dialog (RFC 3261 12.2.1.1)."""
        if method not in ("ACK", "CANCEL"):
            call.local_cseq += 1
        headers = [("Via", "SIP/2.0/UDP %s;branch=z9hG4bK%s;rport" % (call.our_host, token())),
                   ("Max-Forwards", "70"),
                   ("From", "%s;tag=%s" % (call.local_uri, call.local_tag)),
                   ("To", call.remote_uri + (";tag=%s" % call.remote_tag if call.remote_tag else "")),
                   ("Call-ID", call.call_id), ("CSeq", "%d %s" % (call.local_cseq, method))]
        headers += list(extra)
        return sip.Request(method, call.remote_target, headers, body)

    def _start_media(self, call, remote_sdp, now):
        media = SipMedia(call.codec, (remote_sdp.address, remote_sdp.port), remote_sdp.dtmf_pt)
        leg = self.core.switch.legs.get(call.host_call_no)
        if leg is None:
            return
        port = call.rtp_port
        call.media = SipMediaLeg(self.core, leg, media, send=lambda d, a: self.rtp_out.append((d, a, port)))

    def _end(self, call):
        if call.refer is not None:   # hung up while its REFER's consultation rings: that call ends too
            self.transfers.drop(call.refer, self.core.now)
            call.refer = None
        call.state = "ended"
        call.retransmit = call.notify_rt = None
        self.calls.pop(call.call_id, None)
        self.by_host_leg.pop(call.host_call_no, None)
        self.by_our_no.pop((call.link.name, call.call_no), None)
        self.rtp.pop(call.rtp_port, None)

    # SIP in (SipEdge hands requests after authentication; ACK and CANCEL unauthenticated)

    def trunk_request(self, req, addr):
        """The trunk link name if req comes from a trunk's proxy (trusted by address), else None."""
        link = self.trunk_at(addr)
        return link.name if link is not None else None

    def in_dialog(self, req, addr):
        """The extension whose call's dialog req is in, sent from that call's phone; else None."""
        call = self.calls.get(req.call_id)
        if call is None or call.state == "ended" or addr[0] != call.addr[0]:
            return None
        if req.from_.params.get("tag") != call.remote_tag or req.to.params.get("tag") != call.local_tag:
            return None
        return call.link.name

    def request(self, req, number, addr, now):
        key = (req.call_id, req.vias[0].branch, req.method)
        done = self.recent.get(key)
        if done is not None and req.method != "ACK":
            self.edge.send_data(done[0], addr)   # a request sent again: the same answer
            return
        call = self.calls.get(req.call_id)
        if req.method == "INVITE" and call is None:
            return self._invite(req, number, addr, now)
        if call is None:
            if req.method != "ACK":
                self.edge.respond(req, 481, addr)
            return
        if req.method == "ACK":
            if call.retransmit is not None and not call.outgoing:
                call.retransmit = None
                if call.state == "ended":
                    self._end(call)
            return
        if req.method == "CANCEL":
            return self._cancel(call, req, addr, now)
        if number != call.link.name:
            return self.edge.respond(req, 403, addr)
        if req.method == "BYE":
            self.reply(call, req, 200, addr, now)
            if call.state != "ended" and not call.detached:
                self.signal_host(call, wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_NORMAL}, now)
            self._end(call)
            return
        if req.method == "INVITE":
            return self._reinvite(call, req, addr, now)
        if req.method == "REFER":
            return self.transfers.refer(call, req, addr, now)

    def _respond(self, call, req, status, addr, headers=(), body=b""):
        response = sip.response_to(req, status, to_tag=call.local_tag if status > 100 else None,
                                   headers=headers, body=body)
        data = response.encode()
        self.edge.send_data(data, addr)
        return data

    def reply(self, call, req, status, addr, now, headers=()):
        """Answer a request in the call's dialog, and answer a repeat of it the same way."""
        self._remember(req, self._respond(call, req, status, addr, headers), now)

    def _remember(self, req, data, now):
        self.recent[(req.call_id, req.vias[0].branch, req.method)] = (data, now + GIVE_UP_MS)

    def _invite(self, req, number, addr, now):
        """A new call from a SIP phone: its offer checked, then a SETUP from its link."""
        trunk = self.trunk_at(addr) if number.startswith("trunk:") else None
        link = trunk or self.link_of(number, now)
        if link is None:
            return self.edge.respond(req, 403, addr)   # credentials fine, but no registration: not ours
        call = SipCall(link, self.new_call_no(number), addr, outgoing=False)
        call.call_id, call.invite = req.call_id, req
        call.invite_branch = req.vias[0].branch
        call.remote_tag = req.from_.params.get("tag")
        call.our_host = "%s" % (req.uri.host if req.uri.port is None else "%s:%d" % (req.uri.host, req.uri.port))
        call.remote_target = req.contacts()[0].uri.text if req.contacts() else req.from_.uri.text
        call.local_uri, call.remote_uri = _bare(req.get("To")), _bare(req.get("From"))
        call.rtp_port = self._rtp_port()
        if call.rtp_port is None:
            return self.edge.respond(req, 503, addr)
        try:
            if req.get("Content-Type", ) not in (None, "application/sdp") and req.body:
                return self.edge.respond(req, 415, addr, [("Accept", "application/sdp")])
            call.offer = sdplib.parse(req.body.decode("utf-8", "replace"))
            call.answer_text, call.codec = sdplib.answer(call.offer, self.media_address(call.our_host), call.rtp_port,
                                                         call.session_id, call.sdp_version)
        except sdplib.NotAcceptable:
            return self.edge.respond(req, 488, addr)
        except sdplib.SdpError:
            return self.edge.respond(req, 400, addr)   # no SDP (offer in the ACK) is not supported either
        self.calls[call.call_id] = call
        self.by_our_no[(number, call.call_no)] = call
        self.rtp[call.rtp_port] = call
        self._respond(call, req, 100, addr)
        called = req.uri.user or ""
        ies = {wire.IE_CALL_NO: call.call_no, wire.IE_CALLED: called, wire.IE_MEDIA_KEY: os.urandom(16)}
        if trunk is not None:   # the provider's call: its DID names who rings, its From who calls
            did = req.uri.user or req.to.uri.user or ""
            target = self.core.did_target(did) or self.core.did_target(req.to.uri.user or "")
            if target is None:
                self._end(call)
                return self._final_now(req, 404, addr)
            ies[wire.IE_CALLED] = target
            ies[wire.IE_CALLING] = (req.from_.uri.user or "anonymous")[:31]
            if req.from_.display:
                ies[wire.IE_CALLING_NAME] = req.from_.display[:20]
        self.core.place_sip_call(link, ies, now)

    def _final_now(self, req, status, addr):
        self.edge.respond(req, status, addr)

    def _cancel(self, call, req, addr, now):
        self._respond(call, req, 200, addr)
        if call.outgoing or call.state != "early" or call.final is not None:
            return
        self._final(call, 487, now)
        self.signal_host(call, wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_NORMAL}, now)

    def _final(self, call, status, now, headers=(), body=b""):
        """Our final response to the phone's INVITE, sent again until its ACK."""
        data = self._respond(call, call.invite, status, call.addr, headers, body)
        call.final = data
        call.retransmit = Retransmit(data, call.addr, now, T2_MS)
        if status >= 300:
            call.state = "ended"
        else:
            call.state = "confirmed"

    def _reinvite(self, call, req, addr, now):
        """A re-INVITE from the phone: hold (sendonly, inactive) or resume (sendrecv)."""
        try:
            offer = sdplib.parse(req.body.decode("utf-8", "replace"))
            call.sdp_version += 1
            text, codec = sdplib.answer(offer, self.media_address(call.our_host), call.rtp_port, call.session_id,
                                        call.sdp_version)
        except (sdplib.NotAcceptable, sdplib.SdpError):
            return self.edge.respond(req, 488, addr)
        held = offer.direction in ("sendonly", "inactive")
        if call.media is not None:   # hold, resume, a new address or codec (sip-media's SipMediaLeg)
            call.media.renegotiated(offer, codec, _mirror(offer.direction))
            call.codec = codec
        data = self._respond(call, req, 200, addr, [("Contact", "<sip:%s>" % call.our_host),
                                                    ("Content-Type", "application/sdp")], text.encode())
        call.retransmit = Retransmit(data, addr, now, T2_MS)
        if held != call.held_by_phone and call.state == "confirmed" and not call.detached:
            call.held_by_phone = held
            self.signal_host(call, wire.HOLD, {wire.IE_STATE: 1 if held else 0}, now)

    def response(self, resp, addr, now):
        for reg in self.registrations.values():
            if reg.call_id == resp.call_id:
                nxt = reg.response(resp, now)
                if nxt is not None:
                    self.send(nxt, reg.proxy)
                return
        call = self.calls.get(resp.call_id)
        if call is None:
            return
        method = resp.cseq[1]
        if method == "NOTIFY":
            if resp.status >= 200:
                call.notify_rt = None
            return
        if (method == "INVITE" and call.reinvite is not None and resp.cseq[0] == call.reinvite.cseq[0]
                and call.state != "ended"):
            return self._reinvite_response(call, resp, now)
        if method == "INVITE" and resp.cseq[0] == call.reinvite_acked and 200 <= resp.status < 300:
            ack = self.dialog_request(call, "ACK")   # our ACK was lost: the phone sends its 2xx again
            ack.set("CSeq", "%d ACK" % resp.cseq[0])
            return self.send(ack, call.addr)
        if method == "INVITE" and call.outgoing:
            return self._invite_response(call, resp, now)
        if method in ("BYE", "CANCEL") and resp.status >= 200:
            call.retransmit = None
            if method == "BYE":
                self._end(call)

    def _invite_response(self, call, resp, now):
        if resp.status < 200:
            if call.retransmit is not None and call.retransmit.cap is None:
                call.retransmit = None    # the INVITE arrived (a CANCEL's retransmission goes on)
            if resp.status in (180, 183) and call.state == "early" and not call.alerted and not call.cancel_pending:
                call.alerted = True
                self.signal_host(call, wire.ALERTING, {}, now)
            return
        tag = resp.to.params.get("tag")
        if resp.status in (401, 407) and isinstance(call.link, TrunkLink) and not call.authed:
            return self._trunk_auth(call, resp, now)
        if resp.status >= 300:
            ack = self.dialog_request(call, "ACK")
            ack.set("CSeq", "%d ACK" % call.invite.cseq[0])
            ack.set("Via", call.invite.get("Via"))
            ack.set("To", resp.get("To"))
            self.send(ack, call.addr)
            if call.state != "ended" and not call.cancel_pending:
                self.signal_host(call, wire.RELEASE, {wire.IE_CAUSE: upbx_cause(resp.status)}, now)
            self._end(call)
            return
        call.remote_tag = tag
        if resp.contacts():
            call.remote_target = resp.contacts()[0].uri.text
        ack = self.dialog_request(call, "ACK")
        ack.set("CSeq", "%d ACK" % call.invite.cseq[0])
        self.send(ack, call.addr)
        if call.state != "early":
            return   # a 200 sent again: ACKed again, nothing more
        call.retransmit = None
        if call.cancel_pending:   # we gave up while it answered: hang up at once
            return self._bye(call, now)
        try:
            answer = sdplib.parse(resp.body.decode("utf-8", "replace"))
        except sdplib.SdpError:
            self._bye(call, now)
            return self.signal_host(call, wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_PROTOCOL_ERROR}, now)
        call.codec = answer.codec()
        if call.codec is None:
            self._bye(call, now)
            return self.signal_host(call, wire.RELEASE, {wire.IE_CAUSE: wire.CAUSE_NOT_PERMITTED}, now)
        call.state = "confirmed"
        self._start_media(call, answer, now)
        self.signal_host(call, wire.ANSWER, {}, now)
        if call.party is not None:   # transferred to it while it rang: who it talks to now
            self._reinvite_out(call, now)

    def _trunk_auth(self, call, resp, now):
        """The provider challenged our INVITE: ACK that, send it again with the trunk's credentials."""
        ack = self.dialog_request(call, "ACK")
        ack.set("CSeq", "%d ACK" % call.invite.cseq[0])
        ack.set("Via", call.invite.get("Via"))
        ack.set("To", resp.get("To"))
        self.send(ack, call.addr)
        t = call.link.trunk
        header = trunklib.credentials(resp, "INVITE", call.invite.uri.text, t["user"], t["password"])
        invite = self.dialog_request(call, "INVITE", call.invite.body,
                               [(n, v) for n, v in call.invite.headers if n in ("Contact", "Content-Type", "Allow")]
                               + [header])
        call.invite = invite
        call.authed = True
        self.send(invite, call.addr)
        call.retransmit = Retransmit(invite.encode(), call.addr, now, None)

    def _bye(self, call, now):
        bye = self.dialog_request(call, "BYE")
        self.send(bye, call.addr)
        call.retransmit = Retransmit(bye.encode(), call.addr, now, T2_MS)
        call.state = "ended"

    # upbx in (the host sends the link what it would send a handset)

    def upbx_signal(self, link, msg_type, ies, now):
        if msg_type == wire.SETUP:
            return self._setup(link, ies, now)
        key = (link.name, ies.get(wire.IE_PEER_CALL_NO))
        cons = self.transfers.consultations.get(key)
        if cons is not None:
            return self.transfers.consultation_signal(cons, msg_type, ies, now)
        call = self.by_our_no.get(key)
        if call is None:
            return
        if wire.IE_CALL_NO in ies and call.host_call_no is None:
            call.host_call_no = ies[wire.IE_CALL_NO]
            self.by_host_leg[call.host_call_no] = call
        if msg_type == wire.ALERTING and not call.outgoing and call.state == "early":
            self._respond(call, call.invite, 180, call.addr, [("Contact", "<sip:%s>" % call.our_host)])
        elif msg_type == wire.ANSWER and not call.outgoing and call.state == "early":
            self._final(call, 200, now, [("Contact", "<sip:%s>" % call.our_host), ("Content-Type", "application/sdp")],
                        call.answer_text.encode())
            self._start_media(call, call.offer, now)
        elif msg_type == wire.RELEASE:
            self._released(call, ies.get(wire.IE_CAUSE, wire.CAUSE_NORMAL), now)
        elif msg_type == wire.DTMF and call.media is not None and wire.IE_DIGIT in ies:
            call.media.dtmf(ies[wire.IE_DIGIT], now)
        elif msg_type == wire.HOLD and call.state == "confirmed":
            self._hold(call, ies.get(wire.IE_STATE) == 1, now)
        elif msg_type == wire.PARTY and wire.IE_CALLING in ies and not isinstance(link, TrunkLink):
            call.party = (ies[wire.IE_CALLING], ies.get(wire.IE_CALLING_NAME, ""))
            if call.state == "confirmed":   # answered: the phone is told at once; else with its 200
                self._reinvite_out(call, now)

    def _released(self, call, cause, now):
        if call.state == "ended" or call.detached:
            return
        if call.refer is not None and cause == wire.CAUSE_TRANSFERRED:
            return self.transfers.transferred(call, now)
        if not call.outgoing:
            if call.state == "early":
                self._final(call, sip_status(cause), now)
                call.state = "ended"
                self.by_our_no.pop((call.link.name, call.call_no), None)
                self.by_host_leg.pop(call.host_call_no, None)
                self.rtp.pop(call.rtp_port, None)
                return
            return self._bye(call, now)
        if call.state == "early":
            cancel = sip.Request("CANCEL", call.invite.uri, [
                ("Via", call.invite.get("Via")), ("Max-Forwards", "70"), ("From", call.invite.get("From")),
                ("To", call.invite.get("To")), ("Call-ID", call.call_id),
                ("CSeq", "%d CANCEL" % call.invite.cseq[0])])
            self.send(cancel, call.addr)
            call.retransmit = Retransmit(cancel.encode(), call.addr, now, T2_MS)
            call.cancel_pending = True
            return
        self._bye(call, now)

    def _hold(self, call, hold, now):
        """The handset holds the SIP phone (or resumes): a re-INVITE saying so."""
        if hold == call.holding:
            return
        call.holding = hold
        if call.media is not None:
            call.media.rtp.hold("sendonly" if hold else "sendrecv")
        self._reinvite_out(call, now)

    def _reinvite_out(self, call, now):
        """A re-INVITE with what the phone is to know now: our direction (sendonly while we hold it)
        and, after a transfer, who it talks to (P-Asserted-Identity, RFC 3325, which desk phones
        show as the connected party). One at a time (RFC 3261 14.1): a change while one is in flight
        is sent after its final response."""
        if call.reinvite is not None:
            call.reinvite_again = True
            return
        call.reinvite_again = False
        call.sdp_version += 1
        body = sdplib.offer(self.media_address(call.our_host), call.rtp_port, call.session_id, call.sdp_version,
                            "sendonly" if call.holding else "sendrecv").encode()
        extra = [("Contact", "<sip:%s>" % call.our_host), ("Content-Type", "application/sdp")]
        if call.party is not None:
            number, name = call.party
            display = '"%s" ' % name.replace('"', "'").replace("\\", "") if name else ""
            extra.append(("P-Asserted-Identity", "%s<sip:%s@%s>" % (display, number, call.our_host)))
        req = self.dialog_request(call, "INVITE", body, extra)
        call.reinvite = req
        self.send(req, call.addr)
        call.retransmit = Retransmit(req.encode(), call.addr, now, None)

    def _reinvite_response(self, call, resp, now):
        """The phone answered our re-INVITE: ACK (a 2xx's in a new transaction, an error's in the
        INVITE's own, RFC 3261 17.1.1.3); then the next one if something changed meanwhile."""
        if resp.status < 200:
            call.retransmit = None if call.retransmit is not None and call.retransmit.cap is None else call.retransmit
            return
        ack = self.dialog_request(call, "ACK")
        ack.set("CSeq", "%d ACK" % resp.cseq[0])
        if resp.status >= 300:
            ack.set("Via", call.reinvite.get("Via"))
        else:
            call.reinvite_acked = resp.cseq[0]
        self.send(ack, call.addr)
        call.retransmit = None
        call.reinvite = None
        if call.reinvite_again:
            self._reinvite_out(call, now)

    def _setup(self, link, ies, now):
        """The host offers a call to the SIP extension: an INVITE to its newest registration."""
        if isinstance(link, TrunkLink):
            return self._trunk_setup(link, ies, now)
        contacts = sorted(self.edge.contacts_of(link.name, now), key=lambda b: b.expires_at)
        host_no = ies.get(wire.IE_CALL_NO)
        port = self._rtp_port() if contacts else None
        if port is None:   # released at the next tick: the host is still offering
            self.deferred.append((link, {wire.IE_PEER_CALL_NO: host_no, wire.IE_CALL_NO: 0,
                                         wire.IE_CAUSE: wire.CAUSE_UNREACHABLE}))
            return
        binding = contacts[-1]
        call = SipCall(link, self.new_call_no(link.name), binding.addr, outgoing=True)
        call.host_call_no = host_no
        call.call_id = "%s@upbx" % token()
        call.our_host = binding.our_host
        call.remote_target = binding.contact
        caller = ies.get(wire.IE_CALLING, "")
        name = ies.get(wire.IE_CALLING_NAME, "")
        call.local_uri = '"%s" <sip:%s@%s>' % (name.replace('"', "'"), caller, binding.our_host) if name else \
            "<sip:%s@%s>" % (caller, binding.our_host)
        call.remote_uri = "<sip:%s@%s>" % (link.name, binding.our_host)
        call.rtp_port = port
        self.calls[call.call_id] = call
        self.by_host_leg[host_no] = call
        self.by_our_no[(link.name, call.call_no)] = call
        self.rtp[port] = call
        body = sdplib.offer(self.media_address(binding.our_host), port, call.session_id, call.sdp_version).encode()
        invite = self.dialog_request(call, "INVITE", body, [("Contact", "<sip:%s@%s>" % (caller, binding.our_host)),
                                                      ("Content-Type", "application/sdp"),
                                                      ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")])
        call.invite = invite
        self.send(invite, call.addr)
        call.retransmit = Retransmit(invite.encode(), call.addr, now, None)

    def _trunk_setup(self, link, ies, now):
        """A call out on a trunk: an INVITE to the provider for the number (the SETUP's called)."""
        host_no = ies.get(wire.IE_CALL_NO)
        port = self._rtp_port()
        if port is None:
            self.deferred.append((link, {wire.IE_PEER_CALL_NO: host_no, wire.IE_CALL_NO: 0,
                                         wire.IE_CAUSE: wire.CAUSE_NETWORK_BUSY}))
            return
        t = link.trunk
        proxy_host = t["proxy"].split(":")[0]
        call = SipCall(link, self.new_call_no(link.name), link.proxy, outgoing=True)
        call.host_call_no = host_no
        call.call_id = "%s@upbx" % token()
        call.our_host = self.our_address()
        call.remote_target = "sip:%s@%s" % (ies.get(wire.IE_CALLED, ""), t["proxy"])
        name = ies.get(wire.IE_CALLING_NAME, "") or ies.get(wire.IE_CALLING, "")
        call.local_uri = '"%s" <sip:%s@%s>' % (name.replace('"', "'"), t["user"], proxy_host)
        call.remote_uri = "<sip:%s@%s>" % (ies.get(wire.IE_CALLED, ""), proxy_host)
        call.rtp_port = port
        self.calls[call.call_id] = call
        self.by_host_leg[host_no] = call
        self.by_our_no[(link.name, call.call_no)] = call
        self.rtp[port] = call
        body = sdplib.offer(self.media_address(call.our_host), port, call.session_id, call.sdp_version).encode()
        invite = self.dialog_request(call, "INVITE", body, [("Contact", "<sip:%s@%s>" % (t["user"], call.our_host)),
                                                      ("Content-Type", "application/sdp"),
                                                      ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")])
        call.invite = invite
        self.send(invite, call.addr)
        call.retransmit = Retransmit(invite.encode(), call.addr, now, None)
        call.retransmit.until = now + TRUNK_SILENT_MS   # no 100 Trying by then: the line is down

    # time and RTP

    def rtp_in(self, port, data, addr, now):
        call = self.rtp.get(port)
        if call is None or call.media is None:
            self.core.stats.drop("rtp for no call")
            return
        call.media.rtp_in(data, addr, now)

    def tick(self, now):
        if hasattr(self.core, "trunk_rows") and (self._trunks_read is None or now - self._trunks_read >= 5000):
            self._trunks_read = now
            self.refresh_trunks(self.core.trunk_rows(), now)
        for reg in self.registrations.values():
            if reg.due(now):
                self.send(reg.start(now), reg.proxy)
        deferred, self.deferred = self.deferred, []
        for link, ies in deferred:
            self.core.call_message(link, wire.RELEASE, ies, now)
        for call in list(self.calls.values()):
            if call.media is not None and call.state == "confirmed":
                call.media.tick(now)
            if call.bye_due is not None and now >= call.bye_due and call.state != "ended":
                call.bye_due = None      # transferred away, and the phone did not hang up
                self._bye(call, now)
            self.transfers.tick(call, now)
            r = call.retransmit
            if r is None:
                continue
            if now >= r.until:   # at the time itself (not at the next retransmission after it)
                call.retransmit = None
                self._gave_up(call, now)
                continue
            if now < r.next_at:
                continue
            self.edge.send_data(r.data, r.addr)
            r.interval = r.interval * 2 if r.cap is None else min(r.interval * 2, r.cap)
            r.next_at = now + r.interval
        for key in [k for k, (_, until) in self.recent.items() if until <= now]:
            del self.recent[key]

    def _gave_up(self, call, now):
        """No answer to what we sent, for 64*T1: the call is over (RFC 3261 17.1.1.2, 13.3.1.4)."""
        if call.state != "ended":
            cause = wire.CAUSE_NO_ANSWER if call.outgoing else wire.CAUSE_UNREACHABLE
            if call.outgoing and isinstance(call.link, TrunkLink) and call.state == "early" and not call.alerted:
                cause = wire.CAUSE_NO_OUTSIDE_LINE   # the trunk never answered the INVITE at all
            self.signal_host(call, wire.RELEASE, {wire.IE_CAUSE: cause}, now)
            if not call.outgoing and call.state == "confirmed":
                bye = self.dialog_request(call, "BYE")
                self.send(bye, call.addr)
        self._end(call)

    def rtp_wanted(self):
        return set(self.rtp)

    def trunk_status(self):
        return {name: {"proxy": link.trunk["proxy"], "registration": (self.registrations[name].state
                                                                      if name in self.registrations else None)}
                for name, link in self.trunk_links.items()}

    def status(self):
        return [{"call_id": c.call_id, "extension": c.link.name, "state": c.state,
                 "direction": "in" if c.outgoing else "out", "codec": c.codec, "rtp_port": c.rtp_port,
                 "party": c.party[0] if c.party else None, "transferred": c.detached,
                 # audio frames taken from the phone's RTP and sent to it so far (0 before the answer)
                 "frames_in": c.media.rtp.counters.get("frames in", 0) if c.media is not None else 0,
                 "frames_out": c.media.rtp.counters.get("frames out", 0) if c.media is not None else 0}
                for c in self.calls.values()]


def _bare(value):
    """A From/To value without its tag parameter (ours or theirs is added where it belongs)."""
    address = sip.parse_address(value, "From/To")
    params = "".join(";%s=%s" % (k, v) if v is not None else ";%s" % k
                     for k, v in address.params.items() if k != "tag")
    display = '"%s" ' % address.display.replace('"', "'") if address.display else ""
    return "%s<%s>%s" % (display, address.uri.text, params)


def _mirror(direction):
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)
