"""`upbx demo features`' alaw scenario (docs/features.md, A-law phones): an A-law handset
(`upbx phone --codec alaw`) hears music on hold and a conference's mix as a mu-law one does, its
host converting at the edge. What each speaker played, 100 ms at a time (Goertzel on its
recording), and how clean the music was: an unconverted frame plays the notes under loud
distortion, so the share of each music window's energy in its note (`music_note_share`, 1.0 for a
pure note) tells converted from garbled.
"""
import struct
import wave

from upbx.host.moh import NOTES_HZ
from upbx.tools.demo_conference import three_way
from upbx.tools.lab import TONE_WINDOW, frequencies_heard, goertzel_power

ALAW = ("--codec", "alaw")


def _inner(labels):
    out = []
    for label in labels:
        if label != "quiet" and (not out or out[-1] != label):
            out.append(label)
    return out


def note_share(path, notes=NOTES_HZ):
    """The median, over the 100 ms windows where a note is loudest, of the note's share of the
    window's energy (a pure tone: about 1; the default music, mu-law played as A-law: 0.89)."""
    with wave.open(path) as w:
        data = w.readframes(w.getnframes())
    shares = []
    for start in range(0, len(data) - 2 * TONE_WINDOW + 1, 2 * TONE_WINDOW):
        block = data[start:start + 2 * TONE_WINDOW]
        energy = sum(v * v for v in struct.unpack_from("<%dh" % TONE_WINDOW, block))
        if energy / TONE_WINDOW < 1e4:
            continue
        power = max(goertzel_power(block, TONE_WINDOW, hz) for hz in notes)
        if power > 1e10:
            shares.append(power / (energy * TONE_WINDOW / 2.0))
    shares.sort()
    return round(shares[len(shares) // 2], 3) if shares else 0.0


def held_alaw_phone(lab, seconds, holder_no="101", held_no="301"):
    """holder (mu-law, 1000 Hz) calls held (A-law, 1400 Hz), holds it 3 s and resumes: held's speaker
    plays holder, the music's notes, holder; holder's plays held (nothing while it holds)."""
    from upbx.tools.demo_features import HOLD_LABELS, after_ringback, hold_and_resume
    held, holder, connected, held_ok, resumed, ended = hold_and_resume(lab, holder_no, held_no, seconds,
                                                                        "alaw-hold", ALAW)
    held_heard = _inner(frequencies_heard(held.wav, HOLD_LABELS))
    holder_heard = _inner(after_ringback(frequencies_heard(holder.wav, HOLD_LABELS)))
    share = note_share(held.wav, NOTES_HZ + (1000,))
    ok = (connected and held_ok and resumed and ended and held_heard == ["holder", "music", "holder"]
          and holder_heard == ["held party"] and share > 0.97)   # unconverted: 0.89 (docs/features.md)
    return {"ok": ok, "call": "%s (mu-law) -> %s (A-law), held by %s" % (holder_no, held_no, holder_no),
            "alaw_phone_heard": held_heard, "holder_heard": holder_heard, "music_note_share": share}


def alaw(lab, seconds):
    """Music on hold for an A-law phone at the main host (101 holds 301), and a conference at site
    A with an A-law party (101 with 102 set to A-law and 301): each hears the other two."""
    hold = held_alaw_phone(lab, seconds)
    conference = three_way(lab, seconds, "101", "102", "301", "site-a", "relay", tag="alaw-conf",
                           phone_args={"102": ALAW})
    return {"ok": hold["ok"] and conference["ok"], "hold": hold,
            "conference": {k: conference[k] for k in ("ok", "mixed_by", "heard", "heard_both_others_ms",
                                                      "own_tone_peak_share")}}
