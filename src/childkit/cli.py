"""The ``childkit`` command-line tool.

Commands: ``demo`` (the seed article's two scenarios), ``bench`` (the benchmarks beside
their peers). Errors print the ``NCP_*``/``OH_IPC_*`` name, the message and a hint, and
exit non-zero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from childkit._errors import ChildkitError
from childkit.ipc._errors import IPCError


def _cmd_demo(args: argparse.Namespace) -> int:
    from childkit import _demo

    status: int = _demo.run(verbose=not args.quiet)
    return status


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        from bench import ipc_bench
    except ImportError:
        print("childkit bench: the bench/ directory is not importable; run it from a "
              "source checkout (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    ipc_bench.print_table(ipc_bench.run(quick=args.quick))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="childkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the seed article's two scenarios end to end")
    demo.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    demo.set_defaults(func=_cmd_demo)
    bench = sub.add_parser("bench", help="run the benchmarks beside their peers")
    bench.add_argument("--quick", action="store_true", help="small sizes: check it runs")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except ChildkitError as exc:
        print(f"childkit: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except IPCError as exc:
        print(f"childkit: {exc}", file=sys.stderr)
        return 1
    return status
