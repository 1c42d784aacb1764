"""A hostile or broken peer, and stubs that misbehave: the link answers, bounds, and logs (#13)."""

from __future__ import annotations

import errno
import logging
import math
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peer_main as pm
import pytest
from ipc_helpers import Peer, no_fd_or_thread_leaks, wait_until
from test_connection import connected, int_parcel

from childkit.ipc import (
    Connection,
    DeadRemoteObjectError,
    IPCError,
    IPCErrorCode,
    IPCTimeoutError,
    MessageOption,
    MessageParcel,
    ParamError,
    RemoteProxy,
    RemoteStub,
    RequestMode,
    _wire,
    channel_socketpairs,
)
from childkit.ipc._forwarding import forwarded_call_limit, forwarded_calls_in_flight
from childkit.ipc._option import MAX_TIMEOUT
from childkit.ipc._threadpool import IPCThreadPool

ASYNC = MessageOption(RequestMode.ASYNC)
BOUNDED = MessageOption(timeout=30)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    with no_fd_or_thread_leaks():
        yield


# ---------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("timeout", [MAX_TIMEOUT, 1e-9, 1, 2.5, MAX_TIMEOUT - 0.5])
def test_a_timeout_up_to_the_maximum_is_accepted(timeout: float) -> None:
    assert MessageOption(timeout=timeout).timeout == timeout


@pytest.mark.parametrize("timeout", [
    math.nextafter(MAX_TIMEOUT, math.inf), MAX_TIMEOUT + 1, 4e6, 1e300, 2**63, 2**1100,
    math.inf, -math.inf, math.nan, 0, 0.0, -1, True, "1", 1j,
])
def test_a_timeout_the_call_cannot_use_is_refused_with_a_clear_error(timeout: object) -> None:
    with pytest.raises(ParamError) as err:
        MessageOption(timeout=timeout)  # type: ignore[arg-type]
    assert err.value.code == IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR
    assert "timeout" in err.value.message
    assert MessageOption.MAX_TIMEOUT == MAX_TIMEOUT == 1e6


class Adder(RemoteStub):
    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        reply.write_int32(data.read_int32() + 1)
        return 0


def test_the_longest_timeout_works_in_a_real_call() -> None:
    with connected(Adder("t.Adder")) as (a, _b, _stub):
        proxy = a.root_proxy()
        option = MessageOption(timeout=MAX_TIMEOUT)
        with proxy.send_request(1, int_parcel(41), option) as reply:  # no OverflowError
            assert reply.read_int32() == 42
        replies = proxy.send_requests([(1, int_parcel(1)), (1, int_parcel(2))], option)
        assert [r.read_int32() for r in replies] == [2, 3]
        for r in replies:
            r.close()


# ---------------------------------------------------------------------------- item 7
class Exiting(RemoteStub):
    """Code 1 adds one; code 2 raises the exception it was built with."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__("t.Exiting")
        self.exc = exc
        self.ran: list[int] = []

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        value = data.read_int32()
        self.ran.append(value)
        if code == 2:
            raise self.exc
        reply.write_int32(value + 1)
        return 0


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_stub_raising_a_base_exception_still_answers_its_caller(
        exc: BaseException, capsys: pytest.CaptureFixture[str]) -> None:
    with connected(Exiting(exc)) as (a, _b, _stub):
        proxy = a.root_proxy()
        for data in (int_parcel(1), _with_fd(int_parcel(1))):  # the plain path and the other
            with pytest.raises(IPCError) as err:
                proxy.send_request(2, data, BOUNDED)  # without the fix: a timeout
            data.close()
            assert err.value.code == IPCErrorCode.OH_IPC_INNER_ERROR
            assert type(exc).__name__ in err.value.message
        # The exception went on in the work thread (the pool reports it) and the link lives.
        assert wait_until(lambda: type(exc).__name__ in capsys.readouterr().err)
        with proxy.send_request(1, int_parcel(5), BOUNDED) as reply:
            assert reply.read_int32() == 6


def test_every_request_of_a_batch_is_answered_when_one_raises_system_exit() -> None:
    with connected(Exiting(SystemExit(3))) as (a, _b, stub):
        proxy = a.root_proxy()
        with pytest.raises(IPCError) as err:
            proxy.send_requests([(1, int_parcel(1)), (2, int_parcel(2)), (1, int_parcel(3))],
                                BOUNDED)
        assert err.value.code == IPCErrorCode.OH_IPC_INNER_ERROR
        assert "SystemExit" in err.value.message
        assert stub.ran == [1, 2]  # the one after it was answered without running
        assert a.outstanding_calls() == 0


def test_a_one_way_system_exit_does_not_stop_the_object_queue() -> None:
    with connected(Exiting(SystemExit(3))) as (a, _b, stub):
        proxy = a.root_proxy()
        proxy.send_requests([(2, int_parcel(1)), (1, int_parcel(2)), (1, int_parcel(3))],
                            ASYNC)
        with proxy.send_request(1, int_parcel(4), BOUNDED) as reply:
            assert reply.read_int32() == 5
        assert stub.ran == [1, 2, 3, 4]


def _with_fd(parcel: MessageParcel) -> MessageParcel:
    r, w = socket.socketpair()
    parcel.write_file_descriptor(r.fileno())
    r.close()
    w.close()
    return parcel


# ---------------------------------------------------------------------------- item 8
def _raw_peer() -> tuple[Connection, socket.socket, socket.socket]:
    local, remote = channel_socketpairs()
    conn = Connection(*local, name="logged link")
    conn.start()
    for sock in remote:
        sock.settimeout(30)
    return conn, remote[0], remote[1]


@pytest.mark.parametrize("fault", ["unknown seq", "reply on serve socket", "bad release",
                                   "garbage"])
def test_every_protocol_error_logs_one_warning_naming_the_link(
        fault: str, caplog: pytest.LogCaptureFixture) -> None:
    conn, peer_call, peer_serve = _raw_peer()
    try:
        with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
            if fault == "unknown seq":
                proxy = conn.root_proxy()
                errors: list[BaseException] = []

                def call() -> None:
                    try:
                        proxy.send_request(1, int_parcel(1), BOUNDED)
                    except BaseException as exc:
                        errors.append(exc)

                caller = threading.Thread(target=call)
                caller.start()
                peer_serve.recv(_wire.MAX_RECORD_BYTES)  # HELLO
                peer_serve.recv(_wire.MAX_RECORD_BYTES)  # the request (seq 1)
                peer_serve.send(_wire.encode_reply(999, 0, b"", (), 0))
                caller.join(60)
                assert isinstance(errors[0], DeadRemoteObjectError)
            elif fault == "reply on serve socket":
                peer_call.send(_wire.encode_reply(1, 0, b"", (), 0))
            elif fault == "bad release":
                peer_call.send(_wire.encode_release(7, 1, 0))  # never exported
            else:
                peer_call.send(b"\xff" * 40)
            assert wait_until(lambda: conn.closed)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and "protocol error" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        assert "logged link" in warnings[0].getMessage()
        assert "protocol error" in conn.close_reason
    finally:
        conn.close()
        peer_call.close()
        peer_serve.close()



# A status no childkit peer sends reaches the caller as OH_IPC_INVALID_USER_ERROR_CODE, as a
# stub's would (the others unchanged): a peer cannot make a call fail with a code IPCKit
# does not define. tests/native/test_hostile_peer.py checks the C caller the same way.
INVALID = IPCErrorCode.OH_IPC_INVALID_USER_ERROR_CODE
PEER_STATUSES = [(12345, INVALID), (-1, INVALID), (1901008, INVALID), (1901899, INVALID),
                 (1901999, INVALID), (1902000, INVALID), (1908999, INVALID),
                 (1910000, INVALID), (1901000, 1901000), (1901007, 1901007),
                 (1901900, 1901900), (1909000, 1909000), (1909999, 1909999)]


@pytest.mark.parametrize("error", [False, True], ids=["plain reply", "error reply"])
@pytest.mark.parametrize(("status", "code"), PEER_STATUSES)
def test_a_peer_s_status_outside_the_transportable_codes_is_clamped(
        status: int, code: int, error: bool) -> None:
    conn, peer_call, peer_serve = _raw_peer()
    errors: list[BaseException] = []
    try:
        def call() -> None:
            try:
                conn.root_proxy().send_request(1, int_parcel(1), BOUNDED).close()
            except BaseException as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        peer_serve.recv(_wire.MAX_RECORD_BYTES)  # HELLO
        request = _wire.decode_record(peer_serve.recv(_wire.MAX_RECORD_BYTES), [])[0]
        peer_serve.send(_wire.encode_error_reply(request.seq, status, "hostile") if error
                        else _wire.encode_reply(request.seq, status, b"", (), 0))
        caller.join(60)
        assert not caller.is_alive()
        assert isinstance(errors[0], IPCError) and errors[0].code == code
        assert ("hostile" in str(errors[0])) is error
        assert not conn.closed  # (not a protocol error: the link stays)
    finally:
        conn.close()
        peer_call.close()
        peer_serve.close()


# A forwarded sync call holds one of this process's work threads until its target answers
# (the caller's timeout does not travel). Half the work threads at most may wait so; one
# more is refused at once, and direct requests still find threads.
class Held(RemoteStub):
    """Code 1 adds one, once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__("test.Held")
        self.release = threading.Event()

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        assert self.release.wait(60)
        reply.write_int32(data.read_int32() + 1)
        return 0


class Keep(RemoteStub):
    """Keeps the remote object each request brings."""

    def __init__(self) -> None:
        super().__init__("test.Keep")
        self.kept: list[RemoteProxy] = []

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        self.kept.append(data.read_remote_object())  # type: ignore[arg-type]
        return 0


def test_forwarded_calls_hold_at_most_half_the_work_threads() -> None:
    held = Held()
    # The third process's object, served by a pool of its own so that only the forwarders
    # take this process's work threads; a peer that keeps the proxy of it it is sent,
    # which reaches the third only through this side's forwarding stub.
    pool = IPCThreadPool(max_threads=32, name="ipc-work-held")
    third_end, holder_end = channel_socketpairs()
    third = Connection(*third_end, name="third")
    holder = Connection(*holder_end, local_root=held, name="holder", pool=pool)
    keep = Keep()
    with connected(keep) as (us, _peer, _):
        third.start()
        holder.start()
        limit = forwarded_call_limit()
        results: list[object] = []
        callers: list[threading.Thread] = []
        try:
            assert third.wait_peer_hello(30)
            with MessageParcel() as data:
                data.write_remote_object(third.root_proxy())  # goes as a forwarding stub
                us.root_proxy().send_request(1, data, BOUNDED).close()
            forwarded = keep.kept[0]

            def call(value: int) -> None:
                try:
                    with forwarded.send_request(1, int_parcel(value)) as reply:
                        results.append(reply.read_int32())
                except IPCError as exc:
                    results.append(exc)

            callers += [threading.Thread(target=call, args=(i,)) for i in range(limit)]
            for t in callers:
                t.start()
            assert wait_until(lambda: forwarded_calls_in_flight() == limit, 60)
            call(1000)  # one more: refused at once, with the reason
            assert len(results) == 1 and isinstance(results[0], IPCError), results
            assert results[0].code == IPCErrorCode.OH_IPC_INNER_ERROR
            assert "forwarded calls" in str(results[0])
            with MessageParcel() as data:  # a direct request still finds a thread
                data.write_remote_object(Held())
                us.root_proxy().send_request(1, data, BOUNDED).close()
            held.release.set()
            for t in callers:
                t.join(60)
            assert sorted(r for r in results[1:] if isinstance(r, int)) == list(
                range(1, limit + 1))
            assert forwarded_calls_in_flight() == 0
        finally:
            held.release.set()
            for t in callers:
                t.join(60)
            third.close()
            holder.close()
            assert wait_until(lambda: pool.close_if_unused(30))


# ---------------------------------------------------------------------------- item 5
class Gate(RemoteStub):
    """Records one-way values; the first request waits until the gate opens."""

    def __init__(self) -> None:
        super().__init__("t.Gate")
        self.open = threading.Event()
        self.entered = threading.Event()
        self.seen: list[int] = []

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if not self.seen:
            self.entered.set()
            assert self.open.wait(60)
        self.seen.append(data.read_int32())
        return 0


def _flood_a_stuck_stub(monkeypatch: pytest.MonkeyPatch, bound: str, limit: int,
                        batches: list[list[MessageParcel]], held: str, per_record: int,
                        ) -> None:
    """Send ``batches`` one-way (one record each) to a stub stuck on the first request;
    the queued ``held`` ("total_bytes" or "total_fds") of the connection must stop the
    reader at ``limit`` (``bound`` patched to it) plus at most one record's worth, and
    everything must arrive, in order, once the stub goes on."""
    from childkit.ipc import _oneway

    monkeypatch.setattr(_oneway, bound, limit)
    gate = Gate()
    with connected(gate) as (a, b, _stub):
        queues = b._server.oneway
        peak = 0
        enqueue = queues.enqueue_locked

        def spy(handle: int, entry: object, count: int) -> None:
            nonlocal peak
            enqueue(handle, entry, count)  # type: ignore[arg-type]
            peak = max(peak, getattr(queues, held))

        monkeypatch.setattr(queues, "enqueue_locked", spy)
        proxy = a.root_proxy()

        def send() -> None:
            for batch in batches:
                proxy.send_requests([(1, p) for p in batch], ASYNC)

        sender = threading.Thread(target=send)
        try:
            sender.start()
            assert gate.entered.wait(30)
            assert wait_until(lambda: getattr(queues, held) > limit)
            # The reader waits for room now; it read at most one record past the bound.
            assert peak <= limit + per_record
            gate.open.set()
            sender.join(60)
            assert not sender.is_alive()
            total = sum(len(batch) for batch in batches)
            assert wait_until(lambda: len(gate.seen) == total)
            assert gate.seen == list(range(total))
            assert peak <= limit + per_record
            assert wait_until(lambda: queues.total_bytes == queues.total_fds == 0)
        finally:
            gate.open.set()
            sender.join(60)
            for batch in batches:
                for p in batch:
                    p.close()


def test_queued_one_way_bytes_are_bounded_per_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 60 requests of 100 KB to a stuck stub: 6 MB, far under the count bound (4096). The
    # reader stops once 1 MiB is queued.
    payload = bytes(100_000)
    batches = []
    for i in range(60):
        p = int_parcel(i)
        p.write_buffer(payload)
        batches.append([p])
    _flood_a_stuck_stub(monkeypatch, "ASYNC_BACKLOG_BYTES", 1 << 20, batches, "total_bytes",
                        per_record=110_000)


def test_queued_one_way_fds_are_bounded_per_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 records of 4 requests with 4 fds each (480 fds) to a stuck stub; the reader stops
    # once 16 fds are queued, so this process never holds more than a record's worth more.
    r, w = socket.socketpair()
    batches = []
    value = 0
    for _ in range(30):
        batch = []
        for _ in range(4):
            p = int_parcel(value)
            value += 1
            for _ in range(4):
                p.write_file_descriptor(r.fileno())
            batch.append(p)
        batches.append(batch)
    r.close()
    w.close()
    _flood_a_stuck_stub(monkeypatch, "ASYNC_BACKLOG_FDS", 16, batches, "total_fds",
                        per_record=16)


# ---------------------------------------------------------------------------- item 4
HOSTILE = Path(__file__).with_name("hostile_peer.py")


def _start_hostile(mode: str, stub: RemoteStub) -> tuple[subprocess.Popen[bytes], Connection]:
    local, remote = channel_socketpairs()
    proc = subprocess.Popen(
        [sys.executable, str(HOSTILE), str(remote[0].fileno()), str(remote[1].fileno()), mode],
        pass_fds=[s.fileno() for s in remote])
    for sock in remote:
        sock.close()
    conn = Connection(*local, local_root=stub, name=f"hostile child {proc.pid}")
    conn.start()
    return proc, conn


def _stop(proc: subprocess.Popen[bytes], conn: Connection) -> None:
    conn.close()
    proc.kill()
    proc.wait(30)


def test_a_peer_that_never_reads_its_replies_holds_no_work_thread(
        caplog: pytest.LogCaptureFixture) -> None:
    # The hostile child floods sync requests at an object of this process and reads no
    # reply. Meanwhile another child's calls into this process work (each within its
    # timeout), a new IPC child starts, and the hostile link is closed with a warning.
    friend = Peer()
    stop = threading.Event()
    failures: list[BaseException] = []
    rounds = [0]

    def call_back() -> None:  # the friend calls an object of this process, again and again
        mine = Adder("t.Adder")
        while not stop.is_set():
            data = int_parcel()
            data.write_remote_object(mine)
            data.write_int32(rounds[0])
            try:
                with friend.proxy.send_request(pm.CALL_BACK, data, MessageOption(timeout=20)) \
                        as reply:
                    assert reply.read_int32() == rounds[0] + 1
                rounds[0] += 1
            except BaseException as exc:
                failures.append(exc)
                return
            finally:
                data.close()

    caller = threading.Thread(target=call_back)
    caller.start()
    try:
        with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
            proc, conn = _start_hostile("sync", Adder("t.Adder"))
            try:
                assert wait_until(lambda: conn.closed, timeout=60)
                assert "does not read its replies" in conn.close_reason
                newcomer = Peer()  # a new IPC child starts (a work thread reads its hello)
                newcomer.close()
                assert wait_until(lambda: rounds[0] > 0)
            finally:
                _stop(proc, conn)
        warnings = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
        assert len(warnings) == 1 and f"hostile child {proc.pid}" in warnings[0]
    finally:
        stop.set()
        caller.join(60)
        friend.close()
    assert not failures, failures


# ---------------------------------------------------------------------------- item 3
def test_a_sync_timeout_covers_sending_to_a_peer_that_does_not_read() -> None:
    # The peer stopped reading: its socket fills after a few 190 KB requests. Every call
    # still ends with IPCTimeoutError within its budget, sending included; none blocks.
    conn, peer_call, peer_serve = _raw_peer()
    budget = 0.3
    took: list[float] = []
    errors: list[BaseException] = []

    def calls() -> None:
        proxy = conn.root_proxy()
        for _ in range(15):
            data = MessageParcel()
            data.write_bytes(bytes(190_000))
            started = time.monotonic()
            try:
                proxy.send_request(1, data, MessageOption(timeout=budget)).close()
            except IPCTimeoutError:
                took.append(time.monotonic() - started)
            except BaseException as exc:
                errors.append(exc)
                return
            finally:
                data.close()

    caller = threading.Thread(target=calls)
    try:
        caller.start()
        caller.join(60)
        assert not caller.is_alive(), "a timed call blocked sending"
        assert not errors, errors
        assert len(took) == 15
        assert max(took) < budget + 5  # the budget, plus a loaded machine's slack
        # The link is still usable for what does not need the peer to read.
        assert not conn.closed
    finally:
        conn.close()
        caller.join(60)
        peer_call.close()
        peer_serve.close()


# ---------------------------------------------------------------------------- item 2
@contextmanager
def fd_table_full() -> Iterator[list[int]]:
    """This process at its fd limit: the soft RLIMIT_NOFILE lowered to just above the
    highest open fd and every lower free number taken; yields the fillers (close one to
    make room). Restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    fillers: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
    try:
        while True:
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
                break
        yield fillers
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_writing_an_open_fd_at_the_fd_limit_names_the_resource() -> None:
    r, w = os.pipe()
    try:
        with MessageParcel() as parcel, fd_table_full() as fillers:
            with pytest.raises(IPCError) as err:
                parcel.write_file_descriptor(r)  # open, but no copy can be made
            assert err.value.code == IPCErrorCode.OH_IPC_INNER_ERROR
            assert "file descriptors" in err.value.message and "EMFILE" in err.value.message
            assert "not an open" not in err.value.message
            os.close(fillers.pop())  # one free: it works again, the parcel unharmed
            parcel.write_file_descriptor(r)
            # A closed fd is still the caller's mistake (the other side of the edge).
            with pytest.raises(ParamError):
                parcel.write_file_descriptor(fillers[-1] + 1000)
    finally:
        os.close(r)
        os.close(w)


def test_reading_an_fd_at_the_fd_limit_names_the_resource_and_keeps_it() -> None:
    r, w = os.pipe()
    parcel = MessageParcel()
    try:
        parcel.write_file_descriptor(r)
        parcel.write_int32(7)
        with fd_table_full() as fillers:
            with pytest.raises(IPCError) as err:
                parcel.read_file_descriptor()
            assert err.value.code == IPCErrorCode.OH_IPC_INNER_ERROR
            assert "file descriptors" in err.value.message
            os.close(fillers.pop())
            fd = parcel.read_file_descriptor()  # nothing was consumed by the failure
            os.close(fd)
            assert parcel.read_int32() == 7
    finally:
        parcel.close()
        os.close(r)
        os.close(w)


def test_sending_fds_at_the_fd_limit_fails_with_a_code_and_leaks_nothing() -> None:
    class Reader(RemoteStub):
        def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                              option: MessageOption) -> int:
            reply.write_int32(data.read_int32())
            return 0

    with connected(Reader("t.Reader")) as (a, _b, _stub):
        proxy = a.root_proxy()
        r, w = os.pipe()
        data = int_parcel(5)
        try:
            for _ in range(3):
                data.write_file_descriptor(r)
            for option in (BOUNDED, ASYNC, None):
                with fd_table_full() as fillers:
                    os.close(fillers.pop())  # room for one copy, not three: none is kept
                    with pytest.raises(IPCError) as err:
                        proxy.send_request(1, data, option)
                    assert err.value.code == IPCErrorCode.OH_IPC_INNER_ERROR
                    assert "file descriptors" in err.value.message
                    with pytest.raises(IPCError):
                        proxy.send_requests([(1, data)], option)
            with proxy.send_request(1, data, BOUNDED) as reply:  # the link is unharmed
                assert reply.read_int32() == 5
        finally:
            data.close()
            os.close(r)
            os.close(w)


def test_an_awaited_call_s_timeout_covers_sending_too() -> None:
    import asyncio

    conn, peer_call, peer_serve = _raw_peer()
    proxy = conn.root_proxy()

    async def calls() -> list[float]:
        took = []
        for _ in range(15):
            data = MessageParcel()
            data.write_bytes(bytes(190_000))
            started = time.monotonic()
            with pytest.raises(IPCTimeoutError):
                await proxy.send_request_async(1, data, MessageOption(timeout=0.3))
            took.append(time.monotonic() - started)
            data.close()
        return took

    result: list[list[float]] = []
    runner = threading.Thread(target=lambda: result.append(asyncio.run(calls())))
    try:
        runner.start()
        runner.join(60)
        assert not runner.is_alive(), "an awaited call blocked its loop sending"
        assert max(result[0]) < 5.3
    finally:
        conn.close()
        runner.join(60)
        peer_call.close()
        peer_serve.close()
