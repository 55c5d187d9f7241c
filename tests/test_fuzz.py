"""Bad input: random and mutated datagrams against every decoder and receive path (CPython).

What must hold for any datagram at all:
- the only exception that escapes a decoder or receive path is common.wire.DecodeError;
- a forged frame (a valid frame with bits flipped, cut, extended or with a byte
  inserted) is rejected: None / [] / (None, []), and it changes nothing: no
  session, no address update (B7), no delivery, no acknowledgement, no replay mark;
  the receiver is one that would accept the real frame at that moment (World:
  each forgery reaches its receiver just before the real frame, which must then
  be accepted), so a forgery cannot pass for rejected merely because it looks
  like a replay or arrives when nobody listens for it;
- a replayed media frame is rejected.

Hypothesis runs derandomized and the server's own randomness is fixed (World), so
the cases are the same on every run; together the tests below run well over
100,000 datagrams, counted as they run (test_enough_cases_in_total), in about 20 s
on a 2-core x86_64 machine. test_each_receiver_would_accept_a_forgery_without_its_tag_check shows that
the rule can fail: with the tag checks patched out, every frame kind's forgery gets in.
The MicroPython half of this file is tests/common/test_fuzz_mp.py.
"""
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upbx.common import media, session, trunk, wire
from upbx.common.crypto import HmacKey, extend16
from upbx.common.login import UP, Login
from upbx.common.media import MediaLeg
from upbx.host import session_crypto
from upbx.host.peers import HandshakeKey, PeerTable

SECRET = bytes(range(16))
IDENTITY = ("phone", "201")
CLIENT_ADDR = ("198.18.0.10", 40000)
FORGER_ADDR = ("198.18.99.99", 6666)

# hypothesis examples per test (max_examples); what ran is counted in RAN
EXAMPLES = {
    "decoders_random": 12000,
    "decoders_mutated": 3000,
    "forged_in_turn": 3000,
    "receive_mutated": 3000,
    "receive_random": 6000,
    "media_replay": 800,
}
RAN = {}   # test -> [examples, datagrams], counted by the test bodies as hypothesis runs them


def _ran(name, datagrams):
    counts = RAN.setdefault(name, [0, 0])
    counts[0] += 1
    counts[1] += datagrams


# The number of cases is fixed (derandomized, no deadline, no health check that stops early, and
# counted); the time they take is the machine's: the longest property takes 18 s alone on a 2-core
# machine and ten times that or more at load 30, past pytest's 300 s. A property stopped by that
# timeout left a short count in RAN, and test_enough_cases_in_total then reported too few cases.
# This timeout only catches a hang.
FUZZ_TIMEOUT = 1800


def _settings(name):
    fixed = settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))
    return lambda test: pytest.mark.timeout(FUZZ_TIMEOUT)(fixed(test))


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


def _accepted(got):
    """What a receive path gave back means the frame got in (a timestamp 0 counts, a rejection never)."""
    return got is not None and got is not False and got != []


def _channel_state(ch):
    if ch is None:
        return None
    return (ch.expected, ch.next_seq, len(ch._unacked), len(ch._early), len(ch._out), ch._ack_due,
            ch.last_receive_ms, ch.authenticated, ch.new, ch.duplicates)


class World:
    """A phone logs in to its server, calls, media flows: one real frame of every kind (NAMES),
    each delivered to the receiver that expects it at that moment, which must accept it.

    With forge(name, frame) -> bytes (or None for no forgery), each receiver first gets the
    forged frame, in the state in which it is about to accept the real one: it must reject it
    (nothing back, or a DecodeError), count it where that receiver counts drops, and change
    nothing; then the real frame must still be accepted. Forged session frames come from
    another address (an accepted one would move the peer, B7); forged handshake frames from
    the client's own (spoofed: the cookie binds the address, so only then is the tag the test).
    """

    NAMES = ("hello", "challenge", "response", "welcome", "setup", "dtmf", "alerting", "sysinfo", "ack",
             "mini", "cn", "trunk")

    def __init__(self, forge=None):
        self.forge = forge
        self.forged = 0            # forged datagrams delivered (each one rejected)
        self.frames = {}           # name -> the real frame, in NAMES order
        # the server's cookie secret and first session index fixed: the same frames on every run
        with mock.patch("secrets.token_bytes", bytes), mock.patch("os.urandom", bytes):
            self.table = PeerTable(_lookup, Stats(), 60000)
        nonce = bytes(range(0xA0, 0xB0))
        self.client = Login(wire.IE_EXTENSION, "201", SECRET, 0x105, lambda n: nonce[:n])
        self.peer = None
        key = bytes(range(0x10, 0x20))
        self.tx = MediaLeg(key, 0, 0x11, 0x22)
        self.rx = MediaLeg(key, 1, 0x22, 0x11)
        self.trunk_auth = HmacKey(bytes(range(32)))
        self.trunk_extend = _trunk_extend
        self._login()
        self._call()
        self._media()
        assert tuple(self.frames) == self.NAMES

    def _login(self):
        table, client = self.table, self.client
        client.start(0)
        [hello] = client.datagrams_to_send(0)
        challenge = self._deliver("hello", hello, CLIENT_ADDR, True,
                                  lambda d, a: table.handle_handshake(d, a, 0)[0])

        def client_turn(data, _addr):
            client.receive(data, 1)
            return client.datagrams_to_send(1)     # the RESPONSE once the CHALLENGE is taken
        [response] = self._deliver("challenge", challenge, None, False, client_turn)
        self.peer = self._deliver("response", response, CLIENT_ADDR, True,
                                  lambda d, a: table.handle_handshake(d, a, 2)[1])
        [welcome] = self.peer.channel.datagrams_to_send(2)
        self._deliver("welcome", welcome, None, False, lambda d, a: client.receive(d, 3) or client.state == UP)

    def _call(self):
        client, channel = self.client, self.peer.channel
        client.send(wire.SETUP, {wire.IE_CALL_NO: 0x123, wire.IE_CALLED: "3105", wire.IE_CALLING: "201",
                                 wire.IE_MEDIA_KEY: bytes(16), wire.IE_CALL_ID: bytes(8)}, 4)
        client.send(wire.DTMF, {wire.IE_DIGIT: "5"}, 4)
        setup, dtmf = client.datagrams_to_send(4)     # the ACK of WELCOME is folded into SETUP
        _peer, messages = self._deliver("setup", setup, FORGER_ADDR, True, self._server(5))
        assert [t for t, _ies in messages] == [wire.SETUP]
        _peer, messages = self._deliver("dtmf", dtmf, FORGER_ADDR, True, self._server(6))
        assert messages == [(wire.DTMF, {wire.IE_DIGIT: "5"})]
        channel.send(wire.ALERTING, {wire.IE_CALL_NO: 7, wire.IE_PEER_CALL_NO: 0x123}, 7)
        channel.send(wire.SYSINFO, {wire.IE_VERSION: 3, wire.IE_CHUNK: (0 << 16) | 1, wire.IE_DATA: b"x" * 255}, 7)
        alerting, sysinfo = channel.datagrams_to_send(7)
        assert [t for t, _ies in self._deliver("alerting", alerting, None, False,
                                               lambda d, a: client.receive(d, 8))] == [wire.ALERTING]
        assert [t for t, _ies in self._deliver("sysinfo", sysinfo, None, False,
                                               lambda d, a: client.receive(d, 8))] == [wire.SYSINFO]
        [ack] = client.datagrams_to_send(9)
        assert wire.parse_full(ack)[3] == wire.ACK
        self._deliver("ack", ack, FORGER_ADDR, True, self._server(10))
        assert channel.pending() == 0 and self.peer.address == CLIENT_ADDR

    def _media(self):
        mini = bytes(self.tx.seal_mini(1000, bytes(range(160))))
        cn = bytes(self.tx.seal_mini(1020, b"\x40"))
        open_mini = lambda d, a: self.rx.open_mini(bytearray(d))   # noqa: E731
        assert self._deliver("mini", mini, None, True, open_mini) == 1000
        assert self._deliver("cn", cn, None, True, open_mini) == 1020
        legs = [MediaLeg(bytes([i]) * 16, 0, i, 0x100 + i) for i in (1, 2, 3)]
        trunk = bytes(media.seal_trunk(self.trunk_auth, 0x2A5A5, [
            (legs[0], 2000, bytes(160)), (legs[1], 2000, bytes(range(160))), (legs[2], 2000, b"\x01")],
            bytearray(600)))
        got = self._deliver("trunk", trunk, None, False,
                            lambda d, a: media.open_trunk(self.trunk_auth, bytearray(d), self.trunk_extend))
        assert [(c, ts) for c, ts, _s, _e in got] == [(0x101, 2000), (0x102, 2000), (0x103, 2000)]

    def _server(self, now):
        def receive(data, addr):
            peer, messages = self.table.receive(data, addr, now)
            return None if peer is None else (peer, messages)
        return receive

    def _deliver(self, name, frame, forger, counts, receive):
        """The forgery of frame (if any) from forger's address, then frame itself from the client's.

        counts: this receiver counts what it drops (the session table, a media leg); the
        others return nothing and leave the counting to their caller.
        """
        self.frames[name] = frame
        forged = self.forge(name, frame) if self.forge is not None else None
        if forged is not None and forged != frame:
            before, dropped = self.snapshot(), self.dropped()
            try:
                got = receive(forged, forger or CLIENT_ADDR)
            except wire.DecodeError as exc:
                assert exc.field and exc.offset >= 0
                got, dropped = None, -1
            assert not _accepted(got), "forged %s accepted: %s (real: %s)" % (name, forged.hex(), frame.hex())
            assert self.snapshot() == before, "forged %s changed state: %s" % (name, forged.hex())
            assert not counts or self.dropped() > dropped, "forged %s not counted" % name
            self.forged += 1
        got = receive(frame, CLIENT_ADDR)
        assert _accepted(got), "%s: the receiver expecting it rejected the real frame" % name
        return got

    def dropped(self):
        return sum(self.table.stats.drops.values()) + self.rx.rejected

    def snapshot(self):
        c, t, rx = self.client, self.table, self.rx
        state = [c.state, len(c._out), _channel_state(c.channel), sorted(t.peers), sorted(t.by_identity),
                 len(t.dirty), rx.replay.highest, bytes(rx.replay._seen), rx.replay._held, rx.received]
        if self.peer is not None:
            state += [self.peer.address, self.peer.last_seen_ms, _channel_state(self.peer.channel)]
        return state


W = World()
FRAMES = list(W.frames.values())


def test_the_cases_are_the_same_on_every_run():
    assert World().frames == W.frames
    assert len(set(FRAMES)) == len(World.NAMES)


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
    """Feed data to every receive path of W (all logged in, the call and media up); what accepted it."""
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
    _ran("decoders_random", 1)


@_settings("decoders_mutated")
@given(mutations())
def test_decoders_raise_only_decode_error_on_mutated_frames(ops):
    for frame in FRAMES:
        run_decoders(mutate(frame, ops))
    _ran("decoders_mutated", len(FRAMES))


@_settings("forged_in_turn")
@given(mutations())
def test_forged_frames_are_rejected_by_the_receiver_about_to_accept_the_real_one(ops):
    """A fresh phone, server and media legs per example; every frame forged at its turn (World)."""
    w = World(forge=lambda _name, frame: mutate(frame, ops))
    assert w.frames == W.frames
    _ran("forged_in_turn", w.forged)


@_settings("receive_mutated")
@given(mutations())
def test_mutated_frames_are_rejected_by_every_receive_path(ops):
    """Every receive path, in the state after the whole exchange, rejects every mutation of every frame."""
    n = 0
    for frame in FRAMES:
        data = mutate(frame, ops)
        if data != frame:
            assert run_receive_paths(data) == [], (frame.hex(), data.hex())
            n += 1
    _ran("receive_mutated", n)


@_settings("receive_random")
@given(random_datagrams())
def test_random_datagrams_are_rejected_by_every_receive_path(data):
    assert run_receive_paths(data) == []
    _ran("receive_random", 1)


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
    _ran("media_replay", len(order) + len(accepted))


PROPERTIES = {
    "decoders_random": test_decoders_raise_only_decode_error_on_random_bytes,
    "decoders_mutated": test_decoders_raise_only_decode_error_on_mutated_frames,
    "forged_in_turn": test_forged_frames_are_rejected_by_the_receiver_about_to_accept_the_real_one,
    "receive_mutated": test_mutated_frames_are_rejected_by_every_receive_path,
    "receive_random": test_random_datagrams_are_rejected_by_every_receive_path,
    "media_replay": test_replayed_media_frames_are_rejected,
}


# --- the rule can fail ----------------------------------------------------------------

def _flip_tag_of(target):
    """A forgery of one frame kind only: the last bit of its tag (every frame kind ends with its tag)."""
    return lambda name, frame: frame[:-1] + bytes([frame[-1] ^ 1]) if name == target else None


@pytest.mark.parametrize("name", World.NAMES)
def test_each_receiver_would_accept_a_forgery_without_its_tag_check(name, monkeypatch):
    """The receiver World forges against is live: only its tag check stands between it and the forgery."""
    assert World(forge=_flip_tag_of(name)).forged == 1          # rejected: the tag does not verify
    same_length = lambda a, b: len(a) == len(b)                  # noqa: E731
    monkeypatch.setattr(HmacKey, "verify", lambda self, msg, received, size: len(received) == size)
    monkeypatch.setattr(HmacKey, "verify_into", lambda self, prefix, msg, n, tag, off, size: True)
    monkeypatch.setattr(HandshakeKey, "verify", lambda self, msg, received, size: len(received) == size)
    monkeypatch.setattr(session, "compare_digest", same_length)
    monkeypatch.setattr(trunk, "compare_digest", same_length)   # the trunk tag (common/trunk.py)
    monkeypatch.setattr(session_crypto, "compare_digest", same_length)   # a session at a host
    assert World().frames == W.frames                            # the real frames still go through
    with pytest.raises(AssertionError, match="forged %s accepted" % name):
        World(forge=_flip_tag_of(name))


@pytest.mark.timeout(FUZZ_TIMEOUT)
def test_enough_cases_in_total():
    """At least 100,000 datagrams ran, as counted by the tests themselves (run here if they have not)."""
    for name, prop in PROPERTIES.items():
        if name not in RAN:
            prop()
    for name in PROPERTIES:   # hypothesis gave up on none (it may stop early, e.g. on a filtered strategy)
        assert RAN[name][0] >= EXAMPLES[name] * 9 // 10, (name, RAN[name])
    total = sum(datagrams for _examples, datagrams in RAN.values())
    assert total >= 100000, RAN
# --- found by these tests (bugs since fixed): regression tests ----------------------

def test_short_datagram_to_session_table_raises_only_decode_error():
    table = PeerTable(_lookup, Stats(), 60000)
    for data in (b"\x80", b"\xc0\x01"):
        _only_decode_error(table.receive, data, FORGER_ADDR, 0)


def test_two_authentic_frames_in_the_same_millisecond_are_both_delivered():
    """Regression: PeerTable once took the second frame of a millisecond for a forgery."""
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
    first_response = w.frames["response"]
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
