"""Every sandbox test leaves no fd open and no child (running or zombie) behind."""

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
    fds = set(os.listdir("/proc/self/fd"))
    children = _children()
    yield
    assert set(os.listdir("/proc/self/fd")) == fds, "a test leaked an fd"
    assert _children() <= children, "a test left a child process (or zombie)"
