"""Helpers for the child-process tests: exit waiting, leak and zombie checks."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import childkit
from childkit import ChildExitInfo
from childkit.process._manager import manager
from leakcheck import fd_count as fd_count  # re-exported for the child tests
from leakcheck import wait_until as wait_until


class ExitRecorder:
    """An exit callback that remembers every exit and lets tests wait for a pid's."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.exits: dict[int, ChildExitInfo] = {}
        self.calls: list[tuple[int, ChildExitInfo, str]] = []

    def __call__(self, pid: int, info: ChildExitInfo) -> None:
        with self._cond:
            self.exits[pid] = info
            self.calls.append((pid, info, threading.current_thread().name))
            self._cond.notify_all()

    def wait_for(self, pid: int, timeout: float = 20.0) -> ChildExitInfo:
        with self._cond:
            if not self._cond.wait_for(lambda: pid in self.exits, timeout):
                raise AssertionError(f"no exit reported for pid {pid} within {timeout} s")
            return self.exits[pid]


@contextmanager
def exit_recorder() -> Iterator[ExitRecorder]:
    recorder = ExitRecorder()
    childkit.register_child_process_exit_callback(recorder)
    try:
        yield recorder
    finally:
        childkit.unregister_child_process_exit_callback(recorder)


def app_threads() -> set[str]:
    """Live thread names other than the IPC work pool's (which lives for the process)."""
    return {t.name for t in threading.enumerate() if not t.name.startswith("ipc-work")}


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def zombies_of(*parents: int) -> list[int]:
    """Pids in state Z whose parent is one of ``parents``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] == "Z" and stat[1] in parents:
                found.append(int(entry))
    return found


def live_children_of(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` and that are not zombies (not counting a launcher's
    isolated template, which forks isolated children and is no child of the application's)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if (stat is not None and stat[0] != "Z" and stat[1] == parent
                    and not _is_isolated_template(int(entry))):
                found.append(int(entry))
    return found


def _is_isolated_template(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "childkit-isolat"
    except OSError:
        return False


def launcher_pid() -> int:
    return childkit.prestart_launcher()


def no_children_left() -> bool:
    """Every child reaped and forgotten, no start in progress."""
    return manager().live_count() == 0


def is_gone(pid: int) -> bool:
    """The process has exited (it may still be a zombie of an unrelated reaper)."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


@contextmanager
def no_child_leaks() -> Iterator[None]:
    """Fail if the block leaves a child unreaped, a new fd, a new application thread or a
    zombie (of this process or the launcher) behind."""
    launcher_pid()  # started before counting: the launcher's own fds are not a leak
    fds, threads = fd_count(), app_threads()
    yield
    assert wait_until(no_children_left), "a child was not reaped"
    assert wait_until(lambda: fd_count() == fds), (fd_count(), fds)
    assert wait_until(lambda: app_threads() <= threads), app_threads() - threads
    # The launcher now running: a test may have killed the first one and started another.
    assert zombies_of(os.getpid(), launcher_pid()) == []


def read_all(fd: int) -> bytes:
    """Everything readable from ``fd`` until end of file."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
