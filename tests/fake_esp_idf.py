"""Stand-ins for ESP-IDF's idf.py and MicroPython's ports/esp32/makeimg.py, for tests/test_firmware_image.py
(ESP-IDF cannot be installed here). Nothing is compiled: they do what decides the partition layout.

    fake_esp_idf.py idf ARGS...       as `idf.py -D ... -B BUILD build` run in ports/esp32
    fake_esp_idf.py makeimg ARGS...   as `python3 makeimg.py SDKCONFIG BOOT TABLE APP OUT UF2`

idf: records its argv, directory and $UPBX_BOARD in $RECORD, then follows ports/esp32/CMakeLists.txt as
far as the sdkconfig goes: the board's mpconfigboard.cmake, then mpconfigvariant_VARIANT.cmake, each
`set(SDKCONFIG_DEFAULTS ...)` and `include(...)` in them, and the fragments concatenated in that order
into BUILD/sdkconfig (a later setting wins, as in ESP-IDF's Kconfig defaults); the partition table is
the CSV that CONFIG_PARTITION_TABLE_CUSTOM_FILENAME names (in ports/esp32), written as ESP-IDF's binary
table; the bootloader and application are small valid images made by esptool.
"""
import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests import esp32_images  # noqa: E402

TYPES = {"app": 0, "data": 1}
SUBTYPES = {"nvs": 2, "ota": 0, "phy": 1, "factory": 0, **{"ota_%d" % i: 0x10 + i for i in range(16)}}


TARGET = ["esp32"]   # set(IDF_TARGET ...) of the board, else ESP-IDF's default


def cmake_defaults(path, board_dir, defaults):
    """SDKCONFIG_DEFAULTS after reading one cmake file (set / include, as CMake would for these files)."""
    text = re.sub(r"#[^\n]*", "", open(path).read())
    for command, body in re.findall(r"(\w+)\s*\((.*?)\)", text, re.S):
        words = [w.replace("${MICROPY_BOARD_DIR}", board_dir) for w in body.split()]
        if command == "include":
            defaults = cmake_defaults(words[0], board_dir, defaults)
        elif command == "set" and words[0] == "IDF_TARGET":
            TARGET[0] = words[1]
        elif command == "set" and words[0] == "SDKCONFIG_DEFAULTS":
            new = []
            for w in words[1:]:
                new += defaults if w == "${SDKCONFIG_DEFAULTS}" else [w]
            defaults = new
    return defaults


def partition_bin(csv_path):
    out = b""
    for line in open(csv_path):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, kind, subtype, offset, size = [f.strip() for f in line.split(",")][:5]
        out += struct.pack("<2sBBII16sI", b"\xaa\x50", TYPES[kind], SUBTYPES[subtype], int(offset, 0), int(size, 0),
                           name.encode(), 0)
    return out + b"\xeb\xeb" + b"\xff" * 30


def idf(argv):
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "board": os.environ.get("UPBX_BOARD")}) + "\n")
    defs = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-D")
    build = argv[argv.index("-B") + 1]
    board_dir = defs["MICROPY_BOARD_DIR"]
    defaults = cmake_defaults(os.path.join(board_dir, "mpconfigboard.cmake"), board_dir, [])
    if defs.get("MICROPY_BOARD_VARIANT"):
        defaults = cmake_defaults(os.path.join(board_dir, "mpconfigvariant_%s.cmake" % defs["MICROPY_BOARD_VARIANT"]),
                                  board_dir, defaults)
    settings = {"CONFIG_IDF_TARGET": '"%s"' % TARGET[0]}
    for fragment in defaults:
        for line in open(fragment):   # relative names: from ports/esp32, as CMakeLists.txt reads them
            if line.startswith("CONFIG_") and "=" in line:
                key, value = line.strip().split("=", 1)
                settings[key] = value
    chip = settings.get("CONFIG_IDF_TARGET", '"esp32"').strip('"')
    os.makedirs(os.path.join(build, "bootloader"), exist_ok=True)
    os.makedirs(os.path.join(build, "partition_table"), exist_ok=True)
    with open(os.path.join(build, "sdkconfig"), "w") as f:
        f.write("".join("%s=%s\n" % kv for kv in settings.items()))
    table = settings.get("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME", '"partitions-4MiBplus.csv"').strip('"')
    with open(os.path.join(build, "partition_table", "partition-table.bin"), "wb") as f:
        f.write(partition_bin(table))
    with open(os.path.join(build, "bootloader", "bootloader.bin"), "wb") as f:
        f.write(esp32_images.bootloader_image(chip))
    with open(os.path.join(build, "micropython.bin"), "wb") as f:
        f.write(esp32_images.app_image(chip, 4000))
    with open(os.path.join(build, "defaults.json"), "w") as f:   # for the test: which fragments, in which order
        json.dump(defaults, f)


def makeimg(argv):
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps({"argv": ["makeimg.py"] + argv, "cwd": os.getcwd()}) + "\n")
    sdkconfig, boot, table, app, out = argv[:5]
    chip = [line.split("=", 1)[1].strip().strip('"') for line in open(sdkconfig)
            if line.startswith("CONFIG_IDF_TARGET=")] or ["esp32"]
    base = esp32_images.FLASH_OFFSET[chip[0]]
    table_data = open(table, "rb").read()
    first_app = next(struct.unpack_from("<I", table_data, at + 4)[0] for at in range(0, len(table_data), 32)
                     if table_data[at:at + 2] == b"\xaa\x50" and table_data[at + 2] == 0)
    with open(out, "wb") as f:
        for at, path in ((base, boot), (0x8000, table), (first_app, app)):
            f.write(b"\xff" * (at - base - f.tell()))
            f.write(open(path, "rb").read())


if __name__ == "__main__":
    {"idf": idf, "makeimg": makeimg}[sys.argv[1]](sys.argv[2:])
