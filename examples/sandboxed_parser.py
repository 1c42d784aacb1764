"""Parse an untrusted file in an isolated child that receives the file as an fd.

The parent opens the file; the child (``IsolationMode.ISOLATED``) gets only the open fd
and a pipe for its answer. The parser here honours ``include <path>`` lines, which is
exactly the kind of feature an attacker abuses: the untrusted file asks it to include
``/etc/passwd``. Inside the sandbox the parent's filesystem is absent, so the include
fails while the fd-passed file is parsed normally.

If this machine (or this build of childkit) cannot start isolated children, the example
says so on stderr and exits with status 3: it never parses the file unsandboxed.

Run: ``python examples/sandboxed_parser.py`` (exit status 0 on success).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading

import childkit
from childkit import (
    ChildExitInfo,
    ChildkitError,
    ChildProcessArgs,
    ChildProcessOptions,
    ErrCode,
    IsolationMode,
)

UNTRUSTED = """\
# a configuration file from somewhere on the internet
name = report
pages = 12
include /etc/passwd
"""

#: Exit status when isolated children cannot be started here.
NOT_AVAILABLE = 3


def parse_main(args: ChildProcessArgs) -> int:
    """The isolated child's entry: parse fd "input", answer through fd "out" as JSON."""
    settings: dict[str, str] = {}
    includes: dict[str, str] = {}
    with os.fdopen(args.fds["input"], "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("include "):
                path = line.removeprefix("include ").strip()
                try:
                    with open(path, encoding="utf-8", errors="replace") as inc:
                        includes[path] = f"read {len(inc.read())} characters"
                except OSError as exc:
                    includes[path] = f"refused: {type(exc).__name__}: {exc.strerror}"
                continue
            key, sep, value = line.partition("=")
            if sep:
                settings[key.strip()] = value.strip()
    answer = {"settings": settings, "includes": includes, "uid": os.getuid(),
              "pid_inside": os.getpid()}
    os.write(args.fds["out"], json.dumps(answer).encode())
    os.close(args.fds["out"])
    return 0


def main() -> int:
    exited = threading.Event()
    exits: dict[int, ChildExitInfo] = {}

    def on_exit(pid: int, info: ChildExitInfo) -> None:
        exits[pid] = info
        exited.set()

    childkit.register_child_process_exit_callback(on_exit)
    read_end, write_end = os.pipe()
    try:
        with tempfile.NamedTemporaryFile("w+", suffix=".conf") as untrusted:
            untrusted.write(UNTRUSTED)
            untrusted.flush()
            untrusted.seek(0)
            try:
                pid = childkit.start_native_child_process(
                    "sandboxed_parser:parse_main",
                    ChildProcessArgs("", {"input": untrusted.fileno(), "out": write_end}),
                    ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED),
                )
            except ChildkitError as exc:
                print(f"sandboxed_parser: cannot start an isolated child here: "
                      f"{exc.code.name}: {exc.message}", file=sys.stderr)
                if exc.code == ErrCode.NCP_ERR_NOT_SUPPORTED:
                    print("sandboxed_parser: not parsing the file unsandboxed; "
                          "see `childkit sandbox-check`", file=sys.stderr)
                return NOT_AVAILABLE
        os.close(write_end)
        write_end = -1
        print(f"isolated child pid {pid} got the untrusted file as fd 'input'")
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        if not exited.wait(30):
            print("the child did not exit within 30 s", file=sys.stderr)
            return 1
        print(f"exit callback: {exits[pid]}")
        if not chunks:
            print("the child gave no answer", file=sys.stderr)
            return 1
        answer = json.loads(b"".join(chunks))
        print(f"parsed settings: {answer['settings']}")
        for path, outcome in answer["includes"].items():
            print(f"include {path}: {outcome}")
        ok = (answer["settings"] == {"name": "report", "pages": "12"}
              and answer["includes"]["/etc/passwd"].startswith("refused")
              and exits[pid].exit_code == 0)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        childkit.unregister_child_process_exit_callback(on_exit)
    print("sandboxed_parser: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
