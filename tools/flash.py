"""`upbx flash`: erase an ESP32 and write a MicroPython image with esptool.

The image goes at 0x1000 on the ESP32 and at 0 on the ESP32-S3 (as on the
micropython.org download pages). When nothing answers on the port the command
says so in one line and exits 1 within a few seconds.
"""
import os
import subprocess
import sys

OFFSETS = {"esp32": 0x1000, "esp32s3": 0x0}
NO_ANSWER = ("no ESP32 answered on %s: check the cable (a data cable, not a charge-only one), "
             "hold BOOT while pressing EN/RESET to enter the bootloader, and that no other "
             "program (upbx console, mpremote, a serial monitor) has the port open")
NO_PORT = "no serial port %s: is the handset plugged in? (ls /dev/ttyUSB* /dev/ttyACM*)"


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    parser.add_argument("--firmware", required=True, help="MicroPython image (.bin) from micropython.org")
    parser.add_argument("--chip", choices=sorted(OFFSETS), default="esp32", help="target chip (default esp32)")
    parser.add_argument("--baud", type=int, default=460800, help="baud rate for writing (default 460800)")
    parser.add_argument("--connect-attempts", type=int, default=2,
                        help="esptool connection attempts before giving up (default 2, a few seconds)")
    parser.add_argument("--no-erase", action="store_true", help="skip erasing the whole flash first")
    parser.add_argument("--dry-run", action="store_true", help="print the esptool commands, run nothing")


def esptool_commands(port, firmware, chip="esp32", baud=460800, connect_attempts=2, erase=True):
    """The esptool command lines (argv lists) that erase and write the image."""
    base = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud),
            "--connect-attempts", str(connect_attempts)]
    commands = [base + ["erase-flash"]] if erase else []
    commands.append(base + ["write-flash", "%#x" % OFFSETS[chip], firmware])
    return commands


def run(args):
    commands = esptool_commands(args.port, args.firmware, args.chip, args.baud,
                                args.connect_attempts, not args.no_erase)
    if args.dry_run:
        for argv in commands:
            print(" ".join(argv))
        return 0
    if not os.path.isfile(args.firmware):
        print("flash: no firmware image %s (download one from https://micropython.org/download/)"
              % args.firmware, file=sys.stderr)
        return 1
    if not os.path.exists(args.port):
        print("flash: " + NO_PORT % args.port, file=sys.stderr)
        return 1
    print("flash: writing %s to %s at %#x on %s" % (args.firmware, args.chip, OFFSETS[args.chip], args.port))
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
    print("flash: done; next: upbx deploy --port %s --board BOARD" % args.port)
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
