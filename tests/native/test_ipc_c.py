"""libipc_capi.so between a C parent and a C child (ipc_selftest.c): requests, user
errors, the descriptor, calling identity, fds, a parent stub called back, objects sent
back home, reference counts (destroy callbacks), one-way ordering, timeouts, death."""

from __future__ import annotations

import subprocess

from native_build import Build


def test_c_parent_c_child(cc: Build) -> None:
    exe = cc("ipc_selftest", ["ipc_selftest.c"])
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failures")


def test_create_send_destroy_rounds(cc: Build) -> None:
    """Many links in one process, each forked after the last one's threads ran: a fork
    must not inherit the parent's pool (ck_pool.c's fork handlers)."""
    exe = cc("ipc_selftest", ["ipc_selftest.c"])
    result = subprocess.run([str(exe), "loop", "20"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
