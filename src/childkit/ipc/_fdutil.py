"""File descriptors on Unix sockets: the SCM_RIGHTS encoding and closing what we own.

Shared by the IPC connection and the launcher's control protocol; knows nothing of frames.

May import: nothing of childkit (the launcher's protocol uses it too).
"""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Sequence

_INT_SIZE = array.array("i").itemsize


def rights(fds: Sequence[int]) -> list[tuple[int, int, bytes]]:
    """The ancillary data that sends ``fds`` with one ``sendmsg`` (none for no fds)."""
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """Every fd that arrived as SCM_RIGHTS in ``recvmsg``'s ancillary data (now ours)."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % _INT_SIZE])
            fds.extend(arr)
    return fds


def close_fds(fds: list[int]) -> None:
    """Close every fd in ``fds``, ignoring ones already closed."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def dup_all(fds: Sequence[int]) -> list[int]:
    """Duplicates of ``fds``, all or none: when one ``dup`` fails (EMFILE at the fd limit,
    EBADF), the copies already made are closed and the ``OSError`` is raised."""
    copies: list[int] = []
    try:
        for fd in fds:
            copies.append(os.dup(fd))
    except OSError:
        close_fds(copies)
        raise
    return copies
