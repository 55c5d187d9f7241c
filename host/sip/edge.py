"""The SIP edge of a host, sans-IO: SIP phones register here and are answered from here.

`SipEdge.receive_datagram(data, addr, now)` takes one UDP datagram of the host's SIP port;
`datagrams_to_send()` gives back [(bytes, addr)]; `handle_timer(now)` expires registrations.
In the order a request meets them:

1. its source's token bucket (host/limits.py): an empty bucket means no answer at all;
2. the parser (host/sip/message.py): a malformed request gets 400 (505 for another SIP
   version) and nothing else; a malformed response is dropped;
3. authentication (host/sip/digest.py): every request but ACK and CANCEL (RFC 3261 22.1)
   needs credentials of an extension with a SIP password, else a 401 (407 for INVITE)
   challenge, for which nothing is kept; a request within a call's dialog (its Call-ID and both
   tags, which only the two ends know) from the call's phone's address is the call's phone's
   (phones do not answer a challenge to a BYE: baresip hangs up without it); a failed attempt costs its source FAILURE_COST
   tokens, so a password scanner is soon not answered at all;
4. the method: REGISTER (the registrar below), OPTIONS (200), INVITE/ACK/BYE/CANCEL/REFER to
   the call layer `calls` when a host has one, 405 for the other methods of SIP, 501 for a
   method it does not know.

Requests are answered to the address they came from (RFC 3581 rport and received), which is
how a phone behind NAT is reached: its binding keeps that address, not its Contact's.
"""

from upbx.host.limits import TokenBuckets
from upbx.host.sip import message as sip
from upbx.host.sip.digest import NONCE_TTL_MS, OFFER, Authenticator

RATE_PER_S = 5          # requests a source may have examined per second
BURST = 100             # ...and at once: a site of phones behind one NAT registering together
FAILURE_COST = 25       # a failed authentication: four in a row and the source goes unanswered
MIN_EXPIRES_S = 60
MAX_EXPIRES_S = 600     # registrations live in memory: after a host restart a phone is back within this
DEFAULT_EXPIRES_S = 600
MAX_CONTACTS = 4        # bindings per extension (a desk phone and a softphone, say)
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, REFER"
KNOWN_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
                 "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
SUPPORTED = ()          # option tags we implement (Require: anything else gets 420)
USER_AGENT = "upbx"
SIP_REALM = "upbx"      # the digest realm of every host: a phone's credentials are its extension's


class Binding:
    """A registered contact of an extension: where the phone is reached and until when."""
    __slots__ = ("number", "contact", "addr", "call_id", "cseq", "expires_at", "our_host")

    def __init__(self, number, contact, addr, call_id, cseq, expires_at, our_host):
        self.number, self.contact, self.addr = number, contact, addr
        self.call_id, self.cseq, self.expires_at = call_id, cseq, expires_at
        self.our_host = our_host    # host[:port] of the REGISTER's Request-URI: us, as the phone knows us


class SipEdge:
    """SIP phones of a host: registrations, challenges, abuse limits; calls go to `calls`."""

    def __init__(self, realm, password_of, stats, key=None, buckets=None, offer=OFFER, nonce_ttl_ms=NONCE_TTL_MS):
        self.realm = realm
        self.auth = Authenticator(realm, password_of, key, ttl_ms=nonce_ttl_ms, offer=offer)
        self.password_of = password_of
        self.stats = stats
        self.buckets = buckets or TokenBuckets(RATE_PER_S, BURST)
        self.bindings = {}      # number -> {contact URI text: Binding}
        self.calls = None       # the call layer (INVITE, ACK, BYE, CANCEL), when a host has one
        self._out = []

    # the surface a core calls

    def receive_datagram(self, data, addr, now):
        ip = addr[0]
        if data.strip(b"\r\n") == b"":
            self.stats.count("sip keepalives")   # RFC 5626 CRLF keepalive: nothing to answer
            return
        if not self.buckets.take(ip, now):
            self.stats.drop("sip: source over its limit")
            return
        try:
            msg = sip.parse(data)
        except sip.SipError as e:
            self.stats.drop("sip malformed")
            if not data.startswith(b"SIP/"):
                self._answer_malformed(data, addr, e)
            return
        if isinstance(msg, sip.Response):
            if self.calls is not None:
                self.calls.response(msg, addr, now)
            else:
                self.stats.drop("sip response to nothing")
            return
        self.stats.count("sip " + (msg.method if msg.method in KNOWN_METHODS else "other"))
        self._request(msg, addr, now)

    def datagrams_to_send(self):
        out, self._out = self._out, []
        return out

    def handle_timer(self, now):
        for number in list(self.bindings):
            live = {k: b for k, b in self.bindings[number].items() if b.expires_at > now}
            if live:
                self.bindings[number] = live
            else:
                del self.bindings[number]

    def contacts_of(self, number, now):
        """The live bindings of an extension (where to send an INVITE for it)."""
        return [b for b in self.bindings.get(number, {}).values() if b.expires_at > now]

    def status(self, now):
        out = {"registered": {n: len(self.contacts_of(n, now)) for n in sorted(self.bindings)}}
        if self.calls is not None:
            out["calls"] = self.calls.status()
        return out

    # sending

    def send(self, msg, addr):
        self._out.append((msg.encode(), addr))

    def send_data(self, data, addr):
        """Bytes encoded before (a retransmission)."""
        self._out.append((data, addr))

    def respond(self, request, status, addr, headers=(), to_tag=None, body=b""):
        response = sip.response_to(request, status, to_tag=to_tag, headers=headers, body=body)
        _mark_received(response, addr)
        response.add("Server", USER_AGENT)
        self.send(response, addr)
        self.stats.count("sip sent %d" % status)

    def _answer_malformed(self, data, addr, error):
        """A 400 (or 505) from whatever of the request could be read; nothing if too little."""
        try:
            head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
            fields = [sip._field(line) for line in sip._unfold(head)[1:] if line]
        except sip.SipError:
            return
        keep = [(n, v) for n, v in fields if n in ("Via", "From", "To", "Call-ID", "CSeq")]
        if not any(n == "Via" for n, _ in keep):
            return   # no Via, no way to address a response (RFC 3261 18.2.2)
        response = sip.Response(error.status, sip.REASONS.get(error.status, "Bad Request"), keep)
        response.headers.insert(0, ("Warning", '399 upbx "%s"' % error.why.replace('"', "'")[:100]))
        self._out.append((response.encode(), addr))
        self.stats.count("sip sent %d" % error.status)

    # requests

    def _request(self, req, addr, now):
        method = req.method
        if method == "ACK":
            if self.calls is not None:
                self.calls.request(req, None, addr, now)
            return
        if req.uri.scheme not in ("sip", "sips"):
            return self.respond(req, 416, addr)
        if method == "CANCEL":
            if self.calls is not None:
                return self.calls.request(req, None, addr, now)
            return self.respond(req, 481, addr)
        number = None
        if self.calls is not None:   # a trunk's provider is trusted by its address (host/sip/trunk.py)
            number = self.calls.trunk_request(req, addr) or self.calls.in_dialog(req, addr)
        if number is not None and number.startswith("trunk:") and method == "REGISTER":
            return self.respond(req, 403, addr)
        if number is None:   # a request in a call's dialog, from the call's phone, needs no credentials
            number = self._authenticate(req, addr, now)
        if number is None:
            return
        unsupported = [t for v in req.values("Require") for t in v.split(",") if t.strip() not in SUPPORTED]
        if unsupported:
            return self.respond(req, 420, addr, [("Unsupported", ", ".join(t.strip() for t in unsupported))])
        if method == "REGISTER":
            return self._register(req, number, addr, now)
        if method == "OPTIONS":
            return self.respond(req, 200, addr, [("Allow", ALLOW), ("Accept", "application/sdp")])
        if method in ("INVITE", "BYE", "REFER") and self.calls is not None:
            return self.calls.request(req, number, addr, now)
        if method in KNOWN_METHODS:
            return self.respond(req, 405, addr, [("Allow", ALLOW)])
        return self.respond(req, 501, addr, [("Allow", ALLOW)])

    def _authenticate(self, req, addr, now):
        """The extension whose credentials the request carries, or None (it has been answered)."""
        proxy = req.method == "INVITE"
        header = "Proxy-Authorization" if proxy else "Authorization"
        claimed = _user_of(req)
        stale = False
        for value in req.values(header):
            verdict, who = self.auth.check(req, value, addr[0], now)
            if verdict == "fail":
                self.stats.drop("sip auth failed: " + who)
                self.buckets.charge(addr[0], FAILURE_COST)
                break
            if who != claimed:
                self.stats.drop("sip auth failed: credentials of another extension")
                self.buckets.charge(addr[0], FAILURE_COST)
                return self.respond(req, 403, addr)
            if verdict == "ok":
                return who
            self.stats.count("sip nonce stale")    # challenged again with stale=true
            stale = True
        status = 407 if proxy else 401
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        self.respond(req, status, addr, [(name, c) for c in self.auth.challenges(addr[0], now, stale)])
        return None

    def _register(self, req, number, addr, now):
        """RFC 3261 10.3, steps 6-8: add, refresh or remove bindings; 200 lists them."""
        expires_header = req.get("Expires")
        values = req.values("Contact")
        current = dict(self.bindings.get(number, {}))
        call_id, (cseq, _) = req.call_id, req.cseq
        our_host = req.uri.host if req.uri.port is None else "%s:%d" % (req.uri.host, req.uri.port)
        if values == ["*"]:
            if expires_header != "0":
                return self.respond(req, 400, addr)
            current.clear()
        else:
            changes = []
            for contact in req.contacts():
                e = contact.params.get("expires", expires_header)
                e = int(e) if e is not None and e.isdigit() else DEFAULT_EXPIRES_S
                if 0 < e < MIN_EXPIRES_S:
                    return self.respond(req, 423, addr, [("Min-Expires", str(MIN_EXPIRES_S))])
                old = current.get(contact.uri.text)
                if old is not None and old.call_id == call_id and old.cseq >= cseq:
                    return self.respond(req, 500, addr)   # out of order (RFC 3261 10.3 step 7)
                changes.append((contact.uri.text, min(e, MAX_EXPIRES_S)))
            for uri, e in changes:
                if e == 0:
                    current.pop(uri, None)
                else:
                    current[uri] = Binding(number, uri, addr, call_id, cseq, now + e * 1000, our_host)
            if len(current) > MAX_CONTACTS:
                for uri in sorted(current, key=lambda u: current[u].expires_at)[:len(current) - MAX_CONTACTS]:
                    del current[uri]
        if current:
            self.bindings[number] = current
        else:
            self.bindings.pop(number, None)
        listed = [("Contact", "<%s>;expires=%d" % (b.contact, (b.expires_at - now) // 1000))
                  for b in current.values()]
        self.respond(req, 200, addr, listed)


def _user_of(req):
    """The extension a request speaks for: To's user in a REGISTER, From's otherwise."""
    address = req.to if req.method == "REGISTER" else req.from_
    return address.uri.user


def _mark_received(response, addr):
    """RFC 3261 18.2.1 and RFC 3581: say in the top Via where the request really came from."""
    vias = response.values("Via")
    if not vias:
        return
    top = sip.parse_via(vias[0])
    text = top.text
    if "rport" in top.params:
        text = text.replace(";rport", ";rport=%d" % addr[1], 1) if top.params["rport"] is None else text
    if top.host != addr[0] or "rport" in top.params:
        text += ";received=%s" % addr[0] if "received" not in top.params else ""
    rest = [(n, v) for n, v in response.headers if n != "Via"]
    firsts = [("Via", text)] + [("Via", v) for v in vias[1:]]
    response.headers = firsts + rest
