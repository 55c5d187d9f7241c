"""The Raspberry Pi install (docs/raspberry-pi.md): the systemd units and example configuration in host/systemd/.

- `systemd-analyze verify` passes, silently, on both units as shipped, except for one
  change: verify checks that ExecStart's program exists, so the copies it reads run
  this venv's `upbx` instead of /opt/upbx/bin/upbx (nothing else is changed).
- `systemd-analyze security --offline=true` rates both units at or below the exposure
  measured when they were written (EXPOSURE).
- Each daemon runs the way its unit runs it, with the example configuration (paths moved
  into a temporary directory, ports onto loopback): no systemd runs here, so the test
  does what the unit tells systemd to do, with the kernel's own means: an unprivileged
  user and group (numeric ids of no account, as `upbx` would be), the unit's UMask,
  StateDirectory and RuntimeDirectory made with the unit's modes, no capabilities (empty
  bounding and ambient sets), no new privileges (setpriv), and in a mount namespace the
  whole file system read-only except those two directories (ProtectSystem=strict) with
  /root and /home emptied (ProtectHome=yes; this machine's Python lives in /root/.pyenv,
  so that one directory is mounted back read-only, as /opt/upbx is visible on a Pi).
  The files the daemons create have the modes the guide promises, `upbx status` answers
  root and a member of the group and no one else, signalling leaves marked CS3 without
  any capability, no memory is writable and executable (MemoryDenyWriteExecute=), every
  socket is AF_UNIX or AF_INET (RestrictAddressFamilies=), and SIGTERM (systemctl stop)
  ends each daemon with status 0, its socket removed and its state kept. The seccomp
  filters and the Protect* settings of the kernel's own interfaces are not exercised here.
  The daemons load none of the bench or device libraries (numpy, scipy, pesq, esptool, pyserial).
- The guide's drop-in for a port below 1024 verifies, rates as measured, and gives the
  main host CAP_NET_BIND_SERVICE and nothing else; without it the port is refused.
"""
import contextlib
import grp
import os
import pathlib
import pwd
import random
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from upbx.common import wire
from upbx.common.login import Login
from upbx.host.config import load_main_config, load_remote_config
from upbx.host.daemon import query_status
from tests.support import require_root, require_tool
from upbx.tools.lab import free_port

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNITS = ROOT / "host" / "systemd"
GUIDE = ROOT / "docs" / "raspberry-pi.md"
UPBX = pathlib.Path(sys.executable).parent / "upbx"
INSTALLED = "/opt/upbx/bin/upbx"
NAMES = ("upbx-main.service", "upbx-remote.service")
# systemd-analyze security --offline=true, systemd 252 (Debian 12), when the units were written
EXPOSURE = {"upbx-main.service": 1.1, "upbx-remote.service": 1.1, "upbx-main.service + low-port.conf": 1.4}
CS3 = 24 << 2
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)


def unit(name, text=None):
    """{section: [(key, value)]} of a unit file (or of text, a drop-in), repeated keys kept in order."""
    sections, current = {}, None
    for line in (text if text is not None else (UNITS / name).read_text()).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def service(name):
    """The [Service] settings of a unit, the last value of each key."""
    return dict(unit(name)["Service"])


def capabilities(name, dropin=None):
    """The capabilities the service is given (AmbientCapabilities=; an empty value resets it): ["net_bind_service"]."""
    caps = []
    for text in [(UNITS / name).read_text()] + ([dropin] if dropin else []):
        for key, value in unit(name, text).get("Service", []):
            if key == "AmbientCapabilities":
                caps = caps + [c.lower()[len("cap_"):] for c in value.split()] if value else []
    return caps


def guide_dropin():
    """The drop-in the guide gives for a port below 1024."""
    blocks = [b for b in re.findall(r"```ini\n(.*?)```", GUIDE.read_text(), re.S) if "CAP_NET_BIND_SERVICE" in b]
    assert len(blocks) == 1
    return blocks[0]


def systemd_analyze():
    return require_tool("systemd-analyze", "apt-get install systemd")


# --- the units as systemd reads them ---------------------------------------------------

def test_both_units_verify_with_this_venvs_upbx(tmp_path):
    """verify checks that ExecStart's program exists: the copies run this venv's upbx, nothing else changes."""
    tool = systemd_analyze()
    assert UPBX.exists()
    copies = []
    for name in NAMES:
        text = (UNITS / name).read_text()
        assert text.count("ExecStart=%s " % INSTALLED) == 1
        copy = tmp_path / name
        copy.write_text(text.replace("ExecStart=%s " % INSTALLED, "ExecStart=%s " % UPBX))
        copies.append(str(copy))
    result = subprocess.run([tool, "verify"] + copies, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")   # warnings (an unknown key) too
    # and as shipped, the one complaint is the program that is not installed here
    result = subprocess.run([tool, "verify", str(UNITS / NAMES[0])], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Command %s is not executable" % INSTALLED in result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_units_exposure_stays_at_most_what_was_measured(name):
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", str(UNITS / name)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for %s: (\d+\.\d+)" % re.escape(name), result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= EXPOSURE[name], result.stdout


def _unit_with_guide_dropin(tmp_path):
    """A copy of upbx-main.service (ExecStart: this venv's upbx) with the guide's low-port drop-in beside it."""
    name = NAMES[0]
    copy = tmp_path / name
    copy.write_text((UNITS / name).read_text().replace("ExecStart=%s " % INSTALLED, "ExecStart=%s " % UPBX))
    (tmp_path / (name + ".d")).mkdir()
    (tmp_path / (name + ".d") / "low-port.conf").write_text(guide_dropin())
    return copy


def test_the_guides_low_port_dropin_verifies_and_grants_one_capability(tmp_path):
    tool = systemd_analyze()
    copy = _unit_with_guide_dropin(tmp_path)
    result = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    result = subprocess.run([tool, "security", "--offline=true", str(copy)], capture_output=True, text=True,
                            timeout=120)
    found = re.search(r"Overall exposure level for %s: (\d+\.\d+)" % re.escape(NAMES[0]), result.stdout)
    assert found and float(found.group(1)) <= EXPOSURE[NAMES[0] + " + low-port.conf"], result.stdout
    granted = [line for line in result.stdout.splitlines() if line.startswith("\u2717 CapabilityBoundingSet=")]
    assert len(granted) == 1 and "CAP_NET_(BIND_SERVICE|BROADCAST|RAW)" in granted[0], granted
    assert capabilities(NAMES[0]) == [] and capabilities(NAMES[0], guide_dropin()) == ["net_bind_service"]


def test_units_run_the_daemons_unprivileged_restart_them_and_log_to_the_journal():
    for name, command in zip(NAMES, ("main", "remote")):
        s = service(name)
        assert s["ExecStart"] == "%s %s --config /etc/upbx/%s.toml" % (INSTALLED, command, command)
        assert (s["User"], s["Group"], s["Restart"], s["RestartPreventExitStatus"]) == ("upbx", "upbx", "on-failure", "2")
        assert s["CapabilityBoundingSet"] == "" and s["AmbientCapabilities"] == "" and s["NoNewPrivileges"] == "yes"
        assert (s["ProtectSystem"], s["ProtectHome"], s["PrivateTmp"]) == ("strict", "yes", "yes")
        assert (s["StateDirectory"], s["StateDirectoryMode"]) == ("upbx", "0700")
        assert (s["RuntimeDirectory"], s["RuntimeDirectoryMode"], s["RuntimeDirectoryPreserve"]) == ("upbx", "0750", "yes")
        assert "StandardError" not in s and "StandardOutput" not in s   # systemd's default: the journal
        assert s["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
        assert dict(unit(name)["Install"]) == {"WantedBy": "multi-user.target"}
        # the main host relays media: ahead of batch work for its CPU (docs/relay.md, "Scheduling and the hop's tail")
        assert s.get("Nice") == ("-5" if command == "main" else None)
    # a configuration error exits 2: the unit must not restart it in a loop
    bad = subprocess.run([str(UPBX), "main", "--config", "/nonexistent/main.toml"], capture_output=True, text=True)
    assert bad.returncode == 2 and "/nonexistent/main.toml" in bad.stderr


# --- the example configuration ----------------------------------------------------------

def _toml_blocks(text):
    return re.findall(r"```toml\n(.*?)```", text, re.S)


def test_example_configuration_uses_absolute_paths_under_the_units_directories():
    for name, section, keys in (("main.toml", "main", ("database", "control_socket")),
                                ("remote.toml", "remote", ("records_database", "directory_cache", "control_socket"))):
        table = tomllib.loads((UNITS / name).read_text())[section]
        for key in keys:
            assert table[key].startswith(("/var/lib/upbx/", "/run/upbx/")), (name, key, table[key])
    assert load_main_config(UNITS / "main.toml").control_socket == "/run/upbx/main.sock"
    assert load_remote_config(UNITS / "remote.toml").directory_cache == "/var/lib/upbx/remote-cache.json"
    # the guide shows these very files
    blocks = _toml_blocks(GUIDE.read_text())
    assert (UNITS / "main.toml").read_text() in blocks and (UNITS / "remote.toml").read_text() in blocks


# --- the daemons, run as their units run them --------------------------------------------

SANDBOX = r"""
set -e
top=$1 state=$2 run=$3 base=$4 stage=$5 uid=$6 gid=$7 groups=$8 umask_=$9 caps=${10}
shift 10
# StateDirectory=, RuntimeDirectory=: writable; everything else read-only (ProtectSystem=strict)
mount --bind "$state" "$state"
mount --bind "$run" "$run"
[ -z "$base" ] || mount --bind "$base" "$stage"
for mp in $(awk '{print $5}' /proc/self/mountinfo); do
  case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$state"|"$run") continue;; esac
  # a mount point gone meanwhile (another test's network namespace) is nothing to protect
  mount -o remount,bind,ro "$mp" 2>/dev/null || [ ! -e "$mp" ] || echo "sandbox: $mp stays writable" >&2
done
# ProtectHome=yes: no home directories (the interpreter mounted back when it lives in one)
for home in /root /home /run/user; do
  if [ -d "$home" ]; then mount -t tmpfs -o mode=0755 tmpfs "$home"; fi
done
if [ -n "$base" ]; then mkdir -p "$base"; mount --bind "$stage" "$base"; mount -o remount,bind,ro "$base"; fi
for home in /root /home /run/user; do
  if [ -d "$home" ]; then mount -o remount,ro "$home"; fi
done
if touch "$top/.writable" 2>/dev/null || touch /.writable 2>/dev/null; then
  echo "sandbox: the file system is not read-only" >&2; exit 97
fi
if [ -n "$groups" ]; then keep="--groups=$groups"; else keep=--clear-groups; fi
# AmbientCapabilities= (the same in CapabilityBoundingSet=), or none at all
if [ -n "$caps" ]; then
  capopts="--inh-caps=-all,+$caps --ambient-caps=+$caps --bounding-set=-all,+$caps"
else
  capopts="--inh-caps=-all --bounding-set=-all"
fi
# User=, Group=, NoNewPrivileges=yes, UMask=, a clean environment
exec setpriv --reuid="$uid" --regid="$gid" "$keep" $capopts --no-new-privs -- \
  env -i PATH=/usr/bin:/bin HOME="$state" LANG=C.UTF-8 /bin/sh -c 'umask '"$umask_"'; exec "$@"' sh "$@"
"""


def _free_ids(n):
    """n numbers that are neither a user's nor a group's id here."""
    taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    return [i for i in range(64100, 65000) if i not in taken][:n]


class Pi:
    """A temporary /etc/upbx, /var/lib/upbx and /run/upbx, and the service user, group, a member and someone else."""

    def __init__(self, top):
        self.top = top
        self.uid, self.member, self.other = _free_ids(3)
        self.gid = self.uid
        self.etc = top / "etc" / "upbx"
        self.state = top / "var" / "lib" / "upbx"
        self.run = top / "run" / "upbx"
        self.stage = top / "interpreter"
        self.base = sys.base_prefix if sys.base_prefix.startswith(("/root/", "/home/")) else ""
        self.ports = {"main": free_port(), "remote": free_port()}
        for d in (self.etc, self.state.parent, self.run.parent, self.stage):
            d.mkdir(parents=True)
        # /etc/upbx as the guide makes it: root:upbx 0750
        os.chown(self.etc, 0, self.gid)
        os.chmod(self.etc, 0o750)
        self.procs = {}

    def make_service_directories(self, name):
        """What systemd does before ExecStart: StateDirectory= and RuntimeDirectory=, owned by User=, with their modes."""
        s = service(name)
        for path, mode in ((self.state, s["StateDirectoryMode"]), (self.run, s["RuntimeDirectoryMode"])):
            path.mkdir(exist_ok=True)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, int(mode, 8))

    def config(self, name, replacements, owner, mode):
        """The example file with its paths moved under top and the replacements made, written into etc."""
        text = (UNITS / name).read_text()
        text = text.replace('"/var/lib/upbx/', '"%s/' % self.state).replace('"/run/upbx/', '"%s/' % self.run)
        for old, new in replacements:
            assert old in text, old
            text = text.replace(old, new)
        path = self.etc / name
        path.write_text(text)
        os.chown(path, *owner)
        os.chmod(path, mode)
        return path

    def command(self, uid, gid, groups, umask, argv, caps=()):
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", SANDBOX, "sandbox",
                str(self.top), str(self.state), str(self.run), self.base, str(self.stage), str(uid), str(gid), groups, umask,
                ",+".join(caps)] + argv

    def as_user(self, argv, uid=None, groups="", umask="0022"):
        """Run argv (upbx ...) in the sandbox as uid (default: the service user); a CompletedProcess."""
        uid = self.uid if uid is None else uid
        gid = self.gid if uid == self.uid else uid
        return subprocess.run(self.command(uid, gid, groups, umask, argv), capture_output=True, text=True, timeout=60)

    def start(self, name, dropin=None):
        """ExecStart of the unit (and a drop-in's capabilities), run as the unit runs it; the daemon's process."""
        s = service(name)
        argv = s["ExecStart"].replace(INSTALLED, str(UPBX), 1).replace("/etc/upbx/", "%s/" % self.etc).split()
        log = open(self.top / (name + ".log"), "w")
        proc = subprocess.Popen(self.command(self.uid, self.gid, "", s["UMask"], argv, capabilities(name, dropin)),
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name):
        return (self.top / (name + ".log")).read_text()

    def wait_for(self, what, check, proc, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError("daemon exited (%s) before %s" % (proc.returncode, what))
            with contextlib.suppress(OSError, ValueError):
                if check():
                    return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s" % what)

    def stop_all(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def pi():
    require_root()
    require_tool("unshare", "apt-get install util-linux")
    require_tool("setpriv", "apt-get install util-linux")
    top = pathlib.Path(tempfile.mkdtemp(prefix="upbx-pi-"))
    os.chmod(top, 0o755)   # the service user walks into it, as into / on a Pi
    box = Pi(top)
    try:
        yield box
    finally:
        box.stop_all()
        shutil.rmtree(top, ignore_errors=True)


def _mode(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _wx_mappings(pid):
    with open("/proc/%d/maps" % pid) as f:
        return [line for line in f if "w" in line.split()[1] and "x" in line.split()[1]]


def _socket_families(pid):
    """The address family of every socket the process holds: 'unix', 'inet', 'inet6' or 'other'."""
    tables = {}
    for family, files in (("inet", ("udp", "tcp")), ("inet6", ("udp6", "tcp6")), ("unix", ("unix",))):
        for name in files:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                rows = f.read().splitlines()[1:]
            column = 6 if family == "unix" else 9
            tables.update((row.split()[column], family) for row in rows if len(row.split()) > column)
    found = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        with contextlib.suppress(OSError):
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            if target.startswith("socket:["):
                found.append(tables.get(target[8:-1], "other"))
    return sorted(found)


def _challenge_tos(port, host_name, secret):
    """The TOS byte of the CHALLENGE the main host answers a HELLO with."""
    login = Login(wire.IE_HOST_NAME, host_name, secret, 77, os.urandom)
    login.start(0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        for hello in login.datagrams_to_send(0):
            sock.sendto(hello, ("127.0.0.1", port))
        ready, _w, _x = select.select([sock], [], [], 10)
        assert ready, "no CHALLENGE"
        data, ancillary, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(1))
    assert wire.parse_full(data)[3] == wire.CHALLENGE
    return [c[2][0] for c in ancillary if c[:2] == (socket.IPPROTO_IP, socket.IP_TOS)]


def test_the_daemons_run_as_their_units_with_the_example_configuration(pi):
    main_unit, remote_unit = NAMES
    pi.make_service_directories(main_unit)
    main_toml = pi.config("main.toml", [('"0.0.0.0:4569"', '"127.0.0.1:%d"' % pi.ports["main"])], (0, pi.gid), 0o640)

    # provisioning as the guide does it: `sudo -u upbx upbx admin --config /etc/upbx/main.toml ...`
    for argv in (["site", "add", "a"], ["host", "add", "site-a", "--site", "a"], ["ext", "add", "101", "--site", "a"]):
        done = pi.as_user([str(UPBX), "admin", "--config", str(main_toml)] + argv)
        assert done.returncode == 0, done.stderr
        if argv[:2] == ["host", "add"]:
            secret = done.stdout.strip()
    assert re.fullmatch("[0-9a-f]{32}", secret)

    main = pi.start(main_unit)
    main_socket = pi.run / "main.sock"
    pi.wait_for("the main host's control socket", lambda: query_status(str(main_socket), 1)["name"] == "main", main)

    # the remote host's file holds its secret: upbx's own, 0600
    remote_toml = pi.config("remote.toml", [('"0.0.0.0:4570"', '"127.0.0.1:%d"' % pi.ports["remote"]),
                                            ('"main.example.net:4569"', '"127.0.0.1:%d"' % pi.ports["main"]),
                                            ('"00000000000000000000000000000000"', '"%s"' % secret)],
                            (pi.uid, pi.gid), 0o600)
    pi.make_service_directories(remote_unit)     # the same directories: both units name upbx
    remote = pi.start(remote_unit)
    remote_socket = pi.run / "remote.sock"
    cache = pi.state / "remote-cache.json"
    pi.wait_for("site-a logged in, its directory cached",
                lambda: query_status(str(remote_socket), 1)["main"]["state"] == "up" and cache.exists(), remote)

    # the files the guide promises, while both run
    service_user = (pi.uid, pi.gid)
    assert _mode(pi.state) == (0o700,) + service_user
    assert _mode(pi.run) == (0o750,) + service_user
    for name in ("main.sqlite", "remote-records.sqlite", "remote-cache.json"):
        assert _mode(pi.state / name) == (0o600,) + service_user, name
    for extra in pi.state.rglob("*"):   # -wal, -shm: whatever SQLite made, also 0600; voicemail folders 0700
        assert _mode(extra) == (0o700 if extra.is_dir() else 0o600,) + service_user, extra.name
    for sock in (main_socket, remote_socket):
        assert _mode(sock) == (0o660,) + service_user and stat.S_ISSOCK(os.stat(sock).st_mode)
    assert _mode(remote_toml) == (0o600,) + service_user and _mode(main_toml) == (0o640, 0, pi.gid)
    assert "holds a secret" not in pi.log(remote_unit)    # the daemon's warning about a looser file

    # `upbx status`: root, a member of the group, and nobody else
    for sock in (main_socket, remote_socket):
        assert subprocess.run([str(UPBX), "status", "--socket", str(sock)], capture_output=True).returncode == 0
        member = pi.as_user([str(UPBX), "status", "--json", "--socket", str(sock)], uid=pi.member, groups=str(pi.gid))
        assert member.returncode == 0, member.stderr
        other = pi.as_user([str(UPBX), "status", "--socket", str(sock)], uid=pi.other)
        assert other.returncode == 1 and "Permission denied" in other.stderr, other.stderr
    member = pi.as_user([str(UPBX), "status", "--config", str(main_toml)], uid=pi.member, groups=str(pi.gid))
    assert member.returncode == 0 and "main (pid %d)" % main.pid in member.stdout, member.stdout + member.stderr

    # DSCP without capabilities: signalling leaves the main host marked CS3
    assert _challenge_tos(pi.ports["main"], "site-a", bytes.fromhex(secret)) == [CS3]
    for proc in (main, remote):
        assert _wx_mappings(proc.pid) == []
        with open("/proc/%d/maps" % proc.pid) as f:   # a Pi's host part loads no bench or device library
            assert not re.search(r"/(numpy|scipy|pesq|esptool|serial)/", f.read())
        families = _socket_families(proc.pid)
        assert "inet" in families and "unix" in families and set(families) <= {"unix", "inet", "inet6"}, families
        with open("/proc/%d/status" % proc.pid) as f:
            status = f.read()
        assert re.search(r"^Uid:\s+%d\s" % pi.uid, status, re.M) and re.search(r"^CapEff:\s+0+$", status, re.M)
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)

    # systemctl stop: SIGTERM, status 0, the socket gone, the state kept for the next start (or upgrade)
    for proc, sock in ((remote, remote_socket), (main, main_socket)):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not sock.exists()
    assert sorted(p.name for p in pi.state.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "main.sqlite", "main.sqlite.voicemail", "remote-cache.json", "remote-records.sqlite",
        "remote-records.sqlite.voicemail"]
    assert "Traceback" not in pi.log(main_unit) + pi.log(remote_unit)


def _free_low_port():
    """A UDP port below 1024 that is free on loopback, when such ports are privileged here."""
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        first_unprivileged = int(f.read())
    if first_unprivileged < 1024:
        pytest.skip("ports from %d up need no capability on this machine" % first_unprivileged)
    for port in random.sample(range(600, 1024), 424):   # not the same one as a run beside this one
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with contextlib.suppress(OSError):
                sock.bind(("127.0.0.1", port))
                return port
    pytest.fail("no free UDP port below 1024")


def test_a_port_below_1024_needs_the_guides_dropin_and_nothing_more(pi):
    name = NAMES[0]
    port = _free_low_port()
    pi.make_service_directories(name)
    pi.config("main.toml", [('"0.0.0.0:4569"', '"127.0.0.1:%d"' % port)], (0, pi.gid), 0o640)
    # the unit as shipped: no capability, so the port is refused (systemd would try again, then give up)
    refused = pi.start(name)
    assert refused.wait(30) == 1
    assert "key 'main.listen': cannot listen on UDP 127.0.0.1:%d: Permission denied" % port in pi.log(name)
    # with the guide's drop-in: CAP_NET_BIND_SERVICE and nothing else
    main = pi.start(name, guide_dropin())
    pi.wait_for("the main host on port %d" % port,
                lambda: query_status(str(pi.run / "main.sock"), 1)["name"] == "main", main)
    assert "listen=127.0.0.1:%d" % port in pi.log(name)
    with open("/proc/%d/status" % main.pid) as f:
        status = f.read()
    bind_service = 1 << 10
    for field in ("CapEff", "CapBnd", "CapAmb"):
        assert int(re.search(r"^%s:\s+([0-9a-f]+)$" % field, status, re.M).group(1), 16) == bind_service, field
    main.send_signal(signal.SIGTERM)
    assert main.wait(30) == 0
