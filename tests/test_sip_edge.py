"""A host's SIP edge in memory: digest authentication (RFC 7616's vectors), the registrar, and
the abuse limits: malformed requests get 400 and nothing else, unauthenticated ones a challenge
and no state, a password scanner is soon not answered at all."""

import pathlib

import pytest

from upbx.host.core import Stats
from upbx.host.sip import digest, edge as sip_edge, message
from upbx.host.sip.edge import SipEdge

DATA = pathlib.Path(__file__).parent / "data" / "rfc4475"
PHONE = ("192.0.2.10", 5060)
SCANNER = ("198.18.7.7", 5070)
PASSWORDS = {"105": "s3cret-105", "106": "s3cret-106"}


def make_edge(offer=("SHA-256", "MD5")):
    return SipEdge("upbx", PASSWORDS.get, Stats(), key=b"k" * 32, offer=offer)


def register(number="105", contact=None, expires=None, branch="z9hG4bK1", cseq=1, call_id="reg1@phone",
             auth=None, via_host="10.0.0.5:5060;rport"):
    headers = [
        ("Via", "SIP/2.0/UDP %s;branch=%s" % (via_host, branch)),
        ("Max-Forwards", "70"),
        ("From", "<sip:%s@upbx>;tag=ft1" % number),
        ("To", "<sip:%s@upbx>" % number),
        ("Call-ID", call_id),
        ("CSeq", "%d REGISTER" % cseq),
        ("Contact", contact or "<sip:%s@10.0.0.5:5060>" % number),
    ]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    if auth:
        headers.append(("Authorization", auth))
    return message.Request("REGISTER", "sip:upbx", headers)


def answers(e):
    return [(message.parse(data), addr) for data, addr in e.datagrams_to_send()]


def one_answer(e, addr=PHONE):
    out = answers(e)
    assert len(out) == 1 and out[0][1] == addr, out
    return out[0][0]


def credentials(challenge, request, username, password, algorithm=None, cnonce="c0ffee", nc="00000001"):
    scheme, p = digest.parse_credentials(challenge)
    algorithm = algorithm or p["algorithm"]
    resp = digest.response(algorithm, username, p["realm"], password, request.method, request.uri.text,
                           p["nonce"], nc, cnonce)
    return ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, '
            'cnonce="%s", qop=auth, nc=%s' % (username, p["realm"], p["nonce"], request.uri.text, resp,
                                               algorithm, cnonce, nc))


def test_rfc7616_example_vectors():
    args = ("Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert digest.response("MD5", *args) == "8ca523f5e9506fed4657c9700eebdbec"
    assert digest.response("SHA-256", *args) == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_register_with_digest(algorithm):
    e = make_edge()
    e.receive_datagram(register().encode(), PHONE, 1000)
    challenge = one_answer(e)
    assert challenge.status == 401
    offered = challenge.values("WWW-Authenticate")
    assert [digest.parse_credentials(c)[1]["algorithm"] for c in offered] == ["SHA-256", "MD5"]
    assert e.bindings == {}                                      # nothing kept for a challenge
    chosen = next(c for c in offered if "algorithm=%s" % algorithm in c)
    req = register(cseq=2, expires=300)
    req.add("Authorization", credentials(chosen, req, "105", PASSWORDS["105"]))
    e.receive_datagram(req.encode(), PHONE, 1500)
    ok = one_answer(e)
    assert ok.status == 200
    assert ok.contacts()[0].uri.text == "sip:105@10.0.0.5:5060" and ok.contacts()[0].params["expires"] == "300"
    assert ok.vias[0].params["received"] == PHONE[0] and ok.vias[0].params["rport"] == str(PHONE[1])
    [binding] = e.contacts_of("105", 2000)
    assert binding.addr == PHONE                                 # reached where it came from (NAT)
    e.handle_timer(1500 + 300 * 1000)
    assert e.contacts_of("105", 1500 + 300 * 1000) == [] and e.bindings == {}


def test_md5_alone_is_offered_by_default_and_sha256_still_accepted():
    e = make_edge(offer=digest.OFFER)
    e.receive_datagram(register().encode(), PHONE, 1000)
    [challenge] = one_answer(e).values("WWW-Authenticate")
    assert "algorithm=MD5" in challenge
    req = register(cseq=2)
    req.add("Authorization", credentials(challenge, req, "105", PASSWORDS["105"], algorithm="SHA-256"))
    e.receive_datagram(req.encode(), PHONE, 1100)
    assert one_answer(e).status == 200


def test_wrong_password_then_silence_then_answered_again():
    e = make_edge()
    now = 1000
    replies = []
    for i in range(40):
        req = register(number="105", cseq=i + 1, branch="z9hG4bKs%d" % i)
        e.receive_datagram(req.encode(), SCANNER, now)
        out = answers(e)
        if out:
            challenge = out[0][0].values("WWW-Authenticate")[1]
            req.add("Authorization", credentials(challenge, req, "105", "guess%d" % i))
            e.receive_datagram(req.encode(), SCANNER, now)
            replies.append([r.status for r, _ in answers(e)])
        else:
            replies.append([])
        now += 10
    answered = [r for r in replies if r]
    assert all(r == [401] for r in answered)                     # a wrong password is a new challenge
    assert 3 <= len(answered) <= 5 and replies[-1] == []         # then the scanner is not answered
    assert e.bindings == {}
    # the phone next door (another address) is answered meanwhile
    e.receive_datagram(register().encode(), PHONE, now)
    assert one_answer(e).status == 401
    # a while later the scanner's address is answered again
    now += 60 * 1000
    e.receive_datagram(register(branch="z9hG4bKlater").encode(), SCANNER, now)
    assert one_answer(e, SCANNER).status == 401


def test_nonce_expires_stale_and_foreign_nonces():
    e = make_edge()
    e.receive_datagram(register().encode(), PHONE, 1000)
    challenge = one_answer(e).values("WWW-Authenticate")[1]
    late = 1000 + digest.NONCE_TTL_MS + 1
    req = register(cseq=2)
    req.add("Authorization", credentials(challenge, req, "105", PASSWORDS["105"]))
    e.receive_datagram(req.encode(), PHONE, late)
    again = one_answer(e)
    assert again.status == 401 and all("stale=true" in c for c in again.values("WWW-Authenticate"))
    assert e.bindings == {} and e.stats.counters["sip nonce stale"] == 1
    # the phone answers the stale challenge with the new nonce: registered
    req = register(cseq=3)
    req.add("Authorization", credentials(again.values("WWW-Authenticate")[0], req, "105", PASSWORDS["105"]))
    e.receive_datagram(req.encode(), PHONE, late + 50)
    assert one_answer(e).status == 200 and "105" in e.bindings
    e.bindings.clear()
    # the same credentials from another address: not our nonce for it
    e.receive_datagram(req.encode(), ("192.0.2.99", 5060), late + 100)
    assert one_answer(e, ("192.0.2.99", 5060)).status == 401
    assert e.stats.drops.get("sip auth failed: not our nonce") == 1
    # a nonce of another host (another key) is not ours either
    other = SipEdge("upbx", PASSWORDS.get, Stats(), key=b"x" * 32)
    other.receive_datagram(register().encode(), PHONE, 1000)
    foreign = answers(other)[0][0].values("WWW-Authenticate")[0]
    req = register(cseq=4)
    req.add("Authorization", credentials(foreign, req, "105", PASSWORDS["105"]))
    e.receive_datagram(req.encode(), PHONE, late + 200)
    assert one_answer(e).status == 401 and e.bindings == {}


def test_credentials_of_one_extension_do_not_register_another():
    e = make_edge()
    e.receive_datagram(register(number="106").encode(), PHONE, 1000)
    challenge = one_answer(e).values("WWW-Authenticate")[1]
    req = register(number="106", cseq=2)
    req.add("Authorization", credentials(challenge, req, "105", PASSWORDS["105"]))
    e.receive_datagram(req.encode(), PHONE, 1100)
    assert one_answer(e).status == 403 and e.bindings == {}


def authed(e, req, number="105", addr=PHONE, now=1000):
    """Send req, answer its challenge with number's password, return the final answer."""
    e.receive_datagram(req.encode(), addr, now)
    challenge = one_answer(e, addr)
    assert challenge.status in (401, 407)
    name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
    header = "Authorization" if challenge.status == 401 else "Proxy-Authorization"
    req.add(header, credentials(challenge.values(name)[1], req, number, PASSWORDS[number]))
    req.set("CSeq", "%d %s" % (req.cseq[0] + 1, req.method))
    e.receive_datagram(req.encode(), addr, now + 10)
    return one_answer(e, addr)


def test_unregister_and_refresh():
    e = make_edge()
    assert authed(e, register(expires=120)).status == 200
    assert len(e.contacts_of("105", 2000)) == 1
    ok = authed(e, register(contact="<sip:105@10.0.0.6:5062>", call_id="reg2@phone"), now=3000)
    assert len(ok.contacts()) == 2
    gone = authed(e, register(contact="*", expires=0, call_id="reg3@phone"), now=4000)
    assert gone.status == 200 and gone.contacts() == [] and e.bindings == {}
    brief = authed(e, register(expires=5, call_id="reg4@phone"), now=5000)
    assert brief.status == 423 and brief.get("Min-Expires") == "60" and e.bindings == {}


def test_invite_unauthenticated_gets_407_and_nothing_else():
    e = make_edge()
    invite = message.Request("INVITE", "sip:106@upbx", [
        ("Via", "SIP/2.0/UDP 198.18.7.7:5070;branch=z9hG4bKinv"), ("From", "<sip:105@upbx>;tag=a"),
        ("To", "<sip:106@upbx>"), ("Call-ID", "inv1"), ("CSeq", "1 INVITE"), ("Max-Forwards", "70"),
        ("Contact", "<sip:105@198.18.7.7:5070>")])
    e.receive_datagram(invite.encode(), SCANNER, 1000)
    r = one_answer(e, SCANNER)
    assert r.status == 407 and len(r.values("Proxy-Authenticate")) == 2
    assert e.bindings == {} and e.calls is None


def test_options_methods_and_extensions_once_authenticated():
    e = make_edge()
    def request(method, uri="sip:upbx", extra=()):
        return message.Request(method, uri, [
            ("Via", "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK%s" % method), ("From", "<sip:105@upbx>;tag=a"),
            ("To", "<sip:upbx>"), ("Call-ID", "m-" + method), ("CSeq", "1 " + method), ("Max-Forwards", "0")]
            + list(extra))
    ok = authed(e, request("OPTIONS"))
    assert ok.status == 200 and "REGISTER" in ok.get("Allow")          # Max-Forwards 0 to us: answered
    assert authed(e, request("OPTIONS", extra=[("Require", "nothingSupportsThis")])).status == 420
    assert authed(e, request("!interesting-Method0123456789_*+`.%indeed'~")).status == 501
    assert authed(e, request("SUBSCRIBE")).status == 405
    e.receive_datagram(request("OPTIONS", uri="nobodyKnowsThisScheme:totallyopaquecontent").encode(), PHONE, 1)
    assert one_answer(e).status == 416


@pytest.mark.parametrize("name", ["badinv01", "clerr", "ncl", "scalar02", "quotbal", "ltgtruri", "lwsruri",
                                  "lwsstart", "trws", "escruri", "baddate", "regbadct", "badaspec", "baddn",
                                  "mismatch01", "mismatch02", "badbranch", "insuf", "multi01", "mcl01",
                                  "badvers"])
def test_torture_requests_get_one_400_and_leave_nothing(name):
    e = make_edge()
    e.receive_datagram((DATA / (name + ".dat")).read_bytes(), SCANNER, 1000)
    [(data, addr)] = e.datagrams_to_send()   # the request's own fields are echoed, malformed or not
    status = b"505 Version Not Supported" if name == "badvers" else b"400 Bad Request"
    assert addr == SCANNER and data.startswith(b"SIP/2.0 " + status + b"\r\nWarning: 399 upbx ")
    assert e.bindings == {} and e.stats.drops["sip malformed"] == 1


@pytest.mark.parametrize("name", ["scalarlg", "bigcode", "bcast", "unreason", "noreason"])
def test_responses_to_nothing_are_dropped_silently(name):
    e = make_edge()
    e.receive_datagram((DATA / (name + ".dat")).read_bytes(), SCANNER, 1000)
    assert answers(e) == [] and e.bindings == {}


def test_garbage_floods_cost_the_source_not_the_host():
    e = make_edge()
    for i in range(1000):
        e.receive_datagram(b"\x16\x03\x01garbage %d\r\n\r\n" % i, SCANNER, 1000 + i)
    assert answers(e) == []                                             # no Via: nothing to answer
    assert e.stats.drops["sip malformed"] <= sip_edge.BURST + 5
    assert e.stats.drops["sip: source over its limit"] >= 1000 - sip_edge.BURST - 5
    assert e.bindings == {}
