"""SIP phones as extensions, in memory on the real host cores (tests/inprocess.py): SIP phone 105
registered at site a's remote host and 305 at the main host (site c has no remote host) call
handsets and are called by them. What a user would notice: the handset rings with the SIP
phone's number, the SIP phone with the handset's number and name; voice arrives both ways; a
hang-up on either side ends both; causes come out as the other side's own (busy 486, unknown
404, no answer 480, not permitted 403); hold by re-INVITE plays music on hold to the handset."""
import struct

import pytest

from upbx.common import wire
from upbx.common.call import RINGING
from upbx.host.sip.causes import SIP_TO_CAUSE, CAUSE_TO_SIP
from tests.sipkit import sip_world


@pytest.fixture
def world(tmp_path):
    w = sip_world(tmp_path, ("301", "101"))
    yield w
    w.close()


def run(world, ms, ua=None, until=None):
    """Tick the world; each SIP phone takes what its host sent."""
    for _ in range(ms // 20):
        world.tick()
        for phone in world.sip.values():
            phone.deliver(world.net.now)
        if until is not None and until():
            return True
    return False


def statuses(msgs):
    return [m.status for m in msgs if hasattr(m, "status")]


def sip_calls_out(world, ua, called, answer=True):
    """ua calls the handset called; it answers. Returns (the 200, the host's RTP port)."""
    out = ua.invite(called, world.net.now)
    assert statuses(out) == [100]
    handset = world.phones[called]
    assert run(world, 3000, until=lambda: handset.phone.state == RINGING)
    seen = ua.take()
    assert 180 in statuses(seen)
    if not answer:
        return None, None
    handset.phone.answer(world.net.now)
    handset.flush()
    got = []
    run(world, 1000, until=lambda: got.extend(ua.take()) or any(m.status == 200 for m in got))
    [ok] = [m for m in got if m.status == 200]
    ua.ack(ok, world.net.now)
    port = int([l for l in ok.body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])
    return ok, port


@pytest.mark.parametrize("number,called", [("105", "301"), ("105", "101"), ("305", "301")])
def test_sip_phone_calls_a_handset_voice_both_ways_and_hangs_up(world, number, called):
    ua = world.sip[number]
    handset = world.phones[called]
    ok, port = sip_calls_out(world, ua, called)
    assert handset.connected
    assert [e.number for e in handset.take() if hasattr(e, "number") and e.number][:1] in ([number], [])
    handset.sent, handset.received, ua.rtp_in = [], [], []
    # 50 frames of the SIP phone's voice, and the handset's at the same time
    frames = [bytes([(i * 7 + k) % 256 for k in range(160)]) for i in range(50)]
    for i, f in enumerate(frames):
        ua.rtp(100 + i, 1000 + 160 * i, f, port, world.net.now)
        run(world, 20)
    run(world, 200)
    assert handset.received[:len(frames)] == frames[:len(handset.received[:len(frames)])]
    assert len(handset.received) >= 45
    payloads = [d[12:] for d, addr, p in ua.rtp_in if p == port]
    assert {addr for _d, addr, _p in ua.rtp_in} == {(ua.address[0], ua.rtp_port)}
    assert len(payloads) >= 40 and payloads[:40] == handset.sent[:40]
    # the SIP phone hangs up: the handset's call ends normally
    assert statuses(ua.bye(world.net.now)) == [200]
    run(world, 500)
    assert handset.idle and handset.causes()[-1] == wire.CAUSE_NORMAL


def test_handset_calls_a_sip_phone_with_caller_id_and_hangs_up(world):
    ua, handset = world.sip["105"], world.phones["301"]
    assert handset.phone.dial("105", world.net.now)
    handset.flush()
    invites = []
    assert run(world, 3000, until=lambda: invites.extend(m for m in ua.take() if getattr(m, "method", "") == "INVITE")
               or invites)
    invite = invites[0]
    assert invite.from_.uri.user == "301" and invite.from_.display == "Phone 301"
    assert invite.to.uri.user == "105" and invite.get("Content-Type") == "application/sdp"
    ua.answer_call(invite, world.net.now)
    assert run(world, 2000, until=lambda: handset.connected)
    acks = [m for m in ua.take() if getattr(m, "method", "") == "ACK"]
    assert acks
    port = int([l for l in invite.body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])
    handset.sent, handset.received, ua.rtp_in = [], [], []
    for i in range(30):
        ua.rtp(10 + i, 160 * i, bytes([i]) * 160, port, world.net.now)
        run(world, 20)
    run(world, 200)
    assert [p for p in handset.received][:25] == [bytes([i]) * 160 for i in range(25)]
    assert [d[12:] for d, _a, p in ua.rtp_in if p == port][:20] == handset.sent[:20]
    # the handset hangs up: the SIP phone gets a BYE and answers it
    world.hangup("301")
    byes = []
    assert run(world, 1000, until=lambda: byes.extend(m for m in ua.take() if getattr(m, "method", "") == "BYE")
               or byes)
    from upbx.host.sip import message
    ua.send(message.response_to(byes[0], 200), world.net.now)
    run(world, 100)
    assert world.a.sip_calls.calls == {}


@pytest.mark.parametrize("status,cause", [(486, wire.CAUSE_BUSY), (480, wire.CAUSE_NO_ANSWER),
                                          (403, wire.CAUSE_NOT_PERMITTED), (503, wire.CAUSE_NETWORK_BUSY)])
def test_sip_refusals_reach_the_handset_as_causes(world, status, cause):
    ua, handset = world.sip["105"], world.phones["301"]
    assert handset.phone.dial("105", world.net.now)
    handset.flush()
    invites = []
    assert run(world, 3000, until=lambda: invites.extend(m for m in ua.take() if getattr(m, "method", "") == "INVITE")
               or invites)
    ua.answer_call(invites[0], world.net.now, status=status)
    run(world, 500)
    assert handset.idle and handset.causes()[-1] == cause
    assert any(getattr(m, "method", "") == "ACK" for m in ua.take())   # our final response is ACKed


@pytest.mark.parametrize("called,status", [("999", 404), ("302", 480)])
def test_upbx_causes_reach_the_sip_phone_as_statuses(world, called, status):
    ua = world.sip["305"]
    out = ua.invite(called, world.net.now)
    got = list(out)
    run(world, 1000, until=lambda: got.extend(ua.take()) or any(m.status >= 300 for m in got))
    assert [m.status for m in got if m.status >= 300] == [status]
    [final] = [m for m in got if m.status >= 300]
    ua.ack(final, world.net.now)
    run(world, 2000)
    assert world.main.sip_calls.calls == {} and not [m for m in ua.take() if m.status >= 300]   # ACK stops it


def test_busy_handset_is_486_and_caller_cancel_ends_the_ringing(world):
    ua, handset = world.sip["105"], world.phones["301"]
    sip_calls_out(world, ua, "301", answer=False)
    # the SIP phone gives up while 301 rings: CANCEL, 487 for the INVITE, 301 stops ringing
    d = ua.dialog
    cancel = ua.request("CANCEL", d["invite"].uri.text, d["call_id"], d["to"], d["local_tag"])
    invite = d["invite"]
    cancel.set("Via", ua.last_invite_via if hasattr(ua, "last_invite_via") else cancel.get("Via"))
    ua.send(cancel, world.net.now)
    run(world, 500)
    got = statuses(ua.take())
    assert 200 in got and 487 in got
    assert handset.idle


def test_hold_by_reinvite_plays_music_to_the_handset(world):
    ua, handset = world.sip["105"], world.phones["301"]
    ok, port = sip_calls_out(world, ua, "301")
    handset.received = []
    out = ua.reinvite("sendonly", world.net.now)
    [answer] = [m for m in out if m.status == 200]
    assert "a=recvonly" in answer.body.decode()
    ua.ack(answer, world.net.now)
    run(world, 400)
    assert len(handset.received) >= 10        # music on hold from site a's remote host
    assert world.a.stats.counters.get("music on hold frames", 0) >= 10
    out = ua.reinvite("sendrecv", world.net.now, version=3)
    [answer] = [m for m in out if m.status == 200]
    assert "a=sendrecv" in answer.body.decode()
    ua.ack(answer, world.net.now)
    before = world.a.stats.counters.get("music on hold frames", 0)
    run(world, 200)
    assert world.a.stats.counters.get("music on hold frames", 0) == before


def test_cause_maps_are_the_issues():
    assert CAUSE_TO_SIP[wire.CAUSE_BUSY] == 486 and SIP_TO_CAUSE[486] == wire.CAUSE_BUSY
    assert CAUSE_TO_SIP[wire.CAUSE_NO_ANSWER] == 480 and SIP_TO_CAUSE[408] == wire.CAUSE_NO_ANSWER
    assert CAUSE_TO_SIP[wire.CAUSE_NOT_PERMITTED] == 403 and SIP_TO_CAUSE[403] == wire.CAUSE_NOT_PERMITTED
    assert CAUSE_TO_SIP[wire.CAUSE_UNKNOWN_EXTENSION] == 404 and SIP_TO_CAUSE[404] == wire.CAUSE_UNKNOWN_EXTENSION
    assert CAUSE_TO_SIP[wire.CAUSE_NETWORK_BUSY] == 503 and SIP_TO_CAUSE[503] == wire.CAUSE_NETWORK_BUSY


def test_b4_sip_phone_registers_and_calls_on_its_site_while_the_main_host_is_away(world):
    """The remote host has the SIP password in its cached site: with the main host gone, 105
    registers again and calls handset 101 of its own site (a local call the host decides itself)."""
    world.main_away()
    ua, handset = world.sip["105"], world.phones["101"]
    ua.register(world.net.now)                       # authenticated from the cache
    ok, port = sip_calls_out(world, ua, "101")
    assert ok.status == 200 and handset.connected
    handset.received = []
    for i in range(20):
        ua.rtp(500 + i, 160 * i, bytes([i + 1]) * 160, port, world.net.now)
        run(world, 20)
    run(world, 100)
    assert handset.received[:15] == [bytes([i + 1]) * 160 for i in range(15)]
    assert statuses(ua.bye(world.net.now)) == [200]
    run(world, 200)
    assert handset.idle
    # kept on disk for the main host's return, as a handset's local call would be
    assert [(r["caller"], r["callee"], r["path"]) for r in world.a.records.pending()][-1:] == [("105", "101", "local")]


def test_mutated_sip_messages_never_raise_and_leave_no_calls(world):
    """3000 byte-mutated copies of the messages of a real call (INVITE, ACK, BYE, 180/200
    responses) from the registered phone's own address: each is answered, dropped or taken,
    never raised out of the core; afterwards the host holds no call it cannot end."""
    import random
    from upbx.host.sip import message
    ua = world.sip["105"]
    ok, port = sip_calls_out(world, ua, "301")
    samples = [ua.dialog["invite"].encode(), ok.encode(),
               ua.request("BYE", ua.dialog["target"], ua.dialog["call_id"], ua.dialog["to"], "t1",
                          to_tag=ua.dialog.get("remote_tag")).encode()]
    rng = random.Random(13)
    for i in range(3000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 6)):
            k = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.4:
                data[k] = rng.randrange(256)
            elif choice < 0.7:
                del data[k:k + rng.randint(1, 20)]
            else:
                data[k:k] = bytes(rng.choice(b' ;,:<>"\r\n=@') for _ in range(rng.randint(1, 4)))
        world.a.receive_sip(bytes(data), ua.address, world.net.now + i)
        world.a.sip_datagrams_to_send()
    ua.take()
    world.run(40 * 1000)     # every retransmission given up, every transaction forgotten
    world.a.sip_datagrams_to_send()
    # the real call is the only one left, still up or ended by a mutated BYE that still parsed
    assert set(world.a.sip_calls.calls) <= {"call-1"}
    assert len(world.a.switch.calls) <= 1 and len(world.a.sip_calls.rtp) <= 1
    if world.a.sip_calls.calls:
        assert statuses(ua.bye(world.net.now)) == [200]
        world.run(500)
    assert world.a.sip_calls.calls == {} and world.a.sip_calls.rtp == {} and world.phones["301"].idle
