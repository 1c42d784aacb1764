"""A hostile peer's object references and releases cost it, not this process.

A raw peer writes its own frames (``childkit.ipc._wire``) to a real :class:`Connection`:
releases that wait for replies (merged, in a heap, bounded, checked against what the peer
holds), one-way requests naming made-up objects (counted against the one-way backlog, the
live proxies bounded), and the one warning a protocol error logs.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator

import pytest
from ipc_helpers import no_fd_or_thread_leaks, wait_until
from test_connection import int_parcel

from childkit.ipc import (
    Connection,
    DeadRemoteObjectError,
    MessageOption,
    MessageParcel,
    RemoteObject,
    RemoteStub,
    _objects,
    _oneway,
    _wire,
    channel_socketpairs,
)

BOUNDED = MessageOption(timeout=30)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    with no_fd_or_thread_leaks():
        yield


class Marker(RemoteStub):
    def __init__(self) -> None:
        super().__init__("t.Marker")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        return 0


class Stuck(RemoteStub):
    """Counts requests; the first one waits until ``open`` is set."""

    def __init__(self) -> None:
        super().__init__("t.Stuck")
        self.open = threading.Event()
        self.entered = threading.Event()
        self.count = 0

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if not self.count:
            self.entered.set()
            assert self.open.wait(60)
        self.count += 1
        return 0


class RawPeer:
    """The far end of a connection, written by hand: ``call`` carries this peer's requests
    and releases to the connection, ``serve`` the connection's requests and our replies."""

    def __init__(self, root: RemoteStub | None = None) -> None:
        local, remote = channel_socketpairs()
        self.conn = Connection(*local, local_root=root, name="hostile link")
        self.conn.start()
        self.call, self.serve = remote
        for sock in remote:
            sock.settimeout(30)
        self.calls: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def close(self) -> None:
        self.conn.close()
        for caller in self.calls:
            caller.join(60)
        self.call.close()
        self.serve.close()

    def start_call(self, objects: list[RemoteObject]) -> _wire.Transaction:
        """A call from the connection, carrying ``objects``, left in flight: the request
        as this peer read it."""
        proxy = self.conn.root_proxy()

        def call() -> None:
            data = int_parcel(1)
            for obj in objects:
                data.write_remote_object(obj)
            try:
                proxy.send_request(1, data, BOUNDED).close()
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                data.close()

        caller = threading.Thread(target=call)
        self.calls.append(caller)
        caller.start()
        while True:
            for frame in _wire.decode_record(self.serve.recv(_wire.MAX_RECORD_BYTES), []):
                if isinstance(frame, _wire.Transaction):
                    return frame

    def reply(self, seq: int) -> None:
        self.serve.send(_wire.encode_reply(seq, 0, b"", (), 0))

    def exported(self, objects: list[RemoteObject]) -> list[int]:
        """Have the connection hand ``objects`` over in a call answered at once: the
        handles they got (one per object, repeats included)."""
        request = self.start_call(objects)
        self.reply(request.seq)
        self.calls[-1].join(60)
        assert not self.errors
        return [handle for _kind, handle in request.objects]


@pytest.fixture()
def peer() -> Iterator[RawPeer]:
    raw = RawPeer()
    try:
        yield raw
    finally:
        raw.close()


def _protocol_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "protocol error" in r.getMessage()]


# ---------------------------------------------------------------------------- releases
def test_releases_of_one_object_waiting_for_one_reply_merge_and_apply_with_it(
        peer: RawPeer) -> None:
    marker = Marker()
    handle = peer.exported([marker] * 200)[0]  # one export, counted 200 times
    table = peer.conn._table
    pending = peer.start_call([])  # in flight: its reply is the one the releases name
    peer.call.send(_wire.encode_release(handle, 1, pending.seq) * 200)
    assert wait_until(lambda: table._pending.get(handle) == 200)
    assert len(table.deferred) == 1 and handle in table.exports  # one entry, not 200
    peer.reply(pending.seq)
    assert wait_until(lambda: handle not in table.exports)
    assert not table.deferred and not table._pending and not table._by_reply
    peer.calls[-1].join(60)
    assert not peer.errors and not peer.conn.closed


def test_waiting_releases_apply_in_the_order_of_the_replies_they_name(
        peer: RawPeer) -> None:
    first, second = peer.exported([Marker(), Marker()])
    table = peer.conn._table
    early = peer.start_call([])
    late = peer.start_call([])
    peer.call.send(_wire.encode_release(first, 1, late.seq)
                   + _wire.encode_release(second, 1, early.seq))
    assert wait_until(lambda: len(table.deferred) == 2)
    peer.reply(early.seq)
    assert wait_until(lambda: second not in table.exports)
    assert first in table.exports and len(table.deferred) == 1
    peer.reply(late.seq)
    assert wait_until(lambda: first not in table.exports)
    assert not table.deferred and not peer.conn.closed


def test_waiting_releases_past_what_the_peer_holds_end_the_link_at_once(
        peer: RawPeer, caplog: pytest.LogCaptureFixture) -> None:
    handle = peer.exported([Marker()] * 3)[0]
    table = peer.conn._table
    pending = peer.start_call([])
    with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
        # The edge: all three references the peer holds may wait.
        peer.call.send(_wire.encode_release(handle, 1, pending.seq) * 3)
        assert wait_until(lambda: table._pending.get(handle) == 3)
        assert not peer.conn.closed
        # One more than it got: found as it is read, not once the reply comes.
        peer.call.send(_wire.encode_release(handle, 1, pending.seq))
        assert wait_until(lambda: peer.conn.closed)
    assert "more times than it got it" in peer.conn.close_reason
    peer.calls[-1].join(60)
    assert isinstance(peer.errors[0], DeadRemoteObjectError)
    assert len(_protocol_warnings(caplog)) == 1


def test_waiting_releases_are_bounded(peer: RawPeer, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_objects, "MAX_DEFERRED_RELEASES", 4)
    handles = peer.exported([Marker() for _ in range(5)])
    table = peer.conn._table
    pending = peer.start_call([])
    with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
        peer.call.send(b"".join(_wire.encode_release(h, 1, pending.seq)
                                for h in handles[:4]))
        assert wait_until(lambda: len(table.deferred) == 4)  # the edge: still open
        peer.call.send(_wire.encode_release(handles[4], 1, pending.seq))  # one past
        assert wait_until(lambda: peer.conn.closed)
    assert "more than 4 releases waiting for replies" in peer.conn.close_reason
    assert len(_protocol_warnings(caplog)) == 1


# ---------------------------------------------------------------------------- objects
def _made_up(first: int, n: int) -> list[_wire.ObjectRef]:
    return [(_wire.OBJ_SENDER_STUB, first + i) for i in range(n)]


def _oneway_frame(first: int, n: int) -> bytes:
    return _wire.encode_transaction(0, _objects.ROOT_HANDLE, 1, True, b"",
                                    _made_up(first, n), 0)


def test_objects_in_queued_one_way_requests_count_against_the_backlog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 21 records of 4 one-way requests naming 16 made-up objects each (no data) to a stuck
    # stub: the reader stops once 64 objects' worth is queued, so this process never
    # holds more than one record's proxies past it.
    limit = 64 * _objects.PROXY_COST
    monkeypatch.setattr(_oneway, "ASYNC_BACKLOG_BYTES", limit)
    stub = Stuck()
    raw = RawPeer(stub)
    queues = raw.conn._server.oneway
    table = raw.conn._table
    peak = [0, 0]
    enqueue = queues.enqueue_locked

    def spy(handle: int, entry: _oneway.Queued, count: int) -> None:
        enqueue(handle, entry, count)
        peak[0] = max(peak[0], queues.total_bytes)
        peak[1] = max(peak[1], len(table.proxies))

    monkeypatch.setattr(queues, "enqueue_locked", spy)
    per_record = 4 * 16 * _objects.PROXY_COST

    def flood() -> None:
        for i in range(20):
            raw.call.send(b"".join(_oneway_frame(1000 + 64 * (4 * i + j), 16)
                                   for j in range(4)))

    sender = threading.Thread(target=flood)
    try:
        raw.call.send(_oneway_frame(1, 16))  # the stub runs it and gets stuck
        assert stub.entered.wait(30)
        sender.start()
        assert wait_until(lambda: queues.total_bytes > limit)
        assert peak[0] <= limit + per_record
        assert peak[1] <= 16 + (limit + per_record) // _objects.PROXY_COST
        stub.open.set()
        sender.join(60)
        assert not sender.is_alive()
        assert wait_until(lambda: stub.count == 81)
        assert peak[0] <= limit + per_record
        assert wait_until(lambda: queues.total_bytes == 0)
        assert not raw.conn.closed
    finally:
        stub.open.set()
        sender.join(60)
        raw.close()


def test_live_proxies_from_one_peer_are_bounded(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A stuck stub keeps every queued request, so every object named stays alive.
    monkeypatch.setattr(_objects, "MAX_PEER_PROXIES", 256)
    monkeypatch.setattr(_objects, "_PRUNE_STEP", 16)
    stub = Stuck()
    raw = RawPeer(stub)
    table = raw.conn._table
    try:
        with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
            raw.call.send(_oneway_frame(1, 16))
            assert stub.entered.wait(30)
            for i in range(1, 16):  # the edge: 256 live proxies
                raw.call.send(_oneway_frame(1 + 16 * i, 16))
            assert wait_until(lambda: len(table.proxies) == 256)
            assert not raw.conn.closed
            raw.call.send(_oneway_frame(1000, 1))  # one past
            assert wait_until(lambda: raw.conn.closed)
        assert "256 live objects" in raw.conn.close_reason
        assert len(_protocol_warnings(caplog)) == 1
    finally:
        stub.open.set()
        raw.close()


def test_proxies_that_died_leave_the_table_amortized() -> None:
    # 64 requests naming 64 new objects each to a stub that keeps none: the table never
    # holds more than twice its live proxies plus a step, and never closes the link.
    stub = Stuck()
    stub.open.set()
    raw = RawPeer(stub)
    table = raw.conn._table
    sizes: list[int] = []
    try:
        for i in range(64):
            raw.call.send(_oneway_frame(1 + 64 * i, 64))
            assert wait_until(lambda i=i: stub.count == i + 1)  # type: ignore[misc]
            sizes.append(len(table.proxies))
        assert max(sizes) <= 2 * 64 + 64
        assert not raw.conn.closed
    finally:
        raw.close()


def test_proxies_register_nothing_process_wide(peer: RawPeer) -> None:
    # weakref.finalize's registry is iterated at interpreter exit, while work threads may
    # still make proxies: a proxy must not add to it.
    table = peer.conn._table
    before = len(weakref.finalize._registry)  # type: ignore[attr-defined]
    objects = table.resolve(_made_up(500, 100))
    assert len(weakref.finalize._registry) == before  # type: ignore[attr-defined]
    assert len(objects) == 100
    del objects  # collected: each gives its reference back, once
    assert wait_until(lambda: not table.gc_releases)


# ---------------------------------------------------------------------------- logging
def test_a_protocol_error_reported_by_many_threads_logs_one_warning(
        peer: RawPeer, caplog: pytest.LogCaptureFixture) -> None:
    transport = peer.conn._transport
    start = threading.Barrier(8)

    def report(i: int) -> None:
        start.wait(30)
        transport.protocol_error(f"fault {i}")

    with caplog.at_level(logging.WARNING, logger="childkit.ipc"):
        threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        transport.protocol_error("after the close")
    warnings = _protocol_warnings(caplog)
    assert len(warnings) == 1 and "hostile link" in warnings[0]
    assert peer.conn.closed and warnings[0].split(": ")[-1] in peer.conn.close_reason
