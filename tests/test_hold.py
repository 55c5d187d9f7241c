"""Hold and music on hold on the real host cores in one process (tests/inprocess.py): who hears
what, by Goertzel on the frames each phone received (docs/features.md). The holder's host plays
the music; the held party's voice stops at its first host; resume restores both directions;
B5 keeps a held call's place in the uplink budget. tests/test_features_handset.py plays the
same with firmware phones and checks their speakers.
"""
from upbx.common import wire
from upbx.common.g711 import ulaw_decode
from upbx.common.media import call_kbps
from upbx.host.moh import NOTES_HZ, MusicOnHold
from upbx.tools.lab import goertzel_power
from upbx.common.login import UP
from tests.inprocess import MAIN, attach_host
from tests.test_routing import _flowing, _refused, _world


def _notes(payloads):
    """The music-on-hold notes heard in received G.711 frames, in order, runs collapsed."""
    notes = []
    for payload in payloads:
        if len(payload) != wire.VOICE_BYTES:
            continue
        pcm = ulaw_decode(payload)
        powers = {hz: goertzel_power(pcm, wire.VOICE_BYTES, hz) for hz in NOTES_HZ[:3]}
        best = max(powers, key=powers.get)
        if powers[best] > 1e10 and powers[best] > 10 * sum(p for hz, p in powers.items() if hz != best):
            if not notes or notes[-1] != best:
                notes.append(best)
    return notes


def _voice(payloads, number):
    return [p for p in payloads if p.startswith(number.encode() + b" ")]


def test_the_default_music_is_the_arpeggio_it_says():
    moh = MusicOnHold()
    assert len(moh.frames) == 80 and all(len(f) == wire.VOICE_BYTES for f in moh.frames)   # 1.6 s
    assert _notes(moh.frames) == [523.25, 659.25, 783.99, 659.25]


def _hold_and_resume(world, holder, held):
    p = world.phones
    world.run(200)
    assert p[holder].phone.hold(world.net.now)
    p[holder].flush()
    world.run(100)
    p[holder].received, p[held].received, p[held].sent = [], [], []
    world.run(2000)
    heard = _notes(p[held].received)
    assert heard[:4] in ([523.25, 659.25, 783.99, 659.25], [659.25, 783.99, 659.25, 523.25]) and len(heard) >= 4, heard
    assert not _voice(p[held].received, holder)                        # the music, not the holder
    assert p[held].sent and not p[holder].received                     # the held party is not heard
    assert p[holder].phone.resume(world.net.now)
    p[holder].flush()
    world.run(200)
    for end in (p[holder], p[held]):
        end.sent, end.received = [], []
    world.run(600)
    assert _flowing(p[holder], p[held]) and not _notes(p[held].received)   # two-way voice again, no music


def test_held_party_hears_music_from_the_holders_host_on_every_path(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        world.call("101", "301")                      # B1: site a's remote host plays, the main host relays
        _hold_and_resume(world, "101", "301")
        assert world.a.stats.counters["music on hold frames"] >= 100
        assert world.main.stats.counters.get("media held", 0) > 0      # 301's voice stopped at its host
        _hold_and_resume(world, "301", "101")         # the main host plays to site a's phone
        world.hangup("101")
        world.call("102", "101")                      # B3: phone to phone; the music comes from the host
        _hold_and_resume(world, "102", "101")
        world.hangup("102")
        assert not world.net.errors
    finally:
        world.close()


def test_hold_out_of_turn_is_refused_and_a_held_call_ends_cleanly(tmp_path):
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        p = world.phones
        assert not p["101"].phone.hold(world.net.now)                  # no call
        world.call("101", "301")
        assert p["101"].phone.hold(world.net.now) and not p["101"].phone.hold(world.net.now)
        p["101"].flush()
        world.run(100)
        dropped = world.a.stats.drops.get("message out of turn", 0)
        assert p["301"].phone.hold(world.net.now)                      # both may not hold: the host says no
        p["301"].flush()
        world.run(100)
        assert world.main.stats.drops.get("message out of turn", 0) == 1
        assert world.a.stats.drops.get("message out of turn", 0) == dropped
        world.hangup("301")                                             # the held party hangs up
        assert p["101"].idle and not p["101"].phone.holding and not world.a.held and not world.main.held
        assert world.a.status()["calls"] == [] and world.main.status()["calls"] == []
        assert not world.net.errors
    finally:
        world.close()


def _long_hold(world, holder, held, others):
    """holder holds for 40 s and resumes: both calls' phones then hear each other, every frame, in order."""
    p = world.phones
    assert p[holder].phone.hold(world.net.now)
    p[holder].flush()
    world.run(40000)
    assert p[holder].phone.resume(world.net.now)
    p[holder].flush()
    world.run(200)
    ends = [p[n] for n in (holder, held) + others]
    for end in ends:
        end.sent, end.received = [], []
    world.run(600)
    assert _flowing(p[holder], p[held]), (len(p[holder].received), len(p[held].received), world.a.stats.drops)
    for a, b in zip(others[::2], others[1::2]):
        assert _flowing(p[a], p[b]), (a, b, len(p[a].received), len(p[b].received))


def test_a_hold_longer_than_a_timestamps_reach_leaves_every_call_flowing_after_it(tmp_path):
    """A frame carries 16 bits of its millisecond timestamp, extended against the last one the receiver took
    (docs/protocol.md section 5): a leg silent for more than 32.8 s could not be followed. A held call's holder
    sends nothing and hears nothing, so until session 23 a hold of more than 32.8 s (once the call's timestamps
    were past the first 32.8 s, where extension happens to come out right) left the call silent both ways after
    the resume, for good; and a trunk frame carrying its frames failed as a whole, so every call the main host
    sent site a went silent with it. Now the holder's phone sends a comfort-noise frame each second (firmware/app.py
    capture), each host sends one towards the holder each second in place of the held party's voice
    (Switch.forward), and the holder's phone opens what reaches it without playing it. Each way round: 101 at site
    a holds 301 (site a's remote host plays the music), 301 at the main host holds 101, and 102 holds 101 on the
    LAN (B3); another call between site a and the main host goes on meanwhile."""
    world = _world(tmp_path, ("101", "102", "301", "302"))
    try:
        p = world.phones
        world.call("101", "301")
        world.call("102", "302")
        world.run(40000)          # past the first 32.8 s of the calls' timestamps
        _long_hold(world, "101", "301", ("102", "302"))
        _long_hold(world, "301", "101", ("102", "302"))
        assert world.main.stats.counters["hold keepalives"] >= 70 and world.a.stats.counters["hold keepalives"] >= 30
        assert not world.main.stats.drops.get("trunk rejected") and not world.a.stats.drops.get("trunk rejected")
        world.hangup("102")
        world.hangup("101")
        world.call("102", "101")  # B3: the phones send each other their media
        world.run(40000)
        _long_hold(world, "102", "101", ())
        assert not world.net.errors
    finally:
        world.close()


def test_b5_a_held_call_keeps_its_place_in_the_uplink_budget(tmp_path):
    assert call_kbps(2) <= 150 < call_kbps(3)
    world = _world(tmp_path, ("101", "102", "103", "301", "302", "303"), remote_settings={"uplink_kbps": 150})
    try:
        p = world.phones
        world.call("101", "301")
        world.call("102", "302")
        assert p["101"].phone.hold(world.net.now)
        p["101"].flush()
        world.run(500)
        assert world.a.status()["uplink"]["calls"] == 2                # held: still one of the two
        assert sorted((c["caller"], c["held"]) for c in world.a.status()["calls"]) == [("101", True), ("102", False)]
        assert _refused(world, "103", "303")[0] == wire.CAUSE_NETWORK_BUSY
        assert p["101"].phone.resume(world.net.now)                    # so resuming never needs admission
        p["101"].flush()
        world.run(300)
        for end in p.values():
            end.sent, end.received = [], []
        world.run(500)
        assert _flowing(p["101"], p["301"]) and _flowing(p["102"], p["302"])
        assert not world.net.errors
    finally:
        world.close()


def _tone_wav(path, hz, seconds):
    import math
    import struct
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000)))
                               for i in range(int(8000 * seconds))))


def _heard(payloads, hz):
    """Frames in which hz dominates the notes of the default music."""
    n = 0
    for payload in payloads:
        pcm = ulaw_decode(payload)
        power = goertzel_power(pcm, wire.VOICE_BYTES, hz)
        if power > 1e10 and power > 10 * sum(goertzel_power(pcm, wire.VOICE_BYTES, f) for f in NOTES_HZ[:3]):
            n += 1
    return n


def test_the_operators_music_reaches_every_host_and_survives_a_restart_and_the_main_hosts_absence(tmp_path):
    from upbx.host.directory import Directory
    from upbx.host.moh import wav_ulaw
    world = _world(tmp_path, ("101", "102", "301"))
    try:
        p = world.phones
        _tone_wav(tmp_path / "music.wav", 1000, 2.0)
        with Directory(tmp_path / "main.sqlite") as d:                 # as `upbx admin moh set` does
            version = d.set_music_on_hold("music.wav", wav_ulaw(str(tmp_path / "music.wav")))
        world.run_until(lambda: world.a.music_version == version and world.main.music_version == version, 5000,
                        "the music reached both hosts")
        assert world.main.music_acked == {"site-a": version}
        for holder, held in (("101", "301"), ("301", "101")):          # the remote host's, then the main host's
            world.call(holder, held)
            assert p[holder].phone.hold(world.net.now)
            p[holder].flush()
            world.run(100)
            p[held].received = []
            world.run(1000)
            assert _heard(p[held].received, 1000) >= 45 and not _notes(p[held].received), holder
            world.hangup(holder)
        world.main_away()                                               # the site's local calls keep it
        world.call("101", "102")
        assert p["101"].phone.hold(world.net.now)
        p["101"].flush()
        world.run(100)
        p["102"].received = []
        world.run(1000)
        assert _heard(p["102"].received, 1000) >= 45
        world.hangup("101")
        attach_host(world.net, world.main, MAIN)
        world.run_until(lambda: world.a.login.state == UP, 30000, "site a logged in again")
        sent = world.main.stats.counters.get("music copies sent", 0)
        world.restart_remote()                                          # kept beside its site cache
        world.run(1000)
        assert world.a.login.state == UP and world.a.music_version == version
        assert world.a.moh.name == "version %d" % version and len(world.a.moh.frames) == 100
        assert world.main.stats.counters.get("music copies sent", 0) == sent    # it had it: not sent again
        assert not world.net.errors
    finally:
        world.close()
