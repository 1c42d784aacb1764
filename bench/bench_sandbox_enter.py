"""Micro-benchmark: the cost of ``childkit.sandbox.enter`` in a forked child.

Measures, from the parent, fork -> child exits -> reaped, with and without ``enter`` (and
with ``isolation_uid`` when root), and prints the medians. Run:
``python bench/bench_sandbox_enter.py [rounds]``. The launcher's own start-cost benchmark
(normal vs isolated child, end to end) is bench/bench_isolated.py.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from childkit.sandbox import SandboxConfig, enter, preload


def _one(config: SandboxConfig | None) -> float:
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if config is not None:
                enter(config, keep_fds=[])
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child failed with status {status}")
    return time.perf_counter() - start


def run(rounds: int = 30) -> dict[str, float]:
    """Median seconds per fork+exit for each variant."""
    preload()
    variants: dict[str, SandboxConfig | None] = {"fork only": None,
                                                 "fork + enter": SandboxConfig()}
    if os.geteuid() == 0:
        variants["fork + enter (isolation_uid)"] = SandboxConfig(isolation_uid=True)
    results = {}
    for name, config in variants.items():
        _one(config)  # warm up
        results[name] = statistics.median(_one(config) for _ in range(rounds))
    return results


if __name__ == "__main__":
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for name, seconds in run(rounds).items():
        print(f"{name:<30} {seconds * 1e3:8.2f} ms")
