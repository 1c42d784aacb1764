"""Child start-up benchmark: childkit's launcher beside multiprocessing's fork and spawn.

Run ``python -m bench.bench_start`` from the repository root (``--quick`` for a smoke
run). Everything is measured in one run, side by side, as medians:

* args mode: ``start_native_child_process`` until the child's first write arrives on a
  pipe (the child is usable: it runs its entry);
* IPC mode: ``create_native_child_process`` until ``on_started`` holds a live proxy,
  and ``connect()`` plus one round trip through the proxy;
* ``multiprocessing`` fork and spawn contexts: ``Process(target=noop).start()`` +
  ``join()``;
* 50 children at once (50 ``create_native_child_process`` calls, until all 50
  ``on_started``; 50 threads calling ``start_native_child_process``) against one;
* memory: PSS (``/proc/PID/smaps_rollup``) of 50 idle IPC-mode children against 50 idle
  ``multiprocessing`` spawn children.

Targets from the issue: IPC start to usable proxy <= 1.5x fork start+join, >= 10x
faster than spawn; 50 at once < 20x one. Nothing asserts; the table shows the ratios.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as MpConnection

if __package__ in (None, ""):  # run as a file: make "bench" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import childkit
from childkit.ipc import MessageOption, MessageParcel, RemoteProxy, RemoteStub, RequestMode

ENTRY_MODULE = "bench.bench_start"
PING = 1
QUIT = 2
ONE_WAY = MessageOption(RequestMode.ASYNC)


# ---------------------------------------------------------------------------- child side
def touch(args: childkit.ChildProcessArgs) -> int:
    """Args-mode entry: one byte through fd "out", then exit."""
    os.write(args.fds["out"], b"!")
    return 0


class _BenchStub(RemoteStub):
    def __init__(self) -> None:
        super().__init__("childkit.bench.Start")
        self.quit = threading.Event()

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == PING:
            reply.write_int32(data.read_int32())
        elif code == QUIT:
            self.quit.set()
        return 0


_stub: _BenchStub | None = None


def on_connect() -> RemoteStub:
    """IPC-mode entry: the child's root stub."""
    global _stub
    _stub = _BenchStub()
    return _stub


def main_proc() -> None:
    """IPC-mode entry: idle until the parent sends QUIT."""
    assert _stub is not None
    _stub.quit.wait()


def _noop() -> None:
    pass


def _idle(conn: MpConnection) -> None:
    conn.send(os.getpid())  # up and idle
    try:
        conn.recv()
    except EOFError:
        pass


# ---------------------------------------------------------------------------- parent side
class _Exits:
    """Waits for children's exits, so that runs never overlap."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: set[int] = set()
        childkit.register_child_process_exit_callback(self)

    def __call__(self, pid: int, info: childkit.ChildExitInfo) -> None:
        with self._cond:
            self._done.add(pid)
            self._cond.notify_all()

    def wait(self, pids: list[int], timeout: float = 30.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._done.issuperset(pids), timeout):
                raise RuntimeError(f"children {set(pids) - self._done} did not exit")


def _quit(proxy: RemoteProxy) -> int:
    pid = proxy.connection.peer_pid
    proxy.send_request(QUIT, MessageParcel(), ONE_WAY)
    return pid


def args_start(exits: _Exits) -> float:
    r, w = os.pipe()
    try:
        t0 = time.perf_counter()
        pid = childkit.start_native_child_process(
            f"{ENTRY_MODULE}:touch", childkit.ChildProcessArgs("", {"out": w}))
        os.read(r, 1)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(r)
        os.close(w)
    exits.wait([pid])
    return elapsed


def ipc_create(exits: _Exits, count: int = 1) -> float:
    """``count`` create_native_child_process calls until every on_started has a proxy."""
    lock = threading.Lock()
    done = threading.Event()
    proxies: list[RemoteProxy] = []

    def on_started(code: childkit.ErrCode, proxy: RemoteProxy | None) -> None:
        if code != childkit.ErrCode.NCP_NO_ERROR or proxy is None:
            raise RuntimeError(f"start failed: {code!r}")
        with lock:
            proxies.append(proxy)
            if len(proxies) == count:
                t_end.append(time.perf_counter())
                done.set()

    t_end: list[float] = []
    t0 = time.perf_counter()
    for _ in range(count):
        childkit.create_native_child_process(ENTRY_MODULE, on_started)
    if not done.wait(120):
        raise RuntimeError("children did not start")
    elapsed = t_end[0] - t0
    exits.wait([_quit(p) for p in proxies])
    return elapsed


def ipc_connect_call(exits: _Exits) -> float:
    t0 = time.perf_counter()
    child = childkit.connect(ENTRY_MODULE)
    data = MessageParcel()
    data.write_int32(7)
    child.proxy.send_request(PING, data).read_int32()
    elapsed = time.perf_counter() - t0
    exits.wait([_quit(child.proxy)])
    return elapsed


def args_many(exits: _Exits, count: int) -> float:
    r, w = os.pipe()
    pids: list[int] = []
    lock = threading.Lock()

    def start() -> None:
        pid = childkit.start_native_child_process(
            f"{ENTRY_MODULE}:touch", childkit.ChildProcessArgs("", {"out": w}))
        with lock:
            pids.append(pid)

    try:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=start) for _ in range(count)]
        for t in threads:
            t.start()
        got = 0
        while got < count:
            got += len(os.read(r, count - got))
        elapsed = time.perf_counter() - t0
        for t in threads:
            t.join()
    finally:
        os.close(r)
        os.close(w)
    exits.wait(pids)
    return elapsed


def mp_start_join(ctx: mp.context.BaseContext) -> float:
    t0 = time.perf_counter()
    p = ctx.Process(target=_noop)  # type: ignore[attr-defined]
    p.start()
    p.join()
    return time.perf_counter() - t0


def mp_many(ctx: mp.context.BaseContext, count: int) -> float:
    """``count`` Process starts, then every join: multiprocessing's 50 at once."""
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_noop) for _ in range(count)]  # type: ignore[attr-defined]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - t0


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss for {pid}")


def pss_childkit(exits: _Exits, count: int) -> tuple[int, int]:
    """Total PSS of ``count`` idle IPC-mode children, and the launcher's own."""
    children = [childkit.connect(ENTRY_MODULE) for _ in range(count)]
    time.sleep(0.5)  # let them settle into main_proc
    total = sum(pss_kib(c.pid) for c in children)
    launcher = pss_kib(childkit.prestart_launcher())
    exits.wait([_quit(c.proxy) for c in children])
    return total, launcher


def pss_spawn(count: int) -> int:
    ctx = mp.get_context("spawn")
    procs, ends = [], []
    for _ in range(count):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=_idle, args=(theirs,))
        p.start()
        theirs.close()
        procs.append(p)
        ends.append(mine)
    for end in ends:  # every child is up and idle once it has answered
        end.recv()
    time.sleep(0.5)  # as for childkit's children: let them settle
    total = sum(pss_kib(p.pid) for p in procs if p.pid is not None)
    for end in ends:
        end.close()
    for p in procs:
        p.join()
    return total


def _interleaved(metrics: dict[str, tuple[Callable[[], float], int]]) -> dict[str, float]:
    """Median milliseconds of each metric, sampled round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in metrics}
    for round_no in range(max(count for _fn, count in metrics.values())):
        for name, (fn, count) in metrics.items():
            if round_no < count:
                samples[name].append(fn())
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    """Run every measurement; return rows of (name, value, unit)."""
    n = 5 if quick else 30
    n_spawn = 3 if quick else 10
    many = 10 if quick else 50
    n_burst = 3 if quick else 7  # bursts are the noisiest figure: a few more samples
    childkit.set_preload_modules([ENTRY_MODULE])
    childkit.prestart_launcher()
    exits = _Exits()
    for _ in range(3):  # warm-up: imports, IPC pool, page cache
        args_start(exits)
        ipc_create(exits)
    fork = mp.get_context("fork")
    spawn = mp.get_context("spawn")
    # Interleaved: one sample of each per round, so that load drifting over the run
    # (a shared machine) hits every contender alike.
    singles: dict[str, tuple[Callable[[], float], int]] = {
        "childkit args: start -> first write": (lambda: args_start(exits), n),
        "childkit IPC: create -> on_started(proxy)": (lambda: ipc_create(exits), n),
        "childkit IPC: connect() + 1 call": (lambda: ipc_connect_call(exits), n),
        "multiprocessing fork: start+join": (lambda: mp_start_join(fork), n),
        "multiprocessing spawn: start+join": (lambda: mp_start_join(spawn), n_spawn),
    }
    bursts: dict[str, tuple[Callable[[], float], int]] = {
        f"childkit IPC: {many} creates at once": (lambda: ipc_create(exits, many), n_burst),
        f"childkit args: {many} starts at once (threads)":
            (lambda: args_many(exits, many), n_burst),
        f"multiprocessing fork: {many} start+join at once":
            (lambda: mp_many(fork, many), n_burst),
    }
    rows = [(name, value, "ms") for name, value in _interleaved(singles).items()]
    rows += [(name, value, "ms") for name, value in _interleaved(bursts).items()]
    ck_total, launcher = pss_childkit(exits, many)
    rows += [
        (f"PSS of {many} idle childkit IPC children", ck_total / 1024, "MiB"),
        ("PSS of the launcher (shared template)", launcher / 1024, "MiB"),
        (f"PSS of {many} idle multiprocessing spawn children", pss_spawn(many) / 1024, "MiB"),
    ]
    return rows


def print_table(rows: list[tuple[str, float, str]]) -> None:
    values = {name: value for name, value, _unit in rows}
    width = max(len(name) for name, _v, _u in rows)
    for name, value, unit in rows:
        print(f"{name:<{width}}  {value:9.2f} {unit}")
    fork = values["multiprocessing fork: start+join"]
    spawn = values["multiprocessing spawn: start+join"]
    create = values["childkit IPC: create -> on_started(proxy)"]
    args = values["childkit args: start -> first write"]
    many_ipc = next(v for k, v in values.items() if "creates at once" in k)
    many_args = next(v for k, v in values.items() if "starts at once" in k)
    pss_ck = next(v for k, v in values.items() if k.startswith("PSS") and "childkit" in k)
    pss_sp = next(v for k, v in values.items() if k.startswith("PSS") and "spawn" in k)
    print()
    print("ratios (target in brackets)")
    print(f"  IPC create / fork start+join       {create / fork:6.2f}x   [<= 1.5x]")
    print(f"  args start / fork start+join       {args / fork:6.2f}x")
    print(f"  spawn start+join / IPC create      {spawn / create:6.1f}x   [>= 10x]")
    print(f"  spawn start+join / args start      {spawn / args:6.1f}x")
    print(f"  IPC: many at once / one            {many_ipc / create:6.1f}x   [< 20x]")
    print(f"  args: many at once / one           {many_args / args:6.1f}x   [< 20x]")
    many_fork = next(v for k, v in values.items() if "fork:" in k and "at once" in k)
    print(f"  fork: many at once / one           {many_fork / fork:6.1f}x   (for reference)")
    print(f"  PSS spawn children / childkit      {pss_sp / pss_ck:6.1f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: check it runs")
    args = parser.parse_args(argv)
    print_table(run(quick=args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
