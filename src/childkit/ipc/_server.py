"""The server role of one connection: the peer's requests, run on work threads, answered.

The pool (:mod:`._threadpool`) calls :meth:`Server.on_readable` on a work thread when the
serve socket has a record. A plain sync request (no fds, no objects) runs right there and
its reply goes out from that thread, which then polls a moment for the next request (see
:mod:`._busypoll`); one-way requests go to their object's queue (:mod:`._oneway`); the sync
requests of one record (a batch) run in order and their replies go out coalesced. Each
extra call channel the peer opens (a CHANNEL frame, see :mod:`._channels`) is served by a
:class:`ChannelServer` of its own, sharing the main server's one-way queues and lock; the
connection's channels are served together, by whichever work thread drains their
:class:`~._channelhub.ChannelHub`.

May import: ``_busypoll``, ``_channelhub``, ``_errors``, ``_fdutil``, ``_objects``, ``_oneway``,
``_option``, ``_parcel``, ``_replies``, ``_stub``, ``_threadpool``, ``_transport``, ``_wire``.

Lock discipline
---------------
``Server.lock`` (the *server lock*, the main server's, shared by its channel servers)
guards the main server's ``polling`` (one thread polls the connection's serve sockets at
a time), ``channels`` (the channel servers) and the increments of the transport's
``replies_sent`` counter (main socket replies only), which are made before each reply is
sent. The
hello state (``greeted``, ``peer_has_root``) is written under the one-way queue lock, in
the arrival order of frames, and read after ``hello`` is set. ``last_run_ns``, ``run_started`` and
``idle_since`` are timing hints that work threads write without a lock (a stale one only
shifts a busy-poll window). Nothing here holds the server lock while taking another lock.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
from collections.abc import Callable

from childkit.ipc import _busypoll, _wire
from childkit.ipc._busypoll import PREEMPTED_NS, BusyPoll, lost_cpu
from childkit.ipc._channelhub import ChannelHub
from childkit.ipc._errors import IPCError, IPCErrorCode, ProtocolError
from childkit.ipc._fdutil import close_fds, received_fds
from childkit.ipc._objects import ObjectTable
from childkit.ipc._oneway import OnewayQueues, Request
from childkit.ipc._option import ASYNC_OPTION, SYNC_OPTION
from childkit.ipc._parcel import MessageParcel, RemoteObject
from childkit.ipc._replies import ReplyQueue
from childkit.ipc._stub import RemoteStub, StubEscaped, invoke_stub
from childkit.ipc._threadpool import IPCThreadPool
from childkit.ipc._transport import (
    NO_FDS,
    RETRY_LATER,
    SNDBUF,
    TRUNCATED,
    Outgoing,
    Record,
    Transport,
    exchange,
    exchange_slowly,
    read_record,
    received_creds,
    recv_buffers,
)

_log = logging.getLogger("childkit.ipc")
_NO_PARCELS: list[MessageParcel] = []  # shared: only ever read

# A plain request is run holding the serve socket (see serve_record) only while the one
# before it ran shorter than this: one that takes longer may well again, and others wait.
_HOLD_RUNS_NS = 100_000
_now_ns = _busypoll.now_ns  # the busy-poll rule's clock (a test may replace it there)
# (The hot path reads ``_busypoll._now_ns()`` itself: the same clock, one frame fewer.)


def _timeval(ms: int) -> bytes:
    """A ``struct timeval`` of ``ms`` milliseconds (SO_RCVTIMEO, SO_SNDTIMEO)."""
    return struct.pack("@ll", ms // 1000, ms % 1000 * 1000)


class ReplyBatch:
    """Reply frames of one record's sync requests, waiting to go out together, and the
    reply parcels that own their fds (closed once sent)."""

    __slots__ = ("chunks", "fds", "parcels", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.fds: list[int] = []
        self.parcels: list[MessageParcel] = []
        self.size = 0


class Server:
    """Reads the peer's requests from the serve socket, runs them, sends the replies."""

    def __init__(self, transport: Transport, table: ObjectTable, pool: IPCThreadPool,
                 sock: socket.socket | None = None, main: Server | None = None) -> None:
        self.transport = transport
        self.table = table
        self.pool = pool
        #: The socket served: the main serve socket, or a channel's (then ``main`` is the
        #: main socket's server, whose one-way queues, lock and poll turn are shared).
        self.sock = transport.serve if sock is None else sock
        self.fd = self.sock.fileno()
        self.main: Server = self if main is None else main
        # Only the main socket's replies count for release ordering (see _wire.Release).
        self.counts_replies = main is None
        self.lock: threading.Lock = threading.Lock() if main is None else main.lock
        # A thread polls one of the connection's serve sockets (main's, set under the lock).
        self.polling = False
        # After answering a plain request inline, a work thread polls the serve socket for
        # the next one (one thread at a time: a poll object is not reentrant).
        self.poller = select.poll()
        self.poller.register(self.fd, select.POLLIN)
        self.busy_poll = BusyPoll()
        # How long the last plain request answered inline ran (ns), and when it started.
        self.last_run_ns = 0
        self.run_started = 0
        self.idle_since = 0  # when polling for the next request gave up (ns)
        self.oneway: OnewayQueues = (OnewayQueues(transport, table, self.dispatch, self._rearm)
                                     if main is None else main.oneway)
        # Replies that found no room, never waited for.
        self.replies = ReplyQueue(transport, self.sock)
        # The peer's greeting (main's).
        self.hello = threading.Event()
        self.greeted = False
        self.peer_has_root = False
        #: Extra channels this side accepts from the peer (its HELLO says so), and the
        #: servers of those it opened (main's; under the lock).
        self.accepts = 0
        self.channels: list[Server] = []
        self.hub: ChannelHub | None = None  # made with the first channel (main's)
        #: Told how many extra channels the peer accepts, when its greeting arrives.
        self.on_greeting: Callable[[int], None] = lambda channels: None

    def _rearm(self) -> None:
        self.pool.rearm(self.transport.serve_fd)

    # ------------------------------------------------------------------ channels
    def open_channel(self, fd: int) -> None:
        """Serve the extra channel whose socket ``fd`` (owned now) a CHANNEL frame brought;
        a protocol error (the link closes) if it is not a SOCK_SEQPACKET socket or more
        channels than this side accepts."""
        t = self.transport
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            t.protocol_error("a channel frame carried an fd that is not a socket")
            return
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            sock.close()
            t.protocol_error("a channel frame carried a socket that is not AF_UNIX "
                             "SOCK_SEQPACKET")
            return
        with self.lock:
            over = len(self.channels) >= self.accepts
            if not over:
                server = ChannelServer(t, self.table, self.pool, sock, self)
                self.channels.append(server)
        if over:
            sock.close()
            t.protocol_error(f"the peer opened more than the {self.accepts} extra channels "
                             f"this side accepts")
            return
        try:
            # Read only when the hub's epoll says so; a send that finds no room (only a
            # peer that does not read its replies) gives up after 1 ms and queues.
            sock.setblocking(True)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(1))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        except OSError:
            pass
        if not t.add_channel_socket(sock):  # closed meanwhile
            sock.close()
            return
        hub = self._channel_hub()
        if hub is None:
            return
        hub.add(server.fd, server)
        if t.closed:  # closed while registering: the close may have missed it
            hub.close()

    def _channel_hub(self) -> ChannelHub | None:
        """The connection's channel hub, made now for its first channel; ``None`` once
        the link is closed (the channel's socket closes with the link's)."""
        with self.lock:
            hub = self.hub
            if hub is None:
                hub = self.hub = ChannelHub(self.transport, self.pool)
                made = True
            else:
                made = False
        if made and not self.transport.close_with_sockets(hub.close_epoll):
            hub.close_epoll()
            return None
        return hub

    def channels_serving(self) -> bool:
        """Whether a thread serves (or waits on) one of the peer's extra channels: then
        no thread busy-polls the main socket, whose spinning would take a CPU they need."""
        hub = self.hub
        return hub is not None and hub.draining > 0

    def close_channels(self) -> None:
        """The link closed: stop serving every channel (their sockets close with the
        link's, see Transport.close_sockets_if_idle_locked)."""
        with self.lock:
            servers = list(self.channels)
            hub = self.hub
        if hub is not None:
            hub.close()
        for server in servers:
            server.replies.close()

    # ------------------------------------------------------------------ reading
    def on_readable(self) -> None:
        """Pool callback: read the peer's requests and run them; after answering a plain
        sync request on this thread, poll for the next one (see :meth:`reply_and_poll`)."""
        t = self.transport
        if not t.enter_io():
            return
        try:
            record = self.read()
            while record is not None:
                reply = self.serve_record(*record)
                record = None if reply is None else self.reply_and_poll(reply)
        finally:
            t.io_done()

    def read(self) -> Record | None:
        """Read one record from the serve socket into this thread's receive buffer: its
        size, ancillary data and flags; ``None`` (re-armed) if nothing was there."""
        t = self.transport
        try:
            n, anc, flags = read_record(self.sock, recv_buffers.buf)
        except (BlockingIOError, InterruptedError):
            self.pool.rearm(self.fd)
            return None
        except OSError as exc:
            t.fail(f"receiving failed: {exc.strerror or exc}")
            return None
        return n, anc, flags

    def reply_and_poll(self, reply: Outgoing) -> Record | None:
        """Send ``reply`` (a plain sync request's answer; ``b""``: it went out already),
        then poll the serve socket for the next request for the adaptive window (see
        _busypoll), with the socket disarmed in the pool so that no other work thread
        wakes for it, and read it: in C, one call without the GIL. Returns the next record
        (the socket still disarmed: serving it re-arms), or ``None`` (the socket re-armed,
        or the link closed)."""
        t = self.transport
        pool = self.pool
        fd = self.fd
        disarmed = pool.unhold(fd)
        waiter = self.busy_poll
        started = _busypoll._now_ns()
        self.last_run_ns = started - self.run_started
        end = 0
        lock = self.lock
        main = self.main
        lock.acquire()
        if reply and self.counts_replies:
            t.replies_sent += 1  # counted before it is sent (see send_reply)
        # Only while the socket is still disarmed: once the pool re-armed it (the request
        # ran long), a work thread may be reading the next record right now, and two
        # readers could register records out of order (a sync request would miss the
        # one-way requests read just before it, see serve_record). The pool serves it.
        if (disarmed and waiter.window_ns and not t.closed and not main.polling
                and not (main.channels and main.channels_serving())):
            end = waiter.poll_end(started)
            main.polling = end != 0  # one poller per connection at a time
        lock.release()
        if not end:
            if reply:  # first: the caller waits for the reply, not for the re-arm
                self.send_reply_record(reply)
            if disarmed:
                pool.rearm(fd)
            self.idle_since = started
            return None
        buf = recv_buffers.buf
        try:
            if exchange is not None:
                n, anc, flags, seen, err = exchange(fd, reply, buf, end, PREEMPTED_NS)
                if seen < 0:  # descheduled while polling (in C)
                    lost_cpu(_busypoll._now_ns())
            else:
                n, anc, flags, seen, err = exchange_slowly(
                    self.sock, self.poller.poll, fd, reply, buf, started, end,
                    wait_for_room=False)
        except BlockingIOError:  # the peer reads slowly: wait for room, do not poll
            pool.rearm(fd)
            self.send_reply_record(reply)
            self.idle_since = started
            return None
        except OSError as exc:
            t.fail(f"sending a reply failed: {exc.strerror or exc}")
            return None
        finally:
            main.polling = False
        if n >= 0:
            if seen <= 0:  # it came after the window: adapt to how late
                waiter.waited(_busypoll._now_ns() - started)
            return n, anc, flags
        if err in RETRY_LATER:
            pool.rearm(fd)
            self.idle_since = started
        else:
            t.fail(f"receiving failed: {os.strerror(err)}")
        return None

    def serve_record(self, n: int, anc: list[tuple[int, int, bytes]], flags: int,
                     ) -> Outgoing | None:
        """Run or queue the requests of the record of ``n`` bytes in this thread's receive
        buffer. When it was one plain sync request answered on this thread, returns its
        reply for the caller to send (``b""`` when it went out already); else ``None``."""
        buf = recv_buffers.buf
        t = self.transport
        oneway = self.oneway
        if self.idle_since:
            # The last poll for a request gave up (or did not run): adapt its window to
            # how long this one took to come.
            self.busy_poll.waited(_busypoll._now_ns() - self.idle_since)
            self.idle_since = 0
        if not anc and not flags & TRUNCATED:
            simple = _wire.simple_request(buf, n)
            if simple is not None and simple[1] not in oneway.busy:
                # The common case, one plain sync request: no frame objects, no queueing,
                # run it on this thread. (No one-way requests to its object are pending:
                # reading the set without the lock is safe, since earlier records were
                # queued before this one was read.)
                # In a ping-pong of quick requests (this thread will poll for the next
                # one, and the last one took little time) the socket stays disarmed
                # while it runs, so polling afterwards needs no epoll_ctl either; the
                # pool re-arms it if it runs long (see IPCThreadPool.hold). Otherwise it
                # is re-armed now, so other threads may serve the connection meanwhile.
                now = _busypoll._now_ns()
                if self.busy_poll.window_ns and self.last_run_ns < _HOLD_RUNS_NS:
                    self.pool.hold(self.fd)
                else:
                    self.pool.rearm(self.fd)
                self.run_started = now
                data = MessageParcel._received(buf, _wire.TXN_DATA_OFFSET, n)
                return self.answer_plain(simple[0], simple[1], simple[2], data)
            run = _wire.oneway_run(buf, n)
            if run is not None:
                oneway.serve_run(*run)
                return None
        frames = t.decode(buf, n, anc, flags)
        if frames is None:
            return None
        if not self.greeted and anc:
            creds = received_creds(anc)
            if creds is not None:
                t.peer_pid, t.peer_uid = creds
        if len(frames) == 1:
            frame = frames[0]
            if (frame.__class__ is _wire.Transaction and not frame.oneway
                    and not frame.objects
                    and frame.handle not in oneway.busy):
                # One sync request with fds: run it on this thread, as above.
                self.pool.rearm(self.fd)
                self.dispatch(frame, [])
                return b""
        sync: list[Request] = []
        drain: list[int] = []
        opened: list[int] = []  # the fds of CHANNEL frames: new channels to serve
        error = ""
        table = self.table
        with oneway.lock:
            for i, frame in enumerate(frames):
                try:
                    if isinstance(frame, _wire.Transaction):
                        # Objects are resolved now, in arrival order, before the socket is
                        # re-armed: a later release cannot drop them first.
                        item = (frame, table.resolve(frame.objects) if frame.objects else [])
                        # Requests to one object keep their order while one-way requests
                        # to it are pending: a sync request then waits in the same queue.
                        if oneway.closed:
                            close_fds(frame.fds)  # the link closed: nobody runs it
                        elif frame.oneway or frame.handle in oneway.busy:
                            oneway.enqueue_locked(frame.handle, item, 1)
                            if frame.handle not in oneway.busy:
                                oneway.busy.add(frame.handle)
                                drain.append(frame.handle)
                        else:
                            sync.append(item)
                    elif isinstance(frame, _wire.Release):
                        table.apply_release(frame)
                    elif isinstance(frame, _wire.Hello):
                        if self.greeted:
                            raise ProtocolError("second hello from the peer")
                        self.greeted = True
                        self.peer_has_root = frame.has_root
                        self.on_greeting(frame.channels)
                        self.hello.set()
                        try:  # credentials were for the greeting; stop paying for them
                            t.serve.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
                        except OSError:
                            pass
                    elif isinstance(frame, _wire.Channel):
                        opened.extend(frame.fds)
                    else:
                        raise ProtocolError("a reply arrived on the serve socket")
                except ProtocolError as exc:
                    error = exc.message
                    for rest in frames[i:]:
                        if isinstance(rest, (_wire.Transaction, _wire.Reply, _wire.Channel)):
                            close_fds(rest.fds)
                    break
            # Backpressure: while a one-way queue that another thread drains is too long,
            # stop reading the socket, so that the sender blocks instead of memory growing.
            if not error:
                oneway.wait_while_congested_locked(
                    {f.handle for f in frames
                     if isinstance(f, _wire.Transaction) and f.oneway} - set(drain), drain)
        if error:
            close_fds([fd for f, _objs in sync for fd in f.fds] + opened)
            t.protocol_error(error)
            return None
        for fd in opened:
            self.open_channel(fd)
        self.pool.rearm(self.fd)
        try:
            if len(sync) > 1:
                self.run_batch(sync)
            elif sync:
                self.dispatch(*sync[0])
        finally:  # even when a stub raised SystemExit: the queues this thread owns drain
            for handle in drain:
                oneway.drain(handle)
        return None

    # ------------------------------------------------------------------ answering
    def dispatch(self, frame: _wire.Transaction, objects: list[RemoteObject]) -> None:
        """Run one request read from the peer and send its reply (unless one-way)."""
        self.answer(frame.seq, frame.handle, frame.code, frame.oneway,
                    MessageParcel._from_wire(frame.data, frame.fds, objects))

    def answer(self, seq: int, handle: int, code: int, oneway: bool,
               data: MessageParcel, batch: ReplyBatch | None = None) -> None:
        """Run one request on the exported object ``handle`` and send its reply (unless
        one-way), or add it to ``batch``. Takes ownership of ``data``."""
        stub = self.table.stub(handle)
        if stub is None:
            data.close()
            if not oneway:
                self.reply(_wire.encode_error_reply(
                    seq, IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT,
                    f"no object with handle {handle} (released or never exported)"), [],
                    None, batch)
            return
        t = self.transport
        try:
            status, detail, reply = invoke_stub(
                stub, code, data, ASYNC_OPTION if oneway else SYNC_OPTION, t.peer_pid,
                t.peer_uid, local=False,
            )
        except StubEscaped as esc:
            data.close()
            if not oneway:  # answered first: the exception then goes on
                self.reply(_wire.encode_error_reply(seq, esc.status, esc.detail), [], None,
                           batch)
            raise esc.exc from None
        data.close()
        if oneway:
            reply.close()
            return
        if status:
            reply.close()
            self.reply(_wire.encode_error_reply(seq, status, detail), [], None, batch)
            return
        self.reply_with(seq, reply, batch)

    def reply_with(self, seq: int, reply: MessageParcel, batch: ReplyBatch | None) -> None:
        """Send ``reply`` (a stub's successful reply, with any fds and objects) as the
        answer to request ``seq``, or add it to ``batch``; it is closed once sent."""
        fds = reply._fds
        try:
            refs = self.table.refs_for(reply._objects) if reply._objects else []
            chunk = _wire.encode_reply(seq, 0, reply._buf, refs, len(fds))
        except IPCError as exc:  # an object that cannot be sent: the caller learns why
            chunk = _wire.encode_error_reply(seq, exc.code, exc.message)
            fds = []
        self.reply(chunk, fds, reply, batch)

    def answer_plain(self, seq: int, handle: int, code: int, parcel: MessageParcel,
                     ) -> Outgoing:
        """:meth:`answer` for the hot path, one plain sync request (no fds, no objects)
        read into ``parcel`` (closed here): the same steps, with what cannot happen to
        such a request left out. Returns the reply record for the caller to send (a
        large one as ``(head, data)``, see _wire.GATHER_BYTES), or ``b""`` if it went out
        already (a reply with fds or objects)."""
        entry = self.table.exports.get(handle)
        if entry is None:
            parcel.close()
            return _wire.encode_error_reply(
                seq, IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT,
                f"no object with handle {handle} (released or never exported)")
        t = self.transport
        stub: RemoteStub = entry[0]  # type: ignore[assignment]
        try:
            status, detail, reply = invoke_stub(
                stub, code, parcel, SYNC_OPTION, t.peer_pid, t.peer_uid, local=False)
        except StubEscaped as esc:
            # Answered first, the socket given back to the pool; the exception then goes on.
            if self.pool.unhold(self.fd):
                self.pool.rearm(self.fd)
            self.send_reply(_wire.encode_error_reply(seq, esc.status, esc.detail), [])
            raise esc.exc from None
        if parcel._owner is None:
            parcel._closed = True  # close(): it holds no fds, objects or finalizer
        else:
            parcel.close()  # gives its receive buffer back
        if status:
            reply.close()
            return _wire.encode_error_reply(seq, status, detail)
        if reply._fds or reply._objects:
            self.reply_with(seq, reply, None)
            return b""
        out = reply._buf
        reply._closed = True  # close(): it holds no fds, objects or finalizer
        if len(out) < _wire.GATHER_BYTES:
            return _wire.encode_reply(seq, 0, out, (), 0)
        return _wire.reply_head(seq, len(out)), out  # sent gathered: no copy behind the head

    def reply(self, chunk: bytes, fds: list[int], parcel: MessageParcel | None,
              batch: ReplyBatch | None) -> None:
        """Send one reply frame now, or add it to ``batch``; ``parcel`` (which owns
        ``fds``) is closed once the frame is sent."""
        if batch is None:
            self.send_reply(chunk, fds, parcel)
            return
        if batch.chunks and (batch.size + len(chunk) > _wire.MAX_RECORD_BYTES
                             or len(batch.fds) + len(fds) > _wire.MAX_RECORD_FDS):
            self.send_batch(batch)
        batch.chunks.append(chunk)
        batch.fds.extend(fds)
        batch.size += len(chunk)
        if parcel is not None:
            batch.parcels.append(parcel)

    def run_batch(self, items: list[Request]) -> None:
        """Run the sync requests of one record (a ``send_requests`` batch) in order on this
        thread and send their replies coalesced, in as few records as fit: no thread hand-off
        and no write per request."""
        batch = ReplyBatch()
        escaped: BaseException | None = None
        try:
            for frame, objects in items:
                if escaped is not None:  # every request gets an answer, even now
                    close_fds(frame.fds)
                    self.reply(_wire.encode_error_reply(
                        frame.seq, IPCErrorCode.OH_IPC_INNER_ERROR,
                        f"not run: an earlier request of its batch raised "
                        f"{type(escaped).__name__}"), [], None, batch)
                    continue
                try:
                    self.answer(frame.seq, frame.handle, frame.code, False,
                                MessageParcel._from_wire(frame.data, frame.fds, objects), batch)
                except Exception as exc:  # a bug here must not leave the rest unanswered
                    _log.exception("%s: request %d of a batch failed", self.transport.name,
                                   frame.code)
                    self.reply(_wire.encode_error_reply(
                        frame.seq, IPCErrorCode.OH_IPC_INNER_ERROR,
                        f"serving the request failed: {exc}"), [], None, batch)
                except BaseException as exc:  # answered by answer(); goes on after the rest
                    escaped = exc
        finally:
            if batch.chunks:
                self.send_batch(batch)
        if escaped is not None:
            raise escaped

    def send_batch(self, batch: ReplyBatch) -> None:
        chunks, fds, parcels = batch.chunks, batch.fds, batch.parcels
        batch.chunks, batch.fds, batch.parcels, batch.size = [], [], [], 0
        t = self.transport
        if t.closed:
            for parcel in parcels:
                parcel.close()
            return
        if self.counts_replies:
            lock = self.lock
            lock.acquire()
            t.replies_sent += len(chunks)  # counted before they go (see send_reply)
            lock.release()
        self.replies.send(b"".join(chunks), fds, parcels)  # closes the parcels once sent

    def send_reply(self, chunk: bytes, fds: list[int], parcel: MessageParcel | None = None,
                   ) -> None:
        """Send one reply frame (``parcel``, which owns ``fds``, is closed once it went
        out); it waits in :attr:`replies` if the peer has no room for it now."""
        t = self.transport
        if t.closed:
            if parcel is not None:
                parcel.close()
            return
        # Counted before it is sent, so that any release computed after it went out carries
        # a count that includes it: replies may finish sending in another order than they
        # started, and a count of finished ones could miss this one (see _wire.Release).
        if self.counts_replies:
            lock = self.lock
            lock.acquire()
            t.replies_sent += 1
            lock.release()
        self.replies.send(chunk, fds, _NO_PARCELS if parcel is None else [parcel])

    def send_reply_record(self, chunk: Outgoing) -> None:
        """Send a reply record without fds (already counted in ``replies_sent``); it waits
        in :attr:`replies` if the peer has no room for it now (a work thread never waits)."""
        self.replies.send(chunk, NO_FDS, _NO_PARCELS)  # a (head, data) pair: gathered


class ChannelServer(Server):
    """The server of one extra channel the peer opened: each record is one plain sync
    request (no fds, no objects), run on the thread that read it; anything else closes
    the link. Its replies do not count for release ordering (``ObjectTable.apply_release``
    orders releases after the channel replies in flight instead).

    A channel carries one call at a time; the connection's :class:`ChannelHub` reads
    its requests, on the thread that drains the hub, and calls :meth:`serve_record`."""

    def serve_record(self, n: int, anc: list[tuple[int, int, bytes]], flags: int,
                     ) -> Outgoing | None:
        buf = recv_buffers.buf
        t = self.transport
        simple = (_wire.simple_request(buf, n) if not anc and not flags & TRUNCATED
                  else None)
        if simple is None:
            if n == 0 and not anc and not flags & TRUNCATED:
                t.fail("the peer closed the connection")
            else:
                close_fds(received_fds(anc) if anc else [])
                t.protocol_error("a channel carries one plain sync request per record")
            return None
        seq, handle, code = simple
        oneway = self.oneway
        if handle in oneway.busy:
            # One-way requests to its object are pending: it runs after them, in their
            # queue, answered on this channel.
            frame = _wire.Transaction(seq, handle, code, False,
                                      bytes(buf[_wire.TXN_DATA_OFFSET:n]), [], [])
            with oneway.lock:
                queued = not oneway.closed and handle in oneway.busy
                if queued:
                    oneway.enqueue_locked(handle, (frame, [], self.dispatch), 1)
            if not queued and not oneway.closed:
                self.dispatch(frame, [])  # drained meanwhile: run it here
            return None
        data = MessageParcel._received(buf, _wire.TXN_DATA_OFFSET, n)
        return self.answer_plain(seq, handle, code, data)
