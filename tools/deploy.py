"""`upbx deploy`: provision a handset over USB serial with mpremote.

Builds the firmware tree (upbx build), copies it to the device, writes the board
file as /board.json and the device configuration as /upbx_config.json, then
installs the board's micropython-lib packages with `mpremote mip install`
(unless --offline). With --frozen the handset runs an image with the firmware
frozen in (upbx build --image esp32): only main.py, board.json and the
configuration are written, and /common and /firmware are removed, since modules
on the filesystem shadow frozen ones. Every mpremote call uses `resume`: it never
soft-resets the device (the unix-port virtual handset exits on a soft reset; a
real handset's running main.py is interrupted with Ctrl-C instead).
"""
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from upbx.tools import build as build_tool

ROOT = build_tool.ROOT
DEFAULT_INDEX = "https://micropython.org/pi/v2"
CONFIG_FILE = "upbx_config.json"
BOARD_FILE = "board.json"
LIB_DIR = "lib"  # relative: the cwd is / on an ESP32, the device directory on the unix port
MPREMOTE_TIMEOUT = 120


class DeployError(Exception):
    """A deployment step failed; the message says which and why."""


def board_schema():
    """boards/schema.py (the board checker), loaded from the repository."""
    spec = importlib.util.spec_from_file_location("upbx_board_schema", ROOT / "boards" / "schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port of the handset (or a virtual handset's PTY)")
    parser.add_argument("--board", required=True, help="board name from boards/ (or a path to a board .json)")
    parser.add_argument("--offline", action="store_true", help="do not install mip packages")
    parser.add_argument("--index", default=DEFAULT_INDEX, help="mip package index (default %s)" % DEFAULT_INDEX)
    parser.add_argument("--wifi-ssid", help="Wi-Fi network name")
    parser.add_argument("--wifi-password", default="", help="Wi-Fi password")
    parser.add_argument("--host", help="remote host (or main host) address as ADDR:PORT")
    parser.add_argument("--extension", help="this handset's extension number")
    parser.add_argument("--secret", help="hex device secret from `upbx admin ext add` (at least 16 bytes)")
    parser.add_argument("--build-dir", default=str(build_tool.DEFAULT_OUT), help="where upbx build puts the tree")
    parser.add_argument("--src-root", default=str(ROOT), help="tree holding common/ and firmware/ (default: this repository)")
    parser.add_argument("--no-build", action="store_true", help="deploy the existing --build-dir as it is")
    parser.add_argument("--frozen", action="store_true",
                        help="the handset runs an image with the firmware frozen in (upbx build --image esp32): "
                             "write only main.py, board.json and the configuration, remove /common and /firmware")
    parser.add_argument("--reset", action="store_true",
                        help="hard-reset the handset afterwards so it starts the new firmware (real hardware only)")


def run(args):
    try:
        if args.frozen:
            deploy_frozen(args.port, args.board, config=config_from_args(args), reset=args.reset)
        else:
            deploy(args.port, args.board, build_dir=args.build_dir, src_root=args.src_root,
                   config=config_from_args(args), offline=args.offline, index=args.index,
                   rebuild=not args.no_build, reset=args.reset)
    except (DeployError, build_tool.BuildError) as exc:
        print("deploy: %s" % exc, file=sys.stderr)
        return 1
    except ValueError as exc:  # BoardError is a ValueError
        print("deploy: %s" % exc, file=sys.stderr)
        return 1
    return 0


def parse_host(text):
    """'ADDR:PORT' or '[v6addr]:PORT' -> (addr, port); ValueError names the problem."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text or "")
    if not m:
        raise ValueError("--host %r: expected ADDR:PORT, e.g. 198.18.0.10:4569" % text)
    addr, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 0 < int(port) < 65536:
        raise ValueError("--host %r: port out of range" % text)
    return addr, int(port)


def config_from_args(args):
    """The /upbx_config.json content, or None when no provisioning option was given."""
    given = [args.wifi_ssid, args.host, args.extension, args.secret]
    if not any(given):
        return None
    missing = [flag for flag, v in zip(("--wifi-ssid", "--host", "--extension", "--secret"), given) if not v]
    if missing:
        raise DeployError("provisioning needs %s as well" % ", ".join(missing))
    return make_config(args.wifi_ssid, args.wifi_password, args.host, args.extension, args.secret)


def make_config(wifi_ssid, wifi_password, host, extension, secret, board=None):
    addr, port = parse_host(host)
    if not re.fullmatch(r"[0-9]{1,15}", extension or ""):
        raise DeployError("--extension %r: digits only" % extension)
    try:
        raw = bytes.fromhex(secret)
    except ValueError:
        raise DeployError("--secret: not hex")
    if len(raw) < 16:
        raise DeployError("--secret: %d bytes, at least 16 needed" % len(raw))
    return {"version": 1, "board": board, "wifi_ssid": wifi_ssid, "wifi_password": wifi_password or "",
            "host": addr, "port": port, "extension": extension, "secret": raw.hex()}


# mpremote gives up when the board's answer to Ctrl-A is not there within its 10 s (a device busy
# printing, a slow USB bridge, a loaded machine): the command then never ran, so it is tried again
RAW_REPL_TRIES = 3


def mpremote(port, *command, timeout=MPREMOTE_TIMEOUT, log=None):
    """Run one mpremote command against the port (never soft-resetting); returns stdout."""
    argv = [_mpremote_binary(), "connect", port, "resume"] + list(command)
    for attempt in range(1, RAW_REPL_TRIES + 1):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DeployError("mpremote %s: no answer from %s within %ds" % (" ".join(command[:2]), port, timeout))
        if proc.returncode == 0:
            return proc.stdout
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        last = detail[-1] if detail else "exit %d" % proc.returncode
        if "could not enter raw repl" not in last or attempt == RAW_REPL_TRIES:
            break
        if log:
            log("mpremote %s on %s: the board did not enter the raw REPL; trying again (%d of %d)"
                % (" ".join(command[:2]), port, attempt + 1, RAW_REPL_TRIES))
    raise DeployError("mpremote %s on %s failed: %s" % (" ".join(command[:2]), port, last))


def _mpremote_binary():
    here = pathlib.Path(sys.executable).parent / "mpremote"
    path = str(here) if here.exists() else shutil.which("mpremote")
    if not path:
        raise DeployError("mpremote not found: pip install mpremote")
    return path


# removes the packages a .mpy deployment left on the device, which would shadow the frozen ones;
# prints how many files and directories went (paths relative: the cwd is / on an ESP32)
REMOVE_PACKAGES = """import os
def _rm(p):
    try:
        mode = os.stat(p)[0]
    except OSError:
        return 0
    n = 1
    if mode & 0x4000:
        for name in os.listdir(p):
            n += _rm(p + "/" + name)
        os.rmdir(p)
    else:
        os.remove(p)
    return n
print("removed", _rm("common"), _rm("firmware"), _rm("ota"), _rm("ota.json"))
"""
# an over-the-air update's slots and its choice (docs/operations.md): a deployment replaces them, or
# the slot would still be booted in front of what was just deployed
REMOVE_UPDATES = REMOVE_PACKAGES.replace('_rm("common"), _rm("firmware"), ', "")
FROZEN_MODULES = ("firmware/otaboot", "firmware/start", "firmware/app", "common/phone")


def deploy_frozen(port, board, config=None, reset=False, log=print):
    """Provision a handset whose image has the firmware frozen in: main.py, board.json, configuration."""
    board_data = board_schema().load_board(board)
    if not pathlib.Path(port).exists():
        raise DeployError("no serial port %s: is the handset plugged in?" % port)
    modules = mpremote(port, "exec", "help('modules')", log=log).split()
    missing = [m for m in FROZEN_MODULES if m not in modules]
    if missing:
        raise DeployError("--frozen: the MicroPython image on %s has no upbx firmware frozen in (no %s among its "
                          "modules): flash one built by `upbx build --image esp32 --board %s`, or deploy without "
                          "--frozen" % (port, ", ".join(missing), board_data["name"]))
    removed = mpremote(port, "exec", REMOVE_PACKAGES, log=log).split()
    log("deploy: removed /common and /firmware (%s files and directories): they would shadow the frozen modules"
        % (int(removed[1]) + int(removed[2])))
    if int(removed[3]) + int(removed[4]):
        log("deploy: removed an over-the-air update's ota/ and ota.json: the deployed firmware boots now")
    with tempfile.TemporaryDirectory(prefix="upbx-deploy-") as stage:
        stage = pathlib.Path(stage)
        (stage / BOARD_FILE).write_text(json.dumps(board_data, indent=1) + "\n")
        files = [(ROOT / "firmware" / "main.py", "main.py"), (stage / BOARD_FILE, BOARD_FILE)]
        if config is not None:
            config = dict(config, board=board_data["name"])
            (stage / CONFIG_FILE).write_text(json.dumps(config) + "\n")
            files.append((stage / CONFIG_FILE, CONFIG_FILE))
        for local, remote in files:
            mpremote(port, "fs", "cp", str(local), ":" + remote, log=log)
        log("deploy: %s -> %s (the rest is frozen in the image)" % (", ".join(r for _, r in files), port))
    if board_data["mip_packages"]:
        log("deploy: not installing %s: the image has the board's packages frozen in"
            % " ".join(board_data["mip_packages"]))
    if reset:
        mpremote(port, "reset", log=log)
    log("deploy: done")
    return board_data


def deploy(port, board, build_dir=build_tool.DEFAULT_OUT, src_root=ROOT, config=None, offline=False,
           index=DEFAULT_INDEX, rebuild=True, reset=False, log=print):
    """Build, copy, configure and (unless offline) install packages on one handset."""
    schema = board_schema()
    board_data = schema.load_board(board)
    build_dir = pathlib.Path(build_dir)
    if not pathlib.Path(port).exists():
        raise DeployError("no serial port %s: is the handset plugged in?" % port)
    if rebuild:
        build_tool.build(src_root, build_dir, log=log)
    entries = [p for p in sorted(build_dir.iterdir()) if not p.name.startswith(".")] if build_dir.is_dir() else []
    if not entries:
        raise DeployError("nothing to deploy in %s (run upbx build)" % build_dir)
    with tempfile.TemporaryDirectory(prefix="upbx-deploy-") as stage:
        stage = pathlib.Path(stage)
        (stage / BOARD_FILE).write_text(json.dumps(board_data, indent=1) + "\n")
        copies = [str(p) for p in entries]
        log("deploy: copying %s to %s" % (", ".join(p.name for p in entries), port))
        # ':.' and not ':' as the destination: mpremote's recursive cp tests whether
        # the destination exists, and '' does not exist on the unix port
        mpremote(port, "fs", "cp", "-r", *copies, ":.", log=log)
        if sum(int(n) for n in mpremote(port, "exec", REMOVE_UPDATES, log=log).split()[1:]):
            log("deploy: removed an over-the-air update's ota/ and ota.json: the deployed firmware boots now")
        mpremote(port, "fs", "cp", str(stage / BOARD_FILE), ":" + BOARD_FILE, log=log)
        log("deploy: board %s -> %s" % (board_data["name"], BOARD_FILE))
        if config is not None:
            config = dict(config, board=board_data["name"])
            (stage / CONFIG_FILE).write_text(json.dumps(config) + "\n")
            mpremote(port, "fs", "cp", str(stage / CONFIG_FILE), ":" + CONFIG_FILE, log=log)
            log("deploy: configuration for extension %s (host %s:%d, Wi-Fi %r) -> %s"
                % (config["extension"], config["host"], config["port"], config["wifi_ssid"], CONFIG_FILE))
    packages = board_data["mip_packages"]
    if packages and not offline:
        log("deploy: mip install %s from %s into %s/" % (" ".join(packages), index, LIB_DIR))
        out = mpremote(port, "mip", "install", "--target", LIB_DIR, "--index", index, *packages, log=log)
        log(out.rstrip())
    elif packages:
        log("deploy: --offline: not installing %s" % " ".join(packages))
    if reset:
        mpremote(port, "reset", log=log)
    log("deploy: done")
    return board_data
