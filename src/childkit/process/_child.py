"""What the manager knows of one child (:class:`Child`), how a forked child's failed start
is raised (:class:`ChildStartFailed`), and what a start request says of this process (its
``sys.path`` and working directory) and of a child's end."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from childkit.common._errors import ChildkitError, ErrCode
from childkit.process._exit import ChildExitInfo

Mode = Literal["args", "ipc"]


class ChildStartFailed(ChildkitError):
    """A forked child reported that it could not start (its entry did not load, or its
    IPC connection failed): the error it reported, its ``pid``, and how it ended
    (``exit_info``, ``None`` if it was not reaped in time)."""

    def __init__(self, code: ErrCode, message: str, pid: int,
                 exit_info: ChildExitInfo | None) -> None:
        super().__init__(code, message)
        self.pid = pid
        self.exit_info = exit_info


@dataclass(eq=False)
class Child:
    """One child: its pid, a pidfd (owned by the manager until reaped), its state.

    ``announced`` is set once the start call succeeded: only then do exit callbacks
    hear of the child, and only then may :func:`childkit.kill_child_process` touch it.
    """

    pid: int
    pidfd: int
    mode: Mode
    announced: bool = False
    exit_info: ChildExitInfo | None = None
    limits: dict[str, Any] | None = None  # an isolated child's resource limits
    exited: threading.Event = field(default_factory=threading.Event)


def absolute_sys_path() -> list[str]:
    """This process's ``sys.path`` for a child, every entry absolute."""
    # Relative entries ('' under `python -c`, the REPL) mean the caller's directory; a
    # child, above all an isolated one whose cwd is the sandbox's, needs it spelled out.
    return [os.path.abspath(p) if not os.path.isabs(p) else p
            for p in sys.path if isinstance(p, str)]


def env_changes(base: dict[str, str]) -> dict[str, Any] | None:
    """What a child must change in ``base`` (the environment the launcher started with)
    to have this process's current one (``{"set": {...}, "unset": [...]}``), or ``None``
    if nothing: children see ``os.environ`` as it is at the start call, as a forked
    process would."""
    current = dict(os.environ)
    if current == base:
        return None
    return {"set": {k: v for k, v in current.items() if base.get(k) != v},
            "unset": [k for k in base if k not in current]}


def start_cwd() -> str:
    """The directory a child starts in: this process's (``/`` if it has none)."""
    try:
        return os.getcwd()
    except OSError:
        return "/"


def describe_exit(info: ChildExitInfo | None) -> str:
    """How a child ended, in words (``exit code 3``, ``killed by SIGKILL``)."""
    if info is None:
        return "not reaped yet"
    if info.signal is not None:
        try:
            return f"killed by {signal.Signals(info.signal).name}"
        except ValueError:
            return f"killed by signal {info.signal}"
    return f"exit code {info.exit_code}"
