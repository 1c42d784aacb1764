"""The command line of a single bench module (``python -m bench.bench_executor`` ...)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any


def module_main(doc: str | None, run: Callable[[bool], list[Any]],
                show: Callable[[list[Any]], None], quick_help: str) -> None:
    """Parse ``--quick``, run the module's benchmarks, show their rows and the time taken."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args()
    t = time.perf_counter()
    show(run(args.quick))
    print(f"\n(took {time.perf_counter() - t:.1f} s)")
