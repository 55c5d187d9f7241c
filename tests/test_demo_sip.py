"""`upbx demo sip` (tools/demo_sip.py): the issue 13 proof with a SIP phone nobody here wrote.
baresip at site A (behind its NAT in the lab) calls handset 301 at site C and is called by it; the
far end's tone must be what each side heard; it calls a handset of its own site (B3) and
transfers a call by REFER. The hosts' SIP side is built: a call that names a missing part (405 to
the INVITE, `--sip` unknown) fails this test like any other error."""
import json
import subprocess
import sys

import pytest

from tests.support import require_root, require_tool
from upbx.tools.demo_sip import heard_share
from upbx.tools.baresip import write_tone

pytestmark = pytest.mark.root


def test_heard_share_finds_the_tone_and_only_it(tmp_path):
    import wave
    with wave.open(write_tone(tmp_path / "t.wav", 1000, 2)) as w:
        pcm = w.readframes(w.getnframes())
    assert heard_share(pcm, 1000, 600) == 1.0
    assert heard_share(pcm, 600, 1000) == 0.0
    assert heard_share(bytes(len(pcm)), 1000, 600) == 0.0     # silence is not the tone
    assert heard_share(pcm[:8000], 1000, 600) == 0.0          # shorter than the margins: nothing to judge


def test_demo_sip_calls_both_ways_with_audio():
    require_root()
    require_tool("baresip", "apt-get install baresip-core")
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "demo", "sip", "--json", "--seconds", "3"],
                         capture_output=True, text=True, timeout=400)
    result = json.loads(out.stdout)
    assert result.get("error") is None and all(c["error"] is None for c in result["calls"]), (result, out.stderr)
    assert [(c["from"], c["to"], c["transfer_to"]) for c in result["calls"]] == [
        ("105", "301", None), ("301", "105", None), ("105", "101", None), ("105", "301", "101")], out.stderr
    for call in result["calls"]:
        assert {"from", "to", "path", "audio_match", "setup_ms"} <= set(call) and call["audio_match"], call
    paths = [c["path"] for c in result["calls"]]
    assert paths[:3] == ["relay", "relay", "local"] and paths[3] in ("relay", "local"), paths
    assert out.returncode == 0
