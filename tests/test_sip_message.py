"""The SIP parser against RFC 4475's torture messages (tests/data/rfc4475, the RFC's own .dat
files, byte for byte): each valid one parsed to the fields the RFC says it carries, each invalid
request refused with the status the RFC names (400; 505 for an unknown version), each invalid
response refused (a response is dropped, never answered). Plus serialization round trips."""

import pathlib

import pytest

from upbx.host.sip import message
from upbx.host.sip.message import SipError, parse

DATA = pathlib.Path(__file__).parent / "data" / "rfc4475"


def load(name):
    data = (DATA / (name + ".dat")).read_bytes()
    if name == "baddn":
        # The RFC's file ends after "l: 0\r\n" with no empty line: without it the message would be
        # refused for its framing, and this test is about the display name.
        data += b"\r\n"
    return data


def test_wsinv_short_tortuous_invite():
    m = parse(load("wsinv"))
    assert m.method == "INVITE"
    assert m.uri.user == "vivekg" and m.uri.host == "chair-dnrc.example.com"
    assert m.uri.params == {"unknownparam": None}
    assert m.to.uri.text == "sip:vivekg@chair-dnrc.example.com" and m.to.params["tag"] == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"' and m.from_.params["tag"] == "98asjd8"
    assert m.get("Max-Forwards") == "0068"
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert m.cseq == (9, "INVITE")
    vias = m.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"), ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239")]
    assert m.get("Subject") == ""
    assert m.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = message.parse_address(m.values("Route")[0], "Route")
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    [contact] = m.contacts()
    assert contact.display == 'Quoted string ""' and contact.params == {
        "newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def test_intmeth_wide_range_of_valid_characters():
    m = parse(load("intmeth"))
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.host == "example.com"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.params["fromparam''~+*_!.-%"] == "работающий"
    assert m.from_.params["tag"] == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.cseq == (139122385, m.method)
    assert m.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"


def test_esc01_percent_escapes_are_kept_for_the_application():
    m = parse(load("esc01"))
    assert m.uri.user == "sips%3Auser%40example.com" and m.uri.host == "example.net"
    assert m.to.uri.user == "%75se%72"
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"          # compact i:
    assert m.get("Content-Type") == "application/sdp"                  # compact C:
    assert m.contacts()[0].uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}


def test_escnull_escaped_nulls():
    m = parse(load("escnull"))
    assert [c.uri.user for c in m.contacts()] == ["%00", "%00%00"]
    assert m.get("Content-Length") == "0"


def test_esc02_percent_that_is_no_escape():
    m = parse(load("esc02"))
    assert m.method == "RE%47IST%45R" and m.cseq == (29344, "RE%47IST%45R")
    assert m.to.display == "%Z%45"
    assert m.vias[0].branch == "z9hG4bK209%fzsnel234"
    assert len(m.contacts()) == 2 and m.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_no_space_before_angle_bracket():
    assert parse(load("lwsdisp")).from_.display == "caller"


def test_longreq_long_values():
    m = parse(load("longreq"))
    assert len(m.vias) == 34 and m.vias[0].host == "sip33.example.com"
    assert m.vias[-1].branch.startswith("verylong") and m.vias[-1].params["received"] == "192.0.2.5"
    assert m.to.uri.port == 6000 and "unknownparam1" in m.to.uri.params
    assert m.from_.params["tag"] == "1" + "298" * 50 + "2424"
    assert len(m.body) == 150


def test_dblreq_second_request_in_the_datagram_is_ignored():
    m = parse(load("dblreq"))
    assert m.method == "REGISTER" and m.body == b""
    assert m.contacts()[0].uri.text == "sip:j.user@host.example.com"


def test_semiuri_semicolon_in_user_part():
    m = parse(load("semiuri"))
    assert m.uri.user == "user;par=u%40example.net" and m.uri.host == "example.com" and m.uri.params == {}
    assert len(m.values("Accept")) == 6


def test_transports_unknown_ones_parse():
    assert [v.transport for v in parse(load("transports")).vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_with_nuls():
    m = parse(load("mpart01"))
    assert m.method == "MESSAGE" and b"\x00" in m.body and len(m.body) == int(m.get("Content-Length"))


def test_unreason_and_noreason_responses():
    m = parse(load("unreason"))
    assert m.status == 200 and m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    m = parse(load("noreason"))
    assert m.status == 100 and m.reason == ""


@pytest.mark.parametrize("name", ["bext01", "invut", "regaut01", "zeromf", "cparam01", "cparam02",
                                  "regescrt", "sdp01", "inv2543", "unkscm", "novelsc", "unksm2", "bcast"])
def test_application_layer_messages_are_well_formed(name):
    """RFC 4475 3.3 and 3.4: well-formed; what to answer is the endpoint's (test_sip_endpoint)."""
    m = parse(load(name))
    assert m.call_id.startswith(name)


def test_unknown_schemes():
    assert parse(load("unkscm")).uri.scheme == "nobodyknowsthisscheme"
    assert parse(load("novelsc")).uri.scheme == "soap.beep"
    assert parse(load("unksm2")).to.uri.scheme == "isbn"


INVALID = {   # RFC 4475 3.1.2 and 3.2.1: what is wrong, as our error says it
    "badinv01": "Via: bad parameter", "clerr": "Content-Length 9999", "ncl": "Content-Length: '-999'",
    "scalar02": "CSeq: malformed", "quotbal": "unterminated quoted string",
    "ltgtruri": "Request-URI: not a URI", "lwsruri": "request line", "lwsstart": "request line",
    "trws": "request line", "escruri": "Request-URI with headers", "baddate": "Date",
    "regbadct": "Contact: URI with", "badaspec": "To: not a URI", "baddn": "display name",
    "mismatch01": "CSeq method", "mismatch02": "CSeq method", "badbranch": "branch with no identifier",
    "insuf": "no To", "multi01": "appears 2 times", "mcl01": "Content-Length appears 2 times",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_requests_get_400(name):
    with pytest.raises(SipError) as e:
        parse(load(name))
    assert e.value.status == 400
    assert INVALID[name] in e.value.why


def test_unknown_version_gets_505():
    with pytest.raises(SipError) as e:
        parse(load("badvers"))
    assert e.value.status == 505


@pytest.mark.parametrize("name", ["scalarlg", "bigcode"])
def test_invalid_responses_are_refused(name):
    with pytest.raises(SipError):
        parse(load(name))


@pytest.mark.parametrize("garbage", [b"", b"\r\n\r\n", b"\x00" * 40, b"INVITE\r\n\r\n",
                                     b"SIP/2.0 200 OK\r\n\r\n", b"\xff\xfe\r\n\r\n",
                                     b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"])
def test_garbage_is_a_400(garbage):
    with pytest.raises(SipError) as e:
        parse(garbage)
    assert e.value.status == 400


def test_serialize_round_trip_and_response_to():
    m = parse(load("wsinv"))
    again = parse(m.encode())
    assert again.method == m.method and again.headers == m.headers and again.body == m.body
    r = message.response_to(m, 486, to_tag="abc")
    assert r.encode().startswith(b"SIP/2.0 486 Busy Here\r\n")
    back = parse(r.encode())
    assert back.status == 486 and back.to.params["tag"] == "1918181833n"   # a tag already there stays
    assert [v.branch for v in back.vias] == [v.branch for v in m.vias]
    assert back.cseq == (9, "INVITE") and back.get("Content-Length") == "0"


def test_every_torture_file_is_covered():
    covered = set(INVALID) | {"badvers", "scalarlg", "bigcode", "wsinv", "intmeth", "esc01", "escnull",
                              "esc02", "lwsdisp", "longreq", "dblreq", "semiuri", "transports",
                              "mpart01", "unreason", "noreason", "bext01", "invut", "regaut01",
                              "zeromf", "cparam01", "cparam02", "regescrt", "sdp01", "inv2543",
                              "unkscm", "novelsc", "unksm2", "bcast"}
    assert covered == {p.stem for p in DATA.glob("*.dat")}
