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

from tests import esp32_images
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


def test_unix32_image_out_the_cache_folder_itself(unix32_frozen):
    """`--out build/unix32-frozen`, where the image is built and cached, is not a copy onto itself."""
    before = pathlib.Path(unix32_frozen).read_bytes()
    folder = os.path.relpath(os.path.dirname(unix32_frozen), ROOT)   # as typed in the checkout: build/unix32-frozen
    r = upbx("build", "--image", "unix32", "--out", folder)
    assert r.returncode == 0, r.stderr
    assert "SameFileError" not in r.stderr and pathlib.Path(unix32_frozen).read_bytes() == before
    assert r.stdout.strip().startswith("build: %s/micropython " % folder), r.stdout


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

# MicroPython v1.28.0's ports/esp32 files that choose the partition layout (boards/, sdkconfig fragments,
# partition tables), as far as they matter to it; the rest of each file left out
PORT_FILES = {
    "boards/sdkconfig.base": "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y\nCONFIG_ESPTOOLPY_FLASHSIZE_4MB=y\n"
                             "CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"partitions-4MiBplus.csv\"\n",
    "boards/sdkconfig.ble": "CONFIG_BT_ENABLED=y\n",
    "boards/sdkconfig.spiram": "CONFIG_SPIRAM=y\n",
    "boards/sdkconfig.spiram_sx": "CONFIG_SPIRAM=y\n",
    "boards/sdkconfig.spiram_oct": "CONFIG_SPIRAM_MODE_OCT=y\n",
    "boards/sdkconfig.240mhz": "CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_240=y\n",
    "boards/ESP32_GENERIC/mpconfigboard.cmake": "set(SDKCONFIG_DEFAULTS\n    boards/sdkconfig.base\n    boards/sdkconfig.ble\n)\n",
    "boards/ESP32_GENERIC/mpconfigboard.h": "#define MICROPY_HW_BOARD_NAME \"ESP32 module\"\n",
    "boards/ESP32_GENERIC/mpconfigvariant_SPIRAM.cmake":
        "set(SDKCONFIG_DEFAULTS\n    ${SDKCONFIG_DEFAULTS}\n    boards/sdkconfig.spiram\n)\n",
    "boards/ESP32_GENERIC/mpconfigvariant_OTA.cmake":
        "set(SDKCONFIG_DEFAULTS\n    ${SDKCONFIG_DEFAULTS}\n    boards/ESP32_GENERIC/sdkconfig.ota\n)\n",
    "boards/ESP32_GENERIC/sdkconfig.ota": "CONFIG_PARTITION_TABLE_CUSTOM=y\n"
                                         "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"partitions-4MiB-ota.csv\"\n"
                                         "CONFIG_COMPILER_OPTIMIZATION_SIZE=y\n",
    "boards/ESP32_GENERIC_S3/mpconfigboard.cmake":
        "set(IDF_TARGET esp32s3)\n\nset(SDKCONFIG_DEFAULTS\n    boards/sdkconfig.base\n    boards/sdkconfig.ble\n"
        "    boards/sdkconfig.spiram_sx\n    boards/ESP32_GENERIC_S3/sdkconfig.board\n)\n",
    "boards/ESP32_GENERIC_S3/mpconfigboard.h": "#define MICROPY_HW_BOARD_NAME \"Generic ESP32S3 module\"\n",
    "boards/ESP32_GENERIC_S3/sdkconfig.board": "CONFIG_ESPTOOLPY_FLASHMODE_QIO=y\n",
    "boards/ESP32_GENERIC_S3/mpconfigvariant_SPIRAM_OCT.cmake":
        "set(SDKCONFIG_DEFAULTS\n    ${SDKCONFIG_DEFAULTS}\n    boards/sdkconfig.240mhz\n    boards/sdkconfig.spiram_oct\n)\n",
    **{name: esp32_images.csv_text(name) for name in esp32_images.TABLES},
}


def fake_micropython(root):
    """A MicroPython checkout as far as `upbx build --image esp32` looks at it: ports/esp32's board
    directories, sdkconfig fragments and partition tables (PORT_FILES), and a makeimg.py that runs
    tests/fake_esp_idf.py's, which lays the parts out at makeimg.py's offsets."""
    for rel in ("mpy-cross/Makefile", "tools/makemanifest.py", "lib/micropython-lib/README.md",
                "ports/esp32/CMakeLists.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    for rel, text in PORT_FILES.items():
        (root / "ports/esp32" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "ports/esp32" / rel).write_text(text)
    (root / "py").mkdir()
    (root / "py" / "mpconfig.h").write_text("#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR 28\n"
                                            "#define MICROPY_VERSION_MICRO 0\n")
    (root / "ports/esp32/makeimg.py").write_text(
        "import runpy, sys\nsys.argv[1:1] = ['makeimg']\nrunpy.run_path(%r, run_name='__main__')\n"
        % str(ROOT / "tests" / "fake_esp_idf.py"))
    return root


def recorder(bin_dir):
    """idf.py on PATH: tests/fake_esp_idf.py's, which records its argv, directory and UPBX_BOARD and leaves
    what a build leaves (sdkconfig from the board's fragments, the partition table its CSV, small images)."""
    bin_dir.mkdir()
    idf = bin_dir / "idf.py"
    idf.write_text("#!/bin/sh\nexec %s %s idf \"$@\"\n" % (sys.executable, ROOT / "tests" / "fake_esp_idf.py"))
    idf.chmod(idf.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def build_esp32(tmp_path, board, env_extra=None):
    """`upbx build --image esp32 --board BOARD` with the fake ESP-IDF: (result, idf record, makeimg record)."""
    src = tmp_path / "micropython"
    if not src.exists():
        fake_micropython(src)
    record = tmp_path / "record.jsonl"
    record.write_text("")
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        recorder(bin_dir)
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), RECORD=str(record), **(env_extra or {}))
    r = upbx("build", "--image", "esp32", "--board", board, "--micropython", str(src), "--out",
             str(tmp_path / "out"), env=env)
    steps = [json.loads(line) for line in record.read_text().splitlines()]
    return r, steps


def admin_add(tmp_path, image):
    db = str(tmp_path / "main.sqlite")
    return subprocess.run([PY, "-m", "upbx.tools.cli", "admin", "--database", db, "firmware", "add", str(image),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_esp32_image_runs_idf_py_and_makeimg_as_the_port_makefile_does(tmp_path):
    """A board without OTA slots (4 MiB with PSRAM, "ota": false): `make BOARD=ESP32_GENERIC
    BOARD_VARIANT=SPIRAM`, MicroPython's default layout; `upbx admin firmware add` refuses its image."""
    r, (idf, makeimg) = build_esp32(tmp_path, BOARD)
    assert r.returncode == 0, r.stderr
    build = ROOT / "build" / ("esp32-" + BOARD)
    port = tmp_path / "micropython" / "ports" / "esp32"
    assert idf == {"argv": ["-D", "MICROPY_BOARD=ESP32_GENERIC", "-D", "MICROPY_BOARD_DIR=%s" % (port / "boards" / "ESP32_GENERIC"),
                            "-D", "MICROPY_BOARD_VARIANT=SPIRAM", "-D", "MICROPY_FROZEN_MANIFEST=%s" % images.MANIFEST,
                            # the frozen native code (viper kernels, native glue) compiled for the chip
                            "-D", "MICROPY_CROSS_FLAGS=-march=xtensawin", "-B", str(build), "build"],
                   "cwd": str(port), "board": str(ROOT / "boards" / (BOARD + ".json"))}
    assert makeimg == {"argv": ["makeimg.py", str(build / "sdkconfig"), str(build / "bootloader" / "bootloader.bin"),
                                str(build / "partition_table" / "partition-table.bin"), str(build / "micropython.bin"),
                                str(build / "firmware.bin"), str(build / "micropython.uf2")], "cwd": str(port)}
    assert json.loads((build / "defaults.json").read_text()) == [
        "boards/sdkconfig.base", "boards/sdkconfig.ble", "boards/sdkconfig.spiram"]
    image = tmp_path / "out" / (BOARD + ".bin")
    assert image.read_bytes() == (build / "firmware.bin").read_bytes()
    assert "next: upbx flash --board %s --firmware %s" % (BOARD, image) in r.stdout
    assert "OTA" not in r.stdout and "firmware add" not in r.stdout
    refused = admin_add(tmp_path, image)
    assert refused.returncode == 1 and "its partition table has no OTA partitions (nvs, phy_init, factory)" in refused.stderr


def test_a_4mib_esp32_without_psram_takes_micropythons_ota_variant(tmp_path):
    """esp32-devkitc-inmp441: ESP32_GENERIC, 4 MiB, "ota": true is exactly MicroPython's own OTA variant
    (`make BOARD=ESP32_GENERIC BOARD_VARIANT=OTA`): sdkconfig.ota after the board's fragments, so
    partitions-4MiB-ota.csv; the roll-back bootloader from sdkconfig.base. Its image is accepted."""
    board = "esp32-devkitc-inmp441"
    r, (idf, makeimg) = build_esp32(tmp_path, board)
    assert r.returncode == 0, r.stderr
    build = ROOT / "build" / ("esp32-" + board)
    port = tmp_path / "micropython" / "ports" / "esp32"
    assert idf["argv"] == ["-D", "MICROPY_BOARD=ESP32_GENERIC", "-D", "MICROPY_BOARD_DIR=%s" % (port / "boards" / "ESP32_GENERIC"),
                           "-D", "MICROPY_BOARD_VARIANT=OTA", "-D", "MICROPY_FROZEN_MANIFEST=%s" % images.MANIFEST,
                           "-D", "MICROPY_CROSS_FLAGS=-march=xtensawin", "-B", str(build), "build"]
    assert json.loads((build / "defaults.json").read_text()) == [
        "boards/sdkconfig.base", "boards/sdkconfig.ble", "boards/ESP32_GENERIC/sdkconfig.ota"]
    assert not (ROOT / "build" / ("esp32-%s-board" % board)).exists()   # the port's board, untouched
    assert "OTA layout partitions-4MiB-ota.csv, app roll-back" in r.stdout
    assert "build: OTA slots ota_0, ota_1, 1572864 bytes each" in r.stdout
    image = tmp_path / "out" / (board + ".bin")
    assert "over the air: upbx admin firmware add %s" % image in r.stdout
    added = admin_add(tmp_path, image)
    assert added.returncode == 0, added.stderr
    app = (build / "micropython.bin").read_bytes()
    assert json.loads(added.stdout)["size"] == len(app) and json.loads(added.stdout)["kind"] == "image"


@pytest.mark.parametrize("board, variant, table", [
    ("esp32s3-n8r8-devkitc-inmp441", "SPIRAM_OCT", "partitions-8MiBplus-ota.csv"),
    ("esp32s3-devkitc-inmp441", None, "partitions-8MiBplus-ota.csv")])
def test_another_board_gets_a_board_directory_with_the_ota_variant_added(tmp_path, board, variant, table):
    """No MicroPython variant is OTA and SPIRAM_OCT (or 8 MiB) at once: upbx writes the port's board
    directory under build/ with one more variant, UPBX_OTA (MicroPython's custom board, BOARD_DIR=):
    the board's variant, then the OTA table for its flash size, the flash size and app roll-back."""
    r, (idf, makeimg) = build_esp32(tmp_path, board)
    assert r.returncode == 0, r.stderr
    build = ROOT / "build" / ("esp32-" + board)
    ours = ROOT / "build" / ("esp32-%s-board" % board) / "ESP32_GENERIC_S3"
    assert idf["argv"][:6] == ["-D", "MICROPY_BOARD=ESP32_GENERIC_S3", "-D", "MICROPY_BOARD_DIR=%s" % ours,
                               "-D", "MICROPY_BOARD_VARIANT=UPBX_OTA"]
    port_board = tmp_path / "micropython" / "ports" / "esp32" / "boards" / "ESP32_GENERIC_S3"
    for f in port_board.iterdir():   # the port's board, copied
        assert (ours / f.name).read_bytes() == f.read_bytes()
    fragments = ["boards/sdkconfig.base", "boards/sdkconfig.ble", "boards/sdkconfig.spiram_sx",
                 "boards/ESP32_GENERIC_S3/sdkconfig.board"]
    if variant:
        fragments += ["boards/sdkconfig.240mhz", "boards/sdkconfig.spiram_oct"]
    assert json.loads((build / "defaults.json").read_text()) == fragments + [str(ours / "sdkconfig.upbx_ota")]
    sdkconfig = (build / "sdkconfig").read_text()
    for line in ("CONFIG_ESPTOOLPY_FLASHSIZE_4MB=", "CONFIG_ESPTOOLPY_FLASHSIZE_8MB=y", 'CONFIG_ESPTOOLPY_FLASHSIZE="8MB"',
                 'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="%s"' % table, "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y",
                 'CONFIG_IDF_TARGET="esp32s3"'):
        assert line + "\n" in sdkconfig
    image = tmp_path / "out" / (board + ".bin")
    assert image.read_bytes()[:1] == b"\xe9" and "build: OTA slots ota_0, ota_1, 2555904 bytes each" in r.stdout
    added = admin_add(tmp_path, image)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["size"] == len((build / "micropython.bin").read_bytes())


def test_a_build_that_came_out_without_roll_back_or_ota_slots_is_refused(tmp_path):
    """What ESP-IDF built is checked: a MicroPython source whose sdkconfig.base lost the roll-back
    bootloader, or whose OTA variant names another table, gives no image."""
    board = "esp32-devkitc-inmp441"
    src = fake_micropython(tmp_path / "micropython")
    base = src / "ports/esp32/boards/sdkconfig.base"
    base.write_text(base.read_text().replace("CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y\n", ""))
    r, _steps = build_esp32(tmp_path, board)
    assert r.returncode == 1 and "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE is not set: the bootloader would not roll " \
        "back an update" in r.stderr
    assert not (tmp_path / "out" / (board + ".bin")).exists()
    base.write_text(PORT_FILES["boards/sdkconfig.base"])
    ota = src / "ports/esp32/boards/ESP32_GENERIC/sdkconfig.ota"
    ota.write_text(ota.read_text().replace("partitions-4MiB-ota.csv", "partitions-4MiBplus.csv"))
    r, _steps = build_esp32(tmp_path, board)
    assert r.returncode == 1 and "the partition table is 'partitions-4MiBplus.csv', not partitions-4MiB-ota.csv" in r.stderr
    (src / "ports/esp32/partitions-4MiB-ota.csv").unlink()
    r, steps = build_esp32(tmp_path, board)
    assert r.returncode == 1 and "has no partitions-4MiB-ota.csv (MicroPython v1.28.0's OTA partition table for " \
        "4 MiB; board file esp32-devkitc-inmp441 says \"ota\": true)" in r.stderr and steps == []


def test_esp32_image_without_esp_idf_or_the_esp32_port_says_so(tmp_path):
    src = fake_micropython(tmp_path / "micropython")
    path = ":".join(p for p in os.environ["PATH"].split(":") if not os.path.exists(os.path.join(p, "idf.py")))
    env = dict(os.environ, PATH=path)
    r = upbx("build", "--image", "esp32", "--board", BOARD, "--micropython", str(src), "--out", str(tmp_path / "o"),
             env=env)
    assert r.returncode == 1 and "ESP-IDF's idf.py is not on PATH" in r.stderr and "export.sh" in r.stderr
    r = upbx("build", "--image", "esp32", "--board", "esp32s3-n8r8-devkitc-inmp441", "--micropython", str(src), "--out",
             str(tmp_path / "o"), env=env)   # a board with OTA slots: the same
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "ESP-IDF's idf.py is not on PATH" in r.stderr
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
