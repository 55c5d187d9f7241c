import os
import pathlib
import sys

import pytest

# tests/common modules import each other and `common.*` the same way under both interpreters
sys.path.insert(0, str(pathlib.Path(__file__).parent / "common"))


def _skip_is_failure(report):
    """Under CI=true a skip means a missing part of the set-up: report it as a failure, reason kept."""
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = "skipped under CI=true, where every test must run: %s" % reason


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _skip_is_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _skip_is_failure(outcome.get_result())


from tests.support import unix32_binary  # noqa: E402


@pytest.fixture(scope="session")
def unix32_frozen():
    """Path of the 32-bit unix port with common/ and firmware/ frozen in (firmware/manifest.py)."""
    return unix32_binary(frozen=True)


@pytest.fixture(scope="session")
def unix32_plain():
    """Path of the plain 32-bit unix port (nothing of upbx frozen in)."""
    return unix32_binary(frozen=False)
