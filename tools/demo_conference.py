"""`upbx demo features`' conference scenario (docs/features.md, Conference): firmware phones, real
daemons, and what each phone's speaker played, found by Goertzel 100 ms at a time.

Each phone sends its own tone; in the conference every speaker must play the other two tones
together and never the phone's own.
"""
import struct
import wave

from upbx.tools.lab import TONE_WINDOW, goertzel_power

PRESENT = 0.1     # a tone's share of a window's energy for it to count as heard (two equal tones: ~0.5)
ABSENT = 0.01
WAIT_S = 60       # the most a wait for a state may take (tools/demo_features.py's, which imports this module)


def tone_set_label(block, tones):
    """One 100 ms window's label: the names of the tones heard together ({name: hz}) as "a+b",
    "quiet" where nothing is loud enough, other sounds "other"; and each tone's share of it."""
    energy = sum(v * v for v in struct.unpack_from("<%dh" % TONE_WINDOW, block))
    if energy / TONE_WINDOW < 1e4:
        return "quiet", {}
    full = energy * TONE_WINDOW / 2.0     # the Goertzel power of a pure tone with all the energy
    shares = {name: goertzel_power(block, TONE_WINDOW, hz) / full for name, hz in tones.items()}
    return "+".join(sorted(name for name, share in shares.items() if share > PRESENT)) or "other", shares


def tone_sets(path, tones, min_windows=3):
    """What a WAV holds, 100 ms at a time (tone_set_label), runs shorter than min_windows left
    out, runs collapsed: [[label, windows], ...]. Also the largest share any window gave each tone."""
    with wave.open(path) as w:
        data = w.readframes(w.getnframes())
    runs = []
    peak = {name: 0.0 for name in tones}
    for start in range(0, len(data) - 2 * TONE_WINDOW + 1, 2 * TONE_WINDOW):
        label, shares = tone_set_label(data[start:start + 2 * TONE_WINDOW], tones)
        for name, share in shares.items():
            peak[name] = max(peak[name], share)
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    out = []
    for label, n in runs:
        if n >= min_windows and (not out or out[-1][0] != label):
            out.append([label, n])
    return out, peak


def conference(lab, seconds):
    """101 (site A) calls 102 (site A, phone to phone), holds it, calls 301 (at the main host,
    relayed) and joins the two calls with `!conference`: site A's remote host mixes. Each phone
    sends its own tone; each speaker must then play the other two and never its own. Then 102
    hangs up and 101 and 301 still hear each other."""
    return three_way(lab, seconds, "101", "102", "301", "site-a", "relay")


def three_way(lab, seconds, holder_no, first_no, second_no, mixer, second_path, tag="conf", phone_args=None):
    """holder calls first, holds, calls second (connected on second_path), `!conference`; the
    daemon `mixer` must mix. What each speaker played, and the conference as `upbx status` shows it.
    phone_args: {number: more `upbx phone` arguments} (e.g. an A-law phone: ("--codec", "alaw"))."""
    tones = {holder_no: 1000, first_no: 1400, second_no: 1800}
    labels = {n: (hz,) for n, hz in tones.items()}            # one phone's voice alone (tools/lab.py)

    def mixed(block):                                         # the tones heard together (tone_set_label)
        return tone_set_label(block, tones)[0]
    others = {n: "+".join(sorted(set(tones) - {n})) for n in tones}
    phones, missed = {}, []

    def hears(step, pairs, marks, ms, kind=labels):
        ok = True
        for listener, label in pairs:
            if phones[listener].wait_heard(kind, label, ms, marks[listener]) is None:
                missed.append((step, "%s did not hear %s" % (listener, label)))
                ok = False
        return ok

    def marks():
        return {n: p.mark() for n, p in phones.items()}
    try:
        for number, hz in tones.items():
            phones[number] = _console(lab, number, "%s-%s" % (tag, number), "--send", "tone:%d" % hz,
                                      *(phone_args or {}).get(number, ()))
        holder, first, second = phones[holder_no], phones[first_no], phones[second_no]
        m = marks()
        holder.command("!call " + first_no)
        first.wait_line("incoming call")
        first.command("!answer")
        first_up = holder.wait_line("connected") and hears("first call", [(holder_no, first_no), (first_no, holder_no)], m, 500)
        holder.command("!hold")
        held = holder.wait_line("call held")
        m = marks()
        holder.command("!call " + second_no)
        second.wait_line("incoming call")
        second.command("!answer")
        second_up = (holder.wait_line("connected (%s)" % second_path)
                     and hears("second call", [(holder_no, second_no), (second_no, holder_no)], m, 500))
        m = marks()
        holder.command("!conference")
        joined = holder.wait_line("other line ended: joined conference")   # the held line is the conference's
        try:
            lab.wait_for(lambda: len(lab.status(mixer).get("conferences", [])) == 1, "%s shows the conference" % mixer,
                         timeout=WAIT_S)
        except TimeoutError:
            missed.append(("conference", "%s shows no conference" % mixer))
        shown = lab.status(mixer).get("conferences", [])
        # each hears the other two together, without a break, for the 2 s the check asks and a bit
        mixed_ok = hears("conference", [(n, others[n]) for n in tones], m, int(max(2.5, seconds) * 1000), mixed)
        m = marks()
        first.command("!hangup")
        left = (first.wait_line("call ended: normal clearing")
                and hears("%s left" % first_no, [(holder_no, second_no), (second_no, holder_no)], m, 1000))
        holder.command("!hangup")
        ended = second.wait_line("call ended: normal clearing")
    finally:
        for phone in phones.values():
            phone.quit()
    heard, own_peak = {}, {}
    for number, phone in phones.items():
        heard[number], peak = tone_sets(phone.wav, tones)
        own_peak[number] = round(peak[number], 4)
    # the longest run of windows in which each heard both others together
    both_ms = {n: max([w for label, w in heard[n] if label == others[n]] or [0]) * 100 for n in tones}
    after = {n: [label for label, _ in heard[n] if label != "quiet"][-1:] for n in (holder_no, second_no)}
    ok = (first_up and held and second_up and joined and mixed_ok and left and ended
          and len(shown) == 1 and sorted(shown[0]["parties"]) == sorted(tones)
          and all(both_ms[n] >= 2000 for n in tones)          # each heard both others for 2 s or more
          and all(own_peak[n] < ABSENT for n in tones)        # and never itself
          and after == {holder_no: [second_no], second_no: [holder_no]})   # the two left hear each other
    return {"ok": ok, "mixed_by": mixer, "conference": shown[0] if shown else None, "tones_hz": tones,
            "heard": {n: [label for label, _ in heard[n]] for n in tones}, "heard_both_others_ms": both_ms,
            "own_tone_peak_share": own_peak, "joined": joined, "after_%s_left" % first_no: after, "missed": missed}


def _console(lab, number, tag, *args):
    from upbx.tools.demo_features import ConsolePhone
    return ConsolePhone(lab, number, tag, *args)
