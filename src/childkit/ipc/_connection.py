"""Connection: one IPC link between two processes, composed of its roles.

The connection is the composition root (like trio's ``Runner``): it owns the session's
lifecycle (start, the peer's greeting, close, the death fan-out) and holds one object per
role, each a module with its own state and lock discipline:

- :mod:`._transport`: the two sockets, records in and out, the call socket's writer;
- :mod:`._caller`: this side's sync calls, their replies, the reader (leader), and
  :mod:`._channels`, the extra call sockets of concurrent callers;
- :mod:`._asyncbridge`: awaited calls, and an event loop as the reader;
- :mod:`._server`: the peer's requests, run on work threads, and the replies (one server
  per serve socket: the main one and each extra channel the peer opened);
- :mod:`._oneway`: the peer's one-way requests, queued per local object;
- :mod:`._objects`: exported stubs and proxies, with reference counts and releases.

Its public methods forward to the role that does the work. Proxies reach it through the
:class:`~childkit.ipc._proxy.Session` interface.

May import every module of ``childkit.ipc`` but the package face. Lock order, when two
are held: the link lock (transport, caller, loop bridge) -> the one-way queue lock ->
the object-table lock; the server lock is never held with another. The connection itself
holds ``_close_callbacks`` and ``_started`` under the link lock.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from childkit.ipc import _wire
from childkit.ipc._asyncbridge import LoopBridge
from childkit.ipc._caller import Caller
from childkit.ipc._errors import DeadRemoteObjectError, IPCTimeoutError, ParamError
from childkit.ipc._fdutil import close_fds
from childkit.ipc._objects import ObjectTable
from childkit.ipc._option import MessageOption
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._proxy import DeathRecipient, RemoteProxy
from childkit.ipc._server import Server
from childkit.ipc._stub import RemoteStub
from childkit.ipc._threadpool import IPCThreadPool, default_pool
from childkit.ipc._transport import Transport, channel_socketpairs

__all__ = ["Connection", "channel_socketpairs"]

_log = logging.getLogger("childkit.ipc")


class Connection:
    """One IPC link to a peer process. Thread-safe.

    ``local_root`` is the stub this side offers as its root object (a child's
    ``on_connect()`` stub); the peer reaches it with :meth:`root_proxy`. ``channels``:
    how many extra call channels the peer may open for its concurrent callers (0 to
    ``MAX_CHANNELS``, 31; 0 serves one call socket only, as the C kit does).
    :class:`ParamError` for another value.
    """

    #: :meth:`transact` with the default option, for arguments the caller has checked.
    call: Callable[[int, int, MessageParcel], MessageParcel]
    #: Send one request to the peer's object ``handle`` (see ``RemoteProxy.send_request``).
    transact: Callable[[int, int, MessageParcel, MessageOption], MessageParcel]
    #: Send many requests to ``handle`` in as few records as fit (see ``send_requests``).
    transact_batch: Callable[[int, list[tuple[int, MessageParcel]], MessageOption],
                             list[MessageParcel]]

    def __init__(
        self,
        call_sock: socket.socket,
        serve_sock: socket.socket,
        *,
        local_root: RemoteStub | None = None,
        name: str = "",
        pool: IPCThreadPool | None = None,
        channels: int = _wire.MAX_CHANNELS,
    ) -> None:
        if local_root is not None and not isinstance(local_root, RemoteStub):
            raise ParamError(f"local_root must be a RemoteStub, not {local_root!r}")
        if (isinstance(channels, bool) or not isinstance(channels, int)
                or not 0 <= channels <= _wire.MAX_CHANNELS):
            raise ParamError(f"channels must be an int in 0..{_wire.MAX_CHANNELS} (extra call "
                             f"sockets the peer may open), not {channels!r}")
        self._pool = pool = pool or default_pool()
        table = self._table = ObjectTable(local_root)
        # The pool's methods are looked up when used (a test's pool may lack some).
        t = self._transport = Transport(call_sock, serve_sock, name, table.gc_releases,
                                        lambda task: pool.submit(task))
        caller = self._caller = Caller(t, table)
        self._loop = LoopBridge(caller)
        server = self._server = Server(t, table, pool)
        server.accepts = channels
        chans = caller.channels
        server.on_greeting = lambda peer_accepts: setattr(
            chans, "limit", min(peer_accepts, _wire.MAX_CHANNELS))
        table.session = self
        table.transport = t
        table.submit_from_finalizer = lambda task: pool.submit_from_finalizer(task)
        table.requests_sent = lambda: caller.next_seq
        table.channel_calls = chans.in_flight
        t.on_fail = self._shutdown
        self._started = False
        self._close_callbacks: list[Callable[[], object]] = []
        self._has_root = local_root is not None
        # The hot path's forwards: bound methods, so a call costs no extra frame.
        self.call = caller.call
        self.transact = caller.transact
        self.transact_batch = caller.transact_batch

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        """How logs and errors name this connection."""
        return self._transport.name

    @name.setter
    def name(self, value: str) -> None:
        self._transport.name = value

    @property
    def peer_pid(self) -> int:
        """The peer's pid: as the kernel stamped its greeting, unless the layer that made
        the connection named the peer since (the process layer names a child by the pid
        its exit callbacks and ``kill_child_process`` know). Stubs see it as the calling
        pid of the peer's requests."""
        return self._transport.peer_pid

    @peer_pid.setter
    def peer_pid(self, pid: int) -> None:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ParamError(f"peer_pid must be a positive int, not {pid!r}")
        self._transport.peer_pid = pid

    @property
    def peer_uid(self) -> int:
        """The peer's uid (as the kernel stamped its greeting)."""
        return self._transport.peer_uid

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start serving the peer's requests and greet it. Call once."""
        t = self._transport
        with t.lock:
            if self._started:
                raise ParamError("connection already started")
            if t.closed:
                raise t.dead()
            self._started = True
            self._table.started = True
        self._pool.register(t.serve_fd, self._server.on_readable)
        t.send(_wire.encode_hello(self._has_root, self._server.accepts), None)

    def wait_peer_hello(self, timeout: float) -> bool:
        """Wait for the peer's greeting; return whether it exports a root object.

        Raises :class:`DeadRemoteObjectError` if the peer closed before greeting, and
        :class:`IPCTimeoutError` if nothing came within ``timeout`` seconds.
        """
        server = self._server
        server.hello.wait(timeout)
        t = self._transport
        with server.oneway.lock:  # the greeting is recorded under it
            if server.greeted:
                return server.peer_has_root
        if t.closed:
            raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}")
        raise IPCTimeoutError(f"{t.name}: no greeting from the peer within {timeout} s")

    def outstanding_calls(self) -> int:
        """Sync calls sent (or being sent) on this connection and not yet answered."""
        return self._caller.outstanding()

    @property
    def closed(self) -> bool:
        return self._transport.closed

    @property
    def close_reason(self) -> str:
        return self._transport.close_reason

    def close(self) -> None:
        """Close the connection: outstanding calls fail, every proxy becomes dead. Idempotent."""
        self._shutdown("closed by this side")

    def add_close_callback(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` once, on a separate thread, when the connection closes."""
        with self._transport.lock:
            if not self._transport.closed:
                self._close_callbacks.append(callback)
                return
        threading.Thread(target=callback, name="ipc-death", daemon=True).start()

    def root_proxy(self) -> RemoteProxy:
        """A proxy to the peer's root object (its ``on_connect()`` stub)."""
        if self._transport.closed:
            raise self._transport.dead()
        return self._table.root_proxy()

    def _shutdown(self, reason: str) -> None:
        t = self._transport
        with t.lock:
            queued_fds = t.mark_closed_locked(reason)
            if queued_fds is None:
                return  # closed already
            self._caller.fail_waiters_locked(DeadRemoteObjectError(f"{t.name}: {reason}"))
            callbacks, self._close_callbacks = self._close_callbacks, []
            started = self._started
        recipients = self._table.close()
        stale_fds = self._server.oneway.close()
        self._server.hello.set()
        self._loop.close()
        self._server.replies.close()  # before the sockets close: the writer lets go first
        if started:
            self._pool.unregister(t.serve_fd)
        self._server.close_channels()  # the peer's channels: no longer served
        self._caller.channels.shutdown()  # this side's: callers on them wake
        t.shutdown_sockets()  # wakes any thread blocked on them; closes them once idle
        close_fds(stale_fds + queued_fds)
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

    # ------------------------------------------------------------------ Session
    async def transact_async(
        self, handle: int, code: int, parcel: MessageParcel, option: MessageOption
    ) -> MessageParcel:
        """Like :meth:`transact`, awaited: the running loop reads the replies, no thread
        waits. Cancelling the await forgets the call; a late reply is dropped and the
        connection stays usable."""
        return await self._loop.transact_async(handle, code, parcel, option)

    def add_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        """Call ``recipient()`` once when ``proxy``'s remote object dies (its proxy calls
        this: see ``RemoteProxy.add_death_recipient``)."""
        self._table.add_death_recipient(proxy, recipient)

    def remove_death_recipient(self, proxy: RemoteProxy, recipient: DeathRecipient) -> None:
        """Forget a recipient of ``proxy``; :class:`ParamError` if it was not added."""
        self._table.remove_death_recipient(proxy, recipient)

    def release_proxy(self, proxy: RemoteProxy) -> None:
        """Give back the references ``proxy`` holds (it was closed)."""
        self._table.release_proxy(proxy)


if TYPE_CHECKING:
    from childkit.ipc._proxy import Session

    _session_check: Session = Connection.__new__(Connection)
