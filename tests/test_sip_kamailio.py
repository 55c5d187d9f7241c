"""The main host's trunk against Debian's Kamailio as the provider (a SIP server nobody here
wrote), on loopback with real daemons:

- registration (`trunk add ... --register`): Kamailio challenges (digest, its auth module checking
  the trunk's user and password), then saves the binding, granting 60 s at most (its registrar's
  max_expires); upbx registers again before it runs out (after 54 s), challenged and saved again;
  a grant of 12 s is refreshed after 7 s, before the binding lapses;
- the provider's refusals reach the handset as causes: handset 301 dials 9 403, 9 404, 9 480 and
  9 503 and Kamailio answers the INVITE with that status: not permitted, unknown extension, no
  answer, network busy (baresip cannot be made to send those; tests/test_sip_baresip_causes.py
  has the statuses baresip does send, and upbx's to baresip)."""
import time

import pytest

from tests.sipkit import Kamailio, sip_lab
from upbx.tools.lab import free_port

ROUTE = r'''
    if (is_method("REGISTER")) {
        if (!pv_www_authenticate("$fd", "pw", "0")) {
            xlog("L_NOTICE", "CHALLENGE $fu\n");
            www_challenge("$fd", "0");
            exit;
        }
        save("location");
        xlog("L_NOTICE", "REGISTERED $fU $ct\n");
        exit;
    }
    if (is_method("ACK")) {
        exit;
    }
    if (is_method("INVITE") && $rU =~ "^(403|404|480|503)$") {
        xlog("L_NOTICE", "REFUSED $rU from $fU\n");
        switch ($rU) {
            case "403": sl_send_reply("403", "Forbidden"); break;
            case "404": sl_send_reply("404", "Not Found"); break;
            case "480": sl_send_reply("480", "Temporarily Unavailable"); break;
            default: sl_send_reply("503", "Service Unavailable");
        }
        exit;
    }
    sl_send_reply("404", "Not here");
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sipkam")
    port = free_port()

    def setup(lab):
        lab.admin("trunk", "add", "prov", "--proxy", "127.0.0.1:%d" % port, "--user", "acct", "--password", "pw",
                  "--register")
        lab.admin("route", "add", "9", "--trunk", "prov", "--strip", "1")

    with Kamailio(folder / "kamailio", port, ROUTE).start() as kam:
        with sip_lab(folder, sites=("c",), remote_sites=(), phones={"c": ["301"]}, main_sip=True,
                     setup=setup) as lab:
            lab.kamailio = kam
            yield lab


def registration(lab):
    return lab.status("main")["sip"]["trunks"]["prov"]["registration"]


def test_the_trunk_registers_with_the_providers_challenge_and_refreshes(lab):
    kam = lab.kamailio
    lab.wait_for(lambda: registration(lab) == "registered", "the trunk registered", timeout=30)
    first = kam.lines("REGISTERED")
    assert kam.lines("CHALLENGE") and first and "REGISTERED acct " in first[0], kam.log()[-3000:]
    # Kamailio granted 60 s: upbx registers again at 30, before the binding runs out
    lab.wait_for(lambda: len(kam.lines("REGISTERED")) >= 2, "the registration refreshed", timeout=60)
    assert registration(lab) == "registered"
    assert len(kam.lines("CHALLENGE")) >= 2      # each REGISTER answered the provider's new challenge


@pytest.mark.parametrize("status,cause", [("403", "not permitted"), ("404", "unknown extension"),
                                          ("480", "no answer"), ("503", "network busy")])
def test_the_providers_refusals_reach_the_handset_as_causes(lab, status, cause):
    tag = "out-" + status
    caller = lab.phone("301", "--call", "9" + status, "--call-after", "0.5", "--exit-after-call", "--exit-after", "20",
                       tag=tag)
    caller.wait(30)
    assert lab.summary(tag)["calls"][0]["cause"] == cause, lab.summary(tag)
    assert any(line.endswith("REFUSED %s from acct" % status) for line in lab.kamailio.lines("REFUSED"))
    time.sleep(0.2)
    assert lab.status("main")["sip"]["calls"] == []


SHORT_GRANT_ROUTE = r'''
    if (is_method("REGISTER")) {
        if (!pv_www_authenticate("$fd", "pw", "0")) {
            www_challenge("$fd", "0");
            exit;
        }
        if (registered("location", "$tu")) {
            xlog("L_NOTICE", "REFRESHED $fU\n");
        } else {
            xlog("L_NOTICE", "NEW $fU\n");
        }
        save("location");
        xlog("L_NOTICE", "REGISTERED $fU $ct\n");
        exit;
    }
    sl_send_reply("404", "Not here");
'''


def test_a_provider_granting_12_s_sees_each_refresh_before_the_binding_lapses(tmp_path):
    """Kamailio grants 12 s (max_expires), under the 30 s the trunk once waited at least: every REGISTER
    after the first finds the binding still there (Kamailio's registered(): not expired), so the trunk
    was never unreachable (host/sip/trunk.py, refresh_after_s: 7 s after each grant)."""
    port = free_port()

    def setup(lab):
        lab.admin("trunk", "add", "prov", "--proxy", "127.0.0.1:%d" % port, "--user", "acct", "--password", "pw",
                  "--register")

    with Kamailio(tmp_path / "kamailio", port, SHORT_GRANT_ROUTE, max_expires=12).start() as kam:
        with sip_lab(tmp_path, sites=("c",), remote_sites=(), phones={"c": ["301"]}, main_sip=True,
                     setup=setup) as lab:
            lab.wait_for(lambda: len(kam.lines("REGISTERED")) >= 3, "two refreshes of a 12 s grant", timeout=60)
            assert len(kam.lines("NEW")) == 1 and len(kam.lines("REFRESHED")) >= 2, kam.log()[-3000:]
            assert registration(lab) == "registered"
