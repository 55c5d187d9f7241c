"""`upbx demo`: the main job, run the way a newcomer runs it, and nothing left behind."""
import json
import os
import subprocess
import sys

from tests.support import ROOT


def _processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(pid), cmdline))
    return found


def test_demo_json_covers_b1_b2_b3_with_matching_audio_and_stops_everything(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))  # every file and process of the demo lives under here
    result = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "demo", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    calls = json.loads(result.stdout)["calls"]
    keys = {"behaviour", "from", "to", "path", "setup_ms", "frames_sent", "frames_received", "audio_match"}
    assert all(set(c) == keys for c in calls)
    assert [(c["behaviour"], c["path"]) for c in calls] == [
        ("B1", "relay"), ("B1", "relay"), ("B2", "direct"), ("B3", "local")]
    for c in calls:
        assert c["audio_match"] is True
        assert c["frames_received"] >= 0.95 * c["frames_sent"] > 0
        assert c["setup_ms"] > 0     # a figure of the machine's speed: how fast is not asserted here
    assert _processes_mentioning(str(tmp_path)) == []
    assert os.listdir(tmp_path) == []  # no lab directory, no handset flash left behind
