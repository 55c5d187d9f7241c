"""A site's transfer of two calls that both go through the main host, in the network lab (root
only; every daemon and firmware phone in its own namespace behind nftables NAT routers): site a's
remote host hands the join to the main host, and from then on no media frame of the joined call
leaves site a's router on its WAN interface (an nftables counter there, as for the page in
tests/test_netlab_groups.py), its uplink budget counts nothing, and the two parties (at the main
host's site c) hear each other (Goertzel on each speaker's recording, a tone per phone).
"""
import os
import time

import pytest

from tests.support import require_root
from tests.test_netlab_groups import MEDIA_BYTES, wan_media_packets
from upbx.tools.demo_features import ConsolePhone
from upbx.tools.lab import frequencies_heard
from upbx.tools.netlab_exchange import NetlabExchange

pytestmark = pytest.mark.root
TONES = {"101": 1000, "301": 1400, "302": 1800}


def test_netlab_a_transfer_joined_by_the_main_host_leaves_the_sites_uplink():
    require_root()
    from upbx.tools.netlab import Lab
    prefix = "upxh%s-" % os.urandom(2).hex()
    lab = Lab(prefix)
    try:
        lab.up(nat="cone", phones=2, sites=("a", "c"), remote_sites=("a",))
        with NetlabExchange(lab, keepalive_s=2, ring_timeout_s=20) as ex:
            ex.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301", "302"]})
            ex.start()
            ex.wan_table = "upbx_handover_" + prefix.strip("-")
            lab.count_leaving("a", ex.wan_table, {"media": MEDIA_BYTES})
            p = {n: ConsolePhone(ex, n, "ho-" + n, "--send", "tone:%d" % hz) for n, hz in TONES.items()}
            try:
                p["301"].command("!call 101")
                assert p["101"].wait_line("incoming call from 301")
                p["101"].command("!answer")
                assert p["301"].wait_line("connected")
                time.sleep(1.5)                                   # 301 and 101 talk
                p["101"].command("!consult 302")
                assert p["302"].wait_line("incoming call from 101")
                p["302"].command("!answer")
                time.sleep(1.5)
                assert ex.status("site-a")["uplink"]["calls"] == 2
                before_transfer = wan_media_packets(ex)
                assert before_transfer > 0                        # the two calls' media crossed site a's WAN
                p["101"].command("!complete")
                assert p["101"].wait_line("other line ended: transferred") and p["101"].wait_line("call ended: transferred")
                assert p["301"].wait_line("now talking to 302") and p["302"].wait_line("now talking to 301")
                time.sleep(0.5)                                   # frames already on their way
                after_transfer = wan_media_packets(ex)
                time.sleep(3.0)                                   # 301 and 302 talk
                assert wan_media_packets(ex) == after_transfer    # none of it through site a
                status = ex.status("site-a")
                assert status["uplink"]["calls"] == 0 and status["calls"] == []
                assert status["stats"]["counters"]["transfers handed to the main host"] == 1
                p["301"].command("!hangup")
                assert p["302"].wait_line("call ended: normal clearing")
            finally:
                for phone in p.values():
                    phone.quit()
            labels = {n: (hz,) for n, hz in TONES.items()}
            heard = {n: [h for h in frequencies_heard(p[n].wav, labels) if h != "quiet"] for n in TONES}
            assert heard["301"][-1:] == ["302"] and heard["302"][-1:] == ["301"], heard
            assert heard["301"][:1] == ["101"], heard
    finally:
        lab.down()
