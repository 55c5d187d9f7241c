"""Station features on the real host cores in one process (tests/inprocess.py): do not disturb and
forwarding (docs/features.md), set by star codes from the phones' protocol cores and by the
directory (`upbx admin ext forward`), on local calls, calls through the main host and calls to
phones at the main host, and while the main host is unreachable.

tests/test_features_handset.py proves the same with firmware phones on real sockets, by what
the phones show and play.
"""
import pytest

from upbx.common import wire
from upbx.common.call import RINGING
from upbx.host import features
from upbx.host.directory import Directory
from tests.inprocess import MAIN, World, attach_host
from tests.test_routing import _flowing, _rang, _refused, _world


def _star(world, number, code):
    """number dials a star code; the cause its host answered with."""
    return _refused(world, number, code)[0]


def _call_via(world, caller, dialled, rings, limit_ms=5000):
    """caller dials `dialled`; `rings` (where it is forwarded) answers; both end connected."""
    a, b = world.phones[caller], world.phones[rings]
    assert a.phone.dial(dialled, world.net.now)
    a.flush()

    def up():
        if b.phone.state == RINGING:
            b.phone.answer(world.net.now)
            b.flush()
        return a.connected and b.connected
    world.run_until(up, limit_ms, "%s -> %s connected at %s" % (caller, dialled, rings))
    a.sent, a.received, b.sent, b.received = [], [], [], []


def test_star_codes_parse_to_settings_and_refuse_what_they_do_not_know():
    assert features.star_code("*78") == ({"dnd": True}, wire.CAUSE_FEATURE_ON)
    assert features.star_code("*79") == ({"dnd": False}, wire.CAUSE_FEATURE_OFF)
    assert features.star_code("*72301") == ({"always": "301"}, wire.CAUSE_FEATURE_ON)
    assert features.star_code("*90102") == ({"busy": "102"}, wire.CAUSE_FEATURE_ON)
    assert features.star_code("*92102*20") == ({"noanswer": "102", "noanswer_s": 20}, wire.CAUSE_FEATURE_ON)
    assert features.star_code("*73") == ({"always": None, "busy": None, "noanswer": None}, wire.CAUSE_FEATURE_OFF)
    assert features.star_code("301") is None
    for bad in ("*7", "*781", "*72", "*72x", "*92102*2", "*99"):
        with pytest.raises(features.FeatureError):
            features.star_code(bad)
    with pytest.raises(features.FeatureError, match="unknown feature setting"):
        features.check({"dnd": True, "colour": "red"})
    with pytest.raises(features.FeatureError, match="bad dnd"):
        features.decode(b'{"dnd": 1}')


def test_forwarding_loops_and_hop_limit_are_stopped_with_a_cause():
    table = {"1": {"always": "2"}, "2": {"always": "3"}, "3": {"always": "1"}, "4": {"dnd": True},
             "5": {"busy": "6"}}
    settings = lambda n: dict(features.defaults(), **table.get(n, {}))
    assert features.route("1", settings) == (None, wire.CAUSE_FORWARD_LOOP)
    assert features.route("4", settings) == (None, wire.CAUSE_DND)
    assert features.route("5", settings, busy=lambda n: n == "5") == ("6", None)
    assert features.route("5", settings, busy=lambda n: False) == ("5", None)
    chain = {str(i): {"always": str(i + 1)} for i in range(10)}
    assert features.route("0", lambda n: dict(features.defaults(), **chain.get(n, {}))) == \
        (None, wire.CAUSE_FORWARD_LOOP)


def test_dnd_refuses_calls_on_every_path_and_survives_the_main_host_being_away(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "301", "302"))
    try:
        p = world.phones
        assert _star(world, "102", "*78") == wire.CAUSE_FEATURE_ON           # at the remote host
        assert _star(world, "302", "*78") == wire.CAUSE_FEATURE_ON           # at the main host
        world.run(200)
        with Directory(tmp_path / "main.sqlite") as d:                        # the main host has a copy
            assert d.features("102")["dnd"] is True and d.features("302")["dnd"] is True
        assert _refused(world, "101", "102")[0] == wire.CAUSE_DND            # local (B3)
        assert _refused(world, "301", "102")[0] == wire.CAUSE_DND            # main host -> site a
        assert _refused(world, "101", "302")[0] == wire.CAUSE_DND            # site a -> main host's phone
        assert not _rang(p["102"]) and not _rang(p["302"])
        world.call("101", "103")                                              # others still ring
        world.run(300)
        assert _flowing(p["101"], p["103"])
        world.hangup("101")

        world.main_away()
        assert _refused(world, "101", "102")[0] == wire.CAUSE_DND            # kept by the remote host
        assert _star(world, "102", "*79") == wire.CAUSE_FEATURE_OFF          # changed without the main host
        world.call("101", "102")
        world.run(300)
        assert _flowing(p["101"], p["102"])
        world.hangup("102")
        assert world.a.cache.unsent_features == ["102"]

        attach_host(world.net, world.main, MAIN)                             # the main host is back
        world.run_until(lambda: world.a.cache.unsent_features == [], 30000, "features sent to main")
        with Directory(tmp_path / "main.sqlite") as d:
            assert d.features("102")["dnd"] is False
        world.run(500)          # the directory the main host sent on the new login keeps 102's change
        assert world.a.cache.features("102")["dnd"] is False
        world.call("301", "102")
        world.hangup("301")
        assert not world.net.errors
    finally:
        world.close()


def test_forward_always_and_busy_reach_any_extension_and_loops_are_stopped(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "301", "302", "303"))
    try:
        p = world.phones
        assert _star(world, "102", "*72103") == wire.CAUSE_FEATURE_ON        # local to local
        world.call("101", "103")   # warm-up: nothing forwarded yet for 103
        world.hangup("101")
        before = len(_rang(p["103"]))
        _call_via(world, "101", "102", "103")                                  # 102 forwards always to 103
        assert len(_rang(p["103"])) == before + 1 and not _rang(p["102"])
        world.run(300)
        assert _flowing(p["101"], p["103"])
        world.hangup("101")

        assert _star(world, "103", "*72301") == wire.CAUSE_FEATURE_ON        # site a -> main host's phone
        world.run(200)
        _call_via(world, "302", "103", "301")                                  # from the main host: to 301
        world.run(300)
        assert _flowing(p["302"], p["301"]) and len(_rang(p["103"])) == before + 1
        world.hangup("302")
        _call_via(world, "101", "103", "301")                                  # local number, forwarded off site
        world.run(300)
        assert _flowing(p["101"], p["301"])
        world.hangup("101")

        assert _star(world, "301", "*72102") == wire.CAUSE_FEATURE_ON        # 102 -> 103 -> 301 -> 102
        assert _refused(world, "302", "102")[0] == wire.CAUSE_FORWARD_LOOP
        assert _refused(world, "101", "301")[0] == wire.CAUSE_FORWARD_LOOP
        assert _star(world, "301", "*73") == wire.CAUSE_FEATURE_OFF
        assert _star(world, "103", "*73") == wire.CAUSE_FEATURE_OFF
        assert _star(world, "102", "*73") == wire.CAUSE_FEATURE_OFF

        assert _star(world, "301", "*90303") == wire.CAUSE_FEATURE_ON        # busy, at the main host
        assert _star(world, "102", "*90103") == wire.CAUSE_FEATURE_ON        # busy, at the remote host
        world.call("301", "302")
        rang = len(_rang(p["303"]))
        _call_via(world, "101", "301", "303")                                  # 301 busy: 303 rings
        assert len(_rang(p["303"])) == rang + 1
        world.run(300)
        assert _flowing(p["101"], p["303"])
        world.hangup("101")
        world.call("303", "102")                                              # 102 idle: it rings itself
        world.run(200)
        rang = len(_rang(p["103"]))
        world.phones["101"].phone.dial("102", world.net.now)                  # 102 busy: 103 rings
        world.phones["101"].flush()
        world.run_until(lambda: len(_rang(p["103"])) == rang + 1, 3000, "103 rings")
        assert p["101"].causes().count(wire.CAUSE_BUSY) == 0
        world.hangup("101")
        world.hangup("303")
        world.hangup("301")
        assert not world.net.errors
    finally:
        world.close()


def test_an_admin_change_reaches_the_remote_host_and_is_applied_there(tmp_path):
    world = _world(tmp_path, ("101", "102", "103"))
    try:
        with Directory(tmp_path / "main.sqlite") as d:
            d.set_features("102", dict(features.defaults(), always="103"), announce=True)
        world.run_until(lambda: world.a.cache.features("102")["always"] == "103", 5000, "directory with features")
        world.main_away()
        _call_via(world, "101", "102", "103")                                  # forwarded without the main host
        assert world.phones["103"].connected and not _rang(world.phones["102"])
        world.hangup("101")
    finally:
        world.close()


def _ringing_then(world, caller, dialled, first, then, after_ms, limit_ms=3000):
    """caller dials; `first` rings and is not answered; after after_ms `then` rings (and first's
    ringing ended with no answer); `then` answers. Returns the virtual ms from dial to `then` ringing."""
    a, b, c = world.phones[caller], world.phones[first], world.phones[then]
    rang = len(_rang(c))
    assert a.phone.dial(dialled, world.net.now)
    a.flush()
    started = world.net.now
    world.run_until(lambda: b.phone.state == RINGING, limit_ms, "%s rings" % first)
    world.run_until(lambda: c.phone.state == RINGING, after_ms + limit_ms, "%s rings" % then)
    took = world.net.now - started
    assert b.idle and b.causes()[-1] == wire.CAUSE_NO_ANSWER and len(_rang(c)) == rang + 1
    c.phone.answer(world.net.now)
    c.flush()
    world.run_until(lambda: a.connected and c.connected, limit_ms, "%s answers" % then)
    a.sent, a.received, c.sent, c.received = [], [], [], []
    return took


def test_forward_on_no_answer_on_every_path_and_while_the_main_host_is_away(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "301", "302"))
    try:
        p = world.phones
        media = lambda host: host.status()["stats"]["counters"].get("media in", 0)
        assert _star(world, "301", "*92302*5") == wire.CAUSE_FEATURE_ON      # at the main host
        world.run(100)
        _ringing_then(world, "101", "301", "301", "302", 5000)                 # site a -> main -> 302
        world.run(300)
        assert _flowing(p["101"], p["302"])
        world.hangup("101")

        assert _star(world, "102", "*92103*5") == wire.CAUSE_FEATURE_ON      # local, to a local phone
        _ringing_then(world, "101", "102", "102", "103", 5000)
        assert [c["path"] for c in world.a.status()["calls"]] == ["local"]
        world.run(200)
        before = media(world.a), media(world.main)
        world.run(600)
        assert _flowing(p["101"], p["103"]) and (media(world.a), media(world.main)) == before   # phone to phone
        world.hangup("103")

        assert _star(world, "103", "*92301*5") == wire.CAUSE_FEATURE_ON      # local, forwarded off the site
        assert _star(world, "301", "*73") == wire.CAUSE_FEATURE_OFF
        world.run(100)
        _ringing_then(world, "101", "103", "103", "301", 5000)
        world.run(300)
        assert _flowing(p["101"], p["301"])
        assert not world.main.local_calls.get("a")                            # the local grant was given back
        world.hangup("301")

        assert _star(world, "103", "*92102*5") == wire.CAUSE_FEATURE_ON      # 102 -> 103 -> 102: a loop
        assert p["101"].phone.dial("102", world.net.now)
        p["101"].flush()
        world.run_until(lambda: p["101"].idle, 12000, "the loop ends the call")
        assert p["101"].causes()[-1] == wire.CAUSE_FORWARD_LOOP
        assert p["102"].idle and p["103"].idle

        world.main_away()                                                     # the site's own phones still forward
        assert _star(world, "103", "*73") == wire.CAUSE_FEATURE_OFF
        took = _ringing_then(world, "101", "102", "102", "103", 5000)
        assert 5000 <= took <= 5000 + 3 * 20, took                            # the no-answer time, to a tick
        world.run(300)
        assert _flowing(p["101"], p["103"])
        world.hangup("101")
        assert not world.net.errors
    finally:
        world.close()


def test_main_host_forwards_on_busy_when_the_remote_host_finds_its_phone_busy(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302"))
    try:
        p = world.phones
        assert _star(world, "102", "*90301") == wire.CAUSE_FEATURE_ON        # busy: to a phone at the main host
        world.call("102", "101")
        _call_via(world, "302", "102", "301")
        world.run(300)
        assert _flowing(p["302"], p["301"]) and p["102"].connected and len(_rang(p["102"])) == 0
        world.hangup("302")
        world.hangup("101")
        assert not world.net.errors
    finally:
        world.close()


def test_feature_messages_out_of_place_are_dropped_and_counted_and_change_nothing(tmp_path):
    """Authenticated peers (site x's remote host, phone 303) sending FEATURES, HOLD and MUSIC they
    may not send, or with bad contents: each is dropped and counted, no settings change, no reply."""
    world = _world(tmp_path, ("101", "301"))
    try:
        host = world.add_login(wire.IE_HOST_NAME, "site-x", ("198.18.9.1", 4570))
        phone = world.add_login(wire.IE_EXTENSION, "303", ("198.18.9.2", 40000))
        world.run(500)
        assert host.up and phone.up
        drops = lambda: dict(world.main.stats.drops)
        cases = [
            (host, wire.FEATURES, {wire.IE_EXTENSION: "101", wire.IE_DATA: b'{"dnd":true}'},
             "features not of the host's site"),                        # site a's extension
            (host, wire.FEATURES, {wire.IE_EXTENSION: "401", wire.IE_DATA: b'{"dnd":1}'}, "bad features"),
            (host, wire.FEATURES, {wire.IE_EXTENSION: "401", wire.IE_DATA: b"\xff{"}, "bad features"),
            (host, wire.FEATURES, {wire.IE_EXTENSION: "401", wire.IE_DATA: b'{"always":"4x"}'}, "bad features"),
            (host, wire.FEATURES, {wire.IE_DATA: b'{"dnd":true}'}, "features not of the host's site"),
            (phone, wire.FEATURES, {wire.IE_EXTENSION: "303", wire.IE_DATA: b'{"dnd":true}'},
             "features not of the host's site"),                        # a phone's are star codes
            (phone, wire.HOLD, {wire.IE_CALL_NO: 5, wire.IE_PEER_CALL_NO: 77, wire.IE_STATE: 1}, "unknown call"),
            (phone, wire.MUSIC, {wire.IE_VERSION: 9, wire.IE_CHUNK: 1, wire.IE_DATA: b"x"}, "unexpected message"),
        ]
        for sender, msg_type, ies, reason in cases:
            before = drops()
            inbox = len(sender.inbox)
            sender.login.send(msg_type, ies, world.net.now)
            sender.flush()
            world.run(100)
            after = drops()
            assert after.get(reason, 0) == before.get(reason, 0) + 1, (msg_type, ies, after)
            assert [m for m, _ in sender.inbox[inbox:] if m not in (wire.ACK, wire.PING)] == []
        with Directory(tmp_path / "main.sqlite") as d:
            assert d.features("101") == d.features("401") == d.features("303") == features.defaults()
        assert world.main.music_acked == {}
        assert _star(world, "301", "*99") == wire.CAUSE_UNKNOWN_EXTENSION    # a star code nobody knows
        assert _star(world, "101", "*72") == wire.CAUSE_UNKNOWN_EXTENSION    # ... or without its number
        assert world.a.cache.features("101") == features.defaults()
        assert not world.net.errors
    finally:
        world.close()


def test_phone_states_name_only_the_senders_own_sites_phones(tmp_path):
    """A remote host tells the main host which of its site's phones registered (PHONE_STATE; the API's
    live status lists them): site x's host claiming site a's 101 is dropped and counted and listed
    nowhere; its own 401 is listed while registered, and gone when it unregisters or the host logs out."""
    world = _world(tmp_path, ("101", "301"))
    try:
        host = world.add_login(wire.IE_HOST_NAME, "site-x", ("198.18.9.1", 4570))
        world.run(500)
        assert host.up
        for number, state in (("101", 1), ("401", 1), ("402", 1), ("402", 0)):
            host.login.send(wire.PHONE_STATE, {wire.IE_EXTENSION: number, wire.IE_STATE: state}, world.net.now)
            host.flush()
            world.run(100)
        assert world.main.stats.drops["phone state of another site's extension"] == 1
        assert sorted(world.main.site_phones["site-x"]) == ["401"]
        host.login.send(wire.BYE, {}, world.net.now)
        host.flush()
        world.run(100)
        assert "site-x" not in world.main.site_phones
    finally:
        world.close()
