"""glibc's allocator set for payload-sized buffers, once, at import.

A round trip of a large parcel allocates a few buffers of the payload's size on each side
(see docs/ipc.md, "Large parcels"). glibc serves an allocation of 128 KiB or more with a
fresh ``mmap`` and gives it back with ``munmap`` when it is freed, so every such buffer is
faulted in again page by page: a 190 KiB echo cost about 230 minor page faults and three
times the time of the same echo with the buffers reused. glibc's threshold also moves on
its own (it rises to the size of the last mapped block freed), so when that happens is
left to chance. Setting ``M_MMAP_THRESHOLD`` to 4 MiB keeps every buffer a parcel can
hold on the heap, where a freed one is reused by the next; setting ``M_TRIM_THRESHOLD``
to 16 MiB keeps the heap from being handed back to the kernel (and faulted in again)
each time its top is freed. Both also fix the thresholds, which turns glibc's moving
threshold off. The cost is memory: up to 16 MiB of freed heap per arena may stay mapped.

Nothing is changed when the user chose for themselves (any ``MALLOC_*_`` variable of
glibc's or ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``), when
``CHILDKIT_NO_MALLOC_TUNING=1`` is set, or when the C library is not glibc.

May import: nothing of childkit's.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

#: Set (to anything but ``""`` or ``"0"``) to leave glibc's allocator as it is.
ENV_VAR = "CHILDKIT_NO_MALLOC_TUNING"
#: Allocations below this come from the heap (every parcel buffer; glibc's default 128 KiB).
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Free heap at the top of an arena kept mapped up to this (glibc's default 128 KiB).
TRIM_THRESHOLD = 16 * 1024 * 1024

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: glibc's environment variables for what this module sets (and its other malloc ones).
USER_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
             "MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST")

TUNED, TURNED_OFF, USER_SET, NOT_GLIBC, REFUSED = (
    "tuned", "turned off", "set by the user", "not glibc", "refused by mallopt")


def user_settings(environ: Mapping[str, str]) -> list[str]:
    """The allocator settings the user made in ``environ`` (names of variables)."""
    found = [name for name in USER_VARS if name in environ]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        found.append("GLIBC_TUNABLES")
    return found


def _libc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc, else ``None``."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl has a mallopt stub)
        return libc
    except (OSError, AttributeError):
        return None


def tune(environ: Mapping[str, str] = os.environ) -> str:
    """Set glibc's mmap and trim thresholds unless the user or ``environ`` says not to.

    Returns what happened: :data:`TUNED`, :data:`TURNED_OFF`, :data:`USER_SET`,
    :data:`NOT_GLIBC` or :data:`REFUSED`. Never raises. Calling it again sets the same
    values again (harmless); the package calls it once, at import.
    """
    if environ.get(ENV_VAR, "") not in ("", "0"):
        return TURNED_OFF
    if user_settings(environ):
        return USER_SET
    libc = _libc()
    if libc is None:
        return NOT_GLIBC
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # The trim threshold first: it must not be below the mmap threshold's blocks.
    if not (mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(M_MMAP_THRESHOLD,
                                                                   MMAP_THRESHOLD)):
        return REFUSED
    return TUNED


#: What :func:`tune` did when this module was imported.
outcome = tune()
