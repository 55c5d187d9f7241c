"""A small SIP user agent for in-memory tests of the B2BUA (tests/test_sip_calls.py): it speaks to a
host core's SIP surface (receive_sip, sip_datagrams_to_send, receive_rtp, rtp_datagrams_to_send)
as a phone on the network would. Real clients (baresip) are the end-to-end tests' business; this
one lets a test drive every step and look at every message."""
import struct

from upbx.host.sip import digest, message, sdp as sdplib


class SipPhone:
    def __init__(self, host, number, password, address, rtp_port=30000, host_ip="upbx"):
        self.host, self.number, self.password, self.address = host, number, password, address
        self.domain = host_ip      # how the phone names the host (its server's address, as configured)
        self.rtp_port = rtp_port
        self.inbox = []          # messages from the host, in order
        self.rtp_in = []         # (payload, source port) of RTP from the host
        self.cseq = 1
        self.n = 0
        self.dialog = None       # {call_id, local_tag, remote_tag, target, our_from, our_to, host_rtp}
        self.pending = {}        # Call-ID -> the request waiting for auth

    # plumbing

    def deliver(self, now):
        """Take what the host sent this phone (SIP and RTP)."""
        for data, addr in self.host.sip_datagrams_to_send():
            assert addr == self.address, (addr, data[:80])
            self.inbox.append(message.parse(data))
        for data, addr, port in self.host.rtp_datagrams_to_send():
            self.rtp_in.append((data, addr, port))

    def send(self, msg, now):
        self.host.receive_sip(msg.encode(), self.address, now)

    def take(self):
        out, self.inbox = self.inbox, []
        return out

    def branch(self):
        self.n += 1
        return "z9hG4bKua%s%d" % (self.number, self.n)

    def request(self, method, uri, call_id, to, from_tag, body=b"", extra=(), to_tag=None):
        self.cseq += 1
        headers = [("Via", "SIP/2.0/UDP %s:%d;branch=%s;rport" % (self.address[0], self.address[1], self.branch())),
                   ("Max-Forwards", "70"), ("From", "<sip:%s@upbx>;tag=%s" % (self.number, from_tag)),
                   ("To", to + (";tag=%s" % to_tag if to_tag else "")), ("Call-ID", call_id),
                   ("CSeq", "%d %s" % (self.cseq, method)),
                   ("Contact", "<sip:%s@%s:%d>" % (self.number, self.address[0], self.address[1]))] + list(extra)
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return message.Request(method, uri, headers, body)

    def with_credentials(self, req, challenge_response):
        """req again, with credentials for the challenge in challenge_response (401 or 407)."""
        name, header = (("WWW-Authenticate", "Authorization") if challenge_response.status == 401
                        else ("Proxy-Authenticate", "Proxy-Authorization"))
        _, p = digest.parse_credentials(challenge_response.values(name)[0])
        resp = digest.response(p["algorithm"], self.number, p["realm"], self.password, req.method, req.uri.text,
                               p["nonce"], "00000001", "abc")
        again = message.Request(req.method, req.uri, list(req.headers), req.body)
        self.cseq += 1
        again.set("CSeq", "%d %s" % (self.cseq, req.method))
        again.set("Via", "SIP/2.0/UDP %s:%d;branch=%s;rport" % (self.address[0], self.address[1], self.branch()))
        again.add(header, 'Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, '
                          'cnonce="abc", qop=auth, nc=00000001' % (self.number, p["realm"], p["nonce"],
                                                                   req.uri.text, resp, p["algorithm"]))
        return again

    def authed(self, req, now):
        """Send req; answer a challenge once. Returns the messages the host sent back."""
        self.send(req, now)
        self.deliver(now)
        out = self.take()
        if out and out[-1].status in (401, 407):
            self.send(self.with_credentials(req, out[-1]), now)
            self.deliver(now)
            out = self.take()
        return out

    # what a phone does

    def sip_uri(self):
        return "sip:" + self.domain

    def register(self, now, expires=600):
        req = self.request("REGISTER", self.sip_uri(), "reg-%s" % self.number, "<sip:%s@upbx>" % self.number, "r1",
                           extra=[("Expires", str(expires))])
        req.set("From", "<sip:%s@upbx>;tag=r1" % self.number)
        [ok] = self.authed(req, now)
        assert ok.status == 200, ok
        return ok

    def offer(self, direction="sendrecv", version=1):
        return sdplib.offer(self.address[0], self.rtp_port, 4242, version, direction).encode()

    def invite(self, called, now, call_id="call-1"):
        req = self.request("INVITE", "sip:%s@%s" % (called, self.domain), call_id, "<sip:%s@upbx>" % called, "t1",
                           body=self.offer())
        out = self.authed(req, now)
        self.dialog = {"call_id": call_id, "local_tag": "t1", "to": "<sip:%s@upbx>" % called,
                       "invite": req, "target": "sip:%s@upbx" % called}
        return out

    def ack(self, response, now):
        d = self.dialog
        d["remote_tag"] = response.to.params.get("tag")
        if response.contacts():
            d["target"] = response.contacts()[0].uri.text
        ack = self.request("ACK", d["target"], d["call_id"], d["to"], d["local_tag"], to_tag=d["remote_tag"])
        ack.set("CSeq", "%d ACK" % response.cseq[0])
        self.send(ack, now)

    def bye(self, now):
        d = self.dialog
        req = self.request("BYE", d["target"], d["call_id"], d["to"], d["local_tag"], to_tag=d["remote_tag"])
        return self.authed(req, now)

    def reinvite(self, direction, now, version=2):
        d = self.dialog
        req = self.request("INVITE", d["target"], d["call_id"], d["to"], d["local_tag"], body=self.offer(direction, version),
                           to_tag=d["remote_tag"])
        return self.authed(req, now)

    def answer_call(self, invite, now, status=200):
        """Answer the host's INVITE: 180, then status (with our SDP answer when 200)."""
        tag = "p%s" % self.number
        ringing = message.response_to(invite, 180, to_tag=tag)
        self.send(ringing, now)
        if status == 200:
            body, _codec = sdplib.answer(invite.body.decode(), self.address[0], self.rtp_port, 77, 1)
            final = message.response_to(invite, 200, to_tag=tag, body=body.encode(),
                                        headers=[("Contact", "<sip:%s@%s:%d>" % (self.number, *self.address)),
                                                 ("Content-Type", "application/sdp")])
        else:
            final = message.response_to(invite, status, to_tag=tag)
        self.send(final, now)
        self.dialog = {"call_id": invite.call_id, "local_tag": tag, "remote_tag": invite.from_.params["tag"],
                       "to": "<%s>" % invite.from_.uri.text, "target": invite.contacts()[0].uri.text}
        # our requests in this dialog go From us To them: swap what request() writes
        return final

    def rtp(self, seq, ts, payload, host_port, now, pt=0):
        data = struct.pack("!BBHII", 0x80, pt, seq, ts, 0x1234) + payload
        self.host.receive_rtp(host_port, data, (self.address[0], self.rtp_port), now)

    def refer(self, target, now, replaces=None):
        """REFER in the current dialog to sip:target@host (with replaces, a dialog of ours as
        (call_id, local_tag, remote_tag): the attended transfer's Replaces, RFC 3891)."""
        d = self.dialog
        uri = "sip:%s@%s" % (target, self.domain)
        if replaces is not None:
            call_id, local, remote = replaces
            uri += "?Replaces=%s%%3Bto-tag%%3D%s%%3Bfrom-tag%%3D%s" % (call_id.replace("@", "%40"), remote, local)
        req = self.request("REFER", d["target"], d["call_id"], d["to"], d["local_tag"], to_tag=d["remote_tag"],
                           extra=[("Refer-To", "<%s>" % uri), ("Referred-By", "<sip:%s@upbx>" % self.number)])
        self.send(req, now)   # in the dialog: no challenge
        self.deliver(now)
        out = self.take()
        self.inbox = [m for m in out if hasattr(m, "method")]   # NOTIFYs already: left for the test
        return [m for m in out if not hasattr(m, "method")]

    def answer_requests(self, msgs, now):
        """200 to every NOTIFY, BYE and re-INVITE in msgs (a re-INVITE's 200 with our SDP answer);
        returns the requests."""
        requests = [m for m in msgs if hasattr(m, "method")]
        for req in requests:
            if req.method in ("NOTIFY", "BYE"):
                self.send(message.response_to(req, 200, to_tag=req.to.params.get("tag")), now)
            elif req.method == "INVITE":
                body, _codec = sdplib.answer(req.body.decode(), self.address[0], self.rtp_port, 77, 2)
                self.send(message.response_to(req, 200, to_tag=req.to.params.get("tag"), body=body.encode(),
                                              headers=[("Contact", "<sip:%s@%s:%d>" % (self.number, *self.address)),
                                                       ("Content-Type", "application/sdp")]), now)
        return requests
