"""Call waiting, swap and transfer (blind and attended) on the real host cores in one process
(tests/inprocess.py, virtual clock): who hears whom, by the voice frames each phone received
(every phone's frames carry its number) and by the music-on-hold notes (Goertzel), the causes
and parties each phone was told, the paths. tests/test_lines_handset.py plays the same with
firmware phones and real daemons and checks what their speakers played.
"""
import re

from upbx.common import lines, wire
from upbx.common.call import CONNECTED, RINGING
from upbx.common.phone import Incoming
from tests.test_hold import _notes, _voice
from tests.inprocess import MAIN, SITE_A
from tests.test_routing import _refused, _world


_VOICE = re.compile(rb"^(\d{3}) \d+\.+$")


def _heard(end):
    """The numbers whose voice end received since the last reset, and whether music came."""
    numbers = sorted({m.group(1).decode() for m in (_VOICE.match(p) for p in end.received) if m})
    return numbers, bool(_notes(end.received))


def _reset(world):
    for end in world.phones.values():
        end.sent, end.received = [], []


def _listen(world, ms=600):
    world.run(100)
    _reset(world)
    world.run(ms)


def _act(world, number, action):
    end = world.phones[number]
    assert action(end.phone, world.net.now), (number, action)
    end.flush()
    world.run(100)


def _waiting(world, caller, callee):
    """caller dials callee, who is in a call: it rings there as a waiting call."""
    a, b = world.phones[caller], world.phones[callee]
    assert a.phone.dial(callee, world.net.now)
    a.flush()
    world.run_until(lambda: b.phone.other is not None and b.phone.other.state == RINGING, 3000,
                    "%s waiting at %s" % (caller, callee))
    incoming = [e for e in b.take() if isinstance(e, Incoming)]
    assert [(e.number, e.waiting) for e in incoming] == [(caller, 1)]


def _answer(world, number):
    end = world.phones[number]
    world.run_until(lambda: end.phone.state == RINGING, 3000, "%s rings" % number)
    assert end.phone.answer(world.net.now)
    end.flush()
    world.run(100)


def test_call_waiting_answer_swap_and_reject_on_relayed_and_local_calls(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "301", "302"))
    try:
        p = world.phones
        world.call("101", "301")                                   # B1: through both hosts
        _waiting(world, "302", "101")                              # from the main host's phone
        _listen(world, 300)
        assert _heard(p["101"]) == (["301"], False)                # the first call goes on while it waits
        _act(world, "101", lambda ph, now: lines.swap(ph, now))           # answer: 301 is held
        assert p["302"].connected and p["101"].phone.other.state == CONNECTED
        _listen(world, 2000)
        assert _heard(p["101"]) == (["302"], False) and _heard(p["302"]) == (["101"], False)
        assert _heard(p["301"]) == ([], True)                      # the held party hears the music
        _act(world, "101", lambda ph, now: lines.swap(ph, now))           # back to 301; 302 held
        _listen(world, 2000)
        assert _heard(p["101"]) == (["301"], False) and _heard(p["301"]) == (["101"], False)
        assert _heard(p["302"]) == ([], True)
        # a third call: both lines in use, busy
        assert _refused(world, "102", "101")[0] == wire.CAUSE_BUSY
        world.hangup("302")                                        # the held party hangs up: its line goes
        assert p["101"].phone.other is None and p["101"].connected
        _waiting(world, "102", "101")                              # a local call waits; rejected: busy
        _act(world, "101", lambda ph, now: lines.reject_waiting(ph, now))
        assert p["102"].causes()[-1] == wire.CAUSE_BUSY and p["102"].idle
        _listen(world, 300)
        assert _heard(p["101"]) == (["301"], False) and _heard(p["301"]) == (["101"], False)
        world.hangup("101")
        world.call("101", "102")                                   # B3: phone to phone
        _waiting(world, "301", "101")
        _act(world, "101", lambda ph, now: lines.swap(ph, now))
        _listen(world, 2000)
        assert _heard(p["101"]) == (["301"], False) and _heard(p["301"]) == (["101"], False)
        assert _heard(p["102"]) == ([], True)                      # held on the LAN: music from site a's host
        world.hangup("101")                                        # hang up the current: the held one remains
        assert p["101"].phone.call is not None and p["101"].phone.holding and p["301"].idle
        _act(world, "101", lambda ph, now: ph.resume(now))
        _listen(world, 600)
        assert _heard(p["101"]) == (["102"], False) and _heard(p["102"]) == (["101"], False)
        world.hangup("102")
        assert p["101"].idle and world.a.status()["calls"] == [] and world.main.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()


def test_busy_when_call_waiting_is_off_and_for_a_phone_that_forwards_on_busy(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302"))
    try:
        p = world.phones
        assert _refused(world, "101", "*71")[0] == wire.CAUSE_FEATURE_OFF     # call waiting off at 101's host
        assert _refused(world, "301", "*71")[0] == wire.CAUSE_FEATURE_OFF     # and at the main host
        assert world.a.cache.features("101")["waiting"] is False
        world.run(200)
        assert world.main.directory.features("101")["waiting"] is False        # sent on to the main host
        world.call("101", "301")
        assert _refused(world, "102", "101")[0] == wire.CAUSE_BUSY
        assert _refused(world, "302", "101")[0] == wire.CAUSE_BUSY
        assert _refused(world, "302", "301")[0] == wire.CAUSE_BUSY
        world.hangup("101")
        assert _refused(world, "101", "*70")[0] == wire.CAUSE_FEATURE_ON
        world.call("101", "301")
        _waiting(world, "102", "101")
        assert p["301"].connected and not p["102"].idle
        world.hangup("102")
        world.hangup("101")
        assert _refused(world, "101", "*90102")[0] == wire.CAUSE_FEATURE_ON   # forward on busy to 102
        world.call("101", "301")
        assert p["302"].phone.dial("101", world.net.now)                     # forwarded, not waiting
        p["302"].flush()
        world.run_until(lambda: p["102"].phone.state == RINGING, 3000, "102 rings")
        assert p["101"].phone.other is None and p["301"].connected
        assert not world.net.errors
    finally:
        world.close()


def _parties(end):
    return [e.number for e in end.take() if isinstance(e, Incoming) and e.waiting == 2]


def test_blind_transfer_relayed_call_to_a_local_phone_the_caller_hears_music_until_the_answer(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        p = world.phones
        world.call("301", "101")                       # from the main host's phone to site a
        p["301"].take()
        _act(world, "101", lambda ph, now: lines.consult(ph, "102", now, True))
        world.run_until(lambda: p["102"].phone.state == RINGING and p["101"].idle, 3000, "102 rings, 101 is done")
        assert p["101"].causes()[-2:] == [wire.CAUSE_TRANSFERRED, wire.CAUSE_TRANSFERRED]
        assert p["102"].phone.call.number == "301"                   # told who stays
        _listen(world, 1500)
        assert _heard(p["301"]) == ([], True)                        # music while 102 rings
        assert _parties(p["301"]) == ["102"]
        _answer(world, "102")
        _listen(world, 1000)
        assert _heard(p["301"]) == (["102"], False) and _heard(p["102"]) == (["301"], False)
        assert not _voice(p["301"].received, "101")
        calls = world.a.status()["calls"]
        assert [(c["caller"], c["callee"], c["path"], c["state"]) for c in calls] == [("301", "102", "relay", "answered")]
        world.hangup("102")
        assert p["301"].idle and p["301"].causes()[-1] == wire.CAUSE_NORMAL
        assert world.a.status()["calls"] == [] and world.main.status()["calls"] == []
        world.run(500)                                               # site a's record is uploaded
        records = [r for r in reversed(world.main.directory.call_records())]
        rows = [(r.origin, r.caller, r.callee, r.cause, r.linked) for r in records]
        first = next(r.uid for r in records if r.origin == "main" and r.callee == "101")
        # every leg, linked to the first call: the main host's hop before and after the transfer,
        # and site a's blind transfer call (101 -> 102), which ended when it was joined
        assert sorted(rows) == sorted([("main", "301", "101", "transferred", None),
                                       ("site-a", "101", "102", "transferred", first),
                                       ("main", "301", "102", "normal clearing", first)]), rows
        assert not world.net.errors
    finally:
        world.close()


def test_attended_transfer_on_the_lan_the_two_phones_talk_straight(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "301"))
    try:
        p = world.phones
        world.call("102", "101")                                     # B3
        _act(world, "101", lambda ph, now: lines.consult(ph, "103", now))      # consult: 102 held
        _answer(world, "103")
        _listen(world, 1000)
        assert _heard(p["101"]) == (["103"], False) and _heard(p["103"]) == (["101"], False)
        assert _heard(p["102"]) == ([], True)
        _act(world, "101", lambda ph, now: lines.transfer(ph, now))
        world.run(200)
        assert p["101"].idle and p["101"].causes()[-2:] == [wire.CAUSE_TRANSFERRED] * 2
        _listen(world, 1000)
        assert _heard(p["102"]) == (["103"], False) and _heard(p["103"]) == (["102"], False)
        assert p["102"].phone.call.number == "103" and p["103"].phone.call.number == "102"
        assert p["102"].phone.call.path == "local" and p["103"].phone.call.path == "local"
        assert p["102"].phone.frame_to is not None and p["103"].phone.frame_to is not None   # straight to each other
        world.hangup("103")
        assert p["102"].idle and world.a.status()["calls"] == []
        world.run(500)
        records = world.main.directory.call_records()
        first = next(r.uid for r in records if (r.caller, r.callee) == ("102", "101"))
        assert sorted((r.origin, r.caller, r.callee, r.path, r.cause, r.linked) for r in records) == sorted([
            ("site-a", "102", "101", "local", "transferred", None),
            ("site-a", "101", "103", "local", "transferred", first),
            ("site-a", "102", "103", "local", "normal clearing", first)])
        assert world.main.local_calls.get("a", set()) == set()      # every local grant given back
        assert not world.net.errors
    finally:
        world.close()


def test_attended_transfer_by_the_main_hosts_phone_and_by_a_site_phone_joining_two_outside_calls(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302", "303"))
    try:
        p = world.phones
        world.call("101", "301")                                     # the main host joins: 101 and 302
        _act(world, "301", lambda ph, now: lines.consult(ph, "302", now))
        _answer(world, "302")
        _act(world, "301", lambda ph, now: lines.transfer(ph, now))
        _listen(world, 1000)
        assert p["301"].idle and _heard(p["101"]) == (["302"], False) and _heard(p["302"]) == (["101"], False)
        world.hangup("101")
        assert world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        world.call("303", "102")                                     # site a's 102 joins 303 and 302 (both outside)
        _act(world, "102", lambda ph, now: lines.consult(ph, "302", now))
        _answer(world, "302")
        _act(world, "102", lambda ph, now: lines.swap(ph, now))             # back to 303, then transfer from there
        assert world.a.status()["uplink"]["calls"] == 2
        _act(world, "102", lambda ph, now: lines.transfer(ph, now))
        assert world.a.status()["uplink"]["calls"] == 0             # joined by the main host: off site a's uplink
        assert world.a.status()["calls"] == [] and world.a.stats.counters["transfers handed to the main host"] == 1
        _listen(world, 1000)
        assert p["102"].idle and _heard(p["303"]) == (["302"], False) and _heard(p["302"]) == (["303"], False)
        world.hangup("302")
        assert p["303"].idle and world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()


def test_a_transfer_out_of_turn_is_dropped_and_a_refused_consultation_leaves_the_held_call(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        p = world.phones
        world.call("101", "301")
        assert not lines.transfer(p["101"].phone, world.net.now)            # one line: nothing to join
        _act(world, "101", lambda ph, now: lines.consult(ph, "999", now))      # unknown: the consultation is refused
        world.run(300)
        assert p["101"].causes()[-1] == wire.CAUSE_UNKNOWN_EXTENSION
        assert p["101"].phone.call is not None and p["101"].phone.holding and p["101"].phone.other is None
        _act(world, "101", lambda ph, now: ph.resume(now))
        _listen(world, 400)
        assert _heard(p["101"]) == (["301"], False) and _heard(p["301"]) == (["101"], False)
        # a forged TRANSFER naming a leg of another phone's call is dropped
        p["101"].phone._send(wire.TRANSFER, {wire.IE_JOIN_CALL_NO: 1}, world.net.now, p["101"].phone.call)
        p["101"].flush()
        world.run(200)
        assert world.a.stats.drops.get("bad transfer", 0) + world.a.stats.drops.get("message out of turn", 0) >= 1
        assert p["101"].connected and p["301"].connected
        assert not world.net.errors
    finally:
        world.close()


def _b2_call(world):
    """The main host's call between two remote hosts (B2), once it exists."""
    return next((c for c in world.main.switch.calls.values() if c.b2), None)


def test_blind_transfer_handed_to_the_main_host_while_the_direct_path_offer_to_the_site_is_lost(tmp_path):
    """301 (main host) talks to 101 (site a); 101 transfers it blind to 201 (site b). The main
    host offers sites a and b a direct path (B2) when 201 rings; the offer to site a is lost once
    (its reliable layer sends it again later), so site a, which does not know of the path, hands
    the transfer to the main host. The main host joins 301 and 201 and must take the media back
    from the direct path (a MEDIA_PEER without a key): else site b sends 201's voice straight to
    site a, which has no call for it any more, and 301 hears the music, then nothing."""
    world = _world(tmp_path, ("101", "301", "201"), site_b=True)
    try:
        p = world.phones
        world.call("301", "101")
        assert lines.consult(p["101"].phone, "201", world.net.now, True)
        p["101"].flush()
        for _ in range(100):                                     # until the main host offered the path
            if world.tick(until=lambda: _b2_call(world) is not None and _b2_call(world).peered):
                break
        else:
            raise AssertionError("no direct path offered")
        to_a = [i for i, (_, source, destination) in enumerate(world.net.queue)
                if source == MAIN and destination == SITE_A]
        del world.net.queue[to_a[-1]]                            # the MEDIA_PEER to site a: lost once
        world.run_until(lambda: p["201"].phone.state == RINGING and p["101"].idle, 3000, "201 rings, 101 is done")
        assert world.a.stats.counters["transfers handed to the main host"] == 1
        _listen(world, 1000)
        assert _heard(p["301"]) == ([], True)                    # music while 201 rings
        _answer(world, "201")
        _listen(world, 1000)
        assert _heard(p["301"]) == (["201"], False) and _heard(p["201"]) == (["301"], False)
        leg = next(iter(world.b.switch.legs.values()))
        assert leg.link is world.b.main_link and leg.direct is None   # site b sends through the main host
        assert world.b.stats.counters["direct paths taken back"] == 1
        world.hangup("201")
        assert p["301"].idle and world.main.status()["calls"] == [] and world.b.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()


def test_a_call_held_on_the_other_line_longer_than_a_timestamps_reach_is_heard_again_after_the_swap(tmp_path):
    """A phone's timestamps go on in the call it talks on, so those of its held line jumped by as long as it was
    held; nothing went either way on that line meanwhile. Until session 23, after more than 32.8 s on the other
    line (a consultation, a waiting call answered) the swap back found both ends of the held call's hops unable
    to follow (docs/protocol.md section 5): silence both ways, for good. Now the phone sends comfort noise each
    second on its held line and opens what reaches it there (common/phone.py seal_frame, open_media; firmware/
    app.py capture), and its host sends it comfort noise there (docs/features.md "A hold of any length").
    Relayed (101 at site a: 301 and 302 at the main host) and on the LAN (101 and 102, B3)."""
    world = _world(tmp_path, ("101", "102", "103", "301", "302"))
    try:
        p = world.phones
        world.call("101", "301")
        world.run(40000)
        _waiting(world, "302", "101")
        _act(world, "101", lambda ph, now: lines.swap(ph, now))           # answer: 301 is held
        world.run(40000)
        _act(world, "101", lambda ph, now: lines.swap(ph, now))           # back to 301 after 40 s; 302 held
        _listen(world)
        assert _heard(p["101"]) == (["301"], False) and _heard(p["301"]) == (["101"], False)
        assert _heard(p["302"]) == ([], True)
        world.run(40000)
        _act(world, "101", lambda ph, now: lines.swap(ph, now))           # back to 302 after 40 s
        _listen(world)
        assert _heard(p["101"]) == (["302"], False) and _heard(p["302"]) == (["101"], False)
        world.hangup("302")
        world.hangup("101")
        world.call("101", "102")                                          # B3: phone to phone
        world.run(40000)
        _waiting(world, "301", "101")
        _act(world, "101", lambda ph, now: lines.swap(ph, now))           # 102 held on the LAN
        world.run(40000)
        _act(world, "101", lambda ph, now: lines.swap(ph, now))
        _listen(world)
        assert _heard(p["101"]) == (["102"], False) and _heard(p["102"]) == (["101"], False)
        assert not world.main.stats.drops.get("trunk rejected") and not world.a.stats.drops.get("trunk rejected")
        assert not world.net.errors
    finally:
        world.close()
