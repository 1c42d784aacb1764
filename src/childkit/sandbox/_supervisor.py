"""The two helper processes around the sandboxed one, and how its end is passed up.

``enter`` leaves three processes: the **supervisor** (the caller's process, outside the
new pid namespace), the **init** (pid 1 inside it) and the **sandboxed** process (pid 2,
which returns from ``enter``). Pid 1 of a namespace gets no signal whose action is the
default (the kernel drops SIGTERM, SIGXCPU... for it), and it inherits every orphan; so
the untrusted code must not be pid 1. The init, sandboxed too, only reaps and forwards.
When the sandboxed process ends, the init writes its wait status to the supervisor and
exits (the kernel then kills whatever is left in the namespace); the supervisor ends the
same way the sandboxed process did: its exit code, or its fatal signal re-raised.
"""

from __future__ import annotations

import os
import resource
import select
import signal
from typing import NoReturn

from childkit.common._exit_codes import MEMORY_LIMIT_EXIT_CODE
from childkit.sandbox import _cgroups, _syscalls

#: Signals passed on from the supervisor to the init and from the init to the sandboxed
#: process.
FORWARDED: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                                         signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_EX_SOFTWARE = 70


def block_forwarded() -> set[int]:
    """Block :data:`FORWARDED` (so none is lost before the handlers exist); returns the
    previous mask for :func:`restore_mask`."""
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED))


def restore_mask(previous: set[int]) -> None:
    """Restore the mask :func:`block_forwarded` replaced."""
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _forward_to(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)


def _close_all_but(keep: set[int]) -> None:
    low = 0
    for fd in sorted(keep):
        if fd > low:  # closerange(0, 0) would close every fd
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 2**31 - 1)


def guard_parent(death_r: int) -> None:
    """Die with SIGKILL when the parent dies, including if it died before this call (its
    end of the ``death_r`` pipe is then closed)."""
    _syscalls.prctl(_syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.set_blocking(death_r, False)
    try:
        if os.read(death_r, 1) == b"":
            os._exit(128 + signal.SIGKILL)  # the parent is gone already
    except BlockingIOError:
        pass  # its write end is still open: it is alive
    finally:
        os.close(death_r)


def supervise(init: int, death_w: int, status_r: int, group: _cgroups.Group | None = None,
              cpu_seconds: int | None = None) -> NoReturn:
    """The supervisor: forward signals to ``init``, wait for it, read the sandboxed
    process's wait status from ``status_r`` and end the same way. Never returns. Every fd
    but ``death_w`` and ``status_r`` is closed first, so the IPC channel's only holder is
    the sandboxed process. With ``group`` (the sandbox's cgroup): hold ``cpu_seconds``
    for all its processes together if the group counts CPU time, report an end by the
    OOM killer as the memory limit's, and remove the group once the init has ended."""
    try:
        _forward_to(init)
        _close_all_but({death_w, status_r, *(group.fds() if group is not None else ())})
        try:
            if group is not None and group.cpu_file is not None and cpu_seconds is not None:
                _watch_cpu(init, group, cpu_seconds)
        finally:  # whatever happens, wait for the init (and all it started) to end
            while True:
                pid, status = os.waitpid(init, 0)
                if pid == init and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                    break
        reported = os.read(status_r, 32)
        if reported:
            status = int(reported)
        if group is not None and (os.WIFSIGNALED(status)
                                  and os.WTERMSIG(status) == signal.SIGKILL
                                  and _cgroups.oom_killed(group)):
            status = MEMORY_LIMIT_EXIT_CODE << 8  # ended by the group's memory limit
    except BaseException:
        status = _EX_SOFTWARE << 8  # short of a bug this cannot happen
    finally:
        if group is not None and group.ahead:
            group.close()  # it is in it: its maker removes it after reaping it
        elif group is not None:
            _cgroups.remove(group)  # every process of the namespace is gone by now
    mirror(status)


#: After SIGXCPU, the sandbox is killed this much later if it is still there (as the
#: hard RLIMIT_CPU is one second above the soft one).
_CPU_GRACE_S = 1.0


def _watch_cpu(init: int, group: _cgroups.Group, budget: int) -> None:
    """Until ``init`` ends: when the group's processes have used ``budget`` CPU seconds
    together, SIGXCPU to each of them but the init, and SIGKILL to the init (so to the
    whole namespace) ``_CPU_GRACE_S`` later if it is still there. Wakes only when the
    budget could be spent at the earliest (what is left of it spread over every CPU)."""
    pidfd = os.pidfd_open(init)
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
        signalled = False
        while True:
            if signalled:
                timeout = _CPU_GRACE_S
            else:
                left = budget - _cgroups.cpu_seconds(group)
                if left <= 0:
                    for pid in _cgroups.members(group):
                        if pid not in (init, os.getpid(), os.getppid()):
                            _kill(pid, signal.SIGXCPU)
                    signalled = True
                    timeout = _CPU_GRACE_S
                else:
                    timeout = max(left / cpus, 0.01)
            ready, _, _ = select.select([pidfd], [], [], timeout)
            if ready:
                return  # the init ended
            if signalled:
                _kill(init, signal.SIGKILL)
                return
    finally:
        os.close(pidfd)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_init(workload: int, status_w: int) -> NoReturn:
    """The init (pid 1): forward signals to ``workload``, reap every process that ends,
    and when ``workload`` ends, write its wait status to ``status_w`` and exit."""
    try:
        _forward_to(workload)
        _close_all_but({status_w})
        while True:
            pid, status = os.wait()
            if pid == workload:
                os.write(status_w, str(status).encode())
                os._exit(0)
    except BaseException:
        os._exit(_EX_SOFTWARE)


def mirror(status: int) -> NoReturn:
    """End this process as the wait ``status`` says: same exit code, or same signal."""
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else signal.SIGKILL
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the child's crash, not ours
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    except (OSError, ValueError):
        pass
    os._exit(128 + sig)  # the signal did not end us (cannot happen for fatal ones)
