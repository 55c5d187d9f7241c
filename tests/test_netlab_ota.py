"""Over-the-air handset updates in the network lab (root only; docs/operations.md, "Over-the-air
updates"): real firmware phones (`upbx phone --restart --flash-dir`, the unix HAL's flash and reboot)
behind nftables NAT routers; site a has a remote host (phones 101, 102 on its LAN), site c none
(phone 301 registers at the main host through its router).

The bundles are what `upbx build` writes (the .mpy tree), compiled for this machine's unix port, which
the phones run, each with a VERSION file. In order, on one lab:

- 2.0.0 rolled out to sites a and c reaches every phone: the remote host fetched one copy from the
  main host and served its two phones; each phone booted it on trial and kept it once registered;
- 2.0.1 rolled out while 101 and 102 are in a call: neither downloads during the call, both update
  after it;
- a broken bundle (its firmware/app.py raises on import) boots, fails, and the phone goes back to
  2.0.1 by itself on its next boot, registers and says so;
- a bundle whose SHA-256 in the database is not its own (as if altered on the main host's disk) is
  refused by the remote host, which serves none of it, and by the phone of site c, which keeps 2.0.1.
"""
import json
import os
import shutil
import sqlite3
import time

import pytest

from tests.support import require_root
from upbx.tools.demo_features import ConsolePhone
from upbx.tools.netlab_exchange import NetlabExchange
from upbx.tools.phone import compiled_tree

PHONES = ("101", "102", "301")


def make_bundle(path, version, broken=False):
    """The .mpy tree of this machine's unix port (what `upbx build` writes for it) with a VERSION file."""
    shutil.copytree(compiled_tree(), path)
    with open(os.path.join(path, "VERSION"), "w") as f:
        f.write(version + "\n")
    if broken:
        os.remove(os.path.join(path, "firmware", "app.mpy"))
        with open(os.path.join(path, "firmware", "app.py"), "w") as f:
            f.write('raise RuntimeError("a deliberately broken bundle")\n')
    return path


@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    require_root()
    from upbx.tools.netlab import Lab
    prefix = "upxo%s-" % os.urandom(2).hex()
    lab = Lab(prefix)
    try:
        lab.up(nat="cone", phones=2, sites=("a", "c"), remote_sites=("a",))
        with NetlabExchange(lab, keepalive_s=2) as ex:
            ex.provision(sites=("a", "c"), remote_sites=("a",), phones={"a": ["101", "102"], "c": ["301"]})
            ex.start()
            ex.bundles = tmp_path_factory.mktemp("bundles")
            ex.phones = {}
            for number in PHONES:
                flash = ex.path("flash-" + number)
                os.makedirs(flash)
                ex.phones[number] = ConsolePhone(ex, number, "ota-" + number, "--restart", "--flash-dir", flash,
                                                 "--send", "tone:440", "--answer")
            yield ex
            for phone in ex.phones.values():
                phone.quit()
    finally:
        lab.down()


def firmware_of(ex, number):
    """What the host of number's phone last heard from it about its firmware (FIRMWARE_STATE)."""
    daemon = "main" if number == "301" else "site-a"
    return ex.status(daemon)["firmware"]["phones"].get(number, {})


def kept(ex, number):
    with open(ex.path("flash-%s/ota.json" % number)) as f:
        return json.load(f)


def wait_running(ex, numbers, version, timeout=90):
    ex.wait_for(lambda: all(firmware_of(ex, n) == {"version": version, "state": "running", "running": version}
                            for n in numbers), "%s running %s" % (",".join(numbers), version), timeout=timeout)


def add(ex, version, broken=False):
    out = ex.admin("firmware", "add", make_bundle(str(ex.bundles / version), version, broken), "--json")
    return json.loads(out)


def test_a_rollout_reaches_every_phone_of_two_sites_one_copy_over_the_wan(ex):
    entry = add(ex, "2.0.0")
    chunks = (entry["size"] + 249) // 250
    ex.admin("firmware", "rollout", "2.0.0", "--site", "a", "--site", "c")
    wait_running(ex, PHONES, "2.0.0")
    # the remote host passes its phones' word on: the main host's status has every phone's firmware
    ex.wait_for(lambda: all(ex.status("main")["firmware"]["phones"].get(n, {}).get("running") == "2.0.0"
                            for n in PHONES), "the main host knows", timeout=10)
    for number in PHONES:
        log = ex.phones[number].log()
        assert "I phone firmware 2.0.0 offered: downloading %d bytes (%d chunks) into ota/a" % (
            entry["size"], chunks) in log
        assert "I phone firmware 2.0.0 checked (SHA-256 %s) and installed: resetting into it" % entry["sha256"] in log
        assert "I ota booting firmware 2.0.0 from ota/a (on trial)" in log
        assert "I phone firmware 2.0.0 registered: kept" in log
        state = kept(ex, number)
        assert (state["slot"], state["version"], state["trial"]) == ("ota/a", "2.0.0", 0)
        assert sorted(os.listdir(ex.path("flash-%s/ota/a" % number))) == ["VERSION", "common", "firmware"]
    site = ex.status("site-a")
    assert site["firmware"]["fetch"] == {"version": "2.0.0", "state": "complete", "chunks": chunks, "count": chunks}
    # one copy came over the WAN (each chunk once, unless a stall made the remote host ask again),
    # and the remote host served both its phones from it on the LAN
    assert chunks <= site["stats"]["counters"]["msg FIRMWARE"] < 2 * chunks
    assert site["stats"]["counters"]["firmware chunks sent"] >= 2 * chunks
    assert len(ex.log_lines("site-a", "firmware-fetch")) == 1
    assert ex.status("main")["stats"]["counters"]["firmware chunks sent"] < 3 * chunks  # site-a's copy + 301's


def test_a_phone_in_a_call_updates_after_the_call(ex):
    add(ex, "2.0.1")
    p101, p102 = ex.phones["101"], ex.phones["102"]
    p101.command("!call 102")
    assert p101.wait_line("connected (local)", 20) and p102.wait_line("connected (local)", 20)
    ex.admin("firmware", "rollout", "2.0.1", "--site", "a")
    ex.wait_for(lambda: ex.status("site-a")["sysinfo_acked"] == {"101": ex.status("site-a")["sysinfo_version"],
                                                                "102": ex.status("site-a")["sysinfo_version"]},
                "the rollout reached both phones", timeout=20)
    ex.wait_for(lambda: ex.status("site-a")["firmware"]["fetch"]["state"] == "complete", "site a fetched 2.0.1",
                timeout=30)
    time.sleep(3)    # three of the phones' once-a-second looks at the offer, in the call
    assert "firmware 2.0.1 offered" not in p101.log() + p102.log()
    assert firmware_of(ex, "101")["running"] == firmware_of(ex, "102")["running"] == "2.0.0"
    p101.command("!hangup")
    assert p102.wait_line("call ended: normal clearing")
    wait_running(ex, ("101", "102"), "2.0.1")
    for phone in (p101, p102):
        log = phone.log()
        assert log.rindex("call ended") < log.index("firmware 2.0.1 offered")
        assert kept(ex, phone.number)["slot"] == "ota/b"
    assert firmware_of(ex, "301")["running"] == "2.0.0"    # site c was not in this rollout


def test_a_broken_bundle_rolls_back_by_itself(ex):
    add(ex, "2.0.2-broken", broken=True)
    ex.admin("firmware", "rollout", "2.0.2-broken", "--site", "a", "--percent", "50")
    chosen = json.loads(ex.admin("sysinfo", "show", "--json"))   # the operator's part: 50 % of site a
    assert chosen["data"]["firmware_rollout"]["a"] == {"version": "2.0.2-broken", "percent": 50}
    ex.wait_for(lambda: any(firmware_of(ex, n).get("state") == "rolled back" for n in ("101", "102")),
                "a roll-back reported", timeout=90)
    (number,) = [n for n in ("101", "102") if firmware_of(ex, n).get("state") == "rolled back"]
    other = "102" if number == "101" else "101"
    log = ex.phones[number].log()
    assert "I ota booting firmware 2.0.2-broken from ota/a (on trial)" in log
    assert "E ota firmware on trial failed to start: RuntimeError: a deliberately broken bundle; resetting" in log
    assert "W ota firmware 2.0.2-broken did not register after its first boot: rolled back to 2.0.1" in log
    assert "W phone firmware 2.0.2-broken was rolled back; running 2.0.1" in log
    state = kept(ex, number)
    assert (state["slot"], state["version"], state["rolled_back"]) == ("ota/b", "2.0.1", "2.0.2-broken")
    assert firmware_of(ex, number) == {"version": "2.0.2-broken", "state": "rolled back", "running": "2.0.1"}
    ex.wait_registered(number)
    # the other half of the site was not offered it, and the phone that rolled back does not try again
    time.sleep(3)
    assert "2.0.2-broken" not in ex.phones[other].log()
    assert ex.phones[number].log().count("firmware 2.0.2-broken offered") == 1


def test_a_bundle_whose_digest_does_not_match_is_refused(ex):
    entry = add(ex, "2.0.3")
    db = sqlite3.connect(ex.path("main.sqlite"))
    with db:
        db.execute("UPDATE firmware SET sha256 = ? WHERE version = '2.0.3'", ("0" * 64,))
    db.close()
    ex.admin("firmware", "rollout", "2.0.3", "--site", "a", "--site", "c")
    ex.wait_for(lambda: firmware_of(ex, "301").get("state") == "refused", "301 refused 2.0.3", timeout=60)
    assert ("E phone firmware 2.0.3 refused: its SHA-256 is %s, the system information says %s"
            % (entry["sha256"], "0" * 64)) in ex.phones["301"].log()
    assert kept(ex, "301")["version"] == "2.0.0" and firmware_of(ex, "301")["running"] == "2.0.0"
    ex.wait_for(lambda: ex.status("site-a")["firmware"]["fetch"]["state"] == "refused", "site a refused 2.0.3",
                timeout=30)
    refused = ex.log_lines("site-a", "firmware-refused")
    assert len(refused) == 1 and "sha256=%s" % entry["sha256"] in refused[0]
    assert not any(n.startswith("2.0.3") for n in os.listdir(ex.path("upbx-remote-site-a.cache.json.firmware")))
    time.sleep(3)
    for number in ("101", "102"):   # nothing of it was served: both still run what they ran
        assert "firmware 2.0.3 checked" not in ex.phones[number].log()
        assert kept(ex, number)["version"] == "2.0.1"
