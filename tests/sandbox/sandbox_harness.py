"""Run one action in a forked child, NORMAL (as is) or ISOLATED (after ``enter``).

The child reports through a pipe as JSON (never pickle): which stage it reached, whether
the action returned, its value or the exception's type, errno and message; the parent
reads with a deadline and reaps the child, so a hung or crashed child fails the test
instead of hanging it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from childkit.sandbox import SandboxConfig, enter

Action = Callable[[dict[str, Any]], Any]

DEADLINE_S = 60.0


@dataclasses.dataclass
class Outcome:
    """What one child did: ``report`` (None if it sent none) and its wait status."""

    report: dict[str, Any] | None
    status: int

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report["stage"] == "done"

    @property
    def errno(self) -> int | None:
        return None if self.report is None else self.report.get("errno")

    def describe(self) -> str:
        return f"report={self.report!r} wait_status={self.status}"


def _child(action: Action, ctx: dict[str, Any], config: SandboxConfig | None,
           write_fd: int, prepare: Action | None) -> None:
    stage = "prepare"
    try:
        if prepare is not None:
            prepare(ctx)
        stage = "enter"
        if config is not None:
            enter(config, keep_fds=[write_fd])
        stage = "action"
        value = action(ctx)
        report: dict[str, Any] = {"stage": "done", "value": value}
    except BaseException as exc:
        report = {"stage": stage, "error": type(exc).__name__, "message": str(exc),
                  "errno": getattr(exc, "errno", None),
                  "traceback": traceback.format_exc(limit=4)}
    try:
        os.write(write_fd, json.dumps(report, default=repr).encode())
    finally:
        os._exit(0)


def run(action: Action, ctx: dict[str, Any], config: SandboxConfig | None,
        prepare: Action | None = None) -> Outcome:
    """Fork, run ``action(ctx)`` in the child (inside ``config``'s sandbox if given, after
    ``prepare(ctx)`` if given) and return its :class:`Outcome`. The child is always
    reaped."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        _child(action, ctx, config, write_fd, prepare)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_fd], [], [], max(0.0, left))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    return Outcome(json.loads(data) if data else None, status)
