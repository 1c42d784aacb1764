"""childkit.ipc._allocator: glibc's thresholds set at import, unless the user set theirs.

Each case runs a fresh interpreter (the settings are per process) that imports the
transport (as every connection does) and then asks glibc, through ``mallinfo2``, whether
a block was mapped on its own (``hblks``) and how much freed heap stays mapped at the top
(``keepcost``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from childkit.ipc import _allocator

pytestmark = pytest.mark.skipif(_allocator._libc() is None, reason="needs glibc's mallinfo2")

_PROBE = r"""
import ctypes, json, sys
from childkit.ipc import _transport  # what every connection imports: it tunes


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)

def mapped_on_its_own(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    after = libc.mallinfo2().hblks
    libc.free(block)
    return after > before

got = {"outcome": _transport.ALLOCATOR, "mapped_256k": mapped_on_its_own(256 << 10),
       "mapped_2m": mapped_on_its_own(2 << 20)}
# After the 2 MiB block (glibc's moving threshold may now be 2 MiB, not 3).
block = libc.malloc(3 << 20)
libc.free(block)
got["kept_after_free"] = libc.mallinfo2().keepcost
print(json.dumps(got))
"""


def _probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items()
             if k not in _allocator.USER_VARS and k not in (_allocator.ENV_VAR, "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env},
                         capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_import_keeps_parcel_sized_blocks_on_the_heap_and_the_heap_mapped() -> None:
    got = _probe()
    assert got["outcome"] == _allocator.TUNED
    # glibc's default would map both on their own, and give the freed 3 MiB back.
    assert got["mapped_256k"] is False
    assert got["mapped_2m"] is False
    assert isinstance(got["kept_after_free"], int) and got["kept_after_free"] >= 3 << 20


def test_turned_off_by_the_documented_variable_leaves_glibc_alone() -> None:
    got = _probe(**{_allocator.ENV_VAR: "1"})
    assert got["outcome"] == _allocator.TURNED_OFF
    assert got["mapped_2m"] is True
    assert isinstance(got["kept_after_free"], int) and got["kept_after_free"] < 3 << 20


def test_zero_in_the_variable_does_not_turn_it_off() -> None:
    assert _probe(**{_allocator.ENV_VAR: "0"})["outcome"] == _allocator.TUNED


def test_the_users_own_malloc_variable_wins() -> None:
    got = _probe(MALLOC_MMAP_THRESHOLD_="65536")
    assert got["outcome"] == _allocator.USER_SET
    # Their 64 KiB threshold, not our 4 MiB. (2 MiB, not just over 64 KiB: glibc serves
    # a block above its threshold from the heap when a free chunk there is big enough.)
    assert got["mapped_2m"] is True


def test_the_users_glibc_tunables_win() -> None:
    got = _probe(GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536")
    assert got["outcome"] == _allocator.USER_SET
    assert got["mapped_2m"] is True


def test_other_tunables_do_not_count_as_a_malloc_setting() -> None:
    assert _allocator.user_settings({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}) == []
    assert _allocator.user_settings({"MALLOC_TRIM_THRESHOLD_": "1"}) == ["MALLOC_TRIM_THRESHOLD_"]


def test_not_glibc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_allocator, "_libc", lambda: None)
    assert _allocator.tune({}) == _allocator.NOT_GLIBC
