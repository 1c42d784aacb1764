"""Cost curves (issue 16): the sync round trip against payload size, and the throughput
of many caller threads on one child, each beside its peers in the same run.

- Payload sweep, 8 B to the parcel limit: childkit's sync echo (the caller writes the
  payload into a parcel, the stub reads it and writes it into the reply, the caller reads
  it back) against a ``multiprocessing`` Pipe ``send_bytes``/``recv_bytes`` echo and a bare
  Python SOCK_SEQPACKET socketpair echo of the same bytes: the wall-clock time per echo,
  and the CPU time both processes spent per echo (user + system, every thread: on a
  loaded machine the wall clock mostly measures the others' work); minor page faults per
  round trip on each side of childkit's echo at 190 KiB and at the largest size.
- Thread sweep, 1 to 16 caller threads on one child: total 64-byte sync requests per
  second, the 99th-percentile latency and the CPU time per request of both processes
  (every thread, ended ones included), against a ``multiprocessing`` Manager proxy called
  from the same number of threads (five rounds, each of every count's childkit and Manager
  windows in turn, in a rotated order; medians). With more than one
  caller, childkit's concurrent calls go on extra call channels of their own (docs/ipc.md,
  "Many threads on one child").

Run ``python -m bench.bench_curves`` (``--quick`` for a smoke run, ``--only payload`` or
``--only threads`` for one sweep); ``python -m bench`` runs it with the others. Nothing
here asserts a speed.
"""

from __future__ import annotations

import argparse
import glob
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
SIZES = [8, 512, 4 * KiB, 32 * KiB, 64 * KiB, 128 * KiB, 190 * KiB, MAX_PARCEL_DATA - 64]
THREADS = [1, 2, 4, 8, 16]
_SOCK_BUFFER = 1 << 20


def _warm_up(n: int) -> int:
    """Untimed echoes before ``n`` timed ones: each echo is timed in steady state (its
    peer process started and warm; childkit's child awake, its polling windows adapted
    after the other echoes ran in between)."""
    return max(10, n // 10)


def _label(size: int) -> str:
    return f"{size} B" if size < KiB else f"{size / KiB:g} KiB"


# ---------------------------------------------------------------------------- payloads
def cpu_ns(*pids: int) -> int:
    """CPU time (ns) the processes ``pids`` spent so far, every thread (scheduler stats)."""
    total = 0
    for pid in pids:
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                with open(path) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended meanwhile
    return total


class Cpu:
    """CPU seconds per echo of this process and a peer, filled in by an echo function."""

    def __init__(self) -> None:
        self.per_echo = float("nan")

    def measure(self, peer: int, n: int, run: Callable[[], float]) -> float:
        before = cpu_ns(os.getpid(), peer)
        result = run()
        self.per_echo = (cpu_ns(os.getpid(), peer) - before) / 1e9 / n
        return result


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


def pipe_echo(payload: bytes, n: int, cpu: Cpu | None = None) -> float:
    ctx = mp.get_context("fork")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=_pipe_echoer, args=(theirs,))
    proc.start()
    theirs.close()

    def run() -> float:
        t = time.perf_counter()
        for _ in range(n):
            ours.send_bytes(payload)
            got = ours.recv_bytes()
        elapsed = time.perf_counter() - t
        assert len(got) == len(payload)
        return elapsed / n

    try:
        for _ in range(_warm_up(n)):  # the echoer has started and runs in steady state
            ours.send_bytes(payload)
            ours.recv_bytes()
        return run() if cpu is None or proc.pid is None else cpu.measure(proc.pid, n, run)
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


def socketpair_echo(payload: bytes, n: int, cpu: Cpu | None = None) -> float:
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

    def run() -> float:
        t = time.perf_counter()
        for _ in range(n):
            a.send(payload)
            got = a.recv_into(buf)
        elapsed = time.perf_counter() - t
        assert got == len(payload)
        return elapsed / n

    try:
        for _ in range(_warm_up(n)):  # as the other echoes: timed in steady state
            a.send(payload)
            a.recv_into(buf)
        return run() if cpu is None else cpu.measure(pid, n, run)
    finally:
        a.send(b"\0")
        a.close()
        os.waitpid(pid, 0)


# ---------------------------------------------------------------------------- threads
def _own_cpu_ns() -> int:
    """CPU time (ns) this process spent so far, every thread, ended ones included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def _process_cpu_ns(pid: int) -> int:
    """CPU time (ns) the process ``pid`` spent so far, every thread, ended ones included
    (a Manager's server ends a thread with each connection), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _hammer(call: Callable[[], object], threads: int, seconds: float, peer: int,
            ) -> tuple[float, float, float]:
    """Calls per second of ``threads`` threads calling ``call`` for ``seconds``, the
    99th-percentile latency in microseconds, and the CPU time per call in microseconds of
    this process and the ``peer`` process together (on a loaded machine the rate mostly
    measures the others' work; the CPU per call is what the calls cost)."""
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
    cpu0 = _own_cpu_ns() + _process_cpu_ns(peer)
    time.sleep(seconds)  # the measuring window (a benchmark, not a test)
    stop.set()
    for w in workers:
        w.join()
    cpu = _own_cpu_ns() + _process_cpu_ns(peer) - cpu0
    elapsed = time.perf_counter() - t0
    every = sorted(x for lat in latencies for x in lat)
    p99 = every[int(len(every) * 0.99)] / 1000 if every else float("nan")
    return len(every) / elapsed, p99, cpu / 1000 / max(len(every), 1)


def childkit_threads(child: EchoChild, threads: int, seconds: float,
                     ) -> tuple[float, float, float]:
    local = threading.local()
    proxy = child.proxy

    def call() -> None:
        data = getattr(local, "data", None)
        if data is None:
            data = local.data = MessageParcel()
            data.write_buffer(b"x" * 56)  # 64 bytes on the wire with the tag and length
        with proxy.send_request(ep.ECHO, data) as reply:
            reply.read_buffer()

    return _hammer(call, threads, seconds, child.pid)


def manager_threads(threads: int, seconds: float) -> tuple[float, float, float]:
    with _Manager(ctx=mp.get_context("fork")) as mgr:
        adder = mgr.Adder()  # type: ignore[attr-defined]
        server = mgr._process.pid  # type: ignore[attr-defined]
        return _hammer(lambda: adder.add_one(1), threads, seconds, server)


# ---------------------------------------------------------------------------- the run
def _median(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def _medians(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The median rate, p99 and CPU per call of repeated thread-sweep runs."""
    return (statistics.median(rate for rate, _, _ in runs),
            statistics.median(p99 for _, p99, _ in runs),
            statistics.median(cpu for _, _, cpu in runs))


_Runs = dict[int, list[tuple[float, float, float]]]


def _thread_rounds(child: EchoChild, threads: list[int], reps: int, seconds: float,
                   ) -> tuple[_Runs, _Runs]:
    """``reps`` rounds of the thread sweep: in each, every thread count's childkit window
    and Manager window in turn, the counts in a rotated order each round. So the counts
    are compared as measured side by side: the load of a shared machine drifts over tens
    of seconds, and a count measured only at the start or only at the end of the sweep
    would carry that drift into "never lower than one thread"."""
    ck_runs: _Runs = {k: [] for k in threads}
    mgr_runs: _Runs = {k: [] for k in threads}
    if not threads:
        return ck_runs, mgr_runs
    childkit_threads(child, max(threads), seconds / 5)  # untimed: channels opened, warm
    for rep in range(reps):
        for k in threads[rep % len(threads):] + threads[:rep % len(threads)]:
            ck_runs[k].append(childkit_threads(child, k, seconds))
            mgr_runs[k].append(manager_threads(k, seconds))
    return ck_runs, mgr_runs


def _childkit_run(child: EchoChild, payload: bytes, n: int, cpu: Cpu) -> float:
    childkit_echo(child.proxy, payload, _warm_up(n))  # untimed, as the peers' warm-ups
    return cpu.measure(child.pid, n, lambda: childkit_echo(child.proxy, payload, n))


def _sweep(child: EchoChild, size: int, n: int, reps: int) -> list[dict[str, object]]:
    """The rows of one payload size: wall clock and CPU per echo, each the median of
    ``reps`` runs of ``n`` echoes (after untimed warm-up echoes), the three echoes run in
    turn, in a rotated order each time, so that none always runs right after another
    (or right after the forks of the peers' processes)."""
    payload = os.urandom(size)
    wall: dict[str, list[float]] = {"ck": [], "pipe": [], "bare": []}
    cpu: dict[str, list[float]] = {"ck": [], "pipe": [], "bare": []}
    echoes: list[tuple[str, Callable[[Cpu], float]]] = [
        ("ck", lambda c: _childkit_run(child, payload, n, c)),
        ("pipe", lambda c: pipe_echo(payload, n, c)),
        ("bare", lambda c: socketpair_echo(payload, n, c))]
    for rep in range(reps):
        for key, echo in echoes[rep % 3:] + echoes[:rep % 3]:
            meter = Cpu()
            wall[key].append(echo(meter))
            cpu[key].append(meter.per_echo)
    ck, pipe, bare = (statistics.median(wall[k]) * 1e6 for k in ("ck", "pipe", "bare"))
    ck_cpu, pipe_cpu, bare_cpu = (statistics.median(cpu[k]) * 1e6
                                  for k in ("ck", "pipe", "bare"))
    goal = "<= 1.0x Pipe echo; <= 1.3x bare socketpair echo"
    return [
        {"key": f"echo_{size}", "metric": f"sync echo of {_label(size)}",
         "unit": "us", "better": "lower", "childkit": ck,
         "peers": {"multiprocessing Pipe send_bytes/recv_bytes echo": pipe},
         "bare": {"Python socketpair echo": bare}, "goal": goal, "source": "bench_curves"},
        {"key": f"echo_cpu_{size}",
         "metric": f"CPU per echo of {_label(size)} (both processes)",
         "unit": "us", "better": "lower", "childkit": ck_cpu,
         "peers": {"multiprocessing Pipe send_bytes/recv_bytes echo": pipe_cpu},
         "bare": {"Python socketpair echo": bare_cpu}, "goal": goal,
         "source": "bench_curves"},
    ]


def run(quick: bool = False, parts: str = "all") -> list[dict[str, object]]:
    """The rows of the payload sweep and the thread sweep (``parts``: "all",
    "payload" or "threads")."""
    echo_reps = 1 if quick else 5  # (cheap: a few seconds; medians steadier than of 3)
    thread_reps = 1 if quick else 5
    seconds = 0.2 if quick else 1.0
    sizes = ([8, 64 * KiB, SIZES[-1]] if quick else SIZES) if parts != "threads" else []
    threads = ([1, 4] if quick else THREADS) if parts != "payload" else []
    rows: list[dict[str, object]] = []
    child = EchoChild()
    try:
        for size in sizes:
            n = (200 if quick else 3000) if size <= 64 * KiB else (50 if quick else 600)
            rows.extend(_sweep(child, size, n, echo_reps))
        for size in (190 * KiB, SIZES[-1]) if sizes else ():
            mine, theirs = childkit_faults(child.proxy, os.urandom(size),
                                           50 if quick else 600)
            rows.append({"key": f"echo_faults_{size}", "unit": "faults", "better": "lower",
                         "metric": f"minor page faults per {_label(size)} echo "
                                   f"(caller; the child has {theirs:.2f})",
                         "childkit": mine, "peers": {}, "bare": {}, "goal": "",
                         "source": "bench_curves"})
        ck_runs, mgr_runs = _thread_rounds(child, threads, thread_reps, seconds)
        for k in threads:
            ck_rate, ck_p99, ck_cpu = _medians(ck_runs[k])
            mgr_rate, mgr_p99, mgr_cpu = _medians(mgr_runs[k])
            peer = "multiprocessing Manager proxy"
            rows.append({
                "key": f"threads_{k}", "metric": f"sync requests/s, {k} caller threads",
                "unit": "req/s", "better": "higher", "childkit": ck_rate,
                "peers": {peer: mgr_rate}, "bare": {},
                "goal": ">= 1 thread's rate; >= 1.0x Manager proxy", "source": "bench_curves"})
            rows.append({
                "key": f"threads_p99_{k}", "metric": f"p99 latency, {k} caller threads",
                "unit": "us", "better": "lower", "childkit": ck_p99,
                "peers": {peer: mgr_p99}, "bare": {}, "goal": "", "source": "bench_curves"})
            rows.append({
                "key": f"threads_cpu_{k}",
                "metric": f"CPU per request, {k} caller threads (both processes)",
                "unit": "us", "better": "lower", "childkit": ck_cpu,
                "peers": {peer: mgr_cpu}, "bare": {}, "goal": "", "source": "bench_curves"})
            if k != threads[0]:
                # Paired: each round's rate over the same round's lone caller's (the load
                # drifts between rounds; within one, the counts ran a few seconds apart).
                rows.append({
                    "key": f"threads_vs1_{k}", "unit": "x", "better": "higher",
                    "metric": f"requests/s, {k} caller threads / {threads[0]} thread's",
                    "childkit": statistics.median(
                        run[0] / first[0]
                        for run, first in zip(ck_runs[k], ck_runs[threads[0]], strict=True)),
                    "peers": {}, "bare": {}, "goal": ">= 1.0 (median of the rounds)",
                    "source": "bench_curves"})
    finally:
        child.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes, short runs")
    parser.add_argument("--only", choices=("payload", "threads"), default="all",
                        help="run one sweep only")
    args = parser.parse_args()
    for r in run(args.quick, args.only):
        peers = ", ".join(f"{name} {value:,.1f} ({r['childkit'] / value:.2f}x)"
                          for name, value in {**r["peers"], **r["bare"]}.items()
                          if value)
        value = f"{r['childkit']:>12,.2f}" if r["unit"] == "x" else f"{r['childkit']:>12,.1f}"
        print(f"{r['metric']:<48} {value} {r['unit']:<7} {peers}")


if __name__ == "__main__":
    main()
