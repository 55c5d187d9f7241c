"""`upbx phone`: a virtual handset, the real firmware under the MicroPython unix port.

Settings come from a TOML file ([phone] table, see docs/config.md) or flags;
the script flags (--call, --answer, --duration ...) drive it without a person.

`upbx phone` is also the handset's watchdog and power supply: the firmware feeds it over
UDP (127.0.0.1) from its loop; a phone that stops feeding for --watchdog-ms is killed, as a
hardware watchdog resets a CPU, and with --restart it boots again with the same flash
directory, as it does after a crash (exit status 1) or `!reset` (3) (docs/handset.md).
"""
import argparse
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from upbx.host.config import ConfigError, load_phone_config, parse_hostport
from upbx.tools.images import has_frozen_upbx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micropython():
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    return here if os.path.exists(here) else "micropython"


# mpy-cross -march for this machine's unix port (viper needs native code); None: run from source
NATIVE_MARCH = {"x86_64": "x64", "amd64": "x64", "i686": "x86", "i386": "x86", "armv7l": "armv7m"}.get(
    platform.machine().lower())
# the native architecture field of sys.implementation._mpy (bits 10 and up; py/persistentcode.h)
MPY_ARCH = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em", 7: "armv7emsp",
            8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc"}


def binary_march(binary):
    """The mpy-cross -march that a MicroPython binary loads (from its sys.implementation._mpy)."""
    try:
        out = subprocess.run([binary, "-c", "import sys; print(sys.implementation._mpy)"],
                             capture_output=True, text=True, timeout=20)
        return MPY_ARCH.get(int(out.stdout.strip()) >> 10)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def compiled_tree(march=None):
    """common/ and firmware/ as .mpy for a unix port (this machine's by default), as a handset holds them
    (cached, rebuilt when a source is newer). Compiling source at import takes more heap than a small heap
    has: the unix port then imports .mpy, as an ESP32 does. Returns the directory, or None when mpy-cross
    cannot target the CPU."""
    march = march or NATIVE_MARCH
    if march is None:
        return None
    from upbx.tools import build as build_tool
    out = os.path.join(ROOT, "build", "unix-" + march)
    stamp = os.path.join(out, build_tool.MARKER)
    newest = max([os.path.getmtime(os.path.join(ROOT, rel)) for rel, _ in build_tool.sources(ROOT)]
                 + [os.path.getmtime(build_tool.__file__)])  # the build's flags are part of the tree
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= newest:
        return out
    fresh = "%s.%d" % (out, os.getpid())
    saved = build_tool.MARCH
    build_tool.MARCH = march  # the same build as `upbx build`, for this CPU instead of the ESP32
    try:
        build_tool.build(ROOT, fresh, log=lambda *a: None)
    finally:
        build_tool.MARCH = saved
    # swap the new tree in whole: another phone may be starting from the old one
    old = fresh + ".old"
    if os.path.exists(out):
        os.rename(out, old)
    os.rename(fresh, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


CTRL_C = b"\x03"


def stop_handset(proc, watchdog=None, fed_from=None, grace_s=3.0):
    """Ctrl-C to the firmware (it logs out and writes its summary), then SIGKILL if it does not end.

    A handset that has fed the watchdog (fed_from: the address its feeds came from) gets Ctrl-C as
    0x03 on the watchdog socket, raised in its next feed as a device raises it (firmware/hal/unix.py).
    SIGINT is the unix port's asynchronous KeyboardInterrupt: one that lands in the garbage collector
    leaves the heap locked and the handset cannot log out ("memory allocation failed, heap is
    locked"), so only a handset that never fed (or that ignores the byte: a hung loop) gets it."""
    if watchdog is not None and fed_from is not None:
        try:
            watchdog.sendto(CTRL_C, fed_from)
            return proc.wait(grace_s)
        except OSError:
            pass                    # the firmware's socket is gone: it is on its way out
        except subprocess.TimeoutExpired:
            pass                    # a loop that does not feed any more
    try:
        proc.send_signal(signal.SIGINT)
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def flash_layout(workdir, frozen, tree):
    """(what runs the firmware: the script's arguments, MICROPYPATH) for a handset whose flash is workdir.

    Source (the default): the repository's firmware/main.py, modules from the repository. A frozen
    image or .mpy files (tree): the flash holds main.py and, for .mpy, common/ and firmware/ as links
    to the compiled tree, as `upbx deploy` lays out a device, and main.py runs from there as a module
    (`-m main`), so module paths are the device's ("firmware/app.mpy"): the unix port puts a script's
    absolute directory first in sys.path, and every module imported through it keeps that directory
    in its `__file__`, an interned string that stays on the heap (28 modules: 2.6 KB more heap with
    a pytest temporary directory than on a device). A frozen image gets no module on the flash: one
    there would shadow its frozen twin.
    """
    source_main = os.path.join(ROOT, "firmware", "main.py")
    if not frozen and tree is None:
        return [source_main], ROOT + ":.frozen"
    for package in ("common", "firmware"):
        link = os.path.join(workdir, package)
        if os.path.islink(link):
            os.unlink(link)
        elif os.path.exists(link):
            raise ValueError("%s is not a link this tool made: remove it (modules in the flash shadow "
                             "frozen ones)" % link)
        if tree is not None:
            os.symlink(os.path.join(tree, package), link)
    shutil.copyfile(source_main, os.path.join(workdir, "main.py"))
    return ["-m", "main"], ":.frozen"


def add_arguments(parser):
    parser.add_argument("--config", help="TOML file with a [phone] table")
    parser.add_argument("--extension", help="extension number (overrides the file)")
    parser.add_argument("--secret", help="hex secret from `upbx admin ext add`")
    parser.add_argument("--host", help="HOST:PORT of the remote host, or the main host where the site has none")
    parser.add_argument("--bind", default="0.0.0.0", help="local address to bind")
    parser.add_argument("--send", dest="audio_in", help='microphone: a WAV file (8 kHz, 16-bit mono) or "tone:HZ"')
    parser.add_argument("--record", dest="audio_out", help="write what the speaker plays to this WAV file")
    parser.add_argument("--record-g711", help="write each received frame (4-byte timestamp + payload) here")
    parser.add_argument("--record-sent-g711", help="write each voice frame sent (4-byte timestamp + payload) here")
    parser.add_argument("--call", help="dial this number once registered")
    parser.add_argument("--call-after", type=float, default=0.0, help="seconds to wait before dialing")
    parser.add_argument("--duration", type=float, help="hang up this many seconds after the call is answered")
    parser.add_argument("--answer", action="store_true", help="answer incoming calls automatically")
    parser.add_argument("--answer-after", type=float, metavar="SECONDS",
                        help="answer incoming calls automatically after they rang this long (default 0.3)")
    parser.add_argument("--dtmf", help="digits to send once connected")
    parser.add_argument("--exit-after", type=float, help="quit after this many seconds")
    parser.add_argument("--exit-after-call", action="store_true", help="quit when the first call ends")
    parser.add_argument("--summary", help="write a JSON summary of the run here")
    parser.add_argument("--flash-dir", help="keep the handset's flash (config, system information) in this "
                                            "directory; default: a temporary one, removed at exit")
    parser.add_argument("--tone-timeout", type=float, help="busy and reorder stop by themselves after this many "
                                                            "seconds (default 30)")
    parser.add_argument("--no-plc", action="store_true", help="turn packet loss concealment off")
    parser.add_argument("--rebalance", type=_seconds, metavar="SECONDS",
                        help="at a cluster's node: an idle phone whose rendezvous order starts with another node moves "
                             "there between half this and this after it noticed (default 300; 0: only at its next "
                             "login; docs/cluster.md)")
    parser.add_argument("--codec", choices=("ulaw", "alaw"),
                        help="G.711 law of the handset (default ulaw); an A-law phone's host converts (docs/features.md)")
    parser.add_argument("--vad", action="store_true",
                        help="silence suppression: no voice frames in silence, comfort-noise frames instead")
    parser.add_argument("--profile", type=int, metavar="TICKS",
                        help="measure the firmware's CPU time per 20 ms call tick (up to TICKS ticks) and put "
                             "median, p99 and worst per kind of tick in the summary (docs/benchmarks.md)")
    parser.add_argument("--profile-spin", action="store_true",
                        help="with --profile: the loop polls instead of sleeping between ticks, keeping this "
                             "machine's caches the handset's (the warm figure of `upbx bench handset`; busy-waits "
                             "a CPU: for measuring only)")
    parser.add_argument("--callgrind", metavar="FILE",
                        help="run the firmware under valgrind's callgrind, which counts the instructions it "
                             "executes into FILE (`upbx bench handset --instructions`; about 50 times slower)")
    parser.add_argument("--heapsize", default="2M",
                        help="MicroPython heap, e.g. 100K for an ESP32-WROOM without PSRAM (default 2M)")
    parser.add_argument("--mpy", action="store_true",
                        help="run the firmware compiled to .mpy (as on a handset) instead of from source")
    parser.add_argument("--micropython", metavar="PATH",
                        help="the MicroPython binary the handset runs (default: the unix port in this venv), "
                             "e.g. a 32-bit build from `upbx build --image unix32`")
    parser.add_argument("--ticks-start", type=int, metavar="MS",
                        help="start the handset's tick counter (time.ticks_ms) here, e.g. 1073738000 on a 32-bit "
                             "build to cross its 2**30 ms wrap 3.8 s after boot (negative: back from the wrap)")
    parser.add_argument("--restart", action="store_true",
                        help="boot the firmware again (same flash) after a crash, !reset or a watchdog reset, "
                             "as a device does")
    parser.add_argument("--watchdog-ms", type=int, default=10000, metavar="MS",
                        help="kill (reset) the firmware when its loop has not fed the watchdog for this long "
                             "(default 10000, as on the ESP32)")
    parser.add_argument("--fault", action="append", default=[], metavar="FAULT",
                        help='inject a fault from boot, e.g. "getaddrinfo EHOSTUNREACH 3", "sendto EAGAIN 20", '
                             '"hang", "raise" (repeatable; the console line "!fault ..." does it later)')


def _seconds(text):
    """A number of seconds, 0 or more (argparse names the flag and the value it refuses)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds: %r" % text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more seconds: %r" % text)
    return value


def device_config(args):
    """The JSON the firmware reads (what `upbx deploy` writes to a real handset)."""
    values = {}
    if args.config:
        cfg = load_phone_config(args.config)
        values = {"extension": cfg.extension, "secret": cfg.secret.hex(), "host": cfg.host[0],
                  "port": cfg.host[1], "audio_in": cfg.audio_in, "audio_out": cfg.audio_out, "vad": cfg.vad}
    if args.extension:
        values["extension"] = args.extension
    if args.secret:
        values["secret"] = args.secret
    if args.host:
        values["host"], values["port"] = parse_hostport(args.host)
    for key in ("audio_in", "audio_out"):
        if getattr(args, key):
            values[key] = os.path.abspath(getattr(args, key)) if not getattr(args, key).startswith("tone:") else getattr(args, key)
    missing = [k for k in ("extension", "secret", "host") if k not in values]
    if missing:
        raise ValueError("missing %s (give --config or the flags)" % ", ".join(missing))
    values["bind"] = args.bind
    values["plc"] = not args.no_plc
    if getattr(args, "codec", None):
        values["codec"] = args.codec
    if args.vad:
        values["vad"] = True
    if getattr(args, "profile", None):
        values["profile"] = args.profile
        if getattr(args, "profile_spin", False):
            values["profile_spin"] = True
    if args.ticks_start is not None:
        values["ticks_start"] = args.ticks_start
    if args.tone_timeout is not None:
        values["tone_timeout_ms"] = int(args.tone_timeout * 1000)
    if getattr(args, "rebalance", None) is not None:
        values["rebalance_s"] = args.rebalance
    if args.fault:
        values["faults"] = list(args.fault)
    script = {}
    if args.call:
        script["call"] = args.call
        script["call_after_ms"] = int(args.call_after * 1000)
    if args.duration:
        script["duration_ms"] = int(args.duration * 1000)
    if args.answer or args.answer_after is not None:
        script["answer"] = True
    if args.answer_after is not None:
        script["answer_after_ms"] = int(args.answer_after * 1000)
    if args.dtmf:
        script["dtmf"] = args.dtmf
    if args.exit_after:
        script["exit_after_ms"] = int(args.exit_after * 1000)
    if args.exit_after_call:
        script["exit_after_call"] = True
    if args.summary:
        script["summary"] = os.path.abspath(args.summary)
    if args.record_g711:
        script["record_g711"] = os.path.abspath(args.record_g711)
    if args.record_sent_g711:
        script["record_sent_g711"] = os.path.abspath(args.record_sent_g711)
    values["script"] = script
    return values


def run(args):
    try:
        values = device_config(args)
    except (ConfigError, ValueError) as exc:
        print("upbx phone: %s" % exc, file=sys.stderr)
        return 2
    # the handset's flash: kept where --flash-dir says (it survives restarts, like a device's),
    # else a temporary directory removed when the phone stops
    workdir = args.flash_dir or tempfile.mkdtemp(prefix="upbx-phone-")
    os.makedirs(workdir, exist_ok=True)
    values["sysinfo_file"] = os.path.join(workdir, "sysinfo.json")
    path = os.path.join(workdir, "upbx_config.json")
    binary = os.path.abspath(args.micropython) if args.micropython else micropython()  # it runs in the flash dir
    if args.micropython and not os.access(args.micropython, os.X_OK):
        print("upbx phone: --micropython %s: not an executable file" % args.micropython, file=sys.stderr)
        return 2
    frozen = bool(args.micropython) and has_frozen_upbx(binary)
    if frozen and args.mpy:
        print("upbx phone: --mpy: %s has the firmware frozen in; it loads no .mpy files" % binary, file=sys.stderr)
        return 2
    tree = None
    if args.mpy:
        march = binary_march(binary) if args.micropython else NATIVE_MARCH
        tree = compiled_tree(march)
        if tree is None:
            print("upbx phone: --mpy: cannot tell which .mpy architecture %s loads" % binary, file=sys.stderr)
            return 2
    try:
        main_args, path_env = flash_layout(workdir, frozen, tree)
    except ValueError as exc:
        print("upbx phone: %s" % exc, file=sys.stderr)
        return 2
    env = dict(os.environ, MICROPYPATH=path_env)
    argv = [binary, "-X", "heapsize=" + args.heapsize, *main_args, path]
    if args.callgrind:
        if not shutil.which("valgrind"):
            print("upbx phone: --callgrind needs valgrind on PATH (Debian: apt-get install valgrind)", file=sys.stderr)
            return 2
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + os.path.abspath(args.callgrind), *argv]
    watchdog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    watchdog.bind(("127.0.0.1", 0))
    values["watchdog_port"] = watchdog.getsockname()[1]
    with open(path, "w") as f:
        json.dump(values, f)
    try:
        return supervise(argv, env, workdir, watchdog, args.watchdog_ms, args.restart)
    finally:
        watchdog.close()
        if not args.flash_dir:
            shutil.rmtree(workdir, ignore_errors=True)


RESET_STATUS = {1: "crashed", 3: "was reset (!reset)"}
WATCHDOG_STATUS = 4   # what `upbx phone` returns after a watchdog reset without --restart


def supervise(argv, env, cwd, watchdog, watchdog_ms, restart):
    """Run the firmware as a device runs: fed by its loop or reset, and booted again if asked."""
    boots = 0
    supervisor = os.getpid()
    while True:
        boots += 1
        # its own session: a terminal's Ctrl-C (SIGINT to the terminal's foreground process group) reaches
        # this process only, which hands it on as 0x03 (stop_handset), never the firmware's C code directly;
        # the firmware still reads its console from the terminal (not its controlling terminal: no SIGTTIN)
        proc = subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=lambda: _die_with_parent(supervisor))
        fed_from = []
        try:
            status, why = watch(proc, watchdog, watchdog_ms, fed_from)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (tools.cli): the handset logs out and writes its summary
            stop_handset(proc, watchdog, fed_from[0] if fed_from else None)
            raise
        if status == 0:
            return 0
        if not restart:
            print("upbx phone: the firmware %s (--restart boots it again)" % why, file=sys.stderr, flush=True)
            return status
        print("upbx phone: the firmware %s: booting it again (boot %d, same flash)" % (why, boots + 1),
              file=sys.stderr, flush=True)
        time.sleep(0.2)


def _die_with_parent(parent):
    """In the firmware's process before exec: SIGKILL when `upbx phone` ends, however it ends (its own
    session takes the firmware out of the terminal's and a lab's process group, whose signals ended it)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass   # no prctl (not Linux): a firmware whose supervisor was killed outright runs on
    if os.getppid() != parent:   # it ended before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1   # linux/prctl.h


def watch(proc, watchdog, watchdog_ms, fed_from=None):
    """Wait for the firmware to end, or kill it when its feeds stop: (status, what happened).

    The watchdog is armed by the first feed (a device's HAL starts its WDT) and parked by "park"
    (the loop ended on purpose: Ctrl-C, !quit, the script's end). fed_from (a list) gets the
    address the feeds come from, where stop_handset sends Ctrl-C."""
    fed = None
    while True:
        ready, _, _ = select.select([watchdog], [], [], 0.1)
        if ready:
            message, source = watchdog.recvfrom(16)
            fed = None if message == b"park" else time.monotonic()
            if fed_from is not None and not fed_from:
                fed_from.append(source)
        status = proc.poll()
        if status is not None:
            return status, RESET_STATUS.get(status, "exited with status %d" % status)
        if fed is not None and (time.monotonic() - fed) * 1000 > watchdog_ms:
            proc.kill()
            proc.wait()
            return WATCHDOG_STATUS, "stopped feeding the watchdog for %d ms: watchdog reset" % watchdog_ms
