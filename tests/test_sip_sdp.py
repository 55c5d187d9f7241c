"""SDP offer/answer for SIP phones (host/sip/sdp.py): real user agents' offers, hold, and bad input.

Invariants: every offer from the samples parses to the stream, codecs, DTMF payload type, ptime
and direction the phone meant; upbx's answer has as many m= lines as the offer, speaks the
offerer's first G.711 codec with its telephone-event type, and parses back; an offer without
G.711 raises NotAcceptable; malformed SDP (and any mutation of a good one) raises SdpError or
parses, never anything else.
"""
import random

import pytest

from tests import sip_sdp_samples as samples
from upbx.host.sip import sdp
from upbx.host.sip.sdp import NotAcceptable, SdpError, answer, offer, parse


def test_baresip_offer_parses_to_its_audio_stream():
    s = parse(samples.BARESIP)
    assert (s.address, s.port, s.ptime, s.direction, s.dtmf_pt) == ("10.1.0.11", 10140, 20, "sendrecv", 101)
    assert s.formats == [(96, "OPUS", 48000), (9, "G722", 8000), (0, "PCMU", 8000), (8, "PCMA", 8000),
                         (101, "TELEPHONE-EVENT", 8000)]
    assert s.codec() == "PCMU"
    assert s.origin == ("2106397424", "2950451136")


def test_linphone_telephone_event_is_the_8000_hz_one_and_video_is_refused():
    s = parse(samples.LINPHONE)
    assert (s.address, s.port, s.dtmf_pt) == ("192.168.1.20", 7078, 100)
    text, codec = answer(samples.LINPHONE, "10.1.0.2", 20000, 7, 1)
    assert codec == "PCMU"
    lines = text.split("\r\n")
    assert [l for l in lines if l.startswith("m=")] == ["m=audio 20000 RTP/AVP 0 100", "m=video 0 RTP/AVP 96 97"]
    assert "a=rtpmap:100 telephone-event/8000" in lines and "a=ptime:20" in lines
    back = parse(text)
    assert (back.address, back.port, back.dtmf_pt, back.direction) == ("10.1.0.2", 20000, 100, "sendrecv")
    assert back.formats == [(0, "PCMU", 8000), (100, "TELEPHONE-EVENT", 8000)]


def test_polycom_alaw_first_gets_pcma_and_static_types_without_rtpmap():
    s = parse(samples.POLYCOM_ALAW)
    assert s.formats == [(8, "PCMA", 8000), (0, "PCMU", 8000), (127, "TELEPHONE-EVENT", 8000)]
    assert (s.ptime, s.direction) == (30, "sendrecv")       # a=sendrecv at session level
    text, codec = answer(s, "10.1.0.2", 20002, 1, 1)
    assert codec == "PCMA"
    assert "m=audio 20002 RTP/AVP 8 127\r\n" in text and "a=fmtp:127 0-15" in text


def test_yealink_and_grandstream_offers():
    for body, port in ((samples.YEALINK, 11796), (samples.GRANDSTREAM, 5004)):
        s = parse(body)
        assert (s.port, s.codec(), s.dtmf_pt, s.ptime, s.direction) == (port, "PCMU", 101, 20, "sendrecv")
        assert answer(body, "10.1.0.2", 20004, 1, 1)[1] == "PCMU"


def test_hold_by_sendonly_is_answered_recvonly():
    s = parse(samples.YEALINK_HOLD)
    assert s.direction == "sendonly" and s.origin == ("20045", "20046")
    text, _ = answer(s, "10.1.0.2", 20000, 5, 2)
    assert parse(text).direction == "recvonly"


def test_old_hold_with_address_0_0_0_0_means_send_nothing_there():
    s = parse(samples.CISCO_OLD_HOLD)
    assert (s.address, s.direction) == ("0.0.0.0", "sendonly")
    assert parse(samples.CISCO_OLD_HOLD.replace("m=audio", "a=recvonly\r\nm=audio")).direction == "inactive"
    text, codec = answer(s, "10.1.0.2", 20000, 5, 2)
    assert codec == "PCMU" and parse(text).direction == "recvonly"


@pytest.mark.parametrize("theirs, wanted, ours", [
    ("sendrecv", None, "sendrecv"), ("sendrecv", "sendonly", "sendonly"), ("sendrecv", "inactive", "inactive"),
    ("sendonly", None, "recvonly"), ("sendonly", "sendrecv", "recvonly"), ("sendonly", "sendonly", "inactive"),
    ("recvonly", None, "sendonly"), ("recvonly", "sendrecv", "sendonly"), ("inactive", "sendrecv", "inactive"),
])
def test_answer_direction_fits_both_sides(theirs, wanted, ours):
    body = samples.YEALINK.replace("a=sendrecv", "a=" + theirs)
    assert parse(answer(body, "10.1.0.2", 20000, 1, 1, direction=wanted)[0]).direction == ours


def test_offer_is_what_upbx_speaks_and_parses_back():
    text = offer("198.18.1.1", 30000, 42, 3, direction="sendonly")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    s = parse(text)
    assert (s.address, s.port, s.ptime, s.direction, s.dtmf_pt) == ("198.18.1.1", 30000, 20, "sendonly", 101)
    assert s.formats == [(0, "PCMU", 8000), (8, "PCMA", 8000), (101, "TELEPHONE-EVENT", 8000)]
    assert s.origin == ("42", "3")
    assert answer(text, "10.0.0.1", 4000, 1, 1)[1] == "PCMU"   # upbx answers its own offer
    with pytest.raises(ValueError, match="direction 'hold'"):
        offer("198.18.1.1", 30000, 42, 3, direction="hold")


@pytest.mark.parametrize("body", [samples.WIDEBAND_ONLY, samples.SRTP_ONLY,
                                  samples.YEALINK.replace("m=audio 11796", "m=audio 0")])
def test_no_common_codec_is_not_acceptable(body):
    parse(body)   # well formed
    with pytest.raises(NotAcceptable, match="no PCMU or PCMA"):
        answer(body, "10.1.0.2", 20000, 1, 1)


def test_g711_in_a_second_audio_stream_is_taken_and_the_first_refused():
    body = samples.WIDEBAND_ONLY + "m=audio 4002 RTP/AVP 8\r\nc=IN IP4 10.0.0.10\r\n"
    s = parse(body)
    assert (s.address, s.port, s.codec()) == ("10.0.0.10", 4002, "PCMA")
    text, codec = answer(body, "10.1.0.2", 20000, 1, 1)
    assert [l for l in text.split("\r\n") if l.startswith("m=")] == ["m=audio 0 RTP/AVP 111 9",
                                                                     "m=audio 20000 RTP/AVP 8"]


@pytest.mark.parametrize("body, problem", [
    ("", "empty"),
    ("hello world\r\n", "line 1 'hello world': expected 'x=value'"),
    ("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "line 1 'v=1': first line must be v=0"),
    (samples.YEALINK.replace("o=- 20045 20045 IN IP4 192.168.0.50\r\n", ""), "no o= line"),
    (samples.YEALINK.replace("m=audio 11796", "m=audio 99999"), "port 99999 outside 0..65535"),
    (samples.YEALINK.replace("m=audio 11796", "m=audio x1"), "port 'x1' is not a number"),
    (samples.YEALINK.replace("c=IN IP4 192.168.0.50", "c=IN IP6 2001:db8::1"), "IP6 not supported"),
    (samples.YEALINK.replace("c=IN IP4 192.168.0.50", "c=IN IP4 192.168.0.500"), "not an IPv4 address"),
    (samples.YEALINK.replace("c=IN IP4 192.168.0.50\r\n", ""), "no c= line for the audio stream"),
    (samples.YEALINK.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU"), "rtpmap needs NAME/RATE"),
    (samples.YEALINK.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:200 PCMU/8000"), "rtpmap payload type 200"),
    (samples.YEALINK.replace("RTP/AVP 0 8", "RTP/AVP zero 8"), "format 'zero' of m=audio"),
    (samples.YEALINK.replace("a=ptime:20", "a=ptime:0"), "ptime 0 outside 1..1000"),
    (samples.YEALINK.replace("m=audio 11796 RTP/AVP 0 8 18 9 101", "m=audio 11796 RTP/AVP"), "m= needs"),
    (samples.LINPHONE.split("m=audio")[0], "no m=audio line"),
    ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n" + "a=x\r\n" * 300, "lines, more than 200"),
    ("v=0\r\n" + "s=" + "x" * 9000 + "\r\n", "more than 8192"),
    (b"v=0\r\ns=\xff\xfe\r\n", "not UTF-8"),
])
def test_malformed_sdp_names_the_line_and_the_problem(body, problem):
    with pytest.raises(SdpError) as err:
        parse(body)
    assert problem in str(err.value)
    assert str(err.value).startswith("SDP ")


def test_mutated_sdp_raises_sdp_error_or_parses_never_anything_else():
    rng = random.Random(13)
    bodies = [b.encode() for b in samples.ALL_GOOD.values()]
    outcomes = {"parsed": 0, "SdpError": 0, "NotAcceptable": 0}
    for _ in range(3000):
        data = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            i = rng.randrange(len(data))
            if op == 0:
                data[i] = rng.randrange(256)
            elif op == 1:
                del data[i:i + rng.randint(1, 20)]
            elif op == 2:
                data[i:i] = rng.choice([b" ", b"\r\n", b"=", b"/", b"0", b"m=audio 1 RTP/AVP 0\r\n", b"c=IN IP4 0.0.0.0"])
            else:
                j = rng.randrange(len(data))
                data[i], data[j] = data[j], data[i]
        try:
            s = parse(bytes(data))
            answer(s, "10.1.0.2", 20000, 1, 1)
            outcomes["parsed"] += 1
        except SdpError:
            outcomes["SdpError"] += 1
        except NotAcceptable:
            outcomes["NotAcceptable"] += 1
    assert all(outcomes.values()), outcomes   # the mutations reach every outcome


def test_sends_and_receives():
    assert [sdp.sends(d) for d in sdp.DIRECTIONS] == [True, True, False, False]
    assert [sdp.receives(d) for d in sdp.DIRECTIONS] == [True, False, True, False]
