"""Bad input: random and mutated datagrams against every decoder and receive path (CPython).

What must hold for any datagram at all:
- the only exception that escapes a decoder or receive path is common.wire.DecodeError;
- a forged frame (a valid frame with bits flipped, cut, extended or with a byte
  inserted) is rejected: None / [] / (None, []), and it changes nothing: no
  session, no address update (B7), no delivery, no acknowledgement, no replay mark;
- a replayed media frame is rejected.

Hypothesis runs derandomized, so the cases are the same on every run; together
the tests below run well over 100,000 datagrams (see EXAMPLES) in about a minute.
The MicroPython half of this file is tests/common/test_fuzz_mp.py.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import media, session, wire
from common.crypto import HmacKey
from common.login import UP, Login
from common.crypto import extend16
from common.media import MediaLeg
from host.peers import PeerTable

SECRET = bytes(range(16))
IDENTITY = ("phone", "201")
CLIENT_ADDR = ("198.18.0.10", 40000)
FORGER_ADDR = ("198.18.99.99", 6666)

# hypothesis examples per test, and datagrams (cases) per example: the mutation
# tests apply each drawn mutation to every valid frame of World.frames (11)
EXAMPLES = {
    "decoders_random": 20000,
    "decoders_mutated": 4000,
    "receive_mutated": 9000,
    "receive_random": 6000,
    "handshake_mutated": 4000,
    "media_replay": 800,
}
FRAMES = 11
CASES_PER_EXAMPLE = {"decoders_mutated": FRAMES, "receive_mutated": FRAMES, "handshake_mutated": 2}


def _settings(name):
    return settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def test_enough_cases_in_total():
    cases = sum(n * CASES_PER_EXAMPLE.get(name, 1) for name, n in EXAMPLES.items())
    assert cases >= 100000, cases
    assert len(W.frames) == FRAMES


class Stats:
    def __init__(self):
        self.drops = {}
        self.counters = {}

    def drop(self, reason):
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n


def _lookup(identity):
    return SECRET if identity == IDENTITY else None


def _trunk_extend(call_no, ts16):
    """The receiver of the test trunk knows calls 0x101..0x103 and has seen up to ts 1980."""
    return extend16(1980, ts16) if call_no in (0x101, 0x102, 0x103) else None


class World:
    """A logged-in phone and its server, plus media legs and a trunk, with valid frames of every kind."""

    def __init__(self):
        self.stats = Stats()
        self.table = PeerTable(_lookup, self.stats, 60000)
        nonce = bytes(range(0xA0, 0xB0))
        self.client = Login(wire.IE_EXTENSION, "201", SECRET, 0x105, lambda n: nonce[:n])
        self.client.start(0)
        self.hello = self.client.datagrams_to_send(0)[0]
        self.challenge, _ = self.table.handle_handshake(self.hello, CLIENT_ADDR, 0)
        self.client.receive(self.challenge, 1)
        self.response = self.client.datagrams_to_send(1)[0]
        _reply, self.peer = self.table.handle_handshake(self.response, CLIENT_ADDR, 2)
        for d in self.peer.channel.datagrams_to_send(2):
            self.client.receive(d, 3)
        assert self.client.state == UP
        self.client.send(wire.SETUP, {wire.IE_CALL_NO: 0x123, wire.IE_CALLED: "3105", wire.IE_CALLING: "201",
                                      wire.IE_MEDIA_KEY: bytes(16), wire.IE_CALL_ID: bytes(8)}, 4)
        self.client.send(wire.DTMF, {wire.IE_DIGIT: "5"}, 4)
        up = self.client.datagrams_to_send(4)     # ACK of WELCOME folded into SETUP; DTMF
        self.setup, self.dtmf = up[0], up[1]
        self.table.receive(self.setup, CLIENT_ADDR, 5)
        self.table.receive(self.dtmf, CLIENT_ADDR, 6)
        self.peer.channel.send(wire.ALERTING, {wire.IE_CALL_NO: 7, wire.IE_PEER_CALL_NO: 0x123}, 7)
        self.peer.channel.send(wire.SYSINFO, {wire.IE_VERSION: 3, wire.IE_CHUNK: (0 << 16) | 1,
                                              wire.IE_DATA: b"x" * 255}, 7)
        down = self.peer.channel.datagrams_to_send(7)
        self.alerting, self.sysinfo = down[0], down[1]
        self.client.receive(self.alerting, 8)
        self.client.receive(self.sysinfo, 8)
        self.ack = self.client.datagrams_to_send(9)[0]
        self.table.receive(self.ack, CLIENT_ADDR, 10)
        assert wire.parse_full(self.ack)[3] == wire.ACK
        # media: a leg and its far end, a trunk of three calls
        key = bytes(range(0x10, 0x20))
        self.tx = MediaLeg(key, 0, 0x11, 0x22)
        self.rx = MediaLeg(key, 1, 0x22, 0x11)
        self.mini = bytes(self.tx.seal_mini(1000, bytes(range(160))))
        self.cn = bytes(self.tx.seal_mini(1020, b"\x40"))
        assert self.rx.open_mini(bytearray(self.mini)) == 1000
        assert self.rx.open_mini(bytearray(self.cn)) == 1020
        self.trunk_auth = HmacKey(bytes(range(32)))
        self.trunk_extend = _trunk_extend
        legs = [MediaLeg(bytes([i]) * 16, 0, i, 0x100 + i) for i in (1, 2, 3)]
        self.trunk = bytes(media.seal_trunk(self.trunk_auth, 0x2A5A5, [
            (legs[0], 2000, bytes(160)), (legs[1], 2000, bytes(range(160))), (legs[2], 2000, b"\x01")],
            bytearray(600)))
        assert media.open_trunk(self.trunk_auth, bytearray(self.trunk), self.trunk_extend) is not None
        self.frames = [self.hello, self.challenge, self.response, self.setup, self.dtmf, self.alerting,
                       self.sysinfo, self.ack, self.mini, self.cn, self.trunk]

    def snapshot(self):
        c, s = self.client.channel, self.peer.channel
        return (self.client.state, c.expected, c.next_seq, len(c._unacked), c.last_receive_ms, c._ack_due,
                s.expected, s.next_seq, len(s._unacked), s.last_receive_ms, s._ack_due,
                sorted(self.table.peers), self.peer.address, self.peer.last_seen_ms,
                self.rx.replay.highest, bytes(self.rx.replay._seen), self.rx.received)


W = World()


# --- mutations -------------------------------------------------------------------

OPS = ("flip", "flip", "truncate", "extend", "insert", "delete")


def mutations():
    """1-4 of: bit flip, truncation, extension, byte insertion, byte deletion; positions taken mod length."""
    op = st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 16), st.integers(0, 255), st.binary(min_size=1,
                                                                                                  max_size=40))
    return st.lists(op, min_size=1, max_size=4)


def mutate(frame, ops):
    data = bytearray(frame)
    for op, pos, byte, extra in ops:
        n = len(data)
        if op == "flip" and n:
            data[pos % n] ^= 1 << (byte & 7)
        elif op == "truncate" and n:
            del data[pos % n:]
        elif op == "extend":
            data.extend(extra)
        elif op == "insert":
            data.insert(pos % (n + 1), byte)
        elif op == "delete" and n:
            del data[pos % n]
    return bytes(data)


def random_datagrams():
    """Random bytes, with the first byte biased towards each frame kind."""
    return st.one_of(
        st.binary(max_size=400),
        st.tuples(st.sampled_from((0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xFF)), st.binary(max_size=400)).map(
            lambda t: bytes([t[0]]) + t[1]),
        st.tuples(st.integers(0, 3), st.binary(min_size=8, max_size=8), st.binary(max_size=300)).map(
            lambda t: bytes([0x80 | (W.peer.index >> 16)]) + W.peer.index.to_bytes(3, "big")[1:] + t[1][:5]
            + t[2]),
    )


def _only_decode_error(fn, *args):
    try:
        return fn(*args)
    except wire.DecodeError as exc:
        assert exc.field and exc.offset >= 0
        return None


def run_decoders(data):
    _only_decode_error(wire.frame_kind, data)
    _only_decode_error(wire.parse_full, data)
    _only_decode_error(wire.parse_mini, data)
    _only_decode_error(wire.parse_trunk, data)
    _only_decode_error(wire.decode_ies, data)
    _only_decode_error(wire.decode_ies, memoryview(data)[wire.FULL_HEADER:], wire.FULL_HEADER)
    _only_decode_error(session.parse_handshake, data)


def run_receive_paths(data):
    """Feed data to every receive path; returns what each accepted (all must be rejections)."""
    before = W.snapshot()
    accepted = []
    if len(data) >= 3:  # shorter ones: see test_short_datagram_to_session_table_raises_only_decode_error
        peer, messages = _only_decode_error(W.table.receive, data, FORGER_ADDR, 50) or (None, [])
        if peer is not None or messages:
            accepted.append(("PeerTable.receive", peer, messages))
    result = _only_decode_error(W.table.handle_handshake, data, FORGER_ADDR, 50)
    if result is not None and result != (None, None):
        accepted.append(("PeerTable.handle_handshake", result))
    got = _only_decode_error(W.client.receive, data, 50)
    if got:
        accepted.append(("Login.receive", got))
    got = _only_decode_error(W.client.channel.receive, data, 50)
    if got:
        accepted.append(("Channel.receive", got))
    got = _only_decode_error(W.rx.open_mini, bytearray(data))
    if got is not None:
        accepted.append(("MediaLeg.open_mini", got))
    got = _only_decode_error(media.open_trunk, W.trunk_auth, bytearray(data), W.trunk_extend)
    if got is not None:
        accepted.append(("open_trunk", got))
    assert W.snapshot() == before, "a rejected datagram changed state"
    return accepted


# --- properties --------------------------------------------------------------------

@_settings("decoders_random")
@given(random_datagrams())
def test_decoders_raise_only_decode_error_on_random_bytes(data):
    run_decoders(data)


@_settings("decoders_mutated")
@given(mutations())
def test_decoders_raise_only_decode_error_on_mutated_frames(ops):
    for frame in W.frames:
        run_decoders(mutate(frame, ops))


@_settings("receive_mutated")
@given(mutations())
def test_mutated_frames_are_rejected_by_every_receive_path(ops):
    for frame in W.frames:
        data = mutate(frame, ops)
        if data != frame:
            assert run_receive_paths(data) == [], (frame.hex(), data.hex())


@_settings("receive_random")
@given(random_datagrams())
def test_random_datagrams_are_rejected_by_every_receive_path(data):
    assert run_receive_paths(data) == []


@_settings("handshake_mutated")
@given(mutations())
def test_forged_handshakes_never_create_a_session(ops):
    """A fresh server (no state at all) sees forged HELLO and RESPONSE frames: no peer, no reply."""
    table = PeerTable(_lookup, Stats(), 60000)
    for frame in (W.hello, W.response):
        data = mutate(frame, ops)
        if data == frame:
            continue
        result = _only_decode_error(table.handle_handshake, data, CLIENT_ADDR, 0)
        assert result in (None, (None, None))
        assert table.peers == {} and table.by_identity == {}


REPLAY_KEY = bytes(16)
REPLAY_FRAMES = [bytes(MediaLeg(REPLAY_KEY, 0, 1, 2).seal_mini(5000 + 20 * k, bytes([k]) * 160)) for k in range(41)]


@_settings("media_replay")
@given(st.lists(st.integers(0, 40), min_size=1, max_size=60))
def test_replayed_media_frames_are_rejected(order):
    """Frames at 20 ms steps delivered in any order with duplicates: each timestamp at most once."""
    rx = MediaLeg(REPLAY_KEY, 1, 2, 1)
    frames = REPLAY_FRAMES
    accepted = []
    for k in order:
        buf = bytearray(frames[k])
        ts = rx.open_mini(buf)
        if ts is not None:
            assert ts == 5000 + 20 * k
            assert bytes(buf[4:164]) == bytes([k]) * 160
            accepted.append(ts)
    assert len(accepted) == len(set(accepted))
    assert accepted and accepted[0] == 5000 + 20 * order[0]
    for ts in accepted:
        assert rx.open_mini(bytearray(frames[(ts - 5000) // 20])) is None


# --- found by these tests (bugs since fixed): regression tests ----------------------

def test_short_datagram_to_session_table_raises_only_decode_error():
    table = PeerTable(_lookup, Stats(), 60000)
    for data in (b"\x80", b"\xc0\x01"):
        _only_decode_error(table.receive, data, FORGER_ADDR, 0)


def test_two_authentic_frames_in_the_same_millisecond_are_both_delivered():
    """Regression: SessionTable once took the second frame of a millisecond for a forgery."""
    w = World()
    w.client.send(wire.DTMF, {wire.IE_DIGIT: "1"}, 100)
    w.client.send(wire.DTMF, {wire.IE_DIGIT: "2"}, 100)
    digits = []
    for d in w.client.datagrams_to_send(100):
        _peer, messages = w.table.receive(d, CLIENT_ADDR, 100)
        digits += [ies[wire.IE_DIGIT] for _t, ies in messages]
    assert digits == ["1", "2"]


def test_media_frame_replayed_after_the_16_bit_wrap_is_rejected():
    key = bytes(16)
    tx, rx = MediaLeg(key, 0, 1, 2), MediaLeg(key, 1, 2, 1)
    captured = None
    for ts in range(0, 65536 + 2000, 20):
        frame = bytearray(tx.seal_mini(ts, bytes(160)))
        if ts == 2000:
            captured = bytes(frame)
        assert rx.open_mini(frame) == ts
    assert rx.replay.highest == ts
    assert rx.open_mini(bytearray(captured)) is None


def test_replayed_login_response_does_not_replace_a_newer_session():
    """A RESPONSE recorded from an earlier login, replayed within its cookie's life, creates nothing."""
    w = World()
    first_response = w.response
    peer = w.table.by_identity[("phone", "201")]
    # the phone logs in again (new nonce): a new session replaces the first
    again = Login(wire.IE_EXTENSION, "201", SECRET, 9, lambda n: bytes([7]) * n)
    again.start(60)
    hello = again.datagrams_to_send(60)[0]
    challenge, _ = w.table.handle_handshake(hello, CLIENT_ADDR, 60)
    again.receive(challenge, 60)
    response = again.datagrams_to_send(60)[0]
    _reply, newer = w.table.handle_handshake(response, CLIENT_ADDR, 60)
    assert newer is not None and newer is not peer
    # the old RESPONSE comes back: the newer session stays
    reply, created = w.table.handle_handshake(first_response, CLIENT_ADDR, 70)
    assert created is None and reply is None
    assert w.table.by_identity[("phone", "201")] is newer
