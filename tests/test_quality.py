"""Voice quality end to end: spoken audio through the real firmware, the hosts and a lossy,
jittery link, scored with PESQ narrowband. Concealment must beat silence substitution."""
import shutil
import time

import pytest

pytest.importorskip("pesq", reason="pip install pesq (in pyproject.toml dependencies)")
if not shutil.which("espeak-ng"):
    pytest.skip("espeak-ng not installed", allow_module_level=True)

from tools.quality import run_calls  # noqa: E402


def test_concealment_beats_silence_at_5_percent_loss_and_clean_calls_sound_good(tmp_path):
    started = time.monotonic()
    mos = run_calls([(0, True), (5, True), (5, False)], workdir=str(tmp_path))
    elapsed = time.monotonic() - started
    print("MOS-LQO: clean %.2f; 5 %% loss + 30 ms jitter: PLC %.2f, no PLC %.2f (%.0f s)" % (
        mos[(0, True)], mos[(5, True)], mos[(5, False)], elapsed))
    assert mos[(0, True)] >= 3.5
    assert mos[(5, True)] > mos[(5, False)] + 0.3
    assert elapsed < 90
