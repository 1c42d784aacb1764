"""The transport of one connection: its two sockets, records in and out, and the writer.

A connection is two SOCK_SEQPACKET socket pairs. On its *call* socket a side sends its
requests (and HELLO and RELEASE frames) and reads the replies; on its *serve* socket it
receives the peer's requests and sends the replies. This module owns both sockets (and
the serve ends of the extra channels the peer opens: ``channel_socks``; this side's own
channels belong to :mod:`._channels`) and is the only code that closes them; the roles
(:mod:`._caller`, :mod:`._server`, :mod:`._asyncbridge`, :mod:`._objects`) read and write
them through it. It also holds the per-thread receive buffer, the C ``exchange`` (send,
poll, read in one call without the GIL) with its Python twin, and the *writer*: frames
queue on the call socket while another thread writes, and go out coalesced.

May import: ``_accel``, ``_allocator``, ``_busypoll``, ``_errors``, ``_fdutil``,
``_recvbuf``, ``_wire``. Nothing above.

Lock discipline
---------------
``Transport.lock`` (the *link lock*, with its condition ``cond``) guards, here: ``closed``,
``close_reason``, ``sockets_open``, ``io_users``, ``wqueue``, ``writing``,
``channel_socks``, ``closers``. The caller role (:mod:`._caller`) and the asyncio hand-off
(:mod:`._asyncbridge`) keep their fields under this same lock, because the lone caller's
fast path decides in one critical section that nobody writes, reads or has closed the
link. ``closed`` only ever goes from False to True,
so reading it without the lock is a hint that a locked check confirms. ``replies_sent``
and ``replies_received`` are counters for release ordering (see ``_wire.Release``):
``replies_sent`` is advanced by the server role under its own lock, ``replies_received`` by
the caller role under this one; each is read without a lock elsewhere (a stale read is one
that precedes the increment, and so precedes what the increment stands for). The writer
never holds ``lock`` while in a socket call. Lock order, when two are held: link lock ->
server lock (:mod:`._server`) -> object-table lock (:mod:`._objects`); in practice code
here holds only the link lock and calls out with none.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from childkit.ipc import _accel, _allocator, _busypoll, _recvbuf, _wire
from childkit.ipc._errors import (
    DeadRemoteObjectError,
    IPCError,
    IPCErrorCode,
    IPCTimeoutError,
    ParamError,
    ProtocolError,
    resource_error,
)
from childkit.ipc._fdutil import close_fds, dup_all, received_fds, rights

_log = logging.getLogger("childkit.ipc")
#: What was done to glibc's allocator at import (see _allocator): set, so that the
#: payload-sized buffers of large parcels are reused instead of mapped afresh.
ALLOCATOR = _allocator.outcome

ANC_SPACE = socket.CMSG_SPACE(_wire.MAX_RECORD_FDS * 4) + socket.CMSG_SPACE(12)
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
# Plain ints: socket's IntFlag members cost microseconds per operation on the hot path.
RECV_FLAGS = int(socket.MSG_CMSG_CLOEXEC)
TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
DONTWAIT = int(socket.MSG_DONTWAIT)
# A read that failed with one of these lost nothing: the caller reads again later.
RETRY_LATER = frozenset({errno.EAGAIN, errno.EINTR})
#: A sync caller's send, poll and read in one C call (see _caller), if built.
exchange: Callable[..., tuple[int, list[tuple[int, int, bytes]], int, int, int]] | None = (
    _accel.speedups.exchange if _accel.speedups is not None else None)
#: A parcel's data in pieces, sent gathered (see _speedups.Pieces), if built.
_Pieces = _accel.speedups.Pieces if _accel.speedups is not None else None
release_holds: Callable[[], None] | None = (
    _accel.speedups.release_holds if _accel.speedups is not None else None)
#: The send buffer every socket of a connection asks for (a full record fits with room).
SNDBUF = 1 << 20
#: One-way frames that may wait to be written before their senders block.
WRITE_BACKLOG = 8192
#: The request group of a queued frame that may share a record with any other (one-way
#: requests, releases, greetings). A sync request's group is its caller's: the seq of its
#: call, or of the first call of its ``send_requests`` batch. The peer runs the sync
#: requests of one record in order on one thread (a batch's promise), so a record never
#: holds two callers' sync requests: one's would wait for the other's to return, and
#: deadlock if it waited for it (as Binder, each caller's transaction gets a thread).
NO_GROUP = 0
#: The fd list of every queued frame that carries none (shared: it is only ever read).
NO_FDS: list[int] = []

Record = tuple[int, list[tuple[int, int, bytes]], int]  # a received record: size, ancdata, flags
#: A record to send: its bytes, or a large frame's ``(head, parcel data)``, gathered by
#: sendmsg into one record so that the data is not copied behind the head first.
Outgoing = bytes | tuple[bytes, _wire.Data]
#: What a record is read into: a thread's receive buffer.
RecvBuffer = bytearray | mmap.mmap
ExchangeResult = tuple[int, list[tuple[int, int, bytes]], int, int, int]


#: Each thread's receive buffer (``recv_buffers.buf``), for whichever socket it reads: what
#: a read leaves there is copied out (decoded) before the same thread reads again, unless
#: a large parcel adopts the buffer (see _recvbuf).
recv_buffers = _recvbuf.buffers


def received_creds(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """The sender's ``(pid, uid)`` if SCM_CREDENTIALS came with a record."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= 12:
            pid, uid, _gid = _CREDS.unpack_from(data)
            return pid, uid
    return None


def channel_socketpairs() -> tuple[
    tuple[socket.socket, socket.socket], tuple[socket.socket, socket.socket]
]:
    """Two SOCK_SEQPACKET socketpairs for one connection: ``(local_end, remote_end)``.

    Each end is ``(call_sock, serve_sock)``; one end's call socket is paired with the
    other's serve socket. Give the remote end to the peer, then close it here.
    """
    a_call, b_serve = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b_call, a_serve = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # The kernel stamps the sender's real pid and uid on what arrives while SO_PASSCRED is
    # set, so the first frame (HELLO) tells each side who its peer really is. SO_PEERCRED
    # cannot: for a socketpair it names the process that created the pair.
    for serve in (a_serve, b_serve):
        serve.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return (a_call, a_serve), (b_call, b_serve)


class SendTimeout(Exception):
    """A record could not be sent before its deadline: the peer does not read. Nothing of
    it was sent (a SOCK_SEQPACKET record goes out whole or not at all)."""


def sendmsg(sock: socket.socket, data: Outgoing, fds: list[int],
            deadline: float | None = None) -> None:
    """Send one record on ``sock``, waiting for room if the peer reads slowly: without
    limit, or until ``deadline`` (``time.monotonic()``), then :class:`SendTimeout`."""
    anc = rights(fds)
    iov = gather(data)
    if deadline is not None:
        _send_by(sock, iov, anc, deadline)
        return
    if not anc:
        try:
            sock.sendmsg(iov)
            return
        except BlockingIOError:
            pass
    while True:
        try:
            sock.sendmsg(iov, anc)
            return
        except BlockingIOError:
            # The peer is not reading fast enough: wait for room (backpressure).
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLOUT)
            poller.poll()


def gather(data: Outgoing) -> tuple[bytes | bytearray | memoryview, ...]:
    """The buffers of one record for ``sendmsg``: a ``(head, data)`` pair, and a parcel's
    data kept in pieces (see ``_speedups.Pieces``), are sent piece by piece, not joined."""
    if not isinstance(data, tuple):
        return (data,)
    head, body = data
    if _Pieces is not None and body.__class__ is _Pieces:
        return (head, *body.parts)  # type: ignore[union-attr]
    return data


def _send_by(sock: socket.socket, iov: tuple[bytes | bytearray | memoryview, ...],
             anc: list[tuple[int, int, bytes]], deadline: float) -> None:
    poller: select.poll | None = None
    while True:
        try:
            # MSG_DONTWAIT: the call socket blocks, and a blocked sendmsg has no deadline.
            sock.sendmsg(iov, anc, DONTWAIT)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SendTimeout from None
            if poller is None:
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLOUT)
            poller.poll(remaining * 1000.0)


def exchange_slowly(sock: socket.socket, poll: Callable[[int], list[tuple[int, int]]], fd: int,
                    chunk: Outgoing, buf: RecvBuffer, started: int, end: int,
                    wait_for_room: bool = True) -> ExchangeResult:
    """``_speedups.exchange`` with Python's socket calls (no C twins here, or an event
    loop shares the socket, which is then non-blocking): send ``chunk`` on ``sock``
    (unless empty), poll until ``end`` (unless 0), read one record. Without
    ``wait_for_room`` (a reply: no work thread may wait for a peer that does not read),
    a full socket raises ``BlockingIOError`` with nothing sent, as the C twin does."""
    if chunk:
        flags = 0 if wait_for_room else DONTWAIT
        try:
            if isinstance(chunk, tuple):
                sock.sendmsg(gather(chunk), [], flags)
            else:
                sock.send(chunk, flags)
        except BlockingIOError:
            if not wait_for_room:
                raise
            sendmsg(sock, chunk, [])  # non-blocking while an event loop shares it: wait
    seen = end != 0 and _busypoll.spin(poll, started, end, fd)
    try:
        n, anc, flags, _ = sock.recvmsg_into([buf], ANC_SPACE, RECV_FLAGS)
    except OSError as exc:
        return -1, [], 0, int(seen), exc.errno or errno.EIO
    return n, anc, flags, int(seen), 0


def read_record(sock: socket.socket, buf: RecvBuffer) -> Record:
    """Read one record from ``sock`` into ``buf``, as ``sock.recvmsg_into([buf], ANC_SPACE,
    RECV_FLAGS)`` does (raising what it raises), but with the C twins' read: a large
    single-buffer parcel may come scattered (see ``_recvbuf``)."""
    if exchange is None:
        n, anc, flags, _ = sock.recvmsg_into([buf], ANC_SPACE, RECV_FLAGS)
        return n, anc, flags
    fd = sock.fileno()
    if fd < 0:  # closed: fail as recvmsg_into does
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    n, anc, flags, _seen, err = exchange(fd, b"", buf, 0, 0)
    if err:
        raise OSError(err, os.strerror(err))  # BlockingIOError, InterruptedError, ...
    return n, anc, flags


def dup_for_sending(fds: list[int]) -> list[int]:
    """Copies of a parcel's fds that a frame owns until it is sent; :class:`IPCError`
    (``OH_IPC_INNER_ERROR``, naming what ran out) if they cannot all be made."""
    try:
        return dup_all(fds)
    except OSError as exc:
        raise resource_error(exc, "duplicating a request's fds for sending") or IPCError(
            IPCErrorCode.OH_IPC_INNER_ERROR, f"cannot duplicate a request's fds: {exc.strerror}",
        ) from None


class Transport:
    """The sockets of one connection, their users, and the call socket's writer.

    ``on_fail(reason)`` is called (without any lock held) when a socket call fails or the
    peer breaks the protocol; the connection closes itself from there. ``gc_releases`` is
    the object table's queue of releases from the garbage collector, which every write
    sends first (encoded here, with ``replies_sent``). ``submit`` runs a task on a work
    thread: the one-way writer's.
    """

    def __init__(self, call_sock: socket.socket, serve_sock: socket.socket, name: str,
                 gc_releases: deque[tuple[int, int]],
                 submit: Callable[[Callable[[], None]], None]) -> None:
        for sock in (call_sock, serve_sock):
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
                raise ParamError("a connection needs AF_UNIX SOCK_SEQPACKET sockets")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            except OSError:
                pass
        # The call socket blocks: a caller with no timeout sleeps in recvmsg itself, one
        # syscall per reply. The serve socket does not: work threads only read it when
        # epoll says so, and must never sleep in it.
        call_sock.setblocking(True)
        serve_sock.setblocking(False)
        self.call = call_sock
        self.serve = serve_sock
        self.call_fd = call_sock.fileno()
        self.serve_fd = serve_sock.fileno()
        pid, uid, _gid = _CREDS.unpack(
            serve_sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        self.peer_pid: int = pid
        self.peer_uid: int = uid
        self.name = name or f"connection to pid {pid}"
        self.on_fail: Callable[[str], None] = lambda reason: None
        self.gc_releases = gc_releases
        self.submit = submit  # runs a task on a work thread (the pool's submit)

        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.closed = False
        self.close_reason = ""
        self.protocol_failed = False  # a protocol error was reported (and logged) once
        self.sockets_open = True
        self.io_users = 0  # threads inside a socket call; sockets close when it drops to 0
        # Writing the call socket: frames queue here while another thread writes, with
        # their fds and their request group (see flush).
        self.wqueue: list[tuple[bytes, list[int], int]] = []
        self.writing = False
        self.replies_sent = 0
        self.replies_received = 0
        # The serve ends of the extra channels the peer opened (see _channels): closed
        # with the link's own sockets, once nobody is inside a socket call.
        self.channel_socks: list[socket.socket] = []
        # What else the readers use with those sockets (the channel hub's epoll): closed
        # with them.
        self.closers: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ lifecycle
    def dead(self) -> DeadRemoteObjectError:
        """The error for a call on a closed link."""
        return DeadRemoteObjectError(f"{self.name} is closed: {self.close_reason}")

    def fail(self, reason: str) -> None:
        """Close the connection for ``reason`` (a failed socket call, a protocol error)."""
        self.on_fail(reason)

    def mark_closed_locked(self, reason: str) -> list[int] | None:
        """Mark the link closed (holding ``lock``); return the fds of frames that will
        now never be written (the caller closes them), or ``None`` if already closed."""
        if self.closed:
            return None
        self.closed = True
        self.close_reason = reason
        self.cond.notify_all()
        queued_fds = [fd for _chunk, fds, _group in self.wqueue for fd in fds]
        self.wqueue.clear()
        return queued_fds

    def shutdown_sockets(self) -> None:
        """Wake every thread blocked on a socket (after :meth:`mark_closed_locked`)."""
        with self.lock:
            socks = [self.call, self.serve, *self.channel_socks] if self.sockets_open else []
            for sock in socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.close_sockets_if_idle_locked()

    def close_sockets_if_idle_locked(self) -> None:
        # Every reader (the leader, a stand-in, a loop, a channel's server) and the writer
        # count in io_users while they may touch a socket, so no user left means nobody
        # is inside one.
        if self.closed and self.sockets_open and self.io_users == 0:
            self.sockets_open = False
            self.call.close()
            self.serve.close()
            for sock in self.channel_socks:
                sock.close()
            for close in self.closers:
                close()

    def close_with_sockets(self, close: Callable[[], None]) -> bool:
        """Call ``close()`` when the link's sockets close; ``False`` (not taken: the
        caller closes it now) once the link is closed."""
        with self.lock:
            if self.closed:
                return False
            self.closers.append(close)
            return True

    def add_channel_socket(self, sock: socket.socket) -> bool:
        """Own the serve end of a channel the peer opened; ``False`` (not taken) once the
        link is closed."""
        with self.lock:
            if self.closed:
                return False
            self.channel_socks.append(sock)
            return True

    def enter_io(self) -> bool:
        """Count this thread as a socket user; ``False`` (not counted) once closed."""
        lock = self.lock
        lock.acquire()
        if self.closed or not self.sockets_open:
            lock.release()
            return False
        self.io_users += 1
        lock.release()
        return True

    def io_done(self) -> None:
        lock = self.lock
        lock.acquire()
        self.io_users -= 1
        if self.closed:
            self.close_sockets_if_idle_locked()
        lock.release()

    # ------------------------------------------------------------------ reading
    def decode(self, buf: RecvBuffer, n: int, anc: list[tuple[int, int, bytes]], flags: int,
               ) -> list[_wire.Frame] | None:
        """The frames of a record just read into ``buf``, now owning their fds; ``None``
        (and the link closed) at the end of the stream or on a protocol error."""
        _recvbuf.restore(buf)  # a record read scattered, that no parcel took
        fds = received_fds(anc) if anc else []
        if n == 0 and not fds and not flags & TRUNCATED:
            self.fail("the peer closed the connection")
            return None
        try:
            if flags & TRUNCATED:
                raise ProtocolError("record larger than the protocol allows (truncated)")
            return _wire.decode_record(memoryview(buf)[:n], fds)
        except ProtocolError as exc:
            close_fds(fds)
            self.protocol_error(exc.message)
            return None

    def protocol_error(self, message: str) -> None:
        """Close the link for a protocol error found above the wire decoder, logging one
        warning per link: the first report of an open link logs and closes it; any later
        one (another thread met the same fault, or the link closed meanwhile) is silent."""
        with self.lock:
            if self.closed or self.protocol_failed:
                return
            self.protocol_failed = True
        _log.warning("%s: closing, protocol error: %s", self.name, message)
        self.fail(f"protocol error from the peer: {message}")

    # ------------------------------------------------------------------ writing
    def queue_gc_releases_locked(self) -> None:
        """Queue the releases the garbage collector left (holding ``lock``)."""
        gc = self.gc_releases
        while gc:
            handle, count = gc.popleft()
            self.wqueue.append((_wire.encode_release(handle, count, self.replies_sent), [],
                                NO_GROUP))

    def send(self, chunk: bytes, fds: list[int] | None, deadline: float | None = None,
             group: int = NO_GROUP) -> None:
        """Queue one frame on the call socket and write the queue unless someone else is.

        ``fds`` are duplicated: the frame owns its copies until they are sent. With nothing
        queued and nobody writing (the common case) the frame is written at once by this
        thread; frames queued meanwhile by others go out after it, coalesced. With a
        ``deadline`` (a sync call's timeout), a writer that finds no room by then hands
        the writing to a work thread and raises :class:`IPCTimeoutError`. ``group``: a
        sync request's (its call's seq; see :data:`NO_GROUP`).
        """
        owned = dup_for_sending(fds) if fds else []
        lock = self.lock
        lock.acquire()
        if self.closed:
            lock.release()
            close_fds(owned)
            raise self.dead()
        if self.gc_releases:
            self.queue_gc_releases_locked()
        if self.writing:
            self.wqueue.append((chunk, owned, group))
            lock.release()
            return
        self.writing = True
        self.io_users += 1
        if self.wqueue:
            self.wqueue.append((chunk, owned, group))
            lock.release()
        else:
            lock.release()
            try:
                sendmsg(self.call, chunk, owned, deadline)
            except SendTimeout:
                self._hand_off_writing()
                raise self._send_timeout() from None
            except OSError as exc:
                self._write_failed(exc)
            finally:
                if owned:
                    close_fds(owned)
        self.flush_as_writer(deadline)

    def flush_as_writer(self, deadline: float | None) -> None:
        """The rest of a writer's turn: flush, then stop counting as a socket user."""
        try:
            self.flush(deadline)
        except SendTimeout:
            self._hand_off_writing()  # it keeps this thread's count as a socket user
            raise self._send_timeout() from None
        except BaseException:
            self.io_done()
            raise
        self.io_done()

    def _send_timeout(self) -> IPCTimeoutError:
        return IPCTimeoutError(
            f"{self.name}: the request could not be sent in time (the peer does not read)")

    def _hand_off_writing(self) -> None:
        """A writer whose deadline passed: a work thread goes on writing what is queued
        (it takes over this thread's count in ``io_users``), or nobody needs to."""
        lock = self.lock
        lock.acquire()
        if self.wqueue and not self.closed:
            lock.release()
            self.submit(self.flush_task)
            return
        self.writing = False
        self.io_users -= 1
        if self.closed:
            self.close_sockets_if_idle_locked()
        lock.release()

    def _write_failed(self, exc: OSError) -> None:
        """A write of the call socket failed: give up the writer's role and close."""
        lock = self.lock
        lock.acquire()
        self.writing = False
        lock.release()
        self.io_done()
        self.fail(f"sending failed: {exc.strerror or exc}")
        raise DeadRemoteObjectError(f"{self.name}: peer is gone ({exc})") from None

    def send_oneway(self, chunk: bytes, fds: list[int] | None) -> None:
        """Queue a one-way frame; a work thread writes the queue, coalescing frames.

        The caller returns at once, like ``multiprocessing.Queue.put``: frames sent in a
        burst leave in a few large records instead of one syscall each. When more than
        :data:`WRITE_BACKLOG` frames wait, the caller blocks until the writer catches up.
        """
        owned = dup_for_sending(fds) if fds else []
        lock = self.lock
        lock.acquire()
        try:
            while len(self.wqueue) >= WRITE_BACKLOG and not self.closed:
                self.cond.wait(1.0)
            if self.closed:
                close_fds(owned)
                raise self.dead()
            if self.gc_releases:
                self.queue_gc_releases_locked()
            if chunk:
                self.wqueue.append((chunk, owned, NO_GROUP))
            if self.writing or not self.wqueue:
                return
            self.writing = True
            self.io_users += 1
        finally:
            lock.release()
        self.submit(self.flush_task)

    def flush_task(self) -> None:
        """A work thread's turn as writer (submitted by :meth:`send_oneway`)."""
        try:
            self.flush()
        except DeadRemoteObjectError:
            pass  # the senders of one-way frames have returned; death reaches recipients
        finally:
            self.io_done()

    def send_direct(self, chunk: bytes, deadline: float | None = None) -> None:
        """Write one fd-less frame; the caller has set ``writing`` and ``io_users``. With
        a ``deadline``, :class:`IPCTimeoutError` if there was no room by then."""
        try:
            if deadline is not None:
                sendmsg(self.call, chunk, [], deadline)
            else:
                try:
                    self.call.send(chunk)
                except BlockingIOError:  # non-blocking while an event loop shares it
                    sendmsg(self.call, chunk, [])  # waits for room
        except SendTimeout:
            self._hand_off_writing()
            raise self._send_timeout() from None
        except OSError as exc:
            self._write_failed(exc)
        lock = self.lock
        lock.acquire()
        if self.wqueue and not self.closed:
            lock.release()
            self.flush_as_writer(deadline)  # frames that others queued meanwhile
            return
        self.writing = False
        self.io_users -= 1
        if self.closed:
            self.close_sockets_if_idle_locked()
        lock.release()

    def flush(self, deadline: float | None = None) -> None:
        """Write the queue, coalesced into records, until it is empty (the writer's loop):
        a record holds the sync requests of one group at most (see :data:`NO_GROUP`).
        With a ``deadline``: :class:`SendTimeout` when a record found no room by then
        (its frames are queued again, first, with their fds; the caller is still the
        writer)."""
        while True:
            with self.lock:
                if not self.wqueue or self.closed:
                    self.writing = False
                    return
                chunks: list[bytes] = []
                fds: list[int] = []
                size = 0
                queue = self.wqueue
                taken = 0
                record_group = NO_GROUP
                for chunk, frame_fds, group in queue:
                    if taken and (size + len(chunk) > _wire.MAX_RECORD_BYTES
                                  or len(fds) + len(frame_fds) > _wire.MAX_RECORD_FDS
                                  or (group and record_group and group != record_group)):
                        break
                    if group:
                        record_group = group
                    chunks.append(chunk)
                    fds.extend(frame_fds)
                    size += len(chunk)
                    taken += 1
                entries = queue[:taken] if deadline is not None else None
                del queue[:taken]
                if len(queue) < WRITE_BACKLOG <= len(queue) + taken:
                    self.cond.notify_all()  # one-way senders blocked on a full queue
            try:
                sendmsg(self.call, b"".join(chunks) if taken > 1 else chunks[0], fds, deadline)
            except SendTimeout:
                assert entries is not None
                with self.lock:  # nothing went out: first in line again, fds still owned
                    self.wqueue[:0] = entries
                raise
            except OSError as exc:
                close_fds(fds)
                with self.lock:
                    self.writing = False
                self.fail(f"sending failed: {exc.strerror or exc}")
                raise DeadRemoteObjectError(f"{self.name}: peer is gone ({exc})") from None
            close_fds(fds)
