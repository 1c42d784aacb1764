"""Cost curves (issue 16): the sync round trip against payload size, and the throughput
of many caller threads on one child, each beside its peers in the same run.

- Payload sweep, 8 B to the parcel limit: childkit's sync echo (the caller writes the
  payload into a parcel, the stub reads it and writes it into the reply, the caller reads
  it back) against a ``multiprocessing`` Pipe ``send_bytes``/``recv_bytes`` echo and a bare
  Python SOCK_SEQPACKET socketpair echo of the same bytes; minor page faults per round trip
  on each side of childkit's echo at the largest size.
- Thread sweep, 1 to 16 caller threads on one child: total 64-byte sync requests per
  second and the 99th-percentile latency, against a ``multiprocessing`` Manager proxy
  called from the same number of threads (runs alternated, medians of three). With more
  than one caller, childkit's concurrent calls go on extra call channels of their own
  (docs/ipc.md, "Many threads on one child").

Run ``python -m bench.bench_curves`` (``--quick`` for a smoke run); ``python -m bench``
runs it with the others. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import echo_peer as ep
from bench.ipc_bench import EchoChild, _Manager
from childkit.ipc import MAX_PARCEL_DATA, MessageParcel, RemoteProxy

KiB = 1024
#: Payload sizes of the sweep; the last is the most one buffer in a parcel can hold.
SIZES = [8, 512, 4 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, MAX_PARCEL_DATA - 64]
THREADS = [1, 2, 4, 8, 16]
_SOCK_BUFFER = 1 << 20


def _label(size: int) -> str:
    return f"{size} B" if size < KiB else f"{size / KiB:g} KiB"


# ---------------------------------------------------------------------------- payloads
def childkit_echo(proxy: RemoteProxy, payload: bytes, n: int) -> float:
    """Seconds per sync echo of ``payload`` (parcels built and read as a user would)."""
    send = proxy.send_request
    t = time.perf_counter()
    for _ in range(n):
        with MessageParcel() as data:
            data.write_buffer(payload)
            with send(ep.ECHO, data) as reply:
                got = reply.read_buffer()
    elapsed = time.perf_counter() - t
    assert len(got) == len(payload)
    return elapsed / n


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _child_faults(proxy: RemoteProxy) -> int:
    with proxy.send_request(ep.FAULTS, MessageParcel()) as reply:
        return reply.read_int64()


def childkit_faults(proxy: RemoteProxy, payload: bytes, n: int) -> tuple[float, float]:
    """Minor page faults per round trip in steady state: (this process, the child)."""
    childkit_echo(proxy, payload, max(10, n // 10))  # warm up
    mine, theirs = _faults(), _child_faults(proxy)
    childkit_echo(proxy, payload, n)
    return (_faults() - mine) / n, (_child_faults(proxy) - theirs) / n


def _pipe_echoer(conn: Any) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        conn.send_bytes(data)


def pipe_echo(payload: bytes, n: int) -> float:
    ctx = mp.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_pipe_echoer, args=(theirs,))
    proc.start()
    theirs.close()
    try:
        t = time.perf_counter()
        for _ in range(n):
            ours.send_bytes(payload)
            got = ours.recv_bytes()
        elapsed = time.perf_counter() - t
        assert len(got) == len(payload)
        return elapsed / n
    finally:
        ours.send_bytes(b"")
        proc.join(30)
        ours.close()


def _socket_echoer(sock: socket.socket, size: int) -> None:
    buf = bytearray(size + 1)
    view = memoryview(buf)
    while True:
        got = sock.recv_into(buf)
        if got == 0 or (got == 1 and buf[0] == 0):
            return
        sock.send(view[:got])


def socketpair_echo(payload: bytes, n: int) -> float:
    """The floor: a Python SOCK_SEQPACKET echo of the same bytes into reused buffers."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCK_BUFFER)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            a.close()
            _socket_echoer(b, len(payload))
        finally:
            os._exit(0)
    b.close()
    buf = bytearray(len(payload) + 1)
    try:
        t = time.perf_counter()
        for _ in range(n):
            a.send(payload)
            got = a.recv_into(buf)
        elapsed = time.perf_counter() - t
        assert got == len(payload)
        return elapsed / n
    finally:
        a.send(b"\0")
        a.close()
        os.waitpid(pid, 0)


# ---------------------------------------------------------------------------- threads
def _hammer(call: Callable[[], object], threads: int, seconds: float) -> tuple[float, float]:
    """Calls per second of ``threads`` threads calling ``call`` for ``seconds``, and the
    99th-percentile latency in microseconds."""
    latencies: list[list[int]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def loop(mine: list[int]) -> None:
        start.wait()
        now = time.perf_counter_ns
        while not stop.is_set():
            t = now()
            call()
            mine.append(now() - t)

    workers = [threading.Thread(target=loop, args=(lat,)) for lat in latencies]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)  # the measuring window (a benchmark, not a test)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    every = sorted(x for lat in latencies for x in lat)
    p99 = every[int(len(every) * 0.99)] / 1000 if every else float("nan")
    return len(every) / elapsed, p99


def childkit_threads(proxy: RemoteProxy, threads: int, seconds: float) -> tuple[float, float]:
    local = threading.local()

    def call() -> None:
        data = getattr(local, "data", None)
        if data is None:
            data = local.data = MessageParcel()
            data.write_buffer(b"x" * 56)  # 64 bytes on the wire with the tag and length
        with proxy.send_request(ep.ECHO, data) as reply:
            reply.read_buffer()

    return _hammer(call, threads, seconds)


def manager_threads(threads: int, seconds: float) -> tuple[float, float]:
    with _Manager(ctx=mp.get_context("fork")) as mgr:
        adder = mgr.Adder()  # type: ignore[attr-defined]
        return _hammer(lambda: adder.add_one(1), threads, seconds)


# ---------------------------------------------------------------------------- the run
def _median(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def _medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The median rate and the median p99 of repeated thread-sweep runs."""
    return (statistics.median(rate for rate, _ in runs),
            statistics.median(p99 for _, p99 in runs))


def run(quick: bool = False) -> list[dict[str, object]]:
    reps = 1 if quick else 3
    seconds = 0.2 if quick else 1.0
    sizes = [8, 64 * KiB, SIZES[-1]] if quick else SIZES
    threads = [1, 4] if quick else THREADS
    rows: list[dict[str, object]] = []
    child = EchoChild()
    try:
        for size in sizes:
            payload = os.urandom(size)
            n = (200 if quick else 3000) if size <= 64 * KiB else (50 if quick else 600)
            ck = _median(reps, lambda p=payload, n=n: childkit_echo(child.proxy, p, n))
            pipe = _median(reps, lambda p=payload, n=n: pipe_echo(p, n))
            bare = _median(reps, lambda p=payload, n=n: socketpair_echo(p, n))
            rows.append({
                "key": f"echo_{size}", "metric": f"sync echo of {_label(size)}",
                "unit": "us", "better": "lower", "childkit": ck * 1e6,
                "peers": {"multiprocessing Pipe send_bytes/recv_bytes echo": pipe * 1e6},
                "bare": {"Python socketpair echo": bare * 1e6},
                "goal": "<= 1.0x Pipe echo; <= 1.3x bare socketpair echo",
                "source": "bench_curves"})
        mine, theirs = childkit_faults(child.proxy, os.urandom(SIZES[-1]),
                                       50 if quick else 600)
        rows.append({"key": "echo_faults", "unit": "faults", "better": "lower",
                     "metric": f"minor page faults per {_label(SIZES[-1])} echo "
                               f"(caller; the child has {theirs:.2f})",
                     "childkit": mine, "peers": {}, "bare": {}, "goal": "",
                     "source": "bench_curves"})
        for k in threads:
            # Alternated, repeated, medians: on a shared machine one window can fall on a
            # busy moment of either side.
            ck_runs, mgr_runs = [], []
            for _ in range(reps):
                ck_runs.append(childkit_threads(child.proxy, k, seconds))
                mgr_runs.append(manager_threads(k, seconds))
            ck_rate, ck_p99 = _medians(ck_runs)
            mgr_rate, mgr_p99 = _medians(mgr_runs)
            rows.append({
                "key": f"threads_{k}", "metric": f"sync requests/s, {k} caller threads",
                "unit": "req/s", "better": "higher", "childkit": ck_rate,
                "peers": {"multiprocessing Manager proxy": mgr_rate}, "bare": {},
                "goal": ">= 1 thread's rate; >= 1.0x Manager proxy", "source": "bench_curves"})
            rows.append({
                "key": f"threads_p99_{k}", "metric": f"p99 latency, {k} caller threads",
                "unit": "us", "better": "lower", "childkit": ck_p99,
                "peers": {"multiprocessing Manager proxy": mgr_p99}, "bare": {},
                "goal": "", "source": "bench_curves"})
    finally:
        child.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, short runs")
    args = parser.parse_args()
    for r in run(args.quick):
        peers = ", ".join(f"{name} {value:,.1f} ({r['childkit'] / value:.2f}x)"
                          for name, value in {**r["peers"], **r["bare"]}.items()
                          if value)
        print(f"{r['metric']:<48} {r['childkit']:>12,.1f} {r['unit']:<7} {peers}")


if __name__ == "__main__":
    main()
