"""Large buffers without copies (issue 16): kept by reference when written, read scattered
straight into their own ``bytes`` when received (docs/ipc.md, "Large parcels").

Both need the C twins (``_speedups.Pieces`` and its ``exchange``); without them
(``CHILDKIT_NO_SPEEDUPS=1``) the same tests check that the parcel copies as before and
reads and writes the same.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import large_peer as lp
import pytest
from ipc_helpers import fd_count, wait_until

from childkit.ipc import (
    Connection,
    MessageOption,
    MessageParcel,
    ParcelReadError,
    ParcelWriteError,
    RemoteProxy,
    RemoteStub,
    _accel,
    _parcel,
    _pieces,
    _recvbuf,
    _transport,
    _wire,
    channel_socketpairs,
)
from childkit.ipc._fdutil import received_fds
from childkit.ipc._limits import MAX_PARCEL_DATA
from childkit.ipc._option import RequestMode

C = _accel.speedups is not None
KEEP = _pieces.KEEP_BYTES
SCATTER = _accel.speedups.SCATTER_BYTES if _accel.speedups is not None else KEEP
#: The largest buffer a parcel holds (5 bytes of tag and length go before it).
LIMIT = MAX_PARCEL_DATA - 5


def kept(parcel: MessageParcel, data: bytes) -> bool:
    """Whether ``parcel`` holds ``data`` itself (by reference), not a copy."""
    parts = getattr(parcel._buf, "parts", ())
    return any(part is data for part in parts)


# ---------------------------------------------------------------------------- writing
@pytest.mark.parametrize("size", [KEEP - 1, KEEP, LIMIT])
def test_a_large_bytes_is_kept_by_reference_from_the_threshold(size: int) -> None:
    data = os.urandom(size)
    with MessageParcel() as parcel:
        parcel.write_buffer(data)
        assert kept(parcel, data) == (C and size >= KEEP)
        assert parcel.get_data_size() == parcel.get_write_position() == size + 5
        assert parcel.read_buffer() is data if kept(parcel, data) else parcel.read_buffer()
        parcel.rewind_read_position(0)
        assert parcel.read_buffer() == data
        assert parcel.get_readable_bytes() == 0


@pytest.mark.parametrize("make", [bytearray, memoryview, lambda b: memoryview(bytearray(b))])
def test_mutable_buffers_are_copied(make: Callable[[bytes], Any]) -> None:
    data = os.urandom(KEEP * 2)
    value = make(data)
    with MessageParcel() as parcel:
        parcel.write_buffer(value)
        assert not kept(parcel, value)
        if isinstance(value, bytearray):
            value[0] ^= 0xFF  # the caller changes its buffer: the parcel keeps what it got
        assert parcel.read_buffer() == data


def test_a_large_string_is_kept_as_its_utf8() -> None:
    text = "é" * KEEP
    with MessageParcel() as parcel:
        parcel.write_string(text)
        assert parcel.get_data_size() == 5 + 2 * KEEP
        assert parcel.read_string() == text


def test_the_parcel_limit_holds_for_kept_buffers() -> None:
    with MessageParcel() as parcel:
        with pytest.raises(ParcelWriteError):
            parcel.write_buffer(bytes(LIMIT + 1))
        assert parcel.get_data_size() == 0
        parcel.write_buffer(bytes(LIMIT))
        with pytest.raises(ParcelWriteError):
            parcel.write_bool(True)
        with pytest.raises(ParcelWriteError):
            parcel.write_buffer(bytes(KEEP))
        assert parcel.get_data_size() == MAX_PARCEL_DATA


def test_values_around_a_kept_buffer_read_back_in_order() -> None:
    first, second = os.urandom(KEEP * 3), os.urandom(KEEP * 4)
    with MessageParcel() as parcel:
        parcel.write_int32(7)
        parcel.write_buffer(first)
        parcel.write_buffer(second)
        assert kept(parcel, first) == kept(parcel, second) == C
        size = parcel.get_data_size()
        assert size == 5 + 5 + len(first) + 5 + len(second)
        assert parcel.read_int32() == 7
        assert parcel.read_buffer() == first
        assert parcel.read_buffer() == second
        # Reading the wrong type at a kept buffer fails as for any parcel, and reads nothing.
        parcel.rewind_read_position(5)
        with pytest.raises(ParcelReadError):
            parcel.read_int64()
        assert parcel.get_read_position() == 5
        assert parcel.read_buffer() == first


def test_a_write_after_a_kept_buffer_leaves_earlier_reads_alone() -> None:
    data = os.urandom(KEEP * 2)
    with MessageParcel() as parcel:
        parcel.write_buffer(data)
        got = parcel.read_buffer()
        parcel.write_int32(-1)  # the data is joined into the parcel's own bytearray now
        parcel.write_buffer(b"more")
        assert got == data and isinstance(got, bytes)
        parcel.rewind_read_position(0)
        assert parcel.read_buffer() == data
        assert parcel.read_int32() == -1
        assert parcel.read_buffer() == b"more"


def test_rewinding_the_write_position_around_a_kept_buffer() -> None:
    data = os.urandom(KEEP)
    with MessageParcel() as parcel:
        parcel.write_int32(1)
        parcel.write_buffer(data)
        end = parcel.get_write_position()
        with pytest.raises(Exception, match="inside a written value"):
            parcel.rewind_write_position(end - 1)
        parcel.rewind_write_position(end)
        parcel.write_int32(2)
        parcel.rewind_write_position(5)
        assert parcel.get_data_size() == 5
        assert parcel.read_int32() == 1
        with pytest.raises(ParcelReadError):
            parcel.read_buffer()


def test_append_copies_a_kept_buffer_into_another_parcel() -> None:
    data = os.urandom(KEEP)
    with MessageParcel() as source, MessageParcel() as target:
        source.write_buffer(data)
        target.write_int32(3)
        target.append(source)
        assert target.read_int32() == 3
        assert target.read_buffer() == data
        assert source.read_buffer() == data


def test_a_parcel_reused_after_rewinding_to_zero_keeps_the_new_buffer() -> None:
    first, second = os.urandom(KEEP), os.urandom(KEEP * 2)
    with MessageParcel() as parcel:
        parcel.write_buffer(first)
        parcel.rewind_write_position(0)
        parcel.write_buffer(second)
        assert parcel.get_data_size() == 5 + len(second)
        assert parcel.read_buffer() == second


# ---------------------------------------------------------------------------- the C pieces
needs_c = pytest.mark.skipif(not C, reason="Pieces are the C twins' (the Python path copies)")


@needs_c
def test_pieces_read_as_one_buffer_joined_once() -> None:
    assert _accel.speedups is not None
    pieces = _accel.speedups.Pieces((b"ab", b"", b"cde"))
    assert len(pieces) == 5 and [pieces[i] for i in range(5)] == list(b"abcde")
    assert bytes(pieces) == b"abcde" and pieces.flat() is pieces.flat()
    with pytest.raises(IndexError):
        pieces[5]
    with pytest.raises(TypeError):
        _accel.speedups.Pieces((b"a", bytearray(b"b")))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _accel.speedups.Pieces(())
    with pytest.raises(TypeError):
        memoryview(pieces)[0] = 1  # type: ignore[index]


# ---------------------------------------------------------------------------- receiving
def _lone_reply(seq: int, data: bytes) -> bytes:
    with MessageParcel() as parcel:
        parcel.write_buffer(data)
        return _wire.py_encode_reply(seq, 0, bytes(parcel._buf), (), 0)


def _in_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a new thread (the C exchange's guess of the next record's size is per
    thread: a new one starts from "small")."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(60)
    assert out, "the thread failed"
    return out[0]


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    yield a, b
    a.close()
    b.close()


def _read(sock: socket.socket, buf: _recvbuf.RecvBuffer) -> tuple[int, int, Any]:
    n, anc, flags = _transport.read_record(sock, buf)
    for fd in received_fds(anc):
        os.close(fd)
    return n, flags, buf.scattered


@pytest.mark.parametrize("size", [SCATTER - 1, SCATTER, LIMIT])
def test_a_lone_large_buffer_is_read_scattered_after_a_large_record(
        sockets: tuple[socket.socket, socket.socket], size: int) -> None:
    a, b = sockets
    data = os.urandom(size)
    record = _lone_reply(5, data)

    def run() -> list[tuple[int, int, Any]]:
        buf = _recvbuf._new()
        got = []
        for _ in range(2):
            a.send(record)
            got.append(_read(b, buf))
        assert _wire.simple_reply(buf, got[1][0]) == (5, 0)  # the frame head is in place
        return got

    (n1, _f1, first), (n2, flags, second) = _in_thread(run)
    assert n1 == n2 == len(record) and not flags & _transport.TRUNCATED
    assert first is None  # a thread's first record: read whole
    if C and size >= SCATTER:
        at, blob = second
        assert at == _wire.REPLY_DATA_OFFSET + 5 and blob == data and type(blob) is bytes
    else:
        assert second is None


def test_records_that_are_not_one_lone_buffer_are_read_whole(
        sockets: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockets
    data = os.urandom(SCATTER * 2)
    with MessageParcel() as two:
        two.write_int32(1)
        two.write_buffer(data)
        not_first = _wire.py_encode_reply(6, 0, bytes(two._buf), (), 0)
    error = _wire.py_encode_reply(7, 3, bytes(_lone_parcel(data)), (), 0)  # a failure status
    oneway = _wire.py_encode_transaction(0, 1, 2, True, bytes(_lone_parcel(data)), (), 0)
    short = _lone_reply(8, data)[:-1]  # its length says one byte more than it holds
    records = [not_first, error, oneway, short]

    def run() -> list[tuple[int, int, Any]]:
        buf = _recvbuf._new()
        a.send(_lone_reply(1, data))
        _read(b, buf)  # now this thread expects large records
        out = []
        for record in records:
            a.send(record)
            n, flags, scattered = _read(b, buf)
            out.append((n, flags, scattered))
            assert bytes(buf[:n]) == record
        return out

    for (n, flags, scattered), record in zip(_in_thread(run), records, strict=True):
        assert (n, flags & _transport.TRUNCATED, scattered) == (len(record), 0, None)


def _lone_parcel(data: bytes) -> bytes:
    with MessageParcel() as parcel:
        parcel.write_buffer(data)
        return bytes(parcel._buf)


def test_a_record_with_fds_is_read_whole_with_its_fds(
        sockets: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockets
    data = os.urandom(SCATTER)
    before = fd_count()

    def run() -> tuple[int, Any, list[int]]:
        buf = _recvbuf._new()
        a.send(_lone_reply(1, data))
        _read(b, buf)
        r, w = os.pipe()
        try:
            _transport.sendmsg(a, _lone_reply(2, data), [r])
        finally:
            os.close(r)
            os.close(w)
        n, anc, _flags = _transport.read_record(b, buf)
        return n, buf.scattered, received_fds(anc)

    _n, scattered, fds = _in_thread(run)
    assert scattered is None and len(fds) == 1
    os.close(fds[0])
    assert fd_count() == before


def test_an_oversized_record_is_cut_not_allocated(
        sockets: tuple[socket.socket, socket.socket]) -> None:
    """A hostile peer's record beyond the protocol's limit is read truncated into the
    receive buffer (and refused by the decoder), however large it says its buffer is."""
    a, b = sockets
    size = _wire.MAX_RECORD_BYTES + 4096
    head = _wire.reply_head(1, size - _wire.REPLY_DATA_OFFSET)
    lie = head + bytes([_parcel.T_BYTES]) + (size - len(head) - 5).to_bytes(4, "little")
    record = lie + bytes(size - len(lie))

    def run() -> tuple[int, int, Any]:
        buf = _recvbuf._new()
        a.send(_lone_reply(1, os.urandom(SCATTER)))
        _read(b, buf)
        a.send(record)
        return _read(b, buf)

    n, flags, scattered = _in_thread(run)
    assert flags & _transport.TRUNCATED and scattered is None
    assert n <= _wire.MAX_RECORD_BYTES


def test_a_scattered_record_is_put_back_for_any_other_reader() -> None:
    buf = _recvbuf._new()
    data = os.urandom(SCATTER)
    record = _lone_reply(9, data)
    at = _wire.REPLY_DATA_OFFSET + 5
    buf[:at] = record[:at]
    buf.scattered = (at, data)
    _recvbuf.restore(buf)
    assert buf.scattered is None and bytes(buf[: len(record)]) == record
    _recvbuf.restore(buf)  # nothing to put back: nothing happens
    assert bytes(buf[: len(record)]) == record


# ---------------------------------------------------------------------------- round trips
@pytest.fixture
def peer() -> Iterator[RemoteProxy]:
    """A peer process echoing buffers, counting the requests that came scattered."""
    local, remote = channel_socketpairs()
    proc = subprocess.Popen(
        [sys.executable, str(Path(lp.__file__)), str(remote[0].fileno()),
         str(remote[1].fileno())], pass_fds=[s.fileno() for s in remote])
    for sock in remote:
        sock.close()
    conn = Connection(*local, name="zero-copy peer")
    conn.start()
    try:
        assert conn.wait_peer_hello(30) is True
        yield conn.root_proxy()
    finally:
        conn.close()
        proc.wait(30)


def _peer_scattered(proxy: RemoteProxy) -> int:
    with proxy.send_request(lp.SCATTERED, MessageParcel()) as reply:
        return reply.read_int64()


@pytest.mark.parametrize("size", [SCATTER - 1, SCATTER, 64 * 1024, LIMIT])
def test_echoes_at_the_edges_come_back_whole_and_scatter_from_the_threshold(
        peer: RemoteProxy, size: int) -> None:
    def run() -> tuple[int, int]:
        data = os.urandom(size)
        mine, theirs = _recvbuf.scattered_count(), _peer_scattered(peer)
        for _ in range(6):
            with MessageParcel() as request:
                request.write_buffer(data)
                with peer.send_request(lp.ECHO, request) as reply:
                    got = reply.read_buffer()
                    assert got == data and reply.get_readable_bytes() == 0
                    reply.rewind_write_position(0)  # writes after the read: it stays
                    reply.write_int32(1)
            assert got == data
        return _recvbuf.scattered_count() - mine, _peer_scattered(peer) - theirs

    mine, theirs = _in_thread(run)
    if C and size >= SCATTER:
        assert mine >= 4 and theirs >= 4  # all but the first on each thread
    else:
        assert mine == theirs == 0


def test_a_large_mixed_parcel_is_adopted_and_echoed_whole(peer: RemoteProxy) -> None:
    data = os.urandom(LIMIT - 10)
    for _ in range(3):
        with MessageParcel() as request:
            request.write_int32(4)
            request.write_buffer(data)
            with peer.send_request(lp.ECHO_ALL, request) as reply:
                assert reply._owner is not None  # read where it arrived: not scattered
                assert reply.read_int32() == 4
                assert reply.read_buffer() == data


def test_scattered_echoes_leak_no_fds_and_keep_few_buffers() -> None:
    data = os.urandom(LIMIT)
    before = fd_count()
    local, remote = channel_socketpairs()
    server = Connection(*remote, local_root=lp.LargeEcho(), name="B")
    client = Connection(*local, name="A")
    server.start()
    client.start()
    try:
        assert client.wait_peer_hello(10) is True
        proxy = client.root_proxy()
        for _ in range(10):
            with MessageParcel() as request:
                request.write_buffer(data)
                with proxy.send_request(lp.ECHO, request) as reply:
                    assert reply.read_buffer() == data
    finally:
        client.close()
        server.close()
    assert wait_until(lambda: fd_count() <= before), f"fds leaked: {before} -> {fd_count()}"
    assert _recvbuf.free_count() <= _recvbuf.FREE_MAX


class EchoAfterOneway(RemoteStub):
    """Echoes buffers; its one-way request waits until ``go`` is set."""

    ECHO, WAIT = 1, 2

    def __init__(self) -> None:
        super().__init__("test.EchoAfterOneway")
        self.go = threading.Event()
        self.waiting = threading.Event()

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == self.ECHO:
            reply.write_buffer(data.read_buffer())
        elif code == self.WAIT:
            self.waiting.set()
            self.go.wait(60)
        return 0


def test_a_large_request_queued_behind_one_way_ones_is_served_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync request to an object with one-way requests pending is not run on the
    thread that read it but queued, decoded from the whole record (one read scattered is
    put back together first: test_a_scattered_record_is_put_back_for_any_other_reader;
    which pool thread reads it, and so whether it came scattered, is the pool's choice)."""
    stub = EchoAfterOneway()
    decoded = threading.Event()
    restore = _recvbuf.restore

    def spy(buf: object) -> None:
        decoded.set()  # the record is being decoded whole (the queued path)
        restore(buf)

    monkeypatch.setattr(_recvbuf, "restore", spy)
    data = os.urandom(SCATTER * 4)
    local, remote = channel_socketpairs()
    server = Connection(*remote, local_root=stub, name="B")
    client = Connection(*local, name="A")
    server.start()
    client.start()
    try:
        assert client.wait_peer_hello(10) is True
        proxy = client.root_proxy()

        def echo() -> bytes:
            with MessageParcel() as request:
                request.write_buffer(data)
                with proxy.send_request(stub.ECHO, request) as reply:
                    return reply.read_buffer()

        for _ in range(4):  # the server's threads now expect large records
            assert echo() == data
        proxy.send_request(stub.WAIT, MessageParcel(), MessageOption(RequestMode.ASYNC))
        assert stub.waiting.wait(30)
        decoded.clear()
        got: list[bytes] = []
        caller = threading.Thread(target=lambda: got.append(echo()))
        caller.start()
        assert decoded.wait(30)  # read while the one-way request runs: queued behind it
        stub.go.set()
        caller.join(60)
        assert got == [data]
    finally:
        client.close()
        server.close()


def test_read_record_raises_what_recvmsg_into_raises(
        sockets: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockets
    b.setblocking(False)
    buf = _recvbuf._new()
    with pytest.raises(BlockingIOError):
        _transport.read_record(b, buf)
    a.send(b"hi")
    n, anc, flags = _transport.read_record(b, buf)
    assert (n, anc, flags & _transport.TRUNCATED, bytes(buf[:2])) == (2, [], 0, b"hi")
    a.close()
    assert _transport.read_record(b, buf)[0] == 0  # the peer closed: end of stream
    b.close()
    with pytest.raises(OSError):
        _transport.read_record(b, buf)


def test_a_kept_buffer_travels_with_fds_both_ways(peer: RemoteProxy) -> None:
    """A frame with fds is encoded in one piece: the kept buffer is joined into it."""
    data = os.urandom(LIMIT - 20)
    r, w = os.pipe()
    before = fd_count()
    try:
        with MessageParcel() as request:
            request.write_file_descriptor(r)
            request.write_buffer(data)
            assert kept(request, data) == C
            with peer.send_request(lp.ECHO_ALL, request) as reply:
                fd = reply.read_file_descriptor()
                assert reply.read_buffer() == data
            os.write(w, b"!")
            assert os.read(fd, 1) == b"!"  # the same pipe, through the peer and back
            os.close(fd)
    finally:
        os.close(r)
        os.close(w)
    assert wait_until(lambda: fd_count() <= before - 2)
