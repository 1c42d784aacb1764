"""Helpers for IPC tests: a real peer process, waiting on conditions, leak counting."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from childkit.ipc import Connection, RemoteProxy, channel_socketpairs
from leakcheck import fd_count as fd_count  # re-exported for the IPC tests
from leakcheck import wait_until as wait_until

PEER_MAIN = Path(__file__).with_name("peer_main.py")


def non_pool_threads() -> set[threading.Thread]:
    """Live threads other than the process-wide IPC work pool (which lives for the process)."""
    return {t for t in threading.enumerate() if not t.name.startswith("ipc-work")}


@contextmanager
def no_fd_or_thread_leaks() -> Iterator[None]:
    """Fail unless the block leaves fds and non-pool threads as it found them (waiting
    for ones that are closing)."""
    fds = fd_count()
    threads = non_pool_threads()
    yield
    assert wait_until(lambda: fd_count() <= fds), f"fds leaked: {fds} -> {fd_count()}"
    assert wait_until(lambda: non_pool_threads() <= threads), "threads leaked"


class Peer:
    """A peer process serving ``peer_main.EchoStub`` over a fresh connection."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        local, remote = channel_socketpairs()
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER_MAIN), str(remote[0].fileno()), str(remote[1].fileno())],
            pass_fds=[s.fileno() for s in remote], env=env,
        )
        for sock in remote:
            sock.close()
        self.conn = Connection(*local, name="test peer")
        self.conn.start()
        assert self.conn.wait_peer_hello(30) is True
        self.proxy: RemoteProxy = self.conn.root_proxy()

    def close(self) -> None:
        self.conn.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
