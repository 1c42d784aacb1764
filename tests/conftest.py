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


#: Tests that fork the test process itself and build a sandbox in the fork (the sandbox's
#: units, below the launcher). They run first: a library that another test loads into
#: this process may leave C-level at-fork handlers behind (uvloop registers libuv's once
#: a loop is made), and those then run in the sandbox's own processes, which only
#: childkit's code may run in (in real use the sandbox is entered from the launcher's
#: fresh interpreter, where no such handler exists).
_FORK_THE_TEST_PROCESS = ("sandbox/test_sandbox_namespaces.py", "sandbox/test_sandbox_units.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = [item for item in items if item.nodeid.startswith(
        tuple("tests/" + name for name in _FORK_THE_TEST_PROCESS))]
    if first:
        chosen = set(map(id, first))
        items[:] = first + [item for item in items if id(item) not in chosen]
