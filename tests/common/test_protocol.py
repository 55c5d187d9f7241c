"""Login, reliable signalling and media legs, end to end in memory (both interpreters)."""
import os

from common import wire
from common.crypto import ReplayWindow, extend16
from common.login import UP, Login, LoginDown, LoginUp
from common.media import MediaLeg, open_trunk, seal_trunk
from common.crypto import HmacKey
from common.reliable import Channel
from common.session import (SessionCrypto, handshake_key, make_cookie, parse_handshake,
                            seal_handshake, session_keys, verify_handshake)

SECRET = bytes(range(16))


def fields(events):
    """Events as (class name, field, ...) tuples, which compare and print (events have no __eq__ or
    __repr__: on a handset each method is heap)."""
    return [(type(e).__name__,) + tuple(getattr(e, f) for f in e.__slots__) for e in events]


class _Server:
    """Just enough of a server to answer a login (the hosts' real one is host.peers)."""

    def __init__(self):
        self.key = handshake_key(SECRET)
        self.channel = None

    def receive(self, datagram, now):
        index, msg_type, ies = parse_handshake(datagram)
        assert verify_handshake(self.key, datagram)
        cookie = make_cookie(b"k" * 32, "201", ies[wire.IE_NONCE], ies[wire.IE_SESSION_INDEX], "a", now)
        if msg_type == wire.HELLO:
            return [seal_handshake(self.key, ies[wire.IE_SESSION_INDEX], wire.CHALLENGE, {wire.IE_COOKIE: cookie})]
        assert ies[wire.IE_COOKIE] == cookie
        keys = session_keys(SECRET, ies[wire.IE_NONCE], cookie, False)
        self.channel = Channel(SessionCrypto(*keys), ies[wire.IE_SESSION_INDEX])
        self.channel.send(wire.WELCOME, {wire.IE_SESSION_INDEX: 77}, now)
        return self.channel.datagrams_to_send(now)


def _login():
    client = Login(wire.IE_EXTENSION, "201", SECRET, 5, os.urandom)
    server = _Server()
    client.start(0)
    for _ in range(3):
        for d in client.datagrams_to_send(0):
            if server.channel is None:
                for r in server.receive(d, 0):
                    client.receive(r, 0)
            else:
                server.channel.receive(d, 0)
    return client, server


def test_login_reaches_up_and_learns_server_index():
    client, server = _login()
    assert client.state == UP
    assert client.channel.peer_index == 77
    events = client.take_events()
    assert fields(events) == [("LoginUp", {wire.IE_SESSION_INDEX: 77})], fields(events)
    assert client.take_events() == ()     # taken: the next look finds nothing


def test_forged_challenge_is_ignored():
    client = Login(wire.IE_EXTENSION, "201", SECRET, 5, os.urandom)
    client.start(0)
    client.datagrams_to_send(0)
    forged = seal_handshake(handshake_key(b"x" * 16), 5, wire.CHALLENGE, {wire.IE_COOKIE: b"c" * 16})
    assert client.receive(forged, 0) == []
    assert client.state == "hello"


def test_reliable_delivery_in_order_with_loss_and_duplicates():
    client, server = _login()
    sent = []
    for i in range(10):
        client.send(wire.DTMF, {wire.IE_DIGIT: str(i)}, 10)
        sent.append(str(i))
    frames = client.datagrams_to_send(10)
    got = []
    # lose every third frame, deliver the rest twice
    for i, f in enumerate(frames):
        if i % 3 == 0:
            continue
        for _ in range(2):
            got.extend(ies[wire.IE_DIGIT] for t, ies in server.channel.receive(f, 10))
    assert got == []  or got == sent[:len(got)]
    now = 10
    for _ in range(20):
        now += 500
        client.handle_timer(now)
        for f in client.datagrams_to_send(now):
            got.extend(ies[wire.IE_DIGIT] for t, ies in server.channel.receive(f, now))
        for f in server.channel.datagrams_to_send(now):
            client.receive(f, now)
    assert got == sent
    assert client.channel.pending() == 0
    assert server.channel.duplicates > 0


def test_channel_gives_up_after_bound():
    client, server = _login()
    client.send(wire.DTMF, {wire.IE_DIGIT: "1"}, 0)
    now = 0
    while now < 60000 and client.state == UP:
        now += 100
        client.handle_timer(now)
        client.datagrams_to_send(now)
    assert client.state == "backoff"
    events = client.take_events()
    assert [type(e) for e in events] == [LoginUp, LoginDown] and "no acknowledgement" in events[-1].reason, fields(events)
    assert now < 30000


def _exchange(client, server, now, captured):
    """The client's datagrams to the server, and each reply (kept in captured) back to the client."""
    for d in client.datagrams_to_send(now):
        if wire.parse_full(d)[3] in wire.HANDSHAKE_TYPES:
            replies = server.receive(d, now)
        else:
            server.channel.receive(d, now)
            replies = server.channel.datagrams_to_send(now)
        for r in replies:
            captured.append(bytes(r))
            client.receive(bytearray(r), now)


def test_a_replayed_old_frame_does_not_keep_a_login_alive():
    """Liveness counts new frames only (Channel.new): frames the server once sent, replayed by
    someone on the path, authenticate (they are the server's) but cannot hide that it is gone."""
    client = Login(wire.IE_EXTENSION, "201", SECRET, 5, os.urandom, keepalive_ms=1000, dead_ms=2000)
    server = _Server()
    client.start(0)
    captured = []
    now = 0
    while now < 2500:             # logged in, two keepalives answered
        client.handle_timer(now)
        _exchange(client, server, now, captured)
        now += 50
    assert client.state == UP and client.last_heard_ms >= 2000
    old = [f for f in captured if wire.parse_full(f)[3] not in wire.HANDSHAKE_TYPES]
    kinds = set(wire.parse_full(f)[3] for f in old)
    assert wire.WELCOME in kinds and wire.ACK in kinds, kinds
    heard = client.last_heard_ms
    authenticated = client.channel.authenticated
    replays = 0
    while client.state == UP and now < 10000:   # the server is gone; its old frames come every 100 ms
        client.handle_timer(now)
        client.datagrams_to_send(now)
        if now % 100 == 0:
            for f in old:
                assert client.receive(bytearray(f), now) == []
                replays += 1
            assert client.channel.authenticated == authenticated + replays   # every replay authenticates
        now += 50
    events = client.take_events()
    assert client.state != UP and isinstance(events[-1], LoginDown), fields(events)
    assert "nothing heard" in events[-1].reason, fields(events)
    assert now - heard <= 1000 + 2000 + 50 and replays > 40, (now - heard, replays)


def test_tampered_signalling_is_rejected():
    client, server = _login()
    client.send(wire.DTMF, {wire.IE_DIGIT: "7"}, 0)
    frame = bytearray(client.datagrams_to_send(0)[0])
    frame[9] ^= 1
    assert server.channel.receive(bytes(frame), 0) == []


def test_media_leg_roundtrip_replay_and_forgery():
    key = bytes(16)
    a = MediaLeg(key, 0, 11, 22)
    b = MediaLeg(key, 1, 22, 11)
    payload = bytes(range(160))
    frame = bytearray(a.seal_mini(40, payload))
    assert len(frame) == 168
    assert b.open_mini(frame) == 40
    assert bytes(frame[4:164]) == payload
    assert b.open_mini(bytearray(a.seal_mini(40, payload))) is None  # replayed timestamp
    forged = bytearray(a.seal_mini(60, payload))
    forged[10] ^= 0x80
    assert b.open_mini(forged) is None
    assert b.rejected == 2


def test_trunk_frame_carries_many_calls():
    key = bytes(16)
    session_auth = HmacKey(b"s" * 32)
    senders = [MediaLeg(key + bytes([i]) if False else bytes([i]) * 16, 0, 100 + i, 200 + i) for i in range(1, 11)]
    receivers = [MediaLeg(bytes([i]) * 16, 1, 200 + i, 100 + i) for i in range(1, 11)]
    buf = bytearray(1700)
    frame = bytearray(seal_trunk(session_auth, 9, [(leg, 20, bytes([leg.call_no & 0xFF]) * 160) for leg in senders], buf))
    assert len(frame) == 3 + 10 * 164 + 4
    by_call = dict((leg.call_no, leg) for leg in receivers)
    extend = lambda call_no, ts16: extend16(by_call[call_no].replay.highest, ts16) if call_no in by_call else None
    entries = open_trunk(session_auth, frame, extend)
    assert [e[0] for e in entries] == [200 + i for i in range(1, 11)]
    for (call_no, ts, start, end), leg in zip(entries, receivers):
        assert bytes(leg.open_entry_bytes(frame, ts, start, end)) == bytes([(call_no - 100) & 0xFF]) * 160
        assert leg.open_entry_bytes(frame, ts, start, end) is None     # replay
    frame[5] ^= 1
    assert open_trunk(session_auth, frame, extend) is None


def test_media_replayed_after_the_timestamp_wraps_is_rejected():
    key = bytes(16)
    a = MediaLeg(key, 0, 11, 22)
    b = MediaLeg(key, 1, 22, 11)
    payload = bytes(160)
    old = bytearray(a.seal_mini(1000, payload))
    assert b.open_mini(bytearray(old)) == 1000
    for ts in range(1020, 65536 + 900, 20):  # the call goes on past the 16-bit wrap
        assert b.open_mini(bytearray(a.seal_mini(ts, payload))) == ts
    assert b.open_mini(old) is None          # same low 16 bits as 66536, but the tag covers 1000


def test_replay_window_and_timestamp_extension():
    w = ReplayWindow()
    for n in (5, 3, 70, 69):
        assert w.check(n)
        w.mark(n)
    assert not w.check(5) and not w.check(70) and not w.check(3)
    assert w.check(68)
    assert extend16(0xFFF0, 0x0010) == 0x10010
    assert extend16(0x10010, 0xFFF0) == 0xFFF0
    assert extend16(-1, 7) == 7


def test_decoder_rejects_malformed_frames_with_field_and_offset():
    for bad in (b"", b"\x00\x01\x00", b"\x80\x00", b"\xc0\x00\x01\x00\x05\x00"):
        try:
            kind = wire.frame_kind(bad)
            if kind == wire.KIND_MINI:
                wire.parse_mini(bad)
            elif kind == wire.KIND_FULL:
                wire.parse_full(bad)
            else:
                wire.parse_trunk(bad)
        except wire.DecodeError as exc:
            assert exc.offset >= 0 and exc.field
        else:
            raise AssertionError("accepted %r" % bad)
    try:
        wire.decode_ies(b"\x10\x05\x00")
    except wire.DecodeError as exc:
        assert exc.offset == 0
    else:
        raise AssertionError("accepted truncated IE")


def test_resend_now_sends_unacknowledged_messages_at_once():
    client, server = _login()
    client.send(wire.DTMF, {wire.IE_DIGIT: "4"}, 0)
    client.datagrams_to_send(0)            # lost on the way
    client.handle_timer(10)
    assert client.datagrams_to_send(10) == []
    client.channel.resend_now(10)
    client.handle_timer(10)
    frames = client.datagrams_to_send(10)
    assert len(frames) == 1
    assert [ies[wire.IE_DIGIT] for t, ies in server.channel.receive(frames[0], 10)] == ["4"]
