"""Directed pickup (**N, `!pickup N`) on the real host cores in one process (tests/inprocess.py):
the picker takes the call ringing at the one phone it names, whatever else rings and whatever
its pickup group, on site a's remote host (also while the main host is unreachable, B4) and at
the main host; who hears whom by each phone's tone (Goertzel). docs/features.md, Pickup.
"""
from upbx.common import wire
from tests.test_groups import _dial, _group_world, _groups, _no_legs, _ringing, _talk, heard
from tests.test_routing import _refused


def test_directed_pickup_takes_the_named_phones_call_not_the_longest_ringing(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        _groups(world, {"number": "680", "strategy": "pickup", "members": ["101", "102"], "site": "a"})
        _dial(world, "301", "103")                       # rings first: `*8` would take this one
        world.run_until(lambda: _ringing(world) == {"103"}, 1000, "103 rings")
        _dial(world, "302", "104")                       # 104 is not in 101's pickup group
        world.run_until(lambda: _ringing(world) == {"103", "104"}, 1000, "104 rings")
        assert _refused(world, "101", "**102")[0] == wire.CAUSE_NO_ANSWER    # 102 does not ring
        assert _refused(world, "101", "**999")[0] == wire.CAUSE_NOT_PERMITTED  # not a phone of the site
        assert _refused(world, "101", "**301")[0] == wire.CAUSE_NOT_PERMITTED  # another site's
        _dial(world, "101", "**104")
        world.run_until(lambda: p["101"].connected and p["302"].connected, 1000, "101 picked up 104's call")
        assert p["104"].causes() == [wire.CAUSE_PICKED_UP] and p["104"].idle
        assert _ringing(world) == {"103"} and p["301"].phone.call is not None   # 103's call still rings
        _talk(world, "302", "101", "103", "104")
        assert heard(p["302"]) == {"101"} and heard(p["101"]) == {"302"} and not p["104"].received
        world.hangup("101")
        world.hangup("301")
        # at the main host: its phones of site c
        _dial(world, "101", "302")
        world.run_until(lambda: _ringing(world) == {"302"}, 1000, "302 rings")
        assert _refused(world, "303", "**104")[0] == wire.CAUSE_NOT_PERMITTED   # site a's phone
        assert _refused(world, "303", "**9")[0] == wire.CAUSE_UNKNOWN_EXTENSION
        _dial(world, "303", "**302")
        world.run_until(lambda: p["303"].connected and p["101"].connected, 1000, "303 picked up 302's call")
        assert p["302"].causes()[-1] == wire.CAUSE_PICKED_UP
        _talk(world, "101", "303")
        assert heard(p["101"]) == {"303"} and heard(p["303"]) == {"101"}
        world.hangup("303")
        world.run(500)
        records = world.main.directory.call_records()
        assert ("101", "303", "normal clearing") in [(r.caller, r.callee, r.cause) for r in records]   # who took it
        assert _no_legs(world) and not world.net.errors
    finally:
        world.close()


def test_directed_pickup_of_a_local_call_without_the_main_host(tmp_path):
    world = _group_world(tmp_path)
    try:
        p = world.phones
        world.main_away()                                # B4: site a's remote host alone
        _dial(world, "103", "104")                       # local, phone to phone once answered
        world.run_until(lambda: _ringing(world) == {"104"}, 1000, "104 rings")
        assert _refused(world, "102", "**101")[0] == wire.CAUSE_NO_ANSWER     # 101 does not ring
        _dial(world, "102", "**104")
        world.run_until(lambda: p["102"].connected and p["103"].connected, 1000, "102 picked up 104's call")
        assert p["104"].causes()[-1] == wire.CAUSE_PICKED_UP
        _talk(world, "103", "102")
        assert heard(p["103"]) == {"102"} and heard(p["102"]) == {"103"}
        assert p["102"].phone.call.path == "local"       # the new pair talks phone to phone
        world.hangup("103")
        assert world.a.status()["calls"] == []
        assert [(r["caller"], r["callee"], r["cause"]) for r in world.a.records.pending()] == [
            ("103", "102", "normal clearing")]               # kept for upload when the main host is back
        assert not world.net.errors
    finally:
        world.close()
