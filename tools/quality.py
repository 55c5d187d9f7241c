"""`upbx bench quality`: voice quality end to end, scored with PESQ (ITU-T P.862, narrowband).

Two virtual handsets running the real firmware call each other on the B1 path (phone 10x at
site a -> remote host a -> main host -> phone 30x). The impairment relay (tools.impair) sits
between the calling phone and its remote host and loses a share of the datagrams both ways,
with 30 ms of uniform jitter. The caller's microphone plays spoken English from espeak-ng;
the callee's speaker is recorded (--record), aligned to the original by cross-correlation
and scored. Each loss rate is run with packet loss concealment on and off at the receiver,
with the same relay seed, so both runs lose the same packets.
"""
import os
import shutil
import subprocess
import tempfile
import wave

from tools.impair import Impairment, Relay
from tools.lab import LoopbackExchange, upbx

RATE = 8000
TEXT = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
        "It is easy to tell the depth of a well.")
LOSSES = (0, 1, 3, 5)
JITTER_MS = 30


def speech_wav(path, text=TEXT):
    """Spoken text from espeak-ng as 8 kHz 16-bit mono PCM WAV (resampled here); returns its samples."""
    import numpy as np
    if not shutil.which("espeak-ng"):
        raise FileNotFoundError("espeak-ng not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "speech.wav")
        subprocess.run(["espeak-ng", "-s", "150", "-w", raw, text], check=True, capture_output=True)
        with wave.open(raw) as w:
            rate = w.getframerate()
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    # band-limited resampling in the frequency domain: keep 0..4 kHz
    n_out = int(round(len(x) * RATE / rate))
    spectrum = np.fft.rfft(x)[:n_out // 2 + 1]
    y = np.fft.irfft(spectrum, n_out) * (n_out / len(x))
    y = np.concatenate([np.zeros(RATE // 4), y, np.zeros(RATE // 4)])  # a little silence either side
    y = np.clip(np.round(y / max(1.0, np.abs(y).max()) * 16000), -32768, 32767).astype("<i2")
    write_wav(path, y)
    return y


def write_wav(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.astype("<i2").tobytes())


def read_wav(path):
    import numpy as np
    with wave.open(path) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def align(reference, degraded):
    """The stretch of degraded that lines up with reference (FFT cross-correlation); zero-padded."""
    import numpy as np
    ref = reference.astype(np.float64)
    deg = degraded.astype(np.float64)
    n = 1
    while n < len(ref) + len(deg):
        n *= 2
    corr = np.fft.irfft(np.fft.rfft(deg, n) * np.conj(np.fft.rfft(ref, n)), n)
    lag = int(np.argmax(corr[:len(deg)]))
    out = deg[lag:lag + len(ref)]
    if len(out) < len(ref):
        out = np.concatenate([out, np.zeros(len(ref) - len(out))])
    return out, lag


def mos(reference, degraded):
    """PESQ narrowband MOS-LQO of degraded against reference (both 8 kHz int16 arrays)."""
    import numpy as np
    from pesq import pesq
    aligned, _lag = align(reference, degraded)
    return float(pesq(RATE, reference.astype(np.float64), aligned, "nb"))


def run_calls(cases, workdir=None, speech=None):
    """Run (loss_pct, plc) cases, two calls at a time; returns {(loss, plc): mos}.

    Each case is its own caller/callee pair (10k -> 30k) with its own relay; cases with the
    same loss share the relay seed, so PLC on and off meet the same lost packets."""
    workdir = workdir or tempfile.mkdtemp(prefix="upbx-quality-")
    ref_path = os.path.join(workdir, "speech.wav")
    reference = speech_wav(ref_path) if speech is None else speech
    if speech is not None:
        write_wav(ref_path, speech)
    seconds = len(reference) / RATE
    pairs = [("1%02d" % (i + 1), "3%02d" % (i + 1)) for i in range(len(cases))]
    results = {}
    with LoopbackExchange(workdir=workdir) as lab:
        lab.provision(sites=("a", "c"), remote_sites=("a",),
                      phones={"a": [p[0] for p in pairs], "c": [p[1] for p in pairs]})
        lab.start()
        for start in range(0, len(cases), 2):
            batch = []
            for (loss, plc), (caller, callee) in list(zip(cases, pairs))[start:start + 2]:
                batch.append(_start_call(lab, loss, plc, caller, callee, ref_path, seconds))
            for loss, plc, relay, caller_proc, callee_proc, record in batch:
                caller_proc.wait(seconds + 30)
                callee_proc.wait(seconds + 30)
                relay.stop()
                results[(loss, plc)] = mos(reference, read_wav(record))
    return results


def _start_call(lab, loss, plc, caller, callee, speech, seconds):
    target = ("127.0.0.1", lab.remote_ports["a"])
    seed = 1000 + int(loss * 10)
    relay = Relay(("127.0.0.1", 0), target, up=Impairment(seed=seed, loss=loss, jitter_ms=JITTER_MS),
                  down=Impairment(seed=seed + 1, loss=loss, jitter_ms=JITTER_MS))
    relay.start()
    tag = "q%g-%s" % (loss, "plc" if plc else "noplc")
    record = lab.path(tag + ".wav")
    callee_args = ["--answer", "--record", record, "--exit-after-call", "--exit-after", str(seconds + 20)]
    if not plc:
        callee_args.append("--no-plc")
    callee_proc = lab.phone(callee, *callee_args, tag=tag + "-callee")
    lab.wait_registered(callee)
    argv = upbx("phone", "--extension", caller, "--secret", lab.secrets[caller],
                "--host", "%s:%d" % relay.address, "--bind", "127.0.0.1", "--send", speech, "--call", callee,
                "--call-after", "0.3", "--duration", "%.2f" % (seconds + 0.6), "--exit-after-call",
                "--exit-after", str(seconds + 15), "--summary", lab.path(tag + "-caller.summary.json"))
    caller_proc = lab.spawn("phone-" + tag + "-caller", argv, stdin=subprocess.DEVNULL)
    return loss, plc, relay, caller_proc, callee_proc, record


def bench_quality(quick=False):
    """MOS-LQO (PESQ narrowband) at 0, 1, 3, 5 % loss with 30 ms jitter, concealment on and off."""
    losses = (0, 5) if quick else LOSSES
    cases = [(loss, plc) for loss in losses for plc in (True, False)]
    scores = run_calls(cases)
    return {
        "path": "B1: phone -> impairment relay -> remote host -> main host -> phone",
        "jitter_ms": JITTER_MS, "speech": TEXT,
        "rows": [{"loss_pct": loss, "mos_plc": round(scores[(loss, True)], 2),
                  "mos_no_plc": round(scores[(loss, False)], 2)} for loss in losses],
        "targets": {"clean": 4.0, "loss_3_pct": 3.8},
    }


def table_quality(r):
    lines = ["quality: PESQ narrowband MOS-LQO, %s, %d ms jitter" % (r["path"], r["jitter_ms"]),
             "  loss %   MOS with PLC   MOS without PLC"]
    for row in r["rows"]:
        lines.append("  %6g   %12.2f   %15.2f" % (row["loss_pct"], row["mos_plc"], row["mos_no_plc"]))
    lines.append("  targets: >= %.1f clean, >= %.1f at 3 %% loss" % (r["targets"]["clean"], r["targets"]["loss_3_pct"]))
    return "\n".join(lines)
