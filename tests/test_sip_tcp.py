"""SIP over TCP (RFC 3261 section 18, host/sip/transport.py): the stream framing by Content-Length
(messages split at every byte, pipelined, CRLF keepalives, streams that cannot be framed), what
the host writes on a connection (Via TCP, Contact ;transport=tcp), and end to end with real
daemons on loopback: Debian's baresip registered with `;transport=tcp` at site a's remote host
calls handset 301 and is called by it, each side hearing the other's tone, every SIP message on
the one connection baresip opened (the host's UDP port sees none of them)."""
import socket
import time

import pytest

from tests.sipkit import HS_HZ, heard_both_ways, sip_lab, start_baresip
from upbx.host.sip import message
from upbx.host.sip.transport import PING, FramingError, StreamFramer, for_stream

REGISTER = (b"REGISTER sip:upbx SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bK1\r\n"
            b"From: <sip:105@upbx>;tag=a\r\nTo: <sip:105@upbx>\r\nCall-ID: r1\r\nCSeq: 1 REGISTER\r\n"
            b"Contact: <sip:105@10.0.0.5;transport=tcp>\r\nContent-Length: 0\r\n\r\n")
SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
INVITE = (b"INVITE sip:301@upbx SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bK2\r\n"
          b"From: <sip:105@upbx>;tag=b\r\nTo: <sip:301@upbx>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
          b"Content-Type: application/sdp\r\nl: %d\r\n\r\n" % len(SDP)) + SDP


@pytest.mark.parametrize("chunk", [1, 2, 7, 100, 10000])
def test_messages_are_framed_by_content_length_whatever_the_reads(chunk):
    stream = b"\r\n" + REGISTER + INVITE + b"\r\n\r\n" + REGISTER
    framer, out = StreamFramer(), []
    for i in range(0, len(stream), chunk):
        out += framer.feed(stream[i:i + chunk])
    assert out == [REGISTER, INVITE, PING, REGISTER]
    assert message.parse(out[1]).body == SDP and framer.buf == b""


def test_a_message_without_content_length_has_no_body():
    head = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    assert StreamFramer().feed(head + REGISTER) == [head, REGISTER]


@pytest.mark.parametrize("stream,why", [
    (REGISTER.replace(b"Content-Length: 0", b"Content-Length: zero"), "Content-Length zero"),
    (REGISTER.replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 5"), "Content-Length 0, 5"),
    (REGISTER.replace(b"Content-Length: 0", b"Content-Length: 99999"), "a message of 100221 bytes"),
    (b"INVITE sip:x SIP/2.0\r\n" + b"X: " + b"y" * 20000, "no end of the header fields"),
])
def test_a_stream_that_cannot_be_framed_is_refused(stream, why):
    with pytest.raises(FramingError, match=why):
        StreamFramer().feed(stream)


def test_what_the_host_sends_on_a_connection_says_tcp():
    req = message.Request("INVITE", "sip:105@10.0.0.5:5060;transport=tcp", [
        ("Via", "SIP/2.0/UDP 10.1.0.2:5060;branch=z9hG4bKx;rport"), ("From", "<sip:301@10.1.0.2>;tag=1"),
        ("To", "<sip:105@10.1.0.2>"), ("Call-ID", "x"), ("CSeq", "1 INVITE"), ("Contact", "<sip:301@10.1.0.2>")])
    out = message.parse(for_stream(req.encode()))
    assert out.get("Via").startswith("SIP/2.0/TCP 10.1.0.2:5060;") and out.get("Contact") == \
        "<sip:301@10.1.0.2;transport=tcp>"
    ok = message.response_to(message.parse(INVITE), 200, to_tag="t", headers=[("Contact", "<sip:10.1.0.2>")])
    out = message.parse(for_stream(ok.encode()))
    assert out.get("Via") == "SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bK2" and out.get("Contact") == \
        "<sip:10.1.0.2;transport=tcp>"
    registered = message.response_to(message.parse(REGISTER), 200, headers=[
        ("Contact", "<sip:105@10.0.0.5;transport=tcp>;expires=600")])
    assert message.parse(for_stream(registered.encode())).get("Contact") == \
        "<sip:105@10.0.0.5;transport=tcp>;expires=600"     # the phone's own, as it registered it


@pytest.fixture
def lab(tmp_path):
    with sip_lab(tmp_path, sip={"105": "a"}) as lab:
        lab.wait_for(lambda: lab.status("site-a")["sip_listen"] is not None, "site a's SIP port", timeout=20)
        yield lab


def test_a_raw_connection_registers_in_pieces_and_a_bad_stream_is_closed(lab):
    """A REGISTER written a few bytes at a time is answered (401) on the connection; a stream with
    a Content-Length that is no number is closed by the host."""
    port = lab.sip_ports["site-a"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for i in range(0, len(REGISTER), 9):
            s.sendall(REGISTER[i:i + 9])
            time.sleep(0.01)
        s.sendall(b"\r\n\r\n")                      # a keepalive ping: one CRLF back
        data = b""
        while not data.endswith(b"\r\n\r\n\r\n"):   # the 401's end, then the pong
            data += s.recv(4096)
        reply = message.parse(data[:data.index(b"\r\n\r\n") + 4])
        assert reply.status == 401 and reply.get("Via").startswith("SIP/2.0/TCP 10.0.0.5:5060;")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(REGISTER.replace(b"Content-Length: 0", b"Content-Length: x"))
        assert s.recv(4096) == b""                   # closed: the stream cannot be framed
    assert lab.status("site-a")["stats"]["counters"]["sip tcp streams unframeable"] == 1


def sip_udp_in(lab):
    return lab.status("site-a")["stats"]["counters"].get("sip udp datagrams", 0)


def test_baresip_over_tcp_calls_a_handset_and_is_called(lab, tmp_path):
    with start_baresip(lab, tmp_path, "105", seconds=30, transport="tcp") as bs:
        assert lab.status("site-a")["sip_tcp_connections"] == 1
        # 105 calls 301
        record = lab.path("301-in.rx.g711")
        handset = lab.phone("301", "--answer", "--send", "tone:%d" % HS_HZ, "--record-g711",
                            record, "--exit-after", "40", "--exit-after-call", tag="callee")
        lab.wait_registered("301")
        assert bs.dial("sip:301@127.0.0.1:%d;transport=tcp" % lab.sip_ports["site-a"])["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=20)
        time.sleep(3)
        assert bs.hangup()["ok"]
        bs.wait_event("CALL_CLOSED", timeout=10)
        handset.wait(30)
        heard_both_ways(bs, record)
        # 301 calls 105: the INVITE goes down the connection baresip keeps open
        since = len(bs.events)
        record = lab.path("301-out.rx.g711")
        caller = lab.phone("301", "--call", "105", "--call-after", "1", "--duration", "3", "--send",
                           "tone:%d" % HS_HZ, "--record-g711", record, "--exit-after-call",
                           "--exit-after", "40", tag="caller")
        bs.wait_event("CALL_INCOMING", timeout=20, since=since)
        assert bs.accept()["ok"]
        bs.wait_event("CALL_ESTABLISHED", timeout=10, since=since)
        bs.wait_event("CALL_CLOSED", timeout=20, since=since)
        caller.wait(30)
        heard_both_ways(bs, record)
        counters = lab.status("site-a")["stats"]["counters"]
        assert lab.status("site-a")["sip_tcp_connections"] == 1 and counters["sip tcp connections"] == 1
        assert sip_udp_in(lab) == 0, counters         # every SIP message came on the connection
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:   # (and the counter counts UDP)
            udp.sendto(b"\r\n\r\n", ("127.0.0.1", lab.sip_ports["site-a"]))
        lab.wait_for(lambda: sip_udp_in(lab) == 1, "the UDP datagram counted")
    assert lab.status("site-a")["sip"]["calls"] == []
