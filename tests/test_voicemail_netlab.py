"""B4 voicemail through real NAT (the network lab, root only): with the main host killed -9,
site a's remote host answers an unanswered call to one of its phones itself, records the
message (real firmware phones, the caller sending a tone), and uploads it exactly once when the
main host is back, surviving another restart of the main host without a second copy."""
import json
import os
import wave

import pytest

from tests.support import require_root
from upbx.host.voicemail import VoicemailStore
from upbx.tools.demo_voicemail import CALLER_HZ, _leave
from upbx.tools.lab import goertzel_power
from upbx.tools.netlab_exchange import NetlabExchange

pytestmark = pytest.mark.root


def _logged_in(ex):
    return ex.status("site-a")["main"]["state"] == "up"


def test_b4_a_site_records_voicemail_without_the_main_host_and_uploads_it_once():
    require_root()
    from upbx.tools.netlab import Lab
    lab = Lab("upvm%s-" % os.urandom(2).hex())
    try:
        lab.up(nat="cone", phones=2)
        with NetlabExchange(lab, keepalive_s=3, ring_timeout_s=15) as ex:
            ex.provision()
            ex.admin("voicemail", "on", "102")          # in the site's directory from the first login
            ex.start()
            ex.kill("main")
            ex.wait_for(lambda: not _logged_in(ex), "site a noticed the main host is gone", timeout=20)
            connected, heard, total = _leave(ex, "101", "102", "b4vm-101", speak_s=2.0)
            assert connected and heard >= 0.5 * total, (heard, total)     # the remote host's greeting
            assert ex.status("site-a")["voicemail_pending"] == 1
            with VoicemailStore(ex.path("upbx-remote-site-a.sqlite.voicemail")) as store:
                local = store.messages("102")
            assert [(m["caller"], m["origin"]) for m in local] == [("101", "site-a")]

            ex.restart("main")
            ex.wait_for(lambda: _logged_in(ex) and ex.status("site-a")["voicemail_pending"] == 0,
                        "the message uploaded", timeout=60)
            rows = json.loads(ex.admin("voicemail", "list", "102", "--json"))
            assert [(r["uid"], r["caller"], r["origin"]) for r in rows] == [(local[0]["uid"], "101", "site-a")]
            with wave.open(ex.path(os.path.join("main.sqlite.voicemail", rows[0]["file"]))) as w:
                pcm = w.readframes(w.getnframes())
            frames = [pcm[i:i + 320] for i in range(0, len(pcm) - 319, 320)]
            tone = sum(1 for f in frames if goertzel_power(f, 160, CALLER_HZ) > 1e9)
            assert tone >= 0.8 * len(frames), (tone, len(frames))         # the caller's 1000 Hz

            ex.kill("main")                              # once: another restart brings no second copy
            ex.wait_for(lambda: not _logged_in(ex), "site a noticed again", timeout=20)
            ex.restart("main")
            ex.wait_for(lambda: _logged_in(ex), "site a logged in again", timeout=60)
            assert len(json.loads(ex.admin("voicemail", "list", "102", "--json"))) == 1
            assert "voicemail uploads duplicate" not in ex.status("main")["stats"]["counters"]
    finally:
        lab.down()


def test_b4_a_sites_copy_of_its_mailboxes_plays_and_its_changes_reach_the_main_host_once():
    """Through real NAT with the main host killed -9: site a's remote host plays 102's uploaded
    greeting from its copy, `*97` there plays the main host's message and the one recorded
    meanwhile (each caller tone heard in 102's speaker), and once the main host is back the
    deletion and the new message reach it once (tools/demo_voicemail_b4.py, the demo's scenario)."""
    require_root()
    from upbx.tools.demo_voicemail_b4 import voicemail_b4
    from upbx.tools.netlab import Lab
    lab = Lab("upvb%s-" % os.urandom(2).hex())
    try:
        lab.up(nat="cone", phones=2)
        with NetlabExchange(lab, keepalive_s=3, ring_timeout_s=15) as ex:
            ex.provision()
            ex.start()
            result = voicemail_b4(ex, 2.0)
            assert result["ok"] is True, json.dumps(result)
            assert result["b4_retrieval_heard"] == ["main's message", "b4 message"], result
            assert result["main_mailbox_after"] == [("101", "site-a", "saved")], result   # once, saved when heard
            ex.kill("main")                              # once: another restart changes nothing
            ex.wait_for(lambda: not _logged_in(ex), "site a noticed again", timeout=20)
            ex.restart("main")
            ex.wait_for(lambda: _logged_in(ex), "site a logged in again", timeout=60)
            rows = json.loads(ex.admin("voicemail", "list", "102", "--json"))
            assert [(r["caller"], r["origin"]) for r in rows] == [("101", "site-a")], rows
            assert ex.status("site-a")["mailbox_changes_pending"] == 0
    finally:
        lab.down()
