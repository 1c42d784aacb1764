"""Resource limits (rlimits, no cgroup needed) and how to tell which one ended a child."""

from __future__ import annotations

import os
import resource
import signal
import sys
from types import TracebackType

# The exit status of an isolated child whose code let a MemoryError escape.
from childkit.common._exit_codes import MEMORY_LIMIT_EXIT_CODE as MEMORY_LIMIT_EXIT_CODE
from childkit.sandbox._config import ResourceLimits


def apply(limits: ResourceLimits, extra_processes: int = 0) -> None:
    """Set the rlimits of this process (inherited by everything it starts).

    ``extra_processes`` is added to ``max_processes`` for the sandbox's own supervisor,
    which shares the user namespace (RLIMIT_NPROC counts per user in that namespace).
    Core dumps are always disabled. Raises OSError if the kernel refuses a limit.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.memory_bytes is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds is not None:
        # SIGXCPU at the soft limit; SIGKILL one second later if it is caught.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    if limits.max_processes is not None:
        nproc = limits.max_processes + extra_processes
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if limits.max_open_files is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (limits.max_open_files, limits.max_open_files))
    if limits.max_file_size is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_size, limits.max_file_size))
        # A write past the limit then fails with EFBIG (an OSError) instead of killing.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _install_memory_hook()


def _install_memory_hook() -> None:
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException,
             tb: TracebackType | None) -> None:
        if issubclass(kind, MemoryError):
            # Past the memory limit: end with a status the exit callback can name.
            os._exit(MEMORY_LIMIT_EXIT_CODE)
        previous(kind, value, tb)

    sys.excepthook = hook


def exit_reason(wait_status: int, limits: ResourceLimits) -> str | None:
    """Which limit ended the child whose ``waitpid`` status is ``wait_status``; ``None`` if
    the status does not point at a limit."""
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU:
            return f"cpu time limit ({limits.cpu_seconds} s) exceeded"
        if sig == signal.SIGXFSZ:
            return f"file size limit ({limits.max_file_size} bytes) exceeded"
        return None
    if os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == MEMORY_LIMIT_EXIT_CODE:
        return f"memory limit ({limits.memory_bytes} bytes) exceeded"
    return None
