"""The exceptions of :class:`~childkit.ChildProcessExecutor` (all re-exported by
``childkit``), and how a task's exception comes back from a worker: rebuilt from its type
name, message and traceback text, never unpickled."""

from __future__ import annotations

import builtins
from concurrent.futures import BrokenExecutor
from typing import Any

from childkit.common import ChildkitError, ErrCode
from childkit.process import ChildExitInfo


# ---------------------------------------------------------------------------- errors
def _describe(info: ChildExitInfo) -> str:
    if info.signal is not None:
        import signal

        try:
            name = signal.Signals(info.signal).name
        except ValueError:
            name = str(info.signal)
        return f"(killed by {name})"
    return f"(exit code {info.exit_code})"


class ExecutorParamError(ChildkitError, ValueError):
    """A bad executor or pool argument (``NCP_ERR_INVALID_PARAM``; also a ValueError)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrCode.NCP_ERR_INVALID_PARAM, message)


class ExecutorParamTypeError(ExecutorParamError, TypeError):
    """An executor argument of the wrong type where ``ProcessPoolExecutor`` raises a
    ``TypeError`` (a non-callable ``initializer``): both a ``TypeError`` and an
    :class:`ExecutorParamError` (``NCP_ERR_INVALID_PARAM``)."""


class ChildExecutorError(Exception):
    """Base of the errors a task of a :class:`ChildProcessExecutor` fails with."""


class RemoteTraceback(Exception):
    """The child's formatted traceback, set as ``__cause__`` of a task's exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class ChildTaskError(ChildExecutorError):
    """A task raised an exception that is not a builtin one: its type's module and
    qualified name, its message and the child's traceback text are kept."""

    def __init__(self, type_module: str, type_name: str, message: str, remote_traceback: str):
        super().__init__(f"{type_module}.{type_name}: {message}")
        self.type_module = type_module
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


class WorkerDiedError(ChildExecutorError):
    """The worker running this task died (a crash, ``os._exit``, a kill): only this task
    fails; the worker is replaced."""

    def __init__(self, pid: int, exit_info: ChildExitInfo | None) -> None:
        how = "and was not reaped in time" if exit_info is None else _describe(exit_info)
        super().__init__(f"the worker process (pid {pid}) running this task died {how}; "
                         "it was replaced")
        self.pid = pid
        self.exit_info = exit_info


class TaskTimeoutError(ChildExecutorError, TimeoutError):
    """The task ran longer than its timeout: its worker was killed and replaced."""

    def __init__(self, timeout: float, pid: int) -> None:
        super().__init__(f"the task ran longer than its {timeout:g} s timeout; its worker "
                         f"(pid {pid}) was killed and replaced")
        self.timeout = timeout
        self.pid = pid


class BrokenChildExecutor(ChildExecutorError, BrokenExecutor):
    """No worker can run tasks: every worker failed to start, or the initializer failed."""


def rebuild_exception(module: str, name: str, message: str, tb: str,
                      args: tuple[Any, ...] | None = None) -> BaseException:
    """The parent-side exception for a child's: an instance of the builtin class when the
    type is a builtin ``Exception`` that takes a message, else :class:`ChildTaskError`;
    either way with :class:`RemoteTraceback` as ``__cause__``. Nothing is unpickled."""
    exc: BaseException | None = None
    if module == "builtins":
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(*args) if args is not None else cls(message) if message else cls()
            except Exception:
                exc = None
    if exc is None:
        exc = ChildTaskError(module, name, message, tb)
    exc.__cause__ = RemoteTraceback(tb)
    return exc


