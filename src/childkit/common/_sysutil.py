"""Small Linux process utilities: ``prctl`` calls, closing every fd but a few, and whether
this process's children may have a session of their own."""

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


#: Where the kernel shows this process's scheduling autogroup (``CONFIG_SCHED_AUTOGROUP``).
AUTOGROUP_PATH = "/proc/self/autogroup"


def autogroup_nice(text: str) -> int:
    """The nice value in an autogroup line (``"/autogroup-45 nice 0"``).

    Raises ``ValueError`` if ``text`` is not such a line.
    """
    fields = text.split()
    if len(fields) != 3 or fields[1] != "nice":
        raise ValueError(f"not an autogroup line: {text!r}")
    return int(fields[2])


def may_leave_session() -> bool:
    """Whether a process this thread starts may take a session of its own (``setsid``)
    without changing how the scheduler ranks it: this thread's nice value is 0, and so is
    its autogroup's (or there are no autogroups).

    The application's manager starts the launcher, and so every child, in a session of
    its own when this says yes (docs/guide.md, "Sessions and signals"), for two reasons:

    * Scheduling. A session is the kernel's scheduling *autogroup* (where autogroups
      apply: tasks in no CPU cgroup), and groups share the CPU as groups. In the
      application's group, the caller threads an IPC child's replies wake preempt the
      child's serving thread, which all of them wait for (docs/ipc.md, "Many threads on
      one child": 1.5 times the requests with 4 to 16 callers on 2 CPUs).
    * Signals. The terminal's Ctrl-C reaches its foreground process group: the
      application, which decides what its children do, and not every child at once.

    The kernel ranks autogroups against each other by the group's nice value alone, not
    by its tasks'. A child of a process the user lowered with ``nice`` would lose that in
    a new session, so it stays in this one.
    """
    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        return False
    try:
        with open(AUTOGROUP_PATH) as f:
            line = f.read()
    except FileNotFoundError:  # no autogroups: a session does not change the ranking
        return True
    except OSError:  # unreadable: stay
        return False
    if not line.strip():
        # The root autogroup: session 0, a process init started without setsid (CI
        # runners do). The kernel prints nothing for it. It has no nice of its own: its
        # tasks are ranked one by one, and a nice-0 thread weighs what a new group does.
        return True
    try:
        return autogroup_nice(line) == 0
    except ValueError:  # a format we do not know: stay
        return False
