"""The IPC work thread pool: threads that serve incoming requests (Binder's thread pool).

Work threads wait together in one ``epoll`` instance on every connection's serve socket.
Sockets are armed ``EPOLLONESHOT``: the thread that wakes for a socket reads one record,
re-arms it so that another thread can take the next one, and then runs the requests itself:
a request is handled on the thread that received it, with no hand-off. When the last idle
thread takes work, another is started, up to the maximum (``Skeleton.set_max_work_thread_num``,
1..32, default 16), so a stub that calls back into its caller always finds a free thread.

The pool knows nothing of frames or parcels: a registered socket is just an fd and a
callback. It also runs plain tasks (:meth:`IPCThreadPool.submit`), woken by an eventfd.

May import: ``_accel`` only: the pool knows nothing of frames or parcels.
"""

from __future__ import annotations

import collections
import functools
import os
import select
import threading
from collections.abc import Callable

from childkit.ipc import _accel

MIN_WORK_THREADS = 1
MAX_WORK_THREADS = 32
DEFAULT_WORK_THREADS = 16

_ONESHOT_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT
# Holds (see IPCThreadPool.hold) need the C twins' watcher thread.
_hold: Callable[[int, int, int], bool] | None = (
    _accel.speedups.hold if _accel.speedups is not None else None)
_unhold: Callable[[int], bool] | None = (
    _accel.speedups.unhold if _accel.speedups is not None else None)


class IPCThreadPool:
    """A pool of work threads serving readable fds and submitted tasks. Thread-safe."""

    def __init__(self, max_threads: int = DEFAULT_WORK_THREADS, name: str = "ipc-work") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._max = max_threads
        self._threads = 0
        self._idle = 0
        self._handlers: dict[int, Callable[[], None]] = {}
        self._tasks: collections.deque[Callable[[], None]] = collections.deque()
        self._epoll = select.epoll()
        self._epoll_fd = self._epoll.fileno()
        #: ``hold(fd)``: keep ``fd`` (disarmed: its callback runs) disarmed while this
        #: thread runs one short task for it, instead of :meth:`rearm` before the task and
        #: :meth:`disarm` after it: two ``epoll_ctl`` calls saved on the hot path. A watcher
        #: thread re-arms it if the task lasts longer than the hold limit (2 ms), and so
        #: does this thread when it sleeps for a reply of its own (the reply may need
        #: another thread to serve ``fd``). End with :attr:`unhold`. Without the C twins
        #: (``_speedups``) this is :meth:`rearm`. (Straight into C: the hot path.)
        self.hold: Callable[[int], object] = (
            functools.partial(_hold, self._epoll_fd, _ONESHOT_IN) if _hold is not None
            else self._hold_here)
        #: ``unhold(fd) -> bool``: end this thread's :attr:`hold`: True if ``fd`` is still
        #: disarmed (the caller re-arms it, or polls it itself first), False if it is armed
        #: (re-armed meanwhile, or not held).
        self.unhold: Callable[[int], bool] = (
            _unhold if _unhold is not None else self._unhold_here)
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK | os.EFD_SEMAPHORE)
        self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._closed = False
        self._ended = threading.Condition(self._lock)  # a thread left (close_if_unused)

    @property
    def max_threads(self) -> int:
        return self._max

    @property
    def thread_count(self) -> int:
        return self._threads

    def spare(self) -> bool:
        """Whether another work thread waits for work now (a hint, read without the lock):
        a thread may then stay with one fd a moment instead of coming back at once."""
        return self._idle > 0

    def set_max_threads(self, n: int) -> None:
        """Allow at most ``n`` work threads (running ones above it stay until idle)."""
        with self._lock:
            self._max = n

    def register(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call ``on_readable()`` on a work thread when ``fd`` is readable (or hung up).

        The fd is disarmed while its callback runs until the callback calls :meth:`rearm`.
        """
        with self._lock:
            self._ensure_thread_locked()  # first: if none can run it, nothing is kept
            self._handlers[fd] = on_readable
        self._epoll.register(fd, _ONESHOT_IN)

    def rearm(self, fd: int) -> None:
        """Let the pool wake a thread for ``fd`` again."""
        try:
            self._epoll.modify(fd, _ONESHOT_IN)
        except (OSError, ValueError):
            pass  # unregistered or closed meanwhile: nothing to wait for

    def disarm(self, fd: int) -> None:
        """Stop waking threads for ``fd`` until :meth:`rearm` (for a thread that watches
        it itself for a moment)."""
        try:
            self._epoll.modify(fd, select.EPOLLONESHOT)
        except (OSError, ValueError):
            pass

    def _hold_here(self, fd: int) -> object:
        """:attr:`hold` without the C twins: :meth:`rearm`."""
        self.rearm(fd)
        return False

    @staticmethod
    def _unhold_here(fd: int) -> bool:
        """:attr:`unhold` without the C twins: nothing was held."""
        return False

    @property
    def epoll_fileno(self) -> int:
        """The pool's epoll fd, for a thread that disarms a registered fd itself in C, as
        :meth:`disarm` does (``_speedups.exchange``); -1 once the pool is closed."""
        return -1 if self._closed else self._epoll_fd

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``; a callback already running finishes."""
        if _accel.speedups is not None:  # the watcher must not touch it (or its number)
            _accel.speedups.drop_holds(fd)
        with self._lock:
            self._handlers.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def submit(self, task: Callable[[], None]) -> None:
        """Run ``task()`` on a work thread soon."""
        with self._lock:
            self._ensure_thread_locked()  # first: if none can run it, nothing is kept
            self._tasks.append(task)
        os.eventfd_write(self._wake_fd, 1)

    def submit_from_finalizer(self, task: Callable[[], None]) -> None:
        """Like :meth:`submit`, but takes no lock: safe inside a garbage-collector callback
        that may run while this thread holds any lock. Needs a running work thread."""
        self._tasks.append(task)  # deque.append is atomic
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass  # the pool is gone (after fork): nothing left to release to

    def prestart(self, count: int) -> None:
        """Have at least ``count`` work threads (up to the maximum) waiting now, started
        from this thread: from Python 3.12 on, no thread can start another once the main
        thread has finished, so work that may outlive it starts its threads up front."""
        with self._lock:
            while self._threads < min(count, self._max) and not self._closed:
                before = self._threads
                self._add_thread_locked()
                if self._threads == before:
                    break

    def _ensure_thread_locked(self) -> None:
        if self._idle == 0 and self._threads < self._max and not self._closed:
            self._add_thread_locked()

    def _add_thread_locked(self) -> None:
        self._threads += 1
        self._idle += 1
        try:
            threading.Thread(
                target=self._run, name=f"{self._name}-{self._threads}", daemon=True
            ).start()
        except RuntimeError:
            # No new thread (interpreter shutdown from 3.12 on, or the process limit):
            # the threads there are serve on, though with less room for nesting.
            self._threads -= 1
            self._idle -= 1
            if self._threads == 0:
                raise

    def _run(self) -> None:
        poll = self._epoll.poll
        wake_fd = self._wake_fd
        lock = self._lock
        while True:
            try:
                events = poll(-1, 1)
            except OSError:
                return  # the epoll was closed (after fork, or at shutdown)
            if not events:
                continue
            fd = events[0][0]
            task: Callable[[], None] | None = None
            if fd == wake_fd:
                # Semaphore eventfd: one unit per submitted task; a thread that loses the
                # race for it simply goes back to waiting.
                try:
                    os.eventfd_read(wake_fd)
                except BlockingIOError:
                    continue
            lock.acquire()
            if fd == wake_fd and self._closed and not self._tasks:  # close_if_unused
                self._threads -= 1
                self._idle -= 1
                self._ended.notify_all()
                lock.release()
                return
            self._idle -= 1
            task = self._tasks.popleft() if fd == wake_fd else self._handlers.get(fd)
            if self._idle == 0:
                self._ensure_thread_locked()
            lock.release()
            try:
                if task is not None:
                    task()
            except BaseException:  # a handler must never kill a work thread
                import traceback

                traceback.print_exc()
            finally:
                lock.acquire()
                self._idle += 1
                lock.release()

    def close_if_unused(self, timeout: float) -> bool:
        """End every work thread and close the pool, if no fd is registered and no task is
        queued or running (``childkit.shutdown``). Returns whether the pool is closed;
        the threads that had not ended within ``timeout`` seconds end on their own."""
        with self._lock:
            if self._closed:
                return True
            if self._handlers or self._tasks or self._idle != self._threads:
                return False
            self._closed = True
            threads = self._threads
        for _ in range(threads):  # one unit of the semaphore eventfd wakes one thread
            os.eventfd_write(self._wake_fd, 1)
        with self._lock:
            ended = self._ended.wait_for(lambda: self._threads == 0, timeout)
        if ended:
            self._epoll.close()
            os.close(self._wake_fd)
        return True

    def _forget_after_fork(self) -> None:
        # In a forked child the threads are gone and the epoll instance is shared with the
        # parent: drop both without touching the parent's registrations.
        self.hold = self._hold_here  # (rearm: a no-op on the closed epoll)
        try:
            self._epoll.close()
        finally:
            try:
                os.close(self._wake_fd)
            except OSError:
                pass
        self._closed = True


_default_pool: IPCThreadPool | None = None
_default_lock = threading.Lock()
_configured_max = DEFAULT_WORK_THREADS


def default_pool() -> IPCThreadPool:
    """The process's IPC work thread pool, created on first use."""
    global _default_pool
    pool = _default_pool
    if pool is None:
        with _default_lock:
            pool = _default_pool
            if pool is None:
                pool = _default_pool = IPCThreadPool(_configured_max)
    return pool


def close_default_pool_if_unused(timeout: float) -> bool:
    """End the process's pool (its threads, epoll and eventfd) if nothing uses it; the
    next use creates a new one. Returns whether there is no pool any more."""
    global _default_pool
    with _default_lock:
        pool = _default_pool
        if pool is None:
            return True
        if not pool.close_if_unused(timeout):
            return False
        _default_pool = None
        return True


def set_default_max_threads(n: int) -> None:
    """Set the maximum for the process's pool (now, and when it is created)."""
    global _configured_max
    with _default_lock:
        _configured_max = n
        if _default_pool is not None:
            _default_pool.set_max_threads(n)


def _after_fork_in_child() -> None:
    global _default_pool
    if _default_pool is not None:
        _default_pool._forget_after_fork()
        _default_pool = None


os.register_at_fork(after_in_child=_after_fork_in_child)
