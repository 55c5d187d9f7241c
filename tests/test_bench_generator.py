"""The relay bench's load generator (tools/bench_net.py, host/_fastpath.c bench_send_*): the datagrams it seals
and sends in C are the reference sealer's, byte for byte, and its sampling socket filter counts in the kernel
exactly the relayed frames it drops, reading everything else.

No timing assertions: the generator's speed is measured by `upbx bench relay`.
"""
import os
import shutil
import select
import socket
import struct
import time

import pytest

from upbx.common.crypto import HmacKey
from upbx.common.media import MediaLeg, seal_trunk
from upbx.host import fastpath
from upbx.tools import bench_net

native = fastpath.native
needs_c = pytest.mark.skipif(native is None, reason="the C fast path is not built")


def _socket(rcvbuf=4 << 20):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _read_all(sock, want, seconds=10.0):
    got = []
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    deadline = time.monotonic() + seconds
    try:
        while len(got) < want and time.monotonic() < deadline:
            poller.poll(0.05)
            while True:
                try:
                    got.append(sock.recv(65536))
                except BlockingIOError:
                    break
    finally:
        poller.close()
    return got


@needs_c
@pytest.mark.parametrize("per", [1, 8])
def test_the_c_generator_seals_what_the_reference_sealer_seals(per):
    auth = HmacKey(os.urandom(32))
    index = 0x2A5A5A
    legs = [MediaLeg(os.urandom(16), i % 2, 100 + i, 200 + i) for i in range(2 * per)]
    bases = [0, 65536] * per   # a call whose stamps count from a later base (TrunkPair.sealer)
    groups = [legs[i:i + per] for i in range(0, len(legs), per)]
    group_bases = [bases[i:i + per] for i in range(0, len(bases), per)]
    specs = [(auth, index, tuple((leg.peer_call_no, leg.role, leg._send_ctr, base) for leg, base in zip(g, b)))
             for g, b in zip(groups, group_bases)]
    rx = _socket()
    tx = _socket()
    try:
        for ts in (65536 + 40, 65536 + 65535 + 20, 3 * 65536 + 7):
            sent, err = native.bench_send_trunks(tx.fileno(), specs, ts, bench_net.VOICE, rx.getsockname(), 0, len(specs))
            assert (sent, err) == (len(specs), 0)
            got = _read_all(rx, len(specs))
            buf = bytearray(2048)
            expected = [bytes(seal_trunk(auth, index, [(leg, ts - base, bench_net.VOICE) for leg, base in zip(g, b)], buf))
                        for g, b in zip(groups, group_bases)]
            assert got == expected
    finally:
        rx.close()
        tx.close()


@needs_c
def test_the_c_generator_sends_plain_rtp_to_each_calls_port():
    rx = [_socket() for _ in range(3)]
    tx = _socket()
    try:
        specs = [(0x10000 + i, s.getsockname()[1]) for i, s in enumerate(rx)]
        assert native.bench_send_rtp(tx.fileno(), specs, 0xFFFF, 0xFFFFFF60, bench_net.VOICE, "127.0.0.1", 1, 3) == (2, 0)
        assert _read_all(rx[0], 1, seconds=0.3) == []
        for i in (1, 2):
            assert _read_all(rx[i], 1) == [struct.pack("!BBHII", 0x80, 0, 0xFFFF, 0xFFFFFF60, 0x10000 + i) + bench_net.VOICE]
    finally:
        for s in rx + [tx]:
            s.close()


def _one_entry_frame(ts16, voice=True):
    entry = struct.pack("!HH", 7 | (0 if voice else 0x8000), ts16)
    return b"\xc0\x00\x05" + entry + (bench_net.VOICE if voice else b"\x01") + b"TAG!"


@pytest.mark.parametrize("kind", ["upbx", "rtp"])
def test_the_sampling_filter_counts_this_windows_frames_in_the_kernel_and_reads_the_rest(kind):
    ts0, span, frames = 65530, 200, 3000   # upbx: the window wraps its 16 bits
    if kind == "upbx":
        mine = [_one_entry_frame((ts0 + k) & 0xFFFF) for k in range(0, span, 20)]
        others = [_one_entry_frame((ts0 + span) & 0xFFFF), _one_entry_frame((ts0 - 1) & 0xFFFF),
                  _one_entry_frame(ts0 & 0xFFFF, voice=False), b"\x01\x02\x03", _one_entry_frame(ts0 & 0xFFFF) + b"x"]
    else:
        ts0 = 0xFFFFFF00   # the 32-bit window wraps too
        mine = [struct.pack("!BBHII", 0x80, 0, k, (ts0 + 20 * k) & 0xFFFFFFFF, 9) + bench_net.VOICE for k in range(10)]
        others = [struct.pack("!BBHII", 0x80, 0, 1, (ts0 + span) & 0xFFFFFFFF, 9) + bench_net.VOICE,
                  struct.pack("!BBHII", 0x80, 0, 1, ts0 - 1, 9) + bench_net.VOICE,
                  struct.pack("!BBHII", 0x80, 0, 1, ts0, 9) + bench_net.VOICE[:100], b"\xc0\x00\x01"]
    rx = _socket()
    tx = _socket()
    try:
        bench_net.attach_filter(rx, bench_net.sampling_filter(kind, ts0, span))
        port = rx.getsockname()[1]
        drops0 = bench_net.udp_drops([port])
        read = []
        for k in range(frames):   # read as it goes: the receive buffer never fills
            tx.sendto(mine[k % len(mine)], rx.getsockname())
            if k % 100 == 99:
                read += _read_all(rx, 10 ** 9, seconds=0)
        for data in others:
            tx.sendto(data, rx.getsockname())
        time.sleep(0.2)
        read += _read_all(rx, 10 ** 9, seconds=0.2)
        dropped = bench_net.udp_drops([port]) - drops0
        sampled = [d for d in read if d in mine]
        # every datagram that is not one of this window's relayed frames is read, none counted
        assert [d for d in read if d not in mine] == others
        # every frame is either counted in the kernel or read: none lost, none counted twice
        assert dropped + len(sampled) == frames
        # the sample: 1 in 16 at random (expected 187; far outside any plausible draw below 60 or above 400)
        assert 60 < len(sampled) < 400, len(sampled)
    finally:
        rx.close()
        tx.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="a network namespace of its own needs root")
def test_in_a_namespace_of_its_own_a_full_buffer_is_told_from_the_filters_count():
    """What the bench's counting rests on (tools/bench_net.py paced_window): a filter's drop is in the socket's
    drops and not in the namespace's RcvbufErrors; a full buffer's drop is in both; and the bench gets back to
    the namespace it came from."""
    outside = os.stat("/proc/self/ns/net").st_ino
    with bench_net.private_netns() as isolated:
        assert isolated and os.stat("/proc/self/ns/net").st_ino != outside
        filtered, full, tx = _socket(), _socket(rcvbuf=4096), _socket()
        try:
            bench_net.attach_filter(filtered, bench_net.sampling_filter("rtp", 0, 1 << 30, bits=30))  # ~never read
            ports = filtered.getsockname()[1], full.getsockname()[1]
            errors0, drops0 = bench_net.udp_rcvbuf_errors(), [bench_net.udp_drops([p]) for p in ports]
            for k in range(100):
                tx.sendto(struct.pack("!BBHII", 0x80, 0, k, 5, 1) + bench_net.VOICE, filtered.getsockname())
            for k in range(200):   # nobody reads: the buffer fills
                tx.sendto(bytes(172), full.getsockname())
            time.sleep(0.1)
            drops = [bench_net.udp_drops([p]) - d for p, d in zip(ports, drops0)]
            assert drops[0] == 100
            assert drops[1] > 0 and bench_net.udp_rcvbuf_errors() - errors0 == drops[1]
        finally:
            for s in (filtered, full, tx):
                s.close()
    assert os.stat("/proc/self/ns/net").st_ino == outside


def test_more_calls_than_a_channel_queues_are_set_up_in_batches_and_all_answered():
    """The relay bench's per-machine search started at 5,610 calls on a fast core: TrunkPair queued 5,610
    SETUPs at once on site a's channel, which fails past 4,096 waiting (common/reliable.py), and the bench
    waited for answers that could not come. SETUP_BATCH at a time, every call is answered."""
    n = 4200
    main = bench_net.MainUnderTest({"a": ["1%05d" % i for i in range(n)], "b": ["2%05d" % i for i in range(n)]},
                                   trunk_mtu=1472)
    try:
        pair = bench_net.TrunkPair(main, n)
        try:
            assert not pair.a.login.channel.failed and not pair.b.login.channel.failed
            assert all(call.b is not None and call.a.peer_call_no for call in pair.calls)
            counters = main.status()["stats"]["counters"]
            assert counters["msg SETUP"] == n and counters["msg ANSWER"] == n, counters
        finally:
            pair.close()
    finally:
        main.close()
