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


# Parallel runs (pytest-xdist; `-n 4 --dist loadscope` in pyproject.toml, docs/tests.md). Most of
# the suite waits on real-time calls rather than the CPU. Each module runs on one worker, in file
# order (some share one exchange in a module-scoped fixture, some run in phases); the longest
# modules start first (LONG_FIRST, measured: docs/tests.md) so that no worker is left with one of
# them at the end.
LONG_FIRST = ("test_security.py", "test_features_handset.py", "test_conference_handset.py", "test_quality.py",
              "test_bench.py", "test_calls.py", "test_clock.py", "test_nat.py", "test_load.py", "test_survivability.py",
              "test_handset32.py", "test_handset.py", "test_survival.py", "test_silence_suppression.py",
              "test_admission.py", "test_demo.py", "test_sysinfo.py", "test_hold.py", "test_fuzz.py",
              "test_features.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: a module keeps its order
    # a test of a known defect (marked known_defect, the defect named in the docs) runs only when asked
    # for (UPBX_KNOWN_DEFECTS=1): left out of the run, not skipped, since under CI a skip is a failure
    if not os.environ.get("UPBX_KNOWN_DEFECTS"):
        known = [item for item in items if item.get_closest_marker("known_defect")]
        if known:
            config.hook.pytest_deselected(items=known)
            items[:] = [item for item in items if not item.get_closest_marker("known_defect")]


from tests import support  # noqa: E402
from tests.support import unix32_binary  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    """The test being run, for a build a session fixture starts in its name (support.unix32_binary)."""
    support.RUNNING["item"] = item
    yield
    support.RUNNING.pop("item", None)


@pytest.fixture(scope="session")
def unix32_frozen():
    """Path of the 32-bit unix port with common/ and firmware/ frozen in (firmware/manifest.py)."""
    return unix32_binary(frozen=True)


@pytest.fixture(scope="session")
def unix32_plain():
    """Path of the plain 32-bit unix port (nothing of upbx frozen in)."""
    return unix32_binary(frozen=False)


@pytest.fixture(scope="module")
def lab():
    """A loopback exchange with the default sites and phones, started, shared by a module's tests (a module
    that needs another exchange defines its own `lab`, which takes precedence)."""
    from upbx.tools.lab import LoopbackExchange
    with LoopbackExchange() as exchange:
        exchange.provision()
        exchange.start()
        yield exchange
