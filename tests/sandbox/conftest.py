"""Every sandbox test leaves no fd open, no child (running or zombie) and no sandbox
cgroup behind."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def _children() -> set[int]:
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                found.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue  # a thread that ended meanwhile (its children are its process's)
    return found


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    from childkit.sandbox import _cgroups

    fds = set(os.listdir("/proc/self/fd"))
    children = _children()
    groups = set(_cgroups.leftovers(_forkers()))
    yield
    assert set(os.listdir("/proc/self/fd")) == fds, "a test leaked an fd"
    assert _children() <= children, "a test left a child process (or zombie)"
    # Every isolated child's cgroup is gone once it has been reaped (by the supervisor
    # itself, or by the launcher when it reaps a supervisor killed with SIGKILL). Only
    # this run's: other applications on the machine share the hierarchies.
    assert set(_cgroups.leftovers(_forkers())) <= groups, "a test left a sandbox's cgroup"


def _forkers() -> set[int]:
    """The processes of this run that fork sandboxes: this one, its children (the
    launcher) and theirs (the isolated template)."""
    found = {os.getpid()}
    for pid in _children():
        found.add(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                found.update(int(p) for p in f.read().split())
        except OSError:
            continue  # ended meanwhile
    return found


@pytest.fixture(scope="module")
def launcher_and_probe() -> None:
    """For tests that start children through the public calls: the launcher and the
    sandbox probe live for the whole process, so start them before the per-test leak
    checks take their baseline (``pytestmark = pytest.mark.usefixtures(...)``)."""
    import childkit
    from childkit.process import _options

    childkit.prestart_launcher()
    _options._sandbox_layers()
