import pathlib
import sys

# tests/common modules import each other and `common.*` the same way under both interpreters
sys.path.insert(0, str(pathlib.Path(__file__).parent / "common"))


import pytest  # noqa: E402

from tests.support import unix32_binary  # noqa: E402


@pytest.fixture(scope="session")
def unix32_frozen():
    """Path of the 32-bit unix port with common/ and firmware/ frozen in (firmware/manifest.py)."""
    return unix32_binary(frozen=True)


@pytest.fixture(scope="session")
def unix32_plain():
    """Path of the plain 32-bit unix port (nothing of upbx frozen in)."""
    return unix32_binary(frozen=False)
