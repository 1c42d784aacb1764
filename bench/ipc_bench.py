"""IPC benchmarks: childkit's proxy/stub against a bare socketpair and multiprocessing.

Run ``python -m bench.ipc_bench`` (add ``--quick`` for a smoke run). Every metric is
measured beside its peers in the same run, as the median of several repeats, and printed
as a ratio; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager

import childkit
from bench import echo_peer as ep
from childkit.ipc import (
    Ashmem,
    MessageOption,
    MessageParcel,
    RemoteProxy,
    RequestMode,
    _wire,
)

ASYNC = MessageOption(RequestMode.ASYNC)
MiB = 1024 * 1024
#: The polling peer's window: childkit's default maximum (CHILDKIT_BUSY_POLL_US).
_POLL_WINDOW_S = 100e-6


# ---------------------------------------------------------------------------- childkit side
class EchoChild:
    """The echo child (:mod:`bench.echo_peer`), started as an application starts one:
    through the launcher, in IPC mode. So it is placed, forked and served as a real child
    is (the launcher's session, its replies-in-flight counter), and a cost of those shows
    in every benchmark that uses it."""

    def __init__(self) -> None:
        started = threading.Event()
        got: list[tuple[int, RemoteProxy | None]] = []
        self._ended = threading.Event()
        self.pid = -1
        childkit.register_child_process_exit_callback(self._on_exit)

        def on_started(code: int, proxy: RemoteProxy | None) -> None:
            got.append((code, proxy))
            started.set()

        try:
            childkit.create_native_child_process("bench.echo_peer", on_started)
            if not started.wait(60):
                raise RuntimeError("the echo child did not start within 60 s")
            code, proxy = got[0]
            if proxy is None:
                raise RuntimeError(f"the echo child did not start: error {code}")
        except BaseException:
            childkit.unregister_child_process_exit_callback(self._on_exit)
            raise
        self.proxy: RemoteProxy = proxy
        self.conn = proxy.connection
        self.pid = self.conn.peer_pid

    def _on_exit(self, pid: int, info: object) -> None:
        if pid == self.pid:
            self._ended.set()

    def close(self) -> None:
        try:
            self.proxy.send_request(ep.QUIT, MessageParcel(), ASYNC)
            self._ended.wait(30)
        finally:
            self.conn.close()
            childkit.unregister_child_process_exit_callback(self._on_exit)


def childkit_rtt(proxy: RemoteProxy, n: int) -> float:
    data = MessageParcel()
    data.write_int32(1)
    send = proxy.send_request
    t = time.perf_counter()
    for _ in range(n):
        send(ep.ADD_ONE, data).read_int32()
    return (time.perf_counter() - t) / n


def _count(proxy: RemoteProxy) -> int:
    with proxy.send_request(ep.GET_COUNT, MessageParcel()) as r:
        return r.read_int64()


def childkit_oneway(proxy: RemoteProxy, n: int) -> float:
    """Messages per second, end to end: sent one by one, all delivered to the stub."""
    data = MessageParcel()
    data.write_int32(1)
    send = proxy.send_request
    start = _count(proxy)
    t = time.perf_counter()
    for _ in range(n):
        send(ep.COUNT, data, ASYNC)
    delivered = _count(proxy) - start  # a sync call after them runs after them
    elapsed = time.perf_counter() - t
    assert delivered == n, (delivered, n)
    return n / elapsed


def childkit_batched(proxy: RemoteProxy, n: int, batch: int = 512) -> float:
    data = MessageParcel()
    data.write_int32(1)
    requests = [(ep.COUNT, data)] * batch
    start = _count(proxy)
    t = time.perf_counter()
    for _ in range(n // batch):
        proxy.send_requests(requests, ASYNC)
    delivered = _count(proxy) - start
    elapsed = time.perf_counter() - t
    assert delivered == n // batch * batch
    return delivered / elapsed


def childkit_ashmem(proxy: RemoteProxy, ash: Ashmem) -> float:
    t = time.perf_counter()
    with MessageParcel() as data:
        data.write_ashmem(ash)
        with proxy.send_request(ep.TOUCH_ASHMEM, data) as reply:
            reply.read_int32()
            assert reply.read_int64() == ash.get_size()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------- peers
def _poll_briefly(poll: Callable[[int], list[tuple[int, int]]], window_s: float) -> None:
    """Poll for up to ``window_s`` before the caller sleeps in recv (what childkit's
    waiters do, with a fixed window: see childkit.ipc._busypoll)."""
    end = time.perf_counter() + window_s
    while not poll(0) and time.perf_counter() < end:
        pass


def _pingpong_server(sock: socket.socket, window_s: float) -> None:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        if window_s:
            _poll_briefly(poller.poll, window_s)
        data = sock.recv(65536)
        if not data:
            os._exit(0)
        sock.sendall(data)


def bare_rtt(n: int, window_s: float = 0.0) -> float:
    """A bare Python socketpair ping-pong of the bytes of one childkit request; with a
    window, both sides poll that long before sleeping in recv."""
    p = MessageParcel()
    p.write_int32(1)
    msg = _wire.encode_transaction(1, 0, ep.ADD_ONE, False, p._buf, [], 0)
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        _pingpong_server(b, window_s)
    b.close()
    poll = select.poll()
    poll.register(a.fileno(), select.POLLIN)
    try:
        t = time.perf_counter()
        for _ in range(n):
            a.sendall(msg)
            if window_s:
                _poll_briefly(poll.poll, window_s)
            a.recv(65536)
        return (time.perf_counter() - t) / n
    finally:
        a.close()
        os.waitpid(pid, 0)


def _thin_server(sock: socket.socket) -> None:
    from childkit.ipc import _stub

    stub = ep.BenchStub()
    buf = bytearray(_wire.MAX_RECORD_BYTES)
    sync = MessageOption()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while True:
        _poll_briefly(poller.poll, _POLL_WINDOW_S)
        n, _anc, _flags, _ = sock.recvmsg_into([buf], 1024)
        if not n:
            os._exit(0)
        request = _wire.simple_request(buf, n)
        assert request is not None
        data = MessageParcel._from_wire(bytes(buf[_wire.TXN_DATA_OFFSET:n]), [], [])
        _status, _detail, reply = _stub.invoke_stub(stub, request[2], data, sync, 0, 0,
                                                    local=False)
        sock.send(_wire.encode_reply(request[0], 0, reply._buf, (), 0))


def thin_rtt(n: int) -> float:
    """The floor of a request/reply in Python: what any Python IPC with typed parcels and
    a stub must do (the same syscalls, a frame check, a parcel on each side, the stub's
    on_remote_request), with no connection, locks, thread pool or queues around it. Both
    sides poll before sleeping, as childkit does."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        a.close()
        _thin_server(b)
    b.close()
    buf = bytearray(_wire.MAX_RECORD_BYTES)
    data = MessageParcel()
    data.write_int32(1)
    poller = select.poll()
    poller.register(a.fileno(), select.POLLIN)
    try:
        t = time.perf_counter()
        for seq in range(1, n + 1):
            a.send(_wire.encode_transaction(seq, 0, ep.ADD_ONE, False, data._buf, (), 0))
            _poll_briefly(poller.poll, _POLL_WINDOW_S)
            size, _anc, _flags, _ = a.recvmsg_into([buf], 1024)
            assert _wire.simple_reply(buf, size) == (seq, 0)
            MessageParcel._from_wire(bytes(buf[_wire.REPLY_DATA_OFFSET:size]), [],
                                     []).read_int32()
        return (time.perf_counter() - t) / n
    finally:
        a.close()
        os.waitpid(pid, 0)


class _Adder:
    def add_one(self, x: int) -> int:
        return x + 1


class _Manager(BaseManager):
    pass


_Manager.register("Adder", _Adder)


def _add_one(x: int) -> int:
    return x + 1


def _drain(q: mp.Queue) -> None:  # type: ignore[type-arg]
    while q.get() is not None:
        pass


def _pipe_reader(conn: mp.connection.Connection) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        conn.send(len(data))


# ---------------------------------------------------------------------------- the run
def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def run(quick: bool = False) -> list[dict[str, object]]:
    n_rtt = 500 if quick else 5000
    n_ow = 5000 if quick else 200_000
    reps = 1 if quick else 5
    bulk = 8 * MiB if quick else 256 * MiB
    rows: list[dict[str, object]] = []
    ctx = mp.get_context("fork")

    child = EchoChild()
    manager = _Manager(ctx=ctx)
    manager.start()
    adder = manager.Adder()  # type: ignore[attr-defined]
    pool = cf.ProcessPoolExecutor(1, mp_context=ctx)
    pool.submit(_add_one, 1).result()
    try:
        # Interleave the contenders, repeat, take medians: the machine is noisy.
        ck, bare, polled, thin, mgr, ppe = [], [], [], [], [], []
        # Round trips are cheap to sample and the most sensitive to noise: more rounds.
        for _ in range(reps if quick else 3 * reps):
            ck.append(childkit_rtt(child.proxy, n_rtt))
            bare.append(bare_rtt(n_rtt))
            polled.append(bare_rtt(n_rtt, _POLL_WINDOW_S))
            thin.append(thin_rtt(n_rtt))
            t = time.perf_counter()
            for i in range(n_rtt):
                adder.add_one(i)
            mgr.append((time.perf_counter() - t) / n_rtt)
            t = time.perf_counter()
            for i in range(n_rtt // 5):
                pool.submit(_add_one, i).result()
            ppe.append((time.perf_counter() - t) / (n_rtt // 5))
        rtt = statistics.median(ck)
        rows += [
            {"metric": "sync round trip (us)", "childkit": rtt * 1e6,
             "peer": "bare socketpair ping-pong", "peer_value": statistics.median(bare) * 1e6,
             "ratio": rtt / statistics.median(bare), "goal": "<= 1.3x"},
            {"metric": "sync round trip (us)", "childkit": rtt * 1e6,
             "peer": "bare Python socketpair ping-pong, both sides polling 100 us first",
             "peer_value": statistics.median(polled) * 1e6,
             "ratio": rtt / statistics.median(polled), "goal": ""},
            {"metric": "sync round trip (us)", "childkit": rtt * 1e6,
             "peer": "bare Python request/reply: parcels and the stub, no framework, polling",
             "peer_value": statistics.median(thin) * 1e6,
             "ratio": rtt / statistics.median(thin), "goal": ""},
            {"metric": "sync round trip (us)", "childkit": rtt * 1e6,
             "peer": "multiprocessing Manager proxy", "peer_value": statistics.median(mgr) * 1e6,
             "ratio": rtt / statistics.median(mgr), "goal": "<= 1.0x"},
            {"metric": "sync round trip (us)", "childkit": rtt * 1e6,
             "peer": "ProcessPoolExecutor submit->result",
             "peer_value": statistics.median(ppe) * 1e6,
             "ratio": rtt / statistics.median(ppe), "goal": "<= 0.67x (1.5x faster)"},
        ]

        ow, bat, qq = [], [], []
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        for _ in range(reps):
            ow.append(childkit_oneway(child.proxy, n_ow))
            bat.append(childkit_batched(child.proxy, n_ow))
            proc = ctx.Process(target=_drain, args=(q,))
            proc.start()
            t = time.perf_counter()
            for i in range(n_ow):
                q.put(i)
            q.put(None)
            proc.join()
            qq.append(n_ow / (time.perf_counter() - t))
        queue = statistics.median(qq)
        rows += [
            {"metric": "one-way msgs/s, one at a time", "childkit": statistics.median(ow),
             "peer": "multiprocessing.Queue", "peer_value": queue,
             "ratio": statistics.median(ow) / queue, "goal": ">= 1.2x"},
            {"metric": "one-way msgs/s, batched", "childkit": statistics.median(bat),
             "peer": "multiprocessing.Queue", "peer_value": queue,
             "ratio": statistics.median(bat) / queue, "goal": ">= 3x"},
        ]

        ash = Ashmem.create("bench", bulk)
        ash.map_read_write()
        view = ash.buffer()
        view[:] = b"\x01" * bulk  # the data exists before the hand-over is timed
        view.release()
        payload = b"\x01" * bulk
        parent_end, child_end = ctx.Pipe()
        reader = ctx.Process(target=_pipe_reader, args=(child_end,))
        reader.start()
        ashes, pipes = [], []
        for _ in range(max(reps, 3)):
            ashes.append(childkit_ashmem(child.proxy, ash))
            t = time.perf_counter()
            parent_end.send_bytes(payload)
            assert parent_end.recv() == bulk
            pipes.append(time.perf_counter() - t)
        parent_end.send_bytes(b"")
        reader.join()
        ash.close()
        a_ms, p_ms = statistics.median(ashes) * 1e3, statistics.median(pipes) * 1e3
        rows.append({"metric": f"hand over {bulk // MiB} MiB (ms)", "childkit": a_ms,
                     "peer": "multiprocessing.Pipe", "peer_value": p_ms,
                     "ratio": p_ms / a_ms, "goal": ">= 100x faster"})
    finally:
        pool.shutdown()
        manager.shutdown()
        child.close()
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    print(f"{'metric':34s} {'childkit':>12s}  {'peer':36s} {'peer value':>12s} "
          f"{'ratio':>8s}  goal")
    for r in rows:
        print(f"{r['metric']!s:34s} {r['childkit']:12.1f}  {r['peer']!s:36s} "
              f"{r['peer_value']:12.1f} {r['ratio']:7.2f}x  {r['goal']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: check it runs")
    args = parser.parse_args()
    print_table(run(args.quick))


if __name__ == "__main__":
    main()
