"""RTP for SIP calls (host/sip/media.py, SipMedia): packets on the wire, symmetric RTP, RFC 4733
DTMF, hold, and bad input.

Invariants: every packet sent is RTP version 2 with one SSRC, consecutive sequence numbers and
timestamps 8 per ms of media time; after the first valid packet, media goes to where it came from
and nothing from any other address is taken; a malformed, foreign, duplicate or late packet
yields no event, changes no state the call depends on, is counted by reason, and never raises.
The RTP in these tests is built and read with struct here, not with the module under test.
"""
import random
import struct

import pytest

from upbx.host.sip.media import DIGITS, SipMedia

SDP_ADDRESS = ("10.1.0.11", 10140)      # what a phone behind NAT announces
PUBLIC = ("198.18.1.1", 41234)          # where its packets really come from (its router)


def rtp(seq, ts, payload, pt=0, ssrc=0x11223344, marker=False, version=2, csrc=0, ext=None, pad=0):
    b0 = (version << 6) | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | csrc
    data = struct.pack("!BBHII", b0, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    data += bytes(4 * csrc)
    if ext is not None:
        data += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    data += payload
    if pad:
        data += bytes(pad - 1) + bytes([pad])
    return data


def read(datagram):
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", datagram)
    return {"version": b0 >> 6, "marker": bool(b1 & 0x80), "pt": b1 & 0x7F, "seq": seq, "ts": ts, "ssrc": ssrc,
            "payload": datagram[12:]}


def frame(n):
    return bytes([(n * 7 + i) & 0xFF for i in range(160)])


def event(digit, end, duration, volume=10):
    return struct.pack("!BBH", DIGITS.index(digit), (0x80 if end else 0) | volume, duration)


def test_audio_out_is_rtp_with_one_ssrc_consecutive_sequence_and_8_samples_a_ms():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    sent = [m.rtp_out(frame(i), 1000 + 20 * i, ms=400 + 20 * i) for i in range(50)]
    packets = [read(d) for d, _ in sent]
    assert {a for _, a in sent} == {SDP_ADDRESS}            # nothing latched yet: the SDP's address
    assert {p["version"] for p in packets} == {2} and {p["pt"] for p in packets} == {0}
    assert len({p["ssrc"] for p in packets}) == 1
    assert [(p["seq"] - packets[0]["seq"]) & 0xFFFF for p in packets] == list(range(50))
    assert [(p["ts"] - packets[0]["ts"]) & 0xFFFFFFFF for p in packets] == [160 * i for i in range(50)]
    assert [p["marker"] for p in packets] == [True] + [False] * 49
    assert [p["payload"] for p in packets] == [frame(i) for i in range(50)]
    assert SipMedia("PCMU", SDP_ADDRESS, 101, seed=2).ssrc != m.ssrc


def test_first_valid_packet_latches_the_source_and_others_are_dropped():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    assert m.rtp_in(b"\x80\x00", PUBLIC, 0) == []                     # malformed: latches nothing
    assert m.rtp_in(rtp(1, 0, frame(0), pt=18), PUBLIC, 0) == []      # G.729: not negotiated
    assert not m.latched
    assert m.rtp_in(rtp(1, 0, frame(0)), PUBLIC, 0) == [("audio", frame(0))]
    assert m.latched and m.remote == PUBLIC
    assert m.rtp_out(frame(1), 20)[1] == PUBLIC                      # symmetric RTP: back to the router
    forged = rtp(2, 160, b"\x00" * 160)
    assert m.rtp_in(forged, ("198.18.66.6", 41234), 20) == []       # another address, even with the next seq
    assert m.rtp_in(forged, (PUBLIC[0], 41235), 20) == []           # another port
    assert m.drops["rtp from another address"] == 2
    assert m.rtp_in(rtp(2, 160, frame(2)), PUBLIC, 20) == [("audio", frame(2))]   # the phone's next one still counts
    assert m.remote == PUBLIC


def test_new_sdp_address_unlatches():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    m.rtp_in(rtp(1, 0, frame(0)), PUBLIC, 0)
    m.update(("10.1.0.12", 10150), 101)                 # re-INVITE from a new place
    assert not m.latched
    new = ("198.18.1.1", 50000)
    assert m.rtp_in(rtp(2, 160, frame(1)), new, 20) == [("audio", frame(1))]
    assert m.remote == new
    m.update(("0.0.0.0", 10150), 101)                   # old-style hold: not an address to send to
    assert m.latched and m.remote == new


@pytest.mark.parametrize("datagram, reason", [
    (b"", "rtp too short"),
    (rtp(1, 0, frame(0))[:11], "rtp too short"),
    (rtp(1, 0, frame(0), version=1), "rtp version"),
    (rtp(1, 0, b"", pt=0), "rtp without payload"),
    (rtp(1, 0, b"\x00" * 8, csrc=15)[:40], "rtp without payload"),
    (rtp(1, 0, frame(0), ext=b"\x00" * 8)[:14], "rtp extension cut short"),
    (rtp(1, 0, b"\x01\x02", pad=3)[:-1] + b"\x09", "rtp padding"),
    (rtp(1, 0, frame(0), pad=1)[:-1] + b"\x00", "rtp padding"),
    (rtp(1, 0, frame(0), pt=8), "rtp payload type 8"),
    (struct.pack("!BBHI", 0x81, 200, 6, 0x11223344) + bytes(20), "rtcp"),
    (rtp(1, 0, b"\x05\x0a", pt=101), "dtmf too short"),
])
def test_malformed_rtp_is_dropped_and_counted(datagram, reason):
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    assert m.rtp_in(datagram, PUBLIC, 0) == []
    assert m.drops == {reason: 1}
    if reason != "dtmf too short":                       # a well-formed RTP packet latches even if its body is bad
        assert not m.latched and m.remote == SDP_ADDRESS


def test_csrcs_extension_and_padding_are_skipped_to_the_payload():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    assert m.rtp_in(rtp(1, 0, frame(3), csrc=2, ext=b"\x10\xff\x00\x00", pad=4), PUBLIC, 0) == [("audio", frame(3))]


def test_duplicate_and_late_packets_are_dropped_and_time_only_moves_forward():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    got = []
    for seq in (100, 101, 101, 103, 102, 104):          # a duplicate, then 102 arriving after 103
        got += m.receive(rtp(seq, 5000 + 160 * (seq - 100), frame(seq)), PUBLIC, 0)
    assert [(e[1], e[2]) for e in got] == [(frame(100), 0), (frame(101), 20), (frame(103), 60), (frame(104), 80)]
    assert m.drops == {"rtp late or duplicate": 2}


def test_sequence_and_timestamp_wrap_around():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    got = [m.receive(rtp(65534 + i, 0xFFFFFF60 + 160 * i, frame(i)), PUBLIC, 0) for i in range(4)]
    assert [e[0][2] for e in got] == [0, 20, 40, 60] and not m.drops


def test_new_ssrc_carries_on_the_timeline():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    a = m.receive(rtp(1, 1000, frame(1), ssrc=1), PUBLIC, 0) + m.receive(rtp(2, 1160, frame(2), ssrc=1), PUBLIC, 20)
    b = m.receive(rtp(9000, 77, frame(3), ssrc=2), PUBLIC, 40)   # the phone restarted its stream (after a re-INVITE)
    assert [e[2] for e in a + b] == [0, 20, 40]
    assert m.counters["ssrc changes"] == 1


@pytest.mark.parametrize("size", [80, 240, 400])
def test_packets_of_10_30_50_ms_are_reblocked_into_20_ms_frames(size):
    m = SipMedia("PCMA", SDP_ADDRESS, None, seed=1)
    stream = bytes(random.Random(size).getrandbits(8) for _ in range(size * 12))
    got = []
    for i in range(12):
        got += m.receive(rtp(i, 8000 + size * i, stream[size * i:size * (i + 1)], pt=8), PUBLIC, 20 * i)
    assert [e[2] for e in got] == [20 * k for k in range(len(got))]
    assert b"".join(e[1] for e in got) == stream[:160 * len(got)]
    assert len(got) == size * 12 // 160


def test_a_lost_packet_leaves_a_gap_on_the_timeline():
    m = SipMedia("PCMU", SDP_ADDRESS, None, seed=1)
    got = []
    for i in (0, 1, 3, 4):
        got += m.receive(rtp(i, 160 * i, frame(i)), PUBLIC, 0)
    assert [e[2] for e in got] == [0, 20, 60, 80]


def test_dtmf_in_reports_each_event_once_whichever_packets_arrive():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    events = []
    seq = 0

    def send(ts, body):
        nonlocal seq
        seq += 1
        events.extend(m.rtp_in(rtp(seq, ts, body, pt=101, marker=body[1] & 0x80 == 0 and body[3] == 160), PUBLIC, 0))
    for d in (160, 320, 480, 640):                      # "5": start, updates, three ends
        send(1000, event("5", False, d))
    for _ in range(3):
        send(1000, event("5", True, 800))
    for _ in range(3):                                  # "5" again, only its end packets arrive
        send(3000, event("5", True, 800))
    send(5000, event("#", False, 160))
    send(7000, event("D", True, 800))
    send(9000, struct.pack("!BBH", 16, 10, 160))        # event 16 (a line tone): not a digit
    assert events == [("dtmf", "5"), ("dtmf", "5"), ("dtmf", "#"), ("dtmf", "D")]
    assert m.drops == {"dtmf event not a digit": 1}


def test_dtmf_out_start_updates_and_three_ends_with_audio_held_back():
    m = SipMedia("PCMU", SDP_ADDRESS, 100, seed=1)
    first = read(m.rtp_out(frame(0), 0, ms=0)[0])
    out = m.dtmf_out("#", 20)
    assert m.rtp_out(frame(1), 20, ms=20) is None       # the tone replaces the audio
    now = 20
    while m.get_timer() is not None:
        now += 20
        out += m.handle_timer(now)
    packets = [read(d) for d, _ in out]
    assert {a for _, a in out} == {SDP_ADDRESS}
    assert [p["pt"] for p in packets] == [100] * 8
    assert [p["marker"] for p in packets] == [True] + [False] * 7
    assert [(p["seq"] - first["seq"]) & 0xFFFF for p in packets] == list(range(1, 9))
    assert {p["ts"] for p in packets} == {(first["ts"] + 160) & 0xFFFFFFFF}
    bodies = [struct.unpack("!BBH", p["payload"]) for p in packets]
    assert bodies == [(11, 10, 160), (11, 10, 320), (11, 10, 480), (11, 10, 640), (11, 10, 800)] + [(11, 0x8A, 800)] * 3
    after = read(m.rtp_out(frame(9), now, ms=now)[0])    # audio carries on after the event's 800 samples
    assert (after["ts"] - first["ts"]) & 0xFFFFFFFF >= 160 + 800
    assert (after["seq"] - first["seq"]) & 0xFFFF == 9


def test_digits_sent_together_go_one_after_the_other():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    out = m.dtmf_out("1", 0) + m.dtmf_out("2", 0)
    now = 0
    while m.get_timer() is not None:
        now += 20
        out += m.handle_timer(now)
    events = [read(d)["payload"][0] for d, _ in out]
    assert events == [1] * 8 + [2] * 8
    assert len({read(d)["ts"] for d, _ in out}) == 2


def test_dtmf_needs_telephone_event_and_a_valid_digit():
    m = SipMedia("PCMU", SDP_ADDRESS, None, seed=1)
    assert m.dtmf_out("5", 0) == [] and m.drops == {"dtmf not negotiated": 1}
    with pytest.raises(ValueError, match="DTMF digit 'x'"):
        SipMedia("PCMU", SDP_ADDRESS, 101).dtmf_out("x", 0)


def test_hold_stops_sending_and_marks_the_first_packet_after():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    assert read(m.rtp_out(frame(0), 0, ms=0)[0])["marker"]
    assert not read(m.rtp_out(frame(1), 20, ms=20)[0])["marker"]
    m.hold("recvonly")                                   # the phone put us on hold: we send nothing
    assert m.rtp_out(frame(2), 40, ms=40) is None and m.dtmf_out("1", 40) == []
    assert m.rtp_in(rtp(1, 0, frame(5)), PUBLIC, 40) == [("audio", frame(5))]   # it may still play us music
    m.hold("sendrecv")
    back = read(m.rtp_out(frame(3), 60, ms=60)[0])
    assert back["marker"] and back["payload"] == frame(3)
    m.hold("sendonly")                                   # we hold the phone: what it sends is not taken
    assert m.rtp_in(rtp(2, 160, frame(6)), PUBLIC, 80) == []
    assert m.drops["audio while not receiving"] == 1
    with pytest.raises(ValueError, match="direction 'hold'"):
        m.hold("hold")


def test_two_ends_talk_to_each_other():
    """upbx's SipMedia against another SipMedia playing the phone: audio and digits both ways."""
    host = SipMedia("PCMA", ("10.1.0.11", 10140), 101, seed=1)
    phone = SipMedia("PCMA", ("10.1.0.2", 30000), 101, seed=2)
    heard_by_phone, heard_by_host = [], []
    for i in range(20):
        d, a = phone.rtp_out(frame(i), 20 * i, ms=20 * i)
        heard_by_host += host.rtp_in(d, ("198.18.1.1", 40000), 20 * i)
        d, a = host.rtp_out(frame(100 + i), 20 * i, ms=20 * i)
        assert a == ("198.18.1.1", 40000)
        heard_by_phone += phone.rtp_in(d, ("10.1.0.2", 30000), 20 * i)
    out = host.dtmf_out("9", 400)
    now = 400
    while host.get_timer() is not None:
        now += 20
        out += host.handle_timer(now)
    for d, _ in out:
        heard_by_phone += phone.rtp_in(d, ("10.1.0.2", 30000), now)
    assert heard_by_host == [("audio", frame(i)) for i in range(20)]
    assert heard_by_phone == [("audio", frame(100 + i)) for i in range(20)] + [("dtmf", "9")]


def test_random_datagrams_never_raise():
    m = SipMedia("PCMU", SDP_ADDRESS, 101, seed=1)
    rng = random.Random(7)
    good = rtp(1, 0, frame(0))
    for i in range(5000):
        data = bytearray(good if i % 2 else bytes(rng.getrandbits(8) for _ in range(rng.randrange(40))))
        for _ in range(rng.randrange(4) if data else 0):
            data[rng.randrange(len(data))] = rng.randrange(256)
        for event in m.receive(bytes(data), PUBLIC, i):
            assert event[0] in ("audio", "dtmf")
            assert len(event[1]) == 160 or event[0] == "dtmf"
    assert sum(m.drops.values()) > 2000


def test_transcoding_tables_give_the_bytes_of_decoding_and_encoding():
    from upbx.common.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
    from upbx.host.codec import ALAW_TO_ULAW, ULAW_TO_ALAW   # what SIP calls transcode with too
    every = bytes(range(256))
    assert every.translate(ULAW_TO_ALAW) == alaw_encode(ulaw_decode(every))
    assert every.translate(ALAW_TO_ULAW) == ulaw_encode(alaw_decode(every))
