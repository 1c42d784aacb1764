"""Waiting for children to end through the public exit callback (no sleeps, no polling)."""

from __future__ import annotations

import os
import threading

import childkit


class Exits:
    """Collects exit infos through ``register_child_process_exit_callback`` while in use
    (a context manager); :meth:`wait` blocks until a given child was reaped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._infos: dict[int, childkit.ChildExitInfo] = {}

    def __enter__(self) -> Exits:
        childkit.register_child_process_exit_callback(self._on_exit)
        return self

    def __exit__(self, *exc: object) -> None:
        childkit.unregister_child_process_exit_callback(self._on_exit)

    def _on_exit(self, pid: int, info: childkit.ChildExitInfo) -> None:
        with self._cond:
            self._infos[pid] = info
            self._cond.notify_all()

    def wait(self, pid: int) -> childkit.ChildExitInfo:
        with self._cond:
            assert self._cond.wait_for(lambda: pid in self._infos, timeout=60), \
                f"child {pid} did not exit"
            return self._infos[pid]

    def reported(self) -> set[int]:
        """The pids whose exit was reported so far."""
        with self._cond:
            return set(self._infos)


def run_to_end(exits: Exits, entry: str, params: str,
               options: childkit.ChildProcessOptions | None) -> tuple[int, bytes]:
    """Start an args-mode child with an "out" pipe, read what it writes until end of file
    and wait for its exit; returns its pid and what it wrote."""
    r, w = os.pipe()
    chunks = []
    try:
        pid = childkit.start_native_child_process(
            entry, childkit.ChildProcessArgs(params, {"out": w}), options)
        os.close(w)
        w = -1
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    exits.wait(pid)
    return pid, b"".join(chunks)
