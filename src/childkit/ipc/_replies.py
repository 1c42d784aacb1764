"""Replies that must wait for room: queued per connection, written when the peer reads.

A work thread never waits to send a reply. When the serve socket has no room (the peer
does not read its replies), the reply waits in its connection's :class:`ReplyQueue` and
the process's one *reply writer* thread writes it once the socket is writable (EPOLLOUT).
A peer that lets more than :data:`MAX_PENDING_REPLIES` replies, :data:`MAX_PENDING_BYTES`
bytes or :data:`MAX_PENDING_FDS` fds wait is not reading: its connection is closed, with a
warning naming it. So a hostile peer cannot hold this process's work threads, and the
memory and fds it can make this side hold are bounded.

May import: ``_fdutil``, ``_parcel``, ``_transport``. Nothing above. (A reply's fds are
owned by its parcels, closed once it is sent or dropped.)

Lock discipline
---------------
``ReplyQueue.lock`` guards ``pending``, ``pending_bytes``, ``pending_fds`` and ``closed``;
a queued record is sent only under it (with MSG_DONTWAIT: the send never blocks), so the
queue has one writer at a time. The reply writer's ``_lock`` guards its table of watched
queues; it is never held while a queue's lock is taken. Neither is held with any other
lock of the connection, but ``ReplyQueue.overflow`` closes the connection with none held.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import socket
import threading

from childkit.ipc._fdutil import rights
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._transport import Outgoing, Transport, gather

_log = logging.getLogger("childkit.ipc")

#: Replies one connection may have waiting for room before its peer counts as not reading.
MAX_PENDING_REPLIES = 1024
#: Bytes of replies one connection may have waiting for room.
MAX_PENDING_BYTES = 8 * 1024 * 1024
#: File descriptors in replies one connection may have waiting for room.
MAX_PENDING_FDS = 256

_DONTWAIT = int(socket.MSG_DONTWAIT)
_Entry = tuple[bytes, list[int], list[MessageParcel]]  # a record, its fds, parcels to close


class ReplyQueue:
    """The replies of one serve socket of a connection (``sock``: the main one or an extra
    channel's) that found no room on it."""

    def __init__(self, transport: Transport, sock: socket.socket) -> None:
        self.transport = transport
        self.sock = sock
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.pending: collections.deque[_Entry] = collections.deque()
        self.pending_bytes = 0
        self.pending_fds = 0
        self.closed = False
        self.overflowed = False  # the link is being closed for it: say so once

    def send(self, chunk: Outgoing, fds: list[int], parcels: list[MessageParcel]) -> None:
        """Send one reply record now if there is room, else queue it (never waits).
        ``parcels`` own ``fds`` and are closed once the record is sent (or dropped). A
        ``(head, data)`` record is sent gathered (joined only if it must wait)."""
        t = self.transport
        if not self.pending:  # the common case: room, nothing queued before it
            try:
                if fds or isinstance(chunk, tuple):
                    self.sock.sendmsg(gather(chunk), rights(fds), _DONTWAIT)
                else:
                    self.sock.send(chunk, _DONTWAIT)
            except BlockingIOError:
                pass
            except OSError as exc:
                _close_all(parcels)
                t.fail(f"sending a reply failed: {exc.strerror or exc}")
                return
            else:
                _close_all(parcels)
                return
        if isinstance(chunk, tuple):
            chunk = b"".join(gather(chunk))  # it waits in one piece
        with self.lock:
            if self.closed:
                dropped = True
            else:
                dropped = False
                self.pending.append((chunk, fds, parcels))
                self.pending_bytes += len(chunk)
                self.pending_fds += len(fds)
                over = (len(self.pending) > MAX_PENDING_REPLIES
                        or self.pending_bytes > MAX_PENDING_BYTES
                        or self.pending_fds > MAX_PENDING_FDS)
        if dropped:
            _close_all(parcels)
            return
        if over:
            self.overflow()
        else:
            writer().watch(self)

    def overflow(self) -> None:
        """The peer let too many replies wait: close its connection, saying why."""
        t = self.transport
        with self.lock:
            if self.overflowed:  # several work threads went over the bound at once
                return
            self.overflowed = True
            count, nbytes, nfds = len(self.pending), self.pending_bytes, self.pending_fds
        _log.warning(
            "%s: closing: the peer (pid %d) does not read its replies (%d replies, %d bytes, "
            "%d fds waiting; bounds %d, %d, %d)", t.name, t.peer_pid, count, nbytes, nfds,
            MAX_PENDING_REPLIES, MAX_PENDING_BYTES, MAX_PENDING_FDS)
        t.fail(f"the peer does not read its replies ({count} waiting)")

    def write_ready(self) -> bool:
        """Write what has room now (the reply writer, on EPOLLOUT); return whether the
        queue is done (empty, or the link closed)."""
        t = self.transport
        if not t.enter_io():
            return True
        try:
            with self.lock:
                while self.pending and not self.closed:
                    chunk, fds, parcels = self.pending[0]
                    try:
                        self.sock.sendmsg([chunk], rights(fds), _DONTWAIT)
                    except BlockingIOError:
                        return False
                    except OSError as exc:
                        error = f"sending a reply failed: {exc.strerror or exc}"
                        break
                    self.pending.popleft()
                    self.pending_bytes -= len(chunk)
                    self.pending_fds -= len(fds)
                    _close_all(parcels)
                else:
                    return True
        finally:
            t.io_done()
        t.fail(error)
        return True

    def close(self) -> None:
        """The link closed: drop what waits (closing its fds) and stop watching."""
        with self.lock:
            self.closed = True
            entries = list(self.pending)
            self.pending.clear()
            self.pending_bytes = self.pending_fds = 0
        for _chunk, _fds, parcels in entries:
            _close_all(parcels)  # they own the fds
        if _writer is not None:
            _writer.unwatch(self)


def _close_all(parcels: list[MessageParcel]) -> None:
    for parcel in parcels:
        parcel.close()


class _ReplyWriter:
    """The process's thread that writes queued replies when their sockets have room. It
    and its epoll exist only while some reply waits: when the last watched queue is
    dropped, the thread ends and closes its fds before :meth:`unwatch` returns (unless
    another reply came to wait meanwhile), so a connection closed with replies waiting
    leaves no thread or fd of the writer behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # the thread ended, or a queue came
        self._epoll: select.epoll | None = None
        self._wake = -1  # an eventfd in the epoll: the last queue went, look again
        self._thread: threading.Thread | None = None
        self._queues: dict[int, ReplyQueue] = {}

    def watch(self, queue: ReplyQueue) -> None:
        """Write ``queue`` once its socket has room (idempotent)."""
        fd = queue.fd
        with self._lock:
            if self._queues.get(fd) is queue:
                return
            epoll = self._epoll
            start = epoll is None
            if epoll is None:
                epoll = self._epoll = select.epoll()
                self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                epoll.register(self._wake, select.EPOLLIN)
            try:
                epoll.register(fd, select.EPOLLOUT)
            except FileExistsError:
                epoll.modify(fd, select.EPOLLOUT)
            except OSError:  # the socket closed meanwhile
                if start:
                    self._close_locked()
                return
            self._queues[fd] = queue
            self._changed.notify_all()
            if start:
                self._thread = threading.Thread(
                    target=self._run, args=(epoll, self._wake), name="ipc-work-replies",
                    daemon=True)
                self._thread.start()

    def unwatch(self, queue: ReplyQueue) -> None:
        """Stop watching ``queue``. When it was the last, the thread ends: waited for here
        (briefly; not on the thread itself, which ends after this call)."""
        fd = queue.fd
        with self._lock:
            if self._queues.get(fd) is not queue:
                return
            del self._queues[fd]
            if self._epoll is not None:
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass
            thread = self._thread
            if self._queues or thread is None:
                return
            os.eventfd_write(self._wake, 1)
            if thread is threading.current_thread():
                return
            # Bounded: the thread only has to take this lock once more; should it be slow
            # (a reply being written for a queue dropped meanwhile), it ends on its own.
            self._changed.wait_for(lambda: self._thread is not thread or bool(self._queues),
                                   timeout=5)

    def _close_locked(self) -> None:
        self._close_fds()
        self._thread = None
        self._changed.notify_all()

    def _close_fds(self) -> None:
        """Close the epoll and the eventfd (also in a forked child, without the lock)."""
        if self._epoll is not None:
            self._epoll.close()
        if self._wake >= 0:
            os.close(self._wake)
        self._epoll, self._wake = None, -1

    def _run(self, epoll: select.epoll, wake: int) -> None:
        while True:
            try:
                events = epoll.poll()  # (EINTR is retried by Python itself: PEP 475)
            except OSError:
                return  # closed (after fork)
            with self._lock:
                if not self._queues:
                    if self._epoll is epoll:
                        self._close_locked()
                    return
            for fd, _mask in events:
                if fd == wake:
                    try:
                        os.eventfd_read(wake)
                    except BlockingIOError:
                        pass
                    continue
                with self._lock:
                    queue = self._queues.get(fd)
                if queue is not None and queue.write_ready():
                    self.unwatch(queue)
                    if queue.pending and not queue.closed:
                        self.watch(queue)  # queued again meanwhile


_writer: _ReplyWriter | None = None
_writer_lock = threading.Lock()


def writer() -> _ReplyWriter:
    """The process's reply writer (made on first use)."""
    global _writer
    w = _writer
    if w is None:
        with _writer_lock:
            w = _writer
            if w is None:
                w = _writer = _ReplyWriter()
    return w


def _forget_after_fork() -> None:
    # The thread is gone in a forked child, and its epoll and eventfd are the parent's:
    # the child's copies of the fds are closed, not left to leak.
    global _writer, _writer_lock
    w, _writer = _writer, None
    _writer_lock = threading.Lock()
    if w is not None:
        w._close_fds()  # (not _close_locked: the lock may be held by a thread gone here)


os.register_at_fork(after_in_child=_forget_after_fork)
