"""The caller role of one connection: sync calls, their replies, and who reads them.

A side sends its requests on its call socket and reads the replies there. Keeping that
socket apart from the serve socket is what lets a sync call skip thread hops: the calling
thread reads its own reply, since nothing else arrives on its call socket. When several
calls are outstanding, one caller at a time reads (the *leader*) and hands the others'
replies over; requests queued while another thread writes go out in one record (the
transport's writer). An event loop may be the reader instead of a thread, for awaited
calls: that hand-off lives in :mod:`._asyncbridge`, behind :class:`LoopHandoff`. A plain
sync call that finds the main call socket busy goes on an extra channel of its own
instead, when the peer accepts them (:mod:`._channels`, :meth:`Caller.call_on_channel`).

May import: ``_busypoll``, ``_channels``, ``_errors``, ``_fdutil``, ``_objects``,
``_option``, ``_parcel``, ``_transport``, ``_wire``. Nothing above.

Lock discipline
---------------
The transport's *link lock* (``Transport.lock``, condition ``Transport.cond``) guards this
role's ``waiters``, ``lone_seq``, ``next_seq``, ``leader`` and ``stand_in``, together with
the writer's state, so that the lone caller's fast path (:meth:`Caller.call`) sees in one
critical section that nobody writes or reads. A :class:`Call`'s ``reply`` and ``objects``
are set under it. ``poller`` and ``busy_poll`` belong to whichever thread reads (the
leader), one at a time.

A waiting thread sleeps on a condition of its own over the link lock (``Call.cond``), so a
reply wakes only its own caller, and a reader that stops wakes exactly one waiter to read
next; the transport's ``cond`` is left to the writer's backpressure and to closing.
While holding the link lock this role may take the object-table lock (to resolve or count
references), never the server lock.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

from childkit.ipc import _busypoll, _wire
from childkit.ipc._busypoll import PREEMPTED_NS, BusyPoll, lost_cpu
from childkit.ipc._channels import CallChannel, ChannelSet
from childkit.ipc._errors import (
    DeadRemoteObjectError,
    IPCError,
    IPCErrorCode,
    IPCTimeoutError,
    ParcelWriteError,
    ProtocolError,
    is_transportable_status,
)
from childkit.ipc._fdutil import close_fds
from childkit.ipc._objects import ObjectTable
from childkit.ipc._option import SYNC_OPTION, MessageOption
from childkit.ipc._parcel import MessageParcel, RemoteObject
from childkit.ipc._transport import (
    ANC_SPACE,
    DONTWAIT,
    NO_FDS,
    NO_GROUP,
    RECV_FLAGS,
    RETRY_LATER,
    TRUNCATED,
    Outgoing,
    Transport,
    dup_for_sending,
    exchange,
    exchange_slowly,
    recv_buffers,
    release_holds,
)

_now_ns = _busypoll.now_ns  # the busy-poll rule's clock (a test may replace it there)
# (The hot path reads ``_busypoll._now_ns()`` itself: the same clock, one frame fewer.)


class Call:
    """An outstanding sync call; ``reply`` is set under the link lock. ``cond`` is the
    waiting thread's own condition (over the link lock) once it sleeps for the reply or
    for its turn to read."""

    __slots__ = ("cond", "objects", "reply")

    #: Whether an event loop awaits it (then :meth:`deliver` resolves its future).
    awaited = False

    def __init__(self) -> None:
        self.reply: _wire.Reply | None = None
        self.objects: list[RemoteObject] = []  # the reply's objects, resolved on arrival
        self.cond: threading.Condition | None = None

    def deliver(self, error: BaseException | None = None) -> None:
        """Tell an awaiting event loop that the reply (or ``error``) is here."""


class LoopHandoff(Protocol):
    """What the caller needs of the asyncio hand-off (:mod:`._asyncbridge`). Every method
    is called holding the link lock."""

    def reading(self) -> bool:
        """Whether an event loop is the reader now."""
        ...

    def can_not_read_locked(self) -> bool:
        """Whether the reading loop cannot read (it is this thread, or stopped)."""
        ...

    def hand_lead_locked(self) -> None:
        """If only awaited calls are left and nobody reads, ask one of their loops to."""
        ...


class _NoLoop:
    def reading(self) -> bool:
        return False

    def can_not_read_locked(self) -> bool:
        return False

    def hand_lead_locked(self) -> None:
        pass


def plain_request(seq: int, handle: int, code: int, data: _wire.Data) -> Outgoing:
    """The record of a plain sync request (no fds, no objects): one buffer, or from
    GATHER_BYTES on a ``(head, data)`` pair sent gathered, so that the parcel's data is
    not copied behind its frame head first."""
    if len(data) < _wire.GATHER_BYTES:
        return _wire.encode_transaction(seq, handle, code, False, data, (), 0)
    return (_wire.transaction_head(seq, handle, code, len(data)), data)


def reply_parcel(reply: _wire.Reply, code: int, objects: list[RemoteObject]) -> MessageParcel:
    """The caller's parcel for ``reply``; raises the error a failed reply carries."""
    if reply.status:
        close_fds(reply.fds)
        detail = reply.detail or f"request {code} failed"
        if reply.status == IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT:
            raise DeadRemoteObjectError(detail)
        if not is_transportable_status(reply.status):  # (no childkit peer sends it)
            raise IPCError(IPCErrorCode.OH_IPC_INVALID_USER_ERROR_CODE,
                           f"the peer answered request {code} with status {reply.status}, "
                           f"outside the transportable codes: {detail}")
        raise IPCError(reply.status, detail)
    return MessageParcel._from_wire(reply.data, reply.fds, objects)


class Caller:
    """Sends this side's requests and gets their replies to the threads (or loops) that
    wait. See the module docstring for its lock discipline."""

    #: ``prefer_channel()``: whether a plain sync call made alone goes on an extra
    #: channel rather than the main call socket: while nobody polls (``_busypoll``):
    #: polling is off (set so, or one CPU) or the machine is crowded. Without polling, a
    #: channel's round trip costs less than the main socket's, whose peer serves each
    #: request through the work threads' epoll (measured on a loaded 2-CPU machine: 27
    #: against 43 us of CPU per request, 23k against 16k requests/s; docs/ipc.md); with
    #: polling the main socket is quicker. (A class attribute, so that tests can fix the
    #: choice.)
    prefer_channel: Callable[[], bool] = staticmethod(_busypoll.nobody_polls)

    def __init__(self, transport: Transport, table: ObjectTable) -> None:
        self.transport = transport
        self.table = table
        self.lock = transport.lock
        self.waiters: dict[int, Call] = {}
        self.lone_seq = 0  # the call of a thread in _transact_alone (maybe not a waiter)
        self.next_seq = 1
        self.leader = False  # a thread (or loop) reads the call socket
        self.stand_in = False  # a thread reads for a loop that cannot (see _await_reply)
        self.loop: LoopHandoff = _NoLoop()
        self.poller = select.poll()
        self.poller.register(transport.call_fd, select.POLLIN)
        self.busy_poll = BusyPoll()
        self._conds = threading.local()  # each thread's condition over the link lock
        self.channels = ChannelSet(transport)
        self._opened, self._idle = self.channels.all, self.channels.free  # (never rebound)
        # One-way requests go on the main socket, and a channel's request may be served
        # before the peer has read what came before it there. So a sync call may take a
        # channel only when every one-way request sent so far (by any thread: one may
        # have handed its work to this one) is *fenced*: a sync call on the main socket
        # that began after it was sent has been answered, so the peer read it and queued
        # it, and a request to its object now waits behind it wherever it comes from.
        # ``oneway_sent``: the ticket of a one-way request sent (taken after the send,
        # stored before send_request returns); ``oneway_fenced``: the ``oneway_sent`` seen
        # when an answered main-socket call began. Both only ever hold tickets that were
        # stored, so a race between threads can only make them differ: no channel then.
        self._oneway_tickets = itertools.count(1)
        self.oneway_sent = 0
        self.oneway_fenced = 0

    # ------------------------------------------------------------------ state
    def outstanding(self) -> int:
        """Sync calls sent (or being sent) and not yet answered."""
        with self.lock:
            lone = self.lone_seq != 0 and self.lone_seq not in self.waiters
            return len(self.waiters) + lone + len(self.channels.in_flight())

    def fail_waiters_locked(self, error: BaseException) -> None:
        """The link closed (holding the link lock): every waiter learns it."""
        for waiter in self.waiters.values():
            if waiter.awaited:
                waiter.deliver(error)
            elif waiter.cond is not None:
                waiter.cond.notify()
        self.waiters.clear()

    def _thread_cond(self) -> threading.Condition:
        """This thread's condition over the link lock (made once per thread)."""
        cond: threading.Condition | None = getattr(self._conds, "cond", None)
        if cond is None:
            cond = self._conds.cond = threading.Condition(self.lock)
        return cond

    def wake_a_reader_locked(self) -> None:
        """The reader stopped (holding the link lock): wake one thread still waiting for
        its reply, which then reads (one only: the others sleep on); if only awaited
        calls wait, one of their event loops reads next. Every reader that stops calls
        this: a reader's role left to nobody while replies are due hangs their callers
        (the threads that could read may all be calling on channels)."""
        for waiter in self.waiters.values():
            if waiter.cond is not None and waiter.reply is None:
                waiter.cond.notify()
                return
        self.loop.hand_lead_locked()

    def register_call_locked(self, objects: list[RemoteObject], make: Callable[[int], Call],
                             ) -> tuple[int, Call, list[_wire.ObjectRef]]:
        """A new outstanding sync call: its sequence number, waiter (``make(seq)``) and
        the references of its parcel's objects."""
        t = self.transport
        if t.closed:
            raise t.dead()
        refs = self.table.refs_for(objects) if objects else []
        seq = self.next_seq
        self.next_seq = seq + 1
        call = make(seq)
        self.waiters[seq] = call
        return seq, call, refs

    # ------------------------------------------------------------------ sync calls
    def call(self, handle: int, code: int, parcel: MessageParcel) -> MessageParcel:
        """:meth:`transact` with the default option (sync, no timeout), for arguments the
        caller has checked: the hot path, with fewer steps to the lone caller's."""
        if not (parcel._fds or parcel._objects or parcel._closed):
            opened = self._opened
            if opened and len(self._idle) < len(opened):
                # Others call on channels now: so does this call (a channel's round trip
                # is leaner than the main socket's while it may not poll anyway).
                return self._contended(handle, code, parcel)
            if self.channels.limit and self.prefer_channel():
                return self._contended(handle, code, parcel)  # nobody polls: see there
            lock = self.lock
            t = self.transport
            lock.acquire()
            if not (t.closed or t.writing or self.leader or t.wqueue or t.gc_releases):
                return self._transact_alone(handle, code, parcel._buf)  # releases the lock
            lock.release()
            if self.channels.limit:  # the main socket is busy: a channel of its own?
                return self._contended(handle, code, parcel)
        return self.transact(handle, code, parcel, SYNC_OPTION)

    def _contended(self, handle: int, code: int, parcel: MessageParcel) -> MessageParcel:
        """A plain sync call (no fds, objects or timeout) that found the main call socket
        busy: on an idle extra channel if there is one (or one can be opened), unless
        one-way requests sent before it are not fenced yet; else on the main socket."""
        if self.oneway_fenced != self.oneway_sent:
            return self.transact(handle, code, parcel, SYNC_OPTION)
        channel = self.channels.take()
        if channel is None:
            return self.transact(handle, code, parcel, SYNC_OPTION)
        return self.call_on_channel(channel, handle, code, parcel._buf)

    def transact(
        self, handle: int, code: int, parcel: MessageParcel, option: MessageOption
    ) -> MessageParcel:
        """Send one request to the peer's object ``handle`` (see RemoteProxy.send_request)."""
        if parcel._closed:
            raise ParcelWriteError("the data parcel is closed")
        data, fds, objects = parcel._buf, parcel._fds, parcel._objects
        t = self.transport
        if option.mode:  # one-way
            refs = self.table.refs_for(objects) if objects else []
            t.send_oneway(
                _wire.encode_transaction(0, handle, code, True, data, refs, len(fds)), fds)
            self.oneway_sent = next(self._oneway_tickets)
            return MessageParcel()
        lock = self.lock
        if not (fds or objects or option.timeout is not None):
            if (self.channels.limit and self.oneway_fenced == self.oneway_sent
                    and self.prefer_channel()):
                channel = self.channels.take()  # nobody polls: see prefer_channel
                if channel is not None:
                    return self.call_on_channel(channel, handle, code, data)
            lock.acquire()
            if not (t.closed or t.writing or self.leader or t.wqueue or t.gc_releases):
                return self._transact_alone(handle, code, data)  # releases the lock
            lock.release()
            if self.channels.limit and self.oneway_fenced == self.oneway_sent:
                channel = self.channels.take()
                if channel is not None:
                    return self.call_on_channel(channel, handle, code, data)
        # The timeout is the caller's whole budget, sending included.
        deadline = None if option.timeout is None else time.monotonic() + option.timeout
        fence = self.oneway_sent  # before this request is sent: see oneway_fenced
        lock.acquire()
        try:
            seq, call, refs = self.register_call_locked(objects, _new_call)
            # Nobody else writing and nothing queued: write this frame now, on this thread.
            direct = not (fds or t.writing or t.wqueue or t.gc_releases)
            if direct:
                t.writing = True
                t.io_users += 1
        finally:
            lock.release()
        chunk = _wire.encode_transaction(seq, handle, code, False, data, refs, len(fds))
        try:
            if direct:
                t.send_direct(chunk, deadline)
            else:
                t.send(chunk, fds, deadline, seq)
        except BaseException:
            lock.acquire()
            self.waiters.pop(seq, None)
            lock.release()
            raise
        reply = self._await_reply(call, seq, option.timeout, deadline)
        self.oneway_fenced = fence  # answered: the peer read what was sent before it
        return reply_parcel(reply, code, call.objects)

    def call_on_channel(self, channel: CallChannel, handle: int, code: int,
                        data: _wire.Data) -> MessageParcel:
        """Send one plain sync request on ``channel`` (taken from ``channels``), read its
        reply there, give the channel back. Raises as a call on the main socket does. No
        thread but this one reads the channel: no leader, no hand-off, no link lock."""
        t = self.transport
        seq = channel.seq = channel.seq + 1
        channel.busy = seq
        try:
            chunk = plain_request(seq, handle, code, data)
            buf = recv_buffers.buf
            # No busy polling: channels carry calls made while others call, and pollers
            # would take the CPUs that the peer and the other callers need.
            try:
                if exchange is not None:
                    result = exchange(channel.fd, chunk, buf, 0, PREEMPTED_NS)
                else:
                    result = exchange_slowly(channel.sock, self.poller.poll, channel.fd,
                                             chunk, buf, 0, 0)
            except OSError as exc:  # only sending raises
                t.fail(f"sending failed: {exc.strerror or exc}")
                raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}") from None
            n, anc, flags, _seen, err = result
            while err in RETRY_LATER:  # interrupted by a signal: read again
                try:
                    n, anc, flags, _ = channel.sock.recvmsg_into([buf], ANC_SPACE, RECV_FLAGS)
                    err = 0
                except (InterruptedError, BlockingIOError):
                    pass
                except OSError as exc:
                    err = exc.errno or errno.EIO
            if err:
                t.fail(f"receiving failed: {os.strerror(err)}")
                raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}")
            if not anc and not flags & TRUNCATED:
                simple = _wire.simple_reply(buf, n)
                if simple is not None and simple[0] == seq and not simple[1]:
                    return MessageParcel._received(buf, _wire.REPLY_DATA_OFFSET, n)
            reply, objects = self._channel_reply(seq, buf, n, anc, flags)
            return reply_parcel(reply, code, objects)
        finally:
            channel.busy = 0  # before the deferred releases are looked at (ObjectTable)
            if self.table.deferred:
                try:
                    self.table.apply_deferred()
                except ProtocolError as exc:
                    t.protocol_error(exc.message)
            self.channels.give_back(channel)

    def _channel_reply(self, seq: int, buf: mmap.mmap | bytearray, n: int,
                       anc: list[tuple[int, int, bytes]], flags: int,
                       ) -> tuple[_wire.Reply, list[RemoteObject]]:
        """Any record on a channel but a plain successful reply: it must be exactly one
        reply to ``seq`` (with fds, objects, or a failure status); else the link closes."""
        t = self.transport
        frames = t.decode(buf, n, anc, flags)
        if frames is None:  # the end of the stream, or a protocol error: closed
            raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}")
        reply = frames[0]
        if len(frames) != 1 or not isinstance(reply, _wire.Reply) or reply.seq != seq:
            for frame in frames:
                if isinstance(frame, (_wire.Reply, _wire.Transaction, _wire.Channel)):
                    close_fds(frame.fds)
            t.protocol_error(f"a channel carries one reply to its request {seq}, not this")
            raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}")
        try:
            # Resolved before the channel is free again (ObjectTable.apply_release).
            return reply, self.table.resolve(reply.objects) if reply.objects else []
        except ProtocolError as exc:
            close_fds(reply.fds)
            t.protocol_error(exc.message)
            raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}") from None

    def _transact_alone(self, handle: int, code: int, data: _wire.Data) -> MessageParcel:
        """The common sync call: no fds, no objects, no timeout, nobody else writing or
        reading. Entered holding the lock; takes the reader's role in that one critical
        section, writes its frame itself and reads its own reply. (It does not take the
        writer's role: a record goes out whole, so others may write meanwhile, and
        nothing of this thread's is queued before it.)"""
        lock = self.lock
        t = self.transport
        seq = self.next_seq
        self.next_seq = seq + 1
        self.leader = True
        self.lone_seq = seq
        t.io_users += 1
        lock.release()
        fence = self.oneway_sent  # before this request is sent: see oneway_fenced
        # The waiter is registered only if the reply does not come first thing: until
        # then this thread is the only reader, and only a reader hands out replies.
        call: Call | None = None
        got_it = False
        try:
            # plain_request(), inlined: the hot path
            chunk = (_wire.encode_transaction(seq, handle, code, False, data, (), 0)
                     if len(data) < _wire.GATHER_BYTES
                     else (_wire.transaction_head(seq, handle, code, len(data)), data))
            # Send, poll for the reply a moment before sleeping on it (see _busypoll), read
            # one record: in C, one call without the GIL; else three socket calls.
            waiter = self.busy_poll
            started = _busypoll._now_ns()
            # Not while calls on channels wait too: a spinning thread would take a CPU
            # their peer and callers need (two CPUs are common).
            opened = self._opened
            end = (waiter.poll_end(started) if not opened or len(self._idle) == len(opened)
                   else 0)
            buf = recv_buffers.buf
            result = None
            try:
                if exchange is not None:
                    try:
                        result = exchange(t.call_fd, chunk, buf, end, PREEMPTED_NS)
                    except BlockingIOError:  # non-blocking while an event loop shares it
                        pass  # nothing was sent: the Python calls wait for room
                if result is None:
                    result = exchange_slowly(t.call, self.poller.poll, t.call_fd, chunk, buf,
                                             started, end)
            except OSError as exc:  # only sending raises
                t.fail(f"sending failed: {exc.strerror or exc}")
                raise DeadRemoteObjectError(f"{t.name}: peer is gone ({exc})") from None
            n, anc, flags, seen, err = result
            if seen < 0:  # descheduled while polling (in C)
                lost_cpu(_busypoll._now_ns())
            polled = seen > 0
            if err and err not in RETRY_LATER:
                t.fail(f"receiving failed: {os.strerror(err)}")
            # If it is just the successful plain reply to this call, that is the answer;
            # otherwise deliver what came as _lead would, and lead.
            if n >= 0 and not anc and not flags & TRUNCATED:
                simple = _wire.simple_reply(buf, n)
                if simple is not None and simple[0] == seq and not simple[1]:
                    got_it = True
                    self.oneway_fenced = fence  # the peer read what was sent before it
                    if not polled:
                        waiter.waited(_busypoll._now_ns() - started)
                    return MessageParcel._received(buf, _wire.REPLY_DATA_OFFSET, n)
            call = Call()
            lock.acquire()
            self.waiters[seq] = call
            lock.release()
            if n >= 0:
                frames = t.decode(buf, n, anc, flags)
                if frames is not None:
                    self.deliver_replies(frames)
            self._lead(call, None)
        finally:
            error = ""
            lock.acquire()
            if got_it:  # counted here, in the one critical section on the way out
                t.replies_received += 1
            self.leader = False
            self.lone_seq = 0
            t.io_users -= 1
            if call is not None:
                self.waiters.pop(seq, None)
            if self.waiters:
                self.wake_a_reader_locked()  # another caller reads next
            if t.closed:
                t.close_sockets_if_idle_locked()
            lock.release()
            if got_it and self.table.deferred:
                try:
                    self.table.apply_deferred()
                except ProtocolError as exc:
                    error = exc.message
            if error:  # the reply is still good: the caller gets it, the link closes
                t.protocol_error(error)
        reply = call.reply if call is not None else None
        if reply is None:  # _lead only returns without our reply when the link died
            raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}")
        self.oneway_fenced = fence
        if not reply.status and not reply.objects:
            return MessageParcel._from_wire(reply.data, reply.fds, [])
        return reply_parcel(reply, code, call.objects)

    def transact_batch(
        self, handle: int, requests: list[tuple[int, MessageParcel]], option: MessageOption
    ) -> list[MessageParcel]:
        """Send many requests to ``handle`` in as few records as fit (see send_requests)."""
        oneway = bool(option.mode)
        deadline = (None if oneway or option.timeout is None
                    else time.monotonic() + option.timeout)  # sending is in the budget
        calls: list[tuple[int, Call, int]] = []
        lock = self.lock
        t = self.transport
        lock.acquire()
        try:
            if t.closed:
                raise t.dead()
            frames: list[tuple[bytes, list[int], int]] = []
            group = NO_GROUP if oneway else self.next_seq  # the batch's first call's seq
            plain = oneway and not any(parcel._closed or parcel._fds or parcel._objects
                                       for _code, parcel in requests)
            if plain:  # the common burst: plain one-way requests, encoded in one go
                frames = [(chunk, NO_FDS, NO_GROUP) for chunk in _wire.encode_oneway_frames(
                    handle, [(code, parcel._buf) for code, parcel in requests])]
            try:
                for code, parcel in () if plain else requests:
                    if parcel._closed:
                        raise ParcelWriteError("a data parcel of the batch is closed")
                    refs = self.table.refs_for(parcel._objects) if parcel._objects else []
                    fds = dup_for_sending(parcel._fds) if parcel._fds else []
                    if oneway:
                        seq = 0
                    else:
                        seq = self.next_seq
                        self.next_seq = seq + 1
                        call = Call()
                        self.waiters[seq] = call
                        calls.append((seq, call, code))
                    frames.append((_wire.encode_transaction(
                        seq, handle, code, oneway, parcel._buf, refs, len(fds)), fds, group))
            except BaseException:  # nothing of the batch is sent: what it made goes
                for _chunk, fds, _group in frames:
                    close_fds(fds)
                for seq, _call, _code in calls:
                    self.waiters.pop(seq, None)
                raise
            if t.gc_releases:
                t.queue_gc_releases_locked()
            t.wqueue.extend(frames)
            write = not t.writing
            if write:
                t.writing = True
                t.io_users += 1
        finally:
            lock.release()
        if oneway:
            self.oneway_sent = next(self._oneway_tickets)
        if write:
            try:
                t.flush_as_writer(deadline)  # the whole batch, coalesced into records
            except BaseException:
                lock.acquire()
                for seq, _call, _code in calls:
                    self.waiters.pop(seq, None)
                lock.release()
                raise
        if oneway:
            return []
        replies: list[MessageParcel] = []
        try:
            for seq, call, code in calls:
                reply = self._await_reply(call, seq, option.timeout)
                replies.append(reply_parcel(reply, code, call.objects))
        except BaseException:
            lock.acquire()
            for seq, _call, _code in calls:
                self.waiters.pop(seq, None)
            lock.release()
            for r in replies:
                r.close()
            raise
        return replies

    # ------------------------------------------------------------------ reading replies
    def _await_reply(self, call: Call, seq: int, timeout: float | None,
                     deadline: float | None = None) -> _wire.Reply:
        """Wait for ``call``'s reply until ``deadline`` (``timeout`` from now if not
        given), reading the call socket when nobody else does."""
        if release_holds is not None:
            release_holds()  # about to sleep: what this thread holds must be served
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        lock = self.lock
        t = self.transport
        loop = self.loop
        mine = self._thread_cond()
        while True:
            lock.acquire()
            call.cond = mine
            try:
                while True:
                    if call.reply is not None:
                        return call.reply
                    if t.closed:
                        self.waiters.pop(seq, None)
                        raise DeadRemoteObjectError(f"{t.name}: {t.close_reason}")
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        self.waiters.pop(seq, None)
                        raise IPCTimeoutError(f"no reply within {timeout} s")
                    if not self.leader:
                        # Nobody reads the call socket: this thread reads its own reply.
                        self.leader = True
                        t.io_users += 1
                        break
                    loop_reads = loop.reading()
                    if loop_reads and not self.stand_in and loop.can_not_read_locked():
                        # The event loop that reads is this very thread (blocked in this
                        # call) or has stopped: read here, delivering its replies too.
                        self.stand_in = True
                        t.io_users += 1
                        break
                    mine.wait(0.05 if remaining is None else min(remaining, 0.05)
                              if loop_reads else remaining)
            finally:
                lock.release()
            try:
                self._lead(call, deadline)
            finally:
                lock.acquire()
                if self.stand_in:
                    self.stand_in = False
                else:
                    self.leader = False
                t.io_users -= 1
                if self.waiters:
                    self.wake_a_reader_locked()  # another caller (or a loop) reads next
                if t.closed:
                    t.close_sockets_if_idle_locked()
                lock.release()

    def _lead(self, call: Call, deadline: float | None) -> None:
        """Read replies from the call socket until ours arrives, time runs out, or death."""
        buf = recv_buffers.buf
        poll = self.poller.poll
        t = self.transport
        recv_flags = RECV_FLAGS
        while call.reply is None and not t.closed:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if not poll(remaining * 1000.0):
                    continue
                recv_flags = RECV_FLAGS | DONTWAIT
            try:
                n, anc, flags, _ = t.call.recvmsg_into([buf], ANC_SPACE, recv_flags)
            except BlockingIOError:
                if deadline is None:  # non-blocking while an event loop shares it: wait
                    poll(1000.0)
                continue
            except InterruptedError:
                continue
            except OSError as exc:
                t.fail(f"receiving failed: {exc.strerror or exc}")
                return
            frames = t.decode(buf, n, anc, flags)
            if frames is None:
                return
            self.deliver_replies(frames)

    def read_one(self, buf: mmap.mmap) -> None:
        """Read one record from the call socket without waiting and deliver its replies
        (an event loop's reader: see :mod:`._asyncbridge`)."""
        t = self.transport
        try:
            n, anc, flags, _ = t.call.recvmsg_into([buf], ANC_SPACE, RECV_FLAGS | DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            t.fail(f"receiving failed: {exc.strerror or exc}")
            return
        frames = t.decode(buf, n, anc, flags)
        if frames is not None:
            self.deliver_replies(frames)

    def deliver_replies(self, frames: list[_wire.Frame]) -> None:
        """Hand the replies of one record to their waiters (the reader does this)."""
        error = ""
        handed = 0  # frames[:handed] went to their callers, or had their fds closed
        lock = self.lock
        t = self.transport
        table = self.table
        lock.acquire()
        try:
            for frame in frames:
                if frame.__class__ is not _wire.Reply:
                    error = f"unexpected {type(frame).__name__} frame on the call socket"
                    break
                reply: _wire.Reply = frame
                waiter = self.waiters.pop(reply.seq, None)
                if waiter is None and (reply.seq >= self.next_seq or reply.seq == 0):
                    error = f"reply to request {reply.seq}, which was never sent"
                    break
                t.replies_received += 1
                objects = table.resolve(reply.objects) if reply.objects else []
                if waiter is not None:
                    waiter.objects = objects
                    waiter.reply = reply
                    if waiter.awaited:
                        waiter.deliver()
                    elif waiter.cond is not None:
                        waiter.cond.notify()  # its own caller only
                else:
                    close_fds(reply.fds)  # the caller timed out and left
                handed += 1
            if table.deferred and not error:
                table.apply_deferred()
        except ProtocolError as exc:
            error = exc.message
        finally:
            lock.release()
        if error:
            # Only fds nobody owns yet: a delivered reply's fds belong to its caller.
            for frame in frames[handed:]:
                if isinstance(frame, (_wire.Reply, _wire.Transaction)) and frame.fds:
                    close_fds(frame.fds)
            t.protocol_error(error)


def _new_call(seq: int) -> Call:
    return Call()
