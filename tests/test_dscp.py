"""B5 marking on the wire: voice DSCP EF (46), signalling CS3 (24), at every host and at the handset.

A packet socket on the loopback interface reads the IP header of every datagram
of a B1 call (phone 101 -> remote host a -> main host -> phone 301) and a
CPython fake phone (common.phone.Phone) reads the TOS byte of what the main
host sends it through IP_RECVTOS.
"""
import os
import socket
import struct
import time

from upbx.common import wire
from upbx.common.login import LoginUp
from upbx.common.phone import Ended, Incoming, Phone
from tests.support import require_root
from upbx.tools.lab import write_noise_wav

EF = 46 << 2
CS3 = 24 << 2
ETH_P_ALL = 0x0003
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)


def sniff(seconds, ports):
    """(src port, dst port, TOS, frame kind) of every UDP datagram on lo touching one of ports."""
    seen = []
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as s:
        s.bind(("lo", 0))
        s.settimeout(0.05)
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                packet, meta = s.recvfrom(65535)
            except socket.timeout:
                continue
            if meta[2] != socket.PACKET_OUTGOING or packet[12:14] != b"\x08\x00":
                continue  # each loopback datagram is seen twice; keep the outgoing copy
            ip = packet[14:]
            if ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
            payload = ip[ihl + 8:]
            if (sport in ports or dport in ports) and payload:
                seen.append((sport, dport, ip[1], wire.frame_kind(payload)))
    return seen


def test_voice_is_ef_and_signalling_cs3_on_every_hop_of_a_call(lab):
    require_root()
    wav = lab.path("101.wav")
    write_noise_wav(wav, 8, 101)
    callee = lab.phone("301", "--answer", "--exit-after-call", "--exit-after", "15", tag="dscp-callee")
    lab.wait_registered("301")
    caller = lab.phone("101", "--send", wav, "--call", "301", "--duration", "3", "--exit-after-call",
                       "--exit-after", "15", tag="dscp-caller")
    lab.wait_for(lambda: any(c["state"] == "answered" for c in lab.status("main")["calls"]), "call answered")
    main, site_a = lab.main_port, lab.remote_ports["a"]
    seen = sniff(1.5, {main, site_a})
    caller.wait(15)
    callee.wait(15)
    hops = {}
    for sport, dport, tos, kind in seen:
        src = {main: "main", site_a: "site-a"}.get(sport, "phone")
        dst = {main: "main", site_a: "site-a"}.get(dport, "phone")
        hops.setdefault((src, dst, kind), set()).add(tos)
    voice = {k: v for k, v in hops.items() if k[2] in (wire.KIND_MINI, wire.KIND_TRUNK)}
    signalling = {k: v for k, v in hops.items() if k[2] == wire.KIND_FULL}
    # every media hop of the call, each marked EF only
    assert voice == {("phone", "site-a", wire.KIND_MINI): {EF}, ("site-a", "main", wire.KIND_TRUNK): {EF},
                     ("main", "phone", wire.KIND_MINI): {EF}, ("phone", "main", wire.KIND_MINI): {EF},
                     ("main", "site-a", wire.KIND_TRUNK): {EF}, ("site-a", "phone", wire.KIND_MINI): {EF}}, voice
    assert signalling and all(tos == {CS3} for tos in signalling.values()), signalling


def test_main_host_marks_what_it_sends_a_phone(lab):
    """A fake phone in this process reads the TOS byte of each datagram the main host sends it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.02)
    phone = Phone("302", bytes.fromhex(lab.secrets["302"]), os.urandom)
    host = ("127.0.0.1", lab.main_port)
    marks = {}
    wav = lab.path("102.wav")
    write_noise_wav(wav, 6, 102)
    caller = None
    now = lambda: int(time.monotonic() * 1000)
    phone.start(now())
    deadline = time.time() + 12
    try:
        while time.time() < deadline:
            for datagram in phone.datagrams_to_send(now()):
                sock.sendto(datagram, host)
            try:
                data, ancillary, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(4))
            except socket.timeout:
                data = None
            if data:
                tos = [c[2][0] for c in ancillary if c[0] == socket.IPPROTO_IP and c[1] == socket.IP_TOS]
                marks.setdefault(wire.frame_kind(data), set()).update(tos)
                phone.receive(bytearray(data), now())
            timer = phone.next_timer()
            if timer is not None and timer <= now():
                phone.handle_timer(now())
            for event in phone.take_events():
                if isinstance(event, LoginUp) and caller is None:
                    caller = lab.phone("102", "--send", wav, "--call", "302", "--duration", "2",
                                       "--exit-after-call", "--exit-after", "10", tag="dscp-fake")
                elif isinstance(event, Incoming):
                    phone.answer(now())
                elif isinstance(event, Ended):
                    deadline = min(deadline, time.time() + 0.5)
    finally:
        phone.stop(now())
        for datagram in phone.datagrams_to_send(now()):
            sock.sendto(datagram, host)
        sock.close()
        if caller is not None:
            caller.wait(15)
    assert marks.get(wire.KIND_FULL) == {CS3}, marks
    assert marks.get(wire.KIND_MINI) == {EF}, marks
