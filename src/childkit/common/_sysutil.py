"""Small Linux process utilities: ``prctl`` calls and closing every fd but a few."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
#: The kernel keeps at most 15 bytes of a thread name (16 with the terminator).
COMM_LIMIT = 15

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent *thread* exits.

    Raises ``OSError`` if ``prctl`` fails.
    """
    if _prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def set_comm(name: str) -> None:
    """Set this thread's kernel name (``/proc/PID/comm``, ``ps -o comm``), cut to 15 bytes.

    Best effort: a failure is ignored, since the name is cosmetic.
    """
    raw = name.encode("utf-8", "replace")[:COMM_LIMIT]
    _prctl(_PR_SET_NAME, ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value or 0, 0, 0, 0)


def close_all_fds_except(keep: set[int]) -> None:
    """Close every fd of this process that is not in ``keep``.

    Uses ``close_range`` (through :func:`os.closerange`) on the gaps between the kept
    fds, so it costs a few syscalls whatever the fd limit is.
    """
    low = 0
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
