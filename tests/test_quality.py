"""Voice quality end to end: spoken audio through the real firmware, the hosts and a lossy,
jittery link, scored with PESQ narrowband. A clean call must sound as good as G.711 itself
(the transport adds nothing), jitter alone must not lose frames, and concealment must beat
silence substitution by a clear margin, bridging most lost frames into the frame after them.

A busy machine can stall a handset past a frame's playout time; the jitter buffer then conceals
it, which no network did. So the clean call is held to what the code controls: every frame
arrives bit-exact, and the recording scores as G.711 with those same frames concealed by the same
concealer (tools.quality.played_by_firmware, from the jitter buffer's stats()["gaps"])."""
import json
import subprocess
import sys
import time

import pytest

from tests.support import ROOT, require_tool
from upbx.tools import bench
from upbx.tools.quality import LEVEL_DBOV, active_level_dbov, codec_ceiling, corpus, reference_scores, run_calls


@pytest.fixture(autouse=True)
def espeak():
    require_tool("espeak-ng", "apt-get install espeak-ng; make test does it as root")


def test_corpus_is_speech_at_the_p56_level_pesq_expects():
    samples = corpus(2)
    for s in samples:
        assert 7.5 <= len(s) / 8000 <= 12                    # P.862: 8-20 s with pauses
        assert abs(active_level_dbov(s) - LEVEL_DBOV) < 0.3
        assert abs(int(s[:800].astype(int).sum())) == 0          # starts in silence


def test_concealment_beats_silence_at_5_percent_loss_and_clean_calls_sound_like_g711(tmp_path):
    started = time.monotonic()
    samples = corpus(2)  # a male and a female voice, about 17 s of speech per call
    runs = run_calls([(0, True, 1), (5, True, 1050), (5, False, 1050)], workdir=str(tmp_path),
                     samples=samples, concurrent=3)
    elapsed = time.monotonic() - started
    ceiling = sum(codec_ceiling(samples)) / len(samples)
    clean, plc, silence = runs[(0, True, 1)], runs[(5, True, 1050)], runs[(5, False, 1050)]
    jitter = clean["jitter"]
    # A stall of the callee longer than its buffer (frames come further ahead than it holds: a resync; or it
    # ran dry: reprimed), or more gaps than it names, leaves a recording that cannot be matched frame for
    # frame against G.711 with the same frames concealed: then only the transport and the concealment
    # are held to account below (under CI a skip is a failure, and the stall is the machine's, not ours)
    stalled = jitter["gap_count"] > len(jitter["gaps"]) or jitter["reprimed"] or jitter["resyncs"]
    # G.711 with the frames the callee's timing made it conceal concealed the same way (none: G.711 alone)
    reference = None if stalled else sum(reference_scores(samples, jitter["gaps"])) / len(samples)
    print("MOS-LQO: G.711 alone %.2f, with the clean call's %d gaps %s, clean call %.2f; 5 %% loss (%.1f %% lost) "
          "+ 30 ms jitter: PLC %.2f, no PLC %.2f (%.0f s); clean call jitter buffer %s, frames %s; 5 %% with PLC %s" % (
              ceiling, jitter["gap_count"], "(stalled: not compared)" if stalled else "%.2f" % reference, clean["mos"], plc["lost_pct"], plc["mos"], silence["mos"],
              elapsed, jitter, clean["frames"], plc["jitter"]))
    assert ceiling >= 4.0                           # this corpus through G.711 alone
    # the network and the transport add nothing: every frame the caller sent arrived, bit-exact and in order,
    # but for the last one or two, which the hang-up (signalling) may overtake across 30 ms of jitter
    # (compared with the frames the caller sealed, which it records: a caller stalled longer than its
    # microphone's 200 ms queue lost audio before the transport had it, as a device's DMA queue does)
    frames = clean["frames"]
    assert frames["exact"] and frames["holes"] == [] and 0 <= frames["lost_at_end"] <= 2, frames
    # and the firmware adds nothing audible but the concealment its timing forced (none on an idle machine);
    # audio the stalled caller's microphone lost is not in the recording to be scored against the WAV
    if not stalled:
        if not frames["microphone_skipped"]:
            assert clean["mos"] >= reference - 0.05
        if not jitter["gap_count"]:
            assert clean["mos"] >= 4.0 and abs(reference - ceiling) < 0.01
        assert jitter["late"] <= 2
    # most losses are single frames with the next one already buffered: those are bridged
    assert plc["jitter"]["peeked"] >= 0.7 * plc["jitter"]["concealed"], plc["jitter"]
    assert silence["jitter"]["peeked"] == 0
    # measured (AMD EPYC, 2 CPUs): 3.72 against 3.10 on a quiet machine (forward-only concealment
    # gave 3.62); 3.59 against 3.21-3.22 where the machine also stalled the callees (a "held" gap:
    # the buffer ran dry), in a CI run and beside eight other test runs. Both calls meet the same
    # losses; concealment must beat silence by a clear margin either way
    # a PLC call whose callee the machine stalled (its buffer ran dry: "held" gaps, reprimed) conceals those
    # stalls too, as a silent one, and scores lower on the machine's account (3.11 against 2.84 in a loaded
    # CI run): then concealment must still win, by any margin
    plc_stalled = plc["jitter"]["reprimed"] or plc["jitter"]["resyncs"] or any(
        how == "held" for _at, how in plc["jitter"]["gaps"])
    assert plc["mos"] > silence["mos"] + (0 if plc_stalled else 0.3), (plc["mos"], silence["mos"], plc_stalled)
    # the floor is held where only the network lost frames: a CI run whose machine held the PLC callee twice
    # (buffer ran dry at 100 ms and 6.6 s) scored 3.46 against silence's 3.22 with the same seed
    if not plc_stalled:
        assert plc["mos"] >= 3.5, plc["jitter"]


# `upbx bench quality --quick` here rather than in test_bench.py: its PESQ calls then never run at
# the same time as the calls above (the test modules run in parallel, each module's tests in turn)
def test_bench_quality_quick_scores_the_clean_and_lossy_calls():
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "bench", "quality", "--json", "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)["quality"]
    assert [row["loss_pct"] for row in r["rows"]] == [0, 5]
    clean, lossy = r["rows"]
    assert clean["lost_pct_plc"] == clean["lost_pct_no_plc"] == 0
    assert 3.0 <= lossy["lost_pct_plc"] <= 7.0 and 3.0 <= lossy["lost_pct_no_plc"] <= 7.0, lossy
    for row in r["rows"]:
        for key in ("mos_plc", "min_plc", "mos_no_plc", "min_no_plc"):
            assert 1.0 <= row[key] <= 4.6, (key, row)
        assert row["min_plc"] <= row["mos_plc"] and row["min_no_plc"] <= row["mos_no_plc"], row
    assert 1.0 <= r["codec_only"]["mos"] <= 4.6 and len(r["codec_only"]["per_sample"]) == len(r["corpus"]) == 2
    assert bench.table_quality(r).startswith("quality:")
