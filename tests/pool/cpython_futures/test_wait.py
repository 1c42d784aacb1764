"""Adapted from CPython's Lib/test/test_concurrent_futures/test_wait.py (WaitTests),
assertions kept; events are util.FileEvent (see util.py)."""

from __future__ import annotations

import threading
import unittest
from concurrent import futures
from typing import Any

from .util import (
    CANCELLED_AND_NOTIFIED_FUTURE,
    CANCELLED_FUTURE,
    EXCEPTION_FUTURE,
    SUCCESSFUL_FUTURE,
    BaseTestCase,
    ChildProcessMixin,
    FileEvent,
)


def mul(x: int, y: int) -> int:
    return x * y


def wait_and_raise(e: FileEvent) -> None:
    e.wait()
    raise Exception('this is an exception')


class WaitTests:
    executor: Any

    def test_20369(self) -> None:
        t: Any = self
        future = self.executor.submit(mul, 1, 2)
        done, not_done = futures.wait([future, future], return_when=futures.ALL_COMPLETED)
        t.assertEqual({future}, done)
        t.assertEqual(set(), not_done)

    def test_first_completed(self) -> None:
        t: Any = self
        event = t.create_event()
        future1 = self.executor.submit(mul, 21, 2)
        future2 = self.executor.submit(event.wait)
        try:
            done, not_done = futures.wait([CANCELLED_FUTURE, future1, future2],
                                          return_when=futures.FIRST_COMPLETED)
            t.assertEqual({future1}, done)
            t.assertEqual({CANCELLED_FUTURE, future2}, not_done)
        finally:
            event.set()
        future2.result()

    def test_first_completed_some_already_completed(self) -> None:
        t: Any = self
        event = t.create_event()
        future1 = self.executor.submit(event.wait)
        try:
            finished, pending = futures.wait(
                [CANCELLED_AND_NOTIFIED_FUTURE, SUCCESSFUL_FUTURE, future1],
                return_when=futures.FIRST_COMPLETED)
            t.assertEqual({CANCELLED_AND_NOTIFIED_FUTURE, SUCCESSFUL_FUTURE}, finished)
            t.assertEqual({future1}, pending)
        finally:
            event.set()
        future1.result()

    def test_first_exception(self) -> None:
        t: Any = self
        event1 = t.create_event()
        event2 = t.create_event()
        try:
            future1 = self.executor.submit(mul, 2, 21)
            future2 = self.executor.submit(wait_and_raise, event1)
            future3 = self.executor.submit(event2.wait)

            def wait_for_future1() -> None:
                future1.result()
                event1.set()

            th = threading.Thread(target=wait_for_future1)
            th.start()
            finished, pending = futures.wait([future1, future2, future3],
                                             return_when=futures.FIRST_EXCEPTION)
            t.assertEqual({future1, future2}, finished)
            t.assertEqual({future3}, pending)
            th.join()
        finally:
            event1.set()
            event2.set()
        future3.result()

    def test_first_exception_some_already_complete(self) -> None:
        t: Any = self
        event = t.create_event()
        future1 = self.executor.submit(divmod, 21, 0)
        future2 = self.executor.submit(event.wait)
        try:
            finished, pending = futures.wait(
                [SUCCESSFUL_FUTURE, CANCELLED_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE,
                 future1, future2], return_when=futures.FIRST_EXCEPTION)
            t.assertEqual({SUCCESSFUL_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, future1}, finished)
            t.assertEqual({CANCELLED_FUTURE, future2}, pending)
        finally:
            event.set()
        future2.result()

    def test_first_exception_one_already_failed(self) -> None:
        t: Any = self
        event = t.create_event()
        future1 = self.executor.submit(event.wait)
        try:
            finished, pending = futures.wait([EXCEPTION_FUTURE, future1],
                                             return_when=futures.FIRST_EXCEPTION)
            t.assertEqual({EXCEPTION_FUTURE}, finished)
            t.assertEqual({future1}, pending)
        finally:
            event.set()
        future1.result()

    def test_all_completed(self) -> None:
        t: Any = self
        future1 = self.executor.submit(divmod, 2, 0)
        future2 = self.executor.submit(mul, 2, 21)
        finished, pending = futures.wait(
            [SUCCESSFUL_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE,
             future1, future2], return_when=futures.ALL_COMPLETED)
        t.assertEqual({SUCCESSFUL_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE,
                       future1, future2}, finished)
        t.assertEqual(set(), pending)

    def test_timeout(self) -> None:
        t: Any = self
        short_timeout = 0.050
        event = t.create_event()
        future = self.executor.submit(event.wait)
        try:
            finished, pending = futures.wait(
                [CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE, future],
                timeout=short_timeout, return_when=futures.ALL_COMPLETED)
            t.assertEqual({CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE,
                           SUCCESSFUL_FUTURE}, finished)
            t.assertEqual({future}, pending)
        finally:
            event.set()
        future.result()


class ChildProcessWaitTest(ChildProcessMixin, WaitTests, BaseTestCase):
    pass


if __name__ == "__main__":
    unittest.main()
