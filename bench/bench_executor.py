"""Executor benchmark: ChildProcessExecutor beside ProcessPoolExecutor and loky, one run.

Run ``python -m bench.bench_executor`` from the repository root (``--quick`` for a smoke
run; loky comes with ``pip install -e '.[bench]'`` and is left out, with a note, if
missing). Measured side by side, medians of repeated runs:

* small-task throughput through ``submit``: N tiny tasks submitted, then every result
  awaited, on a warm pool of 2 workers (tasks per second);
* the same through ``map(chunksize=500)``;
* time to the first result on a cold pool: construct the executor, submit one task, get
  its result (ms). childkit forks its workers from its launcher, started once per
  application (``prestart_launcher``) with the task's module preloaded
  (``set_preload_modules``); rows without the preload, and with the launcher's own start
  included, are shown too.

Targets from the issue: submit throughput >= 2x ProcessPoolExecutor's; cold first result
>= 5x faster than ProcessPoolExecutor with spawn. Nothing asserts; the ratios are shown.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

if __package__ in (None, ""):  # run as a file: make "bench" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import childkit
from bench._module_main import module_main
from childkit.pool._executor import ChildProcessExecutor

WORKERS = 2
CHUNK = 500


def tiny(x: int) -> int:
    """The task: as small as a task gets."""
    return x + 1


def _factories() -> dict[str, Callable[[], Executor]]:
    out: dict[str, Callable[[], Executor]] = {
        "childkit ChildProcessExecutor": lambda: ChildProcessExecutor(WORKERS),
        "ProcessPoolExecutor (fork)": lambda: ProcessPoolExecutor(
            WORKERS, mp_context=mp.get_context("fork")),
    }
    if importlib.util.find_spec("loky") is not None:
        import loky

        out["loky ProcessPoolExecutor"] = lambda: loky.ProcessPoolExecutor(WORKERS)
    return out


def _submit_rate(ex: Executor, n: int) -> float:
    t = time.perf_counter()
    futures = [ex.submit(tiny, i) for i in range(n)]
    for f in futures:
        f.result()
    return n / (time.perf_counter() - t)


def _map_rate(ex: Executor, n: int) -> float:
    t = time.perf_counter()
    for _ in ex.map(tiny, range(n), chunksize=CHUNK):
        pass
    return n / (time.perf_counter() - t)


def throughput(n: int, reps: int) -> dict[str, dict[str, float]]:
    """{executor: {"submit": tasks/s, "map": tasks/s}}, medians over ``reps``."""
    out: dict[str, dict[str, float]] = {}
    for name, make in _factories().items():
        ex = make()
        try:
            ex.submit(tiny, 0).result()  # warm: workers up, modules imported
            ex.submit(tiny, 0).result()
            subs = [_submit_rate(ex, n) for _ in range(reps)]
            maps = [_map_rate(ex, n * 5) for _ in range(reps)]
        finally:
            ex.shutdown(wait=True)
        out[name] = {"submit": statistics.median(subs), "map": statistics.median(maps)}
    return out


_COLD_LAUNCHER = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); t = time.perf_counter(); "
    "from childkit.pool._executor import ChildProcessExecutor; "
    "from bench.bench_executor import tiny; ex = ChildProcessExecutor(2); "
    "ex.submit(tiny, 1).result(); print(time.perf_counter() - t); ex.shutdown()"
)


def cold_first_result(reps: int) -> dict[str, float]:
    """{executor: ms from construction to the first result}, medians."""
    makers: dict[str, Callable[[], Executor]] = dict(_factories())
    makers["ProcessPoolExecutor (spawn)"] = lambda: ProcessPoolExecutor(
        WORKERS, mp_context=mp.get_context("spawn"))
    childkit.prestart_launcher()
    samples: dict[str, list[float]] = {}
    plain = "childkit, task module not preloaded (imported by each worker)"
    for _ in range(reps):
        t = time.perf_counter()
        with ChildProcessExecutor(WORKERS) as ex:
            ex.submit(tiny, 1).result()
            samples.setdefault(plain, []).append(time.perf_counter() - t)
    # The recommended set-up: the launcher imports the task's module once, and every
    # worker forked from it has it (as a fork-context pool inherits its parent's).
    childkit.set_preload_modules([__name__])
    with ChildProcessExecutor(1) as ex:  # the launcher has imported it once this is done
        ex.submit(tiny, 1).result()
    for _ in range(reps):
        for name, make in makers.items():
            t = time.perf_counter()
            ex = make()
            try:
                ex.submit(tiny, 1).result()
                samples.setdefault(name, []).append(time.perf_counter() - t)
            finally:
                ex.shutdown(wait=True)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run([sys.executable, "-c", _COLD_LAUNCHER, root], check=True,
                              capture_output=True, text=True, timeout=120, cwd=root)
        samples.setdefault("childkit, launcher started too (fresh process)", []).append(
            float(done.stdout.split()[-1]))
    return {name: statistics.median(v) * 1e3 for name, v in samples.items()}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """The uniform rows of bench._suite: submit and map throughput, cold first result."""
    n, reps, cold_reps = (4000, 1, 2) if quick else (20000, 3, 5)
    rates = throughput(n, reps)
    cold = cold_first_result(cold_reps)
    ck = "childkit ChildProcessExecutor"
    rows: list[dict[str, Any]] = []
    for key, kind, metric in (("executor", "submit", f"executor small-task throughput "
                                                      f"(submit, {n} tasks, {WORKERS} workers)"),
                              ("executor_map", "map", f"executor small-task throughput "
                                                      f"(map chunksize={CHUNK}, {5 * n} tasks)")):
        rows.append({"key": key, "metric": metric, "unit": "tasks/s", "better": "higher",
                     "childkit": rates[ck][kind],
                     "peers": {name: r[kind] for name, r in rates.items() if name != ck},
                     "bare": {}, "goal": ">= 2x vs ProcessPoolExecutor",
                     "source": "bench_executor"})
    rows.append({"key": "executor_cold", "metric": "executor cold pool to first result",
                 "unit": "ms", "better": "lower", "childkit": cold[ck],
                 "peers": {name: v for name, v in cold.items() if name != ck}, "bare": {},
                 "goal": ">= 5x faster vs ProcessPoolExecutor (spawn)",
                 "source": "bench_executor"})
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"\n{r['metric']} ({r['unit']}, {r['better']} is better)")
        print(f"  {'childkit ChildProcessExecutor':<64} {r['childkit']:>12.1f}")
        for name, value in r["peers"].items():
            ratio = r["childkit"] / value if r["better"] == "higher" else value / r["childkit"]
            note = ("(a childkit variant)" if name.startswith("childkit")
                    else f"childkit {ratio:.2f}x better")
            print(f"  {name:<64} {value:>12.1f}   {note}")
        print(f"  goal: {r['goal']}")


def main() -> None:
    module_main(__doc__, run, _print, "fewer tasks and repeats")


if __name__ == "__main__":
    # Workers import the task by its module's name: run the importable module's main,
    # not this __main__ copy (a forked launcher child has no such __main__).
    from bench import bench_executor

    bench_executor.main()
