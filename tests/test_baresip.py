"""The baresip harness (tools/baresip.py) on its own: two Debian baresips in the network lab call
each other directly on site a's LAN, each playing a tone from a WAV file, and each one's recording
holds the other's tone (Goertzel, as tests/test_hold.py listens). This is what the SIP tests and
`upbx demo sip` build on; if baresip or root is missing it skips (fails under CI=true)."""
import secrets
import socket
import time

import pytest

from tests.sipkit import PacketSniffer
from tests.support import require_root, require_tool
from upbx.common.g711 import ulaw_decode
from upbx.host.sip.media import SipMedia
from upbx.tools.baresip import Baresip, BaresipError, write_tone
from upbx.tools.lab import goertzel_power
from upbx.tools.netlab import Lab

pytestmark = pytest.mark.root


@pytest.fixture
def lab():
    require_root()
    require_tool("baresip", "apt-get install baresip-core")
    the_lab = Lab("upbxt%s-" % secrets.token_hex(3))
    try:
        yield the_lab.up(sites=("a",), remote_sites=(), phones=2)
    finally:
        the_lab.down()


def tone_share(pcm, hz, others):
    """Per 100 ms window of pcm, whether hz dominates (10x the power of every other tone listed)."""
    windows = []
    for start in range(0, len(pcm) - 1600 + 1, 1600):
        chunk = pcm[start:]
        p = goertzel_power(chunk, 800, hz)
        windows.append(p > 1e9 and all(p > 10 * goertzel_power(chunk, 800, f) for f in others))
    return windows


def test_two_baresips_call_each_other_and_hear_each_others_tone(lab, tmp_path):
    a_wav = write_tone(tmp_path / "a.wav", 1000, 6)
    b_wav = write_tone(tmp_path / "b.wav", 600, 6)
    a = Baresip(tmp_path / "a", "alice", lab.address("site-a/phone-1"), register=False, lab=lab,
                node="site-a/phone-1", source=a_wav)
    b = Baresip(tmp_path / "b", "bob", lab.address("site-a/phone-2"), register=False, lab=lab,
                node="site-a/phone-2", source=b_wav)
    capture = Capture(lab, "site-a/phone-2", source=lab.address("site-a/phone-1"))
    with a.start(), b.start(), capture:
        assert a.dial(b.uri)["ok"]
        incoming = b.wait_event("CALL_INCOMING")
        assert "alice@10.1.0.11" in incoming["peeruri"]
        assert b.accept()["ok"]
        a.wait_event("CALL_ESTABLISHED")
        b.wait_event("CALL_ESTABLISHED")
        time.sleep(2)      # 2 s of call; what is asserted is the audio recorded, not how long it took
        assert a.hangup()["ok"]
        b.wait_event("CALL_CLOSED")
    heard_by_b, heard_by_a = tone_share(b.heard(), 1000, [600]), tone_share(a.heard(), 600, [1000])
    assert sum(heard_by_b) >= 10, (len(heard_by_b), sum(heard_by_b), b.log())
    assert sum(heard_by_a) >= 10, (len(heard_by_a), sum(heard_by_a), a.log())
    # and not its own tone: the recordings are the far end's audio
    assert not any(tone_share(b.heard(), 600, [1000])) and not any(tone_share(a.heard(), 1000, [600]))
    # upbx's RTP receiver (host/sip/media.py) on the packets baresip really sent (RTP, and its RTCP
    # "PINGPONG" to the port above): every RTP packet taken, 20 ms frames on an unbroken timeline,
    # the tone in them; the RTCP packets dropped as such, before they could latch anything
    rtp = [(payload, src) for src, dport, payload in capture.packets if 10000 <= dport <= 10098]
    media = SipMedia("PCMU", ("10.1.0.11", 10000), 101)
    frames = [e for payload, src in rtp for e in media.receive(payload, src, 0)]
    assert len(frames) >= 50 and set(media.drops) <= {"rtcp"}, (len(rtp), media.drops)
    assert media.remote[1] % 2 == 0                      # latched on the RTP port, not the RTCP one
    assert [e[2] for e in frames] == [20 * k for k in range(len(frames))]
    pcm = b"".join(ulaw_decode(e[1]) for e in frames)
    assert sum(tone_share(pcm, 1000, [600])) >= len(frames) // 5 - 2


class Capture(PacketSniffer):
    """UDP packets arriving at a lab node from source, caught on its interface (AF_PACKET), as
    (source address, destination port, UDP payload)."""

    def __init__(self, lab, node, source):
        with lab.inside(node):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        PacketSniffer.__init__(self, sock)
        self.source = socket.inet_aton(source)
        self.packets = []

    def wanted(self, ip, address):
        return ip[12:16] == self.source

    def take(self, ip, sport, dport, payload):
        self.packets.append(((socket.inet_ntoa(ip[12:16]), sport), dport, payload))


def test_a_phone_that_cannot_start_says_why(tmp_path):
    require_tool("baresip", "apt-get install baresip-core")
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))                 # its SIP port is taken: baresip cannot bind it
    try:
        bad = Baresip(tmp_path / "bad", "x", "127.0.0.1", register=False, sip_port=taken.getsockname()[1],
                      ctrl_port=taken.getsockname()[1] + 7)
        with pytest.raises(BaresipError, match="(?s)baresip exited with .* at start: .*Address already in use"):
            bad.start(timeout=10)
        assert bad.process is None or bad.process.poll() is not None
    finally:
        taken.close()
