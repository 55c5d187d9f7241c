"""Time that wraps: login, keepalives, re-login, retransmission and the jitter buffer across it.

A handset's clock is time.ticks_ms(), which wraps (2**30 ms on 32-bit ports such as the
ESP32). Under MicroPython every test here starts 3 s before the running port's own wrap
(`ticks_add(0, -3000)`; `time.ticks_add(0, -1) + 1` is the period) and runs well past it;
under CPython, whose hosts pass a monotonic ms that never wraps, the same tests start at
2**30 - 3000 and must behave identically. The loop drives the state machines as the
firmware does: a timer is due when ticks_diff(now, timer) >= 0.
"""
import os

from common import wire
from common.compat import MICROPYTHON, ticks_add, ticks_diff
from common.login import BACKOFF, HELLO_SENT, UP, Login, LoginDown, LoginUp
from common.reliable import MAX_TRIES, Channel
from common.session import SessionCrypto, session_keys
from firmware.audio.jitter import FRAME, JitterBuffer
from test_protocol import _Server, fields  # tests/common is on the path under both interpreters

START = ticks_add(0, -3000) if MICROPYTHON else 2 ** 30 - 3000
SECRET = bytes(range(16))


def at(ms):
    """The clock `ms` milliseconds after START (wrapped where the port wraps)."""
    return ticks_add(START, ms)


def test_the_clock_really_wraps_under_micropython():
    if MICROPYTHON:
        assert at(5000) < START and ticks_diff(at(5000), START) == 5000
    else:
        assert at(5000) > START


def _handshake(client, server, now):
    for _ in range(3):
        for d in client.datagrams_to_send(now):
            if server.channel is None:
                for r in server.receive(d, now):
                    client.receive(r, now)
            else:
                server.channel.receive(d, now)


def _logged_in(now, keepalive_ms=1000, dead_ms=2000):
    client = Login(wire.IE_EXTENSION, "201", SECRET, 5, os.urandom, keepalive_ms=keepalive_ms, dead_ms=dead_ms)
    server = _Server()
    client.start(now)
    _handshake(client, server, now)
    assert client.state == UP
    return client, server


def _run(client, server, start_ms, end_ms, answering=True, step=50):
    """Drive the client from start_ms to end_ms after START; returns the times (ms after START) of its datagrams."""
    sent = []
    t = start_ms
    while t <= end_ms:
        now = at(t)
        timer = client.next_timer()
        if timer is not None:
            # a timer is never further away than the keepalive: the wrap must not push it 12 days out
            assert ticks_diff(timer, now) <= 5000, (t, ticks_diff(timer, now))
            if ticks_diff(now, timer) >= 0:
                client.handle_timer(now)
        for d in client.datagrams_to_send(now):
            sent.append(t)
            if not answering:
                continue
            if wire.parse_full(d)[3] in wire.HANDSHAKE_TYPES:
                replies = server.receive(d, now)
            else:
                server.channel.receive(d, now)
                replies = server.channel.datagrams_to_send(now)
            for reply in replies:
                client.receive(reply, now)
        t += step
    return sent


def test_keepalives_keep_the_registration_up_across_the_wrap():
    client, server = _logged_in(at(0))
    sent = _run(client, server, 0, 10000)
    assert client.state == UP and fields(client.take_events()) == [("LoginUp", {wire.IE_SESSION_INDEX: 77})]
    # a PING every keepalive (1 s), before and after the wrap at 3 s, none missing
    after_wrap = [t for t in sent if t > 3000]
    assert len(after_wrap) >= 6, sent
    assert all(b - a <= 1100 for a, b in zip(sent, sent[1:])), sent
    assert client.last_heard_ms is not None and ticks_diff(at(10000), client.last_heard_ms) < 1100


def test_silence_is_noticed_across_the_wrap_and_the_phone_logs_in_again():
    client, server = _logged_in(at(1000))
    _run(client, server, 1000, 2000)
    assert client.state == UP
    # the server falls silent just before the wrap: keepalive + dead = 3 s later the session is down
    _run(client, server, 2050, 5500, answering=False)
    events = client.take_events()
    assert client.state in (BACKOFF, HELLO_SENT) and [type(e) for e in events] == [LoginUp, LoginDown], events
    assert "nothing heard" in events[-1].reason or "acknowledgement" in events[-1].reason
    # after the backoff (at most 1 s) it says HELLO again, well after the wrap, to a server that is back
    sent = _run(client, _Server(), 5550, 8000)
    assert sent and sent[0] > 5500 and client.state == UP and client.logins == 2, (sent, client.state)
    assert [type(e) for e in client.take_events()] == [LoginUp]


def test_retransmissions_follow_their_schedule_across_the_wrap():
    keys = session_keys(SECRET, b"n" * 16, b"c" * 16, True)
    channel = Channel(SessionCrypto(*keys), 1)
    channel.send(wire.PING, {}, at(-200))
    sends = [-200] * len(channel.datagrams_to_send(at(-200)))
    while not channel.failed:
        timer = channel.next_timer()
        channel.handle_timer(timer)
        sends += [ticks_diff(timer, START)] * len(channel.datagrams_to_send(timer))
    # 250 ms doubling to 4 s, as without a wrap (docs/protocol.md)
    assert [b - a for a, b in zip(sends, sends[1:])] == [250, 500, 1000, 2000, 4000, 4000, 4000]
    assert len(sends) == MAX_TRIES


def _stream(jb, first_ms, frames):
    """Frames every 20 ms from first_ms after START, each 0-15 ms late, a playout tick at +18 ms."""
    played = []
    highest_target = 0
    for i in range(frames):
        jb.put((i * 160) & 0xFFFF, bytes([i & 0xFF]) * 160, at(first_ms + 20 * i + (i * 7) % 16))
        status, data = jb.get(at(first_ms + 20 * i + 18))
        if status == FRAME:
            played.append(data[0])
        highest_target = max(highest_target, jb.target_ms)
    return played, highest_target


def test_jitter_buffer_plays_every_frame_across_the_wrap():
    jb = JitterBuffer()
    played, highest_target = _stream(jb, 0, 400)  # 8 s of frames, the wrap 3 s in
    assert played == [i & 0xFF for i in range(len(played))] and len(played) >= 395, played[:5]
    assert jb.late == 0 and jb.concealed == 0 and jb.resyncs == 0 and jb.dropped == 0
    # the arrival at the wrap is no 12-day outlier: the delay target stays where the jitter puts it
    assert highest_target <= 60 and jb.jitter_x16 // 16 <= 10, (highest_target, jb.stats())


def test_jitter_buffer_primed_just_before_the_wrap_starts_playing_after_it():
    jb = JitterBuffer()
    played, _ = _stream(jb, 2990, 50)  # the first frame 10 ms before the wrap
    assert played[:3] == [0, 1, 2] and len(played) >= 45, played[:5]
