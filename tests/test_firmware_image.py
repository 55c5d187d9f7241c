"""The firmware image: firmware/manifest.py, `upbx build --image unix32|esp32`.

The manifest is read by MicroPython's own tools/manifestfile.py (from ../shared/micropython,
v1.28.0). The unix32 image is really built (tools.build.unix32_image, cached under build/). ESP-IDF
cannot be installed here: a recorder stands in for idf.py on PATH and the test checks the exact
command lines `upbx build --image esp32` runs, and that it refuses clearly without ESP-IDF.
"""
import json
import os
import pathlib
import re
import stat
import subprocess
import sys

import pytest

from tests.support import ROOT
from upbx.tools import images

PY = sys.executable
BOARD = "esp32-wrover-devkitc-inmp441"


def upbx(*args, env=None, timeout=300):
    return subprocess.run([PY, "-m", "upbx.tools.cli"] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def shared_source():
    try:
        return images.micropython_source(None, need=["tools/manifestfile.py"])
    except images.ImageError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def frozen_files(port_dir, board=None):
    """target paths firmware/manifest.py freezes for a port, as MicroPython's manifestfile.py lists them."""
    src = shared_source()
    env = dict(os.environ, UPBX_BOARD=str(ROOT / "boards" / (board + ".json"))) if board else None
    out = subprocess.run([PY, str(src / "tools" / "manifestfile.py"), "--freeze", "--top", str(src), "--port",
                          str(port_dir), "--lib", str(src / "lib" / "micropython-lib"), str(images.MANIFEST)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr + out.stdout
    return re.findall(r"target_path='([^']*)'", out.stdout)


# --- firmware/manifest.py ---------------------------------------------------------------------

def test_manifest_freezes_the_packages_on_the_unix_ports_own_manifest():
    files = frozen_files(shared_source() / "ports" / "unix")
    assert "asyncio/core.py" in files and "ssl.py" in files          # the unix standard variant's own
    assert "common/wire.py" in files and "firmware/app.py" in files and "firmware/audio/jitter.py" in files
    assert "firmware/main.py" not in files and "firmware/manifest.py" not in files   # main.py stays on the flash
    assert "ssd1306.py" not in files


def test_manifest_takes_the_esp32_boards_manifest_and_the_boards_packages(tmp_path):
    port = tmp_path / "ports" / "esp32"
    (port / "boards").mkdir(parents=True)
    (port / "modules").mkdir()
    (port / "modules" / "_boot.py").write_text("import gc\n")
    # as MicroPython's ports/esp32/boards/manifest.py begins
    (port / "boards" / "manifest.py").write_text('freeze("$(PORT_DIR)/modules")\ninclude("$(MPY_DIR)/extmod/asyncio")\n')
    files = frozen_files(port, "esp32-devkitc-inmp441")
    assert "_boot.py" in files and "asyncio/core.py" in files
    assert "common/phone.py" in files and "firmware/hal/esp32.py" in files
    assert "ssd1306.py" in files                     # the board has a display
    assert "ssl.py" not in files                     # nothing of the unix port's
    assert "ssd1306.py" not in frozen_files(port, "esp32-lyrat-v4.3")   # no display, no driver


# --- upbx build --image unix32 ------------------------------------------------------------------

def test_unix32_image_is_the_32bit_port_with_the_firmware_frozen_in(tmp_path, unix32_frozen):
    r = upbx("build", "--image", "unix32", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    binary = tmp_path / "out" / "micropython"
    assert binary.read_bytes() == pathlib.Path(unix32_frozen).read_bytes()   # the cached build, copied
    probe = ("import sys, time, firmware.app, common.wire\n"
             "print(sys.implementation.version[:3], sys.implementation._mpy >> 10, time.ticks_add(0, -1) + 1,"
             " common.wire.VERSION)\n")
    out = subprocess.run([str(binary), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, MICROPYPATH=".frozen"))
    # MicroPython 1.28.0, x86 native code (as mpy-cross -march=x86), ticks wrap at 2**30 ms as on an ESP32
    assert out.stdout.split() == ["(1,", "28,", "0)", "1", str(2 ** 30), "2"], out.stdout + out.stderr
    assert images.has_frozen_upbx(binary) and images.image_version(binary) == (1, 28, 0)


# the per-frame functions of the media path and the loop that the image carries as native code
NATIVE = ("common.media:MediaLeg.seal_mini", "common.media:MediaLeg.open_mini", "common.crypto:HmacKey.mac_into",
          "common.crypto:CounterMode.crypt", "common.crypto:ReplayWindow.check", "common.wire:check_mini",
          "common.phone:Phone.open_media", "firmware.audio.jitter:JitterBuffer.put",
          "firmware.audio.pipeline:AudioPipeline.playout", "firmware.audio.vad:VoiceActivityDetector.update",
          "firmware.app:App._loop", "firmware.app:App.capture", "firmware.app:App.receive")
# prints, per name, whether the function is bytecode, native or viper: by its type against functions of each
# kind compiled here (all three print as "function"; MicroPython gives each emitter its own type)
KIND_PROBE = """
import micropython
def bytecode():
    pass
@micropython.native
def native():
    pass
@micropython.viper
def viper():
    pass
kinds = {type(bytecode): "bytecode", type(native): "native", type(viper): "viper"}
for name in %r:
    module, path = name.split(":")
    obj = __import__(module)
    for part in module.split(".")[1:] + path.split("."):
        obj = getattr(obj, part)
    print(name, kinds.get(type(obj), "other"))
"""


def function_kinds(binary, names, cwd, micropypath):
    out = subprocess.run([str(binary), "-X", "heapsize=1M", "-c", KIND_PROBE % (tuple(names),)], cwd=cwd,
                         capture_output=True, text=True, env=dict(os.environ, MICROPYPATH=micropypath), timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(line.split() for line in out.stdout.splitlines())


def test_image_carries_the_media_path_as_native_code_and_the_mpy_build_as_bytecode(tmp_path, unix32_frozen,
                                                                                  unix32_plain):
    """The frozen image: the @micropython.native glue frozen as native code (makemanifest passes mpy-cross
    -march), the viper kernels too. The .mpy build (upbx build, upbx deploy) keeps the glue as bytecode: a
    handset loads .mpy native code into executable RAM (docs/handset.md, Native code)."""
    names = NATIVE + ("common.kernels:sha256_blocks", "common.g711:ulaw_encode_into")
    frozen = function_kinds(unix32_frozen, names, tmp_path, ".frozen")
    assert frozen == dict([(n, "native") for n in NATIVE] + [("common.kernels:sha256_blocks", "viper"),
                                                            ("common.g711:ulaw_encode_into", "bytecode")])
    from upbx.tools.phone import binary_march, compiled_tree
    tree = compiled_tree(binary_march(unix32_plain))
    mpy = function_kinds(unix32_plain, names, tmp_path, tree)
    assert mpy == dict([(n, "bytecode") for n in NATIVE] + [("common.kernels:sha256_blocks", "viper"),
                                                           ("common.g711:ulaw_encode_into", "bytecode")])


def test_unix32_image_is_cached(unix32_frozen):
    before = os.stat(unix32_frozen).st_mtime_ns
    said = []
    assert str(images.unix32_image(frozen=True, log=said.append)) == unix32_frozen
    assert said == [] and os.stat(unix32_frozen).st_mtime_ns == before


def test_unix32_image_without_a_micropython_source_says_what_to_give(tmp_path):
    r = upbx("build", "--image", "unix32", "--out", str(tmp_path / "out"), "--micropython", str(tmp_path / "none"))
    assert r.returncode == 1
    assert "no MicroPython source at --micropython %s" % (tmp_path / "none") in r.stderr
    assert "git clone -b v1.28.0 https://github.com/micropython/micropython" in r.stderr
    (tmp_path / "half").mkdir()
    r = upbx("build", "--image", "unix32", "--out", str(tmp_path / "out"), "--micropython", str(tmp_path / "half"))
    assert r.returncode == 1 and "py/mpconfig.h is missing" in r.stderr


def test_unix32_image_without_gcc_multilib_says_so(tmp_path):
    shared_source()
    # a gcc that cannot build 32-bit programs, as Debian's without gcc-multilib, and an empty build
    # directory: the toolchain check must stop the build before anything is copied there
    fake = tmp_path / "bin"
    fake.mkdir()
    gcc = fake / "gcc"
    gcc.write_text("#!/bin/sh\nfor a; do [ \"$a\" = -m32 ] && { echo 'fatal error: bits/libc-header-start.h: "
                   "No such file or directory' >&2; exit 1; }; done\nexec /usr/bin/gcc \"$@\"\n")
    gcc.chmod(gcc.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH="%s:%s" % (fake, os.environ["PATH"]))
    code = ("import pathlib, sys\nfrom tools import images\nimages.BUILD_DIR = pathlib.Path(sys.argv[1])\n"
            "try:\n    images.unix32_image(frozen=True)\nexcept images.ImageError as exc:\n    print(exc)\n")
    out = subprocess.run([PY, "-c", code, str(tmp_path / "build")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert "gcc cannot build 32-bit programs" in out.stdout and "apt-get install gcc-multilib" in out.stdout, out
    assert sorted(os.listdir(tmp_path / "build")) == ["micropython.lock"]   # nothing copied, nothing built


# --- upbx build --image esp32 -------------------------------------------------------------------

def fake_micropython(root):
    """A MicroPython checkout as far as `upbx build --image esp32` looks at it; makeimg.py stands in
    for the port's (it joins the parts it is given, as the real one does with offsets)."""
    for rel in ("mpy-cross/Makefile", "tools/makemanifest.py", "lib/micropython-lib/README.md",
                "ports/esp32/CMakeLists.txt", "ports/esp32/boards/ESP32_GENERIC/mpconfigboard.cmake",
                "ports/esp32/boards/ESP32_GENERIC/mpconfigvariant_SPIRAM.cmake"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "py").mkdir()
    (root / "py" / "mpconfig.h").write_text("#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR 28\n"
                                            "#define MICROPY_VERSION_MICRO 0\n")
    (root / "ports/esp32/makeimg.py").write_text(
        "import json, os, sys\n"
        "open(os.environ['RECORD'], 'a').write(json.dumps({'argv': sys.argv, 'cwd': os.getcwd()}) + '\\n')\n"
        "parts = [open(p, 'rb').read() for p in sys.argv[2:5]]\n"
        "open(sys.argv[5], 'wb').write(b''.join(parts))\n")
    return root


def recorder(bin_dir):
    """idf.py as a recorder: writes its argv, directory and UPBX_BOARD, and the files a build leaves."""
    bin_dir.mkdir()
    idf = bin_dir / "idf.py"
    idf.write_text(
        "#!%s\nimport json, os, sys\n"
        "open(os.environ['RECORD'], 'a').write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),\n"
        "    'board': os.environ.get('UPBX_BOARD')}) + '\\n')\n"
        "b = sys.argv[sys.argv.index('-B') + 1]\n"
        "for rel, data in (('sdkconfig', b'CONFIG_IDF_TARGET=\"esp32\"\\n'), ('bootloader/bootloader.bin', b'\\xe9boot'),\n"
        "                  ('partition_table/partition-table.bin', b'parts'),\n"
        "                  ('micropython.bin', b'MicroPython v1.28.0 on 2026-01-01')):\n"
        "    os.makedirs(os.path.dirname(os.path.join(b, rel)), exist_ok=True)\n"
        "    open(os.path.join(b, rel), 'wb').write(data)\n" % sys.executable)
    idf.chmod(idf.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_esp32_image_runs_idf_py_and_makeimg_as_the_port_makefile_does(tmp_path):
    src = fake_micropython(tmp_path / "micropython")
    record = tmp_path / "record.jsonl"
    env = dict(os.environ, PATH="%s:%s" % (recorder(tmp_path / "bin"), os.environ["PATH"]), RECORD=str(record))
    r = upbx("build", "--image", "esp32", "--board", BOARD, "--micropython", str(src), "--out",
             str(tmp_path / "out"), env=env)
    assert r.returncode == 0, r.stderr
    idf, makeimg = [json.loads(line) for line in record.read_text().splitlines()]
    build = ROOT / "build" / ("esp32-" + BOARD)
    port = src / "ports" / "esp32"
    assert idf == {"argv": ["-D", "MICROPY_BOARD=ESP32_GENERIC", "-D", "MICROPY_BOARD_DIR=%s" % (port / "boards" / "ESP32_GENERIC"),
                            "-D", "MICROPY_BOARD_VARIANT=SPIRAM", "-D", "MICROPY_FROZEN_MANIFEST=%s" % images.MANIFEST,
                            # the frozen native code (viper kernels, native glue) compiled for the chip
                            "-D", "MICROPY_CROSS_FLAGS=-march=xtensawin", "-B", str(build), "build"],
                   "cwd": str(port), "board": str(ROOT / "boards" / (BOARD + ".json"))}
    assert makeimg == {"argv": ["makeimg.py", str(build / "sdkconfig"), str(build / "bootloader" / "bootloader.bin"),
                                str(build / "partition_table" / "partition-table.bin"), str(build / "micropython.bin"),
                                str(build / "firmware.bin"), str(build / "micropython.uf2")], "cwd": str(port)}
    image = tmp_path / "out" / (BOARD + ".bin")
    assert image.read_bytes() == b"\xe9bootpartsMicroPython v1.28.0 on 2026-01-01"
    assert "next: upbx flash --board %s --firmware %s" % (BOARD, image) in r.stdout


def test_esp32_image_without_esp_idf_or_the_esp32_port_says_so(tmp_path):
    src = fake_micropython(tmp_path / "micropython")
    path = ":".join(p for p in os.environ["PATH"].split(":") if not os.path.exists(os.path.join(p, "idf.py")))
    env = dict(os.environ, PATH=path)
    r = upbx("build", "--image", "esp32", "--board", BOARD, "--micropython", str(src), "--out", str(tmp_path / "o"),
             env=env)
    assert r.returncode == 1 and "ESP-IDF's idf.py is not on PATH" in r.stderr and "export.sh" in r.stderr
    shared = shared_source()   # the trimmed v1.28.0 source: no ports/esp32
    r = upbx("build", "--image", "esp32", "--board", BOARD, "--micropython", str(shared), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "ports/esp32/CMakeLists.txt is missing" in r.stderr
    r = upbx("build", "--image", "esp32", "--board", BOARD, "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "--image esp32 needs --micropython SRC" in r.stderr
    (src / "ports/esp32/boards/ESP32_GENERIC/mpconfigvariant_SPIRAM.cmake").unlink()
    r = upbx("build", "--image", "esp32", "--board", BOARD, "--micropython", str(src), "--out", str(tmp_path / "o"),
             env=env)
    assert r.returncode == 1 and "has no variant SPIRAM (board file %s names it)" % BOARD in r.stderr
    r = upbx("build", "--image", "esp32", "--micropython", str(src), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "needs --board BOARD" in r.stderr
    assert not (tmp_path / "o").exists()
