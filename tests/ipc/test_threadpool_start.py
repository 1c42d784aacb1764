"""The IPC work pool when no new thread can start (Python 3.12+ at interpreter shutdown,
or the process limit): threads started up front serve on, and the pool's counts stay
true."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from ipc_helpers import wait_until

from childkit.ipc._threadpool import IPCThreadPool


@pytest.fixture
def pool() -> Iterator[IPCThreadPool]:
    made = IPCThreadPool(max_threads=4, name="ipc-test-start")
    yield made
    assert wait_until(lambda: made.close_if_unused(10))  # once its last task returned


def _no_new_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)


def test_prestarted_threads_serve_when_no_thread_can_start(
        pool: IPCThreadPool, monkeypatch: pytest.MonkeyPatch) -> None:
    pool.prestart(2)
    assert pool._threads == 2
    _no_new_threads(monkeypatch)
    a, b = socket.socketpair()
    served = threading.Event()
    try:
        pool.register(a.fileno(), served.set)  # would start a thread if none were idle
        b.send(b"x")
        assert served.wait(30)
        ran = [threading.Event() for _ in range(3)]
        for event in ran:  # every idle thread busy: growing is refused, nothing breaks
            pool.submit(event.set)
        assert all(event.wait(30) for event in ran)
        assert pool._threads == 2
    finally:
        pool.unregister(a.fileno())
        a.close()
        b.close()


def test_a_pool_without_any_thread_says_so(pool: IPCThreadPool,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _no_new_threads(monkeypatch)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    assert pool._threads == 0
