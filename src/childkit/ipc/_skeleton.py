"""Skeleton: who is calling (inside ``on_remote_request``) and the work thread pool size.

May import: ``_busypoll``, ``_errors``, ``_threadpool``.
"""

from __future__ import annotations

import os
import threading

from childkit.ipc import _busypoll, _threadpool
from childkit.ipc._errors import ParamError

#: Who is calling: (pid, uid, is local), or None outside ``on_remote_request``.
Identity = tuple[int, int, bool] | None


class _CallingContext(threading.local):
    # One per thread: set by the dispatcher around each on_remote_request call. One tuple,
    # not several attributes, because it is saved, set and restored on every request.
    def __init__(self) -> None:
        self.identity: Identity = None


_context = _CallingContext()


class Skeleton:
    """IPCKit's IPCSkeleton: static queries about the request being handled."""

    @staticmethod
    def get_calling_pid() -> int:
        """The pid of the process whose request this thread is handling; outside a request,
        this process's own pid."""
        identity = _context.identity
        return identity[0] if identity is not None else os.getpid()

    @staticmethod
    def get_calling_uid() -> int:
        """The uid of the calling process (from the socket's peer credentials); outside a
        request, this process's own uid."""
        identity = _context.identity
        return identity[1] if identity is not None else os.getuid()

    @staticmethod
    def is_local_calling() -> bool:
        """Whether the request came from this same process (a direct call on a stub)."""
        identity = _context.identity
        return identity[2] if identity is not None else True

    @staticmethod
    def is_handling_transaction() -> bool:
        """Whether this thread is inside an ``on_remote_request`` call."""
        return _context.identity is not None

    @staticmethod
    def set_max_work_thread_num(max_thread_num: int) -> None:
        """Allow at most ``max_thread_num`` IPC work threads in this process (1..32).

        Raises :class:`ParamError` (``OH_IPC_CHECK_PARAM_ERROR``) outside that range.
        """
        if (
            isinstance(max_thread_num, bool)
            or not isinstance(max_thread_num, int)
            or not _threadpool.MIN_WORK_THREADS <= max_thread_num <= _threadpool.MAX_WORK_THREADS
        ):
            raise ParamError(
                f"max work threads must be an int in {_threadpool.MIN_WORK_THREADS}.."
                f"{_threadpool.MAX_WORK_THREADS}, not {max_thread_num!r}"
            )
        _threadpool.set_default_max_threads(max_thread_num)

    @staticmethod
    def get_max_work_thread_num() -> int:
        return _threadpool.default_pool().max_threads

    @staticmethod
    def set_busy_poll_us(max_us: int) -> None:
        """Let a thread that waits for a reply or a request poll its socket for up to
        ``max_us`` microseconds (0..10000; 0: never) before it sleeps, in this process.

        Polling saves the wake-up of a sleeping thread (tens of microseconds on a virtual
        machine) when the answer comes quickly; each waiter adapts its own window to how
        fast answers come, so a slow peer is soon waited for without polling. Children
        take theirs from ``CHILDKIT_BUSY_POLL_US`` (default 100, or 0 where the process
        may use only one CPU, since polling there only delays the peer).

        Raises :class:`ParamError` (``OH_IPC_CHECK_PARAM_ERROR``) outside that range.
        """
        if (
            isinstance(max_us, bool)
            or not isinstance(max_us, int)
            or not 0 <= max_us <= _busypoll.MAX_US
        ):
            raise ParamError(
                f"busy poll window must be an int in 0..{_busypoll.MAX_US} microseconds, "
                f"not {max_us!r}"
            )
        _busypoll.set_max_us(max_us)

    @staticmethod
    def get_busy_poll_us() -> int:
        """The most a waiting thread polls before sleeping, in microseconds (0: never)."""
        return _busypoll.max_us()
