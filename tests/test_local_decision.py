"""B3/B4: a site's local calls are decided alike by the main host (its SQLite directory) and, while
the main host is away, by the site's remote host (the copy of the site it was sent): the same
causes for the same calls, including calls that are not local at all.

Both answers come from one real directory through the real message paths, in one process
(tests/inprocess.py): with the main host up, a phone's call makes the remote host ask it
(LOCAL_REQUEST, LOCAL_GRANT/REFUSE); with the main host gone, the same calls are decided from the
cached copy. Site a: local calls allowed, at most one at a time; 103 is barred.
"""
from upbx.common import wire
from upbx.common.phone import Ended, Incoming
from tests.inprocess import World

# (caller, callee, with a local call 101 -> 102 already up)
CASES = [("101", "102", False), ("103", "101", False), ("104", "103", True), ("104", "103", False),
         ("102", "301", False), ("102", "999", False)]


def _call(world, caller, callee):
    """Dial and run a second: the cause the caller's phone shows, or "rings" (the callee rang)."""
    a, b = world.phones[caller], world.phones.get(callee)
    for end in world.phones.values():
        end.take()
    a.phone.dial(callee, world.net.now)
    world.run(1000)
    rang = b is not None and any(isinstance(e, Incoming) for e in b.take())
    ended = [e.cause for e in a.take() if isinstance(e, Ended)]
    if a.phone.call is not None:
        a.phone.hangup(world.net.now)
    world.run(200)
    return "rings" if rang and not ended else wire.CAUSE_TEXT[ended[0]] if ended else "nothing"


def _answers(world):
    out = {}
    for caller, callee, busy in CASES:
        if busy:
            world.phones["101"].phone.dial("102", world.net.now)
            world.run(300)
            world.phones["102"].phone.answer(world.net.now)
            world.run(300)
        out[(caller, callee, busy)] = _call(world, caller, callee)
        if busy:
            world.phones["101"].phone.hangup(world.net.now)
            world.run(300)
    return out


def test_main_host_and_cached_directory_decide_local_calls_alike(tmp_path):
    world = World(tmp_path, site_a={"local_calls": True, "local_call_quota": 1},
                  extensions=(("103", "a"), ("104", "a")), barred=("103",))
    try:
        world.start_remote()
        for i, number in enumerate(("101", "102", "103", "104")):
            world.add_phone(number, 20 + i)
        world.run(1000)
        assert all(end.phone.registered for end in world.phones.values())
        asked = world.main.stats.counters.get("msg LOCAL_REQUEST", 0)
        by_main = _answers(world)
        # the main host was asked about each local call: the four cases and the call that made 101 busy
        assert world.main.stats.counters["msg LOCAL_REQUEST"] - asked == 5
        world.main_away()
        world.run(3000)     # the phones' sessions are with the remote host: they stay registered
        by_cache = _answers(world)
    finally:
        world.close()
    assert by_main[("101", "102", False)] == by_cache[("101", "102", False)] == "rings"
    assert by_main[("103", "101", False)] == by_cache[("103", "101", False)] == "not permitted"
    assert by_main[("104", "103", True)] == by_cache[("104", "103", True)] == "network busy"
    assert by_main[("104", "103", False)] == by_cache[("104", "103", False)] == "rings"
    # not local: the main host routes them (no one registered at 301; 999 exists nowhere), and
    # without it they cannot be made: the cached copy never takes them for local calls
    assert (by_main[("102", "301", False)], by_cache[("102", "301", False)]) == ("unreachable", "unreachable")
    assert (by_main[("102", "999", False)], by_cache[("102", "999", False)]) == ("unknown extension", "unreachable")
