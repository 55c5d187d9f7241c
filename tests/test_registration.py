"""Registrations expire when a phone goes silent and stay while its keepalives arrive.

The server side (host.peers.PeerTable) and the phone side (common.login.Login)
are driven through hours of simulated time in memory: time is passed in.
"""
import os

from upbx.common import wire
from upbx.common.login import UP, Login
from upbx.host.core import Stats
from upbx.host.peers import PeerTable

SECRET = bytes(range(16))
ADDR = ("192.0.2.10", 40000)
TTL_MS = 120000


def _pair(keepalive_ms):
    table = PeerTable(lambda ident: SECRET if ident == ("phone", "201") else None, Stats(), TTL_MS)
    phone = Login(wire.IE_EXTENSION, "201", SECRET, 7, os.urandom, keepalive_ms=keepalive_ms)
    return table, phone


def _exchange(table, phone, now, deliver_to_server=True):
    for _ in range(4):
        moved = False
        for datagram in phone.datagrams_to_send(now):
            moved = True
            if not deliver_to_server:
                continue
            if wire.parse_full(datagram)[3] in wire.HANDSHAKE_TYPES:
                reply, peer = table.handle_handshake(datagram, ADDR, now)
                replies = [reply] if reply else []
                if peer:
                    replies += peer.channel.datagrams_to_send(now)
            else:
                peer, _messages = table.receive(datagram, ADDR, now)
                replies = peer.channel.datagrams_to_send(now) if peer else []
            for r in replies:
                phone.receive(r, now)
        if not moved:
            return


def _run(table, phone, start, end, step=1000, deliver=True):
    now = start
    while now < end:
        now += step
        timer = phone.next_timer()
        if timer is not None and timer <= now:
            phone.handle_timer(now)
        _exchange(table, phone, now, deliver)
        for peer in table.expired(now):
            table.remove(peer)
    return now


def test_keepalives_refresh_the_registration_for_hours():
    table, phone = _pair(keepalive_ms=20000)
    phone.start(0)
    _exchange(table, phone, 0)
    assert phone.state == UP and ("phone", "201") in table.by_identity
    _run(table, phone, 0, 3 * 3600 * 1000, step=5000)
    assert phone.state == UP and phone.logins == 1
    assert ("phone", "201") in table.by_identity


def test_a_silent_phone_expires_after_the_ttl():
    table, phone = _pair(keepalive_ms=20000)
    phone.start(0)
    _exchange(table, phone, 0)
    # the phone's packets stop reaching the host (it was unplugged)
    _run(table, phone, 0, TTL_MS - 5000, deliver=False)
    assert ("phone", "201") in table.by_identity
    _run(table, phone, TTL_MS - 5000, TTL_MS + 5000, deliver=False)
    assert ("phone", "201") not in table.by_identity


def test_a_phone_registers_again_after_its_session_is_lost():
    table, phone = _pair(keepalive_ms=20000)
    phone.start(0)
    _exchange(table, phone, 0)
    table.remove(table.by_identity[("phone", "201")])  # the host restarted and forgot it
    end = _run(table, phone, 0, 5 * 60 * 1000)
    assert phone.state == UP and phone.logins == 2
    assert ("phone", "201") in table.by_identity


def test_only_peers_with_due_timers_or_queued_messages_are_visited():
    """The main host's tick visits what is due, not every registered phone."""
    table = PeerTable(lambda ident: SECRET, Stats(), TTL_MS)
    phones = []
    for i in range(50):
        phone = Login(wire.IE_EXTENSION, "2%02d" % i, SECRET, 100 + i, os.urandom)
        phone.start(0)
        _exchange(table, phone, 0)
        phones.append(phone)
    assert len(table.peers) == 50
    table.take_dirty()
    for peer in list(table.peers.values())[:20]:
        peer.send(wire.PING, {}, 1000)
        peer.channel.datagrams_to_send(1000)   # sent, never acknowledged
        table.schedule(peer)
    assert len(table.take_dirty()) == 20
    # only those 20 are due for a resend, 250 ms later
    assert table.due(1100) == []
    assert len(table.due(1300)) == 20
    assert table.due(1300) == []
    # a message queued on one peer marks just that one for the next flush
    peer = next(iter(table.peers.values()))
    peer.send(wire.PING, {}, 400)
    assert table.take_dirty() == [peer]
    assert table.take_dirty() == []
    peer.send(wire.PING, {}, 410)           # the set is still shared after being emptied
    assert table.take_dirty() == [peer]


def test_the_host_sets_the_phones_keepalive_in_welcome():
    """A phone straight at the main host keeps alive every 20 s; one on a LAN every 2 s."""
    for wanted in (20000, 2000):
        table = PeerTable(lambda ident: SECRET, Stats(), TTL_MS, phone_keepalive_ms=wanted)
        phone = Login(wire.IE_EXTENSION, "201", SECRET, 7, os.urandom, keepalive_ms=5000)
        phone.start(0)
        _exchange(table, phone, 0)
        assert phone.state == UP and phone.keepalive_ms == wanted
        pings = []
        now = 0
        while now < 60000:
            now += 500
            if phone.next_timer() is not None and phone.next_timer() <= now:
                phone.handle_timer(now)
            pings += phone.datagrams_to_send(now)
            for d in pings[-1:]:
                peer, _ = table.receive(d, ADDR, now)
                for r in peer.channel.datagrams_to_send(now) if peer else []:
                    phone.receive(r, now)
        assert len(pings) == 60000 // wanted
