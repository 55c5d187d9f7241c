"""`upbx status` against a running exchange with a B1 call in progress (B5: live per-site bandwidth)."""
import json
import socket
import subprocess
import sys
import time

import pytest

from upbx.common.media import call_kbps
from upbx.tools.lab import ROOT, LoopbackExchange, write_noise_wav

MINI_KBPS = (4 + 160 + 4 + 28) * 8 / 20     # one phone's mini frames on the wire: 78.4 kbps


def upbx_status(*args):
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "status", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def call_in_progress():
    with LoopbackExchange() as lab:
        lab.provision()
        lab.start()
        wav = lab.path("101.wav")
        write_noise_wav(wav, 10, 101)
        # the call lasts until the module's tests are done, however slowly they run: the caller
        # hangs up when the teardown says so (a fixed --duration ended it mid-module under load)
        callee = lab.phone("301", "--answer", "--exit-after-call", tag="status-callee")
        lab.wait_registered("301")
        caller = lab.phone("101", "--send", wav, "--call", "301", "--exit-after-call", tag="status-caller")
        lab.wait_for(lambda: any(c["state"] == "answered" for c in lab.status("main")["calls"]), "call answered")
        # a few datagrams no daemon can read: they show up as drops by reason
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3):
                s.sendto(b"\x80\x00", ("127.0.0.1", lab.main_port))
        time.sleep(1.6)  # more than the 1 s bandwidth window
        yield lab
        assert lab.status("main")["calls"][0]["state"] == "answered"   # still up after the last test
        caller.stdin.write(b"!hangup\n")     # the handset's console: on hook
        caller.stdin.flush()
        assert caller.wait(60) == 0 and callee.wait(60) == 0   # --exit-after-call: both saw the call end


def test_main_host_reports_hosts_phones_call_bandwidth_and_drops(call_in_progress):
    lab = call_in_progress
    status = json.loads(upbx_status("--json", "--socket", lab.path("main.sock")))
    hosts = {h["name"]: h for h in status["remote_hosts"]}
    assert hosts["site-a"]["address"] == "127.0.0.1:%d" % lab.remote_ports["a"]
    assert hosts["site-a"]["site"] == "a" and "site-b" in hosts
    assert [p["extension"] for p in status["phones"]] == ["301"]
    (call,) = status["calls"]
    assert (call["caller"], call["callee"], call["state"], call["path"]) == ("101", "301", "answered", "relay")
    # site a: one trunked call each way (trunk header + entry + tag + IPv4/UDP) plus a little signalling
    site_a = status["bandwidth"]["site a"]
    one_trunked_call = call_kbps(1)
    for key in ("in_kbps", "out_kbps"):
        assert one_trunked_call * 0.9 <= site_a[key] <= one_trunked_call * 1.15, site_a
        assert site_a["peak_" + key] >= site_a[key]
    site_c = status["bandwidth"]["site c"]  # phone 301, straight at the main host: mini frames
    assert MINI_KBPS * 0.9 <= site_c["out_kbps"] <= MINI_KBPS * 1.15, site_c
    # the three 2-byte datagrams, counted under the field the decoder names, and nothing else malformed
    assert {k: v for k, v in status["stats"]["drops"].items() if k.startswith("malformed")} == {
        "malformed: full frame": 3}


def test_remote_host_reports_its_phones_wan_and_lan(call_in_progress):
    lab = call_in_progress
    status = json.loads(upbx_status("--json", "--config", lab.path("site-a.toml")))
    assert status["main"]["state"] == "up"
    assert [p["extension"] for p in status["phones"]] == ["101"]
    assert status["calls"][0]["state"] == "answered"
    wan, lan = status["bandwidth"]["wan"], status["bandwidth"]["lan"]
    assert call_kbps(1) * 0.9 <= wan["out_kbps"] <= call_kbps(1) * 1.15, wan
    assert MINI_KBPS * 0.9 <= lan["in_kbps"] <= MINI_KBPS * 1.15, lan
    assert status["uplink"] == {"budget_kbps": 0, "calls": 1, "committed_kbps": round(call_kbps(1), 1)}


def test_text_output_is_a_readable_table(call_in_progress):
    text = upbx_status("--socket", call_in_progress.path("main.sock"))
    for heading in ("remote hosts", "phones", "calls", "bandwidth", "dropped packets"):
        assert heading in text
    line = next(l for l in text.splitlines() if l.strip().startswith("site a"))
    assert len(line.split()) == 6  # peer name (two words), in, out, peak in, peak out
    assert "101" in text and "answered" in text and "relay" in text


def test_status_names_a_missing_daemon_and_a_config_without_socket(tmp_path):
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "status", "--socket", str(tmp_path / "none.sock")],
                         cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert out.returncode == 1 and "cannot reach a daemon" in out.stderr
    config = tmp_path / "main.toml"
    config.write_text('[main]\nlisten = "127.0.0.1:4569"\n')
    out = subprocess.run([sys.executable, "-m", "upbx.tools.cli", "status", "--config", str(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "control_socket" in out.stderr


def test_control_sockets_in_a_directory_deeper_than_a_unix_socket_path_allows(tmp_path):
    """sun_path holds 108 bytes: a daemon whose control socket lies deeper (a deep working
    directory) still serves it, and `upbx status` still reaches it (host/daemon.py, unix_path)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with LoopbackExchange(workdir=str(deep)) as lab:
        assert len(lab.path("site-a.sock")) > 108
        lab.provision()
        lab.start()                   # waits for the remote hosts, asked through their sockets
        status = json.loads(upbx_status("--json", "--socket", lab.path("main.sock")))
        assert sorted(h["name"] for h in status["remote_hosts"]) == ["site-a", "site-b"]


def test_an_asker_that_goes_away_before_the_answer_is_no_error(tmp_path):
    """`upbx status` giving up (its timeout on a busy machine) closes the socket before the
    daemon answers: the daemon counts it and carries on, no traceback in its log."""
    from upbx.host.daemon import unix_path
    with LoopbackExchange(workdir=str(tmp_path)) as lab:
        lab.provision()
        lab.start()
        for _ in range(20):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, unix_path(lab.path("main.sock")) as path:
                s.connect(path)
                s.sendall(b"status\n" + bytes(100000))    # more than it reads: closing then resets the line
        status = json.loads(upbx_status("--json", "--socket", lab.path("main.sock")))
        assert status["stats"]["drops"].get("control client gone", 0) >= 1, status["stats"]["drops"]
        with open(lab.path("main.log")) as f:
            assert "Traceback" not in f.read()
