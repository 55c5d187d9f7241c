"""A site's own SIP trunk (issue 13 item 2, the SRST fallback), in memory on the real cores
(tests/inprocess.py), with the site's gateway (an analogue gateway on site a's LAN, say) played by
the test's SIP user agent (tests/sip_ua.py):

- `trunk add gw-a --site a` stays out of the main host's own trunks and reaches site a's remote
  host with the site's directory, with every route's prefix and the DIDs that ring site a's numbers;
- main host up: handset 101's 9555 goes through the main host to the main host's trunk; main host
  unreachable (B4): the same 9555 goes out on the site's gateway as sip:555@gateway, voice both
  ways, the call in the site's records; the main host back: 9555 goes through it again, and the
  record is uploaded;
- the gateway's call to a DID of site a rings 101 with the outside number, main host up or not;
- "no outside line" (cause 17) when neither line is there: no trunk of the site's, its
  registration down, or its gateway silent.
"""
import pytest

from upbx.common import wire
from upbx.common.call import RINGING
from upbx.common.phone import Incoming
from upbx.host.directory import Directory
from upbx.host.records import decode_upload, encode_upload
from upbx.host.sip import message, trunk
from tests.inprocess import MAIN, World
from tests.sip_ua import SipPhone

SITE_SIP = ("10.1.0.2", 5060)       # site a's remote host on its LAN
GATEWAY = ("10.1.0.60", 5060)       # the site's gateway
PROVIDER = ("198.18.50.1", 5060)    # the main host's provider
DID = "4415550101"


def make_world(tmp_path, register=False, site_trunk=True, extensions=()):
    w = World(tmp_path, main_settings='sip_listen = "198.18.0.1:5060"\n',
              remote_settings={"sip_listen": "%s:%d" % SITE_SIP}, extensions=extensions)
    with Directory(tmp_path / "main.sqlite") as d:
        trunk.add_trunk(d, "prov", "%s:%d" % PROVIDER, "acct", "pw", register=False)
        if site_trunk:
            trunk.add_trunk(d, "gw-a", "%s:%d" % GATEWAY, "site-a", "gw-pw", register=register, site="a")
        trunk.add_route(d, "9", "prov", strip=1)
        trunk.add_did(d, DID, "101")
        trunk.add_did(d, "4415550301", "301")
    w.start_remote()
    w.add_phone("101", 1)
    w.settle()
    w.gateway = SipPhone(w.a, "0123456", None, GATEWAY, rtp_port=31000, host_ip="%s:%d" % SITE_SIP)
    return w


@pytest.fixture
def world(tmp_path):
    w = make_world(tmp_path)
    yield w
    w.close()


def run(world, ms, until=None):
    for _ in range(ms // 20):
        world.tick()
        world.gateway.deliver(world.net.now)
        if until is not None and until():
            return True
    return False


def main_sip(world):
    """What the main host sent on its SIP port since the last look: [(message, address)]."""
    return [(message.parse(d), a) for d, a in world.main.sip_datagrams_to_send()]


def dial(world, number):
    handset = world.phones["101"]
    assert handset.phone.dial(number, world.net.now)
    handset.flush()
    return handset


def main_back(world, handler):
    world.net.endpoints[MAIN] = handler
    world.run_until(lambda: world.a.login.state == "up" and world.a.main_link.up, 60000, "site a logged in again")


def test_the_sites_trunk_goes_to_its_remote_host_only(world):
    assert [t["name"] for t in world.main.trunk_rows()] == ["prov"]
    run(world, 5000)     # the main host reads its trunks every 5 s
    assert sorted(world.main.sip_calls.trunk_links) == ["prov"]
    data = world.a.cache.data
    assert data["trunks"] == [{"name": "gw-a", "proxy": "10.1.0.60:5060", "user": "site-a", "password": "gw-pw",
                               "register": False}]
    assert data["routes"] == [{"prefix": "9", "strip": 1}]
    assert data["dids"] == {DID: "101"}            # not 301's: site c's number is not this site's
    assert data["inside"] == []                    # no number of any site starts with 9
    assert world.a.sip_wanted()                    # the site's SIP port opens for its gateway
    with Directory(world.tmp / "main.sqlite") as d:
        with pytest.raises(Exception, match="site a's own"):
            trunk.add_route(d, "8", "gw-a")
        with pytest.raises(Exception, match="no remote host"):
            trunk.add_trunk(d, "gw-c", "10.3.0.60:5060", "u", "p", site="c")


def test_b4_outside_call_on_the_sites_gateway_and_the_main_hosts_trunk_again(world):
    gw = world.gateway
    # main host up: 9555 is the main host's to carry, out on its provider's trunk
    dial(world, "9555")
    sent = []
    assert run(world, 3000, until=lambda: sent.extend(main_sip(world)) or any(
        getattr(m, "method", None) == "INVITE" for m, _ in sent))
    [(invite, addr)] = [(m, a) for m, a in sent if getattr(m, "method", None) == "INVITE"]
    assert addr == PROVIDER and invite.uri.text == "sip:555@198.18.50.1:5060"
    assert gw.take() == []
    world.hangup("101")
    run(world, 500)
    main_sip(world)

    handler = world.net.endpoints[MAIN]
    world.main_away()
    handset = dial(world, "9555")
    assert run(world, 3000, until=lambda: any(getattr(m, "method", None) == "INVITE" for m in gw.inbox))
    [invite] = [m for m in gw.take() if getattr(m, "method", None) == "INVITE"]
    assert invite.uri.text == "sip:555@10.1.0.60:5060"
    assert invite.from_.uri.user == "site-a" and invite.from_.display == "Phone 101"
    gw.answer_call(invite, world.net.now)
    assert run(world, 2000, until=lambda: handset.connected)
    assert any(getattr(m, "method", None) == "ACK" for m in gw.take())
    port = int([l for l in invite.body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])
    handset.sent, handset.received, gw.rtp_in = [], [], []
    for i in range(20):
        gw.rtp(100 + i, 160 * i, bytes([i + 5]) * 160, port, world.net.now)
        run(world, 20)
    run(world, 100)
    assert handset.received[:15] == [bytes([i + 5]) * 160 for i in range(15)]
    assert [d[12:] for d, a, p in gw.rtp_in][:15] == handset.sent[:15]
    assert {a for _, a, _ in gw.rtp_in} == {(GATEWAY[0], 31000)}
    world.hangup("101")
    byes = []
    assert run(world, 1000, until=lambda: byes.extend(m for m in gw.take() if getattr(m, "method", None) == "BYE")
               or byes)
    gw.send(message.response_to(byes[0], 200), world.net.now)
    run(world, 200)
    [record] = [r for r in world.a.records.pending() if r["path"] == "trunk"]
    assert (record["caller"], record["callee"], record["cause"]) == ("101", "9555", "normal clearing")
    assert record["answered_ms"] is not None

    main_back(world, handler)
    world.run_until(lambda: world.a.records.pending() == [], 10000, "records uploaded")
    [stored] = [r for r in world.main.directory.call_records(5) if r.origin == "site-a"]
    assert (stored.caller, stored.callee, stored.path) == ("101", "9555", "trunk")
    main_sip(world)
    dial(world, "9555")                       # and the same number goes through the main host again
    sent = []
    assert run(world, 3000, until=lambda: sent.extend(main_sip(world)) or any(
        getattr(m, "method", None) == "INVITE" for m, _ in sent))
    assert [a for m, a in sent if getattr(m, "method", None) == "INVITE"] == [PROVIDER]
    assert not any(getattr(m, "method", None) == "INVITE" for m in gw.take())


@pytest.mark.parametrize("away", [False, True])
def test_the_gateways_call_to_a_did_rings_the_sites_extension(world, away):
    gw, handset = world.gateway, world.phones["101"]
    handler = world.net.endpoints[MAIN]
    if away:
        world.main_away()
    out = gw.invite(DID, world.net.now)
    assert [m.status for m in out] == [100]          # the gateway is trusted by its address: no challenge
    assert run(world, 2000, until=lambda: handset.phone.state == RINGING)
    assert [(e.number, e.name) for e in handset.take() if isinstance(e, Incoming)] == [("0123456", "")]
    handset.phone.answer(world.net.now)
    handset.flush()
    got = []
    run(world, 1000, until=lambda: got.extend(gw.take()) or any(getattr(m, "status", 0) == 200 for m in got))
    [ok] = [m for m in got if getattr(m, "status", 0) == 200]
    gw.ack(ok, world.net.now)
    port = int([l for l in ok.body.decode().split("\r\n") if l.startswith("m=audio")][0].split()[1])
    handset.sent, handset.received, gw.rtp_in = [], [], []
    for i in range(20):
        gw.rtp(300 + i, 160 * i, bytes([i + 9]) * 160, port, world.net.now)
        run(world, 20)
    run(world, 100)
    assert handset.received[:15] == [bytes([i + 9]) * 160 for i in range(15)]
    assert [d[12:] for d, a, p in gw.rtp_in][:15] == handset.sent[:15]
    assert [m.status for m in gw.bye(world.net.now)] == [200]
    run(world, 300)
    assert handset.idle
    if away:
        [record] = world.a.records.pending()
        assert (record["caller"], record["callee"], record["path"]) == ("0123456", "101", "trunk")
        main_back(world, handler)
    world.run_until(lambda: world.a.records.pending() == [], 10000, "records uploaded")
    [stored] = [r for r in world.main.directory.call_records(5) if r.origin == "site-a"]
    assert (stored.caller, stored.callee, stored.path) == ("0123456", "101", "trunk")


def test_a_did_not_of_the_site_is_404(world):
    gw = world.gateway
    assert [m.status for m in gw.invite("4415550301", world.net.now)][-1] == 404   # 301 is site c's
    assert world.a.switch.calls == {}


def no_outside_line(world):
    world.main_away()
    handset = dial(world, "9555")
    world.run_until(lambda: handset.causes(), 40000, "the call refused")
    return handset


def test_no_outside_line_without_a_trunk_of_the_sites(tmp_path):
    w = make_world(tmp_path, site_trunk=False)
    try:
        handset = no_outside_line(w)
        assert handset.causes() == [wire.CAUSE_NO_OUTSIDE_LINE]
        assert wire.CAUSE_TEXT[handset.causes()[0]] == "no outside line"
    finally:
        w.close()


def test_no_outside_line_while_the_sites_trunk_is_not_registered(tmp_path):
    w = make_world(tmp_path, register=True)     # the gateway never answers the REGISTER
    try:
        run(w, 6000)
        assert w.a.status()["sip"]["trunks"]["gw-a"]["registration"] == "registering"
        assert any(getattr(m, "method", None) == "REGISTER" for m in w.gateway.take())
        handset = no_outside_line(w)
        assert handset.causes() == [wire.CAUSE_NO_OUTSIDE_LINE]
        assert not any(getattr(m, "method", None) == "INVITE" for m in w.gateway.take())
    finally:
        w.close()


def test_no_outside_line_when_the_gateway_never_answers(world):
    gw = world.gateway
    world.main_away()
    handset = dial(world, "9555")
    started = world.net.now
    # the INVITE sent again at 0.5, 1.5, 3.5 s; nothing at all by 5 s: the line is down (not the
    # handset's own 20 s setup timeout, "unreachable")
    assert run(world, 20000, until=lambda: handset.causes())
    assert handset.causes() == [wire.CAUSE_NO_OUTSIDE_LINE] and world.net.now - started <= 5100
    assert len([m for m in gw.take() if getattr(m, "method", None) == "INVITE"]) == 4
    assert world.a.switch.calls == {} and world.a.sip_calls.calls == {}


def test_a_trunk_record_uploads_and_a_forged_one_does_not():
    site_of = {"101": "a", "201": "b"}.get
    now = 1_800_000_000_000
    base = {"uid": "00112233aabbccdd", "caller": "101", "callee": "9555", "path": "trunk", "started_ms": now - 5000,
            "answered_ms": now - 4000, "ended_ms": now, "cause": "normal clearing", "setup_ms": 300,
            "dialled": None, "linked": None}
    assert decode_upload(encode_upload(base), "site-a", "a", site_of, now)["path"] == "trunk"
    assert decode_upload(encode_upload(dict(base, caller="anonymous", callee="101")), "site-a", "a", site_of,
                         now)["caller"] == "anonymous"
    for bad in (dict(base, path="relay"), dict(base, caller="sip:x"), dict(base, path="local", callee="201")):
        with pytest.raises(ValueError):
            decode_upload(encode_upload(bad), "site-a", "a", site_of, now)


def test_b4_a_sip_phone_of_the_site_dials_out_on_the_gateway_or_hears_503(tmp_path):
    """SIP phone 105 of site a, main host away: 9555 goes to the gateway (the same path as a
    handset's); with the gateway silent, 105's INVITE gets 503 (no outside line)."""
    w = make_world(tmp_path)
    try:
        w.run(2000)                                  # the main host has looked at its directory once
        with Directory(tmp_path / "main.sqlite") as d:
            d.add_extension("105", "a", "Desk 105")
            password = d.set_sip_password("105")
        w.run(3000)                                  # the site's directory, with 105's SIP password
        phone = SipPhone(w.a, "105", password, ("10.1.0.50", 5062), host_ip="%s:%d" % SITE_SIP)
        uas = {GATEWAY: w.gateway, phone.address: phone}

        def route(now=None):
            for data, addr in w.a.sip_datagrams_to_send():
                uas[tuple(addr)].inbox.append(message.parse(data))
            for data, addr, port in w.a.rtp_datagrams_to_send():
                (w.gateway if addr[0] == GATEWAY[0] else phone).rtp_in.append((data, addr, port))

        def run_both(ms, until=None):
            for _ in range(ms // 20):
                w.tick()
                route()
                if until is not None and until():
                    return True
            return False

        phone.deliver = w.gateway.deliver = route     # each UA gets its own messages
        phone.register(w.net.now)
        run_both(100)
        w.main_away()
        out = phone.invite("9555", w.net.now)
        run_both(200)
        assert [m.status for m in out + phone.take() if hasattr(m, "status")][:1] == [100]
        [invite] = [m for m in w.gateway.take() if getattr(m, "method", None) == "INVITE"]
        assert invite.uri.text == "sip:555@10.1.0.60:5060" and invite.from_.display == "Desk 105"
        got = []
        assert run_both(6000, until=lambda: got.extend(phone.take()) or any(
            getattr(m, "status", 0) >= 300 for m in got))   # the gateway never answers
        assert [m.status for m in got if getattr(m, "status", 0) >= 300] == [503]
    finally:
        w.close()


def test_b4_another_sites_number_under_a_routes_prefix_is_no_outside_number(tmp_path):
    """Extension 901 of site c starts with route 9's prefix: the main host's own numbers win over
    routes, and so they do at the site with the main host away (901 is unreachable then, not
    dialled out on the gateway as 01)."""
    w = make_world(tmp_path, extensions=(("901", "c"),))
    try:
        assert w.a.cache.data["inside"] == ["901"]
        w.main_away()
        handset = dial(w, "901")
        w.run_until(lambda: handset.causes(), 5000, "901 refused")
        assert handset.causes() == [wire.CAUSE_UNREACHABLE]
        assert not any(getattr(m, "method", None) == "INVITE" for m in w.gateway.take())
        dial(w, "9555")                              # a number outside still goes out on the gateway
        assert run(w, 1000, until=lambda: any(getattr(m, "method", None) == "INVITE" for m in w.gateway.inbox))
    finally:
        w.close()
