"""Extra call channels (#16): concurrent callers on one connection each read their own
socket; what a channel may carry, how many a side accepts, and everything the single call
socket promised (order, releases, timeouts, fds, death, limits, no leaks) still holds."""

from __future__ import annotations

import array
import gc
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import peer_main as pm
import pytest
from ipc_helpers import Peer, fd_count, non_pool_threads, wait_until
from test_connection import int_parcel

from childkit.ipc import (
    Connection,
    DeadRemoteObjectError,
    IPCError,
    IPCErrorCode,
    IPCTimeoutError,
    MessageOption,
    MessageParcel,
    ParamError,
    RemoteObject,
    RemoteStub,
    RequestMode,
    _threadpool,
    _wire,
    channel_socketpairs,
)
from childkit.ipc._caller import Caller
from childkit.ipc._threadpool import IPCThreadPool

ASYNC = MessageOption(RequestMode.ASYNC)
MEET, ADD_ONE, RECORD, GET_RECORDED, GIVE_FD, ECHO_OBJECT, HOLD, KEEP, GIVE_BACK, ECHO = range(
    1, 11)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    fds = fd_count()
    threads = non_pool_threads()
    yield
    gc.collect()
    assert wait_until(lambda: fd_count() <= fds), f"fds leaked: {fds} -> {fd_count()}"
    assert wait_until(lambda: non_pool_threads() <= threads), "threads leaked"


class Meeting(RemoteStub):
    """MEET: waits until ``size`` requests are inside at once (so that many calls are in
    flight together), then adds one; the others: see their names."""

    def __init__(self, size: int = 2) -> None:
        super().__init__("t.Meeting")
        self.barrier = threading.Barrier(size, timeout=60)
        self.recorded: list[int] = []
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.kept: list[RemoteObject] = []

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == MEET:
            self.barrier.wait()
            reply.write_int32(data.read_int32() + 1)
        elif code == ADD_ONE:
            reply.write_int32(data.read_int32() + 1)
        elif code == RECORD:
            self.recorded.append(data.read_int32())
        elif code == GET_RECORDED:
            reply.write_int32(len(self.recorded))
        elif code == GIVE_FD:
            r, w = os.pipe()
            os.write(w, b"fd!")
            os.close(w)
            reply.write_file_descriptor(r)
            os.close(r)
        elif code == ECHO_OBJECT:
            reply.write_remote_object(data.read_remote_object())
        elif code == ECHO:
            reply.write_buffer(data.read_buffer())
        elif code == KEEP:
            self.kept.append(data.read_remote_object())
        elif code == GIVE_BACK:  # the object goes back home; this side forgets it
            reply.write_remote_object(self.kept.pop())
        elif code == HOLD:
            self.holding.set()
            assert self.hold.wait(60)
            reply.write_int32(0)
        return 0


@contextmanager
def linked(stub: RemoteStub, *, caller_accepts: int = _wire.MAX_CHANNELS,
           server_accepts: int = _wire.MAX_CHANNELS, threads: int = 40,
           ) -> Iterator[tuple[Connection, Connection, IPCThreadPool]]:
    """A caller connection ``a`` and a server ``b`` (own pool of ``threads`` threads, by
    default room for a meeting of every channel) in this process."""
    pool = IPCThreadPool(threads, name="ipc-work-test")
    local, remote = channel_socketpairs()
    a = Connection(*local, name="A", channels=caller_accepts)
    b = Connection(*remote, local_root=stub, name="B", pool=pool, channels=server_accepts)
    a.start()
    b.start()
    try:
        assert a.wait_peer_hello(10) is True
        assert b.wait_peer_hello(10) is False
        yield a, b, pool
    finally:
        a.close()
        b.close()
        assert wait_until(lambda: pool.close_if_unused(10))


def together(count: int, call: Callable[[int], object]) -> list[object]:
    """Run ``call(i)`` on ``count`` threads at once; their results, or the exceptions."""
    results: list[object] = [None] * count

    def run(i: int) -> None:
        try:
            results[i] = call(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    return results


def int_call(conn: Connection, code: int, value: int) -> int:
    with int_parcel(value) as data, conn.root_proxy().send_request(code, data) as reply:
        return reply.read_int32()


# ---------------------------------------------------------------------------- negotiation
def test_concurrent_callers_get_channels_of_their_own() -> None:
    stub = Meeting(4)
    with linked(stub) as (a, b, _pool):
        assert together(4, lambda i: int_call(a, MEET, i)) == [1, 2, 3, 4]
        # The first caller had the main socket, the three others a channel each (or the
        # first found the main socket busy writing a CHANNEL frame, and took one too).
        opened = list(a._caller.channels.all)
        assert len(opened) in (3, 4)
        assert len(b._server.channels) == len(opened)
        assert a.outstanding_calls() == 0
        # Idle channels are reused, not opened again (at most one more, as above).
        stub.barrier = threading.Barrier(4, timeout=60)
        assert together(4, lambda i: int_call(a, MEET, i)) == [1, 2, 3, 4]
        assert a._caller.channels.all[:len(opened)] == opened
        assert len(a._caller.channels.all) <= 4


def test_as_many_channels_as_the_peer_accepts_and_no_more() -> None:
    # The edge on the opening side: the peer accepts 2, five calls are in the stub at
    # once (started one after the other: calls on the main socket that one write
    # coalesced would run in order, one thread, and could not meet). The others share
    # the main socket, as without channels.
    stub = Meeting()
    with linked(stub, server_accepts=2) as (a, b, _pool):
        def hold(_i: int) -> int:
            return int_call(a, HOLD, 0)

        original = stub.holding
        callers = []
        for i in range(5):
            stub.holding = threading.Event()
            callers.append(threading.Thread(target=hold, args=(i,)))
            callers[-1].start()
            assert stub.holding.wait(60)  # this one is in the stub: start the next
        try:
            assert a._caller.channels.limit == 2
            assert len(a._caller.channels.all) == 2 and len(b._server.channels) == 2
        finally:
            stub.hold.set()
            for t in callers:
                t.join(60)
        stub.holding = original
        assert a.outstanding_calls() == 0


def test_every_channel_a_side_accepts_is_served() -> None:
    # The edge on the accepting side: the most channels there are (MAX_CHANNELS), each
    # carrying one of the calls that meet.
    n = _wire.MAX_CHANNELS + 1
    with linked(Meeting(n)) as (a, b, _pool):
        assert together(n, lambda i: int_call(a, MEET, i)) == list(range(1, n + 1))
        assert len(b._server.channels) == _wire.MAX_CHANNELS


def test_while_calls_wait_on_channels_a_new_call_takes_one_too() -> None:
    with linked(Meeting()) as (a, _b, _pool):
        channels = a._caller.channels
        assert int_call(a, ADD_ONE, 1) == 2
        assert not channels.all  # alone: the main socket
        first = channels.take()  # as a call in flight on a channel
        assert first is not None
        try:
            assert int_call(a, ADD_ONE, 2) == 3  # the main socket is free, yet:
            assert len(channels.all) == 2 and len(channels.free) == 1
        finally:
            channels.give_back(first)
        assert int_call(a, ADD_ONE, 3) == 4  # alone again: the main socket
        assert len(channels.all) == 2 and a.outstanding_calls() == 0


@pytest.mark.parametrize("fails", ["socketpair", "sending its end"])
def test_a_channel_that_cannot_be_opened_leaves_the_call_on_the_main_socket(
        fails: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from childkit.ipc import _channels, _transport

    stub = Meeting()
    with linked(stub) as (a, _b, _pool):
        holder = threading.Thread(target=lambda: int_call(a, HOLD, 0))
        holder.start()
        try:
            assert stub.holding.wait(60)
            with monkeypatch.context() as patch:
                def out_of_fds(*_args: object) -> object:
                    if fails == "socketpair":
                        raise OSError(24, "Too many open files")
                    raise IPCError(IPCErrorCode.OH_IPC_INNER_ERROR, "out of file descriptors")

                if fails == "socketpair":
                    patch.setattr(_channels.socket, "socketpair", out_of_fds)
                else:
                    patch.setattr(_transport, "dup_for_sending", out_of_fds)
                assert int_call(a, ADD_ONE, 1) == 2  # on the main socket, behind the holder
            assert not a._caller.channels.all and not a.closed
        finally:
            stub.hold.set()
            holder.join(60)
        assert int_call(a, ADD_ONE, 1) == 2


def test_a_peer_that_accepts_no_channel_keeps_one_socket() -> None:
    # As the C kit: its HELLO says 0. Concurrent callers share the main socket (no meeting
    # here: requests that one write coalesced into a record run in order, on one thread).
    with linked(Meeting(), server_accepts=0) as (a, b, _pool):
        assert together(4, lambda i: [int_call(a, ADD_ONE, n) for n in range(100)]) == [
            list(range(1, 101))] * 4
        assert a._caller.channels.limit == 0 and not a._caller.channels.all
        assert not b._server.channels


@pytest.mark.parametrize("bad", [-1, _wire.MAX_CHANNELS + 1, True, 1.0, "2", None])
def test_the_channel_count_is_checked(bad: object) -> None:
    local, remote = channel_socketpairs()
    try:
        with pytest.raises(ParamError) as err:
            Connection(*local, channels=bad)  # type: ignore[arg-type]
        assert err.value.code == IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR
        assert "channels" in err.value.message
    finally:
        for sock in (*local, *remote):
            sock.close()


# ---------------------------------------------------------------------------- preserved
def test_a_threads_one_way_requests_run_before_its_next_sync_call() -> None:
    # Another caller holds the main socket, so a plain call would take a channel; this
    # thread sent one-way requests first, so its sync call goes after them, on the main
    # socket, and sees them all.
    stub = Meeting()
    with linked(stub) as (a, _b, _pool):
        proxy = a.root_proxy()
        holder = threading.Thread(target=lambda: int_call(a, HOLD, 0))
        holder.start()
        try:
            assert stub.holding.wait(60)
            for i in range(200):
                with int_parcel(i) as data:
                    proxy.send_request(RECORD, data, ASYNC)
            assert int_call(a, GET_RECORDED, 0) == 200
            assert not a._caller.channels.all  # it did not take a channel
            # Its next plain call may: its one-way requests were read before.
            assert int_call(a, ADD_ONE, 1) == 2
            assert len(a._caller.channels.all) == 1
        finally:
            stub.hold.set()
            holder.join(60)


def test_fds_and_objects_travel_while_channels_are_in_use() -> None:
    stub = Meeting(3)
    home = Meeting()  # an object of A's, sent to B and back (B's reply names it)
    with linked(stub) as (a, _b, _pool):
        proxy = a.root_proxy()

        def call(i: int) -> object:
            if i == 0:
                return int_call(a, MEET, 0)
            if i == 1:  # a reply with an fd, on a channel
                with int_parcel(0) as data:
                    stub.barrier.wait()
                    with proxy.send_request(GIVE_FD, data) as reply:
                        fd = reply.read_file_descriptor()
                try:
                    return os.read(fd, 10)
                finally:
                    os.close(fd)
            stub.barrier.wait()
            with MessageParcel() as data:  # a request with an object: the main socket
                data.write_remote_object(home)
                with proxy.send_request(ECHO_OBJECT, data) as reply:
                    return reply.read_remote_object() is home

        assert together(3, call) == [1, b"fd!", True]


def test_replies_naming_objects_on_channels_keep_releases_in_order() -> None:
    # B's replies on channels (to plain requests) name A's own object, sent back; B's
    # proxy to it is collected once the reply went out, and its release travels on B's
    # main call socket, which may overtake the reply. A applies no release before the
    # channel replies in flight when it was read: no reply ever names an object A has
    # forgotten (that would be a protocol error, and the link would close).
    home = Meeting()
    with linked(Meeting()) as (a, b, _pool):
        proxy = a.root_proxy()

        def rounds(_i: int) -> int:
            for _ in range(150):
                with MessageParcel() as data:
                    data.write_remote_object(home)  # with an object: the main socket
                    proxy.send_request(KEEP, data).close()
                with MessageParcel() as data, proxy.send_request(GIVE_BACK, data) as reply:
                    assert reply.read_remote_object() is home
            return 0

        assert together(6, rounds) == [0] * 6
        assert not a.closed and not b.closed, a.close_reason or b.close_reason
        assert len(a._caller.channels.all) >= 1


def test_a_release_waits_for_the_channel_calls_in_flight() -> None:
    # Unit-level: a release read while a channel call is in flight waits for it.
    with linked(Meeting()) as (a, _b, _pool):
        table = a._table
        channels = a._caller.channels
        with table.lock:
            handle = table._export_locked(Meeting())  # exported once to the peer
        channel = channels.take()
        assert channel is not None
        try:
            channel.busy = 7  # a call in flight
            table.apply_release(_wire.Release(handle, 1, 0))
            assert handle in table.exports and len(table.deferred) == 1
            channel.busy = 0  # its reply was read
            table.apply_deferred()
            assert handle not in table.exports and not table.deferred
        finally:
            channels.give_back(channel)


def test_timed_calls_and_batches_go_on_the_main_socket_beside_channels() -> None:
    stub = Meeting()
    with linked(stub) as (a, _b, _pool):
        proxy = a.root_proxy()
        holder = threading.Thread(target=lambda: int_call(a, HOLD, 0))
        holder.start()
        try:
            assert stub.holding.wait(60)
            with int_parcel(1) as data, proxy.send_request(
                    ADD_ONE, data, MessageOption(timeout=30)) as reply:
                assert reply.read_int32() == 2
            replies = proxy.send_requests([(ADD_ONE, int_parcel(1)), (ADD_ONE, int_parcel(2))])
            assert [r.read_int32() for r in replies] == [2, 3]
            for r in replies:
                r.close()
            assert not a._caller.channels.all
            with pytest.raises(IPCTimeoutError), int_parcel(0) as data:
                proxy.send_request(HOLD, data, MessageOption(timeout=0.2))
        finally:
            stub.hold.set()
            holder.join(60)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_small_work_thread_limit_still_serves_every_channel(threads: int) -> None:
    # The peer's threads stay with a channel only while another one is idle, so even one
    # work thread serves the main socket and every channel in turn.
    with linked(Meeting(), threads=threads) as (a, b, pool):
        assert together(8, lambda i: sum(int_call(a, ADD_ONE, i) for _ in range(50))) == [
            (i + 1) * 50 for i in range(8)]
        assert pool.thread_count <= threads
        assert len(b._server.channels) >= 1


def test_closing_wakes_the_callers_on_channels_and_closes_every_channel() -> None:
    stub = Meeting(100)  # never meets: every call waits until the close
    with linked(stub) as (a, b, _pool):
        ours = a._caller.channels
        go = threading.Thread(target=lambda: wait_until(lambda: stub.barrier.n_waiting == 4)
                              and a.close())  # when every call is inside the stub
        go.start()
        results = together(4, lambda i: int_call(a, MEET, i))
        go.join(60)
        assert all(isinstance(r, DeadRemoteObjectError) for r in results), results
        assert all(ch.sock.fileno() == -1 for ch in ours.all)
        stub.barrier.abort()  # B's work threads leave the stub
        b.close()
        assert wait_until(lambda: all(s.fileno() == -1 for s in b._transport.channel_socks))
        assert len(b._transport.channel_socks) == 3


def test_a_peer_process_dying_fails_the_calls_on_every_channel() -> None:
    peer = Peer()
    try:
        died = threading.Event()
        peer.proxy.add_death_recipient(died.set)

        def call(i: int) -> object:
            with int_parcel(0) as data:
                return peer.proxy.send_request(pm.BLOCK, data)

        killer = threading.Thread(
            target=lambda: wait_until(lambda: len(peer.conn._caller.channels.all) == 3)
            and peer.proc.kill())
        killer.start()
        results = together(4, call)
        killer.join(60)
        assert all(isinstance(r, DeadRemoteObjectError) for r in results), results
        assert died.wait(30)
        assert peer.conn.closed
    finally:
        peer.close()


def test_a_python_peer_process_serves_channels() -> None:
    peer = Peer()
    try:
        def calls(i: int) -> int:
            total = 0
            for _ in range(200):
                with int_parcel(i) as data, peer.proxy.send_request(pm.ADD_ONE, data) as r:
                    total += r.read_int32()
            return total

        assert together(6, calls) == [(i + 1) * 200 for i in range(6)]
        assert peer.conn.outstanding_calls() == 0
    finally:
        peer.close()


def test_awaited_calls_and_threads_on_channels_share_a_connection() -> None:
    import asyncio

    from childkit import aio

    with linked(Meeting()) as (a, _b, _pool):
        proxy = a.root_proxy()

        async def awaited() -> list[int]:
            async def one(i: int) -> int:
                with int_parcel(i) as data:
                    reply = await aio.send_request(proxy, ADD_ONE, data)
                with reply:
                    return reply.read_int32()
            return list(await asyncio.gather(*(one(i) for i in range(300))))

        def calls(i: int) -> object:
            if i == 0:
                return asyncio.run(awaited())
            return [int_call(a, ADD_ONE, n) for n in range(300)]

        assert together(4, calls) == [[n + 1 for n in range(300)]] * 4
        assert a.outstanding_calls() == 0


# ---------------------------------------------------------------------------- hostile
def _send_channel(sock: socket.socket, fds: list[int], frame: bytes | None = None) -> None:
    sock.sendmsg([frame or _wire.encode_channel()],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])


@contextmanager
def raw_peer(accepts: int = 2, peer_accepts: int = 0,
             ) -> Iterator[tuple[Connection, socket.socket, socket.socket]]:
    """A connection serving ``Meeting`` (accepting ``accepts`` channels) to a peer that is
    two bare sockets, greeted (saying it accepts ``peer_accepts``)."""
    local, remote = channel_socketpairs()
    conn = Connection(*local, local_root=Meeting(), name="raw link", channels=accepts)
    conn.start()
    peer_call, peer_serve = remote
    for sock in remote:
        sock.settimeout(30)
    peer_call.send(_wire.encode_hello(False, peer_accepts))
    assert conn.wait_peer_hello(10) is False
    try:
        yield conn, peer_call, peer_serve
    finally:
        conn.close()
        peer_call.close()
        peer_serve.close()


def _ask(channel: socket.socket, seq: int, value: int) -> int:
    with int_parcel(value) as data:
        channel.send(_wire.encode_transaction(seq, 0, ADD_ONE, False, data._buf, [], 0))
    (reply,) = _wire.decode_record(channel.recv(_wire.MAX_RECORD_BYTES), [])
    assert isinstance(reply, _wire.Reply) and reply.seq == seq and not reply.status
    return int.from_bytes(reply.data[1:5], "little")


def _closed_for(conn: Connection, words: str, caplog: pytest.LogCaptureFixture) -> None:
    assert wait_until(lambda: conn.closed)
    assert words in conn.close_reason, conn.close_reason
    assert any(words in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_a_peer_may_open_as_many_channels_as_accepted_not_one_more(
        caplog: pytest.LogCaptureFixture) -> None:
    with raw_peer(accepts=2) as (conn, peer_call, _peer_serve):
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(3)]
        try:
            for mine, theirs in pairs[:2]:
                _send_channel(peer_call, [theirs.fileno()])
                theirs.close()
                mine.settimeout(30)
            # Both are served, each with its own sequence numbers.
            assert _ask(pairs[0][0], 1, 41) == 42
            assert _ask(pairs[1][0], 1, 9) == 10
            assert _ask(pairs[0][0], 2, 1) == 2
            with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
                _send_channel(peer_call, [pairs[2][1].fileno()])
                pairs[2][1].close()
                _closed_for(conn, "more than the 2 extra channels", caplog)
            # Its end was closed (the peer's end reads EOF), as were the accepted ones'.
            for mine, _theirs in pairs:
                mine.settimeout(30)
                assert mine.recv(100) == b""
        finally:
            for mine, theirs in pairs:
                mine.close()
                theirs.close()


def test_a_side_that_accepts_no_channel_refuses_one(caplog: pytest.LogCaptureFixture) -> None:
    with raw_peer(accepts=0) as (conn, peer_call, _peer_serve):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with mine, theirs, caplog.at_level(logging.WARNING, logger="childkit.ipc"):
            _send_channel(peer_call, [theirs.fileno()])
            _closed_for(conn, "more than the 0 extra channels", caplog)


@pytest.mark.parametrize("kind", ["pipe", "stream socket", "datagram socket"])
def test_a_channel_fd_that_is_not_a_seqpacket_socket_is_refused(
        kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with raw_peer() as (conn, peer_call, _peer_serve):
        if kind == "pipe":
            r, w = os.pipe()
            ends = [r, w]
        else:
            pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM if kind == "stream socket"
                                     else socket.SOCK_DGRAM)
            ends = [s.detach() for s in pair]
        try:
            with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
                _send_channel(peer_call, [ends[0]])
                _closed_for(conn, "not a socket" if kind == "pipe" else "not AF_UNIX SOCK_SEQ",
                            caplog)
        finally:
            for fd in ends:
                os.close(fd)


@pytest.mark.parametrize("record", ["one-way", "two requests", "hello", "reply", "fd",
                                    "garbage"])
def test_a_channel_carries_one_plain_sync_request_per_record(
        record: str, caplog: pytest.LogCaptureFixture) -> None:
    with raw_peer() as (conn, peer_call, _peer_serve):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with mine, theirs:
            _send_channel(peer_call, [theirs.fileno()])
            mine.settimeout(30)
            assert _ask(mine, 1, 1) == 2
            plain = _wire.encode_transaction(2, 0, ADD_ONE, False, b"\x03\x01\0\0\0", [], 0)
            with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
                if record == "one-way":
                    mine.send(_wire.encode_transaction(0, 0, RECORD, True, b"\x03\1\0\0\0", [],
                                                       0))
                elif record == "two requests":
                    mine.send(plain + plain)
                elif record == "hello":
                    mine.send(_wire.encode_hello(False))
                elif record == "reply":
                    mine.send(_wire.encode_reply(1, 0, b"", [], 0))
                elif record == "fd":
                    r, w = os.pipe()
                    mine.sendmsg([_wire.encode_transaction(2, 0, ADD_ONE, False, b"", [], 1)],
                                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   array.array("i", [r]).tobytes())])
                    os.close(r)
                    os.close(w)
                else:
                    mine.send(b"\xff" * 30)
                _closed_for(conn, "a channel carries one plain sync request per record",
                            caplog)


def test_a_peer_that_reads_no_reply_on_a_channel_is_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    # A channel carries one call at a time; a peer that pipelines requests on one and
    # never reads the replies fills it: the replies wait in the bounded queue (no work
    # thread waits for the peer) and the link closes past its bound, as on the main socket.
    from childkit.ipc import _replies

    with raw_peer() as (conn, peer_call, _peer_serve):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with mine, theirs, caplog.at_level(logging.WARNING, logger="childkit.ipc"):
            _send_channel(peer_call, [theirs.fileno()])
            mine.settimeout(30)
            payload = bytes(60_000)
            with MessageParcel() as data:
                data.write_buffer(payload)
                request = _wire.encode_transaction(1, 0, ECHO, False, data._buf, [], 0)
            try:
                for _ in range(_replies.MAX_PENDING_REPLIES * 2):
                    mine.send(request)
                    if conn.closed:
                        break
            except OSError:
                pass  # closed while sending
            _closed_for(conn, "does not read its replies", caplog)


def test_a_peer_closing_a_channel_is_its_death() -> None:
    with raw_peer() as (conn, peer_call, _peer_serve):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            _send_channel(peer_call, [theirs.fileno()])
            mine.settimeout(30)
            assert _ask(mine, 1, 1) == 2
            mine.close()
            assert wait_until(lambda: conn.closed)
            assert "the peer closed the connection" in conn.close_reason


@pytest.mark.parametrize("answer", ["wrong seq", "two replies", "a request", "end"])
def test_the_caller_checks_what_comes_back_on_its_channel(
        answer: str, caplog: pytest.LogCaptureFixture) -> None:
    # This side calls a raw peer that accepts channels: one call holds the main socket
    # (never answered), the next opens a channel, and the peer answers it wrongly.
    with raw_peer(peer_accepts=3) as (conn, _peer_call, peer_serve):
        proxy = conn.root_proxy()
        errors: list[BaseException] = []

        def call() -> None:
            try:
                with int_parcel(1) as data:
                    proxy.send_request(ADD_ONE, data).close()
            except BaseException as exc:
                errors.append(exc)

        first = threading.Thread(target=call)
        first.start()
        got = peer_serve.recv(_wire.MAX_RECORD_BYTES)  # HELLO, maybe the request too
        frames = _wire.decode_record(got, [])
        if len(frames) == 1:
            peer_serve.recv(_wire.MAX_RECORD_BYTES)  # the first request
        second = threading.Thread(target=call)
        second.start()
        _data, anc, _flags, _addr = peer_serve.recvmsg(_wire.MAX_RECORD_BYTES, 256)
        (fd,) = [fd for level, kind, raw in anc if kind == socket.SCM_RIGHTS
                 for fd in array.array("i", raw)]
        channel = socket.socket(fileno=fd)
        channel.settimeout(30)
        with channel, caplog.at_level(logging.WARNING, logger="childkit.ipc"):
            (request,) = _wire.decode_record(channel.recv(_wire.MAX_RECORD_BYTES), [])
            assert isinstance(request, _wire.Transaction) and request.seq == 1
            good = _wire.encode_reply(1, 0, b"\x03\x02\0\0\0", [], 0)
            if answer == "wrong seq":
                channel.send(_wire.encode_reply(2, 0, b"", [], 0))
            elif answer == "two replies":
                channel.send(good + good)
            elif answer == "a request":
                channel.send(_wire.encode_transaction(1, 0, 1, False, b"", [], 0))
            else:
                channel.shutdown(socket.SHUT_RDWR)
            second.join(60)
            assert wait_until(lambda: conn.closed)
        first.join(60)
        assert len(errors) == 2 and all(isinstance(e, DeadRemoteObjectError) for e in errors)
        if answer == "end":
            assert "the peer closed the connection" in conn.close_reason
        else:
            assert "a channel carries one reply to its request 1" in conn.close_reason


def test_a_failed_reply_on_a_channel_raises_its_code() -> None:
    class Failing(RemoteStub):
        def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                              option: MessageOption) -> int:
            if code == HOLD:
                stub.holding.set()
                assert stub.hold.wait(60)
                reply.write_int32(0)
                return 0
            return 1909042

    stub = Meeting()
    with linked(Failing("t.Failing")) as (a, _b, _pool):
        holder = threading.Thread(target=lambda: int_call(a, HOLD, 0))
        holder.start()
        try:
            assert stub.holding.wait(60)
            with pytest.raises(IPCError) as err:
                int_call(a, ADD_ONE, 0)
            assert err.value.code == 1909042
            assert len(a._caller.channels.all) == 1
        finally:
            stub.hold.set()
            holder.join(60)


# ---------------------------------------------------------------------------- busy polling
class _AlwaysPoll:
    """A busy-poll rule that always wants to poll (the machine's load aside)."""

    window_ns = 50_000

    def poll_end(self, started_ns: int) -> int:
        return started_ns + self.window_ns

    def waited(self, waited_ns: int) -> None:
        pass


def test_the_lone_caller_does_not_spin_while_calls_on_channels_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from childkit.ipc import _caller

    ends: list[int] = []
    slowly = _caller.exchange_slowly

    def recording(*args: object, **kwargs: object) -> object:
        ends.append(args[6])  # type: ignore[arg-type]
        return slowly(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_caller, "exchange", None)
    monkeypatch.setattr(_caller, "exchange_slowly", recording)
    with linked(Meeting()) as (a, _b, _pool):
        a._caller.busy_poll = _AlwaysPoll()  # type: ignore[assignment]
        assert int_call(a, ADD_ONE, 1) == 2
        assert ends[-1] != 0  # alone: it polls
        channel = a._caller.channels.take()  # as a call in flight on a channel
        assert channel is not None
        try:
            assert int_call(a, ADD_ONE, 1) == 2
            assert ends[-1] == 0  # it sleeps at once
        finally:
            a._caller.channels.give_back(channel)


@pytest.mark.skipif(_threadpool._hold is None, reason=(
    "without the C twins' socket holds the server never polls after a reply (the socket "
    "is armed while a request runs), so there is no spinning to rule out"))
def test_no_work_thread_spins_on_the_main_socket_while_a_channel_is_served(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from childkit.ipc import _server

    polled: list[int] = []
    slowly = _server.exchange_slowly

    def recording(*args: object, **kwargs: object) -> object:
        polled.append(args[6])  # type: ignore[arg-type]
        return slowly(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_server, "exchange", None)
    monkeypatch.setattr(_server, "exchange_slowly", recording)
    stub = Meeting(2)
    with linked(stub) as (a, b, _pool):
        b._server.busy_poll = _AlwaysPoll()  # type: ignore[assignment]
        assert together(2, lambda i: int_call(a, MEET, i)) == [1, 2]  # opens a channel
        hub = b._server.hub
        assert hub is not None
        assert wait_until(lambda: not hub.draining)
        polled.clear()
        for _ in range(3):  # after the meeting's long runs, quick ones: held, then polled
            assert int_call(a, ADD_ONE, 1) == 2
        assert wait_until(lambda: bool(polled))  # nobody on a channel: it polls
        hub.draining += 1  # as a thread serving the channels
        try:
            polled.clear()
            for _ in range(3):
                assert int_call(a, ADD_ONE, 1) == 2
            assert not polled
        finally:
            hub.draining -= 1


# ---------------------------------------------------------------------------- alone, crowded
def test_a_lone_call_takes_a_channel_while_the_machine_is_crowded() -> None:
    with linked(Meeting()) as (a, b, _pool):
        caller = a._caller
        caller.prefer_channel = lambda: True  # type: ignore[method-assign]
        received = a._transport.replies_received  # main socket replies only
        for i in range(3):
            assert int_call(a, ADD_ONE, i) == i + 1
            with int_parcel(i) as data:  # with an option: transact's path
                reply = a.root_proxy().send_request(ADD_ONE, data, MessageOption())
            with reply:
                assert reply.read_int32() == i + 1
        assert len(caller.channels.all) == 1 and len(b._server.channels) == 1
        assert a._transport.replies_received == received  # none came on the main socket
        caller.prefer_channel = lambda: False  # type: ignore[method-assign]
        assert int_call(a, ADD_ONE, 7) == 8
        assert a._transport.replies_received == received + 1  # quiet: the main socket
        assert len(caller.channels.all) == 1


def test_the_crowded_rule_of_busy_polling_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    from childkit.ipc import _busypoll

    monkeypatch.setattr(Caller, "prefer_channel", staticmethod(_busypoll.nobody_polls))
    monkeypatch.setattr(_busypoll, "_sampled_ns", -10**15)  # the next look samples
    monkeypatch.setattr(_busypoll, "machine_crowded", lambda now_ns: True)
    with linked(Meeting()) as (a, _b, _pool):
        assert int_call(a, ADD_ONE, 1) == 2
        assert len(a._caller.channels.all) == 1


@pytest.mark.parametrize("max_us", [0, 100])
def test_polling_turned_off_chooses_a_channel_on_a_quiet_machine(
        monkeypatch: pytest.MonkeyPatch, max_us: int) -> None:
    # Nobody polls when polling is off either (CHILDKIT_BUSY_POLL_US=0, or one CPU): the
    # lone caller then takes a channel, as on a crowded machine; with polling on and a
    # quiet machine it keeps the main socket.
    from childkit.ipc import _busypoll

    monkeypatch.setattr(Caller, "prefer_channel", staticmethod(_busypoll.nobody_polls))
    monkeypatch.setattr(_busypoll, "_sampled_ns", -10**15)  # the next look samples
    monkeypatch.setattr(_busypoll, "machine_crowded", lambda now_ns: False)
    saved = _busypoll.max_us()
    _busypoll.set_max_us(max_us)
    try:
        with linked(Meeting()) as (a, _b, _pool):
            received = a._transport.replies_received  # main socket replies only
            assert int_call(a, ADD_ONE, 1) == 2
            on_channel = a._transport.replies_received == received
            assert on_channel == (max_us == 0)
            assert len(a._caller.channels.all) == (1 if max_us == 0 else 0)
    finally:
        _busypoll.set_max_us(saved)


def test_a_crowded_lone_caller_keeps_its_one_way_order_and_the_c_kit_one_socket() -> None:
    stub = Meeting()
    with linked(stub) as (a, _b, _pool):
        a._caller.prefer_channel = lambda: True  # type: ignore[method-assign]
        proxy = a.root_proxy()
        for i in range(5):
            with int_parcel(i) as data:
                proxy.send_request(RECORD, data, ASYNC)
        # Its one-way requests went on the main socket: its next sync call follows them.
        assert int_call(a, GET_RECORDED, 0) == 5
        assert not a._caller.channels.all  # it did not take a channel for that one
        assert int_call(a, ADD_ONE, 1) == 2
        assert len(a._caller.channels.all) == 1  # the next did
    with linked(Meeting(), caller_accepts=0, server_accepts=0) as (a, _b, _pool):
        a._caller.prefer_channel = lambda: True  # type: ignore[method-assign]
        assert int_call(a, ADD_ONE, 1) == 2  # a peer that accepts none: the main socket
        assert not a._caller.channels.all
