"""Adapted from CPython's Lib/test/test_concurrent_futures/test_init.py
(InitializerMixin, FailingInitializerMixin), assertions kept.

Changes, marked where made: a failing initializer is logged by the parent on the
``childkit`` logger (its worker's traceback included), where PPE's worker logs it on
``concurrent.futures`` and the test carries it back through a multiprocessing Queue;
"the executor is broken" is read from ``_core.broken`` where CPython reads ``_broken``.
"""

from __future__ import annotations

import contextlib
import time
import unittest
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor
from typing import Any

from .util import SHORT_TIMEOUT, BaseTestCase, ChildProcessMixin

INITIALIZER_STATUS = 'uninitialized'


def init(x: str) -> None:
    global INITIALIZER_STATUS
    INITIALIZER_STATUS = x


def get_init_status() -> str:
    return INITIALIZER_STATUS


def init_fail() -> None:
    time.sleep(0.1)  # let some futures be scheduled
    raise ValueError('error in initializer')


class InitializerMixin(ChildProcessMixin):
    worker_count = 2

    def setUp(self) -> None:
        global INITIALIZER_STATUS
        INITIALIZER_STATUS = 'uninitialized'
        self.executor_kwargs = dict(initializer=init, initargs=('initialized',))
        super().setUp()

    def test_initializer(self) -> None:
        t: Any = self
        futures = [self.executor.submit(get_init_status)
                   for _ in range(self.worker_count)]

        for f in futures:
            t.assertEqual(f.result(), 'initialized')


class FailingInitializerMixin(ChildProcessMixin):
    worker_count = 2

    def setUp(self) -> None:
        self.executor_kwargs = dict(initializer=init_fail)
        super().setUp()

    def test_initializer(self) -> None:
        t: Any = self
        with self._assert_logged('ValueError: error in initializer'):
            try:
                future = self.executor.submit(get_init_status)
            except BrokenExecutor:
                # Perhaps the executor is already broken
                pass
            else:
                with t.assertRaises(BrokenExecutor):
                    future.result()

            # At some point, the executor should break
            deadline = time.monotonic() + SHORT_TIMEOUT
            while self.executor._core.broken is None:  # CPython: executor._broken
                if time.monotonic() > deadline:
                    t.fail("executor not broken")
                time.sleep(0.01)

            # ... and from this point submit() is guaranteed to fail
            with t.assertRaises(BrokenExecutor):
                self.executor.submit(get_init_status)

    @contextlib.contextmanager
    def _assert_logged(self, msg: str) -> Iterator[None]:
        # Changed: the parent logs it on "childkit" (CPython: the worker, on
        # "concurrent.futures", read back through a Queue).
        t: Any = self
        with t.assertLogs('childkit', 'CRITICAL') as cm:
            yield
        output = cm.output
        t.assertTrue(any(msg in line for line in output), output)


class ChildProcessInitializerTest(InitializerMixin, BaseTestCase):
    pass


class ChildProcessFailingInitializerTest(FailingInitializerMixin, BaseTestCase):
    pass


if __name__ == "__main__":
    unittest.main()
