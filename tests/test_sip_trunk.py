"""A SIP trunk at the main host, in memory on the real cores (tests/inprocess.py), with a provider
played by the test: the main host registers at it (answering its digest challenge), a handset's
call to 9 + number goes out on the trunk with the 9 stripped (the provider's 407 answered), the
provider's call to a DID rings the extension the DID names with the outside caller's number,
voice both ways, hang-ups both ways, and the calls are in the main host's records."""
import json
import struct

import pytest

from upbx.common import wire
from upbx.common.call import RINGING
from upbx.host.directory import Directory
from upbx.host.sip import digest, message, sdp as sdplib
from upbx.host.sip import trunk
from tests.inprocess import World

PROVIDER = ("198.18.50.1", 5060)
PROVIDER_RTP = ("198.18.50.1", 40000)
MAIN_SIP = ("198.18.0.1", 5060)


class Provider:
    """The provider's SIP server as the test drives it: challenges with realm "prov"."""

    def __init__(self, world):
        self.world = world
        self.inbox = []
        self.rtp_in = []
        self.nonce = "n0nce-1"

    def deliver(self):
        for data, addr in self.world.main.sip_datagrams_to_send():
            assert addr == PROVIDER, addr
            self.inbox.append(message.parse(data))
        self.rtp_in += [(d, a, p) for d, a, p in self.world.main.rtp_datagrams_to_send()]

    def send(self, msg):
        self.world.main.receive_sip(msg.encode(), PROVIDER, self.world.net.now)

    def take(self, method=None):
        picked = [m for m in self.inbox if method is None or getattr(m, "method", None) == method]
        self.inbox = [m for m in self.inbox if m not in picked]
        return picked

    def challenge(self, req, status):
        name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        self.send(message.response_to(req, status, to_tag="pt", headers=[
            (name, 'Digest realm="prov", nonce="%s", algorithm=MD5, qop="auth"' % self.nonce)]))

    def verify(self, req, header):
        _, p = digest.parse_credentials(req.get(header))
        expected = digest.response("MD5", "acct", "prov", "pw-123", req.method, p["uri"], p["nonce"], p["nc"],
                                   p["cnonce"])
        return p["username"] == "acct" and p["nonce"] == self.nonce and p["response"] == expected


def run(world, provider, ms, until=None):
    for _ in range(ms // 20):
        world.tick()
        provider.deliver()
        if until is not None and until():
            return True
    return False


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, main_settings='sip_listen = "%s:%d"\n' % MAIN_SIP)
    with Directory(tmp_path / "main.sqlite") as d:
        trunk.add_trunk(d, "prov", "%s:%d" % PROVIDER, "acct", "pw-123", register=True)
        trunk.add_route(d, "9", "prov", strip=1)
        trunk.add_did(d, "4415550100", "301")
    w.start_remote()
    w.add_phone("301", 1)
    w.settle()
    w.provider = Provider(w)
    yield w
    w.close()


def test_registration_at_the_provider_with_its_challenge(world):
    p = world.provider
    got = []
    assert run(world, p, 6000, until=lambda: got.extend(p.take("REGISTER")) or got)
    first = got[0]
    assert first.uri.text == "sip:198.18.50.1" and first.to.uri.user == "acct"
    assert first.get("Authorization") is None
    p.challenge(first, 401)
    p.deliver()
    [second] = p.take("REGISTER")
    assert p.verify(second, "Authorization")
    p.send(message.response_to(second, 200, to_tag="pt", headers=[
        ("Contact", "<sip:acct@198.18.0.1:5060>;expires=60")]))
    run(world, p, 100)
    assert world.main.status()["sip"]["trunks"]["prov"]["registration"] == "registered"
    # refreshed before it runs out: 60 s granted, again after 54 (host/sip/trunk.py, refresh_after_s)
    again = []
    assert not run(world, p, 53000, until=lambda: again.extend(p.take("REGISTER")) or again)
    assert run(world, p, 2000, until=lambda: again.extend(p.take("REGISTER")) or again)
    assert again[0].call_id == first.call_id and again[0].cseq[0] > second.cseq[0]


def test_a_registration_granted_under_30_s_is_refreshed_before_it_lapses(world):
    """A provider granting 12 s (under the 30 s the trunk once waited at least): each REGISTER goes out
    7 s after the last grant, 5 s before the binding would lapse, on the world's virtual clock."""
    p = world.provider
    got = []
    assert run(world, p, 6000, until=lambda: got.extend(p.take("REGISTER")) or got)
    for _ in range(3):
        p.send(message.response_to(got[-1], 200, to_tag="pt", headers=[
            ("Contact", "<sip:acct@198.18.0.1:5060>;expires=12")]))
        run(world, p, 100)
        assert world.main.status()["sip"]["trunks"]["prov"]["registration"] == "registered"
        got = []
        assert not run(world, p, 6800, until=lambda: got.extend(p.take("REGISTER")) or got)   # not at 6.9 s
        assert run(world, p, 400, until=lambda: got.extend(p.take("REGISTER")) or got)   # at 7 s, not 12


def test_outbound_call_on_the_trunk_with_the_prefix_stripped(world):
    p, handset = world.provider, world.phones["301"]
    assert handset.phone.dial("9555123", world.net.now)
    handset.flush()
    invites = []
    assert run(world, p, 3000, until=lambda: invites.extend(p.take("INVITE")) or invites)
    invite = invites[0]
    assert invite.uri.text == "sip:555123@198.18.50.1:5060" and invite.from_.uri.user == "acct"
    assert invite.from_.display == "Phone 301"
    p.challenge(invite, 407)
    run(world, p, 40)
    assert p.take("ACK")                         # the challenge is ACKed
    [invite2] = p.take("INVITE")
    assert p.verify(invite2, "Proxy-Authorization") and invite2.call_id == invite.call_id
    p.send(message.response_to(invite2, 180, to_tag="pv"))
    body, _codec = sdplib.answer(invite2.body.decode(), PROVIDER_RTP[0], PROVIDER_RTP[1], 5, 1)
    p.send(message.response_to(invite2, 200, to_tag="pv", body=body.encode(), headers=[
        ("Contact", "<sip:555123@%s:%d>" % PROVIDER), ("Content-Type", "application/sdp")]))
    assert run(world, p, 2000, until=lambda: handset.connected)
    assert p.take("ACK")
    port = int([l for l in invite2.body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])
    handset.sent, handset.received, p.rtp_in = [], [], []
    for i in range(20):
        data = struct.pack("!BBHII", 0x80, 0, 7 + i, 160 * i, 99) + bytes([i + 3]) * 160
        world.main.receive_rtp(port, data, PROVIDER_RTP, world.net.now)
        run(world, p, 20)
    run(world, p, 100)
    assert handset.received[:15] == [bytes([i + 3]) * 160 for i in range(15)]
    assert [d[12:] for d, a, _ in p.rtp_in][:15] == handset.sent[:15]
    world.hangup("301")
    byes = []
    assert run(world, p, 1000, until=lambda: byes.extend(p.take("BYE")) or byes)
    p.send(message.response_to(byes[0], 200))
    run(world, p, 100)
    record = world.main.directory.call_records(1)[0]
    assert (record.caller, record.callee) == ("301", "9555123") and record.answered_ms is not None


def test_inbound_call_to_a_did_rings_its_extension_with_the_outside_number(world):
    p, handset = world.provider, world.phones["301"]
    sdp = sdplib.offer(PROVIDER_RTP[0], PROVIDER_RTP[1], 9, 1).encode()
    invite = message.Request("INVITE", "sip:4415550100@%s:%d" % MAIN_SIP, [
        ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bKprov1" % PROVIDER), ("Max-Forwards", "70"),
        ("From", '"Outside" <sip:+442071234567@198.18.50.1>;tag=pf'), ("To", "<sip:4415550100@198.18.0.1>"),
        ("Call-ID", "prov-call-1"), ("CSeq", "1 INVITE"), ("Contact", "<sip:prov@%s:%d>" % PROVIDER),
        ("Content-Type", "application/sdp")], sdp)
    p.send(invite)                                # no challenge: the provider is trusted by its address
    assert run(world, p, 3000, until=lambda: handset.phone.state == RINGING)
    [call] = world.main.switch.calls.values()
    assert (call.caller, call.callee, call.a.link.name) == ("+442071234567", "301", "trunk:prov")
    handset.phone.answer(world.net.now)
    handset.flush()
    got = []
    assert run(world, p, 2000, until=lambda: got.extend(p.inbox) or any(getattr(m, "status", 0) == 200 for m in got))
    ok = [m for m in got if getattr(m, "status", 0) == 200][0]
    p.inbox = []
    ack = message.Request("ACK", "sip:%s:%d" % MAIN_SIP, [
        ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bKprov2" % PROVIDER), ("Max-Forwards", "70"),
        ("From", invite.get("From")), ("To", ok.get("To")), ("Call-ID", "prov-call-1"), ("CSeq", "1 ACK")])
    p.send(ack)
    run(world, p, 200)
    assert handset.connected
    bye = message.Request("BYE", "sip:%s:%d" % MAIN_SIP, [
        ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bKprov3" % PROVIDER), ("Max-Forwards", "70"),
        ("From", invite.get("From")), ("To", ok.get("To")), ("Call-ID", "prov-call-1"), ("CSeq", "2 BYE")])
    p.send(bye)
    run(world, p, 300)
    assert [m.status for m in p.take() if hasattr(m, "status")] == [200]
    assert handset.idle and handset.causes()[-1] == wire.CAUSE_NORMAL
    record = world.main.directory.call_records(1)[0]
    assert (record.caller, record.callee) == ("+442071234567", "301")


def test_unknown_did_is_404_and_a_stranger_is_challenged(world):
    p = world.provider
    invite = message.Request("INVITE", "sip:999@%s:%d" % MAIN_SIP, [
        ("Via", "SIP/2.0/UDP %s:%d;branch=z9hG4bKprov9" % PROVIDER), ("Max-Forwards", "70"),
        ("From", "<sip:+1555@198.18.50.1>;tag=pf"), ("To", "<sip:999@198.18.0.1>"),
        ("Call-ID", "prov-call-9"), ("CSeq", "1 INVITE"), ("Content-Type", "application/sdp")],
        sdplib.offer(PROVIDER_RTP[0], PROVIDER_RTP[1], 9, 1).encode())
    p.send(invite)
    p.deliver()
    assert [m.status for m in p.take() if hasattr(m, "status")][-1] == 404
    # the same INVITE from another address is not the provider's: challenged
    world.main.receive_sip(invite.encode(), ("198.18.66.6", 5060), world.net.now)
    [(data, addr)] = world.main.sip_datagrams_to_send()
    assert addr == ("198.18.66.6", 5060) and message.parse(data).status == 407


def test_admin_trunk_route_did(tmp_path, capsys):
    from upbx.tools.cli import main as upbx
    db = str(tmp_path / "m.sqlite")
    def run_admin(*a):
        code = upbx(["admin", "--database", db] + list(a))
        return (code,) + capsys.readouterr()
    assert run_admin("trunk", "add", "prov", "--proxy", "192.0.2.10:5060", "--user", "u", "--password", "p",
                     "--register")[0] == 0
    code, _, err = run_admin("trunk", "add", "bad", "--proxy", "sip.example.com", "--user", "u", "--password", "p")
    assert code == 1 and "--proxy" in err
    assert run_admin("route", "add", "9", "--trunk", "prov", "--strip", "1")[0] == 0
    code, _, err = run_admin("route", "add", "8", "--trunk", "nope")
    assert code == 1 and "unknown trunk" in err
    assert run_admin("did", "add", "+4415550100", "--to", "301")[0] == 0
    code, out, _ = run_admin("trunk", "list", "--json")
    assert json.loads(out) == [{"name": "prov", "proxy": "192.0.2.10:5060", "user": "u", "password": None,
                                "register": True, "site": None}]
    with Directory(db) as d:
        assert trunk.route_for(d, "90123")[1] == "0123" and trunk.route_for(d, "123") is None
        assert trunk.did_target(d, "+4415550100") == "301"
    assert run_admin("trunk", "remove", "prov")[0] == 0
    with Directory(db) as d:
        assert trunk.routes(d) == []
