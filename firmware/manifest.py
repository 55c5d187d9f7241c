# MicroPython manifest (docs.micropython.org/en/latest/reference/manifest.html) for a handset
# image with upbx frozen in: bytecode and interned names then stay in flash, not on the heap.
#
#     make -C ports/unix MICROPY_FORCE_32BIT=1 ... FROZEN_MANIFEST=/abs/path/firmware/manifest.py
#     idf.py -D MICROPY_BOARD=ESP32_GENERIC -D MICROPY_FROZEN_MANIFEST=/abs/path/firmware/manifest.py build
#
# `upbx build --image unix32|esp32` runs these (docs/handset.md, "The firmware image"). main.py is
# not frozen: it stays the two-line file on the device's filesystem, which MicroPython runs at boot.
# The environment variable UPBX_BOARD (the absolute path of a board file, boards/*.json) adds that
# board's micropython-lib packages (its "mip_packages", e.g. ssd1306 for a display).
import json
import os

# 1. The port's own manifest first, so what its stock image freezes (asyncio above all) stays:
# the esp32 port keeps it in boards/, the unix port in variants/ (the standard variant's, which
# includes variants/manifest.py). A port has one of the two; a missing file is the only error
# that moves on to the next.
for port_manifest in ("$(PORT_DIR)/boards/manifest.py", "$(PORT_DIR)/variants/standard/manifest.py"):
    try:
        include(port_manifest)
        break
    except Exception as exc:  # ManifestFileError is not among the names a manifest sees
        if "[Errno 2]" not in str(exc):
            raise
else:
    raise ValueError("neither $(PORT_DIR)/boards/manifest.py nor $(PORT_DIR)/variants/standard/manifest.py: "
                     "firmware/manifest.py knows the esp32 and unix ports")

# 2. upbx: the protocol package and the firmware, as the packages they are on the filesystem.
# This file runs with the current directory set to firmware/.
# common/*_cpython.py are CPython's (tools/build.py, CPYTHON_ONLY): no handset imports them
package("common", files=sorted(name for name in os.listdir("../common")
                               if name.endswith(".py") and not name.endswith("_cpython.py")), base_path="..")
firmware_files = []
for folder, _dirs, names in os.walk("."):
    for name in names:
        path = os.path.normpath(os.path.join(folder, name))
        if name.endswith(".py") and path not in ("main.py", "manifest.py"):
            firmware_files.append(path)
package("firmware", files=sorted(firmware_files), base_path="..")

# 3. The board's micropython-lib packages (upbx deploy installs them with mip otherwise).
board_file = os.environ.get("UPBX_BOARD")
if board_file:
    if not os.path.isabs(board_file):  # a manifest runs in its own directory: a relative path would mislead
        raise ValueError("UPBX_BOARD=%s: give the board file's absolute path" % board_file)
    with open(board_file) as f:
        for name in json.load(f).get("mip_packages", []):
            require(name)
