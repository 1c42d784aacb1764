"""Replies that wait for room (``_replies``): the reply writer thread and its fds exist only
while a reply waits, and a connection closed with replies waiting leaves neither behind,
at once (a leak check right after ``close()`` must not see them)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from ipc_helpers import fd_count, wait_until

from childkit.ipc import Connection, _replies, channel_socketpairs

WRITER = "ipc-work-replies"


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WRITER]


def writer_fds() -> list[str]:
    """This process's eventpoll and eventfd fds (the writer's kinds)."""
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in ("anon_inode:[eventpoll]", "anon_inode:[eventfd]"):
            kinds.append(target)
    return sorted(kinds)


def fill(conn: Connection) -> None:
    """Fill the peer's queue on ``conn``'s serve socket: the next reply finds no room."""
    while True:
        try:
            conn._transport.serve.send(bytes(60_000), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return


@pytest.fixture
def unread() -> Iterator[tuple[Connection, socket.socket]]:
    """A connection whose peer reads nothing yet: its serve socket's queue is full."""
    assert wait_until(lambda: not writer_threads())  # an earlier test's writer has ended
    local, remote = channel_socketpairs()
    conn = Connection(*local)
    remote[0].settimeout(30)
    fill(conn)
    yield conn, remote[0]
    conn.close()
    for sock in remote:
        sock.close()


def test_a_waiting_reply_starts_the_writer_and_close_ends_it_at_once(
        unread: tuple[Connection, socket.socket]) -> None:
    conn, _peer_serve = unread
    fds, kinds = fd_count(), writer_fds()
    conn._server.replies.send(b"a reply that waits", [], [])
    assert conn._server.replies.pending
    assert len(writer_threads()) == 1
    assert fd_count() == fds + 2  # its epoll and its eventfd
    conn.close()
    # Gone when close() returns: no wait_until here.
    assert not writer_threads()
    assert writer_fds() == kinds


def test_the_writer_sends_what_waited_and_then_ends(
        unread: tuple[Connection, socket.socket]) -> None:
    conn, peer_serve = unread
    fds, kinds = fd_count(), writer_fds()
    conn._server.replies.send(b"the reply", [], [])
    assert len(writer_threads()) == 1
    got = peer_serve.recv(1 << 17)
    while got != b"the reply":  # the fillers first, then the reply the writer sent
        got = peer_serve.recv(1 << 17)
    assert wait_until(lambda: not writer_threads())  # it ends itself, after the send
    assert fd_count() == fds
    # A later reply that waits starts a new writer.
    fill(conn)
    conn._server.replies.send(b"again", [], [])
    assert len(writer_threads()) == 1
    conn.close()
    assert not writer_threads() and writer_fds() == kinds


def test_two_queues_share_the_writer_until_the_last_goes() -> None:
    assert wait_until(lambda: not writer_threads())
    pairs = [channel_socketpairs() for _ in range(2)]
    conns = [Connection(*local) for local, _remote in pairs]
    try:
        fds, kinds = fd_count(), writer_fds()
        for conn in conns:
            fill(conn)
            conn._server.replies.send(b"waits", [], [])
        assert len(writer_threads()) == 1 and fd_count() == fds + 2
        conns[0].close()
        assert len(writer_threads()) == 1  # the other queue still waits
        conns[1].close()
        assert not writer_threads() and writer_fds() == kinds
    finally:
        for conn in conns:
            conn.close()
        for _local, remote in pairs:
            for sock in remote:
                sock.close()
    assert _replies.writer()._epoll is None
