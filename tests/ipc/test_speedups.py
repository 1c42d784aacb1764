"""The C twins of the IPC hot path (childkit/ipc/_speedups.c) against their Python originals.

Each C function must give exactly what its Python twin gives, for any input: the same
bytes, the same ``None``/tuple, the same exception type. Fuzzed with hypothesis over valid
and hostile inputs. The polling loop is checked for what it promises (readable, window
closed, preempted, no GIL held). ``CHILDKIT_REQUIRE_SPEEDUPS=1`` (CI sets it) makes a
missing build a failure here instead of a skip.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types
from typing import Any

import peer_main as pm
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ipc_helpers import Peer, wait_until
from test_wire_fuzz import DATA, FUZZ, I32, N_FDS, OBJECTS, U32, U64

from childkit.ipc import (
    IPCError,
    MessageOption,
    MessageParcel,
    RequestMode,
    _accel,
    _busypoll,
    _caller,
    _server,
    _transport,
    _wire,
)
from childkit.ipc._limits import MAX_WIRE_DATA

if _accel.speedups is None:
    if os.environ.get("CHILDKIT_REQUIRE_SPEEDUPS") == "1":
        pytest.fail("childkit.ipc._speedups is not built (CHILDKIT_REQUIRE_SPEEDUPS=1)",
                    pytrace=False)
    pytest.skip("childkit.ipc._speedups is not built here (no C compiler at install, or "
                "CHILDKIT_NO_SPEEDUPS is set)", allow_module_level=True)

C: Any = _accel.speedups


def same(c_call: Any, py_call: Any) -> Any:
    """Run both; they must return equal values or raise the same exception type."""
    try:
        want: Any = py_call()
    except Exception as exc:
        with pytest.raises(type(exc)):
            c_call()
        return exc
    assert c_call() == want
    return want


def test_the_hot_path_uses_the_c_twins() -> None:
    assert _wire.speedups is C
    assert _wire.encode_transaction is C.encode_transaction
    assert _wire.encode_reply is C.encode_reply
    assert _wire.simple_request is C.simple_request
    assert _wire.simple_reply is C.simple_reply
    assert _busypoll._poll_readable is C.poll_readable
    assert _transport.exchange is C.exchange
    assert _caller.exchange is C.exchange and _server.exchange is C.exchange


def test_a_module_built_with_other_limits_is_not_used() -> None:
    stale = types.SimpleNamespace(
        MAX_RECORD_BYTES=_wire.MAX_RECORD_BYTES, MAX_WIRE_DATA=MAX_WIRE_DATA + 1,
        TXN_DATA_OFFSET=_wire.TXN_DATA_OFFSET, REPLY_DATA_OFFSET=_wire.REPLY_DATA_OFFSET)
    assert _wire._checked(stale) is None  # type: ignore[arg-type]
    assert _wire._checked(C) is C


@FUZZ
@given(U64, U32, U32, st.booleans(), DATA, OBJECTS, N_FDS)
def test_encode_transaction_matches(seq: int, handle: int, code: int, oneway: bool,
                                    data: bytes, objects: list[tuple[int, int]],
                                    n_fds: int) -> None:
    for payload in (data, bytearray(data)):
        same(lambda p=payload: C.encode_transaction(seq, handle, code, oneway, p, objects,
                                                    n_fds),
             lambda p=payload: _wire.py_encode_transaction(seq, handle, code, oneway, p,
                                                           objects, n_fds))


@FUZZ
@given(U64, I32, DATA, OBJECTS, N_FDS)
def test_encode_reply_matches(seq: int, status: int, data: bytes,
                              objects: list[tuple[int, int]], n_fds: int) -> None:
    same(lambda: C.encode_reply(seq, status, data, objects, n_fds),
         lambda: _wire.py_encode_reply(seq, status, data, objects, n_fds))


OUT_OF_RANGE = st.sampled_from([-1, 2**64, 2**32, 2**31, -(2**31) - 1, 2**16, 2**8, 10**30])
# Where a bad number goes: (function, argument index, wrapped in an object reference?)
FIELDS = st.sampled_from([
    ("txn", 0, None), ("txn", 1, None), ("txn", 2, None), ("txn", 6, None),
    ("txn", 5, "kind"), ("txn", 5, "handle"),
    ("reply", 0, None), ("reply", 1, None), ("reply", 4, None),
    ("reply", 3, "kind"), ("reply", 3, "handle"),
])

RANGES: dict[object, tuple[int, int]] = {
    ("txn", 0): (0, 2**64 - 1), ("txn", 1): (0, 2**32 - 1), ("txn", 2): (0, 2**32 - 1),
    ("txn", 6): (0, 2**16 - 1), ("reply", 0): (0, 2**64 - 1),
    ("reply", 1): (-(2**31), 2**31 - 1), ("reply", 4): (0, 2**16 - 1),
    "kind": (0, 2**8 - 1), "handle": (0, 2**32 - 1),
}


@FUZZ
@given(FIELDS, OUT_OF_RANGE)
def test_out_of_range_fields_raise_struct_error_in_both(field: tuple[str, int, str | None],
                                                        bad: int) -> None:
    which, index, in_object = field
    args: list[Any] = [1, 2, 3, False, b"x", [], 0] if which == "txn" else [1, 0, b"x", [], 0]
    if in_object == "kind":
        args[index] = [(bad, 1)]
    elif in_object == "handle":
        args[index] = [(1, bad)]
    else:
        args[index] = bad
    if which == "txn":
        error = same(lambda: C.encode_transaction(*args),
                     lambda: _wire.py_encode_transaction(*args))
    else:
        error = same(lambda: C.encode_reply(*args), lambda: _wire.py_encode_reply(*args))
    lo, hi = RANGES[in_object or (which, index)]
    assert isinstance(error, struct.error) is not (lo <= bad <= hi)


def test_bad_argument_types_are_refused() -> None:
    with pytest.raises(struct.error):
        C.encode_transaction("1", 2, 3, False, b"", [], 0)
    with pytest.raises(TypeError):
        C.encode_transaction(1, 2, 3, False, "text", [], 0)
    with pytest.raises(TypeError):
        C.encode_reply(1, 0, b"", [(1, 2, 3)], 0)
    with pytest.raises(TypeError):
        C.encode_reply(1, 0, b"")
    with pytest.raises(TypeError):
        C.simple_reply(b"")
    with pytest.raises(ValueError):
        C.poll_readable(-1, 0, 0)


def _records(draw: st.DrawFn) -> tuple[bytearray, int]:
    """A receive buffer and a record size: valid plain frames, frames with one field
    changed, or noise; the buffer is at least as long as the header the checks read."""
    kind = draw(st.sampled_from(["txn", "reply", "noise"]))
    if kind == "txn":
        raw = bytearray(_wire.py_encode_transaction(
            draw(U64), draw(U32), draw(U32), draw(st.booleans()), draw(DATA),
            draw(OBJECTS), draw(N_FDS)))
    elif kind == "reply":
        raw = bytearray(_wire.py_encode_reply(draw(U64), draw(I32), draw(DATA),
                                              draw(OBJECTS), draw(N_FDS)))
    else:
        raw = bytearray(draw(st.binary(min_size=0, max_size=80)))
    for _ in range(draw(st.integers(0, 2))):  # flip bytes of the header
        if raw:
            raw[draw(st.integers(0, min(len(raw), 30) - 1))] = draw(st.integers(0, 255))
    size = draw(st.sampled_from([len(raw), len(raw) - 1, len(raw) + 1,
                                 draw(st.integers(-5, 2 * _wire.MAX_RECORD_BYTES))]))
    raw.extend(bytes(max(0, 30 - len(raw))))
    return raw, size


records = st.composite(_records)


@FUZZ
@given(records())
def test_simple_request_and_reply_match(record: tuple[bytearray, int]) -> None:
    buf, size = record
    for view in (buf, bytes(buf), memoryview(buf)):
        same(lambda v=view: C.simple_request(v, size),
             lambda v=view: _wire.py_simple_request(v, size))
        same(lambda v=view: C.simple_reply(v, size),
             lambda v=view: _wire.py_simple_reply(v, size))


def test_simple_checks_at_the_parcel_size_limit() -> None:
    for data_len, fits in ((MAX_WIRE_DATA, True), (MAX_WIRE_DATA + 1, False)):
        txn = _wire.py_encode_transaction(7, 1, 2, False, bytes(data_len), [], 0)
        reply = _wire.py_encode_reply(7, -3, bytes(data_len), [], 0)
        assert (C.simple_request(txn, len(txn)) == (7, 1, 2)) is fits
        assert (C.simple_reply(reply, len(reply)) == (7, -3)) is fits
        assert C.simple_request(txn, len(txn)) == _wire.py_simple_request(txn, len(txn))
        assert C.simple_reply(reply, len(reply)) == _wire.py_simple_reply(reply, len(reply))


def test_a_buffer_shorter_than_a_header_raises_like_struct() -> None:
    with pytest.raises(struct.error):
        C.simple_request(b"\x02" * 10, 40)
    with pytest.raises(struct.error):
        _wire.py_simple_request(b"\x02" * 10, 40)


# ---------------------------------------------------------------------------- polling
@pytest.fixture
def pair() -> Any:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def test_poll_readable_sees_data_already_there(pair: Any) -> None:
    a, b = pair
    a.send(b"x")
    assert C.poll_readable(b.fileno(), time.perf_counter_ns() + 10**9, 10**9) == 1


def test_poll_readable_reports_a_hang_up(pair: Any) -> None:
    a, b = pair
    a.close()
    assert C.poll_readable(b, time.perf_counter_ns() + 10**9, 10**9) == 1  # takes a socket


def test_poll_readable_ends_with_its_window(pair: Any) -> None:
    _a, b = pair
    started = time.perf_counter_ns()
    assert C.poll_readable(b.fileno(), started + 2_000_000, 10**9) == 0
    assert time.perf_counter_ns() - started >= 2_000_000
    assert C.poll_readable(b.fileno(), 0, 10**9) == 0  # a closed window: one look


def test_poll_readable_reports_a_lost_cpu(pair: Any) -> None:
    _a, b = pair
    # Any gap between two looks exceeds a negative threshold: as if descheduled.
    assert C.poll_readable(b.fileno(), time.perf_counter_ns() + 10**9, -1) == -1


def test_poll_readable_lets_other_threads_run(pair: Any) -> None:
    a, b = pair
    # The writer can only run while the poller does not hold the GIL: if it did, the
    # 30 s window would close with nothing seen.
    writer = threading.Thread(target=a.send, args=(b"x",))
    started = time.perf_counter_ns()
    writer.start()
    seen = C.poll_readable(b.fileno(), started + 30 * 10**9, 10**12)
    writer.join(30)
    assert seen == 1


def test_poll_readable_flags_a_closed_fd() -> None:
    # poll(2) flags a closed fd (POLLNVAL) rather than failing: the caller's recv then
    # reports it, as with select.poll.
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert C.poll_readable(r, time.perf_counter_ns() + 10**9, 10**9) == 1


@pytest.mark.parametrize("peer_env", [{"CHILDKIT_NO_SPEEDUPS": "1"}, {}],
                         ids=["python-peer", "c-peer"])
def test_a_peer_with_or_without_the_c_twins_speaks_the_same_protocol(
        peer_env: dict[str, str]) -> None:
    """The parent runs the C twins; its peer runs the Python ones or the C ones. Plain sync
    calls (the hot path on both sides), failures, one-way calls and a reply with an fd all
    work the same."""
    peer = Peer(env=dict(os.environ, **peer_env))
    try:
        with peer.proxy.send_request(pm.USES_SPEEDUPS, MessageParcel()) as reply:
            assert reply.read_bool() is (not peer_env)
        for i in range(200):
            with MessageParcel() as data:
                data.write_int32(i)
                with peer.proxy.send_request(pm.ADD_ONE, data) as reply:
                    assert reply.read_int32() == i + 1
        with pytest.raises(IPCError) as caught, MessageParcel() as data:
            peer.proxy.send_request(pm.USER_ERROR, data)
        assert caught.value.code == 1909042
        oneway = MessageOption(RequestMode.ASYNC)
        for i in range(50):
            with MessageParcel() as data:
                data.write_int32(i)
                peer.proxy.send_request(pm.RECORD, data, oneway)
        with peer.proxy.send_request(pm.GET_RECORDED, MessageParcel()) as reply:
            count = reply.read_int32()
            assert [reply.read_int32() for _ in range(count)] == list(range(50))
    finally:
        peer.close()


# ---------------------------------------------------------------------------- exchange
# The kernel echoes MSG_CMSG_CLOEXEC in msg_flags, as socket.recvmsg_into shows it too.
ECHO = int(socket.MSG_CMSG_CLOEXEC)
def _answer(sock: socket.socket, reply: bytes, fds: list[int] | None = None) -> None:
    sock.recv(65536)
    if fds:
        sock.sendmsg([reply], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(
            f"{len(fds)}i", *fds))])
    else:
        sock.send(reply)


def test_exchange_sends_polls_and_reads_one_record(pair: Any) -> None:
    a, b = pair
    buf = bytearray(1024)
    answer = threading.Thread(target=_answer, args=(b, b"pong"))
    answer.start()
    n, anc, flags, seen, err = C.exchange(a.fileno(), b"ping", buf,
                                          time.perf_counter_ns() + 30 * 10**9, 10**12)
    answer.join(30)
    assert (n, anc, flags, seen, err) == (4, [], ECHO, 1, 0)
    assert buf[:4] == b"pong"
    # Not polling (end 0): it sleeps in the read instead; seen stays 0.
    answer = threading.Thread(target=_answer, args=(b, b"again"))
    answer.start()
    assert C.exchange(a.fileno(), b"ping", buf, 0, 10**12) == (5, [], ECHO, 0, 0)
    answer.join(30)


def test_exchange_hands_over_fds_as_recvmsg_does(pair: Any) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        answer = threading.Thread(target=_answer, args=(b, b"fds", [r, w]))
        answer.start()
        n, anc, flags, _seen, err = C.exchange(a.fileno(), b"ping", bytearray(64), 0, 10**12)
        answer.join(30)
    finally:
        os.close(r)
        os.close(w)
    assert (n, flags, err) == (3, ECHO, 0)
    [(level, kind, data)] = anc
    assert (level, kind, len(data)) == (socket.SOL_SOCKET, socket.SCM_RIGHTS, 8)
    got = struct.unpack("2i", data)
    try:
        for fd in got:
            assert os.get_inheritable(fd) is False  # MSG_CMSG_CLOEXEC, as the Python path
        os.write(got[1], b"x")
        assert os.read(got[0], 1) == b"x"
    finally:
        for fd in got:
            os.close(fd)


def test_exchange_reports_a_truncated_record_and_the_peer_closing(pair: Any) -> None:
    a, b = pair
    answer = threading.Thread(target=_answer, args=(b, b"0123456789"))
    answer.start()
    n, _anc, flags, _seen, err = C.exchange(a.fileno(), b"ping", bytearray(4), 0, 10**12)
    answer.join(30)
    assert (n, bool(flags & socket.MSG_TRUNC), err) == (4, True, 0)
    closer = threading.Thread(target=lambda: (b.recv(64), b.close()))
    closer.start()
    assert C.exchange(a.fileno(), b"ping", bytearray(4), 0, 10**12)[:3] == (0, [], ECHO)
    closer.join(30)


def test_exchange_raises_only_for_the_send(pair: Any) -> None:
    a, b = pair
    b.close()
    with pytest.raises(BrokenPipeError):  # nothing went out: the caller must know
        C.exchange(a.fileno(), b"ping", bytearray(4), 0, 10**12)


def test_exchange_on_a_non_blocking_socket(pair: Any) -> None:
    a, b = pair
    a.setblocking(False)
    # Nothing to read: the read's errno comes back, the record went out.
    assert C.exchange(a.fileno(), b"ping", bytearray(4), 0, 10**12) == (
        -1, [], 0, 0, errno.EAGAIN)
    assert b.recv(64) == b"ping"
    # A full socket: BlockingIOError, nothing sent.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with pytest.raises(BlockingIOError):
        while True:
            C.exchange(a.fileno(), bytes(2048), bytearray(4), 0, 10**12)


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("handler_raises", [False, True])
def test_exchange_runs_signal_handlers_while_it_sleeps(pair: Any, handler_raises: bool
                                                       ) -> None:
    a, b = pair
    handled = threading.Event()

    def handler(signum: int, frame: object) -> None:
        handled.set()
        if handler_raises:
            raise _Interrupted

    def interrupt_then_answer() -> None:
        b.recv(64)  # the request is out: the caller sleeps (or is about to) in its read
        while not handled.is_set():  # until the handler ran (a signal may come early)
            signal.pthread_kill(main, signal.SIGUSR1)
            handled.wait(0.05)
        b.send(b"pong")

    main = threading.get_ident()
    saved = signal.signal(signal.SIGUSR1, handler)
    helper = threading.Thread(target=interrupt_then_answer)
    try:
        helper.start()
        if handler_raises:
            with pytest.raises(_Interrupted):
                C.exchange(a.fileno(), b"ping", bytearray(8), 0, 10**12)
        else:
            assert C.exchange(a.fileno(), b"ping", bytearray(8), 0, 10**12) == (
                4, [], ECHO, 0, 0)
        helper.join(30)
    finally:
        signal.signal(signal.SIGUSR1, saved)
    assert handled.is_set()


# ---------------------------------------------------------------------------- holds
ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT


@pytest.fixture
def armed(pair: Any) -> Any:
    """A socket pair whose ``b`` end is registered EPOLLONESHOT in an epoll (armed)."""
    a, b = pair
    ep = select.epoll()
    ep.register(b.fileno(), ONESHOT_IN)
    limit = C.set_hold_limit(10**12)  # the watcher waits unless a test says otherwise
    yield a, b, ep
    C.set_hold_limit(limit)
    C.drop_holds(b.fileno())
    ep.close()


def test_exchange_takes_exactly_its_five_arguments(pair: Any) -> None:
    # (It no longer disarms in an epoll: a server whose socket was re-armed does not poll.)
    _a, b = pair
    with pytest.raises(TypeError, match="5 arguments"):
        C.exchange(b.fileno(), b"reply", bytearray(8), 0, 10**12, -1)
    with pytest.raises(TypeError, match="5 arguments"):
        C.exchange(b.fileno(), b"reply", bytearray(8), 0)


def hold_readable(a: socket.socket, b: socket.socket, ep: select.epoll) -> None:
    """``b`` disarmed (as while its callback runs), readable, and held by this thread."""
    ep.modify(b.fileno(), select.EPOLLONESHOT)
    a.send(b"x")
    assert C.hold(ep.fileno(), ONESHOT_IN, b.fileno()) is True


def test_a_short_hold_keeps_the_fd_disarmed(armed: Any) -> None:
    _a, b, ep = armed
    ep.modify(b.fileno(), select.EPOLLONESHOT)  # disarmed, as when its callback runs
    assert C.hold(ep.fileno(), ONESHOT_IN, b.fileno()) is True
    assert C.unhold(b.fileno()) is True  # still disarmed: the caller's to re-arm
    assert C.unhold(b.fileno()) is False  # not held any more


def test_the_watcher_rearms_a_hold_that_lasts(armed: Any) -> None:
    a, b, ep = armed
    hold_readable(a, b, ep)
    assert ep.poll(0) == []
    C.set_hold_limit(1_000_000)  # 1 ms
    assert ep.poll(30) == [(b.fileno(), select.EPOLLIN)]  # re-armed by the watcher
    assert C.unhold(b.fileno()) is False


def test_a_hold_is_the_holders_alone(armed: Any) -> None:
    _a, b, ep = armed
    assert C.hold(ep.fileno(), ONESHOT_IN, b.fileno()) is True
    other: list[bool] = []
    thread = threading.Thread(target=lambda: other.append(C.unhold(b.fileno())))
    thread.start()
    thread.join(30)
    assert other == [False]  # another thread cannot end it
    assert C.unhold(b.fileno()) is True


def test_dropped_holds_are_never_rearmed(armed: Any) -> None:
    a, b, ep = armed
    hold_readable(a, b, ep)
    C.drop_holds(b.fileno())  # as IPCThreadPool.unregister does
    C.set_hold_limit(1_000)
    # The watcher has nothing to do: b stays disarmed. (50 ms of waiting for what must
    # not come: with a 1 us limit the watcher would have re-armed it long before.)
    assert C.unhold(b.fileno()) is False
    assert ep.poll(0.05) == []


def test_a_thread_that_sleeps_for_a_reply_gives_up_its_holds(armed: Any) -> None:
    """The reply it waits for may need its held socket served (a callback into a
    callback): exchange re-arms what the thread holds before it sleeps in the read."""
    a, b, ep = armed
    ep.modify(b.fileno(), select.EPOLLONESHOT)
    assert C.hold(ep.fileno(), ONESHOT_IN, b.fileno()) is True
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def peer() -> None:  # answers only once the held socket is served (re-armed)
        d.recv(64)
        a.send(b"callback")
        assert ep.poll(30) == [(b.fileno(), select.EPOLLIN)]
        d.send(b"done")

    thread = threading.Thread(target=peer)
    thread.start()
    try:
        assert C.exchange(c.fileno(), b"call", bytearray(8), 0, 10**12)[0] == 4
    finally:
        thread.join(30)
        c.close()
        d.close()
    assert C.unhold(b.fileno()) is False


def test_release_holds_rearms_what_this_thread_holds(armed: Any) -> None:
    a, b, ep = armed
    hold_readable(a, b, ep)
    C.release_holds()
    assert ep.poll(0) == [(b.fileno(), select.EPOLLIN)]


# Forking a process whose hold watcher (a C thread) runs is what this test is about: the
# C module's at-fork handler must leave the child without it. Python 3.12+ warns about
# any fork of a threaded process; here the fork is the point.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_holds_work_in_a_forked_child(armed: Any) -> None:
    a, b, ep = armed
    assert C.hold(ep.fileno(), ONESHOT_IN, b.fileno()) is True  # the watcher runs here
    pid = os.fork()
    if pid == 0:  # only this thread exists: no watcher, no holds of the parent's
        code = 1
        try:
            fresh = select.epoll()
            fresh.register(b.fileno(), select.EPOLLONESHOT)
            a.send(b"x")
            C.set_hold_limit(1_000_000)
            if C.unhold(b.fileno()) is False and C.hold(fresh.fileno(), ONESHOT_IN,
                                                         b.fileno()):
                code = 0 if fresh.poll(30) == [(b.fileno(), select.EPOLLIN)] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert C.unhold(b.fileno()) is True  # the parent's hold is untouched


def test_bad_hold_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        C.hold(-1, 5, 1)
    with pytest.raises(ValueError):
        C.set_hold_limit(999)
    with pytest.raises(TypeError):
        C.hold(1, 2)


RECVMSG = {"x86_64": 47, "aarch64": 212}.get(os.uname().machine)


@pytest.mark.skipif(RECVMSG is None, reason="recvmsg's system call number is known here "
                    "for x86_64 and aarch64 only")
def test_exchange_reports_a_lost_cpu_and_still_reads(pair: Any) -> None:
    a, b = pair
    caller = threading.get_native_id()

    def sleeping() -> bool:  # in the recvmsg system call (not, say, waiting for the GIL)
        with open(f"/proc/self/task/{caller}/syscall") as syscall:
            return syscall.read().split()[0] == str(RECVMSG)

    def answer_once_it_sleeps() -> None:
        b.recv(64)
        assert wait_until(sleeping)  # past its polling, asleep in the read
        b.send(b"late")

    answer = threading.Thread(target=answer_once_it_sleeps)
    answer.start()
    # Any gap between two reads exceeds a negative threshold: as if descheduled. It stops
    # polling, says so, and sleeps in the read instead.
    result = C.exchange(a.fileno(), b"ping", bytearray(8), time.perf_counter_ns() + 10**10,
                        -1)
    answer.join(30)
    assert result == (4, [], ECHO, -1, 0)


def test_without_a_watcher_thread_nothing_is_held() -> None:
    """At a process limit the watcher cannot start: holds are refused, and the fd is
    re-armed at once instead (as without the C twins); nothing breaks."""
    code = (
        "import os, resource, select, socket\n"
        "from childkit.ipc import _speedups as C\n"
        "if os.geteuid() == 0:  # root's own uid ignores RLIMIT_NPROC: become nobody\n"
        "    os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "a, b = socket.socketpair()\n"
        "ep = select.epoll()\n"
        "ep.register(b.fileno(), select.EPOLLONESHOT)\n"
        "resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))\n"
        "a.send(b'x')\n"
        "print(ep.poll(0) == [], C.hold(ep.fileno(), 1, b.fileno()),\n"
        "      ep.poll(0) == [(b.fileno(), select.EPOLLIN)],\n"
        "      C.hold(ep.fileno(), 1, b.fileno()), C.unhold(b.fileno()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    # disarmed; not held; re-armed instead (readable, reported); not held; nothing held
    assert out.stdout.split() == ["True", "False", "True", "False", "False"]
