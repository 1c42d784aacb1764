"""One-way queues of one connection: the peer's one-way requests, per local object, in order.

One-way requests to one object run in arrival order, by one work thread at a time (the
*drainer* of that object); a sync request to an object with one-way requests pending waits
in the same queue, so it sees their effects. The queued work of one connection is bounded
three ways: a queue longer than :data:`ASYNC_BACKLOG` requests, or all the connection's
queues holding more than :data:`ASYNC_BACKLOG_BYTES` bytes of data (each remote object a
request holds counting as ``_objects.PROXY_COST`` bytes: what a proxy costs) or
:data:`ASYNC_BACKLOG_FDS` file descriptors, stop the server reading that peer until they
drain, so a flooding sender blocks (its socket fills) instead of this process's memory
and fd table growing. libbinder keeps the same per-node queue (``asyncTodo``).

May import: ``_errors``, ``_fdutil``, ``_objects``, ``_option``, ``_parcel``,
``_skeleton``, ``_transport``, ``_wire``. Nothing above: the server role hands its
``dispatch`` in.

Lock discipline
---------------
``OnewayQueues.lock`` (the *queue lock*, with condition ``cond``) guards ``queues``,
``queued``, ``held`` (bytes and fds per queue), ``total_bytes`` and ``total_fds`` (all
queues, and what a drainer took from them until it has run), ``busy`` and ``closed``.
``busy`` is also read without it on the server's hot path (a set lookup; see
``Server.serve_record`` for why that is safe). While holding it
the server role may take the object-table lock (resolving a request's objects, applying a
release); never the link lock. The lock is never held while a request runs.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from childkit.ipc import _skeleton, _wire
from childkit.ipc._fdutil import close_fds
from childkit.ipc._objects import PROXY_COST, ObjectTable
from childkit.ipc._option import ASYNC_OPTION
from childkit.ipc._parcel import MessageParcel, RemoteObject
from childkit.ipc._transport import Transport

_log = logging.getLogger("childkit.ipc")

#: A one-way queue of one object longer than this (requests) stops reading until it drains.
ASYNC_BACKLOG = 4096
#: One connection's queued one-way data beyond this (bytes) stops reading until it drains.
ASYNC_BACKLOG_BYTES = 32 * 1024 * 1024
#: One connection's queued one-way fds beyond this stop reading until they drain.
ASYNC_BACKLOG_FDS = 256

Request = tuple[_wire.Transaction, list[RemoteObject]]  # a request and its resolved objects
OnewayRun = list[tuple[int, bytes]]  # a record of plain one-way requests: (code, data)
#: A sync request that arrived on an extra channel, with the dispatch that answers it there.
ChannelRequest = tuple[_wire.Transaction, list[RemoteObject],
                       Callable[[_wire.Transaction, list[RemoteObject]], None]]
Queued = Request | ChannelRequest | OnewayRun  # what waits in an object's one-way queue


class OnewayQueues:
    """The peer's queued one-way requests, per local handle (see the module docstring).

    ``dispatch(frame, objects)`` answers a sync request met in a queue; ``rearm()`` lets
    the pool read the serve socket again.
    """

    def __init__(self, transport: Transport, table: ObjectTable,
                 dispatch: Callable[[_wire.Transaction, list[RemoteObject]], None],
                 rearm: Callable[[], None]) -> None:
        self.transport = transport
        self.table = table
        self.dispatch = dispatch
        self.rearm = rearm
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.queues: dict[int, collections.deque[Queued]] = {}
        self.queued: dict[int, int] = {}  # requests in each queue (a run counts each)
        self.held: dict[int, list[int]] = {}  # [bytes, fds] in each queue
        self.total_bytes = 0  # in all queues of this connection
        self.total_fds = 0
        self.busy: set[int] = set()  # handles a drainer runs (or is about to)
        self.closed = False

    def enqueue_locked(self, handle: int, entry: Queued, count: int) -> None:
        """Queue ``entry`` (``count`` requests) for ``handle`` (holding the queue lock)."""
        queue = self.queues.get(handle)
        if queue is None:
            queue = self.queues[handle] = collections.deque()
        queue.append(entry)
        self.queued[handle] = self.queued.get(handle, 0) + count
        if isinstance(entry, list):
            nbytes, nfds = sum(len(payload) for _code, payload in entry), 0
        else:  # each object held costs what a proxy does (most are, and new ones)
            nbytes = len(entry[0].data) + len(entry[1]) * PROXY_COST
            nfds = len(entry[0].fds)
        held = self.held.get(handle)
        if held is None:
            self.held[handle] = [nbytes, nfds]
        else:
            held[0] += nbytes
            held[1] += nfds
        self.total_bytes += nbytes
        self.total_fds += nfds

    def _forget_held_locked(self, handle: int) -> None:
        held = self.held.pop(handle, None)
        if held is not None:
            self.total_bytes -= held[0]
            self.total_fds -= held[1]

    def _over_locked(self, handles: set[int], own: list[int]) -> bool:
        """Whether a queue of ``handles`` is too long, or this connection's queues, but
        for those of ``own`` (which the asking thread drains itself), hold too much."""
        nbytes, nfds = self.total_bytes, self.total_fds
        for h in own:
            held = self.held.get(h)
            if held is not None:
                nbytes -= held[0]
                nfds -= held[1]
        return (nbytes > ASYNC_BACKLOG_BYTES or nfds > ASYNC_BACKLOG_FDS
                or any(self.queued.get(h, 0) > ASYNC_BACKLOG for h in handles))

    def wait_while_congested_locked(self, handles: set[int], own: list[int]) -> None:
        """Backpressure (holding the queue lock): while a queue of ``handles`` that another
        thread drains is too long, or the queues other threads drain hold too many bytes
        or fds, wait, so that the peer's sender blocks. ``own``: the handles this thread
        will drain (waiting for those would wait for itself)."""
        while not self.closed and self._over_locked(handles, own):
            self.cond.wait(1.0)

    def serve_run(self, handle: int, run: OnewayRun) -> None:
        """Run a record of plain one-way requests to one object on this thread, or queue it
        behind the ones another thread is running (and wait while that queue is full)."""
        lock = self.lock
        lock.acquire()
        if self.closed:
            lock.release()
            return
        mine = handle not in self.busy
        if mine:
            self.busy.add(handle)
        else:
            self.enqueue_locked(handle, run, len(run))
            # Backpressure: stop reading while the queue is long, so the sender blocks.
            self.wait_while_congested_locked({handle}, [])
        lock.release()
        self.rearm()
        if mine:
            try:
                self.run(handle, [run])
            finally:  # even after a SystemExit: what queued behind it still runs
                self.drain(handle)

    def drain(self, handle: int) -> None:
        """Run the one-way requests queued for ``handle`` in order; one drainer at a time."""
        lock = self.lock
        escaped: BaseException | None = None
        while True:
            lock.acquire()
            queue = self.queues.get(handle)
            if not queue or self.closed:
                self.busy.discard(handle)
                if queue is not None and not queue:
                    del self.queues[handle]
                    self.queued.pop(handle, None)
                    self._forget_held_locked(handle)
                lock.release()
                if escaped is not None:
                    raise escaped
                return
            items = list(queue)
            queue.clear()
            self.queued[handle] = 0
            # The bytes and fds taken stay counted until they have run: they are still
            # held, and the reader must not double them meanwhile.
            taken = self.held.pop(handle, None)
            self.cond.notify_all()  # readers stopped by a full queue may go on
            lock.release()
            try:
                self.run(handle, items)
            except BaseException as exc:  # SystemExit...: drain the rest, then let it go on
                escaped = escaped or exc
            if taken is not None:
                lock.acquire()
                if not self.closed:
                    self.total_bytes -= taken[0]
                    self.total_fds -= taken[1]
                    self.cond.notify_all()
                lock.release()

    def run(self, handle: int, items: list[Queued]) -> None:
        """Run queued requests to one object in order: one-way ones in a tight loop (the
        calling identity set once, one reply parcel reused), sync ones as usual."""
        stub = self.table.stub(handle)
        if stub is None:
            for item in items:
                if isinstance(item, list):
                    continue  # one-way requests to an object that is gone: dropped
                frame, objects = item[0], item[1]
                if frame.oneway:
                    close_fds(frame.fds)
                else:
                    self._dispatcher(item)(frame, objects)  # answers "no such object"
            return
        on_request = stub.on_remote_request
        ctx = _skeleton._context
        saved = ctx.identity
        t = self.transport
        identity = (t.peer_pid, t.peer_uid, False)
        reply = MessageParcel()
        new_parcel = MessageParcel._from_wire
        escaped: BaseException | None = None
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
                        except BaseException as exc:  # goes on once the rest has run
                            escaped = escaped or exc
                        if reply._buf or reply._fds or reply._objects:
                            reply.close()
                            reply = MessageParcel()
                    continue
                frame, objects = item[0], item[1]
                if not frame.oneway:
                    ctx.identity = saved
                    try:
                        self._dispatcher(item)(frame, objects)  # answers the caller anyway
                    except BaseException as exc:
                        escaped = escaped or exc
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
                except BaseException as exc:  # goes on once the rest has run
                    escaped = escaped or exc
                if frame.fds or objects:
                    data.close()
                if reply._buf or reply._fds or reply._objects:
                    reply.close()
                    reply = MessageParcel()
        finally:
            ctx.identity = saved
            reply.close()
        if escaped is not None:
            raise escaped

    def _dispatcher(self, item: Request | ChannelRequest,
                    ) -> Callable[[_wire.Transaction, list[RemoteObject]], None]:
        """What answers a queued sync request: on the socket it came by."""
        return item[2] if len(item) == 3 else self.dispatch

    def close(self) -> list[int]:
        """The link closed: drop every queue; return the fds the dropped requests owned."""
        with self.lock:
            self.closed = True
            stale_fds = [fd for q in self.queues.values() for entry in q
                         if not isinstance(entry, list) for fd in entry[0].fds]
            self.queues.clear()
            self.queued.clear()
            self.held.clear()
            self.total_bytes = self.total_fds = 0
            self.cond.notify_all()
        return stale_fds
