"""Which path a call with a SIP phone takes, in memory on the real host cores (tests/inprocess.py),
voice both ways on each (the SIP phone played by tests/sip_ua.py):

- B1 relay: SIP phone 105 (site a) <-> handset 301 (main host): through both hosts;
- B2 direct: SIP phone 105 (site a) <-> handset 201 (site b): the two remote hosts send the call's
  media straight to each other, the main host carries none of it; the SIP phone's RTP ends at
  its own remote host (site a), which seals it into upbx frames for site b;
- B3 local: SIP phone 105 <-> handset 101, both of site a: switched at site a's remote host, no
  frame reaches the main host, recorded by site a;
- the main host's SIP phone 305 (site c, no remote host) <-> 201 at site b: relayed by the main
  host, where 305's RTP ends.

In each direction 40 frames of the SIP phone's arrive at the handset byte for byte and the
handset's numbered frames arrive at the SIP phone as RTP."""
import pytest

from tests.sipkit import sip_world
from tests.test_sip_calls import run, sip_calls_out, statuses


@pytest.fixture
def world(tmp_path):
    w = sip_world(tmp_path, ("301", "101", "201"), site_b=True)
    yield w
    w.close()


def _handset_calls(world, ua, number):
    """Handset number calls the SIP phone; it answers. Returns the host's RTP port."""
    handset = world.phones[number]
    assert handset.phone.dial(ua.number, world.net.now)
    handset.flush()
    invites = []
    assert run(world, 3000, until=lambda: invites.extend(m for m in ua.take() if getattr(m, "method", "") == "INVITE")
               or invites)
    ua.answer_call(invites[0], world.net.now)
    assert run(world, 2000, until=lambda: handset.connected)
    return int([l for l in invites[0].body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])


def _voice_both_ways(world, ua, number, port):
    handset = world.phones[number]
    run(world, 600)                       # a direct path is offered and punched as the call rings/answers
    handset.sent, handset.received, ua.rtp_in = [], [], []
    frames = [bytes([(i * 11 + k) % 256 for k in range(160)]) for i in range(40)]
    for i, f in enumerate(frames):
        ua.rtp(2000 + i, 50000 + 160 * i, f, port, world.net.now)
        run(world, 20)
    run(world, 200)
    got = [f for f in handset.received if f in frames]
    assert len(got) >= 36 and got == [f for f in frames if f in got]      # in order, none altered
    payloads = [d[12:] for d, _a, p in ua.rtp_in if p == port]
    sent = set(handset.sent)
    assert len([p for p in payloads if p in sent]) >= 36


def _main_media(world):
    """The media datagrams the main host took in and sent so far."""
    counters = world.main.stats.counters
    return counters.get("media in", 0) + counters.get("media out", 0)


def _path(world, host):
    calls = host.status()["calls"]
    assert len(calls) == 1, calls
    return calls[0]["path"]


@pytest.mark.parametrize("sip_calls", [True, False])
def test_b2_sip_phone_at_site_a_and_handset_at_site_b_direct_between_the_remote_hosts(world, sip_calls):
    ua = world.sip["105"]
    if sip_calls:
        _ok, port = sip_calls_out(world, ua, "201")
    else:
        port = _handset_calls(world, ua, "201")
    world.run_until(lambda: _path(world, world.main) == "direct", 5000, "the direct path punched")
    before = _main_media(world)
    _voice_both_ways(world, ua, "201", port)
    assert _main_media(world) == before                       # the main host carried none of it
    assert _path(world, world.main) == "direct"
    if sip_calls:
        assert statuses(ua.bye(world.net.now)) == [200]
    else:
        world.hangup("201")
    run(world, 500)
    # a second call between the two sites: the pair is punched already; the path is direct again
    # and said so again (before, the remote hosts did not report it twice: the record said relay)
    _ok, port = sip_calls_out(world, ua, "201")
    world.run_until(lambda: _path(world, world.main) == "direct", 5000, "the second call direct")
    before = _main_media(world)
    _voice_both_ways(world, ua, "201", port)
    assert _main_media(world) == before
    assert statuses(ua.bye(world.net.now)) == [200]
    run(world, 500)
    records = world.main.directory.call_records()
    assert [r.path for r in records if "201" in (r.caller, r.callee)] == ["direct", "direct"]


@pytest.mark.parametrize("sip_calls", [True, False])
def test_b3_sip_phone_and_handset_of_one_site_switched_at_its_remote_host(world, sip_calls):
    ua = world.sip["105"]
    if sip_calls:
        _ok, port = sip_calls_out(world, ua, "101")
    else:
        port = _handset_calls(world, ua, "101")
    assert _path(world, world.a) == "local"
    assert world.main.status()["calls"] == []                 # the main host is not in the call
    before = _main_media(world)
    _voice_both_ways(world, ua, "101", port)
    assert _main_media(world) == before
    world.phones["101"].phone.hangup(world.net.now)
    world.phones["101"].flush()
    run(world, 1000)
    records = world.main.directory.call_records()
    assert [(r.origin, r.path) for r in records if "105" in (r.caller, r.callee)] == [("site-a", "local")]


@pytest.mark.parametrize("sip_calls", [True, False])
@pytest.mark.parametrize("sip_number,handset", [("105", "301"),     # B1: site a's SIP phone, the main host's handset
                                                ("305", "201")])    # the main host's SIP phone, site b's handset
def test_b1_relayed_by_the_main_host(world, sip_calls, sip_number, handset):
    ua = world.sip[sip_number]
    if sip_calls:
        _ok, port = sip_calls_out(world, ua, handset)
    else:
        port = _handset_calls(world, ua, handset)
    assert _path(world, world.main) == "relay"
    before = _main_media(world)
    _voice_both_ways(world, ua, handset, port)
    assert _main_media(world) - before >= 2 * 36              # both ways through the main host
