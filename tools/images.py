"""MicroPython images with upbx frozen in (firmware/manifest.py), and what an image file says.

- unix32_image(): the unix port built for i386 (the ESP32's word size, heap and 2**30 ms tick
  period), frozen or plain, built under build/ and cached. CI runs the handsets on it.
- esp32_image(): an ESP32 image for a board file, built by ESP-IDF's idf.py where it is installed.
- image_version(), has_frozen_upbx(): read from an image's bytes (upbx flash, upbx phone).

The MicroPython source is v1.28.0 (TESTED_TAG): `--micropython SRC`, else $UPBX_MICROPYTHON_SRC,
else ../shared/micropython beside the repository. It may be read-only: the unix port is built in
a copy under build/ (docs/handset.md, "The firmware image").
"""
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build"
MANIFEST = ROOT / "firmware" / "manifest.py"
TESTED_TAG = "v1.28.0"
SOURCE_ENV = "UPBX_MICROPYTHON_SRC"
CHECKOUT_HINT = ("a MicroPython %s checkout: git clone -b %s https://github.com/micropython/micropython, then "
                 "git submodule update --init lib/micropython-lib lib/axtls" % (TESTED_TAG, TESTED_TAG))
# The i386 unix port: cryptolib from axtls (no mbedtls), no ffi or btree (they need 32-bit libraries
# beyond gcc-multilib); frozen viper code compiled for x86, as the ESP32's is for xtensawin.
UNIX32_MAKE_FLAGS = ("MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0", "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=1",
                     "MICROPY_SSL_AXTLS=1", "MICROPY_SSL_MBEDTLS=0", "MPY_CROSS_FLAGS=-march=x86")
# mpy-cross -march of the frozen native code (@micropython.viper kernels, @micropython.native glue) per chip
# of a board file: ports/esp32 (esp32_common.cmake) sets the same for Xtensa targets itself; passing it
# makes the image's native code not depend on that default. Without it, makemanifest freezes native
# functions with no architecture and the image cannot run them.
CHIP_MARCH = {"esp32": "xtensawin", "esp32s3": "xtensawin"}
# what of the source tree the unix port needs: everything but the other ports, tests, docs, and lib/
# beyond these (a full checkout's lib/ holds hundreds of MB of SDKs for other ports)
UNIX_LIBS = ("axtls", "crypto-algorithms", "libm", "libm_dbl", "littlefs", "mbedtls_errors", "micropython-lib",
             "oofatfs", "re1.5", "uzlib")
SKIP_TOP = ("ports", "lib", "tests", "docs", "examples", ".git", ".github")
# .mpy format per MicroPython release (py/persistentcode.h: MPY_VERSION, MPY_SUB_VERSION): bytecode
# loads when the version matches, native code (our viper kernels) only when the sub-version does too.
MPY_VERSIONS = (((1, 23, 0), (6, 3)), ((1, 22, 0), (6, 2)), ((1, 20, 0), (6, 1)), ((1, 19, 0), (6, 0)),
                ((1, 12, 0), (5, 0)), ((1, 11, 0), (4, 0)), ((1, 9, 3), (3, 0)), ((0, 0, 0), (2, 0)))
NEWEST_KNOWN = (1, 29)   # the newest release checked against the table above
FROZEN_MARK = b"firmware/start.py\x00"   # a frozen module's name, as mp_frozen_names holds it


class ImageError(Exception):
    """An image cannot be built or read: the message says what is missing and how to get it."""


# --- the MicroPython source ---------------------------------------------------------------------

def micropython_source(src=None, need=("ports/unix/Makefile",)):
    """The MicroPython source directory; ImageError when it is missing or lacks a needed file."""
    given = src or os.environ.get(SOURCE_ENV)
    path = pathlib.Path(given or ROOT.parent / "shared" / "micropython").resolve()
    where = ("--micropython %s" % given) if src else ("$%s=%s" % (SOURCE_ENV, given) if given else str(path))
    if not path.is_dir():
        raise ImageError("no MicroPython source at %s: give --micropython SRC, %s" % (where, CHECKOUT_HINT))
    for rel in ("py/mpconfig.h", "mpy-cross/Makefile", "tools/makemanifest.py") + tuple(need):
        if not (path / rel).exists():
            raise ImageError("%s: not a usable MicroPython source, %s is missing (%s)" % (where, rel, CHECKOUT_HINT))
    return path


def source_version(src):
    """'1.28.0' from py/mpconfig.h."""
    text = (pathlib.Path(src) / "py" / "mpconfig.h").read_text()
    parts = [re.search(r"#define MICROPY_VERSION_%s (\d+)" % k, text) for k in ("MAJOR", "MINOR", "MICRO")]
    return ".".join(m.group(1) for m in parts) if all(parts) else "unknown"


def _unix_tree(src):
    """(relative path, stat) of every source file the unix build reads, sorted."""
    src = pathlib.Path(src)
    tops = [p for p in src.iterdir() if p.name not in SKIP_TOP]
    tops += [src / "ports" / "unix"] + [src / "lib" / name for name in UNIX_LIBS if (src / "lib" / name).exists()]
    found = []
    for top in tops:
        walk = [(str(top.parent), None, [top.name])] if top.is_file() else os.walk(top)
        for folder, dirs, names in walk:
            if dirs is not None:  # build outputs of a user's own builds are not source
                dirs[:] = sorted(d for d in dirs if not (d == "build" or d.startswith("build-") or d == ".git"))
            for name in names:
                path = pathlib.Path(folder, name)
                found.append((path.relative_to(src).as_posix(), path.lstat()))
    return sorted(found, key=lambda item: item[0])


def _fingerprint(entries):
    digest = hashlib.sha256()
    for rel, st in entries:
        digest.update(("%s %d %d\n" % (rel, st.st_size, st.st_mtime_ns)).encode())
    return digest.hexdigest()


def _copy_source(src, entries, dest, log):
    """Copy the unix port's part of src into dest (replacing what was there)."""
    fresh = dest.with_name(dest.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    for rel, _st in entries:
        target = fresh / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_symlink():
            os.symlink(os.readlink(src / rel), target)
        else:
            shutil.copy2(src / rel, target)
            target.chmod(target.stat().st_mode | 0o200)   # the source may be read-only; the copy is built in
    shutil.rmtree(dest, ignore_errors=True)
    fresh.rename(dest)
    log("build: copied MicroPython %s (%d files) from %s to %s" % (
        source_version(src), len(entries), src, os.path.relpath(dest, ROOT)))


@contextlib.contextmanager
def _locked(name):
    """An exclusive lock on build/NAME.lock: two processes asking at once build once."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / (name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- the 32-bit unix port -------------------------------------------------------------------------

def frozen_sources():
    """The files whose content the frozen image holds: the manifest and every .py of common/ and firmware/."""
    files = [MANIFEST] + sorted(p for package in ("common", "firmware") for p in (ROOT / package).rglob("*.py")
                                if "__pycache__" not in p.parts)
    return files


def _check_toolchain():
    for tool in ("make", "gcc"):
        if not shutil.which(tool):
            raise ImageError("%s not found: install build-essential (Debian/Ubuntu: apt-get install build-essential "
                             "gcc-multilib)" % tool)
    with tempfile.TemporaryDirectory() as tmp:
        probe = pathlib.Path(tmp, "probe.c")
        probe.write_text("#include <stdio.h>\nint main(void) { return 0; }\n")
        proc = subprocess.run(["gcc", "-m32", str(probe), "-o", str(probe.with_suffix(""))],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError("gcc cannot build 32-bit programs (gcc -m32: %s): install gcc-multilib (Debian/Ubuntu: "
                         "apt-get install gcc-multilib)" % (proc.stderr.strip().splitlines() or ["failed"])[-1])


def _make(argv, log_file, src):
    with open(log_file, "a") as out:
        out.write("$ %s\n" % " ".join(argv))
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=_make_env(src))
    if proc.returncode != 0:
        tail = pathlib.Path(log_file).read_text().splitlines()[-15:]
        raise ImageError("%s failed (exit %d); the end of %s:\n%s" % (
            " ".join(argv[:3]), proc.returncode, log_file, "\n".join(tail)))


def _make_env(src):
    env = dict(os.environ)
    for var in ("FROZEN_MANIFEST", "BUILD", "VARIANT", "MICROPY_MPYCROSS"):  # ours are on the command line
        env.pop(var, None)
    # the version in the image's banner (what `upbx flash` reads): the source's, not what git would
    # find above the copy (this repository)
    env["MICROPY_GIT_TAG"] = git_tag(src)
    return env


def git_tag(src):
    """The MicroPython version of src as its build names it: `git describe` where src is a checkout of
    its own (v1.28.0, or v1.28.0-12-gabcdef for a commit after the tag), else v + py/mpconfig.h's."""
    src = pathlib.Path(src)
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(src.parent))   # src itself, never a repository above it
    try:
        out = subprocess.run(["git", "describe", "--tags", "--dirty", "--always", "--match", "v[1-9].*"],
                             cwd=src, env=env, capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip().startswith("v"):
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "v" + source_version(src)


def unix32_image(frozen=True, micropython_src=None, log=print):
    """Path of a 32-bit unix port binary (frozen=True: firmware/manifest.py frozen in; False: plain).

    Built under build/ from a copy of the MicroPython source, rebuilt only when the source, the manifest
    or a frozen source changed; safe when two processes ask at once. Raises ImageError.
    """
    # micropython-lib: the port's own manifest requires from it (frozen or not); axtls: cryptolib
    src = micropython_source(micropython_src, need=["ports/unix/Makefile", "lib/micropython-lib/README.md",
                                                    "lib/axtls/ssl/tls1.c"])
    name = "unix32-" + ("frozen" if frozen else "plain")
    out = BUILD_DIR / name
    binary = out / "micropython"
    entries = _unix_tree(src)
    source_key = _fingerprint(entries)
    key = hashlib.sha256(json.dumps([source_key, git_tag(src), UNIX32_MAKE_FLAGS, frozen]).encode())
    if frozen:
        for path in frozen_sources():
            key.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    key = key.hexdigest()
    stamp = out / ".upbx-key"
    if binary.exists() and stamp.exists() and stamp.read_text() == key:
        return binary
    with _locked("micropython"):
        if binary.exists() and stamp.exists() and stamp.read_text() == key:
            return binary  # another process built it while this one waited
        _check_toolchain()
        started = time.monotonic()
        copy = BUILD_DIR / "micropython-src"
        copy_stamp = copy / ".upbx-source"
        if not (copy_stamp.exists() and copy_stamp.read_text() == source_key):
            _copy_source(src, entries, copy, log)
            copy_stamp.write_text(source_key)
        out.mkdir(parents=True, exist_ok=True)
        log_file = out / "build.log"
        log_file.write_text("")
        jobs = "-j%d" % (os.cpu_count() or 1)
        log("build: %s from MicroPython %s (log: %s)" % (name, source_version(src), os.path.relpath(log_file, ROOT)))
        _make(["make", "-C", str(copy / "mpy-cross"), jobs], log_file, src)
        argv = ["make", "-C", str(copy / "ports" / "unix"), jobs, "BUILD=build-32-" + name.split("-")[1]]
        argv += list(UNIX32_MAKE_FLAGS)
        if frozen:
            argv.append("FROZEN_MANIFEST=%s" % MANIFEST)
            # makemanifest regenerates only when an input is newer than its output: a file the
            # manifest stopped listing would stay frozen in. The key changed, so start it afresh
            (copy / "ports" / "unix" / ("build-32-" + name.split("-")[1]) / "frozen_content.c").unlink(missing_ok=True)
        _make(argv, log_file, src)
        built = copy / "ports" / "unix" / ("build-32-" + name.split("-")[1]) / "micropython"
        tmp = binary.with_name("micropython.new")
        shutil.copy2(built, tmp)
        tmp.rename(binary)   # a handset starting from the old binary keeps running it
        stamp.write_text(key)
        log("build: %s ready in %.0f s: %s" % (name, time.monotonic() - started, os.path.relpath(binary, ROOT)))
    return binary


# --- ESP32 images ---------------------------------------------------------------------------------

# MicroPython v1.28.0's OTA partition tables (ports/esp32): two application slots and otadata, the
# filesystem ("vfs") made at boot from the flash after them (ports/esp32/main.c)
OTA_TABLES = ((8, "partitions-8MiBplus-ota.csv"), (4, "partitions-4MiB-ota.csv"))
# ESP32_GENERIC's OTA variant (mpconfigvariant_OTA.cmake): its sdkconfig.ota names partitions-4MiB-ota.csv
# and builds for size, which the 1.5 MiB slots need
OTA_VARIANT = ("ESP32_GENERIC", "OTA", "boards/ESP32_GENERIC/sdkconfig.ota")
OTA_BOARD_VARIANT = "UPBX_OTA"   # the variant of a board directory upbx writes (esp32_plan)
ROLLBACK = "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE"


def ota_table(flash_mib):
    """The OTA partition table of MicroPython's ports/esp32 for a flash of flash_mib MiB."""
    for least, name in OTA_TABLES:
        if flash_mib >= least:
            return name
    raise ImageError("%d MiB of flash hold no two application slots (MicroPython's smallest OTA table is %s)"
                     % (flash_mib, OTA_TABLES[-1][1]))


def esp32_plan(board_data, port):
    """What `upbx build --image esp32` asks of ports/esp32 for a board file: {"board", "board_dir", "variant",
    "table", "files"}. A board with "ota": true gets MicroPython's OTA layout: ESP32_GENERIC's own OTA
    variant where that is the whole board (4 MiB, no other variant); else a board directory written under
    build/ (MicroPython's custom board, BOARD_DIR=) that is the port's board with one more variant,
    UPBX_OTA: the board's variant (if any), then the OTA table for the flash size, the flash size, and the
    bootloader's app roll-back. "files" maps each file written to its text."""
    image = board_data["micropython_image"]
    board_dir = port / "boards" / image["board"]
    plan = {"board": image["board"], "board_dir": board_dir, "variant": image.get("variant"), "table": None,
            "files": {}}
    if not image.get("ota"):
        return plan
    flash = image["flash_mib"]
    plan["table"] = ota_table(flash)
    if not (port / plan["table"]).exists():
        raise ImageError("%s has no %s (MicroPython %s's OTA partition table for %d MiB; board file %s says "
                         "\"ota\": true)" % (port, plan["table"], TESTED_TAG, flash, board_data["name"]))
    generic, variant, sdkconfig = OTA_VARIANT
    if (image["board"], image.get("variant"), flash) == (generic, None, 4) \
            and (board_dir / ("mpconfigvariant_%s.cmake" % variant)).exists() and (port / sdkconfig).exists():
        plan["variant"] = variant
        return plan
    ours = BUILD_DIR / ("esp32-%s-board" % board_data["name"]) / image["board"]
    plan["board_dir"], plan["variant"] = ours, OTA_BOARD_VARIANT
    lines = ["# Written by upbx build (tools/images.py) for boards/%s.json: MicroPython's OTA layout for %d MiB of "
             "flash" % (board_data["name"], flash)]
    for size in (4, 8, 16, 32):   # one choice of esptoolpy's flash size (as SIL_MANT1S's sdkconfig.board does)
        lines.append("CONFIG_ESPTOOLPY_FLASHSIZE_%dMB=%s" % (size, "y" if size == flash else ""))
    lines += ['CONFIG_ESPTOOLPY_FLASHSIZE="%dMB"' % flash, "CONFIG_PARTITION_TABLE_CUSTOM=y",
              'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="%s"' % plan["table"], ROLLBACK + "=y"]
    cmake = ["# Written by upbx build (tools/images.py): %s%s with the OTA layout" % (
        image["board"], " " + image["variant"] if image.get("variant") else "")]
    if image.get("variant"):
        cmake.append("include(${MICROPY_BOARD_DIR}/mpconfigvariant_%s.cmake)" % image["variant"])
    if flash == 4:   # MicroPython's own fragment for the 1.5 MiB slots: the table and building for size
        cmake.append("set(SDKCONFIG_DEFAULTS ${SDKCONFIG_DEFAULTS} %s)" % sdkconfig)
    cmake.append("set(SDKCONFIG_DEFAULTS ${SDKCONFIG_DEFAULTS} ${MICROPY_BOARD_DIR}/sdkconfig.upbx_ota)")
    plan["files"] = {"sdkconfig.upbx_ota": "\n".join(lines) + "\n",
                     "mpconfigvariant_%s.cmake" % OTA_BOARD_VARIANT: "\n".join(cmake) + "\n"}
    return plan


def _write_board_dir(plan, port_board_dir):
    """The port's board directory copied to plan["board_dir"], with plan["files"] added."""
    dest = plan["board_dir"]
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(port_board_dir, dest)
    for name, text in plan["files"].items():
        (dest / name).write_text(text)


def _sdkconfig_value(path, key):
    """A value of a built sdkconfig (quotes removed), or None when it is not set."""
    for line in pathlib.Path(path).read_text().splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def _check_ota_build(build, plan):
    """What ESP-IDF built has the OTA layout and the roll-back bootloader (else ImageError)."""
    from upbx.host.firmware import ota_slots, partition_table
    sdkconfig = build / "sdkconfig"
    if _sdkconfig_value(sdkconfig, ROLLBACK) != "y":
        raise ImageError("%s: %s is not set: the bootloader would not roll back an update that never marks "
                         "itself valid (MicroPython's boards/sdkconfig.base sets it; was it changed?)" % (sdkconfig, ROLLBACK))
    table = _sdkconfig_value(sdkconfig, "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME")
    if table != plan["table"]:
        raise ImageError("%s: the partition table is %r, not %s" % (sdkconfig, table, plan["table"]))
    slots = ota_slots(partition_table((build / "partition_table" / "partition-table.bin").read_bytes()))
    if slots is None:
        raise ImageError("%s: no otadata and two OTA application slots in it" % (
            build / "partition_table" / "partition-table.bin"))
    return slots


def esp32_image(board, micropython_src, out_dir, log=print, run=subprocess.run):
    """Build the ESP32 image a board file names, with upbx frozen in, and copy it to out_dir/BOARD.bin.

    Runs what MicroPython's ports/esp32/Makefile runs for `make BOARD=.. BOARD_VARIANT=..
    FROZEN_MANIFEST=..` (or BOARD_DIR=.. for a board directory of ours, esp32_plan): idf.py, then
    makeimg.py, which joins bootloader, partition table and application into the one image written at
    the board's flash offset. Needs ESP-IDF's idf.py.
    """
    from upbx.tools.deploy import board_schema
    board_data = board_schema().load_board(board)
    image = board_data["micropython_image"]
    if not micropython_src:
        raise ImageError("--image esp32 needs --micropython SRC: %s with ports/esp32" % CHECKOUT_HINT)
    src = micropython_source(micropython_src, need=["ports/esp32/CMakeLists.txt"])
    port = src / "ports" / "esp32"
    port_board_dir = port / "boards" / image["board"]
    if not (port_board_dir / "mpconfigboard.cmake").exists():
        raise ImageError("%s has no MicroPython board %s (board file %s names it)" % (port, image["board"], board))
    variant = image.get("variant")
    if variant and not (port_board_dir / ("mpconfigvariant_%s.cmake" % variant)).exists():
        raise ImageError("MicroPython board %s in %s has no variant %s (board file %s names it)" % (
            image["board"], port, variant, board))
    plan = esp32_plan(board_data, port)
    if not (src / "lib" / "micropython-lib" / "README.md").exists():
        raise ImageError("%s: lib/micropython-lib is empty: git submodule update --init lib/micropython-lib "
                         "(or make -C ports/esp32 submodules)" % src)
    if not shutil.which("idf.py"):
        raise ImageError("ESP-IDF's idf.py is not on PATH: install ESP-IDF (the version %s's ports/esp32/README.md "
                         "names) and run `. $IDF_PATH/export.sh` in this shell first" % TESTED_TAG)
    march = CHIP_MARCH.get(board_data.get("chip"))
    if march is None:
        raise ImageError("board file %s: chip %r has no known mpy-cross -march for its native code (known: %s)" % (
            board, board_data.get("chip"), ", ".join(sorted(CHIP_MARCH))))
    if plan["files"]:
        _write_board_dir(plan, port_board_dir)
    build_name = "esp32-" + board_data["name"]
    build = BUILD_DIR / build_name
    defines = ["-D", "MICROPY_BOARD=" + plan["board"], "-D", "MICROPY_BOARD_DIR=%s" % plan["board_dir"]]
    if plan["variant"]:
        defines += ["-D", "MICROPY_BOARD_VARIANT=" + plan["variant"]]
    defines += ["-D", "MICROPY_FROZEN_MANIFEST=%s" % MANIFEST, "-D", "MICROPY_CROSS_FLAGS=-march=" + march]
    env = dict(os.environ, UPBX_BOARD=str(board_schema().board_path(board).resolve()))
    steps = [["idf.py"] + defines + ["-B", str(build), "build"],
             ["python3", "makeimg.py", str(build / "sdkconfig"), str(build / "bootloader" / "bootloader.bin"),
              str(build / "partition_table" / "partition-table.bin"), str(build / "micropython.bin"),
              str(build / "firmware.bin"), str(build / "micropython.uf2")]]
    log("build: ESP32 image for %s: MicroPython %s %s%s from %s%s" % (
        board_data["name"], source_version(src), plan["board"], " " + plan["variant"] if plan["variant"] else "",
        src, "" if not plan["table"] else ", OTA layout %s, app roll-back" % plan["table"]))
    if plan["files"]:
        log("build: board directory %s (the port's %s, variant %s added)" % (
            plan["board_dir"], image["board"], plan["variant"]))
    for argv in steps:
        log("build: (in %s) %s" % (port, " ".join(argv)))
        proc = run(argv, cwd=port, env=env)
        if proc.returncode != 0:
            raise ImageError("%s failed (exit %d)" % (argv[0] if argv[0] == "idf.py" else argv[1], proc.returncode))
    if plan["table"]:
        try:
            slots = _check_ota_build(build, plan)
        except OSError as exc:   # a build that left no sdkconfig or partition table
            raise ImageError("%s: %s: not what an ESP-IDF build leaves" % (build, exc)) from None
        log("build: OTA slots %s, %d bytes each; the application is %d bytes" % (
            ", ".join(s["label"] for s in slots), min(s["size"] for s in slots), (build / "micropython.bin").stat().st_size))
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (board_data["name"] + ".bin")
    shutil.copyfile(build / "firmware.bin", target)
    log("build: %s (%d bytes); next: upbx flash --board %s --firmware %s --port PORT" % (
        target, target.stat().st_size, board_data["name"], target))
    if plan["table"]:
        log("build: over the air: upbx admin firmware add %s --version V" % target)
    return target


# --- what an image says about itself --------------------------------------------------------------

def image_version(path):
    """(major, minor, micro) of the MicroPython in an image (its banner), or None when there is none."""
    data = pathlib.Path(path).read_bytes()
    match = re.search(rb"MicroPython v(\d+)\.(\d+)(?:\.(\d+))?[ -]", data)   # releases before v1.19 had no .micro
    return tuple(int(g or 0) for g in match.groups()) if match else None


def has_frozen_upbx(path):
    """True when the image has upbx's modules frozen in (firmware/manifest.py)."""
    return FROZEN_MARK in pathlib.Path(path).read_bytes()


def mpy_version_loaded(version):
    """(mpy version, sub-version) that MicroPython `version` loads, per py/persistentcode.h."""
    for since, mpy in MPY_VERSIONS:
        if tuple(version) >= since:
            return mpy
    return MPY_VERSIONS[-1][1]


def mpy_version_written(mpy_cross):
    """(version, sub-version) of the .mpy files an mpy-cross writes ('... mpy-cross emitting mpy v6.3')."""
    out = subprocess.run([mpy_cross, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"mpy v(\d+)\.(\d+)", out)
    if not match:
        raise ImageError("cannot tell which .mpy version %s writes (--version said %r)" % (mpy_cross, out.strip()))
    return int(match.group(1)), int(match.group(2))


def main():
    """`python -m upbx.tools.images`: build (or find cached) the 32-bit unix ports the tests use, frozen and plain.
    Without gcc-multilib or the MicroPython source it says why and exits 0, or 1 under CI=true."""
    started = time.monotonic()
    try:
        for frozen in (True, False):
            unix32_image(frozen=frozen)
    except ImageError as exc:
        print("images: %s" % exc, file=sys.stderr)
        if os.environ.get("CI") == "true":
            return 1
        print("images: the tests that need the 32-bit build will skip", file=sys.stderr)
        return 0
    print("images: 32-bit unix ports ready in %.0f s" % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
