"""The handset's protocol core (common/phone.py) against a bare server, in memory (both interpreters).

The phone's call is a common.call.CallLeg: these tests drive it through the transitions of the one
table, check that a message out of turn is dropped and counted with the call unchanged, and that
events come out as typed objects through take_events().
"""
import os

from common import wire
from common.call import CALLING, CONNECTED, IDLE, RINGBACK, RINGING, CallLeg
from common.chunks import chunk_ies
from common.login import LoginDown, LoginUp
from common.phone import Ended, Incoming, Phone
from test_protocol import SECRET, _Server, fields  # tests/common is on the path under both interpreters


class _Host:
    """The phone's host, as far as these tests need one: the login's server and what it was sent."""

    def __init__(self):
        self.server = _Server()
        self.got = []            # [(type, ies)] the phone sent, after the login

    def pump(self, phone, now):
        for _ in range(4):
            for d in phone.datagrams_to_send(now):
                if wire.parse_full(d)[3] in wire.HANDSHAKE_TYPES:
                    replies = self.server.receive(d, now)
                else:
                    self.got.extend(self.server.channel.receive(d, now))
                    replies = self.server.channel.datagrams_to_send(now)
                for r in replies:
                    phone.receive(bytearray(r), now)

    def say(self, phone, msg_type, ies, now):
        self.server.channel.send(msg_type, ies, now)
        for d in self.server.channel.datagrams_to_send(now):
            phone.receive(bytearray(d), now)
        self.pump(phone, now)

    def sent(self):
        got, self.got = self.got, []
        return [t for t, _ies in got if t != wire.PING]


def _registered(dead_ms=None):
    phone = Phone("201", SECRET, os.urandom, keepalive_ms=1000 if dead_ms else 20000, dead_ms=dead_ms)
    host = _Host()
    phone.start(0)
    host.pump(phone, 0)
    assert phone.registered
    events = phone.take_events()
    assert [type(e) for e in events] == [LoginUp], fields(events)
    return phone, host


def test_an_incoming_call_rings_answers_and_ends_through_the_call_legs_table():
    phone, host = _registered()
    host.say(phone, wire.SETUP, {wire.IE_CALL_NO: 900, wire.IE_CALLING: "301", wire.IE_CALLING_NAME: "Ann",
                                 wire.IE_MEDIA_KEY: bytes(16)}, 10)
    assert isinstance(phone.call, CallLeg) and phone.state == RINGING and phone.call.peer_call_no == 900
    assert fields(phone.take_events()) == [("Incoming", "301", "Ann", 0)]
    assert host.sent() == [wire.ALERTING]
    ours = phone.call.call_no
    assert phone.answer(20) and phone.state == CONNECTED
    assert fields(phone.take_events()) == [("Connected", "relay")]
    host.pump(phone, 20)
    assert host.sent() == [wire.ANSWER]
    host.say(phone, wire.DTMF, {wire.IE_CALL_NO: 900, wire.IE_PEER_CALL_NO: ours, wire.IE_DIGIT: "5"}, 30)
    assert fields(phone.take_events()) == [("Dtmf", "5")]
    host.say(phone, wire.RELEASE, {wire.IE_CALL_NO: 900, wire.IE_PEER_CALL_NO: ours, wire.IE_CAUSE: wire.CAUSE_BUSY}, 40)
    assert fields(phone.take_events()) == [("Ended", wire.CAUSE_BUSY, 0)] and phone.call is None and phone.state == IDLE
    assert phone.take_events() == ()


def test_a_message_out_of_turn_is_dropped_and_counted_and_the_call_stays_as_it_was():
    phone, host = _registered()
    assert phone.dial("301", 10) and phone.state == CALLING
    host.pump(phone, 10)
    assert host.sent() == [wire.SETUP]
    ours = phone.call.call_no
    dropped = phone.dropped
    # DTMF before the answer: the table has no (CALLING, DTMF_RECEIVED)
    host.say(phone, wire.DTMF, {wire.IE_CALL_NO: 700, wire.IE_PEER_CALL_NO: ours, wire.IE_DIGIT: "1"}, 20)
    assert phone.dropped == dropped + 1 and phone.state == CALLING and phone.take_events() == ()
    assert not phone.dtmf("2", 20) and not phone.answer(20)    # nor may the user send one, or answer
    host.say(phone, wire.ALERTING, {wire.IE_CALL_NO: 700, wire.IE_PEER_CALL_NO: ours}, 30)
    assert phone.state == RINGBACK and phone.call.peer_call_no == 700 and fields(phone.take_events()) == [("Ringback",)]
    host.say(phone, wire.DTMF, {wire.IE_CALL_NO: 700, wire.IE_PEER_CALL_NO: ours, wire.IE_DIGIT: "1"}, 40)
    assert phone.dropped == dropped + 2 and phone.state == RINGBACK and phone.take_events() == ()
    # ALERTING again: the call was forwarded on no answer and another phone rings (docs/features.md)
    host.say(phone, wire.ALERTING, {wire.IE_CALL_NO: 700, wire.IE_PEER_CALL_NO: ours}, 45)
    assert phone.dropped == dropped + 2 and phone.state == RINGBACK and fields(phone.take_events()) == [("Ringback",)]
    host.say(phone, wire.ANSWER, {wire.IE_CALL_NO: 700, wire.IE_PEER_CALL_NO: ours}, 50)
    assert phone.state == CONNECTED and fields(phone.take_events()) == [("Connected", "relay")]
    # a message for another call number is not ours
    host.say(phone, wire.RELEASE, {wire.IE_CALL_NO: 700, wire.IE_PEER_CALL_NO: ours + 1}, 60)
    assert phone.dropped == dropped + 3 and phone.state == CONNECTED
    assert phone.hangup(70) and phone.state == IDLE and fields(phone.take_events()) == [("Ended", wire.CAUSE_NORMAL, 0)]
    host.pump(phone, 70)
    assert host.sent() == [wire.RELEASE]


def test_a_call_that_is_never_answered_times_out():
    phone, host = _registered()
    assert phone.dial("301", 100)
    phone.handle_timer(100 + 20000)
    assert phone.state == CALLING
    phone.handle_timer(100 + 20001)
    assert phone.state == IDLE and fields(phone.take_events()) == [("Ended", wire.CAUSE_UNREACHABLE, 0)]


def test_a_call_does_not_outlive_its_session():
    phone, host = _registered(dead_ms=1000)
    host.say(phone, wire.SETUP, {wire.IE_CALL_NO: 5, wire.IE_MEDIA_KEY: bytes(16)}, 500)
    assert phone.state == RINGING and fields(phone.take_events()) == [("Incoming", "", "", 0)]
    phone.handle_timer(500 + 1999)   # the host falls silent: keepalive + dead after it was last heard, the end
    assert phone.state == RINGING and phone.registered
    phone.handle_timer(500 + 2000)
    events = phone.take_events()
    assert [type(e) for e in events] == [Ended, LoginDown] and events[0].cause == wire.CAUSE_UNREACHABLE, fields(events)
    assert phone.state == IDLE and not phone.registered


def test_system_information_in_chunks_comes_out_whole_once_and_is_acknowledged():
    phone, host = _registered()
    data = bytes(range(256)) * 3
    chunks = chunk_ies(7, data)
    assert len(chunks) == 4
    for i, ies in enumerate(chunks):
        host.say(phone, wire.SYSINFO, ies, 10 + i)
        if i < 3:
            assert phone.take_events() == () and phone.sysinfo_version is None
    assert fields(phone.take_events()) == [("Sysinfo", 7, data)] and phone.sysinfo_version == 7
    assert host.sent() == [wire.SYSINFO_ACK]
