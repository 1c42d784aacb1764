"""Adaptive busy polling: the window rule (pure), its settings, and the connection's use of
it (driven by hand with a recording pool, so that every step is deterministic)."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator

import peer_main as pm
import pytest
from ipc_helpers import Peer

from childkit.ipc import (
    Connection,
    IPCErrorCode,
    MessageOption,
    MessageParcel,
    ParamError,
    RemoteStub,
    RequestMode,
    Skeleton,
    _accel,
    _busypoll,
    _server,
    _transport,
    _wire,
    channel_socketpairs,
)
from childkit.ipc._busypoll import START_NS, BusyPoll
from childkit.ipc._threadpool import default_pool

ASYNC = MessageOption(RequestMode.ASYNC)


@pytest.fixture(autouse=True)
def restore_setting() -> Iterator[None]:
    saved = Skeleton.get_busy_poll_us()
    yield
    Skeleton.set_busy_poll_us(saved)


@pytest.fixture(autouse=True)
def quiet_machine(request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule's tests must not depend on the test machine's load: they see a machine
    with CPUs to spare and a poller that is never descheduled (tests of that part say
    ``@pytest.mark.real_load``)."""
    if "real_load" in request.keywords:
        return
    monkeypatch.setattr(_busypoll, "machine_crowded", lambda now_ns: False)
    monkeypatch.setattr(_busypoll, "_crowded", False)  # the last sample, read inline
    monkeypatch.setattr(_busypoll, "PREEMPTED_NS", 10**12)


def poll_window(waiter: BusyPoll, poll: Callable[[int], list[tuple[int, int]]],
                started_ns: int) -> bool:
    """One wait's polling, as the connection does it: the waiter's window, then spin."""
    end = waiter.poll_end(started_ns)
    return bool(end) and _busypoll.spin(poll, started_ns, end)


# ---------------------------------------------------------------------------- the rule
def test_short_waits_grow_the_window_up_to_the_maximum() -> None:
    Skeleton.set_busy_poll_us(100)
    waiter = BusyPoll()
    waiter.window_ns = 0
    waiter.waited(5_000)
    assert waiter.window_ns == START_NS  # a zero window starts again
    sizes = []
    for _ in range(5):
        waiter.waited(100_000)  # exactly the maximum still counts as short
        sizes.append(waiter.window_ns)
    assert sizes == [20_000, 40_000, 80_000, 100_000, 100_000]


def test_long_waits_halve_the_window_down_to_zero() -> None:
    Skeleton.set_busy_poll_us(100)
    waiter = BusyPoll()
    waiter.window_ns = 40_000
    sizes = []
    for _ in range(4):
        waiter.waited(100_001)  # just over the maximum: polling would not have caught it
        sizes.append(waiter.window_ns)
    assert sizes == [20_000, START_NS, 0, 0]


def test_poll_stops_at_data_or_at_the_end_of_the_window() -> None:
    Skeleton.set_busy_poll_us(10_000)
    waiter = BusyPoll()
    waiter.window_ns = 2_000_000
    looks: list[int] = []

    def ready_on_third(timeout: int) -> list[tuple[int, int]]:
        assert timeout == 0  # polling never sleeps
        looks.append(timeout)
        return [(3, 1)] if len(looks) == 3 else []

    assert poll_window(waiter, ready_on_third, _busypoll._now_ns()) is True
    assert len(looks) == 3
    waiter.window_ns = 200_000
    started = _busypoll._now_ns()
    assert poll_window(waiter, lambda timeout: [], started) is False
    assert _busypoll._now_ns() - started >= 200_000


def test_polling_off_means_no_look_at_all() -> None:
    Skeleton.set_busy_poll_us(0)
    waiter = BusyPoll()
    assert waiter.window_ns == 0  # created while off
    waiter.window_ns = 50_000  # or adapted before it was turned off

    def never(timeout: int) -> list[tuple[int, int]]:
        raise AssertionError("polled while polling is off")

    assert poll_window(waiter, never, _busypoll._now_ns()) is False
    assert waiter.window_ns == 0
    waiter.waited(1_000)
    assert waiter.window_ns == 0  # short waits do not grow it while off


def test_a_lower_maximum_caps_a_window_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    Skeleton.set_busy_poll_us(10_000)
    waiter = BusyPoll()
    waiter.window_ns = 5_000_000
    Skeleton.set_busy_poll_us(1)
    clock = iter(range(0, 10_000_000, 400))  # a fake clock: 0.4 us per look
    monkeypatch.setattr(_busypoll, "_now_ns", lambda: next(clock))
    looks: list[int] = []
    assert poll_window(waiter, lambda timeout: looks.append(timeout) or [], 0) is False
    assert len(looks) == 4  # gave up once 1 us (the new maximum) had passed, not 5 ms


# ---------------------------------------------------------------------------- load
@pytest.mark.real_load
def test_runnable_tasks_reads_the_machine_and_fails_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert 1 <= _busypoll.runnable_tasks() < 1 << 20  # this test is running, at least

    def no_proc(*args: object) -> int:
        raise PermissionError("no /proc here")

    monkeypatch.setattr(os, "open", no_proc)
    assert _busypoll.runnable_tasks() > 1 << 20  # unreadable: as if crowded, never poll


@pytest.mark.parametrize(("max_us", "crowded", "expected"),
                         [(100, False, False), (100, True, True), (0, False, True),
                          (0, True, True)])
def test_nobody_polls_when_polling_is_off_or_the_machine_is_crowded(
        monkeypatch: pytest.MonkeyPatch, max_us: int, crowded: bool, expected: bool) -> None:
    monkeypatch.setattr(_busypoll, "_max_ns", max_us * 1000)
    monkeypatch.setattr(_busypoll, "_sampled_ns", -10**15)  # the next look samples
    monkeypatch.setattr(_busypoll, "machine_crowded", lambda now_ns: crowded)
    assert _busypoll.nobody_polls() is expected


@pytest.mark.real_load
def test_a_crowded_machine_stops_polling_until_the_next_sample(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    over, quiet = _busypoll._cpus + 1, _busypoll._cpus
    counts = iter([over, quiet, over, over, over, quiet])

    def runnable() -> int:
        reads.append(1)
        return next(counts)

    monkeypatch.setattr(_busypoll, "runnable_tasks", runnable)
    monkeypatch.setattr(_busypoll, "_sampled_ns", -10**15)  # (restored after the test)
    monkeypatch.setattr(_busypoll, "_crowded", False)
    monkeypatch.setattr(_busypoll, "_over_before", False)
    period = _busypoll.LOAD_SAMPLE_NS
    t = 10**12
    # One sample with one more runnable task than CPUs: a moment's task, keep polling.
    assert _busypoll.machine_crowded(t) is False
    t += period
    assert _busypoll.machine_crowded(t) is False  # exactly as many as CPUs: quiet
    t += period
    assert _busypoll.machine_crowded(t) is False  # over once more: still a moment
    t += period
    assert _busypoll.machine_crowded(t) is True  # over twice running: crowded
    assert _busypoll.machine_crowded(t + period - 1) is True
    assert len(reads) == 4  # not sampled again before LOAD_SAMPLE_NS
    t += period
    assert _busypoll.machine_crowded(t) is True  # still over
    t += period
    assert _busypoll.machine_crowded(t) is False  # quiet again
    assert len(reads) == 6

    Skeleton.set_busy_poll_us(100)
    waiter = BusyPoll()
    waiter.window_ns = 50_000
    monkeypatch.setattr(_busypoll, "machine_crowded", lambda now_ns: True)

    def never(timeout: int) -> list[tuple[int, int]]:
        raise AssertionError("polled on a crowded machine")

    # On the fake clock, after the samples above (a real clock's time may lie before them
    # on a freshly booted machine: such a sample counts as stale, never as fresh).
    assert poll_window(waiter, never, t + period) is False
    assert poll_window(waiter, never, t - 10**9) is False  # a sample from the future


@pytest.mark.real_load
def test_a_poller_descheduled_while_polling_backs_off(monkeypatch: pytest.MonkeyPatch) -> None:
    Skeleton.set_busy_poll_us(10_000)
    monkeypatch.setattr(_busypoll, "machine_crowded", lambda now_ns: False)
    monkeypatch.setattr(_busypoll, "_crowded", False)  # the last sample, read inline
    clock = iter([1_000, 2_000, 2_000 + _busypoll.PREEMPTED_NS + 1])
    monkeypatch.setattr(_busypoll, "_now_ns", lambda: next(clock))
    monkeypatch.setattr(_busypoll, "_crowded", False)  # (both restored after the test)
    monkeypatch.setattr(_busypoll, "_sampled_ns", 0)
    waiter = BusyPoll()
    waiter.window_ns = 5_000_000
    looks: list[int] = []
    assert poll_window(waiter, lambda timeout: looks.append(timeout) or [], 0) is False
    assert len(looks) == 3  # the third look came after a gap: it gave up there
    assert _busypoll._crowded is True  # until the next sample
    assert _busypoll._sampled_ns == 2_000 + _busypoll.PREEMPTED_NS + 1


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize("value", [0, 1, 100, 10_000])
def test_set_busy_poll_accepts_its_range(value: int) -> None:
    Skeleton.set_busy_poll_us(value)
    assert Skeleton.get_busy_poll_us() == value


@pytest.mark.parametrize("value", [-1, 10_001, True, 1.5, "5", None])
def test_set_busy_poll_refuses_outside_its_range(value: object) -> None:
    Skeleton.set_busy_poll_us(42)
    with pytest.raises(ParamError) as info:
        Skeleton.set_busy_poll_us(value)  # type: ignore[arg-type]
    assert info.value.code == IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR
    assert "0..10000" in info.value.message and repr(value) in info.value.message
    assert Skeleton.get_busy_poll_us() == 42  # unchanged


@pytest.mark.parametrize(("text", "cpus", "expected_us", "warns"), [
    (None, 2, 100, False),
    (None, 1, 0, False),  # one CPU: polling only delays the peer
    ("0", 2, 0, False),
    ("10000", 2, 10_000, False),
    ("50", 1, 50, False),  # an explicit choice wins
    (" 30 ", 2, 30, False),
    ("10001", 2, 100, True),
    ("-1", 2, 100, True),
    ("fast", 2, 100, True),
])
def test_environment_variable(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                              text: str | None, cpus: int, expected_us: int, warns: bool) -> None:
    if text is None:
        monkeypatch.delenv(_busypoll.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(_busypoll.ENV_VAR, text)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
        _busypoll.reload_from_environment()
    assert Skeleton.get_busy_poll_us() == expected_us
    assert any(_busypoll.ENV_VAR in r.getMessage() for r in caplog.records) is warns


# ---------------------------------------------------------------------------- the server side
class RecordingPool:
    """Stands in for the work thread pool: records what the connection asks of it. It has
    no epoll of its own, so the connection disarms through it, not in C."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.epoll_fileno = -1

    def register(self, fd: int, on_readable: object) -> None:
        self.calls.append("register")

    def unregister(self, fd: int) -> None:
        self.calls.append("unregister")

    def rearm(self, fd: int) -> None:
        self.calls.append("rearm")

    def disarm(self, fd: int) -> None:
        self.calls.append("disarm")

    def hold(self, fd: int) -> None:
        self.rearm(fd)  # as the real pool does without the C twins

    def unhold(self, fd: int) -> bool:
        return False

    def submit(self, task: object) -> None:
        raise AssertionError("nothing here needs a task")


class AddOne(RemoteStub):
    def __init__(self) -> None:
        super().__init__("test.AddOne")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: object) -> int:
        reply.write_int32(data.read_int32() + 1)
        return 0


#: The connection under test, its recording pool, and the peer's call and serve sockets.
Served = tuple[Connection, RecordingPool, socket.socket, socket.socket]


@pytest.fixture
def served() -> Iterator[Served]:
    """A connection serving AddOne, never started (the test drives it), and the raw peer
    sockets: the peer's call socket (requests in, replies out) and its serve socket."""
    local, remote = channel_socketpairs()
    pool = RecordingPool()
    conn = Connection(*local, local_root=AddOne(), pool=pool)  # type: ignore[arg-type]
    conn._transport.serve.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)  # as after HELLO
    remote[0].settimeout(30)
    yield conn, pool, remote[0], remote[1]
    conn.close()
    for sock in remote:
        sock.close()


def request(seq: int, value: int) -> bytes:
    data = MessageParcel()
    data.write_int32(value)
    return _wire.encode_transaction(seq, 0, 1, False, data._buf, (), 0)


def answer(peer_call: socket.socket, seq: int) -> int:
    record = peer_call.recv(_wire.MAX_RECORD_BYTES)
    assert _wire.simple_reply(record, len(record)) == (seq, 0)
    return MessageParcel._from_wire(record[_wire.REPLY_DATA_OFFSET:], [], []).read_int32()


def serve(conn: Connection) -> bytes | None:
    """Read one record and run it, as a work thread does; the reply to send, if any."""
    record = conn._server.read()
    assert record is not None
    return conn._server.serve_record(*record)


def test_after_a_run_with_the_socket_armed_the_server_does_not_poll(
    served: Served) -> None:
    # The socket was re-armed while the request ran (here: a pool without the C twins'
    # holds), so a work thread may be reading the next record right now. This thread
    # must not read too: two readers could register records out of order (a sync request
    # would not wait for the one-way requests read just before it).
    conn, pool, peer_call, _ = served
    Skeleton.set_busy_poll_us(10_000)
    conn._server.busy_poll.window_ns = 10_000_000
    peer_call.send(request(1, 41))
    reply = serve(conn)  # a plain sync request, answered inline
    assert reply
    assert pool.calls == ["rearm"]  # re-armed before running: others may serve meanwhile
    peer_call.send(request(2, 1))  # waiting: for the pool's threads, not for this one
    assert conn._server.reply_and_poll(reply) is None
    assert pool.calls == ["rearm"]  # no disarm, no poll: it stayed armed
    assert answer(peer_call, 1) == 42  # the reply went out
    conn._server.send_reply_record(serve(conn) or b"")  # a work thread serves request 2
    assert answer(peer_call, 2) == 2


def test_after_answering_a_held_socket_the_server_polls(
    served: Served) -> None:
    conn, pool, peer_call, _ = served
    pool.unhold = lambda fd: True  # type: ignore[method-assign]  # still disarmed (held)
    Skeleton.set_busy_poll_us(10_000)
    conn._server.busy_poll.window_ns = 10_000_000
    peer_call.send(request(1, 41))
    reply = serve(conn)
    assert reply
    peer_call.send(request(2, 1))  # waiting before the poll starts: found at once
    following = conn._server.reply_and_poll(reply)
    assert following is not None and following[0] == len(request(2, 1))
    assert answer(peer_call, 1) == 42  # the reply went out before the poll
    reply = conn._server.serve_record(*following)
    conn._server.busy_poll.window_ns = 10_000
    calls = len(pool.calls)
    assert conn._server.reply_and_poll(reply) is None  # nothing more comes
    assert pool.calls[calls:] == ["rearm"]  # never left disarmed
    assert answer(peer_call, 2) == 2


def test_a_poll_that_gives_up_rearms_and_adapts(
    served: Served) -> None:
    conn, pool, peer_call, _ = served
    Skeleton.set_busy_poll_us(100)
    waiter = conn._server.busy_poll
    waiter.window_ns = 20_000
    pool.unhold = lambda fd: True  # type: ignore[method-assign]  # disarmed, as if held
    assert conn._server.reply_and_poll(b"") is None  # nothing comes within 20 us
    assert pool.calls == ["rearm"]  # never left disarmed
    assert conn._server.idle_since != 0
    # The next request comes much later than the maximum: the window halves.
    conn._server.idle_since -= 1_000_000_000
    peer_call.send(request(1, 1))
    reply = serve(conn)
    assert reply is not None
    conn._server.send_reply_record(reply)
    assert answer(peer_call, 1) == 2
    assert waiter.window_ns == 10_000 and conn._server.idle_since == 0


def test_no_poll_without_a_window_or_while_another_thread_polls(
    served: Served) -> None:
    conn, pool, peer_call, _ = served
    Skeleton.set_busy_poll_us(100)
    conn._server.busy_poll.window_ns = 0
    peer_call.send(request(1, 1))
    assert conn._server.reply_and_poll(serve(conn) or b"") is None
    assert answer(peer_call, 1) == 2  # the reply still goes out
    conn._server.busy_poll.window_ns = 50_000
    conn._server.polling = True  # another thread polls: one poller per connection
    assert conn._server.reply_and_poll(b"") is None
    conn._server.polling = False
    assert pool.calls == ["rearm"]  # only before the stub ran: it stayed armed since


def test_only_a_plain_inline_answer_leads_to_polling(
    served: Served) -> None:
    conn, pool, peer_call, _ = served
    data = MessageParcel()
    data.write_int32(1)
    oneway = _wire.encode_transaction(0, 0, 1, True, data._buf, (), 0)
    peer_call.send(oneway)
    assert serve(conn) is None  # one-way: no reply, nothing to wait for
    assert conn._server.read() is None  # nothing there (EAGAIN): re-armed
    assert pool.calls[-1] == "rearm"


class EpollPool(RecordingPool):
    """A recording pool with a real epoll, which the C twins disarm and hold."""

    def __init__(self) -> None:
        super().__init__()
        self.epoll = select.epoll()
        self.epoll_fileno = self.epoll.fileno()

    def register(self, fd: int, on_readable: object) -> None:
        super().register(fd, on_readable)
        self.epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def rearm(self, fd: int) -> None:
        super().rearm(fd)
        self.epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def disarm(self, fd: int) -> None:
        super().disarm(fd)
        self.epoll.modify(fd, select.EPOLLONESHOT)

    def hold(self, fd: int) -> None:
        self.calls.append("hold")
        assert _accel.speedups.hold(self.epoll_fileno,
                                    select.EPOLLIN | select.EPOLLONESHOT, fd) is True

    def unhold(self, fd: int) -> bool:
        return bool(_accel.speedups.unhold(fd))


@pytest.fixture
def epoll_served() -> Iterator[tuple[Connection, EpollPool, socket.socket]]:
    """``served``, with a pool that has a real epoll (the C twins disarm and hold in it);
    the serve socket registered there, armed. Holds wait for the test unless it says."""
    local, remote = channel_socketpairs()
    pool = EpollPool()
    conn = Connection(*local, local_root=AddOne(), pool=pool)  # type: ignore[arg-type]
    conn._transport.serve.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 0)
    remote[0].settimeout(30)
    pool.register(conn._transport.serve_fd, None)
    limit = _accel.speedups.set_hold_limit(10**12)
    yield conn, pool, remote[0]
    _accel.speedups.set_hold_limit(limit)
    _accel.speedups.drop_holds(conn._transport.serve_fd)
    conn.close()
    pool.epoll.close()
    for sock in remote:
        sock.close()


@pytest.mark.skipif(_transport.exchange is None, reason="needs the C twins (_speedups)")
def test_the_c_twins_keep_the_socket_disarmed_from_request_to_request(
        epoll_served: tuple[Connection, EpollPool, socket.socket],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A held socket needs no epoll_ctl between requests; one held too long is re-armed by
    the watcher, and the next poll disarms it again (in C)."""
    conn, pool, peer_call = epoll_served
    # Each request here counts as quick, however long this test's thread is preempted
    # between two lines on a loaded machine (the rule itself is tested above).
    monkeypatch.setattr(_server, "_HOLD_RUNS_NS", 10**12)
    Skeleton.set_busy_poll_us(10_000)
    conn._server.busy_poll.window_ns = 10_000_000
    peer_call.send(request(1, 41))
    assert pool.epoll.poll(0) == [(conn._transport.serve_fd, select.EPOLLIN)]  # armed: reported
    reply = serve(conn)  # held: still disarmed while the request runs
    assert reply
    peer_call.send(request(2, 1))
    assert pool.epoll.poll(0) == []  # readable, but disarmed: the pool is not told
    conn._server.run_started = _busypoll._now_ns()  # it ran quickly (not at this test's pace)
    following = conn._server.reply_and_poll(reply)  # no disarm needed: it never re-armed
    assert following is not None
    assert pool.calls == ["register", "hold"]
    peer_call.send(request(3, 1))
    assert pool.epoll.poll(0) == []
    reply = conn._server.serve_record(*following)  # held again
    assert pool.calls == ["register", "hold", "hold"]
    # This request "runs long": the watcher re-arms the socket after the hold limit.
    _accel.speedups.set_hold_limit(2_000_000)
    assert pool.epoll.poll(30) == [(conn._transport.serve_fd, select.EPOLLIN)]
    assert answer(peer_call, 1) == 42
    # Re-armed meanwhile: a work thread may be reading request 3 now, so this one does
    # not poll (two readers could register records out of order); the pool serves it.
    assert conn._server.reply_and_poll(reply or b"") is None
    assert pool.calls == ["register", "hold", "hold"]
    assert answer(peer_call, 2) == 2
    conn._server.run_started = _busypoll._now_ns()
    conn._server.send_reply_record(serve(conn) or b"")  # as a woken work thread does
    conn._pool.unhold(conn._transport.serve_fd)
    assert answer(peer_call, 3) == 2


def test_the_pool_wakes_for_data_that_came_while_disarmed() -> None:
    # What a poller relies on when it gives up: re-arming finds data that arrived while
    # the socket was disarmed (EPOLL_CTL_MOD checks readiness), so nothing waits forever.
    pool = default_pool()  # lives for the process, as in real use
    a, b = socket.socketpair()
    woke = threading.Event()
    pool.register(a.fileno(), woke.set)
    try:
        b.send(b"x")
        assert woke.wait(30)  # armed: a thread wakes
        woke.clear()
        pool.disarm(a.fileno())  # (it is disarmed already: one-shot)
        b.send(b"y")
        pool.rearm(a.fileno())
        assert woke.wait(30)
    finally:
        pool.unregister(a.fileno())
        pool.disarm(a.fileno())  # unregistered: a no-op, not an error
        a.close()
        b.close()


# ---------------------------------------------------------------------------- end to end
class CountingBusyPoll(BusyPoll):
    """Counts the waits that polled (in C with the I/O, or through :meth:`poll`)."""

    __slots__ = ("looks",)

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def poll_end(self, started_ns: int) -> int:
        end = super().poll_end(started_ns)
        self.looks += end != 0
        return end


def test_calls_through_a_real_peer_poll_and_lose_nothing() -> None:
    # The peer polls too (its CHILDKIT_BUSY_POLL_US is the default). One caller at a time
    # polls for its reply; several at once, with one-way requests between them, go the
    # general way; every answer must still come, right and in order per caller.
    Skeleton.set_busy_poll_us(100)
    peer = Peer()
    try:
        waiter = peer.conn._caller.busy_poll = CountingBusyPoll()
        for i in range(200):
            data = MessageParcel()
            data.write_int32(i)
            with peer.proxy.send_request(pm.ADD_ONE, data) as reply:
                assert reply.read_int32() == i + 1
        assert waiter.looks > 0
        failures: list[str] = []

        def caller(base: int) -> None:
            for i in range(base, base + 200):
                data = MessageParcel()
                data.write_int32(i)
                if i % 7 == 0:
                    peer.proxy.send_request(pm.RECORD_TOTAL, data, ASYNC)
                    continue
                with peer.proxy.send_request(pm.ADD_ONE, data) as reply:
                    if reply.read_int32() != i + 1:
                        failures.append(f"{i}: wrong answer")

        threads = [threading.Thread(target=caller, args=(k * 1000,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a caller hangs"
        assert failures == []
        with peer.proxy.send_request(pm.GET_TOTAL, MessageParcel()) as reply:
            expected = sum(i for k in range(4) for i in range(k * 1000, k * 1000 + 200)
                           if i % 7 == 0)
            assert reply.read_int64() == expected
    finally:
        peer.close()


@pytest.mark.skipif(_transport.exchange is None, reason="needs the C twins (_speedups)")
def test_after_a_long_request_the_next_is_not_held(
        epoll_served: tuple[Connection, EpollPool, socket.socket]) -> None:
    """A request that ran long may well again: the next one re-arms the socket first, so
    other threads serve the connection meanwhile; quick ones go back to holding."""
    conn, pool, peer_call = epoll_served
    Skeleton.set_busy_poll_us(10_000)
    conn._server.busy_poll.window_ns = 10_000_000
    peer_call.send(request(1, 1))
    reply = serve(conn)
    assert pool.calls == ["register", "hold"]
    conn._server.run_started -= 1_000_000_000  # as if the stub had run for a second
    peer_call.send(request(2, 1))
    following = conn._server.reply_and_poll(reply or b"")
    assert following is not None
    reply = conn._server.serve_record(*following)
    assert pool.calls == ["register", "hold", "rearm"]  # not held
    peer_call.send(request(3, 1))
    conn._server.run_started = _busypoll._now_ns()  # a quick one again
    # Not held, so armed while it ran: no poll (a work thread may read meanwhile), and
    # a work thread serves request 3, held again.
    assert conn._server.reply_and_poll(reply or b"") is None
    reply = serve(conn)
    assert pool.calls == ["register", "hold", "rearm", "hold"]
    conn._pool.unhold(conn._transport.serve_fd)
    conn._server.send_reply_record(reply or b"")
    assert [answer(peer_call, seq) for seq in (1, 2, 3)] == [2, 2, 2]


@pytest.mark.skipif(_transport.exchange is None, reason="needs the C twins (_speedups)")
def test_a_reply_that_does_not_fit_waits_and_leaves_the_socket_armed(
        epoll_served: tuple[Connection, EpollPool, socket.socket]) -> None:
    """The peer reads slowly: its queue is full when the reply is due. The work thread
    does not poll then; it re-arms the socket (so other threads serve the connection),
    waits for room, and the reply arrives whole once the peer reads."""
    conn, pool, peer_call = epoll_served
    Skeleton.set_busy_poll_us(10_000)
    conn._server.busy_poll.window_ns = 10_000_000
    peer_call.send(request(1, 41))
    reply = serve(conn)
    assert reply
    filler = bytes(60_000)
    while True:  # fill the peer's queue: the next send on the serve socket would block
        try:
            conn._transport.serve.send(filler)
        except BlockingIOError:
            break
    result: list[object] = []
    replier = threading.Thread(target=lambda: result.append(conn._server.reply_and_poll(reply)))
    replier.start()
    got = peer_call.recv(_wire.MAX_RECORD_BYTES)
    while len(got) == len(filler):  # the peer reads: room for the reply
        got = peer_call.recv(_wire.MAX_RECORD_BYTES)
    replier.join(30)
    assert not replier.is_alive()
    assert result == [None]  # it did not poll for a next request
    assert _wire.simple_reply(got, len(got)) == (1, 0)
    assert MessageParcel._from_wire(got[_wire.REPLY_DATA_OFFSET:], [], []).read_int32() == 42
    peer_call.send(request(2, 1))  # the socket is armed again: the pool hears of it
    assert pool.epoll.poll(30) == [(conn._transport.serve_fd, select.EPOLLIN)]
