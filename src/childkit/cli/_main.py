"""The ``childkit`` command-line tool (its ``--help`` text is :data:`DESCRIPTION`).

Commands: ``demo``, ``run``, ``sandbox-check``, ``bench``; docs/cli.md describes each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from childkit.cli._hints import HINTS as _HINTS
from childkit.cli._hints import ipc_hint
from childkit.common import ChildkitError, ErrCode
from childkit.entry import MAX_ENTRY_PARAMS_BYTES, MAX_FDS
from childkit.ipc._errors import IPCError, IPCErrorCode

#: What ``childkit --help`` says: plain text, no markup, nothing an installed user lacks.
DESCRIPTION = """\
HarmonyOS NEXT's native child processes for Python on Linux, from the command line.

commands:
  demo           HarmonyOS's two child modes end to end: a child in IPC mode (a stub
                 the parent calls) and one in args mode (a start-up string and an fd)
  run            run ENTRY in an args-mode child (optionally sandboxed: a launcher for
                 untrusted code) and exit with its status
  sandbox-check  which sandbox layers this machine supports
  bench          the benchmarks beside their peers (from a source checkout)

Errors print the NCP_*/OH_IPC_* name, the message and a hint, and exit 1 (2 for a
usage error). "childkit COMMAND --help" describes each command; the full documentation
is on childkit's page on the package index (its README links every guide)."""

_LIMIT_KEYS = {"mem": "memory_bytes", "cpu": "cpu_seconds", "nproc": "max_processes",
               "nofile": "max_open_files", "fsize": "max_file_size"}
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}
EXIT_ERROR = 1  # a ChildkitError or IPCError (argparse's usage errors exit 2)
EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def _invalid(message: str) -> ChildkitError:
    return ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, message)


# ------------------------------------------------------------------------------ commands


def _cmd_demo(args: argparse.Namespace) -> int:
    from childkit.cli import _demo

    status: int = _demo.run(verbose=not args.quiet)
    return status


def _bench_argv(args: argparse.Namespace) -> list[str]:
    """``childkit bench``'s flags as ``python -m bench`` takes them."""
    argv = ["--quick"] if args.quick else []
    if args.json is not None:
        argv += ["--json", args.json]
    if args.write_docs:
        argv.append("--write-docs")
    if args.from_json is not None:
        argv += ["--from-json", args.from_json]
    if args.only is not None:
        argv += ["--only", args.only]
    return argv


def _find_bench() -> None:
    """Put the source checkout holding bench/ on ``sys.path``, as ``python -m childkit``
    has the current directory there: the current directory (or one above it), else the
    checkout this childkit is installed from (an editable install)."""
    import childkit

    here = os.path.abspath(os.getcwd())
    candidates = [here]
    parent = here
    while os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
        candidates.append(parent)
    package = os.path.dirname(os.path.abspath(childkit.__file__))
    candidates.append(os.path.dirname(os.path.dirname(package)))  # <checkout>/src/childkit
    for root in candidates:
        if os.path.isfile(os.path.join(root, "bench", "__main__.py")):
            if root not in sys.path:
                sys.path.insert(0, root)
            return


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    _find_bench()
    try:
        # bench/ lives in the source tree, not in the package: looked up at run time.
        bench_main = importlib.import_module("bench.__main__").main
    except ModuleNotFoundError as exc:
        if exc.name != "bench":
            raise ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                                f"the benchmarks need {exc.name!r}: "
                                "pip install -e '.[bench]'") from None
        raise ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                            "the benchmarks (bench/) are not installed with the package: run "
                            "childkit bench inside a source checkout of childkit") from None
    status: int = bench_main(_bench_argv(args), prog="childkit bench")
    return status


def _cmd_sandbox_check(args: argparse.Namespace) -> int:
    from childkit.sandbox.__main__ import report

    return report(as_json=args.json)


# ---------------------------------------------------------------------- run: the inputs


def parse_timeout(text: str) -> float:
    """``--timeout``'s seconds: a finite number above 0 (and within what a wait takes).

    Raises:
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` otherwise.
    """
    try:
        seconds = float(text)
    except ValueError:
        raise _invalid(f"--timeout {text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise _invalid(f"--timeout {text!r}: the seconds must be a finite number above 0 "
                       "(leave --timeout out to wait as long as the child runs)")
    if seconds > threading.TIMEOUT_MAX:
        raise _invalid(f"--timeout {text!r} is too large (at most {threading.TIMEOUT_MAX:g})")
    return seconds


def _parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = _UNITS.get(text[-1:], 1)
    return int(text[:-1] if text[-1:] in _UNITS else text) * scale


def _parse_limits(spec: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in _LIMIT_KEYS:
            raise _invalid(f"--limit {item!r}: use KEY=VALUE with KEY one of "
                           f"{', '.join(_LIMIT_KEYS)}")
        if _LIMIT_KEYS[key] in limits:
            raise _invalid(f"--limit {item!r}: {key} is given twice")
        try:
            limits[_LIMIT_KEYS[key]] = _parse_size(value)
        except ValueError:
            raise _invalid(f"--limit {item!r}: {value!r} is not a whole number "
                           "(suffix k, m or g for sizes)") from None
    return limits


def _read_params(path: str) -> str:
    """The text of ``--param-file``: UTF-8, at most the 150 KB a child's params may hold.

    Reads at most one byte past that limit, so ``/dev/zero`` is refused, not read forever.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_ENTRY_PARAMS_BYTES + 1)
    except OSError as exc:
        raise _invalid(f"--param-file {path!r}: cannot read it: "
                       f"{exc.strerror or exc}") from None
    if len(raw) > MAX_ENTRY_PARAMS_BYTES:
        raise _invalid(f"--param-file {path!r}: over {MAX_ENTRY_PARAMS_BYTES} bytes, the most "
                       "a child's params may hold")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(f"--param-file {path!r} is not UTF-8 text: byte "
                       f"0x{raw[exc.start]:02x} at offset {exc.start}") from None


def _parse_fd_specs(specs: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(name, path, mode)`` of each ``--fd NAME=PATH[:r|w]``, checked before any is opened:
    well formed, names distinct, at most 16."""
    if len(specs) > MAX_FDS:
        raise _invalid(f"{len(specs)} --fd options: a child takes at most {MAX_FDS}")
    parsed: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for spec in specs:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise _invalid(f"--fd {spec!r}: use NAME=PATH[:r|w]")
        if name in seen:
            raise _invalid(f"--fd {spec!r}: the name {name!r} is given twice; each fd needs "
                           "its own name")
        seen.add(name)
        path, mode = rest, "r"
        if rest[-2:] in (":r", ":w"):
            path, mode = rest[:-2], rest[-1]
        if not path:
            raise _invalid(f"--fd {spec!r}: the path is empty")
        parsed.append((name, path, mode))
    return parsed


def _open_fds(specs: list[tuple[str, str, str]]) -> dict[str, int]:
    """Open each parsed ``--fd``; the caller closes them. On an error none stays open."""
    fds: dict[str, int] = {}
    try:
        for name, path, mode in specs:
            flags = os.O_RDONLY if mode == "r" else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            try:
                fds[name] = os.open(path, flags | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise _invalid(f"--fd {name}={path}:{mode}: cannot open {path!r}: "
                               f"{exc.strerror or exc}") from None
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def _run_options(args: argparse.Namespace) -> Any:
    from childkit import ChildProcessOptions, IsolationMode

    limits = _parse_limits(args.limit or "")
    if not args.isolated:
        if limits:
            raise _invalid("--limit needs --isolated")
        if args.allow_reduced:
            raise _invalid("--allow-reduced needs --isolated")
        if args.readonly:
            raise _invalid("--readonly needs --isolated")
        if args.allow_subprocesses:
            raise _invalid("--allow-subprocesses needs --isolated")
        return ChildProcessOptions()
    from childkit.sandbox import ResourceLimits

    kwargs: dict[str, Any] = {"isolation_mode": IsolationMode.ISOLATED,
                              "allow_reduced_sandbox": args.allow_reduced}
    if args.readonly:
        missing = [p for p in args.readonly if not os.path.exists(p)]
        if missing:
            raise _invalid(f"--readonly {missing[0]}: no such file or directory")
        kwargs["readonly_paths"] = [os.path.abspath(p) for p in args.readonly]
    if limits or args.allow_subprocesses:
        given: dict[str, Any] = dict(limits)  # ints, for fields that are not all int
        if args.allow_subprocesses:
            given["allow_subprocesses"] = True
        kwargs["limits"] = ResourceLimits(**given)  # the rest keep their defaults
    return ChildProcessOptions(**kwargs)


# ------------------------------------------------------------------------ run: the child


def _cmd_run(args: argparse.Namespace) -> int:
    import childkit
    from childkit import ChildProcessArgs

    # Every input is checked before anything is opened or started.
    timeout = parse_timeout(args.timeout) if args.timeout is not None else None
    params = _read_params(args.param_file) if args.param_file is not None else args.param or ""
    options = _run_options(args)
    fd_specs = _parse_fd_specs(args.fd or [])
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # entries are looked up from here, as `python -m` does
    exited = threading.Event()
    result: dict[str, Any] = {}
    pid_box: list[int] = []
    early: dict[int, childkit.ChildExitInfo] = {}

    def on_exit(pid: int, info: childkit.ChildExitInfo) -> None:
        # The pid is known only once the start returns; a child that exits before that is
        # found in `early`.
        early[pid] = info
        if pid_box and pid == pid_box[0]:
            result["info"] = info
            exited.set()

    childkit.register_child_process_exit_callback(on_exit)
    try:
        fds = _open_fds(fd_specs)
        try:
            pid = childkit.start_native_child_process(
                args.entry, ChildProcessArgs(params, fds), options)
        finally:
            for fd in fds.values():  # the child has its own copies
                os.close(fd)
        pid_box.append(pid)
        if pid in early:
            result["info"] = early[pid]
            exited.set()
        timed_out, interrupted = _wait(pid, exited, timeout)
    finally:
        childkit.unregister_child_process_exit_callback(on_exit)
    info = result.get("info")
    report = {"pid": pid, "timed_out": timed_out,
              "exit_code": info.exit_code if info else None,
              "signal": info.signal if info else None,
              "reason": info.reason if info else None}
    if args.json:
        print(json.dumps(report))
    else:
        why = (" (killed: --timeout passed)" if timed_out
               else " (killed: interrupted)" if interrupted else "")
        print(f"child {pid}: {info!r}{why}", file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    if timed_out or info is None:
        return EXIT_TIMEOUT
    return info.exit_code if info.exit_code is not None else 128 + (info.signal or 0)


def _wait(pid: int, exited: threading.Event, timeout: float | None) -> tuple[bool, bool]:
    """Wait for the child's exit; past ``timeout`` or on Ctrl-C kill it and wait for its
    report. Returns ``(timed_out, interrupted)``."""
    import childkit

    interrupted = False
    try:
        finished = exited.wait(timeout)
    except KeyboardInterrupt:
        finished, interrupted = False, True
    if finished:
        return False, False
    try:
        childkit.kill_child_process(pid)
        killed = True
    except ChildkitError as exc:
        if exc.code != ErrCode.NCP_ERR_INVALID_PID:
            raise
        killed = False  # it exited on its own at that very moment: report its own exit
    exited.wait(30)  # the manager reaps it and reports; 30 s is only a safety net
    return killed and not interrupted, interrupted


# ---------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``childkit`` argument parser (one sub-parser per command)."""
    parser = argparse.ArgumentParser(prog="childkit", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run HarmonyOS's two child modes end to end",
                          description="Run HarmonyOS's two native child modes: a child in "
                          "IPC mode whose stub doubles a number, and a child in args mode "
                          "that gets a string and a file descriptor. Exits 0 if both "
                          "behave.")
    demo.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="run ENTRY in an args-mode child and report its exit",
                         description="Start one child with start-up parameters "
                         "(HarmonyOS's args mode) "
                         "and wait for it; its exit code becomes ours (128+N for signal N, "
                         "124 for --timeout, 130 for Ctrl-C, 1 for an error).")
    run.add_argument("entry", help='"pkg.mod:func" or "[path/]libx.so:Main"')
    group = run.add_mutually_exclusive_group()
    group.add_argument("--param", metavar="TEXT",
                       help="the entry params string (up to 150 KB)")
    group.add_argument("--param-file", metavar="PATH",
                       help="read the entry params from a UTF-8 file (up to 150 KB)")
    run.add_argument("--fd", action="append", metavar="NAME=PATH[:r|w]",
                     help="open PATH (read by default, w: write, created/truncated) and pass "
                     "it as fd NAME; repeat for more (distinct names, at most 16)")
    run.add_argument("--isolated", action="store_true", help="run in the sandbox")
    run.add_argument("--allow-reduced", action="store_true",
                     help="with --isolated: start even if some sandbox layer is missing")
    run.add_argument("--readonly", action="append", metavar="PATH",
                     help="with --isolated: a file or directory the child may read (its "
                          "entry's own file always is; repeat for more, e.g. the "
                          "entry's sibling modules)")
    run.add_argument("--limit", metavar="mem=512m,cpu=10,nproc=32,nofile=64,fsize=1m",
                     help="resource limits of an --isolated child")
    run.add_argument("--allow-subprocesses", action="store_true",
                     help="with --isolated: let the child start processes where no cgroup "
                          "holds its limits (they then hold per process and multiply; "
                          "childkit sandbox-check says which)")
    run.add_argument("--timeout", metavar="S",
                     help="kill the child S seconds after it started (S > 0; exit 124)")
    run.add_argument("--json", action="store_true", help="print the exit report as JSON")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("sandbox-check", help="print which sandbox layers work here",
                           description="Probe each sandbox layer; exit 0 if an isolated "
                           "child gets the full sandbox, else 1.")
    check.add_argument("--json", action="store_true", help="print the layers as JSON")
    check.set_defaults(func=_cmd_sandbox_check)

    bench = sub.add_parser("bench", help="run the benchmarks beside their peers",
                           description="Run the benchmarks of a source checkout of "
                           "childkit (its bench/ directory, as python -m bench does; the "
                           "peers come with pip install -e '.[bench]'), found from the "
                           "current directory or the checkout childkit is installed from.")
    bench.add_argument("--quick", action="store_true",
                       help="small sizes, few repeats: check that every benchmark runs")
    bench.add_argument("--json", metavar="PATH",
                       help="where to write the results (default bench/results/latest.json)")
    bench.add_argument("--write-docs", action="store_true",
                       help="also write docs/performance.md and docs/img/performance.png")
    bench.add_argument("--from-json", metavar="PATH",
                       help="do not run: report (and with --write-docs, document) PATH")
    bench.add_argument("--only", metavar="NAMES",
                       help="comma-separated subset of the benchmarks "
                       "(python -m bench --help lists them)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def _report_error(name: str, code: int, message: str, hint: str, as_json: bool) -> None:
    print(f"childkit: {name} ({code}): {message}\nhint: {hint}", file=sys.stderr)
    if as_json:  # a script reading stdout gets the error as data too
        print(json.dumps({"error": {"name": name, "code": code, "message": message,
                                    "hint": hint}}))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Usage errors make argparse exit 2 (``SystemExit``); ``--help`` exits 0.
    """
    args = build_parser().parse_args(argv)
    as_json = args.command in ("run", "sandbox-check") and args.json
    try:
        status: int = args.func(args)
    except ChildkitError as exc:
        _report_error(exc.code.name, int(exc.code), exc.message, _HINTS[exc.code], as_json)
        return EXIT_ERROR
    except IPCError as exc:
        try:
            name = IPCErrorCode(exc.code).name
        except ValueError:
            name = f"user error {exc.code}"
        _report_error(name, exc.code, exc.message, ipc_hint(exc.code), as_json)
        return EXIT_ERROR
    return status
