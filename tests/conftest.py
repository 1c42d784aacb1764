"""Shared test set-up: helper modules on the path, the process-wide IPC pool made early."""

import sys
from pathlib import Path

import pytest

from childkit.ipc._threadpool import default_pool

# Test helper modules (peer processes, workers) import each other by plain name.
sys.path.insert(0, str(Path(__file__).parent / "ipc"))


@pytest.fixture(autouse=True, scope="session")
def _ipc_pool() -> None:
    """The process-wide IPC work pool (an epoll fd and an eventfd) lives for the whole
    process; create it up front so per-test leak checks do not count it."""
    default_pool()
