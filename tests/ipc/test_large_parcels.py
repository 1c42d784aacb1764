"""Large parcels (issue 16): sent gathered, received without a copy, read with one.

The mechanisms that keep a large round trip to the fewest copies (docs/ipc.md, "Large
parcels"), each checked for what it promises; the same tests run on the C twins and,
with ``CHILDKIT_NO_SPEEDUPS=1``, on the Python ones.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import large_peer as lp
import pytest
from ipc_helpers import fd_count, wait_until

from childkit.ipc import (
    Connection,
    MessageOption,
    MessageParcel,
    ParcelReadError,
    RemoteProxy,
    RemoteStub,
    _busypoll,
    _recvbuf,
    _transport,
    _wire,
    channel_socketpairs,
)
from childkit.ipc._fdutil import received_fds
from childkit.ipc._limits import MAX_PARCEL_DATA

ECHO = 1
#: Sizes either side of where frames start to go out gathered, and the most a parcel holds.
SIZES = [0, 1, _wire.GATHER_BYTES - 6, _wire.GATHER_BYTES - 5, _wire.GATHER_BYTES - 1,
         _wire.GATHER_BYTES, 64 * 1024, MAX_PARCEL_DATA - 5]


class Echo(RemoteStub):
    def __init__(self) -> None:
        super().__init__("test.LargeEcho")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == ECHO:
            reply.write_buffer(data.read_buffer())
        return 0


@contextmanager
def connected(stub: RemoteStub) -> Iterator[Connection]:
    local, remote = channel_socketpairs()
    a = Connection(*local, name="A")
    b = Connection(*remote, local_root=stub, name="B")
    a.start()
    b.start()
    try:
        assert a.wait_peer_hello(10) is True
        yield a
    finally:
        a.close()
        b.close()


def payload(size: int) -> bytes:
    return os.urandom(size)


# ---------------------------------------------------------------------------- frames
@pytest.mark.parametrize("size", [0, 1, 5000, MAX_PARCEL_DATA])
def test_heads_and_data_are_the_frames_encode_makes(size: int) -> None:
    data = payload(size)
    assert (_wire.transaction_head(7, 3, 9, size) + data
            == _wire.py_encode_transaction(7, 3, 9, False, data, (), 0))
    assert _wire.reply_head(7, size) + data == _wire.py_encode_reply(7, 0, data, (), 0)


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    yield a, b
    a.close()
    b.close()


def _gathered_exchange(sock: socket.socket, record: _transport.Outgoing,
                       buf: bytearray) -> tuple[int, int]:
    if _transport.exchange is not None:
        n, _anc, _flags, _seen, err = _transport.exchange(sock.fileno(), record, buf, 0, 10**12)
    else:
        n, _anc, _flags, _seen, err = _transport.exchange_slowly(
            sock, lambda ms: [], sock.fileno(), record, buf, time.perf_counter_ns(), 0)
    return n, err


def test_a_head_and_body_pair_goes_out_as_one_record(
        sockets: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockets
    head, body = b"H" * 34, bytearray(payload(150_000))
    got: list[bytes] = []

    def answer() -> None:
        got.append(b.recv(1 << 20))  # one read, one record: the head and body together
        b.send(b"ok")

    t = threading.Thread(target=answer)
    t.start()
    buf = bytearray(64)
    n, err = _gathered_exchange(a, (head, body), buf)
    t.join(30)
    assert (n, err, bytes(buf[:2])) == (2, 0, b"ok")
    assert got == [head + body]


def test_sendmsg_sends_a_pair_with_fds_as_one_record(
        sockets: tuple[socket.socket, socket.socket]) -> None:
    a, b = sockets
    r, w = os.pipe()
    try:
        _transport.sendmsg(a, (b"head", b"body"), [r])
        data, anc, _flags, _addr = b.recvmsg(64, socket.CMSG_SPACE(4))
        assert data == b"headbody"
        for fd in received_fds(anc):
            os.close(fd)
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------------------- round trips
@pytest.fixture(params=["polling", "not polling"])
def polling(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Busy polling on (replies go out in an exchange) and off (through the reply queue)."""
    if request.param == "not polling":
        monkeypatch.setenv(_busypoll.ENV_VAR, "0")
    _busypoll.reload_from_environment()
    yield
    monkeypatch.undo()
    _busypoll.reload_from_environment()


@pytest.mark.parametrize("size", SIZES)
def test_an_echo_of_any_size_comes_back_whole(size: int, polling: None) -> None:
    data = payload(size)
    with connected(Echo()) as conn:
        proxy = conn.root_proxy()
        for _ in range(3):  # again: buffers reused must hold the new bytes, not the old
            with MessageParcel() as request:
                request.write_buffer(data)
                with proxy.send_request(ECHO, request) as reply:
                    assert reply.read_buffer() == data
                    assert reply.get_readable_bytes() == 0


# ---------------------------------------------------------------------------- parcels
def test_a_received_parcel_keeps_the_bytes_it_came_in() -> None:
    wire = _parcel_bytes(b"x" * 1000)
    parcel = MessageParcel._from_wire(wire, [], [])
    assert parcel._buf is wire  # not copied
    assert parcel.read_buffer() == b"x" * 1000


def test_writing_a_received_parcel_copies_it_once_and_leaves_the_bytes_alone() -> None:
    wire = _parcel_bytes(b"abc")
    parcel = MessageParcel._from_wire(wire, [], [])
    parcel.write_int32(5)
    parcel.write_buffer(b"more")
    assert wire == _parcel_bytes(b"abc")
    assert parcel.read_buffer() == b"abc"
    assert parcel.read_int32() == 5
    assert parcel.read_buffer() == b"more"
    end = parcel.get_data_size()
    parcel.rewind_write_position(len(wire))
    assert parcel.get_data_size() == len(wire) < end


def test_a_received_parcel_can_be_cut_back_before_any_write() -> None:
    parcel = MessageParcel._from_wire(_parcel_bytes(b"abc") + _parcel_bytes(b"de"), [], [])
    parcel.rewind_write_position(len(_parcel_bytes(b"abc")))
    assert parcel.read_buffer() == b"abc"
    assert parcel.get_readable_bytes() == 0


@pytest.mark.parametrize("size", [0, 100, 511, 512, 100_000])
def test_a_blob_reads_the_same_from_written_and_received_parcels(size: int) -> None:
    data = payload(size)
    written = MessageParcel()
    written.write_buffer(data)
    written.write_string("tail")
    received = MessageParcel._from_wire(bytes(written._buf), [], [])
    for parcel in (written, received):
        assert parcel.read_buffer() == data
        assert type(parcel.read_string()) is str


def _parcel_bytes(blob: bytes) -> bytes:
    p = MessageParcel()
    p.write_buffer(blob)
    return bytes(p._buf)


# ---------------------------------------------------------------------------- adopted buffers
LARGE = _recvbuf.ADOPT_BYTES  # parcel data this long is read where it arrived
#: The largest lone buffer whose parcel is adopted whatever the thread read before: a
#: larger one may come scattered instead (see test_zero_copy).
ADOPTED = LARGE - 5


@pytest.fixture
def peer() -> Iterator[RemoteProxy]:
    """A peer process echoing buffers (its buffers are its own: counted apart from ours)."""
    local, remote = channel_socketpairs()
    proc = subprocess.Popen(
        [sys.executable, str(Path(lp.__file__)), str(remote[0].fileno()),
         str(remote[1].fileno())], pass_fds=[s.fileno() for s in remote])
    for sock in remote:
        sock.close()
    conn = Connection(*local, name="large peer")
    conn.start()
    try:
        assert conn.wait_peer_hello(30) is True
        yield conn.root_proxy()
    finally:
        conn.close()
        proc.wait(30)


def echo(proxy: RemoteProxy, data: bytes) -> MessageParcel:
    with MessageParcel() as request:
        request.write_buffer(data)
        return proxy.send_request(lp.ECHO, request)


def peer_refills(proxy: RemoteProxy) -> int:
    with proxy.send_request(lp.REFILLS, MessageParcel()) as reply:
        return reply.read_int64()


def test_a_large_reply_is_read_where_it_arrived(peer: RemoteProxy) -> None:
    # A buffer value is 5 bytes of tag and length, then its bytes.
    with echo(peer, payload(LARGE - 5)) as reply:
        assert reply._owner is not None and reply.get_data_size() == LARGE
    with echo(peer, payload(LARGE - 6)) as reply:
        assert reply._owner is None  # small: copied out, the buffer stays the thread's


def test_an_adopted_reply_stays_valid_after_the_next_read_on_its_thread(
        peer: RemoteProxy) -> None:
    first, second = payload(LARGE * 4), payload(LARGE * 4)
    with echo(peer, first) as kept:
        with echo(peer, second) as reply:
            assert reply.read_buffer() == second
        with echo(peer, payload(100)) as small:
            small.read_buffer()
        assert kept.read_buffer() == first


def test_closed_parcels_buffers_are_reused_on_both_sides(peer: RemoteProxy) -> None:
    data = payload(MAX_PARCEL_DATA - 5)
    for _ in range(3):  # warm up: each side has made the buffers it alternates between
        with echo(peer, data) as reply:
            assert reply.read_buffer() == data
    mine, theirs = _recvbuf.refills, peer_refills(peer)
    for _ in range(20):
        with echo(peer, data) as reply:
            assert reply.read_buffer() == data
    assert _recvbuf.refills == mine
    assert peer_refills(peer) == theirs
    assert _recvbuf.free_count() <= _recvbuf.FREE_MAX


def test_a_closed_adopted_parcel_gives_its_buffer_back_and_reads_as_empty(
        peer: RemoteProxy) -> None:
    reply = echo(peer, payload(ADOPTED))
    owner = reply._owner
    reply.close()
    assert reply._owner is None and reply.get_data_size() == 0
    with pytest.raises(ParcelReadError):
        reply.read_buffer()
    # The buffer is the next one this thread reads into (or is already there).
    assert owner is _recvbuf.buffers.buf or owner in _recvbuf._free


def test_writing_an_adopted_parcel_copies_it_and_gives_the_buffer_back(
        peer: RemoteProxy) -> None:
    data = payload(ADOPTED)
    with echo(peer, data) as reply:
        owner = reply._owner
        reply.write_int32(7)
        assert reply._owner is None and owner in _recvbuf._free
        assert reply.read_buffer() == data
        assert reply.read_int32() == 7


def test_an_adopted_parcel_left_to_the_collector_frees_its_buffer(peer: RemoteProxy) -> None:
    reply = echo(peer, payload(ADOPTED))
    assert reply._owner is not None
    buffer = weakref.ref(reply._owner)
    del reply
    gc.collect()
    assert buffer() is None


def test_large_echoes_leak_no_fds_and_keep_few_buffers() -> None:
    data = payload(MAX_PARCEL_DATA - 5)
    before = fd_count()
    for _ in range(3):
        with connected(Echo()) as conn:
            proxy = conn.root_proxy()
            for _ in range(5):
                with echo(proxy, data) as reply:
                    assert reply.read_buffer() == data
    assert wait_until(lambda: fd_count() <= before), f"fds leaked: {before} -> {fd_count()}"
    assert _recvbuf.free_count() <= _recvbuf.FREE_MAX
