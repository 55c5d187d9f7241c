"""Blind-transfer recall on the real host cores in one process (tests/inprocess.py, virtual
clock): a blind transfer the new party does not answer within `transfer_recall_s` rings the
transferring phone again, its caller id saying so; the party that stayed hears music on hold
until then (Goertzel), then the transferring phone's voice; an unanswered recall ends the call.
Who hears whom by the voice frames each phone received (each carries its number).
tests/test_lines_handset.py plays it with firmware phones (`upbx demo features`, transfer_recall).
"""
from upbx.common import lines, wire
from upbx.common.call import RINGING
from upbx.common.phone import Incoming
from tests.test_lines import _act, _answer, _heard, _listen, _parties
from tests.inprocess import MAIN, SITE_A
from tests.test_routing import _world

RECALL_S = 5


def _rings_with(world, number, limit_ms):
    """number's phone rings (a new call); returns (virtual ms it took, the Incoming event)."""
    end = world.phones[number]
    took = world.run_until(lambda: end.phone.state == RINGING, limit_ms, "%s rings" % number)
    incoming = [e for e in end.take() if isinstance(e, Incoming) and not e.waiting]
    return took, incoming[-1]


def test_an_unanswered_blind_transfer_rings_the_transferring_phone_back(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"), remote_settings={"transfer_recall_s": RECALL_S})
    try:
        p = world.phones
        world.call("301", "101")                              # from the main host's phone to site a
        _act(world, "101", lambda ph, now: lines.consult(ph, "102", now, True))   # blind: 101 is done at once
        world.run_until(lambda: p["102"].phone.state == RINGING and p["101"].idle, 3000, "102 rings")
        p["101"].take()
        _listen(world, 1500)
        assert _heard(p["301"]) == ([], True)                 # music while 102 rings
        took, incoming = _rings_with(world, "101", RECALL_S * 1000 + 500)
        assert RECALL_S * 1000 - 2000 <= took + 1600 <= RECALL_S * 1000 + 200   # from the transfer, to a tick or so
        assert (incoming.number, incoming.name) == ("301", "recall: 102 no answer")
        assert p["102"].idle and p["102"].causes()[-1] == wire.CAUSE_NO_ANSWER
        assert _parties(p["301"])[-1] == "101"                # 301's caller id: back with 101
        _listen(world, 1000)
        assert _heard(p["301"]) == ([], True)                 # music while 101 rings again
        _answer(world, "101")
        _listen(world, 1000)
        assert _heard(p["301"]) == (["101"], False) and _heard(p["101"]) == (["301"], False)
        world.hangup("101")
        assert p["301"].idle and world.a.status()["calls"] == [] and world.main.status()["calls"] == []
        world.run(500)
        records = world.main.directory.call_records()
        first = next(r.uid for r in records if (r.origin, r.callee) == ("main", "101") and r.linked is None)
        rows = sorted((r.origin, r.caller, r.callee, r.cause, r.linked) for r in records)
        assert rows == sorted([("main", "301", "101", "transferred", None),
                               ("site-a", "101", "102", "transferred", first),
                               ("main", "301", "102", "transferred", first),     # PARTY 101 relabels it
                               ("main", "301", "101", "normal clearing", first)]), rows
        assert not world.net.errors
    finally:
        world.close()


def test_a_recall_nobody_answers_ends_the_call_and_a_local_one_goes_back_phone_to_phone(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "301"), remote_settings={"transfer_recall_s": RECALL_S})
    try:
        p = world.phones
        world.call("102", "101")                              # B3
        _act(world, "101", lambda ph, now: lines.consult(ph, "103", now, True))
        world.run_until(lambda: p["103"].phone.state == RINGING and p["101"].idle, 3000, "103 rings")
        _rings_with(world, "101", RECALL_S * 1000 + 500)
        assert p["103"].idle and p["103"].causes()[-1] == wire.CAUSE_NO_ANSWER
        _answer(world, "101")
        _listen(world, 1000)
        assert _heard(p["102"]) == (["101"], False) and _heard(p["101"]) == (["102"], False)
        assert p["101"].phone.frame_to is not None and p["102"].phone.frame_to is not None   # phone to phone again
        # transferred again, and nobody answers: neither 103 nor, recalled, 101
        _act(world, "101", lambda ph, now: lines.consult(ph, "103", now, True))
        world.run_until(lambda: p["103"].phone.state == RINGING and p["101"].idle, 3000, "103 rings")
        _rings_with(world, "101", RECALL_S * 1000 + 500)
        took = world.run_until(lambda: p["102"].idle, RECALL_S * 1000 + 500, "the recall rang out")
        assert took >= RECALL_S * 1000 - 500
        assert p["102"].causes()[-1] == wire.CAUSE_NO_ANSWER and p["101"].idle and p["103"].idle
        assert world.a.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()


def test_the_main_host_recalls_its_phone_and_zero_turns_recall_off(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302"), main_settings="transfer_recall_s = %d\n" % RECALL_S,
                   remote_settings={"transfer_recall_s": 0})
    try:
        p = world.phones
        world.call("101", "301")
        _act(world, "301", lambda ph, now: lines.consult(ph, "302", now, True))   # the main host joins
        world.run_until(lambda: p["302"].phone.state == RINGING and p["301"].idle, 3000, "302 rings")
        p["301"].take()
        _, incoming = _rings_with(world, "301", RECALL_S * 1000 + 500)
        assert (incoming.number, incoming.name) == ("101", "recall: 302 no answer")
        _answer(world, "301")
        _listen(world, 1000)
        assert _heard(p["101"]) == (["301"], False) and _heard(p["301"]) == (["101"], False)
        world.hangup("301")
        # site a's host has recall off: 101's blind transfer of 301 to 102 (joined there) rings on
        world.call("301", "101")
        _act(world, "101", lambda ph, now: lines.consult(ph, "102", now, True))
        world.run_until(lambda: p["102"].phone.state == RINGING and p["101"].idle, 3000, "102 rings")
        world.run(RECALL_S * 1000 + 2000)
        assert p["102"].phone.state == RINGING and p["101"].idle
        assert not world.net.errors
    finally:
        world.close()


def test_recall_among_a_sites_phones_while_the_main_host_is_unreachable(tmp_path):
    world = _world(tmp_path, ("101", "102", "103"), remote_settings={"transfer_recall_s": RECALL_S})
    try:
        p = world.phones
        world.main_away()                                     # B4: site a's remote host alone
        world.call("102", "101")
        _act(world, "101", lambda ph, now: lines.consult(ph, "103", now, True))
        world.run_until(lambda: p["103"].phone.state == RINGING and p["101"].idle, 3000, "103 rings")
        _, incoming = _rings_with(world, "101", RECALL_S * 1000 + 500)
        assert (incoming.number, incoming.name) == ("102", "recall: 103 no answer")
        assert p["103"].causes()[-1] == wire.CAUSE_NO_ANSWER
        _answer(world, "101")
        _listen(world, 1000)
        assert _heard(p["102"]) == (["101"], False) and _heard(p["101"]) == (["102"], False)
        world.hangup("101")
        pending = [(r["caller"], r["callee"], r["cause"]) for r in world.a.records.pending()]
        assert ("102", "101", "normal clearing") in pending   # kept for upload, linked as every leg is
        assert not world.net.errors
    finally:
        world.close()


def _uplink_late(world, ms):
    """Everything site a sends the main host from now on for ms arrives ms late, in order (a
    loaded site host or a slow uplink); what was still in flight to it is held with it."""
    held = [d for d in world.net.queue if d[1] == SITE_A and d[2] == MAIN]
    for d in held:
        world.net.queue.remove(d)
    send = world.net.send

    def late(data, source, destination):
        if source == SITE_A and tuple(destination[:2]) == MAIN:
            held.append((bytes(data), source, MAIN))
        else:
            send(data, source, destination)
    world.net.send = late
    world.run(ms)
    world.net.send = send
    world.net.queue.extend(held)


def test_a_blind_transfer_the_main_host_joins_is_recalled_even_when_its_ring_timeout_comes_first(tmp_path):
    """`upbx demo features`' transfer_recall, failed under load: 101 (site a) transfers 301 blind to
    a phone whose call turns at the main host (302 here; 201 at site b when the direct-path offer
    had not reached site a yet), so site a hands the join to the main host. The joined call rings
    on from when 302 was first offered, so the main host's ring timeout (20 s, as the demo's) came
    before its recall (20 s from the transfer) and ended the call "no answer": 101 never rang again.
    The recall is the timer of a blindly transferred call: the ring timeout leaves it alone."""
    ring_s = 20
    world = _world(tmp_path, ("101", "301", "302"), ring_timeout_s=ring_s,
                   main_settings="transfer_recall_s = %d\n" % ring_s, remote_settings={"transfer_recall_s": RECALL_S})
    try:
        p = world.phones
        world.call("301", "101")
        assert lines.consult(p["101"].phone, "302", world.net.now, True)
        p["101"].flush()
        for _ in range(100):                                  # until the main host offered 302 the call
            if world.tick(until=lambda: any(c.callee == "302" and c.state == "alerting"
                                            for c in world.main.switch.calls.values())):
                break
        _uplink_late(world, 300)                             # site a's TRANSFER (sent as 302 rings) arrives 300 ms later
        world.run_until(lambda: p["302"].phone.state == RINGING and p["101"].idle, 3000, "302 rings")
        assert world.a.stats.counters["transfers handed to the main host"] == 1
        p["101"].take()
        _, incoming = _rings_with(world, "101", ring_s * 1000 + 1000)
        assert (incoming.number, incoming.name) == ("301", "recall: 302 no answer")
        assert p["302"].idle and p["302"].causes()[-1] == wire.CAUSE_NO_ANSWER and not p["301"].idle
        _answer(world, "101")
        _listen(world, 1000)
        assert _heard(p["301"]) == (["101"], False) and _heard(p["101"]) == (["301"], False)
        world.hangup("101")
        assert p["301"].idle and world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        # and a recall nobody answers still ends the call (the recall's own time, not the ring timeout)
        world.call("301", "101")
        _act(world, "101", lambda ph, now: lines.consult(ph, "302", now, True))
        world.run_until(lambda: p["302"].phone.state == RINGING and p["101"].idle, 3000, "302 rings")
        _rings_with(world, "101", ring_s * 1000 + 1000)
        took = world.run_until(lambda: p["301"].idle, ring_s * 1000 + 1000, "the recall rang out")
        assert took >= ring_s * 1000 - 1000 and p["301"].causes()[-1] == wire.CAUSE_NO_ANSWER and p["101"].idle
        assert world.main.status()["calls"] == [] and world.a.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()
