"""A scrubbed environment: only the variables named in ``keep_env`` survive.

A forked child starts with a copy of its parent's memory, so clearing ``os.environ`` is not
enough: the environment block the parent was exec'd with is still on the stack and
readable through ``/proc/self/environ``. That block is overwritten with zeros too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from childkit.sandbox import _syscalls

#: What every isolated child gets whatever was kept: its home and temp dir are /tmp.
FIXED_ENV: dict[str, str] = {"HOME": "/tmp", "TMPDIR": "/tmp"}
#: PATH unless the caller keeps its own (the host's PATH names the parent's directories).
DEFAULT_PATH = "/usr/bin:/bin"


def scrub(keep: Iterable[str]) -> None:
    """Remove every variable not in ``keep`` (from ``os.environ`` and the C environment),
    set :data:`FIXED_ENV`, and wipe the initial environment block."""
    survivors = {name: os.environ[name] for name in keep if name in os.environ}
    survivors.update(FIXED_ENV)
    survivors.setdefault("PATH", DEFAULT_PATH)
    # The whole C environment at once (clearenv), and os.environ's mapping emptied in
    # one call: removing variables one by one costs an unsetenv, two encodings and a
    # mapping deletion each, every one touching (so copying) pages of this forked
    # process; then only the survivors are set again, through os.environ (putenv).
    _syscalls.clearenv()
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        data.clear()
    else:  # another os.environ implementation: the slow, public way
        for name in list(os.environ):
            del os.environ[name]
    os.environ.update(survivors)
    _wipe_initial_block()


_initial_block: tuple[int, int] | None = None


def initial_block() -> tuple[int, int]:
    """Where the environment block the kernel copied at exec lies: ``(start, end)``.
    Read once per process: fork keeps the address space, so the launcher reads it for
    every child it forks (only an exec would move it, and that starts a new module)."""
    global _initial_block
    if _initial_block is None:
        # Fields 50 and 51 of /proc/self/stat are env_start and env_end (the block
        # /proc/<pid>/environ reads).
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        # fields[0] is field 3 (state), so field N is fields[N - 3].
        _initial_block = (int(fields[50 - 3]), int(fields[51 - 3]))
    return _initial_block


def _wipe_initial_block() -> None:
    start, end = initial_block()
    if 0 < start < end:
        _syscalls.memset(start, 0, end - start)
