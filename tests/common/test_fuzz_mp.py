"""Bad input on both interpreters: a seeded random-mutation loop over the decoders and receive paths.

The same rules as tests/test_fuzz.py (which uses hypothesis on CPython, and also
covers host.peers): only wire.DecodeError escapes; a forged frame is rejected
and changes nothing, both by the receiver that is about to accept the real frame
(World: each forgery arrives just before the real frame, which must then get in)
and by every receive path once everything is up; replayed media frames are
rejected. A few thousand cases, the same ones on every run (random.seed), counted
as they run. test_each_receiver_would_accept_a_forgery_without_its_tag_check shows
that the rule can fail: with the tag checks patched out, each forgery gets in.
"""
import random

from common import media, session, trunk, wire
from common.crypto import HmacKey, extend16
from common.login import UP, Login
from common.media import MediaLeg
from common.reliable import Channel

SECRET = bytes(range(16))
IDENTITY = ("ext", "201")
CLIENT_INDEX = 0x105
CLIENT_ADDRESS = "198.18.0.10:1"
COOKIE_SECRET = b"k" * 32
NONCE = bytes(range(0xA0, 0xB0))
MUTATED_ROUNDS = 800       # each round mutates all 10 valid frames
RANDOM_CASES = 4000
NAMES = ("hello", "challenge", "response", "welcome", "dtmf", "sysinfo", "ack", "mini", "cn", "trunk")


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
    """A phone logs in to a minimal server (common.session's handshake checks), sends and gets a
    message, and media flows: one real frame of every kind (NAMES), each delivered to the
    receiver that expects it at that moment, which must accept it.

    With forge(name, frame) -> bytes (or None), each receiver first gets the forged frame, in
    the state in which it is about to accept the real one: it must reject it (nothing back, or
    a DecodeError) and change nothing; then the real frame must still be accepted.
    """

    def __init__(self, forge=None):
        self.forge = forge
        self.forged = 0
        self.frames = {}           # name -> the real frame
        self.order = []            # names in the order they were delivered
        self.key = session.handshake_key(SECRET)
        self.client = Login(wire.IE_EXTENSION, "201", SECRET, CLIENT_INDEX, lambda n: NONCE[:n])
        self.server = None
        key = bytes(range(0x10, 0x20))
        self.tx = MediaLeg(key, 0, 0x11, 0x22)
        self.rx = MediaLeg(key, 1, 0x22, 0x11)
        self.trunk_auth = HmacKey(bytes(range(32)))
        self.trunk_extend = _trunk_extend
        self._login()
        self._messages()
        self._media()
        assert tuple(self.order) == NAMES

    # the minimal server: what a host does with a HELLO and a RESPONSE, with common.session

    def _identified(self, data, msg_type):
        """The IEs of a handshake frame of msg_type from our client with a valid tag, else None."""
        _index, got_type, ies = session.parse_handshake(data)
        if got_type != msg_type or session.identity_of(ies) != IDENTITY or wire.IE_SESSION_INDEX not in ies \
                or wire.IE_NONCE not in ies or not session.verify_handshake(self.key, data):
            return None
        return ies

    def _server_hello(self, data):
        ies = self._identified(data, wire.HELLO)
        if ies is None:
            return None
        cookie = session.make_cookie(COOKIE_SECRET, IDENTITY, ies[wire.IE_NONCE], ies[wire.IE_SESSION_INDEX],
                                     CLIENT_ADDRESS, 0)
        return session.seal_handshake(self.key, ies[wire.IE_SESSION_INDEX], wire.CHALLENGE, {wire.IE_COOKIE: cookie})

    def _server_response(self, data):
        ies = self._identified(data, wire.RESPONSE)
        if ies is None:
            return None
        nonce, cookie = ies[wire.IE_NONCE], ies.get(wire.IE_COOKIE)
        if cookie != session.make_cookie(COOKIE_SECRET, IDENTITY, nonce, ies[wire.IE_SESSION_INDEX], CLIENT_ADDRESS, 0):
            return None
        return Channel(session.SessionCrypto(*session.session_keys(SECRET, nonce, cookie, False)),
                       ies[wire.IE_SESSION_INDEX])

    def _login(self):
        client = self.client
        client.start(0)
        hello = client.datagrams_to_send(0)[0]
        challenge = self._deliver("hello", hello, self._server_hello)

        def client_turn(data):
            client.receive(data, 1)
            return client.datagrams_to_send(1)     # the RESPONSE once the CHALLENGE is taken
        response = self._deliver("challenge", challenge, client_turn)[0]
        self.server = self._deliver("response", response, self._server_response)
        self.server.send(wire.WELCOME, {wire.IE_SESSION_INDEX: 0x2A5A5, wire.IE_TTL: 60, wire.IE_TIME: 0}, 2)
        welcome = self.server.datagrams_to_send(2)[0]
        self._deliver("welcome", welcome, lambda d: client.receive(d, 3) or client.state == UP)

    def _messages(self):
        client, server = self.client, self.server
        client.send(wire.DTMF, {wire.IE_DIGIT: "5"}, 4)
        dtmf = client.datagrams_to_send(4)[0]
        assert self._deliver("dtmf", dtmf, lambda d: server.receive(d, 5)) == [(wire.DTMF, {wire.IE_DIGIT: "5"})]
        server.send(wire.SYSINFO, {wire.IE_VERSION: 3, wire.IE_CHUNK: 1, wire.IE_DATA: b"x" * 255}, 6)
        sysinfo = server.datagrams_to_send(6)[0]
        assert len(self._deliver("sysinfo", sysinfo, lambda d: client.receive(d, 7))) == 1
        ack = client.datagrams_to_send(8)[0]
        assert wire.parse_full(ack)[3] == wire.ACK

        def server_ack(data):
            before = server.new
            server.receive(data, 9)
            return server.new > before     # an ACK delivers nothing: it is taken when it is new
        self._deliver("ack", ack, server_ack)
        assert server.pending() == 0

    def _media(self):
        mini = bytes(self.tx.seal_mini(1000, bytes(range(160))))
        cn = bytes(self.tx.seal_mini(1020, b"\x40"))
        assert self._deliver("mini", mini, lambda d: self.rx.open_mini(bytearray(d))) == 1000
        assert self._deliver("cn", cn, lambda d: self.rx.open_mini(bytearray(d))) == 1020
        legs = [MediaLeg(bytes([i]) * 16, 0, i, 0x100 + i) for i in (1, 2, 3)]
        trunk = bytes(media.seal_trunk(self.trunk_auth, 0x2A5A5, [
            (legs[0], 2000, bytes(160)), (legs[1], 2000, bytes(range(160))), (legs[2], 2000, b"\x01")],
            bytearray(600)))
        got = self._deliver("trunk", trunk, lambda d: media.open_trunk(self.trunk_auth, bytearray(d), self.trunk_extend))
        assert [(c, ts) for c, ts, _s, _e in got] == [(0x101, 2000), (0x102, 2000), (0x103, 2000)]

    def _deliver(self, name, frame, receive):
        """The forgery of frame (if any), then frame itself; what the receiver made of the real one."""
        self.frames[name] = frame
        self.order.append(name)
        forged = self.forge(name, frame) if self.forge is not None else None
        if forged is not None and forged != frame:
            before, rejected = self.snapshot(), self.rx.rejected
            try:
                got = receive(forged)
            except wire.DecodeError as exc:
                assert exc.field and exc.offset >= 0
                got, rejected = None, -1
            assert not _accepted(got), "forged %s accepted: %s (real: %s)" % (name, forged.hex(), frame.hex())
            assert self.snapshot() == before, "forged %s changed state: %s" % (name, forged.hex())
            assert name not in ("mini", "cn") or self.rx.rejected > rejected, "forged %s not counted" % name
            self.forged += 1
        got = receive(frame)
        assert _accepted(got), "%s: the receiver expecting it rejected the real frame" % name
        return got

    def snapshot(self):
        c, rx = self.client, self.rx
        return [c.state, len(c._out), _channel_state(c.channel), _channel_state(self.server),
                rx.replay.highest, bytes(rx.replay._seen), rx.replay._held, rx.received]


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
    """Names of w's receive paths (everything up) that accepted data (must be none); state must not change."""
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


def test_the_cases_are_the_same_on_every_run():
    assert World().frames == World().frames


def test_mutated_frames_raise_only_decode_error_and_are_rejected():
    """Each mutation goes to the decoders, to every receive path of a world where everything is up,
    and, in a fresh world, to the receiver about to accept the real frame."""
    random.seed(20260101)
    done = World()
    pristine = dict(done.frames)
    cases = [0]

    def forge(_name, frame):
        data = _mutate(random, frame)
        _decoders(data)
        if data != frame:
            assert _receive_paths(done, data) == [], data
            cases[0] += 1
        return data

    forged = 0
    for _ in range(MUTATED_ROUNDS):
        w = World(forge)
        assert w.frames == pristine
        forged += w.forged
    assert forged == cases[0] and cases[0] > MUTATED_ROUNDS * len(NAMES) * 9 // 10


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


def _flip_tag_of(target):
    """A forgery of one frame kind only: the last bit of its tag (every frame kind ends with its tag)."""
    return lambda name, frame: frame[:-1] + bytes([frame[-1] ^ 1]) if name == target else None


def test_each_receiver_would_accept_a_forgery_without_its_tag_check():
    """The receiver World forges against is live: only its tag check stands between it and the forgery."""
    for name in NAMES:
        assert World(_flip_tag_of(name)).forged == 1          # rejected: the tag does not verify
    saved = (HmacKey.verify, HmacKey.verify_into, session.compare_digest, trunk.compare_digest)
    same_length = lambda a, b: len(a) == len(b)               # noqa: E731
    HmacKey.verify = lambda self, msg, received, size: len(received) == size
    HmacKey.verify_into = lambda self, prefix, msg, n, tag, off, size: True
    session.compare_digest = trunk.compare_digest = same_length
    try:
        assert World().frames == World().frames                # the real frames still go through
        for name in NAMES:
            try:
                World(_flip_tag_of(name))
            except AssertionError as exc:
                assert ("forged %s accepted" % name) in str(exc), exc
            else:
                raise AssertionError("a forged %s got no further than without its tag check" % name)
    finally:
        HmacKey.verify, HmacKey.verify_into, session.compare_digest, trunk.compare_digest = saved
