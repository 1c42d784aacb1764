"""A model of serving many callers' channels (issue 16; docs/ipc.md, "Many threads on one
child"): plain Python sockets, no childkit, so that only the shape of the serving side
differs.

Caller threads in this process each own a SOCK_SEQPACKET socketpair to a forked child and
make 64-byte sync echo calls on it for one second. The child serves the sockets either
with a thread per socket (each blocked in ``recv`` on its own socket: what childkit's
channels had) or with one thread over an epoll of all of them, each socket
``EPOLLONESHOT`` and re-armed after its reply (what the channel hub does). Prints the
total calls per second of each, for 1 to 16 callers.

Run ``python -m bench.threads_model``. Nothing here asserts a speed; it is not part of
``python -m bench``.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

COUNTS = [1, 2, 4, 8, 16]
_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT


def _serve_with_threads(socks: list[socket.socket]) -> None:
    def serve(sock: socket.socket) -> None:
        buf = bytearray(256)
        while (n := sock.recv_into(buf)) > 0:
            sock.send(bytes(buf[:n]))

    threads = [threading.Thread(target=serve, args=(s,)) for s in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _serve_with_one_epoll(socks: list[socket.socket]) -> None:
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for s in socks:
        s.setblocking(False)
        ep.register(s.fileno(), _ONESHOT_IN)
    buf = bytearray(256)
    live = len(socks)
    while live:
        for fd, _events in ep.poll():
            sock = by_fd[fd]
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                ep.modify(fd, _ONESHOT_IN)
                continue
            if n == 0:
                ep.unregister(fd)
                live -= 1
                continue
            sock.send(bytes(buf[:n]))
            ep.modify(fd, _ONESHOT_IN)


def calls_per_second(callers: int, one_epoll: bool, seconds: float = 1.0) -> float:
    """Total echo calls per second of ``callers`` threads against a forked child."""
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(callers)]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            for ours, _theirs in pairs:
                ours.close()
            theirs = [t for _o, t in pairs]
            (_serve_with_one_epoll if one_epoll else _serve_with_threads)(theirs)
        finally:
            os._exit(0)
    for _ours, theirs in pairs:
        theirs.close()
    stop = threading.Event()
    counts = [0] * callers
    start = threading.Barrier(callers + 1)

    def call(i: int) -> None:
        sock = pairs[i][0]
        buf = bytearray(256)
        start.wait()
        done = 0
        while not stop.is_set():
            sock.send(b"x" * 64)
            sock.recv_into(buf)
            done += 1
        counts[i] = done

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)  # the measuring window (a benchmark, not a test)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for ours, _theirs in pairs:
        ours.close()  # the child's readers see the end
    os.waitpid(pid, 0)
    return sum(counts) / elapsed


def main() -> None:
    for callers in COUNTS:
        threads = calls_per_second(callers, one_epoll=False)
        epoll = calls_per_second(callers, one_epoll=True)
        print(f"{callers:2d} callers: a thread per socket {threads:9,.0f}/s   "
              f"one epoll thread {epoll:9,.0f}/s   ({epoll / threads:.2f}x)")


if __name__ == "__main__":
    main()
