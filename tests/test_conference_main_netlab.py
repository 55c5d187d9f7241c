"""A site phone's conference with two parties off the site, in the network lab (root only; every
daemon and firmware phone in its own namespace behind nftables NAT routers): the main host mixes,
so site a's router sends one voice stream towards the Internet (nftables counters on its WAN
interface: datagrams long enough to carry two voice frames, as every one would if the site mixed
two streams, are no more than the few where frames of 101 came bunched), and each speaker plays the other two tones and never its own (Goertzel, tools/demo_conference).
"""
import os
import time

import pytest

from tests.support import require_root
from upbx.tools.demo_conference import ABSENT, tone_sets
from upbx.tools.demo_features import ConsolePhone
from upbx.tools.netlab_exchange import NetlabExchange

pytestmark = pytest.mark.root
TONES = {"101": 1000, "301": 1400, "302": 1800}
TWO_FRAMES = 2 * 160 + 28     # an IP datagram this long or longer carries two voice frames (or more)


def test_netlab_a_sites_phone_with_two_off_site_parties_is_mixed_at_the_main_host():
    require_root()
    from upbx.tools.netlab import Lab
    prefix = "upxc%s-" % os.urandom(2).hex()
    lab = Lab(prefix)
    try:
        lab.up(nat="cone", phones=2, sites=("a", "c"), remote_sites=("a",))
        with NetlabExchange(lab, keepalive_s=2, ring_timeout_s=20) as ex:
            ex.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101"], "c": ["301", "302"]})
            ex.start()
            table = "upbx_confmain_" + prefix.strip("-")
            lab.count_leaving("a", table, {"voice": 150, "two": TWO_FRAMES})
            p = {n: ConsolePhone(ex, n, "cm-" + n, "--send", "tone:%d" % hz) for n, hz in TONES.items()}
            try:
                p["101"].command("!call 301")
                assert p["301"].wait_line("incoming call")
                p["301"].command("!answer")
                assert p["101"].wait_line("connected")
                time.sleep(1)
                p["101"].command("!hold")
                assert p["101"].wait_line("call held")
                p["101"].command("!call 302")
                assert p["302"].wait_line("incoming call")
                p["302"].command("!answer")
                assert p["101"].wait_line("connected (relay)")
                time.sleep(1)
                p["101"].command("!conference")
                assert p["101"].wait_line("other line ended: joined conference")
                time.sleep(0.5)
                conferences = ex.status("main")["conferences"]
                assert [sorted(c["parties"]) for c in conferences] == [["101", "301", "302"]], conferences
                assert ex.status("site-a")["conferences"] == [] and ex.status("site-a")["uplink"]["calls"] == 1
                before = lab.counted("a", table)
                time.sleep(3.0)
                after = lab.counted("a", table)
                assert after["voice"] - before["voice"] > 100          # 101's voice goes up, 50 a second
                # two streams (mixed at the site) would put two frames in every datagram; one stream
                # does only when a tick's trunk takes two of 101's frames that came late together
                assert after["two"] - before["two"] < (after["voice"] - before["voice"]) / 3, (before, after)
                p["301"].command("!hangup")
                p["302"].command("!hangup")
                assert p["101"].wait_line("call ended")
            finally:
                for phone in p.values():
                    phone.quit()
            for number, phone in p.items():
                heard, peak = tone_sets(phone.wav, TONES)
                others = "+".join(sorted(set(TONES) - {number}))
                assert any(label == others and n >= 20 for label, n in heard), (number, heard)   # 2 s of both
                assert peak[number] < ABSENT, (number, peak)          # never itself
    finally:
        lab.down()
