"""The asyncio hand-off of one connection: awaited calls, and an event loop as the reader.

An awaited call (:meth:`LoopBridge.transact_async`) registers an :class:`AsyncCall` whose
future is resolved in its own loop. While only awaited calls wait and no thread reads the
call socket, one of their loops reads it (``add_reader``): no thread sleeps for them. A
thread that starts waiting meanwhile waits for the loop, or reads in its stead when that
loop cannot (it is this very thread, blocked in a sync call, or it stopped).

May import: ``_caller``, ``_errors``, ``_option``, ``_parcel``, ``_transport``, ``_wire``.
asyncio itself is imported when an event loop first uses a connection, not by every
process that imports childkit (the launcher, whose every page each forked child shares).

Lock discipline
---------------
The transport's *link lock* guards ``loop_leader`` and ``loop_leader_thread``, with the
caller's ``leader`` (a loop that reads is the leader). An :class:`AsyncCall`'s future is
only touched in its loop's thread (``call_soon_threadsafe``). Nothing here takes another
lock while holding the link lock, but through the caller (the object-table lock).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, cast

from childkit.ipc import _wire
from childkit.ipc._caller import Call, Caller, reply_parcel
from childkit.ipc._errors import IPCTimeoutError, ParcelWriteError
from childkit.ipc._fdutil import close_fds
from childkit.ipc._option import MessageOption
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._transport import recv_buffers

if TYPE_CHECKING:
    import asyncio


class AsyncCall(Call):
    """An outstanding call awaited by an asyncio task: its future is resolved in its loop."""

    __slots__ = ("future", "loop", "seq")

    awaited = True

    def __init__(self, loop: asyncio.AbstractEventLoop, seq: int) -> None:
        super().__init__()
        self.loop = loop
        self.seq = seq
        self.future: asyncio.Future[_wire.Reply] = loop.create_future()

    def deliver(self, error: BaseException | None = None) -> None:
        """Resolve the future from any thread (called with the link lock held)."""
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


class LoopBridge:
    """The event-loop side of a connection's caller role (see the module docstring)."""

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.transport = caller.transport
        self.lock = caller.lock
        # When an event loop reads the call socket (for awaited calls) instead of a thread.
        self.loop_leader: asyncio.AbstractEventLoop | None = None
        self.loop_leader_thread: int | None = None
        caller.loop = self

    # ------------------------------------------------------------------ LoopHandoff
    def reading(self) -> bool:
        return self.loop_leader is not None

    def can_not_read_locked(self) -> bool:
        loop = self.loop_leader
        return loop is not None and (
            self.loop_leader_thread == threading.get_ident() or not loop.is_running()
            or loop.is_closed())

    def hand_lead_locked(self) -> None:
        # Only awaited calls are left and nobody reads: ask one of their loops to.
        caller = self.caller
        if caller.leader or self.transport.closed:
            return
        waiters = caller.waiters.values()
        if any(not w.awaited for w in waiters):
            return  # a waiting thread takes the lead (it was notified)
        for waiter in waiters:
            loop = cast(AsyncCall, waiter).loop
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._take_lead, loop)
                return

    # ------------------------------------------------------------------ awaited calls
    async def transact_async(
        self, handle: int, code: int, parcel: MessageParcel, option: MessageOption
    ) -> MessageParcel:
        """Like ``transact``, awaited: the running loop reads the replies, no thread
        waits. Cancelling the await forgets the call; a late reply is dropped and the
        connection stays usable."""
        caller = self.caller
        if option.mode:
            return caller.transact(handle, code, parcel, option)  # one-way never waits
        if parcel._closed:
            raise ParcelWriteError("the data parcel is closed")
        import asyncio  # already imported: an event loop is running this coroutine

        loop = asyncio.get_running_loop()
        data, fds, objects = parcel._buf, parcel._fds, parcel._objects
        lock = self.lock
        lock.acquire()
        try:
            seq, registered, refs = caller.register_call_locked(
                objects, lambda seq: AsyncCall(loop, seq))
            call = cast(AsyncCall, registered)
        finally:
            lock.release()
        # The timeout is the call's whole budget, sending included (a peer that does not
        # read must not hold the event loop in a full socket).
        deadline = None if option.timeout is None else time.monotonic() + option.timeout
        try:
            self.transport.send(
                _wire.encode_transaction(seq, handle, code, False, data, refs, len(fds)), fds,
                deadline, seq)
            lock.acquire()
            try:
                if not caller.leader:
                    self._take_lead_locked(loop)
            finally:
                lock.release()
            if option.timeout is None:
                reply = await call.future
            else:
                assert deadline is not None
                try:
                    reply = await asyncio.wait_for(call.future,
                                                   max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise IPCTimeoutError(f"no reply within {option.timeout} s") from None
        finally:
            lock.acquire()
            caller.waiters.pop(seq, None)
            if self.loop_leader is loop and not self._has_async_waiters_locked(loop):
                self._resign_locked()
            lock.release()
        return reply_parcel(reply, code, call.objects)

    def _has_async_waiters_locked(self, loop: asyncio.AbstractEventLoop) -> bool:
        return any(w.awaited and cast(AsyncCall, w).loop is loop
                   for w in self.caller.waiters.values())

    # ------------------------------------------------------------------ the loop reads
    def _take_lead_locked(self, loop: asyncio.AbstractEventLoop) -> None:
        self.caller.leader = True
        self.loop_leader = loop
        self.loop_leader_thread = threading.get_ident()
        self.transport.io_users += 1
        loop.add_reader(self.transport.call_fd, self._on_call_readable)

    def _take_lead(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            if (not self.caller.leader and not self.transport.closed
                    and self._has_async_waiters_locked(loop)):
                self._take_lead_locked(loop)

    def _resign_locked(self) -> None:
        loop = self.loop_leader
        if loop is None:
            return
        t = self.transport
        if not loop.is_closed():
            loop.remove_reader(t.call_fd)
        self.loop_leader = None
        self.loop_leader_thread = None
        self.caller.leader = False
        t.io_users -= 1
        self.caller.wake_a_reader_locked()  # a waiting thread (or another loop) reads now
        if t.closed:
            t.close_sockets_if_idle_locked()

    def _resign(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.lock:
            if self.loop_leader is loop:
                self._resign_locked()

    def _on_call_readable(self) -> None:
        """Event-loop reader of the call socket: one record per callback."""
        self.caller.read_one(recv_buffers.buf)

    def close(self) -> None:
        """The link closed: the reading loop, if any, stops reading (in its own thread)."""
        with self.lock:
            loop = self.loop_leader
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._resign, loop)
            except RuntimeError:
                pass  # that loop is closed; its reader went with it
