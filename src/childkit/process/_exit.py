"""Child exit notification: :class:`ChildExitInfo` and the registered exit callbacks.

``OH_Ability_RegisterNativeChildProcessExitCallback`` gives ``cb(pid, signal)``; childkit
gives ``cb(pid, exit_info)`` with the exit code and the signal kept apart, for children
of both start modes. Callbacks run on one dedicated thread (``childkit-exit``), in the
order children were reaped, never on the thread that started or killed the child.

An isolated child ended by one of its resource limits says so in
:attr:`ChildExitInfo.reason`. The kernel ends it for CPU time (SIGXCPU) and file size
(SIGXFSZ); for memory, processes and open files the kernel only makes the call fail, so
the child's runner (:mod:`childkit.launcher._child`) turns an uncaught error of that limit
into one of the exit codes below, which :func:`limit_reason` reads back.
"""

from __future__ import annotations

import logging
import os
import queue
import signal as _signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from childkit.common._errors import ChildkitError, ErrCode
from childkit.common._exit_codes import (
    MEMORY_LIMIT_EXIT_CODE,
    OPEN_FILES_LIMIT_EXIT_CODE,
    PROCESS_LIMIT_EXIT_CODE,
    PROCESS_REFUSED_EXIT_CODE,
)

_log = logging.getLogger("childkit")

#: Exit code -> (the limit it names, how the reason reads).
_EXIT_CODE_LIMITS = {
    MEMORY_LIMIT_EXIT_CODE: ("memory_bytes", "memory limit ({} bytes) exceeded"),
    PROCESS_LIMIT_EXIT_CODE: ("max_processes",
                              "process limit ({} processes and threads) reached"),
    OPEN_FILES_LIMIT_EXIT_CODE: ("max_open_files", "open files limit ({}) reached"),
}

#: Why a child kept to one process ended with PROCESS_REFUSED_EXIT_CODE.
_PROCESS_REFUSED = ("process creation refused: no cgroup holds this isolated child's "
                    "memory or CPU limit here, so it is kept to one process "
                    "(ResourceLimits(allow_subprocesses=True) allows processes, each with "
                    "the full limits)")

#: Signal -> the limit whose excess the kernel signals with it.
_SIGNAL_LIMITS: dict[int, str] = {_signal.SIGXCPU: "cpu_seconds", _signal.SIGXFSZ: "max_file_size"}


def limit_reason(status: int, limits: dict[str, Any]) -> str | None:
    """Which resource limit ended the isolated child whose raw ``waitpid`` status is
    ``status`` (``limits``: its ``ResourceLimits`` as a dict); ``None`` if the status does
    not point at a limit that was set. Never raises for a status ``waitpid`` can give."""
    if os.WIFSIGNALED(status):  # SIGXCPU, SIGXFSZ: the sandbox words their reasons
        limit = _SIGNAL_LIMITS.get(os.WTERMSIG(status))
        if limit is None or limits.get(limit) is None:
            return None  # e.g. a SIGXCPU sent by kill to a child without a CPU limit
        from childkit.sandbox import ResourceLimits, exit_reason

        return exit_reason(status, ResourceLimits(**limits))
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == PROCESS_REFUSED_EXIT_CODE:
        # Only a child kept to one process exits so on purpose: one whose limits allowed
        # it to be (memory or CPU set, allow_subprocesses off).
        if limits.get("allow_subprocesses") or (limits.get("memory_bytes") is None
                                                and limits.get("cpu_seconds") is None):
            return None
        return _PROCESS_REFUSED
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) not in _EXIT_CODE_LIMITS:
        return None
    name, text = _EXIT_CODE_LIMITS[os.WEXITSTATUS(status)]
    value = limits.get(name)
    return None if value is None else text.format(value)


@dataclass(frozen=True)
class ChildExitInfo:
    """How a child ended: exactly one of ``exit_code`` and ``signal`` is set.

    ``reason`` names the resource limit that ended an isolated child (CPU time, file
    size, memory, processes, open files; see docs/sandbox.md), or is ``None``.
    """

    pid: int
    exit_code: int | None
    signal: int | None
    reason: str | None = None

    @classmethod
    def from_wait_status(cls, pid: int, status: int,
                         limits: dict[str, Any] | None = None) -> ChildExitInfo:
        """Decode a raw ``waitpid`` status (``limits``: an isolated child's, to say why)."""
        reason = None if limits is None else limit_reason(status, limits)
        if os.WIFSIGNALED(status):
            return cls(pid, None, os.WTERMSIG(status), reason)
        return cls(pid, os.WEXITSTATUS(status), None, reason)

    def __repr__(self) -> str:
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            why = f", {self.reason}" if self.reason else ""
            return f"ChildExitInfo(pid={self.pid}, killed by {name}{why})"
        why = f", {self.reason}" if self.reason else ""
        return f"ChildExitInfo(pid={self.pid}, exit_code={self.exit_code}{why})"


ExitCallback = Callable[[int, ChildExitInfo], object]


class ExitCallbacks:
    """The registered callbacks and the thread that calls them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[ExitCallback] = []
        # None: the thread reading it ends (stop).
        self._queue: queue.SimpleQueue[tuple[int, ChildExitInfo] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def register(self, callback: ExitCallback) -> None:
        """Add ``callback``; registering an equal one again keeps one.

        Raises:
            ChildkitError: ``NCP_ERR_INVALID_PARAM`` if ``callback`` is not callable.
        """
        if not callable(callback):
            raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                f"exit callback must be callable, not {type(callback).__name__}")
        with self._lock:
            if callback not in self._callbacks:
                self._callbacks.append(callback)

    def unregister(self, callback: ExitCallback) -> None:
        """Remove ``callback``.

        Raises:
            ChildkitError: ``NCP_ERR_INVALID_PARAM`` if ``callback`` is not callable (as
                OpenHarmony's for a null callback); ``NCP_ERR_CALLBACK_NOT_EXIST`` if it
                is not registered.
        """
        if not callable(callback):
            raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                f"exit callback must be callable, not {type(callback).__name__}")
        with self._lock:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                raise ChildkitError(ErrCode.NCP_ERR_CALLBACK_NOT_EXIST,
                                    f"exit callback {callback!r} is not registered") from None

    def start(self) -> None:
        """Start the delivery thread (once; it lives until :meth:`stop`)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="childkit-exit",
                                                daemon=True)
                self._thread.start()

    def notify(self, info: ChildExitInfo) -> None:
        """Queue ``info`` for every callback registered when it is delivered."""
        self.start()
        self._queue.put((info.pid, info))

    def stop(self, timeout: float) -> None:
        """End the delivery thread once it has delivered what is queued (``childkit.
        shutdown``); a later exit starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pid, info = item
            with self._lock:
                callbacks = list(self._callbacks)
            for callback in callbacks:
                try:
                    callback(pid, info)
                except Exception:
                    _log.exception("child exit callback %r failed for pid %d", callback, pid)
