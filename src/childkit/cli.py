"""The ``childkit`` command-line tool.

Commands: ``demo`` (the seed article's two scenarios), ``run`` (one args-mode child,
optionally sandboxed: a launcher for untrusted code), ``sandbox-check`` (which sandbox
layers this machine supports), ``bench`` (the benchmarks beside their peers). Errors
print the ``NCP_*``/``OH_IPC_*`` name, the message and a hint, and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from childkit._errors import ChildkitError, ErrCode
from childkit.ipc._errors import IPCError

_HINTS = {
    ErrCode.NCP_ERR_INVALID_PARAM: "check the entry string, params, fd names and limits",
    ErrCode.NCP_ERR_LIB_LOADING_FAILED: "is the module importable from here (PYTHONPATH, "
                                        "the current directory) or the library on the path?",
    ErrCode.NCP_ERR_NOT_SUPPORTED: "run `childkit sandbox-check` to see which layer is missing",
    ErrCode.NCP_ERR_TIMEOUT: "the child did not start in time; try a larger --timeout",
    ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED: "at most 50 children may live at once",
}
_LIMIT_KEYS = {"mem": "memory_bytes", "cpu": "cpu_seconds", "nproc": "max_processes",
               "nofile": "max_open_files", "fsize": "max_file_size"}
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def _cmd_demo(args: argparse.Namespace) -> int:
    from childkit import _demo

    status: int = _demo.run(verbose=not args.quiet)
    return status


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    try:
        # bench/ lives in the source tree, not in the package: looked up at run time.
        bench_main = importlib.import_module("bench.__main__").main
    except ImportError:
        print("childkit bench: the bench/ directory is not importable; run it from a "
              "source checkout (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    status: int = bench_main(["--quick"] if args.quick else [])
    return status


def _cmd_sandbox_check(args: argparse.Namespace) -> int:
    from childkit.sandbox import check_text, full_sandbox_available, probe

    layers = probe()
    if args.json:
        print(json.dumps({name: {"supported": s.supported, "reason": s.reason}
                          for name, s in layers.items()}, indent=2))
    else:
        print(check_text(layers))
    return 0 if full_sandbox_available(layers) else 1


def _parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = _UNITS.get(text[-1:], 1)
    return int(text[:-1] if text[-1:] in _UNITS else text) * scale


def _parse_limits(spec: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in filter(None, spec.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in _LIMIT_KEYS:
            raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                f"--limit {item!r}: use KEY=VALUE with KEY one of "
                                f"{', '.join(_LIMIT_KEYS)}")
        try:
            limits[_LIMIT_KEYS[key]] = _parse_size(value)
        except ValueError:
            raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                f"--limit {item!r}: {value!r} is not a number") from None
    return limits


def _open_fds(specs: list[str]) -> dict[str, int]:
    fds: dict[str, int] = {}
    try:
        for spec in specs:
            name, sep, rest = spec.partition("=")
            if not sep or not name or not rest:
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                    f"--fd {spec!r}: use NAME=PATH[:r|w]")
            path, mode = rest, "r"
            if rest[-2:] in (":r", ":w"):
                path, mode = rest[:-2], rest[-1]
            flags = os.O_RDONLY if mode == "r" else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            try:
                fds[name] = os.open(path, flags | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise ChildkitError(
                    ErrCode.NCP_ERR_INVALID_PARAM,
                    f"--fd {spec!r}: cannot open {path!r}: {exc.strerror}") from None
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def _cmd_run(args: argparse.Namespace) -> int:
    import childkit
    from childkit import ChildProcessArgs, ChildProcessOptions, IsolationMode

    if args.param_file is not None:
        with open(args.param_file, encoding="utf-8") as f:
            params = f.read()
    else:
        params = args.param or ""
    limits = _parse_limits(args.limit or "")
    options_kwargs: dict[str, Any] = {}
    if args.isolated:
        from childkit.sandbox import ResourceLimits

        options_kwargs["isolation_mode"] = IsolationMode.ISOLATED
        if limits:
            options_kwargs["limits"] = ResourceLimits(**limits)
        if args.allow_reduced:
            options_kwargs["allow_reduced_sandbox"] = True
    elif limits:
        raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, "--limit needs --isolated")
    sys.path.insert(0, os.getcwd())  # entries are looked up from here, as `python -m` does
    exited = threading.Event()
    result: dict[str, Any] = {}
    pid_box: list[int] = []

    def on_exit(pid: int, info: childkit.ChildExitInfo) -> None:
        if pid_box and pid == pid_box[0]:
            result["info"] = info
            exited.set()

    fds = _open_fds(args.fd or [])
    childkit.register_child_process_exit_callback(on_exit)
    try:
        pid = childkit.start_native_child_process(
            args.entry, ChildProcessArgs(params, fds), ChildProcessOptions(**options_kwargs))
        pid_box.append(pid)
        if "info" in result:
            exited.set()
    finally:
        for fd in fds.values():
            os.close(fd)
    timed_out = not exited.wait(args.timeout)
    if timed_out:
        childkit.kill_child_process(pid)
        exited.wait(30)
    childkit.unregister_child_process_exit_callback(on_exit)
    info = result.get("info")
    report = {"pid": pid, "timed_out": timed_out,
              "exit_code": info.exit_code if info else None,
              "signal": info.signal if info else None,
              "reason": info.reason if info else None}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"child {pid}: {info!r}" + (" (killed: --timeout passed)" if timed_out else ""),
              file=sys.stderr)
    if timed_out or info is None:
        return 124
    return info.exit_code if info.exit_code is not None else 128 + (info.signal or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="childkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the seed article's two scenarios end to end")
    demo.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    demo.set_defaults(func=_cmd_demo)
    run = sub.add_parser("run", help="run ENTRY in an args-mode child and report its exit",
                         description="Start one child with start-up parameters (seed III) "
                         "and wait for it; its exit code becomes ours (128+N for signal N, "
                         "124 for --timeout).")
    run.add_argument("entry", help='"pkg.mod:func" or "[path/]libx.so:Main"')
    group = run.add_mutually_exclusive_group()
    group.add_argument("--param", help="the entry params string (up to 150 KB)")
    group.add_argument("--param-file", help="read the entry params from a file")
    run.add_argument("--fd", action="append", metavar="NAME=PATH[:r|w]",
                     help="open PATH (read by default) and pass it as fd NAME")
    run.add_argument("--isolated", action="store_true", help="run in the sandbox")
    run.add_argument("--allow-reduced", action="store_true",
                     help="with --isolated: start even if some sandbox layer is missing")
    run.add_argument("--limit", metavar="mem=512m,cpu=10,nproc=32,nofile=64,fsize=1m",
                     help="resource limits of an --isolated child")
    run.add_argument("--timeout", type=float, default=None,
                     help="kill the child after S seconds")
    run.add_argument("--json", action="store_true", help="print the exit report as JSON")
    run.set_defaults(func=_cmd_run)
    check = sub.add_parser("sandbox-check", help="print which sandbox layers work here")
    check.add_argument("--json", action="store_true", help="print the layers as JSON")
    check.set_defaults(func=_cmd_sandbox_check)
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
        hint = _HINTS.get(exc.code)
        print(f"childkit: {exc.code.name}: {exc.message}" + (f"\nhint: {hint}" if hint else ""),
              file=sys.stderr)
        return 1
    except IPCError as exc:
        print(f"childkit: {exc}", file=sys.stderr)
        return 1
    return status
