"""Close every file descriptor but the ones the child was given."""

from __future__ import annotations

import os
from collections.abc import Iterable

_MAX_FD = 2**31 - 1


def close_all_except(keep: Iterable[int]) -> None:
    """Close every fd of this process not in ``keep`` (close_range between the gaps), so
    nothing the parent held open leaks into the sandbox; stdio is closed too unless kept."""
    low = 0
    for fd in sorted(set(keep)):
        if fd < 0:
            raise ValueError(f"keep_fds holds a negative fd {fd}")
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def validate_keep_fds(keep: Iterable[int]) -> tuple[int, ...]:
    """The kept fds as a sorted tuple; ValueError naming any that is not an open fd."""
    items = list(keep)
    for fd in items:
        if isinstance(fd, bool) or not isinstance(fd, int):
            raise ValueError(f"keep_fds must hold ints, not {type(fd).__name__}")
    fds = tuple(sorted(set(items)))
    for fd in fds:
        if fd < 0:
            raise ValueError(f"keep_fds holds a negative fd {fd}")
        try:
            os.fstat(fd)
        except OSError:
            raise ValueError(f"keep_fds names fd {fd}, which is not open") from None
    return fds
