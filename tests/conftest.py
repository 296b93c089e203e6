"""Shared fixtures: where the real data lives, and one Prefect test server per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Tests, and the `inversa` subprocesses they start, never talk to a user's own `inversa server`.
os.environ["INVERSA_HOME"] = tempfile.mkdtemp(prefix="inversa-test-home-")
# Calibration pairs are cached on disk: the session gets its own cache, never a user's.
os.environ["INVERSA_CACHE_DIR"] = tempfile.mkdtemp(prefix="inversa-test-cache-")
os.environ.pop("PREFECT_API_URL", None)

# Prefect builds its terminal log handler at import, bound to the sys.stderr of that moment. Import
# it here, under pytest's session-long capture, not inside the first test that happens to start a
# flow: that test's capsys stream is closed when it ends, and every later log line would then fail
# to write (and Prefect's print redirection turns the failure report into a recursion).
import prefect.main  # noqa: E402,F401  (prefect.main is what sets up logging)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def shared_file(relative: str) -> Path:
    """A file from ../shared/data; the test is skipped only when the file is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data file not present: {path}")
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect database and API for the flow tests (started once, ~10 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks: with other jobs on the machine, extra intra-op threads only spin and wait."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
