"""SIGTERM (what timeout, systemd and CI send) ends `upbx demo`, `upbx bench` and `upbx phone` as
Ctrl-C does: every process they started is gone and every temporary file removed.

Each command runs with TMPDIR pointing at an empty directory of the test's own; "left behind"
means a process whose command line or working directory is in there, or a file in there.
"""
import os
import signal
import socket
import subprocess
import sys
import time

from tests.support import ROOT, micropython_binary


def processes_under(directory):
    """PIDs (other than ours) whose command line or working directory mentions directory."""
    mark = str(directory)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            cwd = os.readlink("/proc/%s/cwd" % entry)
        except OSError:
            continue   # gone meanwhile, or not ours to read
        if mark in cmdline or cwd.startswith(mark):
            found.append((int(entry), cmdline.strip()))
    return found


def run_then_terminate(tmp_path, argv, started, timeout=60):
    """Start argv with TMPDIR in tmp_path, wait until started(tmpdir) is true, send SIGTERM.

    Returns (exit status, processes left, files left); kills leftovers so a failure leaves nothing.
    """
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    proc = subprocess.Popen([sys.executable, "-m", "upbx.tools.cli"] + argv, cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not started(tmpdir):
            assert proc.poll() is None, "exited before it was stopped: %s" % proc.stderr.read().decode()
            assert time.monotonic() < deadline, "did not get going within %d s" % timeout
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(30)
        # children killed on the way out take a moment to die under load: wait (bounded) for them to go
        deadline = time.monotonic() + 5
        while processes_under(tmpdir) and time.monotonic() < deadline:
            time.sleep(0.05)
        return status, processes_under(tmpdir), sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid, _cmd in processes_under(tmpdir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def handsets_running(tmpdir):
    return any("firmware/main.py" in cmd for _pid, cmd in processes_under(tmpdir))


def test_sigterm_to_demo_stops_hosts_and_handsets_and_removes_its_files(tmp_path):
    micropython_binary()
    # the demo starts three daemons and logs its remote hosts in before any handset: on a machine
    # busy with other tests that can take well over a minute; what is checked is the clean exit
    status, procs, files = run_then_terminate(tmp_path, ["demo"], handsets_running, timeout=240)
    assert status == 128 + signal.SIGTERM
    assert procs == [], procs
    assert files == [], files


def test_sigterm_to_bench_stops_its_main_host_and_removes_its_files(tmp_path):
    def main_host_running(tmpdir):
        return any(" main --config " in cmd for _pid, cmd in processes_under(tmpdir))
    status, procs, files = run_then_terminate(tmp_path, ["bench", "relay", "--quick"], main_host_running)
    assert status == 128 + signal.SIGTERM
    assert procs == [], procs
    assert files == [], files


def test_sigterm_to_phone_logs_it_out_and_removes_its_flash(tmp_path):
    micropython_binary()
    summary = tmp_path / "summary.json"
    # the "host" is a socket of ours: the first HELLO on it says the firmware's loop runs (a Ctrl-C
    # while the firmware still imports ends it before it has anything to log out or summarise)
    host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host.bind(("127.0.0.1", 0))
    host.setblocking(False)

    def loop_running(_tmpdir):
        try:
            return bool(host.recv(2048))
        except BlockingIOError:
            return False

    argv = ["phone", "--extension", "101", "--secret", "00" * 16, "--host", "127.0.0.1:%d" % host.getsockname()[1],
            "--bind", "127.0.0.1", "--summary", str(summary), "--exit-after", "120"]
    try:
        status, procs, files = run_then_terminate(tmp_path, argv, loop_running)
    finally:
        host.close()
    assert status == 128 + signal.SIGTERM
    assert procs == [] and files == [], (procs, files)
    # the firmware got Ctrl-C rather than a kill: it ended its loop and wrote its summary
    assert summary.exists()
