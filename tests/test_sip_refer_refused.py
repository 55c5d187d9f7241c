"""REFERs the hosts refuse, in memory on the real cores: one from a SIP trunk's provider (it would
place calls as the trunk, to any number: toll fraud from whoever can send from the proxy's
address), and one on a call the other party holds (the transfer would be out of turn). Each gets
403, nothing is called, and the call goes on."""
from upbx.common.call import RINGING
from upbx.host.sip import message, sdp as sdplib
from tests.test_sip_trunk import MAIN_SIP, PROVIDER, PROVIDER_RTP, run, world  # noqa: F401 (the fixture)


def test_refer_from_the_trunks_provider_is_refused(world):
    p, handset = world.provider, world.phones["301"]
    invite = message.Request("INVITE", "sip:4415550100@%s:%d" % MAIN_SIP, [
        ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bKprovr1" % PROVIDER), ("Max-Forwards", "70"),
        ("From", '"Outside" <sip:+442071234567@198.18.50.1>;tag=pf'), ("To", "<sip:4415550100@198.18.0.1>"),
        ("Call-ID", "prov-refer-1"), ("CSeq", "1 INVITE"), ("Contact", "<sip:prov@%s:%d>" % PROVIDER),
        ("Content-Type", "application/sdp")], sdplib.offer(PROVIDER_RTP[0], PROVIDER_RTP[1], 9, 1).encode())
    p.send(invite)
    assert run(world, p, 3000, until=lambda: handset.phone.state == RINGING)
    handset.phone.answer(world.net.now)
    handset.flush()
    got = []
    assert run(world, p, 2000, until=lambda: got.extend(p.inbox) or any(getattr(m, "status", 0) == 200 for m in got))
    ok = [m for m in got if getattr(m, "status", 0) == 200][0]
    p.inbox = []
    p.send(message.Request("ACK", "sip:%s:%d" % MAIN_SIP, [
        ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bKprovr2" % PROVIDER), ("Max-Forwards", "70"),
        ("From", invite.get("From")), ("To", ok.get("To")), ("Call-ID", "prov-refer-1"), ("CSeq", "1 ACK")]))
    run(world, p, 200)
    p.send(message.Request("REFER", "sip:%s:%d" % MAIN_SIP, [
        ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bKprovr3" % PROVIDER), ("Max-Forwards", "70"),
        ("From", invite.get("From")), ("To", ok.get("To")), ("Call-ID", "prov-refer-1"), ("CSeq", "2 REFER"),
        ("Refer-To", "<sip:9004412345@198.18.0.1>")]))
    run(world, p, 500)
    got = p.take()
    assert [m.status for m in got if hasattr(m, "status")] == [403]
    assert not [m for m in got if getattr(m, "method", "") in ("NOTIFY", "INVITE")]   # nothing called out
    assert len(world.main.switch.calls) == 1 and handset.connected
