"""Bad input on both interpreters: a seeded random-mutation loop over the decoders and receive paths.

The same rules as tests/test_fuzz.py (which uses hypothesis on CPython, and also
covers host.sessions): only wire.DecodeError escapes, forged frames are rejected
and change nothing, replayed media frames are rejected. A few thousand cases,
the same ones on every run (random.seed).
"""
import random

from common import media, session, wire
from common.crypto import HmacKey
from common.login import UP, Login
from common.crypto import extend16
from common.media import MediaLeg
from common.reliable import Channel

SECRET = bytes(range(16))
MUTATED_ROUNDS = 800       # each round mutates all 11 valid frames: 8800 cases
RANDOM_CASES = 4000


def _login():
    """A phone logged in to a minimal server; returns (client, server channel, frames)."""
    key = session.handshake_key(SECRET)
    nonce = bytes(range(0xA0, 0xB0))
    client = Login(wire.IE_EXTENSION, "201", SECRET, 0x105, lambda n: nonce[:n])
    client.start(0)
    hello = client.datagrams_to_send(0)[0]
    _i, _t, ies = session.parse_handshake(hello)
    cookie = session.make_cookie(b"k" * 32, ("ext", "201"), ies[wire.IE_NONCE], 0x105, "198.18.0.10:1", 0)
    challenge = session.seal_handshake(key, 0x105, wire.CHALLENGE, {wire.IE_COOKIE: cookie})
    client.receive(challenge, 1)
    response = client.datagrams_to_send(1)[0]
    server = Channel(session.SessionCrypto(*session.session_keys(SECRET, nonce, cookie, False)), 0x105)
    server.send(wire.WELCOME, {wire.IE_SESSION_INDEX: 0x2A5A5, wire.IE_TTL: 60, wire.IE_TIME: 0}, 2)
    welcome = server.datagrams_to_send(2)[0]
    client.receive(welcome, 3)
    assert client.state == UP
    client.send(wire.DTMF, {wire.IE_DIGIT: "5"}, 4)
    dtmf = client.datagrams_to_send(4)[0]
    assert server.receive(dtmf, 5) == [(wire.DTMF, {wire.IE_DIGIT: "5"})]
    server.send(wire.SYSINFO, {wire.IE_VERSION: 3, wire.IE_CHUNK: 1, wire.IE_DATA: b"x" * 255}, 6)
    sysinfo = server.datagrams_to_send(6)[0]
    assert len(client.receive(sysinfo, 7)) == 1
    ack = client.datagrams_to_send(8)[0]
    server.receive(ack, 9)
    return client, server, [hello, challenge, response, welcome, dtmf, sysinfo, ack]


def _trunk_extend(call_no, ts16):
    """The receiver of the test trunk knows calls 0x101..0x103 and has seen up to ts 1980."""
    return extend16(1980, ts16) if call_no in (0x101, 0x102, 0x103) else None


class World:
    def __init__(self):
        self.client, self.server, frames = _login()
        key = bytes(range(0x10, 0x20))
        self.tx = MediaLeg(key, 0, 0x11, 0x22)
        self.rx = MediaLeg(key, 1, 0x22, 0x11)
        mini = bytes(self.tx.seal_mini(1000, bytes(range(160))))
        cn = bytes(self.tx.seal_mini(1020, b"\x40"))
        assert self.rx.open_mini(bytearray(mini)) == 1000
        assert self.rx.open_mini(bytearray(cn)) == 1020
        self.trunk_auth = HmacKey(bytes(range(32)))
        self.trunk_extend = _trunk_extend
        legs = [MediaLeg(bytes([i]) * 16, 0, i, 0x100 + i) for i in (1, 2, 3)]
        trunk = bytes(media.seal_trunk(self.trunk_auth, 0x2A5A5, [
            (legs[0], 2000, bytes(160)), (legs[1], 2000, bytes(range(160))), (legs[2], 2000, b"\x01")],
            bytearray(600)))
        self.frames = frames + [mini, cn, trunk]
        self.pristine = list(self.frames)

    def snapshot(self):
        c, s = self.client.channel, self.server
        return (self.client.state, c.expected, c.next_seq, len(c._unacked), c.last_receive_ms, c._ack_due,
                s.expected, s.next_seq, len(s._unacked), s.last_receive_ms, s._ack_due,
                self.rx.replay.highest, bytes(self.rx.replay._seen), self.rx.received)


def _only_decode_error(fn, *args):
    try:
        return fn(*args)
    except wire.DecodeError as exc:
        assert exc.field and exc.offset >= 0
        return None


def _decoders(data):
    _only_decode_error(wire.frame_kind, data)
    _only_decode_error(wire.parse_full, data)
    _only_decode_error(wire.parse_mini, data)
    _only_decode_error(wire.parse_trunk, data)
    _only_decode_error(wire.decode_ies, data)
    _only_decode_error(wire.decode_ies, data[wire.FULL_HEADER:], wire.FULL_HEADER)
    _only_decode_error(session.parse_handshake, data)


def _receive_paths(w, data):
    """Names of the receive paths that accepted data (must be none); state must not change."""
    before = w.snapshot()
    accepted = []
    if _only_decode_error(w.client.receive, data, 50):
        accepted.append("Login.receive")
    if _only_decode_error(w.server.receive, data, 50):
        accepted.append("Channel.receive")
    if _only_decode_error(w.rx.open_mini, bytearray(data)) is not None:
        accepted.append("MediaLeg.open_mini")
    if _only_decode_error(media.open_trunk, w.trunk_auth, bytearray(data), w.trunk_extend) is not None:
        accepted.append("open_trunk")
    assert w.snapshot() == before, "a rejected datagram changed state"
    return accepted


def _mutate(rng, frame):
    data = bytearray(frame)
    for _ in range(1 + rng.getrandbits(2)):
        op = rng.getrandbits(3) % 5
        n = len(data)
        if op <= 1 and n:
            data[rng.getrandbits(16) % n] ^= 1 << rng.getrandbits(3)
        elif op == 2 and n:
            data = data[:rng.getrandbits(16) % n]
        elif op == 3:
            data.extend(bytes(rng.getrandbits(8) for _ in range(1 + rng.getrandbits(5))))
        else:
            i = rng.getrandbits(16) % (n + 1)
            data = data[:i] + bytes([rng.getrandbits(8)]) + data[i:]
    return bytes(data)


def test_mutated_frames_raise_only_decode_error_and_are_rejected():
    random.seed(20260101)
    w = World()
    cases = 0
    for _ in range(MUTATED_ROUNDS):
        for frame in w.frames:
            data = _mutate(random, frame)
            _decoders(data)
            if data != frame:
                assert _receive_paths(w, data) == [], data
                cases += 1
    assert cases > MUTATED_ROUNDS * len(w.frames) * 9 // 10
    assert w.frames == w.pristine


def test_random_datagrams_raise_only_decode_error_and_are_rejected():
    random.seed(7)
    w = World()
    first = (0x00, 0x7F, 0x80, 0xBF, 0xC0, 0xFF)
    for i in range(RANDOM_CASES):
        n = random.getrandbits(9) % 400
        data = bytes(random.getrandbits(8) for _ in range(n))
        if data and i % 2:
            data = bytes([first[i % len(first)]]) + data[1:]
        _decoders(data)
        assert _receive_paths(w, data) == []


def test_replayed_media_frames_are_rejected_in_any_order():
    random.seed(11)
    key = bytes(16)
    tx = MediaLeg(key, 0, 1, 2)
    frames = [bytes(tx.seal_mini(5000 + 20 * k, bytes([k]) * 160)) for k in range(20)]
    for _ in range(30):
        rx = MediaLeg(key, 1, 2, 1)
        accepted = []
        for _ in range(40):
            k = random.getrandbits(8) % 20
            ts = rx.open_mini(bytearray(frames[k]))
            if ts is not None:
                assert ts == 5000 + 20 * k
                accepted.append(ts)
        assert accepted and len(accepted) == len(set(accepted))
        for ts in accepted:
            assert rx.open_mini(bytearray(frames[(ts - 5000) // 20])) is None
