"""Adapted from CPython's Lib/test/test_concurrent_futures/util.py.

Changes: the executor is ChildProcessExecutor (no mp_context); ``create_event`` gives a
file-backed event (a Manager().Event() proxy cannot authenticate from a child that was
not spawned by multiprocessing); tearDown checks that every worker was reaped and no
thread was left, in place of test.support's threading_cleanup / reap_children.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
    Future,
)
from typing import Any

from childkit.pool._executor import ChildProcessExecutor
from childkit.process._manager import manager

SHORT_TIMEOUT = 30.0
#: test.support.LONG_TIMEOUT is 5 minutes; a deadlock shows long before this.
LONG_TIMEOUT = 60.0
#: test.support.PIPE_MAX_SIZE: more than any pipe buffer holds.
PIPE_MAX_SIZE = 4 * 1024 * 1024 + 1
_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds this package


def assert_python_ok(*args: str) -> tuple[int, bytes, bytes]:
    """test.support.script_helper.assert_python_ok: run this Python with ``args`` and
    assert it exits with 0. This package is importable there as ``cpython_futures``
    (CPython's scripts import the test module as ``test.test_concurrent_futures``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_TESTS_DIR, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-X", "faulthandler", *args], env=env,
                          cwd=_TESTS_DIR, capture_output=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc.returncode, proc.stdout, proc.stderr


def workers_reaped(pids: list[int], timeout: float = SHORT_TIMEOUT) -> bool:
    """Every executor's dispatcher thread has ended, and every worker (those of ``pids``
    too) has exited and childkit reaped it: what CPython's joins of the manager thread
    and of each of ``executor._processes`` wait for."""
    deadline = time.monotonic() + timeout
    while manager().live_count() or any(_alive(p) for p in pids) or any(
            t.name.startswith("childkit-executor-") for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def create_future(state: str = PENDING, exception: BaseException | None = None,
                  result: object = None) -> Future[Any]:
    f: Future[Any] = Future()
    f._state = state  # type: ignore[attr-defined]
    f._exception = exception  # type: ignore[attr-defined]
    f._result = result  # type: ignore[attr-defined]
    return f


PENDING_FUTURE = create_future(state=PENDING)
RUNNING_FUTURE = create_future(state=RUNNING)
CANCELLED_FUTURE = create_future(state=CANCELLED)
CANCELLED_AND_NOTIFIED_FUTURE = create_future(state=CANCELLED_AND_NOTIFIED)
EXCEPTION_FUTURE = create_future(state=FINISHED, exception=OSError())
SUCCESSFUL_FUTURE = create_future(state=FINISHED, result=42)


class FileEvent:
    """A cross-process event that pickles by path: set() creates the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def set(self) -> None:
        with open(self.path, "w"):
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


class BaseTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self._threads = {t for t in threading.enumerate() if not t.name.startswith("ipc-")}
        self._tmp = tempfile.TemporaryDirectory(prefix="childkit-cf-")
        self._events = 0

    def create_event(self) -> FileEvent:
        self._events += 1
        return FileEvent(os.path.join(self._tmp.name, f"event{self._events}"))

    def tearDown(self) -> None:
        deadline = time.monotonic() + 20
        while manager().live_count() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(manager().live_count(), 0, "a worker was not reaped")
        while time.monotonic() < deadline:
            extra = {t for t in threading.enumerate() if not t.name.startswith("ipc-")
                     and t.name not in ("childkit-exit", "childkit-manager")} - self._threads
            if not extra:
                break
            time.sleep(0.01)
        self.assertFalse(extra, f"threads left: {extra}")
        self._tmp.cleanup()


class ExecutorMixin:
    worker_count = 5
    executor_kwargs: dict[str, Any] = {}
    executor_type = ChildProcessExecutor

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.t1 = time.monotonic()
        self.executor = self.executor_type(max_workers=self.worker_count,
                                           **self.executor_kwargs)

    def tearDown(self) -> None:
        self.executor.shutdown(wait=True)
        self.executor = None  # type: ignore[assignment]
        dt = time.monotonic() - self.t1
        self.assertLess(dt, 300, "synchronization issue: test lasted too long")  # type: ignore[attr-defined]
        super().tearDown()  # type: ignore[misc]


class ChildProcessMixin(ExecutorMixin):
    pass
