"""Ring groups, hunt groups, pickup, paging and intercom on the real host cores in one process
(tests/inprocess.py), docs/features.md "Groups". Every phone sends its own tone (Goertzel on what
the others received says who hears whom); the phones at site a's remote host are 1xx, the main
host's 3xx. tests/test_features_handset.py plays ring_group, hunt_group, pickup and paging with
firmware phones (`upbx demo features`).
"""
import math

from upbx.common import wire
from upbx.common.call import RINGING
from upbx.common.g711 import ulaw_decode, ulaw_encode
from upbx.host.directory import Directory
from upbx.tools.lab import goertzel_power
from tests.inprocess import MAIN, TICK_MS
from tests.test_routing import _flowing, _rang, _refused, _world

TONES = {"101": 500, "102": 700, "103": 900, "104": 1100, "301": 1300, "302": 1500, "303": 1700}


def _tone_frame(hz, ts):
    pcm = bytearray()
    for i in range(wire.VOICE_BYTES):
        v = int(8000 * math.sin(2 * math.pi * hz * (ts * 8 + i) / 8000))
        pcm += (v & 0xFFFF).to_bytes(2, "little")
    return ulaw_encode(bytes(pcm))


def _with_tones(world):
    """Each phone sends its own tone (TONES) instead of numbered text."""
    for number, end in world.phones.items():
        frames = [_tone_frame(TONES[number], ts) for ts in range(0, 200, 20)]   # 200 ms: whole periods

        def tick(end=end, frames=frames):
            now = end.net.now
            timer = end.phone.next_timer()
            if timer is not None and timer <= now:
                end.phone.handle_timer(now)
            if end.connected:
                payload = frames[(end.ts // 20) % len(frames)]
                frame = end.phone.seal_frame(end.ts, payload)
                if frame is not None:
                    end.sent.append(payload)
                    end.net.send(frame, end.address, end.phone.frame_to or end.host)
                end.ts += TICK_MS
            end.flush()
        end.tick = tick


def heard(end):
    """The phones whose tone is in what end received (Goertzel, each frame's strongest tone)."""
    who = set()
    for payload in end.received:
        if len(payload) != wire.VOICE_BYTES:
            continue
        pcm = ulaw_decode(payload)
        powers = {n: goertzel_power(pcm, wire.VOICE_BYTES, hz) for n, hz in TONES.items()}
        best = max(powers, key=powers.get)
        if powers[best] > 1e10:
            who.add(best)
    return who


def _groups(world, *groups):
    with Directory(world.tmp / "main.sqlite") as directory:
        for group in groups:
            directory.set_group(group)
    world.run(1500)      # the main host sends the directory (with the groups) to site a's remote host


def _group_world(tmp_path, phones=("101", "102", "103", "104", "301", "302", "303"), **kwargs):
    world = _world(tmp_path, phones, **kwargs)
    _with_tones(world)
    return world


def _dial(world, caller, number):
    end = world.phones[caller]
    assert end.phone.dial(number, world.net.now)
    end.flush()


def _ringing(world):
    return {n for n, e in world.phones.items() if e.phone.state == RINGING}


def _talk(world, *numbers):
    for n in numbers:
        world.phones[n].sent, world.phones[n].received = [], []
    world.run(600)


def _no_legs(world):
    return (world.main.status()["calls"] == [] and world.a.status()["calls"] == [] and not world.main.switch.legs
            and not world.a.switch.legs and not world.main.groups.active and not world.a.groups.active)


def test_ring_all_rings_every_member_the_first_to_answer_gets_the_call(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "600", "strategy": "ring-all", "members": ["101", "102", "301"]})
        _dial(world, "303", "600")
        world.run_until(lambda: _ringing(world) == {"101", "102", "301"}, 2000, "every member rings")
        assert p["303"].phone.state == wire.__dict__.get("RINGBACK", 2)
        assert p["102"].phone.answer(world.net.now)
        p["102"].flush()
        world.run_until(lambda: p["303"].connected, 1000, "the caller is connected")
        world.settle()
        assert p["101"].causes() == [wire.CAUSE_ANSWERED_ELSEWHERE] and p["301"].causes() == [
            wire.CAUSE_ANSWERED_ELSEWHERE]
        assert p["101"].idle and p["301"].idle
        _talk(world, "303", "102", "101", "301")
        assert heard(p["303"]) == {"102"} and heard(p["102"]) == {"303"}      # who hears whom
        assert not p["101"].received and not p["301"].received
        world.hangup("303")
        assert _no_legs(world)
        record = world.main.directory.call_records(1)[0]
        assert (record.caller, record.callee, record.cause) == ("303", "102", "normal clearing")
        assert not world.net.errors
    finally:
        world.close()


def test_hunt_rings_the_members_in_order_and_skips_a_busy_one(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "610", "strategy": "hunt", "members": ["301", "101", "102"], "ring_s": 3})
        assert _refused(world, "102", "*71")[0] == wire.CAUSE_FEATURE_OFF   # call waiting off:
        world.call("302", "102")                           # 102 in a call is busy
        _dial(world, "303", "610")
        world.run_until(lambda: _ringing(world) == {"301"}, 1000, "the first member rings")
        took = world.run_until(lambda: _ringing(world) == {"101"}, 5000, "the second member rings")
        assert 2900 <= took <= 3100, took
        assert p["301"].causes() == [wire.CAUSE_NO_ANSWER]
        world.run(3100)                                     # 101 rings out too; 102 is busy: skipped
        assert p["303"].causes() == [wire.CAUSE_NO_ANSWER] and p["101"].causes() == [wire.CAUSE_NO_ANSWER]
        assert len(_rang(p["102"])) == 1                    # only the call it is in
        _dial(world, "303", "610")
        world.run_until(lambda: _ringing(world) == {"301"}, 1000, "301 rings again")
        world.run_until(lambda: _ringing(world) == {"101"}, 5000, "then 101")
        assert p["101"].phone.answer(world.net.now)
        p["101"].flush()
        world.run_until(lambda: p["303"].connected, 1000, "connected")
        _talk(world, "303", "101")
        assert heard(p["303"]) == {"101"} and heard(p["101"]) == {"303"}
        world.hangup("101")
        world.hangup("302")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_a_group_overflows_and_every_member_busy_is_busy(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "620", "strategy": "ring-all", "members": ["101", "301"], "ring_s": 3,
                        "overflow": "303"},
                {"number": "621", "strategy": "ring-all", "members": ["101", "102"]})
        _dial(world, "302", "620")
        world.run_until(lambda: _ringing(world) == {"101", "301"}, 1000, "the members ring")
        took = world.run_until(lambda: _ringing(world) == {"303"}, 5000, "the overflow rings")
        assert 2900 <= took <= 3100, took
        assert p["303"].phone.answer(world.net.now)
        p["303"].flush()
        world.run_until(lambda: p["302"].connected, 1000, "connected to the overflow")
        _talk(world, "302", "303")
        assert heard(p["302"]) == {"303"} and heard(p["303"]) == {"302"}
        world.hangup("302")
        for member in ("101", "102"):                        # call waiting off: a member in a call is busy
            assert _refused(world, member, "*71")[0] == wire.CAUSE_FEATURE_OFF
        world.call("101", "104")
        world.call("102", "103")
        assert _refused(world, "301", "621")[0] == wire.CAUSE_BUSY     # every member busy
        world.hangup("101")
        world.hangup("102")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_the_caller_hanging_up_stops_every_member_and_a_group_is_a_forward_target(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "630", "strategy": "ring-all", "members": ["101", "102", "303"]})
        _dial(world, "301", "630")
        world.run_until(lambda: _ringing(world) == {"101", "102", "303"}, 1000, "the members ring")
        world.hangup("301")
        world.run(200)
        assert not _ringing(world) and all(p[n].causes() == [wire.CAUSE_NORMAL] for n in ("101", "102", "303"))
        assert _no_legs(world)
        settings = world.main.directory.features("302")
        settings["always"] = "630"
        world.main.directory.set_features("302", settings, announce=True)
        _dial(world, "301", "302")
        world.run_until(lambda: _ringing(world) == {"101", "102", "303"}, 1000, "forwarded to the group")
        assert p["101"].phone.answer(world.net.now)
        p["101"].flush()
        world.run_until(lambda: p["301"].connected, 1000, "connected")
        _talk(world, "301", "101")
        assert heard(p["301"]) == {"101"} and heard(p["101"]) == {"301"}
        world.hangup("101")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_pickup_answers_a_call_ringing_at_another_phone_of_the_site(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _dial(world, "301", "101")                       # from the main host to site a
        world.run_until(lambda: _ringing(world) == {"101"}, 1000, "101 rings")
        _dial(world, "102", "*8")
        world.run_until(lambda: p["102"].connected and p["301"].connected, 1000, "102 picked it up")
        assert p["101"].causes() == [wire.CAUSE_PICKED_UP] and p["101"].idle
        _talk(world, "301", "102", "101")
        assert heard(p["301"]) == {"102"} and heard(p["102"]) == {"301"} and not p["101"].received
        world.hangup("102")
        _dial(world, "103", "104")                       # a local call (B3): the media path follows the pickup
        world.run_until(lambda: _ringing(world) == {"104"}, 1000, "104 rings")
        _dial(world, "101", "*8")
        world.run_until(lambda: p["101"].connected and p["103"].connected, 1000, "101 picked it up")
        _talk(world, "103", "101")
        assert heard(p["103"]) == {"101"} and heard(p["101"]) == {"103"}
        assert p["101"].phone.call.path == "local" and p["103"].phone.call.direct is not None
        world.hangup("103")
        _dial(world, "101", "302")                       # at the main host: its own phones of site c
        world.run_until(lambda: _ringing(world) == {"302"}, 1000, "302 rings")
        assert _refused(world, "102", "*8")[0] == wire.CAUSE_NO_ANSWER      # not 102's site: nothing to pick up
        _dial(world, "303", "*8")
        world.run_until(lambda: p["303"].connected and p["101"].connected, 1000, "303 picked it up")
        assert p["302"].causes() == [wire.CAUSE_PICKED_UP]
        _talk(world, "101", "303")
        assert heard(p["101"]) == {"303"} and heard(p["303"]) == {"101"}
        world.hangup("303")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_a_pickup_group_limits_who_picks_up_whose_calls(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "680", "strategy": "pickup", "members": ["101", "102"], "site": "a"})
        _dial(world, "301", "104")
        world.run_until(lambda: _ringing(world) == {"104"}, 1000, "104 rings")
        assert _refused(world, "101", "*8")[0] == wire.CAUSE_NO_ANSWER     # 104 is not in 101's pickup group
        _dial(world, "103", "*8")                                           # 103 is in none: the whole site
        world.run_until(lambda: p["103"].connected and p["301"].connected, 1000, "103 picked it up")
        world.hangup("103")
        _dial(world, "301", "102")
        world.run_until(lambda: _ringing(world) == {"102"}, 1000, "102 rings")
        _dial(world, "101", "*8")
        world.run_until(lambda: p["101"].connected and p["301"].connected, 1000, "101 picked it up")
        assert p["102"].causes() == [wire.CAUSE_PICKED_UP]
        _talk(world, "301", "101")
        assert heard(p["301"]) == {"101"} and heard(p["101"]) == {"301"}
        world.hangup("101")
        assert _refused(world, "303", "680")[0] == wire.CAUSE_NOT_PERMITTED   # its number rings nobody
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_pickup_of_a_group_call_stops_the_other_members(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "640", "strategy": "ring-all", "members": ["301", "302"]})
        _dial(world, "101", "640")
        world.run_until(lambda: _ringing(world) == {"301", "302"}, 1000, "the members ring")
        _dial(world, "303", "*8")
        world.run_until(lambda: p["303"].connected and p["101"].connected, 1000, "picked up")
        world.settle()
        assert sorted(p["301"].causes() + p["302"].causes()) == [wire.CAUSE_ANSWERED_ELSEWHERE, wire.CAUSE_PICKED_UP]
        _talk(world, "101", "303")
        assert heard(p["101"]) == {"303"} and heard(p["303"]) == {"101"}
        world.hangup("101")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_a_page_reaches_every_idle_phone_of_the_site_one_way_and_never_the_wan(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "700", "strategy": "page", "members": [], "site": "a"})
        world.call("103", "104")                          # busy: not paged
        wan_before = dict(world.main.stats.counters)
        _dial(world, "101", "700")
        world.run_until(lambda: p["101"].connected and p["102"].connected, 1000, "paged")
        assert p["102"].phone.muted and not _ringing(world)
        _talk(world, "101", "102", "103", "104")
        assert heard(p["102"]) == {"101"}                 # the pager's tone reaches the idle phone
        assert not p["102"].sent and not p["101"].received   # and nothing comes back
        assert heard(p["103"]) == {"104"} and heard(p["104"]) == {"103"}   # the busy ones were left alone
        counters = world.main.stats.counters
        for key in ("media in", "trunks in", "msg SETUP"):
            assert counters.get(key, 0) == wan_before.get(key, 0), key   # nothing of the page on the WAN
        assert world.a.switch.bytes_out_by_link.get("main", 0) == 0
        world.hangup("101")
        assert p["102"].causes() == [wire.CAUSE_NORMAL] and not p["102"].phone.muted
        world.hangup("103")
        assert _no_legs(world) and not world.net.errors
        assert _refused(world, "301", "700")[0] == wire.CAUSE_NOT_PERMITTED     # another site's page group
        _groups(world, {"number": "710", "strategy": "page", "members": [], "site": "c"})
        _dial(world, "301", "710")                     # a site without a remote host: the main host pages
        world.run_until(lambda: p["302"].connected and p["303"].connected, 1000, "site c paged")
        _talk(world, "301", "302", "303")
        assert heard(p["302"]) == {"301"} and heard(p["303"]) == {"301"} and not p["301"].received
        world.hangup("301")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_intercom_answers_by_itself_two_way_on_the_site_and_across(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _dial(world, "101", "*80102")
        world.run_until(lambda: p["101"].connected and p["102"].connected, 1000, "intercom on the site")
        assert not p["102"].phone.muted
        _talk(world, "101", "102")
        assert heard(p["101"]) == {"102"} and heard(p["102"]) == {"101"}
        world.hangup("101")
        _dial(world, "301", "*80103")
        world.run_until(lambda: p["301"].connected and p["103"].connected, 1000, "intercom across sites")
        _talk(world, "301", "103")
        assert heard(p["301"]) == {"103"} and heard(p["103"]) == {"301"}
        world.hangup("103")
        assert _refused(world, "301", "*80999")[0] == wire.CAUSE_UNKNOWN_EXTENSION
        settings = world.main.directory.features("303")
        settings["dnd"] = True
        world.main.directory.set_features("303", settings)
        assert _refused(world, "301", "*80303")[0] == wire.CAUSE_DND and not _rang(p["303"])
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_b4_groups_pickup_and_paging_among_the_sites_phones_without_the_main_host(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "650", "strategy": "ring-all", "members": ["102", "103", "301"]},
                {"number": "651", "strategy": "hunt", "members": ["301", "102", "103"], "ring_s": 3},
                {"number": "700", "strategy": "page", "members": [], "site": "a"})
        world.main_away()
        _dial(world, "101", "650")                      # 301 is at the main host: unreachable, skipped
        world.run_until(lambda: _ringing(world) == {"102", "103"}, 1000, "the site's members ring")
        assert p["103"].phone.answer(world.net.now)
        p["103"].flush()
        world.run_until(lambda: p["101"].connected, 1000, "connected")
        assert p["102"].causes() == [wire.CAUSE_ANSWERED_ELSEWHERE]
        _talk(world, "101", "103")
        assert heard(p["101"]) == {"103"} and heard(p["103"]) == {"101"} and p["101"].phone.call.direct
        world.hangup("101")
        _dial(world, "104", "651")                      # hunt: 301 skipped, 102 first
        world.run_until(lambda: _ringing(world) == {"102"}, 1000, "102 rings")
        world.run_until(lambda: _ringing(world) == {"103"}, 4000, "then 103")
        _dial(world, "101", "*8")                       # picked up from 103
        world.run_until(lambda: p["101"].connected and p["104"].connected, 1000, "picked up")
        assert p["103"].causes()[-1] == wire.CAUSE_PICKED_UP
        _talk(world, "104", "101")
        assert heard(p["104"]) == {"101"} and heard(p["101"]) == {"104"}
        world.hangup("104")
        _dial(world, "102", "700")
        world.run_until(lambda: all(p[n].connected for n in ("101", "102", "103", "104")), 1000, "paged")
        _talk(world, "101", "102", "103", "104")
        assert all(heard(p[n]) == {"102"} for n in ("101", "103", "104")) and not p["102"].received
        world.hangup("102")
        world.settle()
        assert world.a.status()["calls"] == [] and not world.a.switch.legs
        assert len(world.a.records.pending()) == 3      # recorded here, uploaded when the main host is back
        assert not world.net.errors
    finally:
        world.close()


def _reboot(world, number, index):
    """number's phone boots again (a new registration, at a new address): its host drops the old one."""
    world.add_phone(number, index)
    _with_tones(world)
    world.run_until(lambda: world.phones[number].phone.registered, 5000, number + " registered again")


def test_a_member_that_goes_away_leaves_the_group_call_and_the_page(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "660", "strategy": "ring-all", "members": ["101", "301"], "ring_s": 20},
                {"number": "700", "strategy": "page", "members": [], "site": "a"})
        _dial(world, "302", "660")
        world.run_until(lambda: _ringing(world) == {"101", "301"}, 1000, "the members ring")
        _reboot(world, "301", 50)                           # 301's registration goes while it rings
        assert world.main.groups.active and p["101"].phone.state == RINGING and p["301"].idle
        assert p["101"].phone.answer(world.net.now)
        p["101"].flush()
        world.run_until(lambda: p["302"].connected, 1000, "the one left answers")
        _talk(world, "302", "101")
        assert heard(p["302"]) == {"101"} and heard(p["101"]) == {"302"}
        world.hangup("302")
        assert _no_legs(world)
        _dial(world, "102", "700")
        world.run_until(lambda: all(p[n].connected for n in ("101", "102", "103", "104")), 1000, "paged")
        _reboot(world, "103", 51)                           # a paged phone goes: the page goes on
        assert p["103"].idle
        _talk(world, "101", "102", "104")
        assert heard(p["101"]) == {"102"} and heard(p["104"]) == {"102"}
        world.hangup("102")
        assert p["101"].causes()[-1] == wire.CAUSE_NORMAL and _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_b5_members_ringing_behind_a_remote_host_count_in_its_uplink_budget(tmp_path):
    world = _group_world(tmp_path, remote_settings={"uplink_kbps": 150})      # room for two calls
    try:
        p = world.phones
        _groups(world, {"number": "690", "strategy": "ring-all", "members": ["101", "102", "103"]})
        _dial(world, "301", "690")
        world.run(300)
        assert len(_ringing(world)) == 2 and world.main.stats.counters.get("msg RELEASE", 0) >= 1
        assert world.a.status()["uplink"]["calls"] == 2                       # the third: "network busy"
        answerer = sorted(_ringing(world))[0]
        assert p[answerer].phone.answer(world.net.now)
        p[answerer].flush()
        world.run_until(lambda: p["301"].connected, 1000, "connected")
        world.settle()
        assert world.a.status()["uplink"]["calls"] == 1 and len(_ringing(world)) == 0
        world.hangup("301")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_a_group_of_the_callers_own_site_is_a_local_call_granted_by_the_main_host(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "665", "strategy": "ring-all", "members": ["102", "103"]},
                {"number": "666", "strategy": "hunt", "members": ["103", "102"], "ring_s": 3, "overflow": "104"})
        before = dict(world.main.stats.counters)
        _dial(world, "101", "665")
        world.run_until(lambda: _ringing(world) == {"102", "103"}, 1000, "the site's members ring")
        assert p["102"].phone.answer(world.net.now)
        p["102"].flush()
        world.run_until(lambda: p["101"].connected, 1000, "connected")
        assert p["101"].phone.call.path == "local" and p["101"].phone.call.direct is not None   # B3
        _talk(world, "101", "102")
        assert heard(p["101"]) == {"102"} and heard(p["102"]) == {"101"}
        counters = world.main.stats.counters
        assert counters.get("msg LOCAL_REQUEST", 0) == before.get("msg LOCAL_REQUEST", 0) + 1
        assert counters.get("media in", 0) == before.get("media in", 0) and "msg SETUP" not in counters
        world.hangup("101")
        world.settle()
        world.run(200)
        record = world.main.directory.call_records(1)[0]
        assert (record.origin, record.caller, record.callee, record.path) == ("site-a", "101", "102", "local")
        _dial(world, "101", "666")                      # hunt, then the overflow on the site
        world.run_until(lambda: _ringing(world) == {"103"}, 1000, "103 rings")
        world.run_until(lambda: _ringing(world) == {"102"}, 4000, "then 102")
        world.run_until(lambda: _ringing(world) == {"104"}, 4000, "then the overflow")
        assert p["104"].phone.answer(world.net.now)
        p["104"].flush()
        world.run_until(lambda: p["101"].connected, 1000, "connected")
        _talk(world, "101", "104")
        assert heard(p["101"]) == {"104"} and heard(p["104"]) == {"101"}
        world.hangup("104")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_a_member_in_a_call_with_call_waiting_on_is_offered_the_group_call_as_a_waiting_call(tmp_path):
    """Call waiting on (the default): a member in a call is not skipped; its phone rings the group
    call on its second line (the waiting-call beep), beside the members that are free."""
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "630", "strategy": "ring-all", "members": ["101", "301"]})
        world.call("102", "101")                                   # 101 in a call, call waiting on
        _dial(world, "303", "630")
        world.run_until(lambda: p["101"].phone.other is not None and p["101"].phone.other.state == RINGING
                        and p["301"].phone.state == RINGING, 3000, "301 rings, 101 gets a waiting call")
        assert p["101"].phone.call.state != RINGING                # its first call goes on
        world.hangup("303")
        world.run_until(lambda: p["101"].phone.other is None and p["301"].phone.state != RINGING, 3000,
                        "the members stop ringing")
        world.hangup("102")
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_an_answer_by_a_member_a_pickup_and_a_page_count_as_the_calls_move(tmp_path):
    """host/switch.py `moves` counts each call set up, answered or ended: a cluster's node writes the call's key
    within 20 ms of it (host/cluster/node.py `_calls_due`), so that a node's successor finds the call as it is.
    An answer by a group's member, a pickup and a page's first phone answer the call as a phone's ANSWER does
    (`Switch.answered`): each counts once, at the main host here."""
    world = _group_world(tmp_path)
    try:
        p, switch = world.phones, world.main.switch
        _groups(world, {"number": "600", "strategy": "ring-all", "members": ["101", "302"]},
                {"number": "700", "strategy": "page", "members": [], "site": "c"})
        for caller, number, answer in (("303", "600", lambda: p["302"].phone.answer(world.net.now)),
                                       ("303", "302", lambda: _dial(world, "301", "*8") or True),
                                       ("303", "700", None)):
            before = switch.moves
            _dial(world, caller, number)
            world.run_until(lambda: _ringing(world) or p[caller].connected, 2000, "%s rings, or is paged" % number)
            world.settle()
            set_up = switch.moves
            call, = switch.calls.values()
            # set up (and a page answered by its first phone at once: two)
            assert set_up == before + (1 if answer else 2), (number, set_up, before)
            assert (call.answered_ms is None) is (answer is not None), number
            if answer is not None:
                assert answer()
                for e in p.values():
                    e.flush()
                world.run_until(lambda: call.answered_ms is not None, 2000, "%s answered" % number)
                world.settle()
                assert switch.moves == set_up + 1, number
            answered = switch.moves
            world.hangup(caller)
            assert not switch.calls and switch.moves == answered + 1, number
            world.run(200)
        assert not world.net.errors
    finally:
        world.close()
