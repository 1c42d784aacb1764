"""What tests use to prove they leak nothing: fds, threads, child processes; and a
condition poller (waiting on a condition with a generous timeout, never a timing test)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def child_pids() -> set[str]:
    """Pids of this process's children, live or zombie (every thread's list)."""
    pids: set[str] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.update(f.read().split())
        except FileNotFoundError:  # the thread ended while we looked
            pass
    return pids


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@contextmanager
def no_new_fds_threads_or_children() -> Iterator[None]:
    """Fail if the block leaves a new fd, thread or child process behind. Only additions
    count: other suites' background threads or fds may end meanwhile."""
    fds = open_fds()
    threads = set(threading.enumerate())
    children = child_pids()
    yield
    assert open_fds() - fds == set()
    assert set(threading.enumerate()) - threads == set()
    assert child_pids() - children == set()
