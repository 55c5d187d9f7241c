"""B7 dynamic addresses on the real hosts in one process (tests/inprocess.py: site a's router is
a NAT whose public address the test moves; a phone at the main host moves too), on a virtual
clock: a call in progress loses at most a second of audio, the main host learns the new address
from the first authenticated packet, an idle site stays reachable within a keepalive plus a
resend, and nobody logs in again. tests/test_nat.py does the same through real nftables NAT in
network namespaces, with firmware phones, and asserts the audio and the paths.
"""
from upbx.common import wire
from upbx.common.phone import Incoming
from tests.inprocess import MAIN, World

KEEPALIVE_S = 3      # the remote host's idle keepalive, as in tests/test_nat.py
RECOVERY_BOUND_MS = 1000
NEW_A = ("198.18.1.101", 4570)


def _world(tmp_path):
    world = World(tmp_path, remote_settings={"keepalive_s": KEEPALIVE_S})
    world.start_remote()
    for i, number in enumerate(("101", "102", "301", "302")):
        world.add_phone(number, i + 1)
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
    return world


def _site_a_at_main(world):
    return [h["address"] for h in world.main.status()["remote_hosts"] if h["name"] == "site-a"]


def _lost(sender, receiver):
    """Frames sender sent that receiver never got; what arrived came once, in order."""
    got = receiver.received
    assert got == [f for f in sender.sent if f in set(got)], "duplicated or out of order"
    return len(sender.sent) - len(got)


def test_b7_calls_in_progress_recover_within_a_second_and_nobody_logs_in_again(tmp_path):
    world = _world(tmp_path)
    try:
        p = world.phones
        world.call("101", "301")
        world.run(1000)
        # site a's public address changes in the middle of a relayed call
        world.move_site_a(NEW_A)
        took = world.run_until(lambda: _site_a_at_main(world) == ["%s:%d" % NEW_A], RECOVERY_BOUND_MS,
                               "main learned site a's new address")
        world.run(1000)
        for sender, receiver in (("101", "301"), ("301", "101")):
            lost = _lost(p[sender], p[receiver])
            assert lost * 20 <= RECOVERY_BOUND_MS, (sender, lost)
            print("site a moved: main learned it in %d ms; %s -> %s lost %d frames" % (took, sender, receiver, lost))
        # a phone at the main host moves (its own NAT) in the middle of the same call
        world.move_phone("301", ("198.18.3.104", 40001))
        world.run_until(lambda: any(x["address"] == "198.18.3.104:40001" for x in world.main.status()["phones"]),
                        RECOVERY_BOUND_MS, "main learned 301's new address")
        world.run(1000)
        for sender, receiver in (("101", "301"), ("301", "101")):
            assert _lost(p[sender], p[receiver]) * 20 <= 2 * RECOVERY_BOUND_MS, (sender, receiver)
        assert p["101"].connected and p["301"].connected
        assert world.a.status()["main"]["logins"] == 1 and p["301"].phone.login.logins == 1
        assert not world.net.errors
    finally:
        world.close()


def test_b7_an_idle_site_that_moved_is_reachable_within_a_keepalive_and_a_resend(tmp_path):
    world = _world(tmp_path)
    try:
        p = world.phones
        world.run(500)                            # idle: the last keepalive went out from the old address
        world.move_site_a(("198.18.1.103", 4570))
        started = world.net.now
        assert p["302"].phone.dial("101", world.net.now)
        p["302"].flush()
        # the SETUP to the old address is lost; main resends it to the address a's next keepalive shows
        took = world.run_until(lambda: [e for e in p["101"].take() + p["101"].log if isinstance(e, Incoming)],
                               (KEEPALIVE_S + 4.5) * 1000, "101 rang")
        print("idle site moved: 101 rang %d ms after the call was dialled (keepalive %d s)" % (took, KEEPALIVE_S))
        assert _site_a_at_main(world) == ["198.18.1.103:4570"]
        p["101"].phone.answer(world.net.now)
        p["101"].flush()
        world.run_until(lambda: p["101"].connected and p["302"].connected, 1000, "connected")
        world.run(500)
        assert _lost(p["302"], p["101"]) <= 1 and _lost(p["101"], p["302"]) <= 1 and p["101"].sent
        assert world.a.status()["main"]["logins"] == 1
        assert world.net.now - started <= (KEEPALIVE_S + 4.5) * 1000 + 1500
        assert not world.net.errors
    finally:
        world.close()
