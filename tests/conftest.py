import sys
from pathlib import Path

# Test helper modules (peer processes, workers) import each other by plain name.
sys.path.insert(0, str(Path(__file__).parent / "ipc"))

import pytest  # noqa: E402

from childkit.ipc._threadpool import default_pool  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _ipc_pool() -> None:
    """The process-wide IPC work pool (an epoll fd and an eventfd) lives for the whole
    process; create it up front so per-test leak checks do not count it."""
    default_pool()
