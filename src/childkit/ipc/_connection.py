"""Connection: one IPC link between two processes, and the only part that does socket I/O.

A connection is two SOCK_SEQPACKET socket pairs. On its *call* socket a side sends its
requests (and HELLO and RELEASE frames) and reads the replies; on its *serve* socket it
receives the peer's requests, which the process's IPC work threads run, and sends the
replies. Keeping the two apart is what lets a sync call skip thread hops: the calling
thread reads its own reply, since nothing else arrives on its call socket. When several
calls are outstanding, one caller at a time reads (the *leader*) and hands the others'
replies over; requests queued while another thread writes go out in one record.

Frames are built and parsed by :mod:`childkit.ipc._wire`; parcels by
:mod:`childkit.ipc._parcel`; requests run on :mod:`childkit.ipc._threadpool`. This module
holds the state that ties them together: outstanding calls, exported stubs (handle ->
stub, with the peer's reference count), proxies to the peer's stubs, and one-way queues.
"""

from __future__ import annotations

import collections
import errno
import logging
import mmap
import os
import select
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from childkit.ipc import _accel, _busypoll, _skeleton, _wire
from childkit.ipc._busypoll import PREEMPTED_NS, BusyPoll, lost_cpu
from childkit.ipc._errors import (
    DeadRemoteObjectError,
    IPCError,
    IPCErrorCode,
    IPCTimeoutError,
    ParamError,
    ParcelWriteError,
    ProtocolError,
)
from childkit.ipc._fdutil import close_fds, received_fds, rights
from childkit.ipc._object import RemoteObject
from childkit.ipc._option import ASYNC_OPTION, SYNC_OPTION, MessageOption
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._proxy import DeathRecipient, RemoteProxy, attach_release_finalizer
from childkit.ipc._stub import RemoteStub, invoke_stub
from childkit.ipc._threadpool import IPCThreadPool, default_pool

if TYPE_CHECKING:
    # Only for annotations: asyncio is imported when an event loop first uses a
    # connection, not by every process that imports childkit (the launcher, whose every
    # page each forked child shares and may copy).
    import asyncio

_log = logging.getLogger("childkit.ipc")

_ANC_SPACE = socket.CMSG_SPACE(_wire.MAX_RECORD_FDS * 4) + socket.CMSG_SPACE(12)
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
# Plain ints: socket's IntFlag members cost microseconds per operation on the hot path.
_RECV_FLAGS = int(socket.MSG_CMSG_CLOEXEC)
_TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_DONTWAIT = int(socket.MSG_DONTWAIT)
# A plain request is run holding the serve socket (see _serve_record) only while the one
# before it ran shorter than this: one that takes longer may well again, and others wait.
_HOLD_RUNS_NS = 100_000
# A read that failed with one of these lost nothing: the caller reads again later.
_RETRY_LATER = frozenset({errno.EAGAIN, errno.EINTR})
# A sync caller's send, poll and read in one C call (see _transact_alone), if built.
_exchange: Callable[..., tuple[int, list[tuple[int, int, bytes]], int, int, int]] | None = (
    _accel.speedups.exchange if _accel.speedups is not None else None)
_release_holds: Callable[[], None] | None = (
    _accel.speedups.release_holds if _accel.speedups is not None else None)
_SNDBUF = 1 << 20
#: A one-way queue of one object longer than this stops reading until it drains.
ASYNC_BACKLOG = 4096
#: One-way frames that may wait to be written before their senders block.
WRITE_BACKLOG = 8192
_now_ns = _busypoll.now_ns  # the busy-poll rule's clock (a test may replace it there)
_PINNED = 1 << 62  # the root object's export count: never released by the peer
_ROOT_HANDLE = 0
#: The fd list of every queued frame that carries none (shared: it is only ever read).
_NO_FDS: list[int] = []


class _ReplyBatch:
    """Reply frames of one record's sync requests, waiting to go out together, and the
    reply parcels that own their fds (closed once sent)."""

    __slots__ = ("chunks", "fds", "parcels", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.fds: list[int] = []
        self.parcels: list[MessageParcel] = []
        self.size = 0


class _Call:
    """An outstanding sync call; ``reply`` is set under the connection lock."""

    __slots__ = ("objects", "reply")

    def __init__(self) -> None:
        self.reply: _wire.Reply | None = None
        self.objects: list[RemoteObject] = []  # the reply's objects, resolved on arrival


_Request = tuple[_wire.Transaction, list[RemoteObject]]  # a request and its resolved objects
_OnewayRun = list[tuple[int, bytes]]  # a record of plain one-way requests: (code, data)
_Queued = _Request | _OnewayRun  # what waits in an object's one-way queue
_Record = tuple[int, list[tuple[int, int, bytes]], int]  # a received record: size, ancdata, flags


class _AsyncCall(_Call):
    """An outstanding call awaited by an asyncio task: its future is resolved in its loop."""

    __slots__ = ("future", "loop", "seq")

    def __init__(self, loop: asyncio.AbstractEventLoop, seq: int) -> None:
        super().__init__()
        self.loop = loop
        self.seq = seq
        self.future: asyncio.Future[_wire.Reply] = loop.create_future()

    def deliver(self, error: BaseException | None = None) -> None:
        """Resolve the future from any thread (called with the connection lock held)."""
        self.loop.call_soon_threadsafe(self._settle, error)

    def _settle(self, error: BaseException | None) -> None:
        if self.future.done():
            if self.reply is not None:
                close_fds(self.reply.fds)  # cancelled meanwhile: nobody takes the fds
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            assert self.reply is not None
            self.future.set_result(self.reply)


def _record_buffer() -> mmap.mmap:
    """A receive buffer for one record. Anonymous memory, so only the pages a record
    actually touches are ever faulted in: a zero-filled bytearray of the same size would
    cost 64 page faults up front, per connection and per work thread."""
    return mmap.mmap(-1, _wire.MAX_RECORD_BYTES)


class _RecvBuffer(threading.local):
    def __init__(self) -> None:
        self.buf = _record_buffer()


#: Each thread's receive buffer, for whichever socket it reads: what a read leaves there
#: is copied out (decoded) before the same thread reads again, and one buffer per thread
#: instead of one per connection keeps a connection cheap to make.
_recv_buffers = _RecvBuffer()


def _received_creds(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
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


class Connection:
    """One IPC link to a peer process. Thread-safe.

    ``local_root`` is the stub this side offers as its root object (a child's
    ``on_connect()`` stub); the peer reaches it with :meth:`root_proxy`.
    """

    def __init__(
        self,
        call_sock: socket.socket,
        serve_sock: socket.socket,
        *,
        local_root: RemoteStub | None = None,
        name: str = "",
        pool: IPCThreadPool | None = None,
    ) -> None:
        for sock in (call_sock, serve_sock):
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
                raise ParamError("a connection needs AF_UNIX SOCK_SEQPACKET sockets")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            except OSError:
                pass
        if local_root is not None and not isinstance(local_root, RemoteStub):
            raise ParamError(f"local_root must be a RemoteStub, not {local_root!r}")
        # The call socket blocks: a caller with no timeout sleeps in recvmsg itself, one
        # syscall per reply. The serve socket does not: work threads only read it when
        # epoll says so, and must never sleep in it.
        call_sock.setblocking(True)
        serve_sock.setblocking(False)
        self._call = call_sock
        self._serve = serve_sock
        self._call_fd = call_sock.fileno()
        self._serve_fd = serve_sock.fileno()
        pid, uid, _gid = struct.unpack(
            "3i", serve_sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        self.peer_pid: int = pid
        self.peer_uid: int = uid
        self.name = name or f"connection to pid {pid}"
        self._pool = pool or default_pool()

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._close_reason = ""
        self._started = False
        self._sockets_open = True
        self._io_users = 0  # threads inside a socket call; sockets close when it drops to 0
        # Sync calls.
        self._waiters: dict[int, _Call] = {}
        self._lone_seq = 0  # the call of a thread in _transact_alone (maybe not a waiter)
        self._next_seq = 1
        self._leader = False
        # When an event loop reads the call socket (for awaited calls) instead of a thread.
        self._loop_leader: asyncio.AbstractEventLoop | None = None
        self._loop_leader_thread: int | None = None
        self._stand_in = False  # a thread reads for a loop that cannot (see _await_reply)
        self._poller = select.poll()
        self._poller.register(self._call_fd, select.POLLIN)
        self._call_busy_poll = BusyPoll()
        # Serving: after answering a plain request inline, a work thread polls the serve
        # socket for the next one (one thread at a time: a poll object is not reentrant).
        self._serve_poller = select.poll()
        self._serve_poller.register(self._serve_fd, select.POLLIN)
        self._serve_busy_poll = BusyPoll()
        self._serve_polling = False  # a thread polls the serve socket (set under the lock)
        # How long the last plain request answered inline ran (ns), and when it started.
        self._last_run_ns = 0
        self._run_started = 0
        self._serve_idle_since = 0  # when polling for the next request gave up (ns)
        # Writing the call socket: frames queue here while another thread writes.
        self._wqueue: list[tuple[bytes, list[int]]] = []
        self._writing = False
        # Exported stubs: handle -> [stub, references held by the peer].
        self._exports: dict[int, list[object]] = {}
        self._export_handles: dict[int, int] = {}  # id(stub) -> handle
        self._next_handle = 1
        if local_root is not None:
            self._exports[_ROOT_HANDLE] = [local_root, _PINNED]
            self._export_handles[id(local_root)] = _ROOT_HANDLE
        # Proxies to the peer's stubs: handle -> proxy (weakly: users own proxies).
        self._proxies: dict[int, weakref.ref[RemoteProxy]] = {}
        self._gc_releases: collections.deque[tuple[int, int]] = collections.deque()
        # Reply counts order releases against replies (see _wire.Release).
        self._replies_sent = 0
        self._replies_received = 0
        self._deferred_releases: list[_wire.Release] = []
        # One-way requests per local handle, run in arrival order by one thread at a time.
        self._async_queues: dict[int, collections.deque[_Queued]] = {}
        self._async_queued: dict[int, int] = {}  # requests in each queue (a run counts each)
        self._async_busy: set[int] = set()
        # Start-up and death.
        self._hello = threading.Event()
        self._peer_greeted = False
        self._peer_has_root = False
        self._close_callbacks: list[Callable[[], object]] = []
        self._local_root = local_root

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start serving the peer's requests and greet it. Call once."""
        with self._lock:
            if self._started:
                raise ParamError("connection already started")
            if self._closed:
                raise DeadRemoteObjectError(f"{self.name} is closed: {self._close_reason}")
            self._started = True
        self._pool.register(self._serve_fd, self._on_serve_readable)
        self._send(_wire.encode_hello(self._local_root is not None), None)

    def wait_peer_hello(self, timeout: float) -> bool:
        """Wait for the peer's greeting; return whether it exports a root object.

        Raises :class:`DeadRemoteObjectError` if the peer closed before greeting, and
        :class:`IPCTimeoutError` if nothing came within ``timeout`` seconds.
        """
        self._hello.wait(timeout)
        with self._lock:
            if self._peer_greeted:
                return self._peer_has_root
            if self._closed:
                raise DeadRemoteObjectError(f"{self.name}: {self._close_reason}")
        raise IPCTimeoutError(f"{self.name}: no greeting from the peer within {timeout} s")

    def outstanding_calls(self) -> int:
        """Sync calls sent (or being sent) on this connection and not yet answered."""
        with self._lock:
            lone = self._lone_seq != 0 and self._lone_seq not in self._waiters
            return len(self._waiters) + lone

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str:
        return self._close_reason

    def close(self) -> None:
        """Close the connection: outstanding calls fail, every proxy becomes dead. Idempotent."""
        self._shutdown("closed by this side")

    def add_close_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once, on a separate thread, when the connection closes."""
        with self._lock:
            if not self._closed:
                self._close_callbacks.append(callback)
                return
        threading.Thread(target=callback, name="ipc-death", daemon=True).start()

    def root_proxy(self) -> RemoteProxy:
        """A proxy to the peer's root object (its ``on_connect()`` stub)."""
        with self._lock:
            if self._closed:
                raise DeadRemoteObjectError(f"{self.name} is closed: {self._close_reason}")
            return self._proxy_for_locked(_ROOT_HANDLE, add_ref=False)

    def _shutdown(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_reason = reason
            for waiter in self._waiters.values():
                if isinstance(waiter, _AsyncCall):
                    waiter.deliver(DeadRemoteObjectError(f"{self.name}: {reason}"))
            self._waiters.clear()
            self._cond.notify_all()
            loop_leader = self._loop_leader
            proxies = [p for p in (r() for r in self._proxies.values()) if p is not None]
            recipients = [cb for p in proxies for cb in p._recipients]
            for p in proxies:
                p._recipients = []
            callbacks, self._close_callbacks = self._close_callbacks, []
            stale_fds = [fd for q in self._async_queues.values() for entry in q
                         if not isinstance(entry, list) for fd in entry[0].fds]
            self._async_queues.clear()
            self._async_queued.clear()
            queued_fds = [fd for _chunk, fds in self._wqueue for fd in fds]
            self._wqueue.clear()
            self._exports.clear()
            self._export_handles.clear()
            started = self._started
        self._hello.set()
        if loop_leader is not None:
            try:
                loop_leader.call_soon_threadsafe(self._loop_resign, loop_leader)
            except RuntimeError:
                pass  # that loop is closed; its reader went with it
        if started:
            self._pool.unregister(self._serve_fd)
        for sock in (self._call, self._serve):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes any thread blocked on it
            except OSError:
                pass
        close_fds(stale_fds + queued_fds)
        with self._lock:
            self._close_sockets_if_idle_locked()
        if recipients or callbacks:
            threading.Thread(
                target=self._notify_death, args=(recipients + callbacks,),
                name="ipc-death", daemon=True,
            ).start()  # fmt: skip

    def _notify_death(self, callbacks: list[Callable[[], object]]) -> None:
        for cb in callbacks:
            try:
                cb()
            except Exception:
                _log.exception("death recipient %r of %s failed", cb, self.name)

    def _close_sockets_if_idle_locked(self) -> None:
        if self._closed and self._sockets_open and self._io_users == 0 and not self._leader \
                and not self._writing:
            self._sockets_open = False
            self._call.close()
            self._serve.close()

    def _io_done(self) -> None:
        lock = self._lock
        lock.acquire()
        self._io_users -= 1
        if self._closed:
            self._close_sockets_if_idle_locked()
        lock.release()

    # ------------------------------------------------------------------ death recipients
    def _add_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        with self._lock:
            if self._closed or proxy._closed:
                raise DeadRemoteObjectError("the remote object is already dead")
            if recipient not in proxy._recipients:
                proxy._recipients.append(recipient)

    def _remove_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        with self._lock:
            try:
                proxy._recipients.remove(recipient)
            except ValueError:
                raise ParamError(f"{recipient!r} is not a death recipient of {proxy!r}") from None

    # ------------------------------------------------------------------ object references
    def _proxy_for_locked(self, handle: int, *, add_ref: bool) -> RemoteProxy:
        ref = self._proxies.get(handle)
        proxy = ref() if ref is not None else None
        if proxy is None or proxy._closed:
            proxy = RemoteProxy(self, handle, [0])
            attach_release_finalizer(proxy, self._release_from_gc)
            self._proxies[handle] = weakref.ref(proxy)
            if len(self._proxies) > 64 and len(self._proxies) % 64 == 0:
                self._proxies = {h: r for h, r in self._proxies.items() if r() is not None}
        if add_ref and handle != _ROOT_HANDLE:
            proxy._refs[0] += 1
        return proxy

    def _export_locked(self, stub: RemoteStub) -> int:
        handle = self._export_handles.get(id(stub))
        if handle is None:
            handle = self._next_handle
            self._next_handle += 1
            self._export_handles[id(stub)] = handle
            self._exports[handle] = [stub, 1]
        else:
            entry = self._exports[handle]
            entry[1] = int(entry[1]) + 1  # type: ignore[call-overload]
        return handle

    def _object_refs_locked(self, objects: list[RemoteObject]) -> list[_wire.ObjectRef]:
        refs: list[_wire.ObjectRef] = []
        for obj in objects:
            if isinstance(obj, RemoteProxy) and obj._conn is self:
                if obj._closed:
                    raise DeadRemoteObjectError(f"{obj!r} is closed and cannot be sent")
                refs.append((_wire.OBJ_RECEIVER_STUB, obj._handle))
                continue
            if isinstance(obj, RemoteProxy):
                # A proxy to a third process: the peer gets a stub here that forwards.
                if obj._forwarder is None:
                    obj._forwarder = _ForwardingStub(obj)
                stub: RemoteStub = obj._forwarder
            elif isinstance(obj, RemoteStub):
                stub = obj
            else:
                raise ParamError(f"cannot send {obj!r}")
            refs.append((_wire.OBJ_SENDER_STUB, self._export_locked(stub)))
        return refs

    def _resolve_refs_locked(self, refs: list[_wire.ObjectRef]) -> list[RemoteObject]:
        # Runs as a frame is read, before anything later from the peer is looked at, so
        # that a release sent after this message cannot drop the object first.
        objects: list[RemoteObject] = []
        for kind, handle in refs:
            if kind == _wire.OBJ_SENDER_STUB:
                objects.append(self._proxy_for_locked(handle, add_ref=True))
            else:
                entry = self._exports.get(handle)
                if entry is None:
                    raise ProtocolError(f"peer referred to handle {handle}, not exported here")
                objects.append(entry[0])  # type: ignore[arg-type]
        return objects

    def _release_proxy(self, proxy: RemoteProxy) -> None:
        with self._lock:
            count = proxy._refs[0]
            proxy._refs[0] = 0
            proxy._recipients = []
            ref = self._proxies.get(proxy._handle)
            if ref is not None and ref() is proxy:
                del self._proxies[proxy._handle]
            if self._closed or count == 0:
                return
            chunk = _wire.encode_release(proxy._handle, count, self._replies_sent)
        try:
            self._send(chunk, None)
        except DeadRemoteObjectError:
            pass

    def _release_from_gc(self, handle: int, refs: list[int]) -> None:
        # Runs in whatever thread the garbage collector ran in, possibly inside one of our
        # own locked sections: only queue the release; the next write sends it.
        if refs[0] and not self._closed:
            self._gc_releases.append((handle, refs[0]))
            refs[0] = 0
            if self._started:
                self._pool.submit_from_finalizer(self._flush_gc_releases)

    def _flush_gc_releases(self) -> None:
        if self._gc_releases and not self._closed:
            try:
                self._send_oneway(b"", None)  # an empty chunk: _send_oneway adds releases
            except DeadRemoteObjectError:
                pass

    def _apply_release_locked(self, frame: _wire.Release) -> None:
        if frame.after_replies > self._replies_received:
            if frame.after_replies >= self._next_seq:
                raise ProtocolError("release refers to replies to requests never sent")
            if len(self._deferred_releases) >= 65536:
                raise ProtocolError("too many releases waiting for replies")
            self._deferred_releases.append(frame)
            return
        entry = self._exports.get(frame.handle)
        if entry is None:
            raise ProtocolError(f"peer released handle {frame.handle}, not exported here")
        if frame.handle == _ROOT_HANDLE:
            return
        remaining = int(entry[1]) - frame.count  # type: ignore[call-overload]
        if remaining < 0:
            raise ProtocolError(f"peer released handle {frame.handle} more times than it got it")
        if remaining == 0:
            del self._exports[frame.handle]
            self._export_handles.pop(id(entry[0]), None)
        else:
            entry[1] = remaining

    # ------------------------------------------------------------------ sending
    def _send(self, chunk: bytes, fds: list[int] | None) -> None:
        """Queue one frame on the call socket and write the queue unless someone else is.

        ``fds`` are duplicated: the frame owns its copies until they are sent. With nothing
        queued and nobody writing (the common case) the frame is written at once by this
        thread; frames queued meanwhile by others go out after it, coalesced.
        """
        owned = [os.dup(fd) for fd in fds] if fds else []
        lock = self._lock
        lock.acquire()
        if self._closed:
            lock.release()
            close_fds(owned)
            raise DeadRemoteObjectError(f"{self.name} is closed: {self._close_reason}")
        while self._gc_releases:
            handle, count = self._gc_releases.popleft()
            self._wqueue.append(
                (_wire.encode_release(handle, count, self._replies_sent), []))
        if self._writing:
            self._wqueue.append((chunk, owned))
            lock.release()
            return
        self._writing = True
        self._io_users += 1
        if self._wqueue:
            self._wqueue.append((chunk, owned))
            lock.release()
        else:
            lock.release()
            try:
                self._sendmsg(self._call, chunk, owned)
            except OSError as exc:
                lock.acquire()
                self._writing = False
                lock.release()
                self._io_done()
                self._shutdown(f"sending failed: {exc.strerror or exc}")
                raise DeadRemoteObjectError(f"{self.name}: peer is gone ({exc})") from None
            finally:
                if owned:
                    close_fds(owned)
        try:
            self._flush()
        finally:
            self._io_done()

    def _send_oneway(self, chunk: bytes, fds: list[int] | None) -> None:
        """Queue a one-way frame; a work thread writes the queue, coalescing frames.

        The caller returns at once, like ``multiprocessing.Queue.put``: frames sent in a
        burst leave in a few large records instead of one syscall each. When more than
        :data:`WRITE_BACKLOG` frames wait, the caller blocks until the writer catches up.
        """
        owned = [os.dup(fd) for fd in fds] if fds else []
        lock = self._lock
        lock.acquire()
        try:
            while len(self._wqueue) >= WRITE_BACKLOG and not self._closed:
                self._cond.wait(1.0)
            if self._closed:
                close_fds(owned)
                raise DeadRemoteObjectError(f"{self.name} is closed: {self._close_reason}")
            while self._gc_releases:
                handle, count = self._gc_releases.popleft()
                self._wqueue.append(
                (_wire.encode_release(handle, count, self._replies_sent), []))
            if chunk:
                self._wqueue.append((chunk, owned))
            if self._writing or not self._wqueue:
                return
            self._writing = True
            self._io_users += 1
        finally:
            lock.release()
        self._pool.submit(self._flush_task)

    def _flush_task(self) -> None:
        try:
            self._flush()
        except DeadRemoteObjectError:
            pass  # the senders of one-way frames have returned; death reaches recipients
        finally:
            self._io_done()

    def _send_direct(self, chunk: bytes) -> None:
        """Write one fd-less frame; the caller has set ``_writing`` and ``_io_users``."""
        try:
            try:
                self._call.send(chunk)
            except BlockingIOError:  # non-blocking while an event loop shares it
                self._sendmsg(self._call, chunk, [])  # waits for room
        except OSError as exc:
            lock = self._lock
            lock.acquire()
            self._writing = False
            lock.release()
            self._io_done()
            self._shutdown(f"sending failed: {exc.strerror or exc}")
            raise DeadRemoteObjectError(f"{self.name}: peer is gone ({exc})") from None
        lock = self._lock
        lock.acquire()
        if self._wqueue and not self._closed:
            lock.release()
            try:
                self._flush()  # frames that others queued while this one went out
            finally:
                self._io_done()
            return
        self._writing = False
        self._io_users -= 1
        if self._closed:
            self._close_sockets_if_idle_locked()
        lock.release()

    def _flush(self) -> None:
        while True:
            with self._lock:
                if not self._wqueue or self._closed:
                    self._writing = False
                    return
                chunks: list[bytes] = []
                fds: list[int] = []
                size = 0
                queue = self._wqueue
                taken = 0
                for chunk, frame_fds in queue:
                    if taken and (size + len(chunk) > _wire.MAX_RECORD_BYTES
                                  or len(fds) + len(frame_fds) > _wire.MAX_RECORD_FDS):
                        break
                    chunks.append(chunk)
                    fds.extend(frame_fds)
                    size += len(chunk)
                    taken += 1
                del queue[:taken]
                if len(queue) < WRITE_BACKLOG <= len(queue) + taken:
                    self._cond.notify_all()  # one-way senders blocked on a full queue
            try:
                self._sendmsg(self._call, b"".join(chunks) if taken > 1 else chunks[0], fds)
            except OSError as exc:
                with self._lock:
                    self._writing = False
                self._shutdown(f"sending failed: {exc.strerror or exc}")
                raise DeadRemoteObjectError(f"{self.name}: peer is gone ({exc})") from None
            finally:
                close_fds(fds)

    @staticmethod
    def _sendmsg(sock: socket.socket, data: bytes, fds: list[int]) -> None:
        anc = rights(fds)
        if not anc:
            try:
                sock.sendmsg([data])
                return
            except BlockingIOError:
                pass
        while True:
            try:
                sock.sendmsg([data], anc)
                return
            except BlockingIOError:
                # The peer is not reading fast enough: wait for room (backpressure).
                poller = select.poll()
                poller.register(sock.fileno(), select.POLLOUT)
                poller.poll()

    # ------------------------------------------------------------------ sync calls
    def call(self, handle: int, code: int, parcel: MessageParcel) -> MessageParcel:
        """:meth:`transact` with the default option (sync, no timeout), for arguments the
        caller has checked: the hot path, with fewer steps to the lone caller's."""
        if not (parcel._fds or parcel._objects or parcel._closed):
            lock = self._lock
            lock.acquire()
            if not (self._closed or self._writing or self._leader or self._wqueue
                    or self._gc_releases):
                return self._transact_alone(handle, code, parcel._buf)  # releases the lock
            lock.release()
        return self.transact(handle, code, parcel, SYNC_OPTION)

    def transact(
        self, handle: int, code: int, parcel: MessageParcel, option: MessageOption
    ) -> MessageParcel:
        """Send one request to the peer's object ``handle`` (see RemoteProxy.send_request)."""
        if parcel._closed:
            raise ParcelWriteError("the data parcel is closed")
        data, fds, objects = parcel._buf, parcel._fds, parcel._objects
        if option.mode:  # one-way
            refs = self._refs_for_send(objects)
            self._send_oneway(
                _wire.encode_transaction(0, handle, code, True, data, refs, len(fds)), fds)
            return MessageParcel()
        lock = self._lock
        if not (fds or objects or option.timeout is not None):
            lock.acquire()
            if not (self._closed or self._writing or self._leader or self._wqueue
                    or self._gc_releases):
                return self._transact_alone(handle, code, data)  # releases the lock
            lock.release()
        lock.acquire()
        try:
            seq, call, refs = self._register_call_locked(objects, None)
            # Nobody else writing and nothing queued: write this frame now, on this thread.
            direct = not (fds or self._writing or self._wqueue or self._gc_releases)
            if direct:
                self._writing = True
                self._io_users += 1
        finally:
            lock.release()
        chunk = _wire.encode_transaction(seq, handle, code, False, data, refs, len(fds))
        try:
            if direct:
                self._send_direct(chunk)
            else:
                self._send(chunk, fds)
        except BaseException:
            lock.acquire()
            self._waiters.pop(seq, None)
            lock.release()
            raise
        reply = self._await_reply(call, seq, option.timeout)
        return self._reply_parcel(reply, code, call.objects)

    def _register_call_locked(
        self, objects: list[RemoteObject], loop: asyncio.AbstractEventLoop | None
    ) -> tuple[int, _Call, list[_wire.ObjectRef]]:
        """A new outstanding sync call: its sequence number, waiter (awaited when ``loop``
        is given) and the references of its parcel's objects."""
        if self._closed:
            raise DeadRemoteObjectError(f"{self.name} is closed: {self._close_reason}")
        refs = self._object_refs_locked(objects) if objects else []
        seq = self._next_seq
        self._next_seq = seq + 1
        call = _Call() if loop is None else _AsyncCall(loop, seq)
        self._waiters[seq] = call
        return seq, call, refs

    def _transact_alone(self, handle: int, code: int, data: bytearray) -> MessageParcel:
        """The common sync call: no fds, no objects, no timeout, nobody else writing or
        reading. Entered holding the lock; takes the reader's role in that one critical
        section, writes its frame itself and reads its own reply. (It does not take the
        writer's role: a record goes out whole, so others may write meanwhile, and
        nothing of this thread's is queued before it.)"""
        lock = self._lock
        seq = self._next_seq
        self._next_seq = seq + 1
        self._leader = True
        self._lone_seq = seq
        self._io_users += 1
        lock.release()
        # The waiter is registered only if the reply does not come first thing: until
        # then this thread is the only reader, and only a reader hands out replies.
        call: _Call | None = None
        got_it = False
        try:
            chunk = _wire.encode_transaction(seq, handle, code, False, data, (), 0)
            # Send, poll for the reply a moment before sleeping on it (see _busypoll), read
            # one record: in C, one call without the GIL; else three socket calls.
            waiter = self._call_busy_poll
            started = _now_ns()
            end = waiter.poll_end(started)
            buf = _recv_buffers.buf
            result = None
            try:
                if _exchange is not None:
                    try:
                        result = _exchange(self._call_fd, chunk, buf, end, PREEMPTED_NS)
                    except BlockingIOError:  # non-blocking while an event loop shares it
                        pass  # nothing was sent: the Python calls wait for room
                if result is None:
                    result = self._exchange_slowly(self._call, self._poller.poll,
                                                   self._call_fd, chunk, buf, started, end)
            except OSError as exc:  # only sending raises
                self._shutdown(f"sending failed: {exc.strerror or exc}")
                raise DeadRemoteObjectError(f"{self.name}: peer is gone ({exc})") from None
            n, anc, flags, seen, err = result
            if seen < 0:  # descheduled while polling (in C)
                lost_cpu(_now_ns())
            polled = seen > 0
            if err and err not in _RETRY_LATER:
                self._shutdown(f"receiving failed: {os.strerror(err)}")
            # If it is just the successful plain reply to this call, that is the answer;
            # otherwise deliver what came as _lead would, and lead.
            if n >= 0 and not anc and not flags & _TRUNCATED:
                simple = _wire.simple_reply(buf, n)
                if simple is not None and simple[0] == seq and not simple[1]:
                    got_it = True
                    if not polled:
                        waiter.waited(_now_ns() - started)
                    return MessageParcel._from_wire(buf[_wire.REPLY_DATA_OFFSET:n], [], [])
            call = _Call()
            lock.acquire()
            self._waiters[seq] = call
            lock.release()
            if n >= 0:
                frames = self._decode(buf, n, anc, flags)
                if frames is not None:
                    self._deliver_replies(frames)
            self._lead(call, None)
        finally:
            error = ""
            lock.acquire()
            if got_it:  # counted here, in the one critical section on the way out
                self._replies_received += 1
                if self._deferred_releases:
                    try:
                        self._apply_deferred_releases_locked()
                    except ProtocolError as exc:
                        error = exc.message
            self._leader = False
            self._lone_seq = 0
            self._io_users -= 1
            if call is not None:
                self._waiters.pop(seq, None)
            if self._waiters:
                self._cond.notify_all()  # let another caller read
            if self._closed:
                self._close_sockets_if_idle_locked()
            lock.release()
            if error:  # the reply is still good: the caller gets it, the link closes
                self._shutdown(f"protocol error from the peer: {error}")
        reply = call.reply if call is not None else None
        if reply is None:  # _lead only returns without our reply when the link died
            raise DeadRemoteObjectError(f"{self.name}: {self._close_reason}")
        if not reply.status and not reply.objects:
            return MessageParcel._from_wire(reply.data, reply.fds, [])
        return self._reply_parcel(reply, code, call.objects)

    def _exchange_slowly(self, sock: socket.socket,
                         poll: Callable[[int], list[tuple[int, int]]], fd: int,
                         chunk: bytes, buf: mmap.mmap, started: int, end: int,
                         ) -> tuple[int, list[tuple[int, int, bytes]], int, int, int]:
        """``_speedups.exchange`` with Python's socket calls (no C twins here, or an event
        loop shares the socket, which is then non-blocking): send ``chunk`` on ``sock``
        (unless empty), poll until ``end`` (unless 0), read one record."""
        if chunk:
            try:
                sock.send(chunk)
            except BlockingIOError:  # non-blocking while an event loop shares it
                self._sendmsg(sock, chunk, [])  # waits for room
        seen = end != 0 and _busypoll.spin(poll, started, end, fd)
        try:
            n, anc, flags, _ = sock.recvmsg_into([buf], _ANC_SPACE, _RECV_FLAGS)
        except OSError as exc:
            return -1, [], 0, int(seen), exc.errno or errno.EIO
        return n, anc, flags, int(seen), 0

    def transact_batch(
        self, handle: int, requests: list[tuple[int, MessageParcel]], option: MessageOption
    ) -> list[MessageParcel]:
        """Send many requests to ``handle`` in as few records as fit (see send_requests)."""
        oneway = bool(option.mode)
        calls: list[tuple[int, _Call, int]] = []
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise DeadRemoteObjectError(f"{self.name} is closed: {self._close_reason}")
            frames: list[tuple[bytes, list[int]]] = []
            plain = oneway and not any(parcel._closed or parcel._fds or parcel._objects
                                       for _code, parcel in requests)
            if plain:  # the common burst: plain one-way requests, encoded in one go
                frames = [(chunk, _NO_FDS) for chunk in _wire.encode_oneway_frames(
                    handle, [(code, parcel._buf) for code, parcel in requests])]
            for code, parcel in () if plain else requests:
                if parcel._closed:
                    raise ParcelWriteError("a data parcel of the batch is closed")
                refs = self._object_refs_locked(parcel._objects) if parcel._objects else []
                fds = [os.dup(fd) for fd in parcel._fds] if parcel._fds else []
                if oneway:
                    seq = 0
                else:
                    seq = self._next_seq
                    self._next_seq = seq + 1
                    call = _Call()
                    self._waiters[seq] = call
                    calls.append((seq, call, code))
                frames.append((_wire.encode_transaction(
                    seq, handle, code, oneway, parcel._buf, refs, len(fds)), fds))
            while self._gc_releases:
                h, count = self._gc_releases.popleft()
                self._wqueue.append((_wire.encode_release(h, count, self._replies_sent), []))
            self._wqueue.extend(frames)
            write = not self._writing
            if write:
                self._writing = True
                self._io_users += 1
        finally:
            lock.release()
        if write:
            try:
                self._flush()  # this thread writes the whole batch, coalesced into records
            finally:
                self._io_done()
        if oneway:
            return []
        replies: list[MessageParcel] = []
        try:
            for seq, call, code in calls:
                reply = self._await_reply(call, seq, option.timeout)
                replies.append(self._reply_parcel(reply, code, call.objects))
        except BaseException:
            lock.acquire()
            for seq, _call, _code in calls:
                self._waiters.pop(seq, None)
            lock.release()
            for r in replies:
                r.close()
            raise
        return replies

    def _refs_for_send(self, objects: list[RemoteObject]) -> list[_wire.ObjectRef]:
        if not objects:
            return []
        with self._lock:
            return self._object_refs_locked(objects)

    @staticmethod
    def _reply_parcel(reply: _wire.Reply, code: int, objects: list[RemoteObject]) -> MessageParcel:
        if reply.status:
            close_fds(reply.fds)
            detail = reply.detail or f"request {code} failed"
            if reply.status == IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT:
                raise DeadRemoteObjectError(detail)
            raise IPCError(reply.status, detail)
        return MessageParcel._from_wire(reply.data, reply.fds, objects)

    def _await_reply(self, call: _Call, seq: int, timeout: float | None) -> _wire.Reply:
        if _release_holds is not None:
            _release_holds()  # about to sleep: what this thread holds must be served
        deadline = None if timeout is None else time.monotonic() + timeout
        lock = self._lock
        while True:
            lock.acquire()
            try:
                while True:
                    if call.reply is not None:
                        return call.reply
                    if self._closed:
                        self._waiters.pop(seq, None)
                        raise DeadRemoteObjectError(f"{self.name}: {self._close_reason}")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        self._waiters.pop(seq, None)
                        raise IPCTimeoutError(f"no reply within {timeout} s")
                    if not self._leader:
                        # Nobody reads the call socket: this thread reads its own reply.
                        self._leader = True
                        self._io_users += 1
                        break
                    if (self._loop_leader is not None and not self._stand_in
                            and self._loop_can_not_read()):
                        # The event loop that reads is this very thread (blocked in this
                        # call) or has stopped: read here, delivering its replies too.
                        self._stand_in = True
                        self._io_users += 1
                        break
                    self._cond.wait(0.05 if remaining is None else min(remaining, 0.05)
                                    if self._loop_leader is not None else remaining)
            finally:
                lock.release()
            try:
                self._lead(call, deadline)
            finally:
                lock.acquire()
                if self._stand_in:
                    self._stand_in = False
                else:
                    self._leader = False
                self._io_users -= 1
                if self._waiters:
                    self._cond.notify_all()  # let another caller read
                    self._hand_lead_to_a_loop_locked()
                if self._closed:
                    self._close_sockets_if_idle_locked()
                lock.release()

    def _loop_can_not_read(self) -> bool:
        loop = self._loop_leader
        return loop is not None and (
            self._loop_leader_thread == threading.get_ident() or not loop.is_running()
            or loop.is_closed())

    # ------------------------------------------------------------------ awaited calls
    async def transact_async(
        self, handle: int, code: int, parcel: MessageParcel, option: MessageOption
    ) -> MessageParcel:
        """Like :meth:`transact`, awaited: the running loop reads the replies, no thread
        waits. Cancelling the await forgets the call; a late reply is dropped and the
        connection stays usable."""
        if option.mode:
            return self.transact(handle, code, parcel, option)  # one-way never waits
        if parcel._closed:
            raise ParcelWriteError("the data parcel is closed")
        import asyncio  # already imported: an event loop is running this coroutine

        loop = asyncio.get_running_loop()
        data, fds, objects = parcel._buf, parcel._fds, parcel._objects
        lock = self._lock
        lock.acquire()
        try:
            seq, registered, refs = self._register_call_locked(objects, loop)
            call = cast(_AsyncCall, registered)
        finally:
            lock.release()
        try:
            self._send(_wire.encode_transaction(seq, handle, code, False, data, refs, len(fds)),
                       fds)
            lock.acquire()
            try:
                if not self._leader:
                    self._loop_take_lead_locked(loop)
            finally:
                lock.release()
            if option.timeout is None:
                reply = await call.future
            else:
                try:
                    reply = await asyncio.wait_for(call.future, option.timeout)
                except TimeoutError:
                    raise IPCTimeoutError(f"no reply within {option.timeout} s") from None
        finally:
            lock.acquire()
            self._waiters.pop(seq, None)
            if self._loop_leader is loop and not self._has_async_waiters_locked(loop):
                self._loop_resign_locked()
            lock.release()
        return self._reply_parcel(reply, code, call.objects)

    def _has_async_waiters_locked(self, loop: asyncio.AbstractEventLoop) -> bool:
        return any(isinstance(w, _AsyncCall) and w.loop is loop for w in self._waiters.values())

    def _loop_take_lead_locked(self, loop: asyncio.AbstractEventLoop) -> None:
        self._leader = True
        self._loop_leader = loop
        self._loop_leader_thread = threading.get_ident()
        self._io_users += 1
        loop.add_reader(self._call_fd, self._on_call_readable)

    def _loop_resign_locked(self) -> None:
        loop = self._loop_leader
        if loop is None:
            return
        if not loop.is_closed():
            loop.remove_reader(self._call_fd)
        self._loop_leader = None
        self._loop_leader_thread = None
        self._leader = False
        self._io_users -= 1
        self._cond.notify_all()  # a waiting thread may read now
        self._hand_lead_to_a_loop_locked()
        if self._closed:
            self._close_sockets_if_idle_locked()

    def _loop_resign(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._loop_leader is loop:
                self._loop_resign_locked()

    def _hand_lead_to_a_loop_locked(self) -> None:
        # Only awaited calls are left and nobody reads: ask one of their loops to.
        if self._leader or self._closed:
            return
        if any(not isinstance(w, _AsyncCall) for w in self._waiters.values()):
            return  # a waiting thread takes the lead (it was notified)
        for waiter in self._waiters.values():
            if isinstance(waiter, _AsyncCall) and not waiter.loop.is_closed():
                waiter.loop.call_soon_threadsafe(self._loop_take_lead, waiter.loop)
                return

    def _loop_take_lead(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if not self._leader and not self._closed and self._has_async_waiters_locked(loop):
                self._loop_take_lead_locked(loop)

    def _on_call_readable(self) -> None:
        """Event-loop reader of the call socket: one record per callback."""
        buf = _recv_buffers.buf
        try:
            n, anc, flags, _ = self._call.recvmsg_into(
                [buf], _ANC_SPACE, _RECV_FLAGS | _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._shutdown(f"receiving failed: {exc.strerror or exc}")
            return
        frames = self._decode(buf, n, anc, flags)
        if frames is not None:
            self._deliver_replies(frames)

    def _lead(self, call: _Call, deadline: float | None) -> None:
        """Read replies from the call socket until ours arrives, time runs out, or death."""
        buf = _recv_buffers.buf
        poll = self._poller.poll
        recv_flags = _RECV_FLAGS
        while call.reply is None and not self._closed:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not poll(remaining * 1000.0):
                    continue
                recv_flags = _RECV_FLAGS | _DONTWAIT
            try:
                n, anc, flags, _ = self._call.recvmsg_into([buf], _ANC_SPACE, recv_flags)
            except BlockingIOError:
                if deadline is None:  # non-blocking while an event loop shares it: wait
                    poll(1000.0)
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                self._shutdown(f"receiving failed: {exc.strerror or exc}")
                return
            frames = self._decode(buf, n, anc, flags)
            if frames is None:
                return
            self._deliver_replies(frames)

    def _decode(
        self, buf: mmap.mmap, n: int, anc: list[tuple[int, int, bytes]], flags: int
    ) -> list[_wire.Frame] | None:
        fds = received_fds(anc) if anc else []
        if not flags & _TRUNCATED and n:
            try:
                return _wire.decode_record(memoryview(buf)[:n], fds)
            except ProtocolError as exc:
                close_fds(fds)
                _log.warning("%s: closing, protocol error: %s", self.name, exc)
                self._shutdown(f"protocol error from the peer: {exc.message}")
                return None
        if n == 0 and not fds:
            self._shutdown("the peer closed the connection")
            return None
        try:
            if flags & _TRUNCATED:
                raise ProtocolError("record larger than the protocol allows (truncated)")
            return _wire.decode_record(memoryview(buf)[:n], fds)
        except ProtocolError as exc:
            close_fds(fds)
            _log.warning("%s: closing, protocol error: %s", self.name, exc)
            self._shutdown(f"protocol error from the peer: {exc.message}")
            return None

    def _apply_deferred_releases_locked(self) -> None:
        """Apply the releases that waited for replies this side has now read."""
        ready = [r for r in self._deferred_releases if r.after_replies <= self._replies_received]
        if ready:
            self._deferred_releases = [r for r in self._deferred_releases
                                       if r.after_replies > self._replies_received]
            for release in ready:
                self._apply_release_locked(release)

    def _deliver_replies(self, frames: list[_wire.Frame]) -> None:
        error = ""
        handed = 0  # frames[:handed] went to their callers, or had their fds closed
        lock = self._lock
        lock.acquire()
        try:
            for frame in frames:
                if frame.__class__ is not _wire.Reply:
                    error = f"unexpected {type(frame).__name__} frame on the call socket"
                    break
                reply: _wire.Reply = frame
                waiter = self._waiters.pop(reply.seq, None)
                if waiter is None and (reply.seq >= self._next_seq or reply.seq == 0):
                    error = f"reply to request {reply.seq}, which was never sent"
                    break
                self._replies_received += 1
                objects = self._resolve_refs_locked(reply.objects) if reply.objects else []
                if waiter is not None:
                    waiter.objects = objects
                    waiter.reply = reply
                    if isinstance(waiter, _AsyncCall):
                        waiter.deliver()
                else:
                    close_fds(reply.fds)  # the caller timed out and left
                handed += 1
            if self._deferred_releases and not error:
                self._apply_deferred_releases_locked()
        except ProtocolError as exc:
            error = exc.message
        finally:
            if self._waiters:
                self._cond.notify_all()
            lock.release()
        if error:
            # Only fds nobody owns yet: a delivered reply's fds belong to its caller.
            for frame in frames[handed:]:
                if isinstance(frame, (_wire.Reply, _wire.Transaction)) and frame.fds:
                    close_fds(frame.fds)
            self._shutdown(f"protocol error from the peer: {error}")

    # ------------------------------------------------------------------ serving
    def _on_serve_readable(self) -> None:
        """Pool callback: read the peer's requests and run them; after answering a plain
        sync request on this thread, poll for the next one (see :meth:`_reply_and_poll`)."""
        lock = self._lock
        lock.acquire()
        if self._closed or not self._sockets_open:
            lock.release()
            return
        self._io_users += 1
        lock.release()
        try:
            record = self._read_serve()
            while record is not None:
                reply = self._serve_record(*record)
                record = None if reply is None else self._reply_and_poll(reply)
        finally:
            self._io_done()

    def _read_serve(self) -> _Record | None:
        """Read one record from the serve socket into this thread's receive buffer: its
        size, ancillary data and flags; ``None`` (re-armed) if nothing was there."""
        try:
            n, anc, flags, _ = self._serve.recvmsg_into([_recv_buffers.buf], _ANC_SPACE,
                                                        _RECV_FLAGS)
        except (BlockingIOError, InterruptedError):
            self._pool.rearm(self._serve_fd)
            return None
        except OSError as exc:
            self._shutdown(f"receiving failed: {exc.strerror or exc}")
            return None
        return n, anc, flags

    def _reply_and_poll(self, reply: bytes) -> _Record | None:
        """Send ``reply`` (a plain sync request's answer; ``b""``: it went out already),
        then poll the serve socket for the next request for the adaptive window (see
        _busypoll), with the socket disarmed in the pool so that no other work thread
        wakes for it, and read it: in C, one call without the GIL. Returns the next record
        (the socket still disarmed: serving it re-arms), or ``None`` (the socket re-armed,
        or the link closed)."""
        disarmed = self._pool.unhold(self._serve_fd)
        waiter = self._serve_busy_poll
        started = _now_ns()
        self._last_run_ns = started - self._run_started
        end = 0
        lock = self._lock
        lock.acquire()
        if reply:
            self._replies_sent += 1  # counted before it is sent (see _send_reply)
        if waiter.window_ns and not self._closed and not self._serve_polling:
            end = waiter.poll_end(started)
            self._serve_polling = end != 0  # one poller per connection at a time
        lock.release()
        if not end:
            if disarmed:
                self._pool.rearm(self._serve_fd)
            if reply:
                self._send_reply_record(reply)
            self._serve_idle_since = started
            return None
        buf = _recv_buffers.buf
        try:
            epfd = self._pool.epoll_fileno
            if _exchange is not None and epfd >= 0:
                n, anc, flags, seen, err = _exchange(self._serve_fd, reply, buf, end,
                                                     PREEMPTED_NS, -1 if disarmed else epfd)
                if seen < 0:  # descheduled while polling (in C)
                    lost_cpu(_now_ns())
            else:
                if not disarmed:
                    self._pool.disarm(self._serve_fd)
                n, anc, flags, seen, err = self._exchange_slowly(
                    self._serve, self._serve_poller.poll, self._serve_fd, reply, buf,
                    started, end)
        except BlockingIOError:  # the peer reads slowly: wait for room, do not poll
            self._pool.rearm(self._serve_fd)
            self._send_reply_record(reply)
            self._serve_idle_since = started
            return None
        except OSError as exc:
            self._shutdown(f"sending a reply failed: {exc.strerror or exc}")
            return None
        finally:
            self._serve_polling = False
        if n >= 0:
            if seen <= 0:  # it came after the window: adapt to how late
                waiter.waited(_now_ns() - started)
            return n, anc, flags
        if err in _RETRY_LATER:
            self._pool.rearm(self._serve_fd)
            self._serve_idle_since = started
        else:
            self._shutdown(f"receiving failed: {os.strerror(err)}")
        return None

    def _serve_record(self, n: int, anc: list[tuple[int, int, bytes]], flags: int,
                      ) -> bytes | None:
        """Run or queue the requests of the record of ``n`` bytes in this thread's receive
        buffer. When it was one plain sync request answered on this thread, returns its
        reply for the caller to send (``b""`` when it went out already); else ``None``."""
        buf = _recv_buffers.buf
        if self._serve_idle_since:
            # The last poll for a request gave up (or did not run): adapt its window to
            # how long this one took to come.
            self._serve_busy_poll.waited(_now_ns() - self._serve_idle_since)
            self._serve_idle_since = 0
        if not anc and not flags & _TRUNCATED:
            simple = _wire.simple_request(buf, n)
            if simple is not None and simple[1] not in self._async_busy:
                # The common case, one plain sync request: no frame objects, no queueing,
                # run it on this thread. (No one-way requests to its object are pending:
                # reading the set without the lock is safe, since earlier records were
                # queued before this one was read.)
                # In a ping-pong of quick requests (this thread will poll for the next
                # one, and the last one took little time) the socket stays disarmed
                # while it runs, so polling afterwards needs no epoll_ctl either; the
                # pool re-arms it if it runs long (see IPCThreadPool.hold). Otherwise it
                # is re-armed now, so other threads may serve the connection meanwhile.
                now = _now_ns()
                if self._serve_busy_poll.window_ns and self._last_run_ns < _HOLD_RUNS_NS:
                    self._pool.hold(self._serve_fd)
                else:
                    self._pool.rearm(self._serve_fd)
                self._run_started = now
                return self._answer_plain(simple[0], simple[1], simple[2],
                                          buf[_wire.TXN_DATA_OFFSET:n])
            run = _wire.oneway_run(buf, n)
            if run is not None:
                self._serve_oneway_run(*run)
                return None
        frames = self._decode(buf, n, anc, flags)
        if frames is None:
            return None
        if not self._peer_greeted and anc:
            creds = _received_creds(anc)
            if creds is not None:
                self.peer_pid, self.peer_uid = creds
        if len(frames) == 1:
            frame = frames[0]
            if (frame.__class__ is _wire.Transaction and not frame.oneway
                    and not frame.objects
                    and frame.handle not in self._async_busy):
                # One sync request with fds: run it on this thread, as above.
                self._pool.rearm(self._serve_fd)
                self._dispatch(frame, [])
                return b""
        sync: list[_Request] = []
        drain: list[int] = []
        error = ""
        with self._lock:
            for i, frame in enumerate(frames):
                try:
                    if isinstance(frame, _wire.Transaction):
                        # Objects are resolved now, in arrival order, before the socket is
                        # re-armed: a later release cannot drop them first.
                        item = (frame, self._resolve_refs_locked(frame.objects)
                                if frame.objects else [])
                        # Requests to one object keep their order while one-way requests
                        # to it are pending: a sync request then waits in the same queue.
                        if frame.oneway or frame.handle in self._async_busy:
                            self._enqueue_locked(frame.handle, item, 1)
                            if frame.handle not in self._async_busy:
                                self._async_busy.add(frame.handle)
                                drain.append(frame.handle)
                        else:
                            sync.append(item)
                    elif isinstance(frame, _wire.Release):
                        self._apply_release_locked(frame)
                    elif isinstance(frame, _wire.Hello):
                        if self._peer_greeted:
                            raise ProtocolError("second hello from the peer")
                        self._peer_greeted = True
                        self._peer_has_root = frame.has_root
                        self._hello.set()
                        try:  # credentials were for the greeting; stop paying for them
                            self._serve.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
                        except OSError:
                            pass
                    else:
                        raise ProtocolError("a reply arrived on the serve socket")
                except ProtocolError as exc:
                    error = exc.message
                    for rest in frames[i:]:
                        if isinstance(rest, (_wire.Transaction, _wire.Reply)):
                            close_fds(rest.fds)
                    break
            # Backpressure: while a one-way queue that another thread drains is too long,
            # stop reading the socket, so that the sender blocks instead of memory growing.
            congested = {f.handle for f in frames
                         if isinstance(f, _wire.Transaction) and f.oneway} - set(drain)
            while congested and not error and not self._closed and any(
                self._async_queued.get(h, 0) > ASYNC_BACKLOG for h in congested
            ):
                self._cond.wait(1.0)
        if error:
            close_fds([fd for t, _objs in sync for fd in t.fds])
            self._shutdown(f"protocol error from the peer: {error}")
            return None
        self._pool.rearm(self._serve_fd)
        if len(sync) > 1:
            self._run_batch(sync)
        elif sync:
            self._dispatch(*sync[0])
        for handle in drain:
            self._drain_async(handle)
        return None

    def _enqueue_locked(self, handle: int, entry: _Queued, count: int) -> None:
        queue = self._async_queues.get(handle)
        if queue is None:
            queue = self._async_queues[handle] = collections.deque()
        queue.append(entry)
        self._async_queued[handle] = self._async_queued.get(handle, 0) + count

    def _serve_oneway_run(self, handle: int, run: _OnewayRun) -> None:
        """Run a record of plain one-way requests to one object on this thread, or queue it
        behind the ones another thread is running (and wait while that queue is full)."""
        lock = self._lock
        lock.acquire()
        if self._closed:
            lock.release()
            return
        mine = handle not in self._async_busy
        if mine:
            self._async_busy.add(handle)
        else:
            self._enqueue_locked(handle, run, len(run))
            # Backpressure: stop reading while the queue is long, so the sender blocks.
            while not self._closed and self._async_queued.get(handle, 0) > ASYNC_BACKLOG:
                self._cond.wait(1.0)
        lock.release()
        self._pool.rearm(self._serve_fd)
        if mine:
            self._dispatch_run(handle, [run])
            self._drain_async(handle)

    def _drain_async(self, handle: int) -> None:
        """Run the one-way requests queued for ``handle`` in order; one drainer at a time."""
        lock = self._lock
        while True:
            lock.acquire()
            queue = self._async_queues.get(handle)
            if not queue or self._closed:
                self._async_busy.discard(handle)
                if queue is not None and not queue:
                    del self._async_queues[handle]
                    self._async_queued.pop(handle, None)
                lock.release()
                return
            items = list(queue)
            queue.clear()
            self._async_queued[handle] = 0
            self._cond.notify_all()  # readers stopped by a full queue may go on
            lock.release()
            self._dispatch_run(handle, items)

    def _dispatch_run(self, handle: int, items: list[_Queued]) -> None:
        """Run queued requests to one object in order: one-way ones in a tight loop (the
        calling identity set once, one reply parcel reused), sync ones as usual."""
        entry = self._exports.get(handle)
        if entry is None:
            for item in items:
                if isinstance(item, list):
                    continue  # one-way requests to an object that is gone: dropped
                frame, objects = item
                if frame.oneway:
                    close_fds(frame.fds)
                else:
                    self._dispatch(frame, objects)  # answers "no such object"
            return
        stub: RemoteStub = entry[0]  # type: ignore[assignment]
        on_request = stub.on_remote_request
        ctx = _skeleton._context
        saved = ctx.identity
        identity = (self.peer_pid, self.peer_uid, False)
        reply = MessageParcel()
        new_parcel = MessageParcel._from_wire
        try:
            ctx.identity = identity
            for item in items:
                if isinstance(item, list):
                    for code, payload in item:
                        if code > 0xFFFFFF or not code:
                            continue  # internal codes are never one-way: drop it
                        try:
                            on_request(code, new_parcel(payload, [], []), reply, ASYNC_OPTION)
                        except Exception:
                            _log.exception("%r failed on one-way request %d", stub, code)
                        if reply._buf or reply._fds or reply._objects:
                            reply.close()
                            reply = MessageParcel()
                    continue
                frame, objects = item
                if not frame.oneway:
                    ctx.identity = saved
                    self._dispatch(frame, objects)
                    ctx.identity = identity
                    continue
                if frame.code > 0xFFFFFF or not frame.code:
                    close_fds(frame.fds)  # internal codes are never one-way: drop it
                    continue
                data = new_parcel(frame.data, frame.fds, objects)
                try:
                    on_request(frame.code, data, reply, ASYNC_OPTION)
                except Exception:
                    _log.exception("%r failed on one-way request %d", stub, frame.code)
                if frame.fds or objects:
                    data.close()
                if reply._buf or reply._fds or reply._objects:
                    reply.close()
                    reply = MessageParcel()
        finally:
            ctx.identity = saved
            reply.close()

    def _dispatch(self, frame: _wire.Transaction, objects: list[RemoteObject]) -> None:
        self._answer(frame.seq, frame.handle, frame.code, frame.oneway,
                     MessageParcel._from_wire(frame.data, frame.fds, objects))

    def _answer(self, seq: int, handle: int, code: int, oneway: bool,
                data: MessageParcel, batch: _ReplyBatch | None = None) -> None:
        """Run one request on the exported object ``handle`` and send its reply (unless
        one-way), or add it to ``batch``. Takes ownership of ``data``."""
        entry = self._exports.get(handle)
        if entry is None:
            data.close()
            if not oneway:
                self._reply(_wire.encode_error_reply(
                    seq, IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT,
                    f"no object with handle {handle} (released or never exported)"), [],
                    None, batch)
            return
        status, detail, reply = invoke_stub(
            entry[0], code, data,  # type: ignore[arg-type]
            ASYNC_OPTION if oneway else SYNC_OPTION, self.peer_pid, self.peer_uid, local=False,
        )
        data.close()
        if oneway:
            reply.close()
            return
        if status:
            reply.close()
            self._reply(_wire.encode_error_reply(seq, status, detail), [], None, batch)
            return
        self._reply_with(seq, reply, batch)

    def _reply_with(self, seq: int, reply: MessageParcel, batch: _ReplyBatch | None) -> None:
        """Send ``reply`` (a stub's successful reply, with any fds and objects) as the
        answer to request ``seq``, or add it to ``batch``; it is closed once sent."""
        fds = reply._fds
        try:
            refs = self._refs_for_send(reply._objects) if reply._objects else []
            chunk = _wire.encode_reply(seq, 0, reply._buf, refs, len(fds))
        except IPCError as exc:  # an object that cannot be sent: the caller learns why
            chunk = _wire.encode_error_reply(seq, exc.code, exc.message)
            fds = []
        self._reply(chunk, fds, reply, batch)

    def _answer_plain(self, seq: int, handle: int, code: int, data: bytes) -> bytes:
        """:meth:`_answer` for the hot path, one plain sync request (no fds, no objects):
        the same steps, with what cannot happen to such a request left out. Returns the
        reply record for the caller to send, or ``b""`` if it went out already (a reply
        with fds or objects)."""
        entry = self._exports.get(handle)
        if entry is None:
            return _wire.encode_error_reply(
                seq, IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT,
                f"no object with handle {handle} (released or never exported)")
        parcel = MessageParcel._from_wire(data, [], [])
        status, detail, reply = invoke_stub(
            entry[0], code, parcel, SYNC_OPTION,  # type: ignore[arg-type]
            self.peer_pid, self.peer_uid, local=False)
        parcel._closed = True  # close(): it holds no fds, objects or finalizer
        if status:
            reply.close()
            return _wire.encode_error_reply(seq, status, detail)
        if reply._fds or reply._objects:
            self._reply_with(seq, reply, None)
            return b""
        chunk = _wire.encode_reply(seq, 0, reply._buf, (), 0)
        reply._closed = True  # close(): it holds no fds, objects or finalizer
        return chunk

    def _reply(self, chunk: bytes, fds: list[int], parcel: MessageParcel | None,
               batch: _ReplyBatch | None) -> None:
        """Send one reply frame now, or add it to ``batch``; ``parcel`` (which owns
        ``fds``) is closed once the frame is sent."""
        if batch is None:
            self._send_reply(chunk, fds)
            if parcel is not None:
                parcel.close()
            return
        if batch.chunks and (batch.size + len(chunk) > _wire.MAX_RECORD_BYTES
                             or len(batch.fds) + len(fds) > _wire.MAX_RECORD_FDS):
            self._send_batch(batch)
        batch.chunks.append(chunk)
        batch.fds.extend(fds)
        batch.size += len(chunk)
        if parcel is not None:
            batch.parcels.append(parcel)

    def _run_batch(self, items: list[_Request]) -> None:
        """Run the sync requests of one record (a ``send_requests`` batch) in order on this
        thread and send their replies coalesced, in as few records as fit: no thread hand-off
        and no write per request."""
        batch = _ReplyBatch()
        try:
            for frame, objects in items:
                try:
                    self._answer(frame.seq, frame.handle, frame.code, False,
                                 MessageParcel._from_wire(frame.data, frame.fds, objects), batch)
                except Exception as exc:  # a bug here must not leave the rest unanswered
                    _log.exception("%s: request %d of a batch failed", self.name, frame.code)
                    self._reply(_wire.encode_error_reply(
                        frame.seq, IPCErrorCode.OH_IPC_INNER_ERROR,
                        f"serving the request failed: {exc}"), [], None, batch)
        finally:
            if batch.chunks:
                self._send_batch(batch)

    def _send_batch(self, batch: _ReplyBatch) -> None:
        chunks, fds, parcels = batch.chunks, batch.fds, batch.parcels
        batch.chunks, batch.fds, batch.parcels, batch.size = [], [], [], 0
        try:
            if self._closed:
                return
            lock = self._lock
            lock.acquire()
            self._replies_sent += len(chunks)  # counted before they go (see _send_reply)
            lock.release()
            try:
                self._sendmsg(self._serve, b"".join(chunks), fds)
            except OSError as exc:
                self._shutdown(f"sending replies failed: {exc.strerror or exc}")
        finally:
            for parcel in parcels:
                parcel.close()

    def _send_reply(self, chunk: bytes, fds: list[int]) -> None:
        if self._closed:
            return
        # Counted before it is sent, so that any release computed after it went out carries
        # a count that includes it: replies may finish sending in another order than they
        # started, and a count of finished ones could miss this one (see _wire.Release).
        lock = self._lock
        lock.acquire()
        self._replies_sent += 1
        lock.release()
        if fds:
            try:
                self._sendmsg(self._serve, chunk, fds)
            except OSError as exc:
                self._shutdown(f"sending a reply failed: {exc.strerror or exc}")
        else:
            self._send_reply_record(chunk)

    def _send_reply_record(self, chunk: bytes) -> None:
        """Send a reply record without fds (already counted in ``_replies_sent``)."""
        try:
            try:
                self._serve.send(chunk)
            except BlockingIOError:
                self._sendmsg(self._serve, chunk, [])  # waits for room
        except OSError as exc:
            self._shutdown(f"sending a reply failed: {exc.strerror or exc}")


class _ForwardingStub(RemoteStub):
    """Stands in for a proxy to a third process, so that proxy can be passed on."""

    def __init__(self, target: RemoteProxy) -> None:
        super().__init__("childkit.forwarder")
        self._target = target

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        answer = self._target.send_request(code, data, option)
        with answer:
            reply.append(answer)
        return 0
