"""The channel hub (issue 16): a connection's extra channels served together, by one
draining thread at a time, that never holds up a channel behind a long request.

``_speedups.hub_turn`` (a draining thread's turn in C) and its Python twin
(``ChannelHub._turn_slowly``) are checked side by side on real sockets; the hub itself
through linked connections in this process, as test_channels does.
"""

from __future__ import annotations

import array
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from test_channels import (  # noqa: F401  (no_leaks: this module's leak check too)
    ADD_ONE,
    HOLD,
    KEEP,
    Meeting,
    int_call,
    linked,
    no_leaks,
    together,
)

from childkit.ipc import Connection, MessageOption, MessageParcel, RemoteStub, _accel
from childkit.ipc._busypoll import PREEMPTED_NS, now_ns
from childkit.ipc._channelhub import ChannelHub
from childkit.ipc._transport import TRUNCATED

C = _accel.speedups
CALL_BACK = 40  # the stub calls the object it keeps (KEEP), and answers what it answered


# ---------------------------------------------------------------------------- one turn
class _Pool:
    """The two calls of IPCThreadPool that ChannelHub.add and close make."""

    def register(self, fd: int, on_readable: Callable[[], None]) -> None:
        pass

    def unregister(self, fd: int) -> None:
        pass


class _Service:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


class Bench:
    """A hub (its epoll and its services) with one channel: ``ours`` is the served end,
    ``peer`` the caller's end."""

    def __init__(self) -> None:
        self.peer, self.ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.hub = ChannelHub(None, _Pool())  # type: ignore[arg-type]  # (turns only)
        self.hub.add(self.ours.fileno(), _Service(self.ours))  # type: ignore[arg-type]
        self.fd = self.ours.fileno()
        self.buf = bytearray(4096)

    def close(self) -> None:
        self.hub.close_epoll()
        self.peer.close()
        self.ours.close()


TURNS = ["python"] + (["c"] if C is not None else [])


@pytest.fixture(params=TURNS)
def turn(request: pytest.FixtureRequest) -> Iterator[tuple[Bench, Callable[..., Any]]]:
    bench = Bench()
    c_turn = C.hub_turn if request.param == "c" and C is not None else None

    def fn(fd: int, rec: Any, timeout: int = 0, end: int = 0) -> Any:
        if c_turn is not None:
            return c_turn(bench.hub.fd, fd, rec, bench.buf, timeout, end, PREEMPTED_NS)
        return bench.hub._turn_slowly(bench.hub.fd, fd, rec, bench.buf, timeout, end,
                                      PREEMPTED_NS)

    try:
        yield bench, fn
    finally:
        bench.close()


def test_a_turn_reads_a_ready_channel_once_until_its_reply_rearms_it(
        turn: tuple[Bench, Callable[..., Any]]) -> None:
    bench, fn = turn
    assert fn(-1, b"")[0] == -1  # nothing there
    bench.peer.send(b"first")
    fd, n, anc, flags, err, seen = fn(-1, b"")
    assert (fd, n, anc, flags & TRUNCATED, err, seen) == (bench.fd, 5, [], 0, 0, 0)
    assert bytes(bench.buf[:5]) == b"first"
    bench.peer.send(b"second")  # the channel is disarmed until its reply goes out
    assert fn(-1, b"")[0] == -1
    got = fn(bench.fd, (b"re", b"ply"))  # sent gathered, then the channel re-armed
    assert bench.peer.recv(100) == b"reply"
    assert got[:2] == (bench.fd, 6) and bytes(bench.buf[:6]) == b"second"


def test_a_turn_waits_up_to_its_timeout(turn: tuple[Bench, Callable[..., Any]]) -> None:
    _bench, fn = turn
    started = time.monotonic()
    assert fn(-1, b"", 30)[0] == -1
    assert time.monotonic() - started >= 0.025


def test_a_turn_polls_until_its_window_closes(turn: tuple[Bench, Callable[..., Any]]) -> None:
    bench, fn = turn
    started = time.monotonic()
    fd, *_rest, seen = fn(-1, b"", 0, now_ns() + 5_000_000)  # nothing comes: 5 ms
    assert fd == -1 and seen in (0, -1)  # (-1: this thread lost its CPU meanwhile)
    assert time.monotonic() - started >= 0.004 or seen == -1
    bench.peer.send(b"x")
    fd, n, *_rest, seen = fn(-1, b"", 0, now_ns() + 10**9)
    assert (fd, n, seen) == (bench.fd, 1, 1)  # seen while polling: at once


def test_a_reply_without_room_is_not_sent_and_leaves_the_channel_disarmed(
        turn: tuple[Bench, Callable[..., Any]]) -> None:
    bench, fn = turn
    bench.peer.send(b"request")
    assert fn(-1, b"")[0] == bench.fd
    bench.ours.setblocking(False)
    try:
        while True:  # the peer reads nothing: fill its side
            bench.ours.send(b"f" * 1000)
    except BlockingIOError:
        pass
    bench.ours.setblocking(True)
    bench.peer.send(b"next")
    with pytest.raises(BlockingIOError):
        fn(bench.fd, b"reply")
    assert fn(-1, b"")[0] == -1  # not re-armed: the reply waits first


def test_a_turn_takes_the_fds_that_came_with_a_record(
        turn: tuple[Bench, Callable[..., Any]]) -> None:
    bench, fn = turn
    r, w = os.pipe()
    try:
        bench.peer.sendmsg([b"with an fd"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                             array.array("i", [r]).tobytes())])
        fd, n, anc, _flags, err, _seen = fn(-1, b"")
        assert (fd, n, err) == (bench.fd, 10, 0) and len(anc) == 1
        (got,) = array.array("i", anc[0][2])
        try:
            assert os.get_inheritable(got) is False  # MSG_CMSG_CLOEXEC
        finally:
            os.close(got)
    finally:
        os.close(r)
        os.close(w)


def test_a_closed_hub_fails_the_turn(turn: tuple[Bench, Callable[..., Any]]) -> None:
    bench, fn = turn
    bench.hub.close_epoll()
    with pytest.raises(OSError):
        fn(-1, b"")
    bench.hub._epoll = select.epoll()  # (for the fixture's close)


@pytest.mark.skipif(C is None, reason="the C turn's own argument checks")
def test_the_c_turn_checks_its_arguments() -> None:
    assert C is not None
    bench = Bench()
    try:
        with pytest.raises(TypeError):
            C.hub_turn(bench.hub.fd, -1, b"", bench.buf, 0, 0)  # type: ignore[call-arg]
        with pytest.raises(ValueError):
            C.hub_turn(bench.hub.fd, -2, b"", bench.buf, 0, 0, PREEMPTED_NS)
        with pytest.raises(TypeError):
            C.hub_turn(bench.hub.fd, bench.fd, ("too", "many", "parts"), bench.buf, 0, 0,
                       PREEMPTED_NS)
        with pytest.raises(BufferError):  # a receive buffer must be writable
            C.hub_turn(bench.hub.fd, -1, b"", b"read-only", 0, 0, PREEMPTED_NS)
    finally:
        bench.close()


# ---------------------------------------------------------------------------- the hub
class _Counting(Meeting):
    """Meeting's codes, counting the threads inside at once; CALL_BACK (a plain request:
    it may come on a channel) calls the object kept last (KEEP: a stub of the caller's)
    and answers with what it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most = 0
        self.lock = threading.Lock()

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            if code == CALL_BACK:
                obj = self.kept[-1]
                with MessageParcel() as out, obj.send_request(1, out) as answer:
                    reply.write_int32(answer.read_int32())
                return 0
            return super().on_remote_request(code, data, reply, option)
        finally:
            with self.lock:
                self.inside -= 1


class _Blocking(RemoteStub):
    """The caller's object that CALL_BACK calls: answers 7 once ``go`` is set."""

    def __init__(self) -> None:
        super().__init__("t.Blocking")
        self.inside = threading.Event()
        self.go = threading.Event()

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        self.inside.set()
        assert self.go.wait(60)
        reply.write_int32(7)
        return 0


def _on_channels(conn: Connection) -> None:
    """Every plain sync call of ``conn`` takes a channel (as on a crowded machine)."""
    conn._caller.prefer_channel = lambda: True  # type: ignore[method-assign]


@pytest.fixture
def long_holds() -> Iterator[None]:
    """Holds that never time out: only this test's own events free a held hub."""
    if C is None:
        pytest.skip("holds are the C twins' (without them the hub is re-armed at once)")
    limit = C.set_hold_limit(10**12)
    try:
        yield
    finally:
        C.set_hold_limit(limit)


def test_one_thread_at_a_time_drains_the_channels_of_many_callers(long_holds: None) -> None:
    stub = _Counting()
    with linked(stub) as (a, b, _pool):
        _on_channels(a)
        sums = together(6, lambda i: sum(int_call(a, ADD_ONE, i) for _ in range(100)))
        assert sums == [(i + 1) * 100 for i in range(6)]
        assert len(b._server.channels) >= 2
        assert stub.most == 1  # every request ran on the one draining thread


def test_a_long_request_does_not_hold_up_the_other_channels() -> None:
    stub = _Counting()
    with linked(stub) as (a, _b, _pool):
        _on_channels(a)
        held = threading.Thread(target=lambda: int_call(a, HOLD, 0))
        held.start()
        try:
            assert stub.holding.wait(60)
            # The hub was held by the thread inside HOLD: the pool re-armed it at the
            # hold limit, and another thread serves these channels meanwhile.
            assert together(4, lambda i: sum(int_call(a, ADD_ONE, i) for _ in range(20))
                            ) == [(i + 1) * 20 for i in range(4)]
        finally:
            stub.hold.set()
            held.join(60)
        assert not held.is_alive()


def test_a_request_calling_back_frees_the_hub_for_the_others(long_holds: None) -> None:
    stub = _Counting()
    blocking = _Blocking()
    with linked(stub) as (a, b, _pool):
        with MessageParcel() as data:  # (with an object: on the main socket)
            data.write_remote_object(blocking)
            a.root_proxy().send_request(KEEP, data).close()
        _on_channels(a)
        results: list[object] = []
        caller = threading.Thread(target=lambda: results.append(int_call(a, CALL_BACK, 0)))
        caller.start()
        try:
            assert blocking.inside.wait(60)
            hub = b._server.hub
            assert hub is not None and hub.draining == 1  # the call back came on a channel
            # The draining thread waits for its call back's reply: it released the hub
            # as it went to sleep (holds never time out here), so others serve the rest.
            assert together(3, lambda i: int_call(a, ADD_ONE, i)) == [1, 2, 3]
        finally:
            blocking.go.set()
            caller.join(60)
        assert results == [7]
        stub.kept.clear()


# ---------------------------------------------------------------------------- failures
class _Link:
    """The parts of a Transport that draining uses."""

    closed = False

    def enter_io(self) -> bool:
        return True

    def io_done(self) -> None:
        pass

    def fail(self, reason: str) -> None:
        raise AssertionError(reason)


class _DrainPool(_Pool):
    def hold(self, fd: int) -> None:
        pass

    def unhold(self, fd: int) -> bool:
        return True

    def rearm(self, fd: int) -> None:
        pass

    def spare(self) -> bool:
        return False  # no stay: a drain returns as soon as nothing is waiting


class _Failing(_Service):
    """Raises on its first request, answers b"ok" to the others."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.served = 0

    def serve_record(self, n: int, anc: list[tuple[int, int, bytes]], flags: int) -> bytes:
        self.served += 1
        if self.served == 1:
            raise RuntimeError("a stub's bug")
        return b"ok"

    def send_reply_record(self, reply: bytes) -> None:
        raise AssertionError("the reply had room")


def test_a_request_whose_serving_raised_leaves_its_channel_served() -> None:
    peer, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    hub = ChannelHub(_Link(), _DrainPool())  # type: ignore[arg-type]
    service = _Failing(ours)
    hub.add(ours.fileno(), service)  # type: ignore[arg-type]
    try:
        peer.send(b"first")
        with pytest.raises(RuntimeError):  # (the pool logs it and goes on)
            hub.on_readable()
        assert hub.draining == 0
        peer.send(b"second")
        hub.on_readable()  # the channel was re-armed: its next request is served
        assert service.served == 2
        assert peer.recv(10) == b"ok"
    finally:
        hub.close_epoll()
        peer.close()
        ours.close()
