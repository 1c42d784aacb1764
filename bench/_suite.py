"""The benchmark suite behind ``python -m bench``: runs every bench module, brings their
results to one row format, and adds the peers and bare limits they do not measure.

The uniform row (what every bench module's ``run(quick: bool) -> list[dict]`` should
return, and what the adapters below make of the modules that return something else)::

    {"key": "rtt",                      # stable id of the metric (see EXPECTED)
     "metric": "sync round trip",       # what is measured, for people
     "unit": "us",                      # unit of every value in the row
     "better": "lower",                 # "lower" (times, memory) or "higher" (rates)
     "childkit": 41.2,                  # childkit's median
     "peers": {"multiprocessing Manager proxy": 130.4, ...},   # same unit
     "bare": {"C socketpair ping-pong": 11.3},                 # the machine's limit
     "goal": "<= 1.3x bare",            # the target from the issue, or ""
     "source": "ipc_bench"}             # the module that measured it

Every value is a median of repeated runs. Nothing here asserts a speed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

Row = dict[str, Any]
MiB = 1024 * 1024

#: The metrics issues 5 and 6 ask for: key, name, and the module expected to measure it.
EXPECTED: list[tuple[str, str, str]] = [
    ("rtt", "sync round trip", "ipc_bench"),
    ("oneway", "one-way throughput", "ipc_bench"),
    ("batched", "batched throughput", "ipc_bench"),
    ("bulk_256m", "bulk 256 MiB hand-over", "ipc_bench"),
    ("bulk_1g", "bulk 1 GiB hand-over", "_suite"),
    ("start_normal", "child start to first reply (normal)", "bench_start"),
    ("start_isolated", "child start to first reply (isolated)", "bench_isolated"),
    ("start_50", "50 children start", "bench_start"),
    ("memory_50", "memory of 50 idle children", "bench_start"),
    ("executor", "executor small-task throughput", "bench_executor"),
    ("batched_sync", "batched sync requests against one by one", "bench_batching"),
    ("array_1g", "NumPy 1 GiB array hand-over", "bench_batching"),
    ("echo_8", "sync echo against payload size", "bench_curves"),
    ("threads_1", "sync throughput against caller threads", "bench_curves"),
]

#: Bench modules run in this order (bench_start first among the child starters: it
#: chooses the launcher's preload modules, which must happen before the launcher starts).
MODULES = ["ipc_bench", "bench_start", "bench_isolated", "bench_executor",
           "bench_batching", "bench_sandbox_enter", "bench_curves", "bench_native"]


def row(key: str, metric: str, unit: str, better: str, childkit: float,
        peers: dict[str, float] | None = None, bare: dict[str, float] | None = None,
        goal: str = "", source: str = "") -> Row:
    """A row in the uniform format (see the module docstring)."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    return {"key": key, "metric": metric, "unit": unit, "better": better,
            "childkit": float(childkit), "peers": dict(peers or {}),
            "bare": dict(bare or {}), "goal": goal, "source": source}


def is_uniform(rows: object) -> bool:
    """Whether ``rows`` already is a list of uniform rows."""
    return isinstance(rows, list) and all(
        isinstance(r, dict) and {"metric", "unit", "better", "childkit"} <= r.keys()
        for r in rows)


def advantage(r: Row, other: float) -> float:
    """How many times better childkit is than ``other`` (> 1: childkit is better)."""
    ck = r["childkit"]
    if ck <= 0 or other <= 0:
        return math.nan
    return other / ck if r["better"] == "lower" else ck / other


# ---------------------------------------------------------------------------- bare limits
class Bare:
    """The machine's bare limits, from bench/bare_c.c compiled with gcc into a temp dir.

    Without gcc the C limits are missing (``None``) and memcpy falls back to NumPy.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="childkit-bare-")
        self.exe: str | None = None
        self.error = ""
        self._cache: dict[tuple[object, ...], float] = {}
        gcc = shutil.which("gcc") or shutil.which("cc")
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare_c.c")
        if gcc is None:
            self.error = "no C compiler (gcc/cc) on PATH"
            return
        exe = os.path.join(self._dir.name, "bare_c")
        done = subprocess.run([gcc, "-O2", "-o", exe, source], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            self.error = f"gcc failed: {done.stderr.strip()[:500]}"
            return
        self.exe = exe

    def _run(self, *args: object) -> float | None:
        if self.exe is None:
            return None
        if args in self._cache:  # one measurement per run, shared by the rows that show it
            return self._cache[args]
        done = subprocess.run([self.exe, *map(str, args)], capture_output=True, text=True,
                              timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"bare_c {args}: {done.stderr.strip()}")
        self._cache[args] = float(done.stdout)
        return self._cache[args]

    def pingpong_us(self, msg_bytes: int, rounds: int) -> float | None:
        ns = self._run("pingpong", msg_bytes, rounds)
        return None if ns is None else ns / 1e3

    def memcpy_ms(self, nbytes: int, repeats: int) -> tuple[str, float] | None:
        ms = self._run("memcpy", nbytes, repeats)
        if ms is not None:
            return "memcpy (C)", ms
        try:
            import numpy as np
        except ImportError:
            return None
        src = np.ones(nbytes, dtype=np.uint8)
        dst = np.zeros(nbytes, dtype=np.uint8)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            np.copyto(dst, src)
            times.append(time.perf_counter() - t)
        return "memcpy (NumPy copyto)", statistics.median(times) * 1e3

    def fork_ms(self, rounds: int) -> float | None:
        us = self._run("fork", rounds)
        return None if us is None else us / 1e3

    def forkmany_ms(self, count: int, repeats: int) -> float | None:
        return self._run("forkmany", count, repeats)

    def close(self) -> None:
        self._dir.cleanup()


# ---------------------------------------------------------------------------- adapters
_UNIT = re.compile(r"\(([^)]+)\)\s*$")


def _generic(metric: str, value: float, unit: str, source: str) -> Row:
    better = "higher" if "/s" in unit else "lower"
    return row(metric, metric, unit, better, value, source=source)


#: Metric names of the (metric, childkit, peer, peer_value) modules -> (key, metric, better).
_PAIR_METRICS: list[tuple[str, str, str, str]] = [
    ("sync round trip", "rtt", "sync round trip", "lower"),
    ("one-way msgs/s, one at a time", "oneway", "one-way throughput", "higher"),
    ("one-way msgs/s, batched", "batched", "batched throughput", "higher"),
    ("IPC-mode start to first reply", "start_isolated",
     "child start to first reply (isolated)", "lower"),
    ("args-mode start to first write", "start_isolated_args",
     "args-mode isolated child start to first write", "lower"),
]


def adapt_pairs(rows: list[dict[str, Any]], source: str) -> list[Row]:
    """Rows of one childkit/peer pair each (ipc_bench's and bench_isolated's format:
    metric, childkit, peer, peer_value, ratio, goal) grouped into one row per metric.
    A peer named "bare ..." is a bare limit."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r["metric"]), []).append(r)
    out: list[Row] = []
    for name, group in groups.items():
        peers: dict[str, float] = {}
        bares: dict[str, float] = {}
        for r in group:
            if str(r["peer"]).startswith("bare"):
                label = str(r["peer"])[len("bare "):]
                if label == "socketpair ping-pong":
                    label = "Python socketpair ping-pong"
                bares[label] = float(r["peer_value"])
            else:
                peers[str(r["peer"])] = float(r["peer_value"])
        goal = "; ".join(f"{r['goal']} vs {r['peer']}" for r in group if r.get("goal"))
        m = _UNIT.search(name)
        unit = m.group(1) if m else ("msgs/s" if "msgs/s" in name else "")
        known = next((k for k in _PAIR_METRICS if name.startswith(k[0])), None)
        if known is not None:
            _prefix, key, metric, better = known
        elif name.startswith("hand over"):
            size = int(re.findall(r"\d+", name)[0])
            key, metric, better = f"bulk_{size}m", f"bulk {size} MiB hand-over", "lower"
        else:
            key, metric, better = name, name, "higher" if "/s" in unit else "lower"
        out.append(row(key, metric, unit, better, float(group[0]["childkit"]), peers, bares,
                       goal, source))
    return out


def adapt_ipc_bench(rows: list[dict[str, Any]], extra_rtt_peers: dict[str, float],
                    bare: Bare, quick: bool) -> list[Row]:
    """ipc_bench's rows as uniform rows, with the RPC peers and the bare limits added."""
    out = adapt_pairs(rows, "ipc_bench")
    for r in out:
        if r["key"] == "rtt":
            r["peers"].update(extra_rtt_peers)
            r["source"] = "ipc_bench + rpc_peers"
            c = bare.pingpong_us(_REQUEST_BYTES, 2000 if quick else 20000)
            if c is not None:
                r["bare"]["C socketpair ping-pong"] = c
        elif r["key"].startswith("bulk_"):
            size = int(r["key"][5:-1])
            mem = bare.memcpy_ms(size * MiB, 5 if quick else 7)
            if mem is not None:
                r["bare"][mem[0]] = mem[1]
    return out


def adapt_isolated(rows: list[dict[str, Any]], bare: Bare, quick: bool) -> list[Row]:
    """bench_isolated's rows (isolated childkit against a NORMAL childkit child)."""
    out = adapt_pairs(rows, "bench_isolated")
    fork_c = bare.fork_ms(50 if quick else 300)
    for r in out:
        if fork_c is not None and r["unit"] == "ms":
            r["bare"]["C fork + exit + waitpid"] = fork_c
    return out


#: Size of the bytes of one childkit ADD_ONE request (what ipc_bench's bare peer sends).
_REQUEST_BYTES = 50


def adapt_bench_start(rows: list[tuple[str, float, str]], bare: Bare, quick: bool) -> list[Row]:
    """bench_start's (name, value, unit) rows as uniform rows with their peers."""
    values = {name: (value, unit) for name, value, unit in rows}
    fork = values.get("multiprocessing fork: start+join", (math.nan, "ms"))[0]
    spawn = values.get("multiprocessing spawn: start+join", (math.nan, "ms"))[0]
    single_peers = {"multiprocessing fork: start+join": fork,
                    "multiprocessing spawn: start+join": spawn}
    fork_c = bare.fork_ms(50 if quick else 300)
    single_bare = {} if fork_c is None else {"C fork + exit + waitpid": fork_c}
    out: list[Row] = []
    used: set[str] = set(single_peers)

    def take(name: str) -> float | None:
        if name in values:
            used.add(name)
            return values[name][0]
        return None

    goal = "<= 1.5x fork start+join; >= 10x faster than spawn"
    v = take("childkit IPC: connect() + 1 call")
    if v is not None:
        out.append(row("start_normal", "child start to first reply (normal)", "ms", "lower",
                       v, single_peers, single_bare, goal, "bench_start"))
    v = take("childkit IPC: create -> on_started(proxy)")
    if v is not None:
        out.append(row("start_proxy", "child start to usable proxy (create_native_child_process)",
                       "ms", "lower", v, single_peers, single_bare, goal, "bench_start"))
    v = take("childkit args: start -> first write")
    if v is not None:
        out.append(row("start_args", "args-mode child start to first write", "ms", "lower",
                       v, single_peers, single_bare, "", "bench_start"))
    many_fork = next(((k, val) for k, (val, _u) in values.items()
                      if k.startswith("multiprocessing fork:") and "at once" in k), None)
    for name, (value, _unit) in values.items():
        m = re.match(r"childkit (IPC|args): (\d+) (creates|starts) at once", name)
        if m is None:
            continue
        used.add(name)
        count = int(m.group(2))
        peers = {} if many_fork is None else {many_fork[0]: many_fork[1]}
        if many_fork is not None:
            used.add(many_fork[0])
        burst = bare.forkmany_ms(count, 3 if quick else 10)
        bares = {} if burst is None else {f"C {count} x fork + exit, then wait": burst}
        if m.group(1) == "IPC":
            key = "start_50" if count == 50 else f"start_{count}"
            out.append(row(key, f"{count} children start (IPC mode, at once)", "ms", "lower",
                           value, peers, bares, "< 20x one start", "bench_start"))
        else:
            out.append(row(f"start_{count}_args", f"{count} children start (args mode, threads)",
                           "ms", "lower", value, peers, bares, "< 20x one start",
                           "bench_start"))
    pss_ck = next(((k, v) for k, (v, _u) in values.items()
                   if k.startswith("PSS of") and "childkit" in k), None)
    pss_launcher = next((v for k, (v, _u) in values.items()
                         if k.startswith("PSS of the launcher")), 0.0)
    pss_spawn = next(((k, v) for k, (v, _u) in values.items()
                      if k.startswith("PSS of") and "spawn" in k), None)
    if pss_ck is not None:
        count = int(re.findall(r"\d+", pss_ck[0])[0])
        used.update(k for k in values if k.startswith("PSS of"))
        peers = {} if pss_spawn is None else {
            f"{count} idle multiprocessing spawn children": pss_spawn[1]}
        key = "memory_50" if count == 50 else f"memory_{count}"
        # The launcher exists once for all children: it is counted with them.
        out.append(row(key, f"memory (PSS) of {count} idle children + launcher", "MiB",
                       "lower", pss_ck[1] + pss_launcher, peers, {}, "", "bench_start"))
    for name, (value, unit) in values.items():
        if name not in used:
            out.append(_generic(name, value, unit, "bench_start"))
    return out


def adapt_sandbox_enter(result: dict[str, float]) -> list[Row]:
    """bench_sandbox_enter's {variant: seconds}: each sandboxed variant against a plain
    Python fork + exit (the sandbox's own cost)."""
    fork_only = result.get("fork only")
    bares = {} if fork_only is None else {"Python fork + exit, no sandbox": fork_only * 1e3}
    return [row(f"sandbox_{variant}", f"sandbox: {variant} + exit", "ms", "lower",
                seconds * 1e3, {}, bares, "", "bench_sandbox_enter")
            for variant, seconds in result.items() if variant != "fork only"]


# ---------------------------------------------------------------------------- extra measures
def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def measure_rtt_peers(quick: bool, notes: list[str]) -> dict[str, float]:
    """Pyro5, RPyC and loky round trips (microseconds), sampled round-robin, medians.
    A peer whose package is not installed is left out, with a note saying so."""
    from bench import rpc_peers

    n = 300 if quick else 3000
    reps = 1 if quick else 5
    kinds = []
    for kind, package in (("pyro", "Pyro5"), ("rpyc", "rpyc")):
        if _missing(package):
            notes.append(f"{package} is not installed (pip install -e '.[bench]'): "
                         "its round trip is missing")
        else:
            kinds.append(kind)
    labels = {"pyro": "Pyro5 proxy call (Unix socket)", "rpyc": "RPyC call (Unix socket)"}
    samples: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(rpc_peers.RpcServer(kind)) for kind in kinds]
        for server in servers:
            server.rtt(n // 10 or 1)  # warm-up: connections, imports
        for _ in range(reps):
            for server in servers:
                samples.setdefault(labels[server.kind], []).append(server.rtt(n))
    if _missing("loky"):
        notes.append("loky is not installed (pip install -e '.[bench]'): its round trip "
                     "is missing")
    else:
        loky_samples = []
        stop: Callable[[], None] | None = None
        try:
            for _ in range(reps):
                value, stop = rpc_peers.loky_rtt(max(n // 10, 10))
                loky_samples.append(value)
        finally:
            if stop is not None:
                stop()
        samples["loky submit->result"] = loky_samples
    return {name: statistics.median(v) * 1e6 for name, v in samples.items()}


def measure_bulk(size: int, reps: int, bare: Bare) -> Row:
    """Hand ``size`` bytes to a child: childkit Ashmem vs multiprocessing.Pipe vs memcpy."""
    from bench import ipc_bench
    from childkit.ipc import Ashmem

    child = ipc_bench.EchoChild()
    ctx = mp.get_context("fork")
    try:
        ash = Ashmem.create("bench-bulk", size)
        try:
            ash.map_read_write()
            view = ash.buffer()
            view[:] = b"\x01" * size  # the data exists before the hand-over is timed
            view.release()
            ashes = [ipc_bench.childkit_ashmem(child.proxy, ash) for _ in range(reps)]
        finally:
            ash.close()
        payload = b"\x01" * size
        parent_end, child_end = ctx.Pipe()
        reader = ctx.Process(target=ipc_bench._pipe_reader, args=(child_end,))
        reader.start()
        child_end.close()
        pipes = []
        try:
            for _ in range(reps):
                t = time.perf_counter()
                parent_end.send_bytes(payload)
                if parent_end.recv() != size:
                    raise RuntimeError("the Pipe reader got a different size")
                pipes.append(time.perf_counter() - t)
        finally:
            parent_end.send_bytes(b"")
            reader.join(60)
            parent_end.close()
        del payload
    finally:
        child.close()
    bares: dict[str, float] = {}
    mem = bare.memcpy_ms(size, max(reps, 5))
    if mem is not None:
        bares[mem[0]] = mem[1]
    label = f"{size // MiB} MiB" if size < 1024 * MiB else f"{size // (1024 * MiB)} GiB"
    key = "bulk_1g" if size == 1024 * MiB else f"bulk_{size // MiB}m"
    return row(key, f"bulk {label} hand-over", "ms", "lower",
               statistics.median(ashes) * 1e3,
               {"multiprocessing.Pipe send_bytes": statistics.median(pipes) * 1e3}, bares,
               ">= 100x faster than Pipe", "_suite")


# ---------------------------------------------------------------------------- the run
@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # modules absent, metrics not measured
    failures: list[str] = field(default_factory=list)  # a module that raised


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            return None
        raise


def _run_module(name: str, module: ModuleType, quick: bool, bare: Bare,
                notes: list[str]) -> list[Row]:
    if name == "ipc_bench":
        rows = module.run(quick)
        return adapt_ipc_bench(rows, measure_rtt_peers(quick, notes), bare, quick)
    if name == "bench_start":
        return adapt_bench_start(module.run(quick), bare, quick)
    if name == "bench_isolated":
        return adapt_isolated(module.run(quick), bare, quick)
    if name == "bench_sandbox_enter":
        return adapt_sandbox_enter(module.run(5 if quick else 30))
    if not hasattr(module, "run"):
        raise RuntimeError(f"bench.{name} has no run(quick) function")
    result = module.run(quick)
    if is_uniform(result):
        for r in result:
            r.setdefault("key", r["metric"])
            r.setdefault("peers", {})
            r.setdefault("bare", {})
            r.setdefault("goal", "")
            r.setdefault("source", name)
        return list(result)
    raise RuntimeError(f"bench.{name}.run(quick) returned rows in an unknown format: "
                       f"{type(result).__name__}")


def run_all(quick: bool, only: list[str] | None = None,
            log: Callable[[str], None] = lambda s: None) -> Result:
    """Run every bench module that exists (or those in ``only``), in one process tree."""
    result = Result()
    bare = Bare()
    if bare.error:
        result.notes.append(f"C bare limits not measured: {bare.error}")
    try:
        for name in MODULES:
            if only and name not in only:
                continue
            try:
                module = _import(name)
            except Exception as exc:  # the module is there but does not import
                result.failures.append(f"bench.{name} does not import: {exc!r}")
                continue
            if module is None:
                result.notes.append(f"bench.{name} is not there yet: its metrics are missing")
                continue
            log(f"running bench.{name} ...")
            t = time.perf_counter()
            try:
                result.rows += _run_module(name, module, quick, bare, result.notes)
            except Exception as exc:
                result.failures.append(f"bench.{name} failed: {exc!r}")
                traceback.print_exc(file=sys.stderr)
            log(f"  bench.{name} took {time.perf_counter() - t:.1f} s")
        if not only or "bulk" in only:
            size, reps = (16 * MiB, 1) if quick else (1024 * MiB, 3)
            log(f"running the {size // MiB} MiB hand-over ...")
            try:
                result.rows.append(measure_bulk(size, reps, bare))
            except Exception as exc:
                result.failures.append(f"bulk hand-over failed: {exc!r}")
                traceback.print_exc(file=sys.stderr)
    finally:
        bare.close()
    have = {r.get("key") for r in result.rows}
    for key, metric, source in EXPECTED:
        if key not in have and not only:
            why = f"expected from bench.{source}" if source != "_suite" else "the suite's own"
            if quick:
                why += "; quick mode measures smaller sizes and counts"
            result.notes.append(f"not measured: {metric} ({why})")
    return result
