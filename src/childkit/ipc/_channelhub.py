"""The peer's extra call channels of one connection, served together from one epoll.

Each channel the peer opens (see :mod:`._channels`) carries one plain sync request at a
time, from one calling thread of the peer. With a work thread per channel, every request
wakes its own thread, and with many callers those threads queue for this process's GIL:
a woken thread that finds the GIL taken sleeps again until it is handed over, so a
request cost two or three thread switches instead of one, and the more callers, the more
it cost (issue 16: 16 callers got fewer requests through than one).

So the channels of a connection share one epoll of their own, the *hub*, which is one fd
in the work threads' pool. A work thread that the pool wakes for the hub *drains* it: it
serves every channel that has a request, one after the other, holding the GIL through,
and takes the next ones as they come, until none is waiting; then it stays a moment
(:data:`STAY_MS`) for the next request while another work thread is idle for the rest of
the process, as binder's threads wait on their connection, and otherwise goes back to the
pool. However many callers, a busy connection's channels cost one thread that does not
sleep between requests.

Each channel is armed ``EPOLLONESHOT`` in the hub and re-armed after its request was
answered, so a channel is read by one thread at a time. A request that runs long does not
hold up the others: the drainer *holds* the hub in the pool while it runs one (see
``IPCThreadPool.hold``), so the pool re-arms the hub after the hold limit, or at once when
the request's stub waits for a reply of its own (a call back into its caller), and
another work thread drains the rest meanwhile.

With the C twins, a turn of the draining thread (the last reply sent, its channel
re-armed, the next ready channel found and its request read) is one call without the GIL
(``_speedups.hub_turn``). This module knows nothing of frames or parcels: a channel is an
fd and a :class:`ChannelService` that runs the request read from it.

May import: ``_accel``, ``_busypoll``, ``_threadpool``, ``_transport``. Nothing above.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import threading
from typing import Protocol

from childkit.ipc import _accel, _busypoll
from childkit.ipc._busypoll import PREEMPTED_NS, BusyPoll, lost_cpu
from childkit.ipc._threadpool import IPCThreadPool
from childkit.ipc._transport import (
    ANC_SPACE,
    DONTWAIT,
    RECV_FLAGS,
    RETRY_LATER,
    Outgoing,
    Transport,
    recv_buffers,
)

#: How long a draining thread waits for the next request when none is waiting (ms).
STAY_MS = 2
_ONESHOT_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT
_hub_turn = _accel.speedups.hub_turn if _accel.speedups is not None else None
#: A turn's record: its channel's fd (-1: none), size, ancillary data, flags, the read's
#: errno, and whether polling saw it (see ``_speedups.hub_turn``).
_Turn = tuple[int, int, list[tuple[int, int, bytes]], int, int, int]


class ChannelService(Protocol):
    """What the hub calls on a channel's server (``_server.ChannelServer``)."""

    sock: socket.socket

    def serve_record(self, n: int, anc: list[tuple[int, int, bytes]], flags: int,
                     ) -> Outgoing | None:
        """Run the request read into this thread's receive buffer; its reply to send
        (``b""``: sent already), or ``None`` (none now: it is queued, or the link
        failed)."""

    def send_reply_record(self, reply: Outgoing) -> None:
        """Send ``reply`` later, when the peer has room (never waits)."""


class ChannelHub:
    """The extra channels of one connection (see the module docstring). Thread-safe."""

    def __init__(self, transport: Transport, pool: IPCThreadPool) -> None:
        self.transport = transport
        self.pool = pool
        self._epoll = select.epoll()
        self.fd = self._epoll.fileno()
        self._servers: dict[int, ChannelService] = {}
        self._lock = threading.Lock()  # guards draining and _registered
        #: Threads draining the hub now: a hint for the main socket's poller, which does
        #: not spin while a channel is served (it would take the CPU they need).
        self.draining = 0
        self._registered = False
        #: The draining thread's polling window for the next request (one drains at a
        #: time but for long requests; a race only blurs the window).
        self.busy_poll = BusyPoll()

    def add(self, fd: int, server: ChannelService) -> None:
        """Serve the channel ``fd`` with ``server`` from now on."""
        self._servers[fd] = server
        self._epoll.register(fd, _ONESHOT_IN)
        with self._lock:
            first = not self._registered
            self._registered = True
        if first:
            self.pool.register(self.fd, self.on_readable)

    def close(self) -> None:
        """Stop serving (the link closed): the hub leaves the pool. Its epoll closes with
        the link's sockets (:meth:`close_epoll`, once no thread drains it)."""
        with self._lock:
            registered, self._registered = self._registered, False
        if registered:
            self.pool.unregister(self.fd)

    def close_epoll(self) -> None:
        """Close the hub's epoll (``Transport.close_with_sockets``: no socket user left)."""
        self._epoll.close()

    # ------------------------------------------------------------------ draining
    def on_readable(self) -> None:
        """Pool callback: drain the hub (the hub is disarmed in the pool meanwhile)."""
        t = self.transport
        if not t.enter_io():
            return
        with self._lock:
            self.draining += 1
        try:
            self._drain()
        finally:
            with self._lock:
                self.draining -= 1
            self.pool.rearm(self.fd)
            t.io_done()

    def _drain(self) -> None:
        """Serve the channels' requests as they come; return when none came for a stay
        (or at once when no other work thread is idle), or when the link closed. Before
        waiting for the next request, poll for it a moment (:mod:`._busypoll`'s window
        and rules) when nothing else would run on the CPU meanwhile."""
        t = self.transport
        pool = self.pool
        hub = self.fd
        servers = self._servers
        waiter = self.busy_poll
        turn = _hub_turn if _hub_turn is not None else self._turn_slowly
        reply_fd = -1  # the channel whose reply goes out first, in the next turn
        reply: Outgoing = b""
        timeout = 0
        while not t.closed:
            buf = recv_buffers.buf  # (a parcel may have adopted the last one)
            started = _busypoll._now_ns()
            end = waiter.poll_end(started) if not timeout else 0
            try:
                fd, n, anc, flags, err, seen = turn(hub, reply_fd, reply, buf, timeout, end,
                                                    PREEMPTED_NS)
            except BlockingIOError:  # no room for the reply: it waits, the channel re-arms
                servers[reply_fd].send_reply_record(reply)
                self._rearm(reply_fd)
                reply_fd = -1
                continue
            except OSError as exc:  # the reply failed, or the hub closed with the link
                if not t.closed:
                    t.fail(f"serving a channel failed: {exc.strerror or exc}")
                return
            reply_fd = -1
            if seen < 0:  # descheduled while polling
                lost_cpu(_busypoll._now_ns())
            if fd < 0:  # nothing came
                if end:
                    waiter.waited(_busypoll._now_ns() - started)
                if timeout or not pool.spare():
                    return
                timeout = STAY_MS  # stay a moment, if the rest of the process is served
                continue
            if end and seen <= 0:
                waiter.waited(_busypoll._now_ns() - started)
            timeout = 0
            server = servers.get(fd)
            if server is None:  # (cannot happen: channels leave only with the hub)
                continue
            if n < 0:
                if err not in RETRY_LATER:
                    t.fail(f"receiving failed: {os.strerror(err)}")
                    return
                self._rearm(fd)  # nothing there after all
                continue
            pool.hold(hub)  # another thread drains the rest if this request runs long
            reply = b""
            try:
                reply = server.serve_record(n, anc, flags) or b""
            finally:
                pool.unhold(hub)
                if not reply:  # (also when serving raised: the channel is served on)
                    self._rearm(fd)
            if reply:
                reply_fd = fd  # sent, and the channel re-armed, at the next turn

    def _rearm(self, fd: int) -> None:
        try:
            self._epoll.modify(fd, _ONESHOT_IN)
        except (OSError, ValueError):
            pass  # closed meanwhile

    def _turn_slowly(self, hub: int, fd: int, reply: Outgoing, buf: mmap.mmap | bytearray,
                     timeout: int, end: int, preempted: int) -> _Turn:
        """``_speedups.hub_turn`` in Python (without the C twins)."""
        if fd >= 0:
            sock = self._servers[fd].sock
            parts = [reply[0], reply[1]] if isinstance(reply, tuple) else [reply]
            try:
                sock.sendmsg(parts, [], DONTWAIT)
            except InterruptedError:
                sock.sendmsg(parts, [], DONTWAIT)
            self._rearm(fd)
        seen = 0
        ready: list[tuple[int, int]] = []
        try:
            if end:  # poll (each look takes the channel it finds: EPOLLONESHOT)
                last = _busypoll._now_ns()
                while not (ready := self._epoll.poll(0, 1)):
                    now = _busypoll._now_ns()
                    if now - last > preempted:
                        seen = -1
                        break
                    if now >= end:
                        break
                    last = now
                seen = 1 if ready else seen
            if not ready:
                ready = self._epoll.poll(timeout / 1000, 1)
        except InterruptedError:
            pass
        except ValueError as exc:  # closed
            raise OSError(errno.EBADF, str(exc)) from None
        if not ready:
            return -1, -1, [], 0, 0, seen
        ready_fd = ready[0][0]
        try:
            n, anc, flags, _ = self._servers[ready_fd].sock.recvmsg_into(
                [buf], ANC_SPACE, RECV_FLAGS | DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return ready_fd, -1, [], 0, errno.EAGAIN, seen
        except OSError as exc:
            return ready_fd, -1, [], 0, exc.errno or errno.EIO, seen
        return ready_fd, n, anc, flags, 0, seen
