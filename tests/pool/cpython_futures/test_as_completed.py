"""Adapted from CPython's Lib/test/test_concurrent_futures/test_as_completed.py
(AsCompletedTests), assertions kept."""

from __future__ import annotations

import gc
import itertools
import time
import unittest
import weakref
from concurrent import futures
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED, Future
from typing import Any

from .util import (
    CANCELLED_AND_NOTIFIED_FUTURE,
    EXCEPTION_FUTURE,
    PENDING_FUTURE,
    RUNNING_FUTURE,
    SUCCESSFUL_FUTURE,
    BaseTestCase,
    ChildProcessMixin,
    create_future,
)


def mul(x: int, y: int) -> int:
    return x * y


class AsCompletedTests:
    executor: Any

    def test_no_timeout(self) -> None:
        t: Any = self
        future1 = self.executor.submit(mul, 2, 21)
        future2 = self.executor.submit(mul, 7, 6)
        completed = set(futures.as_completed(
            [CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE,
             future1, future2]))
        t.assertEqual({CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE,
                       future1, future2}, completed)

    def test_future_times_out(self) -> None:
        t: Any = self
        already_completed = {CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE,
                             SUCCESSFUL_FUTURE}
        short_timeout = 0.100
        for timeout in (0, short_timeout):
            with t.subTest(timeout):
                completed_futures = set()
                future = self.executor.submit(time.sleep, short_timeout * 10)
                try:
                    for f in futures.as_completed(already_completed | {future}, timeout):
                        completed_futures.add(f)
                except futures.TimeoutError:
                    pass
                t.assertEqual(completed_futures, already_completed)

    def test_duplicate_futures(self) -> None:
        t: Any = self
        future1 = self.executor.submit(time.sleep, 2)
        completed = list(futures.as_completed(itertools.repeat(future1, 3)))
        t.assertEqual(len(completed), 1)

    def test_free_reference_yielded_future(self) -> None:
        t: Any = self
        futures_list: list[Future[Any]] = [Future() for _ in range(8)]
        futures_list.append(create_future(state=CANCELLED_AND_NOTIFIED))
        futures_list.append(create_future(state=FINISHED, result=42))
        with t.assertRaises(futures.TimeoutError):
            for future in futures.as_completed(futures_list, timeout=0):
                futures_list.remove(future)
                wr = weakref.ref(future)
                del future
                gc.collect()
                t.assertIsNone(wr())
        futures_list[0].set_result("test")
        for future in futures.as_completed(futures_list):
            futures_list.remove(future)
            wr = weakref.ref(future)
            del future
            gc.collect()
            t.assertIsNone(wr())
            if futures_list:
                futures_list[0].set_result("test")

    def test_correct_timeout_exception_msg(self) -> None:
        t: Any = self
        futures_list = [CANCELLED_AND_NOTIFIED_FUTURE, PENDING_FUTURE, RUNNING_FUTURE,
                        SUCCESSFUL_FUTURE]
        with t.assertRaises(futures.TimeoutError) as cm:
            list(futures.as_completed(futures_list, timeout=0))
        t.assertEqual(str(cm.exception), '2 (of 4) futures unfinished')


class ChildProcessAsCompletedTest(ChildProcessMixin, AsCompletedTests, BaseTestCase):
    pass


if __name__ == "__main__":
    unittest.main()
