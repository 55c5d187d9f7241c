"""A-law phones on the real host cores in one process (tests/inprocess.py): music on hold and the
conference mixer reach an A-law phone as A-law, and what it sends is heard by mu-law phones
(docs/features.md, A-law phones). Each phone sends its own tone in its own law; Goertzel on what
each received, decoded with the law of its phone, says whom it hears (decoded with the other law,
the same frames are noise: the tests would fail if the host did not convert).
"""
import math
import struct

from upbx.common import wire
from upbx.common.g711 import alaw_decode, alaw_encode, ulaw_decode
from upbx.host.moh import NOTES_HZ, MusicOnHold
from upbx.tools.lab import goertzel_power
from tests import test_conference as conf
from tests.inprocess import MAIN, SITE_A, World
from tests.test_conference import TONES, ToneEnd, _three_way

ALAW = ("102", "301")            # these phones are set to A-law


class LawEnd(ToneEnd):
    """A ToneEnd in its phone's law: A-law phones send A-law and name it (Phone.codec)."""

    def __init__(self, net, number, secret, address, host):
        ToneEnd.__init__(self, net, number, secret, address, host)
        if number in ALAW:
            self.phone.codec = wire.CODEC_ALAW
            pcm = struct.pack("<8000h", *(int(4000 * math.sin(2 * math.pi * TONES[number] * i / 8000))
                                          for i in range(8000)))
            self.frames = [alaw_encode(pcm[i:i + 320]) for i in range(0, 16000, 320)]


def _decode(number, payload):
    return alaw_decode(payload) if number in ALAW else ulaw_decode(payload)


def _world(tmp_path, numbers):
    world = World(tmp_path, extensions=(("103", "a"), ("104", "a")))
    world.start_remote()
    for i, number in enumerate(numbers):
        host = SITE_A if number.startswith("1") else MAIN
        end = LawEnd(world.net, number, world.secrets[number], ("198.18.2.%d" % (i + 1), 40000), host)
        world.phones[number] = end
        end.phone.start(world.net.now)
        end.flush()
    world.run_until(lambda: all(e.phone.registered for e in world.phones.values()), 3000, "registered")
    return world


def _notes(number, payloads):
    """The music-on-hold notes in the frames number received, runs collapsed (tests/test_hold.py's)."""
    notes = []
    for payload in payloads:
        if len(payload) != wire.VOICE_BYTES:
            continue
        pcm = _decode(number, payload)
        powers = {hz: goertzel_power(pcm, wire.VOICE_BYTES, hz) for hz in NOTES_HZ[:3]}
        best = max(powers, key=powers.get)
        if powers[best] > 1e10 and powers[best] > 10 * sum(p for hz, p in powers.items() if hz != best):
            if not notes or notes[-1] != best:
                notes.append(best)
    return notes


def _match_db(payloads, decode):
    """The median over received frames of the best signal-to-difference ratio (dB) between the
    frame, decoded by decode, and a frame of the music on hold."""
    music = [struct.unpack("<160h", ulaw_decode(f)) for f in MusicOnHold().frames]
    ratios = []
    for payload in payloads[:40]:
        if len(payload) != wire.VOICE_BYTES:
            continue
        pcm = struct.unpack("<160h", decode(payload))
        best = max(sum(r * r for r in ref) / max(1, sum((a - r) ** 2 for a, r in zip(pcm, ref))) for ref in music)
        ratios.append(10 * math.log10(best))
    ratios.sort()
    return ratios[len(ratios) // 2]


def _power(number, payloads, hz):
    powers = sorted(goertzel_power(_decode(number, p), wire.VOICE_BYTES, hz)
                    for p in payloads if len(p) == wire.VOICE_BYTES)
    assert len(powers) >= 20, "too few frames received: %d" % len(powers)
    return powers[len(powers) // 2]


def _hears(world, number, others, ms=1000):
    end = world.phones[number]
    end.received = []
    world.run(ms)
    for other, hz in TONES.items():
        power = _power(number, end.received, hz)
        if other in others:
            assert power > conf.HEARD, "%s does not hear %s (%.3g)" % (number, other, power)
        else:
            assert power < conf.NOT_HEARD, "%s hears %s (%.3g)" % (number, other, power)


def _held_hears_music(world, holder, held):
    p = world.phones
    assert p[holder].phone.hold(world.net.now)
    p[holder].flush()
    world.run(100)
    p[held].received = []
    world.run(2000)
    notes = _notes(held, p[held].received)
    assert len(notes) >= 4 and set(notes) == set(NOTES_HZ[:3]), notes
    # frame for frame the music's own samples: decoded in the phone's law the frames match the
    # music (within G.711's quantisation); in the other law they do not (what an unconverted frame
    # sounds like: the notes are there, under loud distortion)
    right = _match_db(p[held].received, lambda f: _decode(held, f))
    wrong = _match_db(p[held].received, ulaw_decode if held in ALAW else alaw_decode)
    assert right > 30 and wrong < 15, (right, wrong)
    assert p[holder].phone.resume(world.net.now)
    p[holder].flush()
    world.run(200)


def test_an_alaw_phone_hears_music_on_hold_and_talks_with_mu_law_phones_on_every_path(tmp_path):
    world = _world(tmp_path, ("101", "102", "301", "302"))
    try:
        world.call("101", "301")                 # B1: site a's host plays, the main host converts for 301
        _held_hears_music(world, "101", "301")
        _hears(world, "301", {"101"})
        _hears(world, "101", {"301"})
        _held_hears_music(world, "301", "101")   # the A-law phone holds: the mu-law one hears the music
        world.hangup("101")
        world.call("102", "101")                 # a site's call between an A-law and a mu-law phone:
        assert world.phones["102"].phone.frame_to is None   # through its remote host (which converts)
        _hears(world, "102", {"101"})
        _hears(world, "101", {"102"})
        _held_hears_music(world, "101", "102")   # site a's host plays to its A-law phone
        world.hangup("102")
        world.call("302", "301")                 # at the main host
        _held_hears_music(world, "302", "301")
        world.hangup("301")
        assert world.a.stats.drops.get("bad codec", 0) == 0 and not world.net.errors
    finally:
        world.close()


def test_a_conference_with_an_alaw_party_each_hears_the_other_two(tmp_path):
    world = _world(tmp_path, ("101", "102", "103", "301"))
    try:
        _three_way(world, "101", "102", "103")   # mixed by site a's host: 102 is A-law
        for number in ("101", "102", "103"):
            _hears(world, number, {"101", "102", "103"} - {number})
        world.hangup("101")
        world.hangup("102")                      # one left: its call ends
        world.run(200)
        assert all(e.idle for e in world.phones.values())
        _three_way(world, "103", "301", "101")   # mixed by site a's host, 301 (A-law) at the main host
        for number in ("103", "301", "101"):
            _hears(world, number, {"103", "301", "101"} - {number})
        assert not world.net.errors
    finally:
        world.close()
