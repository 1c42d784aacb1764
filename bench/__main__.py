"""``python -m bench``: every childkit benchmark beside its peers, in one table.

Runs each bench module that exists (ipc_bench, bench_start, bench_isolated,
bench_executor, bench_sandbox_enter, bench_batching, bench_curves), adds the RPC peers (Pyro5, RPyC,
loky), a 1 GiB hand-over and the machine's bare limits, prints the table and writes
bench/results/latest.json. ``--write-docs`` also rewrites docs/performance.md and
docs/img/performance.png; ``--quick`` uses small sizes and few repeats (CI: it only checks
that everything runs). Exits 1 if a benchmark failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make "bench" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import _report, _suite

DEFAULT_JSON = _report.ROOT / "bench" / "results" / "latest.json"
DOC_PAGE = _report.ROOT / "docs" / "performance.md"
DOC_CHART = _report.ROOT / "docs" / "img" / "performance.png"


def build_parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    """The flags of ``python -m bench`` (``childkit bench`` mirrors them)."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, few repeats: check that every benchmark runs")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the results (default {DEFAULT_JSON})")
    parser.add_argument("--write-docs", action="store_true",
                        help="also write docs/performance.md and docs/img/performance.png")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="do not run: report (and with --write-docs, document) PATH")
    parser.add_argument("--only", metavar="NAMES",
                        help="comma-separated subset: " + ", ".join([*_suite.MODULES, "bulk"]))
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    """Run (or, with --from-json, only report) the benchmarks; return the exit status.

    ``prog`` names the command in messages (``childkit bench`` calls this too).
    """
    args = build_parser(prog).parse_args(argv)
    if args.write_docs and importlib.util.find_spec("matplotlib") is None:
        # Said before a run of a minute, not after it.
        print(f"{prog}: --write-docs draws its chart with matplotlib: "
              "pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if args.from_json is not None:
        try:
            data = json.loads(args.from_json.read_text())
        except (OSError, ValueError) as exc:
            print(f"{prog}: cannot read {args.from_json}: {exc}", file=sys.stderr)
            return 2
    else:
        only = [n.strip() for n in args.only.split(",")] if args.only else None
        unknown = sorted(set(only or []) - {*_suite.MODULES, "bulk"})
        if unknown:
            print(f"{prog}: unknown --only names: {', '.join(unknown)}",
                  file=sys.stderr)
            return 2
        if args.json.is_dir():  # said before the run, not after it
            print(f"{prog}: --json {args.json} is a directory; give a file path",
                  file=sys.stderr)
            return 2
        result = _suite.run_all(args.quick, only,
                                log=lambda s: print(s, file=sys.stderr, flush=True))
        data = _report.to_json(result, args.quick)
        try:
            _report.write_json(data, args.json)
        except OSError as exc:
            print(f"{prog}: cannot write {args.json}: {exc}", file=sys.stderr)
            _report.print_report(data)  # the run is not lost: the table still shows it
            return 2
    _report.print_report(data)
    if args.from_json is None:
        print(f"\nresults written to {args.json}")
    if args.write_docs:
        _report.write_docs(data, DOC_PAGE, DOC_CHART)
        print(f"wrote {DOC_PAGE} and {DOC_CHART}")
    return 1 if data.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
