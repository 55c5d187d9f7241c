"""`upbx flash`: erase an ESP32 and write a MicroPython image with esptool.

The chip and the offset come from the board file (--board): the image goes at
0x1000 on the ESP32 and at 0 on the ESP32-S3 (as on the micropython.org download
pages). Before touching the port it reads the MicroPython version from the image
and refuses one that cannot load the .mpy files `upbx deploy` writes (an image
with the firmware frozen in, from `upbx build --image esp32`, needs none). When
nothing answers on the port the command says so in one line and exits 1 within a
few seconds.
"""
import os
import subprocess
import sys

from upbx.tools import images
from upbx.tools.build import mpy_cross_binary

NO_ANSWER = ("no ESP32 answered on %s: check the cable (a data cable, not a charge-only one), "
             "hold BOOT while pressing EN/RESET to enter the bootloader, and that no other "
             "program (upbx console, mpremote, a serial monitor) has the port open")
NO_PORT = "no serial port %s: is the handset plugged in? (ls /dev/ttyUSB* /dev/ttyACM*)"


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--firmware", required=True,
                        help="MicroPython image (.bin): from micropython.org, or upbx build --image esp32 (frozen)")
    parser.add_argument("--board", required=True,
                        help="board name from boards/ (or a board .json): gives the chip and the flash offset")
    parser.add_argument("--baud", type=int, default=460800, help="baud rate for writing (default 460800)")
    parser.add_argument("--connect-attempts", type=int, default=2,
                        help="esptool connection attempts before giving up (default 2, a few seconds)")
    parser.add_argument("--no-erase", action="store_true", help="skip erasing the whole flash first")
    parser.add_argument("--dry-run", action="store_true", help="print the esptool commands, run nothing")


def esptool_commands(port, firmware, chip, offset, baud=460800, connect_attempts=2, erase=True):
    """The esptool command lines (argv lists) that erase and write the image at offset."""
    base = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud),
            "--connect-attempts", str(connect_attempts)]
    commands = [base + ["erase-flash"]] if erase else []
    commands.append(base + ["write-flash", "%#x" % offset, firmware])
    return commands


def check_image(path, log=print):
    """None when the image can run upbx (frozen in, or loads the .mpy files upbx deploy writes), else why not."""
    if not os.path.isfile(path):
        return "no firmware image %s (download one from https://micropython.org/download/ or build one with " \
               "upbx build --image esp32)" % path
    version = images.image_version(path)
    if images.has_frozen_upbx(path):
        log("flash: %s has the upbx firmware frozen in (MicroPython %s): it needs no .mpy files; deploy with "
            "upbx deploy --frozen" % (path, "v%d.%d.%d" % version if version else "of unknown version"))
        return None
    if version is None:
        return "%s: no MicroPython version in it (no \"MicroPython vX.Y.Z\" banner): is it a MicroPython image?" % path
    name = "v%d.%d.%d" % version
    loads = images.mpy_version_loaded(version)
    writes = images.mpy_version_written(mpy_cross_binary())
    if tuple(version[:2]) > images.NEWEST_KNOWN:
        log("flash: MicroPython %s is newer than the releases upbx knows (v%d.%d): taking it to load .mpy v%d.%d "
            "as v%d.%d does" % ((name,) + images.NEWEST_KNOWN + loads + images.NEWEST_KNOWN))
    if loads != writes:
        return ("%s is MicroPython %s, which loads .mpy v%d.%d; upbx deploy writes .mpy v%d.%d with native code "
                "(the viper kernels), which loads only where version and sub-version match (py/persistentcode.h): "
                "flash MicroPython %s or later (upbx is tested with %s), or an image with the firmware frozen in "
                "(upbx build --image esp32)" % ((path, name) + loads + writes + (_first_release(writes), images.TESTED_TAG)))
    log("flash: %s is MicroPython %s: it loads the .mpy v%d.%d files upbx deploy writes" % ((path, name) + loads))
    return None


def _first_release(mpy):
    """The oldest MicroPython release that loads this .mpy version."""
    since = [v for v, m in images.MPY_VERSIONS if m == mpy]
    return "v%d.%d" % min(since)[:2] if since else "(none known)"


def run(args):
    from upbx.tools.deploy import board_schema
    try:
        board = board_schema().load_board(args.board)
    except ValueError as exc:  # BoardError
        print("flash: %s" % exc, file=sys.stderr)
        return 1
    chip = board["chip"]
    problem = check_image(args.firmware)
    if problem:
        print("flash: " + problem, file=sys.stderr)
        return 1
    commands = esptool_commands(args.port, args.firmware, chip, board["flash_offset"], args.baud,
                                args.connect_attempts, not args.no_erase)
    if args.dry_run:
        for argv in commands:
            print(" ".join(argv))
        return 0
    if not os.path.exists(args.port):
        print("flash: " + NO_PORT % args.port, file=sys.stderr)
        return 1
    print("flash: writing %s to %s (%s) at %#x on %s" % (args.firmware, chip, board["name"], board["flash_offset"],
                                                       args.port))
    for argv in commands:
        rc, output = _run_streaming(argv)
        if rc != 0:
            if "Failed to connect" in output or "No serial data received" in output:
                print("flash: " + NO_ANSWER % args.port, file=sys.stderr)
            elif "could not open port" in output:
                print("flash: cannot open %s (permissions? add yourself to the dialout group)" % args.port,
                      file=sys.stderr)
            else:
                print("flash: esptool failed (exit %d) running: %s" % (rc, " ".join(argv[2:])), file=sys.stderr)
            return 1
    print("flash: done; next: upbx deploy%s --port %s --board %s" % (
        " --frozen" if images.has_frozen_upbx(args.firmware) else "", args.port, board["name"]))
    return 0


def _run_streaming(argv):
    """Run esptool, echoing its output (progress bars included) as it comes."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = bytearray()
    while True:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    return proc.wait(), seen.decode("utf-8", "replace")
