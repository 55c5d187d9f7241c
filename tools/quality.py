"""`upbx bench quality`: voice quality end to end, scored with PESQ (ITU-T P.862, narrowband).

Two virtual handsets running the real firmware call each other on the B1 path (phone 10x at
site a -> remote host a -> main host -> phone 30x). The impairment relay (tools.impair) sits
between the calling phone and its remote host and loses a share of the datagrams both ways,
with 30 ms of uniform jitter. The caller's microphone plays a corpus of spoken English from
espeak-ng (several voices, male and female, each sample 8-10 s of sentences with pauses,
resampled to 8 kHz with a polyphase low-pass and set to an active speech level of -26 dBov
by ITU-T P.56); the callee's speaker is recorded (--record). Each sample is cut out of the
recording at its own cross-correlation lag and scored against the 8 kHz signal as sent
(before G.711), and the scores are averaged. Each loss rate is run with packet loss
concealment on and off at the receiver, with the same relay seeds. The same samples through
G.711 alone (in-process, no network) give the codec's ceiling for this material.
"""
import json
import os
import shutil
import subprocess
import tempfile
import wave

from upbx.tools.impair import Impairment, Relay
from upbx.tools.lab import LoopbackExchange, read_g711_record, upbx, wav_frames_g711

RATE = 8000
LEVEL_DBOV = -26.0          # P.56 active speech level PESQ expects
PAUSE_S = 0.5               # between the sentences of a sample
GAP_S = 1.0                 # silence between samples in the call
LEAD_S = 0.5                # silence before the first sample
# (espeak-ng voice, sentences): Harvard sentences (IEEE 1969), lists 1-4
CORPUS = (
    ("en-us", ("The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
               "It is easy to tell the depth of a well.")),
    ("en+f3", ("These days a chicken leg is a rare dish.", "Rice is often served in round bowls.",
               "The juice of lemons makes fine punch.")),
    ("en-us+m3", ("The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
                  "Four hours of steady work faced us.")),
    ("en+f4", ("A large size in stockings is hard to sell.", "The boy was there when the sun rose.",
               "A rod is used to catch pink salmon.")),
)
LOSSES = (0, 1, 3, 5)
JITTER_MS = 30


def _numpy():
    import numpy as np
    return np


def active_level_dbov(samples, rate=RATE):
    """ITU-T P.56 method B active speech level of int16 samples, in dB relative to full scale."""
    np = _numpy()
    from scipy.signal import lfilter
    x = np.asarray(samples, dtype=np.float64) / 32768.0
    g = np.exp(-1.0 / (rate * 0.03))                      # 30 ms envelope time constant
    env = lfilter([1 - g], [1, -g], lfilter([1 - g], [1, -g], np.abs(x)))
    hang = int(0.2 * rate)                                # 200 ms hangover
    energy = float(np.sum(x * x))
    margin = 15.9                                         # dB
    prev = None
    for j in range(1, 16):                                # thresholds 2^-1 .. 2^-15 of full scale
        c = 2.0 ** -j
        above = np.flatnonzero(env >= c)
        if len(above) == 0:
            continue
        edges = np.zeros(len(x) + 1, dtype=np.int64)
        np.add.at(edges, above, 1)
        np.add.at(edges, np.minimum(above + hang, len(x)), -1)
        active = int(np.count_nonzero(np.cumsum(edges)[:-1]))
        level = 10 * np.log10(energy / active)
        diff = level - 20 * np.log10(c)
        if diff >= margin:
            if prev is None:
                return level
            plevel, pdiff = prev
            return plevel + (margin - pdiff) / (diff - pdiff) * (level - plevel)
        prev = (level, diff)
    return prev[0] if prev else -200.0


def espeak(text, voice):
    """espeak-ng speech as (rate, float64 samples)."""
    np = _numpy()
    if not shutil.which("espeak-ng"):
        raise FileNotFoundError("espeak-ng not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "speech.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", raw, text], check=True, capture_output=True)
        with wave.open(raw) as w:
            return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def _trim(x, floor=64.0):
    np = _numpy()
    loud = np.flatnonzero(np.abs(x) > floor)
    return x[loud[0]:loud[-1] + 1] if len(loud) else x


def speech_sample(voice, sentences):
    """One corpus sample: the sentences at 8 kHz with PAUSE_S between them, at LEVEL_DBOV; int16."""
    np = _numpy()
    from math import gcd
    from scipy.signal import resample_poly
    parts = []
    for sentence in sentences:
        rate, x = espeak(sentence, voice)
        k = gcd(RATE, rate)
        y = resample_poly(_trim(x), RATE // k, rate // k)  # Kaiser-windowed FIR low-pass below 4 kHz
        parts += [y, np.zeros(int(PAUSE_S * RATE))]
    y = np.concatenate([np.zeros(int(0.25 * RATE))] + parts[:-1] + [np.zeros(int(0.25 * RATE))])
    y = y * 10 ** ((LEVEL_DBOV - active_level_dbov(np.clip(y, -32768, 32767))) / 20)
    return np.clip(np.round(y), -32768, 32767).astype("<i2")


def corpus(samples=None):
    """The corpus samples (int16 arrays), the first `samples` of CORPUS."""
    return [speech_sample(voice, sentences) for voice, sentences in CORPUS[:samples or len(CORPUS)]]


def call_signal(samples):
    """What the caller's microphone plays: samples separated by GAP_S; returns (int16 array, offsets)."""
    np = _numpy()
    parts, offsets, at = [np.zeros(int(LEAD_S * RATE), dtype="<i2")], [], int(LEAD_S * RATE)
    for s in samples:
        offsets.append(at)
        parts += [s, np.zeros(int(GAP_S * RATE), dtype="<i2")]
        at += len(s) + int(GAP_S * RATE)
    return np.concatenate(parts), offsets


def write_wav(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def read_wav(path):
    np = _numpy()
    with wave.open(path) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _xcorr_lag(reference, degraded, lo, hi):
    """Lag in lo..hi (samples, degraded later) that best lines degraded up with reference."""
    np = _numpy()
    ref = reference.astype(np.float64)
    deg = degraded.astype(np.float64)
    n = 1
    while n < len(ref) + len(deg):
        n *= 2
    corr = np.fft.irfft(np.fft.rfft(deg, n) * np.conj(np.fft.rfft(ref, n)), n)
    lo, hi = max(lo, 0), min(hi, len(deg) - 1)
    return lo + int(np.argmax(corr[lo:hi + 1]))


def align(reference, degraded):
    """The stretch of degraded that lines up with reference (FFT cross-correlation); zero-padded."""
    np = _numpy()
    lag = _xcorr_lag(reference, degraded, 0, len(degraded) - 1)
    out = degraded[lag:lag + len(reference)].astype(np.float64)
    if len(out) < len(reference):
        out = np.concatenate([out, np.zeros(len(reference) - len(out))])
    return out, lag


def pesq_nb(reference, degraded):
    """PESQ narrowband MOS-LQO of degraded (already aligned, same length) against reference."""
    np = _numpy()
    from pesq import pesq
    return float(pesq(RATE, reference.astype(np.float64), degraded.astype(np.float64), "nb"))


def mos(reference, degraded):
    """PESQ narrowband MOS-LQO of degraded against reference (both 8 kHz int16 arrays), aligned first."""
    aligned, _lag = align(reference, degraded)
    return pesq_nb(reference, aligned)


def score_samples(samples, offsets, recording):
    """Per-sample MOS of a recording of call_signal(samples): each sample cut at its own lag."""
    np = _numpy()
    signal_len = offsets[-1] + len(samples[-1])
    whole, _ = call_signal(samples)
    lag = _xcorr_lag(whole[:signal_len], recording, 0, len(recording) - 1)   # the call's delay
    scores = []
    for s, at in zip(samples, offsets):
        window = recording[at + lag - 2400:at + lag + len(s) + 2400] if at + lag >= 2400 else None
        if window is None or len(window) < len(s):
            scores.append(1.0)  # the recording does not hold this sample at all
            continue
        own = _xcorr_lag(s, window, 0, 4800)  # within +-300 ms of the call's delay
        cut = window[own:own + len(s)].astype(np.float64)
        if len(cut) < len(s):
            cut = np.concatenate([cut, np.zeros(len(s) - len(cut))])
        scores.append(pesq_nb(s, cut))
    return scores


def codec_ceiling(samples, codec="ulaw"):
    """Per-sample MOS of the samples through G.711 alone (common/g711.py, in-process)."""
    np = _numpy()
    from upbx.common import g711
    enc, dec = ((g711.ulaw_encode_into, g711.ulaw_decode_into) if codec == "ulaw"
                else (g711.alaw_encode_into, g711.alaw_decode_into))
    scores = []
    for s in samples:
        pcm = s.astype("<i2").tobytes()
        pcm += bytes(-len(pcm) % 320)
        out, payload, frame = bytearray(len(pcm)), bytearray(160), bytearray(320)
        for i in range(0, len(pcm), 320):
            enc(pcm[i:i + 320], payload)
            dec(payload, frame)
            out[i:i + 320] = frame
        scores.append(pesq_nb(s, np.frombuffer(bytes(out), dtype="<i2")[:len(s)]))
    return scores


def played_by_firmware(signal, gaps, codec="ulaw"):
    """signal (what a caller's microphone plays) as a callee's speaker plays it when the network
    adds nothing: each 20 ms frame through G.711 and the firmware's concealer (firmware/audio/plc.py,
    as firmware/audio/pipeline.py drives it), except where the callee's jitter buffer reported a
    gap (JitterBuffer.stats()["gaps"]: [ts16, kind] with ts16 the frame's timestamp in ms):
    "concealed" (that frame concealed instead), "bridged" (concealed into the next frame), "held"
    (20 ms concealed before it) or "skipped" (left out). The reference a clean call is held to
    when the machine's timing, not the network, made the handset conceal. Calls under 65 s (the
    16-bit timestamps do not wrap)."""
    np = _numpy()
    from upbx.common import g711
    from firmware.audio.plc import Concealer
    enc, dec = ((g711.ulaw_encode_into, g711.ulaw_decode_into) if codec == "ulaw"
                else (g711.alaw_encode_into, g711.alaw_decode_into))
    pcm = signal.astype("<i2").tobytes()
    pcm += bytes(-len(pcm) % 320)
    frames = len(pcm) // 320
    by_frame = {}
    for ts, kind in gaps:
        if ts % 20:
            raise ValueError("gap at %d ms is not a 20 ms frame's timestamp" % ts)
        by_frame.setdefault(ts // 20, []).append(kind)
    concealer = Concealer(True)
    payload, decoded, ahead, out = bytearray(160), bytearray(320), bytearray(320), bytearray(320)

    def decode(k, into):
        enc(pcm[320 * k:320 * k + 320], payload)
        dec(payload, into)

    played = bytearray()
    for k in range(frames):
        kinds = by_frame.get(k, ())
        for _ in range(kinds.count("held")):
            concealer.lost(out)
            played += out
        if "skipped" in kinds:
            continue
        decode(k, decoded)
        if "concealed" in kinds:
            concealer.lost(out)
        elif "bridged" in kinds and k + 1 < frames:
            decode(k + 1, ahead)
            concealer.lost(out, ahead)
        else:
            concealer.good(decoded, out)
        played += out
    return np.frombuffer(bytes(played), dtype="<i2")


def reference_scores(samples, gaps):
    """Per-sample MOS of call_signal(samples) played by the firmware with these gaps (played_by_firmware),
    cut and scored as a call's recording is (score_samples)."""
    signal, offsets = call_signal(samples)
    return score_samples(samples, offsets, played_by_firmware(signal, gaps))


def run_calls(cases, workdir=None, samples=None, concurrent=2):
    """Run (loss_pct, plc, seed) cases, `concurrent` calls at a time.

    Returns {case: {"mos": mean, "scores": per sample, "lost_pct": realised loss on the relay's
    way up, "jitter": the callee's JitterBuffer.stats(), "frames": {"sent": the caller's count,
    "received": the callee's, "exact": every frame received is the frame the caller sent with its
    timestamp, none twice, "microphone_skipped": ... (_frames_received)}}}. Each case is its own caller/callee
    pair (1xx -> 3xx) with its own relay; cases with the same loss and seed meet the same
    relay decisions (packet k's fate depends on the seed and k only)."""
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="upbx-quality-")
    try:
        return _run_calls(cases, workdir, samples, concurrent)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_calls(cases, workdir, samples, concurrent):
    samples = samples if samples is not None else corpus()
    signal, offsets = call_signal(samples)
    ref_path = os.path.join(workdir, "speech.wav")
    write_wav(ref_path, signal)
    seconds = len(signal) / RATE
    pairs = [("1%02d" % (i + 1), "3%02d" % (i + 1)) for i in range(len(cases))]
    results = {}
    with LoopbackExchange(workdir=workdir) as lab:
        lab.provision(sites=("a", "c"), remote_sites=("a",),
                      phones={"a": [p[0] for p in pairs], "c": [p[1] for p in pairs]})
        lab.start()
        for start in range(0, len(cases), concurrent):
            batch = [_start_call(lab, case, caller, callee, ref_path, seconds)
                     for case, (caller, callee) in list(zip(cases, pairs))[start:start + concurrent]]
            for case, tag, relay, caller_proc, callee_proc, record in batch:
                caller_proc.wait(seconds + 30)
                callee_proc.wait(seconds + 30)
                relay.stop()
                up = relay.up.counters
                scores = score_samples(samples, offsets, read_wav(record))
                try:
                    jitter = lab.summary(tag + "-callee").get("jitter")
                    calls = lab.summary(tag + "-caller")["calls"]
                except (OSError, ValueError, KeyError):
                    jitter, calls = None, []
                results[case] = {"mos": sum(scores) / len(scores), "scores": scores, "jitter": jitter,
                                 "lost_pct": 100.0 * up["dropped"] / up["in"] if up["in"] else None,
                                 "frames": _frames_received(ref_path, lab.path(tag + "-sent.g711"), lab.path(tag + ".g711"),
                                                            calls[0].get("frames_sent") if calls else None)}
    return results


def _frames_received(sent_wav, sent_path, record_path, sent):
    """What arrived, frame by frame (the caller's --record-sent-g711 against the callee's
    --record-g711): {"sent", "received", "exact": every frame received is the frame the caller sent
    with that timestamp, bit-exact, and none twice, "holes": frames missing before the last one,
    "lost_at_end": frames sent after the last one (the hang-up, signalling, can overtake the last
    frames across a jittery link), "reordered": frames that came right after a later one,
    "microphone_skipped": frames sent that are not the WAV's frame of their timestamp (the
    caller's virtual microphone drops audio after a stall longer than its queue, as a DMA queue
    does: not the transport's doing, and counted so that it is seen)}."""
    frames = wav_frames_g711(sent_wav)
    silence = bytes([0xFF]) * 160   # mu-law of 0: the microphone after the WAV's end
    sent_frames = dict(read_g711_record(sent_path))
    received = read_g711_record(record_path)
    index = [ts // 20 for ts, _ in received]
    exact = all(sent_frames.get(ts) == payload for ts, payload in received)
    last = max(index) if index else -1
    return {"sent": sent, "received": len(received), "exact": bool(received) and exact and len(set(index)) == len(index),
            "holes": sorted(set(range(last + 1)) - set(index)),
            "lost_at_end": None if sent is None else sent - (last + 1),
            "reordered": sum(1 for i in range(1, len(index)) if index[i] < index[i - 1]),
            "microphone_skipped": sum(1 for ts, payload in sent_frames.items()
                                      if ts % 20 or (frames[ts // 20] if ts // 20 < len(frames) else silence) != payload)}


def _start_call(lab, case, caller, callee, speech, seconds):
    loss, plc, seed = case
    target = ("127.0.0.1", lab.remote_ports["a"])
    relay = Relay(("127.0.0.1", 0), target, up=Impairment(seed=seed, loss=loss, jitter_ms=JITTER_MS),
                  down=Impairment(seed=seed + 1, loss=loss, jitter_ms=JITTER_MS))
    relay.start()
    tag = "q%g-%s-s%d" % (loss, "plc" if plc else "noplc", seed)
    record = lab.path(tag + ".wav")
    callee_args = ["--answer", "--record", record, "--record-g711", lab.path(tag + ".g711"), "--exit-after-call",
                   "--exit-after", str(seconds + 20)]
    if not plc:
        callee_args.append("--no-plc")
    callee_proc = lab.phone(callee, *callee_args, tag=tag + "-callee")
    lab.wait_registered(callee)
    argv = upbx("phone", "--extension", caller, "--secret", lab.secrets[caller],
                "--host", "%s:%d" % relay.address, "--bind", "127.0.0.1", "--send", speech, "--call", callee,
                "--call-after", "0.3", "--duration", "%.2f" % (seconds + 0.6), "--exit-after-call",
                "--exit-after", str(seconds + 15), "--summary", lab.path(tag + "-caller.summary.json"),
                "--record-sent-g711", lab.path(tag + "-sent.g711"))
    caller_proc = lab.spawn("phone-" + tag + "-caller", argv, stdin=subprocess.DEVNULL)
    return case, tag, relay, caller_proc, callee_proc, record


def bench_quality(quick=False):
    """MOS-LQO (PESQ narrowband) at 0, 1, 3, 5 % loss with 30 ms jitter, concealment on and off.

    Every lossy rate runs two relay seeds (each call carries the whole corpus, about 40 s of
    speech and 2,000 frames); figures are means over samples and seeds."""
    losses = (0, 5) if quick else LOSSES
    samples = corpus(2 if quick else None)
    seeds = lambda loss: (1,) if loss == 0 or quick else (1, 2)
    cases = [(loss, plc, 1000 * s + int(loss * 10)) for loss in losses for s in seeds(loss) for plc in (True, False)]
    runs = run_calls(cases, samples=samples, concurrent=3)
    ceiling = codec_ceiling(samples)
    rows = []
    for loss in losses:
        row = {"loss_pct": loss}
        for plc, key in ((True, "plc"), (False, "no_plc")):
            mine = [runs[c] for c in cases if c[0] == loss and c[1] == plc]
            scores = [s for r in mine for s in r["scores"]]
            row["mos_" + key] = round(sum(scores) / len(scores), 2)
            row["min_" + key] = round(min(scores), 2)
            row["lost_pct_" + key] = round(sum(r["lost_pct"] or 0 for r in mine) / len(mine), 2)
            row["late_" + key] = sum((r["jitter"] or {}).get("late", 0) for r in mine)
            row["delay_ms_" + key] = max((r["jitter"] or {}).get("target_ms", 0) for r in mine)
        rows.append(row)
    return {
        "path": "B1: phone -> impairment relay -> remote host -> main host -> phone",
        "jitter_ms": JITTER_MS, "level_dbov": LEVEL_DBOV,
        "corpus": ["%s: %s" % (voice, " ".join(s)) for voice, s in CORPUS[:len(samples)]],
        "codec_only": {"mos": round(sum(ceiling) / len(ceiling), 2), "per_sample": [round(c, 2) for c in ceiling]},
        "rows": rows,
        "targets": {"clean": 4.0, "loss_3_pct": 3.8},
    }


def table_quality(r):
    lines = ["quality: PESQ narrowband MOS-LQO, %s, %d ms jitter, %d samples at %g dBov"
             % (r["path"], r["jitter_ms"], len(r["corpus"]), r["level_dbov"]),
             "  G.711 alone (no network): %.2f (per sample %s)" % (
                 r["codec_only"]["mos"], " ".join("%.2f" % c for c in r["codec_only"]["per_sample"])),
             "  loss %   lost %   MOS with PLC (worst)   MOS without PLC (worst)   late frames   delay ms"]
    for row in r["rows"]:
        lines.append("  %6g   %6.2f   %12.2f (%5.2f)   %15.2f (%5.2f)   %11d   %8d" % (
            row["loss_pct"], row["lost_pct_plc"], row["mos_plc"], row["min_plc"], row["mos_no_plc"],
            row["min_no_plc"], row["late_plc"] + row["late_no_plc"], row["delay_ms_plc"]))
    lines.append("  targets: >= %.1f clean, >= %.1f at 3 %% loss" % (r["targets"]["clean"], r["targets"]["loss_3_pct"]))
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(bench_quality(), indent=2))
