"""Conference on the real host cores in one process (tests/inprocess.py): each phone sends its own
tone, and Goertzel on what each phone received says whom it hears (docs/features.md, Conference).
The holder's host mixes: site a's remote host for its phones (also while the main host is
away, B4), the main host for its own; every party hears the others and not itself; parties
leave and the rest carry on; the size limit; B5 counts each mixed stream across the uplink.
"""
import math
import struct

from upbx.common import wire
from upbx.common.g711 import ulaw_decode, ulaw_encode
from upbx.common import lines
from upbx.common.call import RINGING
from upbx.common.conference import conference
from upbx.common.phone import Ended
from upbx.host.conference import mix
from upbx.tools.lab import goertzel_power
from tests.inprocess import MAIN, SITE_A, TICK_MS, PhoneEnd, World

TONES = {"101": 600, "102": 1000, "103": 1400, "104": 2600, "301": 1800, "302": 2200, "303": 3000}
HEARD = 1e10        # a 160-sample frame of a tone at amplitude 4000: about 1e11
NOT_HEARD = 1e8


def _tone_frames(hz):
    """One second of mu-law 20 ms frames of hz (whole Hz: the second loops without a jump)."""
    pcm = struct.pack("<8000h", *(int(4000 * math.sin(2 * math.pi * hz * i / 8000)) for i in range(8000)))
    return [ulaw_encode(pcm[i:i + 320]) for i in range(0, 16000, 320)]


class ToneEnd(PhoneEnd):
    """A phone that sends its own tone while connected."""

    def __init__(self, net, number, secret, address, host):
        PhoneEnd.__init__(self, net, number, secret, address, host)
        self.frames = _tone_frames(TONES[number])

    def voice(self):
        return self.frames[self.ts // TICK_MS % len(self.frames)]


def _world(tmp_path, numbers, **kwargs):
    world = World(tmp_path, extensions=(("103", "a"), ("104", "a")), **kwargs)
    world.start_remote()
    for i, number in enumerate(numbers):
        host = SITE_A if number.startswith("1") else MAIN
        end = ToneEnd(world.net, number, world.secrets[number], ("198.18.2.%d" % (i + 1), 40000), host)
        world.phones[number] = end
        end.phone.start(world.net.now)
        end.flush()
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
    return world


def _power(payloads, hz):
    """The median Goertzel power of hz over the received frames."""
    powers = sorted(goertzel_power(ulaw_decode(p), wire.VOICE_BYTES, hz)
                    for p in payloads if len(p) == wire.VOICE_BYTES)
    assert len(powers) >= 20, "too few frames received: %d" % len(powers)
    return powers[len(powers) // 2]


def _hears(world, number, others, ms=1000, tones=TONES):
    """number receives every one of others' tones and not its own (nor another phone's of tones)."""
    end = world.phones[number]
    end.received = []
    world.run(ms)
    for other, hz in tones.items():
        power = _power(end.received, hz)
        if other in others:
            assert power > HEARD, "%s does not hear %s (%.3g)" % (number, other, power)
        else:
            assert power < NOT_HEARD, "%s hears %s (%.3g)" % (number, other, power)


def _events(end, kind):
    end.take()
    return [e for e in end.log if isinstance(e, kind)]


def _call_on_the_second_line(world, holder, callee):
    """holder, whose call is held, calls callee on its second line; callee answers."""
    a, b = world.phones[holder], world.phones[callee]
    assert lines.consult(a.phone, callee, world.net.now)
    a.flush()

    def up():
        if b.phone.state == RINGING:
            b.phone.answer(world.net.now)
            b.flush()
        return a.connected and b.connected
    world.run_until(up, 5000, "%s -> %s connected" % (holder, callee))


def _join(world, holder):
    assert conference(world.phones[holder].phone, world.net.now)
    world.phones[holder].flush()
    world.run(100)


def _three_way(world, holder, first, second):
    """holder calls first, holds, calls second and joins the two calls."""
    world.call(holder, first)
    world.run(200)
    p = world.phones
    assert p[holder].phone.hold(world.net.now)
    p[holder].flush()
    world.run(100)
    _call_on_the_second_line(world, holder, second)
    assert p[holder].phone.other is not None and p[holder].phone.call.number == second
    world.run(200)
    _join(world, holder)
    assert [e.cause for e in _events(p[holder], Ended) if e.line][-1] == wire.CAUSE_CONFERENCE   # the held line
    assert p[holder].phone.other is None and p[holder].connected


def _everyone_hears_the_others(world, numbers):
    for number in numbers:
        _hears(world, number, set(numbers) - {number})


def test_the_mix_is_the_others_sum_saturated():
    def first_sample(frame):
        return struct.unpack_from("<h", ulaw_decode(frame))[0]
    loud = ulaw_encode(struct.pack("<160h", *([30000] * 160)))
    quiet = ulaw_encode(struct.pack("<160h", *([1000] * 160)))
    out = [first_sample(f) for f in mix([loud, loud, quiet])]
    assert out[0] == out[1] and 30000 <= out[0] < out[2] == 32124   # 31000; 60000 saturates (mu-law's top)
    out = [first_sample(f) for f in mix([quiet, None])]
    assert out[0] == 0 and abs(out[1] - 1000) < 64                  # not itself; the one who sent nothing hears it
    assert [first_sample(f) for f in mix([None, None])] == [0, 0]


def test_a_sites_conference_is_mixed_by_its_remote_host_and_each_hears_the_other_two(tmp_path):
    world = _world(tmp_path, ("101", "102", "103"))
    try:
        _three_way(world, "101", "102", "103")                 # two B3 calls: phones sent to each other
        assert sorted(world.a.status()["conferences"][0]["parties"]) == ["101", "102", "103"]
        _everyone_hears_the_others(world, ("101", "102", "103"))
        assert all(e.phone.call.direct is None or e.phone.call.direct[1] is None   # media through the host again
                   for e in world.phones.values())
        assert world.a.stats.counters["conference frames mixed"] > 100
        assert world.a.status()["uplink"]["calls"] == 0       # nothing crosses the uplink
        world.hangup("102")                                   # a party leaves: the other two carry on
        assert world.phones["102"].idle
        _hears(world, "101", {"103"})
        _hears(world, "103", {"101"})
        world.hangup("103")                                   # one left: its call ends too
        world.run(100)
        assert world.phones["101"].idle and world.a.status()["conferences"] == []
        assert world.a.switch.calls == {} and world.a.switch.legs == {}
        world.run(500)
        assert sorted(r.callee for r in world.main.directory.call_records()) == ["102", "103"]   # both recorded
        assert not world.net.errors
    finally:
        world.close()


def test_inter_site_conferences_are_mixed_by_the_holders_host(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302"))
    try:
        _three_way(world, "301", "101", "302")                # the main host's phone: the main host mixes
        assert world.main.status()["conferences"] and not world.a.status()["conferences"]
        _everyone_hears_the_others(world, ("301", "101", "302"))
        world.hangup("301")                                    # the holder leaves: the others carry on
        _hears(world, "101", {"302"})
        _hears(world, "302", {"101"})
        world.hangup("101")
        world.run(100)
        assert all(e.idle for e in world.phones.values()) and not world.main.switch.calls
        _three_way(world, "101", "301", "102")                # site a's phone: its remote host mixes
        assert world.a.status()["conferences"] and not world.main.status()["conferences"]
        assert world.a.status()["uplink"]["calls"] == 1       # B5: one mixed stream crosses the uplink
        _everyone_hears_the_others(world, ("101", "301", "102"))
        assert not world.net.errors
    finally:
        world.close()


def test_b5_admission_counts_each_mixed_stream_across_the_uplink(tmp_path):
    from upbx.common.media import call_kbps
    assert call_kbps(2) <= 150 < call_kbps(3)
    world = _world(tmp_path, ("101", "102", "103", "104", "301", "302", "303"), remote_settings={"uplink_kbps": 150})
    try:
        p = world.phones
        _three_way(world, "101", "102", "301")                # one stream to the main host, mixed at site a
        assert world.a.status()["conferences"] and world.a.status()["uplink"]["calls"] == 1
        assert p["103"].phone.dial("302", world.net.now)      # a second call fits
        p["103"].flush()
        world.run_until(lambda: p["302"].phone.state == RINGING, 2000, "302 rings")
        assert p["104"].phone.dial("303", world.net.now)      # a third does not
        p["104"].flush()
        world.run_until(lambda: p["104"].causes(), 2000, "refused")
        assert p["104"].causes()[-1] == wire.CAUSE_NETWORK_BUSY
        world.hangup("301")                                    # the conference's stream goes: a call fits again
        assert world.a.status()["uplink"]["calls"] == 1
        _hears(world, "101", {"102"})
        assert not world.net.errors
    finally:
        world.close()


def test_b4_a_sites_conference_works_while_the_main_host_is_unreachable(tmp_path):
    world = _world(tmp_path, ("101", "102", "103"))
    try:
        world.main_away()
        _three_way(world, "102", "101", "103")
        _everyone_hears_the_others(world, ("101", "102", "103"))
        assert not world.net.errors
    finally:
        world.close()


def test_up_to_the_configured_size_and_more_parties_join_by_holding_the_conference(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "104"), remote_settings={"conference_parties": 4})
    try:
        p = world.phones
        _three_way(world, "101", "102", "103")
        assert p["101"].phone.hold(world.net.now)              # the holder holds the conference
        p["101"].flush()
        world.run(200)
        _hears(world, "102", {"103"})                          # the others still hear each other
        _call_on_the_second_line(world, "101", "104")
        _join(world, "101")
        assert [e.cause for e in _events(p["101"], Ended) if e.line][-1] == wire.CAUSE_CONFERENCE
        _everyone_hears_the_others(world, ("101", "102", "103", "104"))
        assert len(world.a.status()["conferences"][0]["parties"]) == 4
        world.hangup("104")
        _hears(world, "101", {"102", "103"})
        assert not world.net.errors
    finally:
        world.close()


def test_a_party_that_holds_the_conference_longer_than_a_timestamps_reach_hears_the_mix_after(tmp_path):
    """A party holding a conference heard nothing from the mixer, whose frames to it then carried on the call's
    time since its answer: after a hold of more than 32.8 s they were past the reach of its replay window
    (docs/protocol.md section 5) and it heard nothing more, for good. The mixer now sends it comfort noise each
    second while it holds (docs/features.md "A hold of any length"). Site a's remote host mixes 101, 102 and 103;
    40 s in, 101 holds the conference for 40 s, the others talking on; after the resume everyone hears the others."""
    world = _world(tmp_path, ("101", "102", "103"))
    try:
        p = world.phones
        _three_way(world, "101", "102", "103")
        world.run(40000)
        assert p["101"].phone.hold(world.net.now)
        p["101"].flush()
        world.run(40000)
        _hears(world, "102", {"103"})
        assert p["101"].phone.resume(world.net.now)
        p["101"].flush()
        world.run(200)
        _everyone_hears_the_others(world, ("101", "102", "103"))
        assert world.a.stats.counters["hold keepalives"] >= 35
        assert not world.net.errors
    finally:
        world.close()


def test_a_conference_beyond_its_size_is_refused_and_nothing_changes(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "104"), remote_settings={"conference_parties": 3})
    try:
        p = world.phones
        _three_way(world, "101", "102", "103")
        assert p["101"].phone.hold(world.net.now)
        p["101"].flush()
        world.run(100)
        _call_on_the_second_line(world, "101", "104")
        _join(world, "101")
        assert not [e for e in _events(p["101"], Ended) if e.cause == wire.CAUSE_CONFERENCE][1:]   # only the first join
        assert world.a.stats.drops["conference refused: full (3 parties)"] == 1
        assert p["101"].phone.other is not None and p["101"].connected   # both lines as they were
        assert len(world.a.status()["conferences"][0]["parties"]) == 3
        assert not conference(p["102"].phone, world.net.now)   # one call only: nothing to join
        assert not world.net.errors
    finally:
        world.close()


def test_a_conference_request_that_makes_no_sense_is_refused_and_changes_nothing(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "104"))
    try:
        p = world.phones
        world.call("101", "102")
        world.call("103", "104")
        phone = p["101"].phone
        refused = world.a.stats.drops
        dropped = phone.dropped

        def ask(ies):
            phone._send(wire.CONFERENCE, ies, world.net.now)
            p["101"].flush()
            world.run(100)

        ask({})                                                          # no other call named
        ask({wire.IE_CONF_CALL_NO: phone.call.peer_call_no})             # its own active call
        other = world.a.switch.legs[p["103"].phone.call.peer_call_no]
        ask({wire.IE_CONF_CALL_NO: other.call_no})                       # another phone's call
        ask({wire.IE_CONF_CALL_NO: 0x7FFF})                              # no such call
        assert refused["conference refused: no other call"] == 4
        assert phone.dropped == dropped + 4     # four answers "refused" (state 0), which a phone with one line drops
        assert phone.hold(world.net.now)
        p["101"].flush()
        world.run(100)
        assert lines.consult(phone, "999", world.net.now)   # no such number: that line ends, the held call stays
        p["101"].flush()
        world.run(300)
        assert phone.other is None and phone.holding and p["101"].causes()[-1] == wire.CAUSE_UNKNOWN_EXTENSION
        assert not conference(phone, world.net.now)   # nothing to join with
        assert world.a.status()["conferences"] == []
        assert all(e.connected for n, e in p.items() if n in ("102", "103", "104"))
        assert not world.net.errors
    finally:
        world.close()


def test_the_phone_that_made_the_conference_going_away_leaves_the_others_talking(tmp_path):
    world = _world(tmp_path, ("101", "102", "103"))
    try:
        p = world.phones
        _three_way(world, "101", "102", "103")
        p["101"].phone.stop(world.net.now)                               # logs out (BYE)
        p["101"].flush()
        world.run(200)
        assert [c["parties"] for c in world.a.status()["conferences"]] in ([["102", "103"]], [["103", "102"]])
        _hears(world, "102", {"103"})
        _hears(world, "103", {"102"})
        assert not world.net.errors
    finally:
        world.close()
