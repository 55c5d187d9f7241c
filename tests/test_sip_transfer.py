"""Transfer with SIP phones, in memory on the real host cores (tests/inprocess.py), the SIP phone
played by tests/sip_ua.py: a SIP phone in a call REFERs the other party (a handset) to another
extension (RFC 3515 blind transfer, and the attended one with Replaces, RFC 3891); a handset
transfers a call with a SIP phone in it. What a user would notice: the party that stays hears
music while the new one rings, then talks to it (voice frames both ways), its caller id changes
(PARTY on a handset, P-Asserted-Identity in a re-INVITE on a SIP phone); the transferring SIP phone
is told how it went (NOTIFY sipfrag 100, then 200 or the failure) and hangs up; the records are
linked; a transfer to a number that cannot be called leaves the first call as it was."""
import pytest

from upbx.common import lines, wire
from upbx.common.call import RINGING
from upbx.common.phone import Incoming
from upbx.host.sip import message
from tests.test_hold import _notes, _voice
from tests.sipkit import sip_world
from tests.test_sip_calls import run, sip_calls_out, statuses


@pytest.fixture
def world(tmp_path):
    w = sip_world(tmp_path, ("301", "302", "101", "102", "201"), site_b=True)
    yield w
    w.close()


def _listen(world, ms=1000):
    world.run(100)
    for end in world.phones.values():
        end.sent, end.received = [], []
    run(world, ms)


def _heard(end):
    """(numbers whose voice end received, whether it heard music) since the last _listen."""
    numbers = sorted({p.split(b" ")[0].decode() for p in end.received if p[:3].isdigit() and b" " in p[:4]})
    return numbers, bool(_notes(end.received))


def _parties(end):
    return [e.number for e in end.take() if isinstance(e, Incoming) and e.waiting == 2]


def _requests(ua, method):
    return [m for m in ua.inbox if getattr(m, "method", None) == method]


def _sipfrags(msgs):
    """The status lines of NOTIFY bodies, in order; every NOTIFY checked for RFC 3515's headers."""
    out = []
    for m in msgs:
        if getattr(m, "method", None) == "NOTIFY":
            assert m.get("Event").startswith("refer") and m.get("Content-Type") == "message/sipfrag;version=2.0"
            assert m.get("Subscription-State").split(";")[0] in ("active", "terminated")
            out.append((m.body.decode().strip(), m.get("Subscription-State").split(";")[0]))
    return out


def _collect(world, ua, ms, until=None):
    """Run; ua answers every NOTIFY/BYE/re-INVITE; returns everything it got."""
    got = []

    def step():
        msgs = ua.take()
        ua.answer_requests(msgs, world.net.now)
        got.extend(msgs)
        return until is not None and until(got)
    for _ in range(ms // 20):
        world.tick()
        for phone in world.sip.values():
            phone.deliver(world.net.now)
        if step():
            break
    return got


@pytest.mark.parametrize("sip_number,stays,new", [
    ("105", "301", "302"),    # site a's SIP phone, both calls through the main host (handed over)
    ("305", "301", "101"),    # the main host's SIP phone, to site a
    ("105", "101", "102")])   # site a's, all on site a's LAN (B3)
def test_sip_phone_refers_the_handset_it_talks_to_blind(world, sip_number, stays, new):
    ua, p = world.sip[sip_number], world.phones
    sip_calls_out(world, ua, stays)
    p[stays].take()
    out = ua.refer(new, world.net.now)
    assert statuses(out) == [202]
    got = _collect(world, ua, 3000, until=lambda g: p[new].phone.state == RINGING
                   and ("SIP/2.0 200 OK", "terminated") in _sipfrags(g))
    assert _sipfrags(got) == [("SIP/2.0 100 Trying", "active"), ("SIP/2.0 200 OK", "terminated")]
    assert p[new].phone.call.number == stays                      # told who is calling: the party that stays
    _listen(world, 1500)
    assert _heard(p[stays]) == ([], True)                         # music while the new party rings
    assert _parties(p[stays]) == [new]                            # caller id updated
    # the phone hangs up after the NOTIFY 200 (RFC 5589), as baresip does
    assert statuses(ua.bye(world.net.now)) == [200]
    p[new].phone.answer(world.net.now)
    p[new].flush()
    _listen(world, 1000)
    assert _heard(p[stays]) == ([new], False) and _heard(p[new]) == ([stays], False)
    host = world.a if sip_number == "105" else world.main
    assert [c["extension"] for c in host.status()["sip"]["calls"]] == []
    world.hangup(new)
    assert p[stays].idle and p[stays].causes()[-1] == wire.CAUSE_NORMAL
    world.run(500)
    records = world.main.directory.call_records()
    first = next(r for r in records if r.caller == sip_number and r.callee == stays)
    joined = [r for r in records if {r.caller, r.callee} == {stays, new}]
    assert first.cause == "transferred" and joined and joined[-1].linked == first.uid
    assert joined[-1].cause == "normal clearing"
    assert joined[-1].path == ("local" if new.startswith("1") and stays.startswith("1") else "relay")
    assert not world.net.errors


def test_refer_to_an_unknown_number_fails_and_the_call_goes_on(world):
    ua, p = world.sip["105"], world.phones
    ok, port = sip_calls_out(world, ua, "301")
    assert statuses(ua.refer("999", world.net.now)) == [202]
    got = _collect(world, ua, 1000, until=lambda g: len(_sipfrags(g)) == 2)
    assert _sipfrags(got) == [("SIP/2.0 100 Trying", "active"), ("SIP/2.0 404 Not Found", "terminated")]
    # we held 301 for the consultation (baresip does not hold first); resumed: 301 hears 105 again
    _listen(world, 100)
    for i in range(30):
        ua.rtp(500 + i, 90000 + 160 * i, bytes([0x55]) * 160, port, world.net.now)
        run(world, 20)
    assert p["301"].connected and sum(1 for f in p["301"].received if f == bytes([0x55]) * 160) >= 20
    assert not _notes(p["301"].received[-10:])


def test_refer_while_the_phone_holds_the_call_does_not_hold_it_twice(world):
    """A desk phone holds (re-INVITE sendonly) before its REFER: the host's own hold is not sent again,
    and the transfer goes through as with baresip's."""
    ua, p = world.sip["105"], world.phones
    sip_calls_out(world, ua, "301")
    assert statuses(ua.reinvite("sendonly", world.net.now))[-1] == 200
    run(world, 200)
    assert statuses(ua.refer("302", world.net.now)) == [202]
    got = _collect(world, ua, 3000, until=lambda g: ("SIP/2.0 200 OK", "terminated") in _sipfrags(g))
    assert ("SIP/2.0 200 OK", "terminated") in _sipfrags(got)
    assert world.a.stats.drops.get("message out of turn", 0) == 0
    p["302"].phone.answer(world.net.now)
    p["302"].flush()
    _listen(world, 1000)
    assert _heard(p["301"]) == (["302"], False) and _heard(p["302"]) == (["301"], False)


def test_attended_transfer_with_replaces_joins_the_phones_two_calls(world):
    """105 talks to 301, holds it, calls 302 (a second dialog), then REFERs 301's dialog to 302 with
    Replaces naming the second: 301 and 302 talk at once; 105 gets NOTIFY 200 and a BYE for the
    second dialog, and hangs up the first."""
    ua, p = world.sip["105"], world.phones
    sip_calls_out(world, ua, "301")
    first = ua.dialog
    assert statuses(ua.reinvite("sendonly", world.net.now))[-1] == 200
    run(world, 200)
    ua.dialog = None
    out = ua.invite("302", world.net.now, call_id="call-2")
    assert statuses(out) == [100]
    assert run(world, 3000, until=lambda: p["302"].phone.state == RINGING)
    p["302"].phone.answer(world.net.now)
    p["302"].flush()
    got = []
    run(world, 1000, until=lambda: got.extend(ua.take()) or any(getattr(m, "status", 0) == 200 for m in got))
    ok = [m for m in got if getattr(m, "status", 0) == 200][0]
    ua.ack(ok, world.net.now)
    second = ua.dialog
    run(world, 200)
    ua.dialog = first
    out = ua.refer("302", world.net.now, replaces=(second["call_id"], second["local_tag"], second["remote_tag"]))
    assert statuses(out) == [202]
    got = _collect(world, ua, 1000, until=lambda g: ("SIP/2.0 200 OK", "terminated") in _sipfrags(g)
                   and any(getattr(m, "method", "") == "BYE" for m in g))
    assert ("SIP/2.0 200 OK", "terminated") in _sipfrags(got)
    assert [m.call_id for m in got if getattr(m, "method", "") == "BYE"] == ["call-2"]
    assert statuses(ua.bye(world.net.now)) == [200]
    _listen(world, 1000)
    assert _heard(p["301"]) == (["302"], False) and _heard(p["302"]) == (["301"], False)
    assert _parties(p["301"]) == ["302"]


def test_refer_naming_a_dialog_that_is_not_the_phones_is_refused(world):
    ua = world.sip["105"]
    sip_calls_out(world, ua, "301")
    assert statuses(ua.refer("302", world.net.now, replaces=("nosuch@x", "a", "b"))) == [481]
    out = ua.refer("302", world.net.now, replaces=(ua.dialog["call_id"], ua.dialog["local_tag"],
                                                   ua.dialog["remote_tag"]))
    assert statuses(out) == [481]                                  # its own dialog: nothing to join
    assert world.phones["301"].connected


@pytest.mark.parametrize("stays_sip", [True, False])
def test_handset_transfers_a_call_with_a_sip_phone_in_it(world, stays_sip):
    """301 (main host) talks to SIP phone 105 and transfers blind: 105 to 302 (stays_sip: 105 is
    the party that stays and is told who it talks to in a re-INVITE's P-Asserted-Identity), or
    302 to 105 (105 is the new party: it rings with 302 calling)."""
    ua, p = world.sip["105"], world.phones
    if stays_sip:
        sip_calls_out(world, ua, "301")
        held_port = None
    else:
        world.call("302", "301")
    assert lines.consult(p["301"].phone, "302" if stays_sip else "105", world.net.now, True)
    p["301"].flush()
    if stays_sip:
        got = _collect(world, ua, 3000, until=lambda g: p["302"].phone.state == RINGING and p["301"].idle)
        invites = [m for m in got if getattr(m, "method", "") == "INVITE"]
        assert invites and "a=sendonly" in invites[0].body.decode()           # held by 301 first
        assert p["302"].phone.call.number == "105"
        p["302"].phone.answer(world.net.now)
        p["302"].flush()
        # told who it talks to (while 302 rang), then resumed when 302 answered: both say 302
        got += _collect(world, ua, 2000, until=lambda g: any(
            "a=sendrecv" in m.body.decode() for m in g if getattr(m, "method", "") == "INVITE"))
        pai = [m for m in got if getattr(m, "method", "") == "INVITE" and m.get("P-Asserted-Identity")]
        assert pai and all(m.get("P-Asserted-Identity").startswith('"Phone 302" <sip:302@') for m in pai)
        assert "a=sendrecv" in pai[-1].body.decode() and "a=sendonly" in pai[0].body.decode()
        status = world.a.status()["sip"]["calls"]
        assert [(c["extension"], c["party"]) for c in status] == [("105", "302")]
        held_port = int([l for l in pai[-1].body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])
        _listen(world, 200)
        for i in range(40):
            ua.rtp(900 + i, 200000 + 160 * i, bytes([0x33]) * 160, held_port, world.net.now)
            run(world, 20)
        assert sum(1 for f in p["302"].received if f == bytes([0x33]) * 160) >= 30     # 302 hears 105
        heard = [d[12:] for d, _a, port in ua.rtp_in if port == held_port]
        assert len(_voice(heard, "302")) >= 30                                         # 105 hears 302
    else:
        invites = []
        assert run(world, 3000, until=lambda: invites.extend(m for m in ua.take()
                                                             if getattr(m, "method", "") == "INVITE") or invites)
        assert invites[0].from_.uri.user == "301"
        ua.send(message.response_to(invites[0], 180, to_tag="p105"), world.net.now)   # it rings: 301 transfers
        run(world, 300)
        assert p["301"].idle and p["302"].connected
        assert _parties(p["302"]) == ["105"]
        ua.answer_call(invites[0], world.net.now)
        got = _collect(world, ua, 2000, until=lambda g: any("302@" in (m.get("P-Asserted-Identity") or "")
                                                              for m in g if getattr(m, "method", "") == "INVITE"))
        pai = [m for m in got if getattr(m, "method", "") == "INVITE" and m.get("P-Asserted-Identity")]
        assert pai and "<sip:302@" in pai[-1].get("P-Asserted-Identity")
        port = int([l for l in invites[0].body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])
        _listen(world, 200)
        ua.rtp_in = []
        for i in range(40):
            ua.rtp(10 + i, 160 * i, bytes([0x44]) * 160, port, world.net.now)
            run(world, 20)
        assert sum(1 for f in p["302"].received if f == bytes([0x44]) * 160) >= 30
        assert len(_voice([d[12:] for d, _a, prt in ua.rtp_in if prt == port], "302")) >= 30
    assert not world.net.errors


def test_refer_while_the_other_party_holds_the_call_is_refused(world):
    ua, p = world.sip["105"], world.phones
    sip_calls_out(world, ua, "301")
    assert p["301"].phone.hold(world.net.now)
    p["301"].flush()
    got = _collect(world, ua, 1000, until=lambda g: any(getattr(m, "method", "") == "INVITE" for m in g))
    assert "a=sendonly" in [m for m in got if getattr(m, "method", "") == "INVITE"][0].body.decode()
    assert statuses(ua.refer("302", world.net.now)) == [403]
    run(world, 1000)
    assert p["302"].idle and p["301"].connected


def test_refer_among_a_sites_phones_while_the_main_host_is_unreachable(world):
    """B4: site a's remote host alone. SIP phone 105 talks to 101 and REFERs it to 102: the remote
    host joins them (a local call), as it does a handset's transfer."""
    ua, p = world.sip["105"], world.phones
    world.main_away()
    for _ in range(50):                       # the SIP phone's registration is the remote host's own
        world.tick()
    sip_calls_out(world, ua, "101")
    p["101"].take()
    assert statuses(ua.refer("102", world.net.now)) == [202]
    got = _collect(world, ua, 3000, until=lambda g: ("SIP/2.0 200 OK", "terminated") in _sipfrags(g))
    assert ("SIP/2.0 200 OK", "terminated") in _sipfrags(got)
    assert statuses(ua.bye(world.net.now)) == [200]
    p["102"].phone.answer(world.net.now)
    p["102"].flush()
    _listen(world, 1000)
    assert _heard(p["101"]) == (["102"], False) and _heard(p["102"]) == (["101"], False)
    assert _parties(p["101"]) == ["102"]
    assert [c["path"] for c in world.a.status()["calls"]] == ["local"]


def test_handset_transfers_a_local_sip_call_the_joined_call_stays_local_and_recorded(world):
    """105 (SIP) and 101 talk on site a (B3); 101 transfers 105 to 102: the joined call is still
    local at site a's remote host (105's RTP ends there, 102's frames go to it) and site a records
    it, linked; before, it was labelled relay and nobody recorded it."""
    ua, p = world.sip["105"], world.phones
    _ok, port = sip_calls_out(world, ua, "101")
    assert lines.consult(p["101"].phone, "102", world.net.now, True)
    p["101"].flush()
    _collect(world, ua, 3000, until=lambda g: p["102"].phone.state == RINGING and p["101"].idle)
    p["102"].phone.answer(world.net.now)
    p["102"].flush()
    _collect(world, ua, 2000, until=lambda g: any(
        "a=sendrecv" in m.body.decode() for m in g if getattr(m, "method", "") == "INVITE"))
    assert [c["path"] for c in world.a.status()["calls"]] == ["local"]
    _listen(world, 200)
    ua.rtp_in = []
    for i in range(40):
        ua.rtp(700 + i, 300000 + 160 * i, bytes([0x66]) * 160, port, world.net.now)
        run(world, 20)
    assert sum(1 for f in p["102"].received if f == bytes([0x66]) * 160) >= 30
    assert len(_voice([d[12:] for d, _a, _p in ua.rtp_in], "102")) >= 30
    world.hangup("102")
    world.run(1000)
    records = world.main.directory.call_records()
    first = next(r for r in records if (r.caller, r.callee) == ("105", "101"))
    joined = [r for r in records if {r.caller, r.callee} == {"105", "102"}]
    assert [(r.origin, r.path, r.linked) for r in joined] == [("site-a", "local", first.uid)], records
