"""The RTP sockets of SIP calls (host/sip/rtp.py) on real loopback sockets: even ports from the
range, a taken port skipped, a clear error when none is left, and a call's packets answered from
the port the phone sent to (symmetric RTP), with SipMedia doing the RTP."""
import asyncio
import random
import socket
import struct

import pytest

from upbx.host.sip.media import SipMedia
from upbx.host.sip.rtp import RtpChannel, RtpPorts, RtpPortsExhausted


def _range(n):
    first = random.Random().randrange(40000, 60000, 2)
    return first, first + 2 * (n - 1)


def test_ports_are_even_round_the_range_and_taken_ones_are_skipped():
    first, last = _range(4)
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        taken.bind(("127.0.0.1", first + 2))        # another program has the second one
    except OSError:
        pytest.skip("port %d in use here" % (first + 2))
    ports = RtpPorts("127.0.0.1", first - 1, last)  # an odd start is rounded up
    try:
        got = [ports.open()[1] for _ in range(3)]
        assert got == [first, first + 4, first + 6]
        with pytest.raises(RtpPortsExhausted, match="no free RTP port in %d-%d on 127.0.0.1 \\(3 calls" % (first, last)):
            ports.open()
        ports.close(first + 4)
        assert ports.open()[1] == first + 4          # given back, handed out again
    finally:
        taken.close()
        for port in list(ports.open_sockets):
            ports.close(port)
    assert ports.open_sockets == {}


def test_bad_range_is_refused():
    with pytest.raises(ValueError, match="RTP ports 20000-10000"):
        RtpPorts("127.0.0.1", 20000, 10000)


class Echo:
    """The host side of a call for this test: SipMedia reads what comes, sends each frame back."""

    def __init__(self, channel):
        self.channel = channel
        self.media = SipMedia("PCMU", ("127.0.0.1", 9), None)    # the SDP's address: not where the phone is

    def rtp_in(self, data, source, now):
        for kind, payload, ms in self.media.receive(data, source, now):
            self.channel.send(*self.media.rtp_out(payload, now, ms=ms))


def test_a_call_is_answered_from_the_port_the_phone_sent_to():
    first, last = _range(8)
    ports = RtpPorts("127.0.0.1", first, last)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5)

    async def run():
        loop = asyncio.get_running_loop()
        flushed = []
        channel = RtpChannel(loop, ports, lambda: 0, after=lambda: flushed.append(1))
        channel.attach(Echo(channel))
        replies = []
        for i in range(5):
            packet = struct.pack("!BBHII", 0x80, 0, i, 160 * i, 7) + bytes([i]) * 160
            phone.sendto(packet, ("127.0.0.1", channel.port))
            data, source = await loop.run_in_executor(None, phone.recvfrom, 2048)
            replies.append((data, source))
        channel.close()
        return channel, replies, flushed

    try:
        channel, replies, flushed = asyncio.run(run())
    finally:
        phone.close()
    assert {source for _, source in replies} == {("127.0.0.1", channel.port)}
    assert [data[12:] for data, _ in replies] == [bytes([i]) * 160 for i in range(5)]
    assert channel.sent == 5 and flushed and ports.open_sockets == {}
