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
    kept = {name: os.environ[name] for name in keep if name in os.environ}
    os.environ.clear()  # unsetenv() for each: the C-level environ is emptied too
    os.environ.update(kept)
    os.environ.update(FIXED_ENV)
    os.environ.setdefault("PATH", DEFAULT_PATH)
    _wipe_initial_block()


def _wipe_initial_block() -> None:
    # Fields 50 and 51 of /proc/self/stat are env_start and env_end (the block the kernel
    # copied at exec, which /proc/<pid>/environ reads).
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state), so field N is fields[N - 3].
    start, end = int(fields[50 - 3]), int(fields[51 - 3])
    if 0 < start < end:
        _syscalls.memset(start, 0, end - start)
