"""A SIP phone's media as a upbx call leg (host/sip/media.py, SipMediaLeg), on the real host cores
in one process (tests/inprocess.py): the SIP side of the call is a leg of site a's remote host on
a link of kind "app" (as sip-core attaches it), the far end is phone 301 at the main host, so the
media crosses remote host -> main host -> phone (B1) as real sealed frames.

What a user would notice: the phone's words arrive in the SIP phone's codec and the SIP phone's
in the handset's, byte for byte after the one G.711 transcoding (none for PCMU); digits pass both
ways; comfort noise from upbx becomes noise at its level, not dead air.
"""
import math
import os
import struct

import pytest

from upbx.common import wire
from upbx.common.call import RINGING
from upbx.common.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from upbx.common.phone import Dtmf
from upbx.host.sip.media import SipMedia, SipMediaLeg
from upbx.host.switch import Link
from tests.inprocess import World

PHONE_RTP = ("198.18.1.1", 45000)       # the SIP phone's RTP as the remote host sees it (LAN or NAT)
SIP_CALL_NO = 7                         # the SIP side's own number for the call (the B2BUA's)


class SipLink(Link):
    """What sip-core's B2BUA puts at the host for its SIP phones (reduced to what media needs):
    signalling the host sends is kept, DTMF goes to the call's SipMediaLeg, media is handed to it."""

    def __init__(self, name):
        Link.__init__(self, name, "app")
        self.signals = []
        self.ends = {}                  # the host's call number -> SipMediaLeg

    def send_signal(self, msg_type, ies, now):
        self.signals.append((msg_type, dict(ies)))
        end = self.ends.get(ies.get(wire.IE_CALL_NO))
        if end is not None and msg_type == wire.DTMF:
            end.dtmf(ies[wire.IE_DIGIT], now)
        return True

    def media(self, leg, ts, payload):
        end = self.ends.get(leg.call_no)
        if end is not None:
            end.media(ts, payload)


def tone(hz, i, level=8000):
    return struct.pack("<160h", *(int(level * math.sin(2 * math.pi * hz * (160 * i + k) / 8000)) for k in range(160)))


def rtp(seq, ts, payload, pt):
    return struct.pack("!BBHII", 0x80, pt, seq, ts, 0xCAFE) + payload


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, extensions=(("105", "a"),))
    w.start_remote()
    w.add_phone("301", 1)
    w.settle()
    yield w
    w.close()


def _sip_call(world, codec):
    """SIP phone 105 at site a calls 301; 301 answers. Returns (link, SipMediaLeg, 301's end)."""
    link = SipLink("105")
    now = world.net.now
    world.a._outgoing(link, {wire.IE_CALL_NO: SIP_CALL_NO, wire.IE_CALLED: "301",
                             wire.IE_MEDIA_KEY: os.urandom(16)}, now)
    leg = next(c.a for c in world.a.switch.calls.values() if c.a.link is link)
    end = SipMediaLeg(world.a, leg, SipMedia(codec, ("10.1.0.50", 10140), 101, seed=3))
    link.ends[leg.call_no] = end
    callee = world.phones["301"]

    def answered():
        if callee.phone.state == RINGING:
            callee.phone.answer(world.net.now)
            callee.flush()
        return any(m == wire.ANSWER for m, _ in link.signals)
    world.run_until(answered, 5000, "301 answers the SIP phone")
    assert [m for m, _ in link.signals] == [wire.ALERTING, wire.ANSWER]
    early = end.datagrams_to_send()      # 301's first words, before the SIP phone sent any RTP
    assert early and {a for _d, a in early} == {("10.1.0.50", 10140)}   # go where its SDP said
    callee.sent, callee.received = [], []
    return link, end, callee


def _talk(world, end, codec, frames, dtmf_at=None):
    """frames ticks of a tone from the SIP phone; returns what it was sent (RTP datagrams parsed)."""
    pt = 0 if codec == "PCMU" else 8
    encode = ulaw_encode if codec == "PCMU" else alaw_encode
    sent, got = [], []
    for i in range(frames):
        payload = encode(tone(1000, i))
        sent.append(payload)
        end.rtp_in(rtp(100 + i, 4000 + 160 * i, payload, pt), PHONE_RTP, world.net.now)
        world.tick()
        end.tick(world.net.now)
        got += end.datagrams_to_send()
    return sent, got


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_audio_both_ways_between_a_sip_phone_and_a_handset_across_the_main_host(world, codec):
    link, end, callee = _sip_call(world, codec)
    sent, got = _talk(world, end, codec, 60)
    world.run(100)
    got += end.datagrams_to_send()
    to_upbx = (lambda p: p) if codec == "PCMU" else (lambda p: ulaw_encode(alaw_decode(p)))
    from_upbx = (lambda p: p) if codec == "PCMU" else (lambda p: alaw_encode(ulaw_decode(p)))
    # the SIP phone's 60 frames reached the handset, in order, in mu-law
    assert callee.received == [to_upbx(p) for p in sent]
    # the handset's frames reached the SIP phone as RTP, in order, at the address its packets came from
    packets = [struct.unpack_from("!BBHII", d) + (d[12:], a) for d, a in got]
    assert {p[-1] for p in packets} == {PHONE_RTP}
    assert {p[1] & 0x7F for p in packets} == {0 if codec == "PCMU" else 8}
    payloads = [p[5] for p in packets]
    expected = [from_upbx(p) for p in callee.sent]
    assert len(payloads) >= len(expected) - 3 and payloads == expected[:len(payloads)]
    assert [(p[2] - packets[0][2]) & 0xFFFF for p in packets] == list(range(len(packets)))
    assert [(p[3] - packets[0][3]) & 0xFFFFFFFF for p in packets] == [160 * k for k in range(len(packets))]
    assert end.rtp.drops == {} and world.a.stats.drops.get("media before answer") is None


def test_digits_pass_both_ways(world):
    link, end, callee = _sip_call(world, "PCMU")
    _talk(world, end, "PCMU", 5)
    callee.take()
    body = struct.pack("!BBH", 5, 10, 160)
    for i, b in enumerate((body, body, struct.pack("!BBH", 5, 0x8A, 800), struct.pack("!BBH", 5, 0x8A, 800))):
        end.rtp_in(rtp(200 + i, 9000, b, 101), PHONE_RTP, world.net.now)
    world.run(40)
    assert [e.digit for e in callee.take() if isinstance(e, Dtmf)] == ["5"]
    assert callee.phone.dtmf("#", world.net.now)
    callee.flush()
    got = []
    for _ in range(15):
        world.tick()
        end.tick(world.net.now)
        got += end.datagrams_to_send()
    events = [struct.unpack("!BBH", d[12:16]) for d, _ in got if d[1] & 0x7F == 101]
    assert [e[0] for e in events] == [11] * 8 and [e[1] >> 7 for e in events] == [0] * 5 + [1] * 3


class _Core:
    now = 0


def test_comfort_noise_from_upbx_becomes_noise_at_its_level_every_tick():
    end = SipMediaLeg(_Core(), None, SipMedia("PCMA", ("10.1.0.50", 10140), 101, seed=3))
    core = end.core
    core.now = 1000
    end.media(1000, ulaw_encode(tone(440, 0)))
    core.now = 1020
    end.media(1020, bytes([40]))                       # the far end went quiet: background at -40 dBov
    end.tick(1021)                                     # a tick just after: the noise frame of 1020 is out
    for k in range(9):
        if k == 4:
            core.now = 1110
            end.media(1200, bytes([40]))               # the level refreshed (every 200 ms): no extra frame
        end.tick(1040 + 20 * k)
    out = end.datagrams_to_send()
    assert len(out) == 1 + 10                          # the voice frame, then noise every 20 ms
    ts = [struct.unpack_from("!I", d, 4)[0] for d, _ in out]
    assert [t - ts[0] for t in ts] == [160 * k for k in range(11)]
    pcm = b"".join(alaw_decode(d[12:]) for d, _ in out[1:])
    samples = struct.unpack("<%dh" % (len(pcm) // 2), pcm)
    rms_db = 20 * math.log10(math.sqrt(sum(v * v for v in samples) / len(samples)) / 32768)
    assert -42 < rms_db < -38
    core.now = 1240
    end.media(1240, ulaw_encode(tone(440, 1)))        # voice again: the noise stops
    end.tick(1260)
    assert len(end.datagrams_to_send()) == 1


def test_the_sip_phone_hears_music_on_hold_when_the_handset_holds_and_voice_after(world):
    """301 holds: its host (the main host) plays music on hold towards the SIP phone; the RTP the
    phone gets carries the arpeggio, on one unbroken RTP timeline, then 301's voice again."""
    from upbx.host.moh import NOTES_HZ
    from upbx.tools.lab import goertzel_power
    link, end, callee = _sip_call(world, "PCMA")
    _, got = _talk(world, end, "PCMA", 10)
    assert callee.phone.hold(world.net.now)
    callee.flush()
    _, held = _talk(world, end, "PCMA", 100)
    assert callee.phone.resume(world.net.now)
    callee.flush()
    _, after = _talk(world, end, "PCMA", 20)
    notes = []
    for d, _a in held:
        pcm = alaw_decode(d[12:])
        powers = {hz: goertzel_power(pcm, 160, hz) for hz in NOTES_HZ[:3]}
        best = max(powers, key=powers.get)
        if powers[best] > 1e10 and powers[best] > 10 * sum(p for hz, p in powers.items() if hz != best):
            if not notes or notes[-1] != best:
                notes.append(best)
    assert notes[:4] == [523.25, 659.25, 783.99, 659.25]        # the arpeggio, in order
    voice = [alaw_encode(ulaw_decode(p)) for p in callee.sent]
    assert [d[12:] for d, _ in after][-5:] == voice[-5:]       # 301's own frames again
    stamps = [struct.unpack_from("!I", d, 4)[0] for d, _ in got + held + after]
    assert all(0 < (b - a) & 0xFFFFFFFF < 0x80000000 for a, b in zip(stamps, stamps[1:]))   # only forwards
    seqs = [struct.unpack_from("!H", d, 2)[0] for d, _ in got + held + after]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:]))


def test_a_reinvite_to_hold_and_to_another_codec_is_applied():
    """The phone holds (re-INVITE sendonly: we answer recvonly, so send nothing), resumes with PCMA
    instead of PCMU from a new address: frames go there, A-law."""
    from upbx.host.sip.sdp import answer, parse
    from tests import sip_sdp_samples as samples
    end = SipMediaLeg(_Core(), None, SipMedia("PCMU", ("192.168.0.50", 11796), 101, seed=3))
    end.media(0, ulaw_encode(tone(440, 0)))
    held = parse(samples.YEALINK_HOLD)
    text, codec = answer(held, "10.1.0.2", 30000, 1, 2)
    end.renegotiated(held, codec, parse(text).direction)
    end.media(20, ulaw_encode(tone(440, 1)))
    assert len(end.datagrams_to_send()) == 1                   # the frame before the hold only
    resumed = parse(samples.POLYCOM_ALAW)
    text, codec = answer(resumed, "10.1.0.2", 30000, 1, 3)
    end.renegotiated(resumed, codec, parse(text).direction)
    frame = ulaw_encode(tone(440, 2))
    end.media(40, frame)
    (datagram, address), = end.datagrams_to_send()
    assert address == ("172.16.5.21", 2222) and datagram[1] == 0x80 | 8      # marker: first after the pause
    assert datagram[12:] == alaw_encode(ulaw_decode(frame))
