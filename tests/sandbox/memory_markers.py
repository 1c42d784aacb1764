"""Issue 12, classes 1 to 3: which secrets a child can find anywhere in its memory.

Run as ``python memory_markers.py MODE`` (MODE: normal or isolated) in a fresh process
(an application with a launcher of its own): it plants three markers, then starts a
child that reads its whole readable memory (workers.escape_entry:search_memory) in the
same burst as a sibling, and prints the markers that child found as JSON:

- ``launcher``: a variable in the environment the launcher was started with (it lands in
  the launcher's heap, where setproctitle moved it);
- ``environment``: a variable the application set after the launcher started (it rides
  in every start request's environment changes);
- ``sibling``: the params of another child started in the same burst (the launcher takes
  the waiting requests together, so a child forked from it holds the others).

The burst is made certain: the process that forks them is stopped (SIGSTOP) until both
requests wait on its socket, the searcher's first, so that the sibling's request is
still waiting in the forking process's memory when the searcher is forked. That process
is the launcher for NORMAL children; for ISOLATED ones the isolated template, to which
the application sends fork orders itself once the first isolated start has started it
(each request goes into a channel of its own: what waits on the template's socket is
the orders).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import struct
import sys
import termios
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: workers, leakcheck

import childkit
from childkit import ChildProcessArgs, ChildProcessOptions, IsolationMode
from childkit.process._manager import manager
from leakcheck import wait_until


def _marker() -> str:
    return "CKMARK-" + secrets.token_hex(16)


def _queued(isolated: bool) -> int:
    """Bytes sent to the forking process (the launcher, or the isolated template) that it
    has not read yet (SIOCOUTQ of our end)."""
    sock = manager()._template if isolated else manager()._sock
    assert sock is not None
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                              b"\0\0\0\0"))[0])


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def main(mode: str) -> dict[str, Any]:
    markers = {"launcher": _marker(), "environment": _marker(), "sibling": _marker()}
    os.environ["CHILDKIT_TEST_LAUNCHER_SECRET"] = markers["launcher"]
    launcher = childkit.prestart_launcher()
    os.environ["CHILDKIT_TEST_APP_SECRET"] = markers["environment"]
    options = (ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
               if mode == "isolated" else None)
    if options is not None:  # the isolated template is started by the first one
        warm_r, warm_w = os.pipe()
        childkit.start_native_child_process(
            "workers.escape_entry:report_identity", ChildProcessArgs("", {"out": warm_w}),
            options)
        os.close(warm_w)
        _read_all(warm_r)
        os.close(warm_r)
    results: dict[str, bytes] = {}
    pipes = {name: os.pipe() for name in ("searcher", "sibling")}
    calls = {
        "searcher": ("workers.escape_entry:search_memory", ""),
        "sibling": ("workers.escape_entry:report_identity",
                    json.dumps({"note": markers["sibling"]})),
    }
    errors: list[BaseException] = []
    exits: list[tuple[int, Any]] = []
    childkit.register_child_process_exit_callback(lambda pid, info: exits.append((pid, info)))

    def start(name: str) -> None:
        entry, params = calls[name]
        try:
            childkit.start_native_child_process(
                entry, ChildProcessArgs(params, {"out": pipes[name][1]}), options)
        except BaseException as exc:
            errors.append(exc)

    isolated = options is not None
    forker = _isolated_templates(launcher)[0]["pid"] if isolated else launcher
    os.kill(forker, signal.SIGSTOP)
    threads = []
    try:
        for name in ("searcher", "sibling"):
            before = _queued(isolated)
            thread = threading.Thread(target=start, args=(name,))
            thread.start()
            threads.append(thread)
            assert wait_until(lambda b=before: _queued(isolated) > b or bool(errors)), name
    finally:
        os.kill(forker, signal.SIGCONT)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    for name, (r, w) in pipes.items():
        os.close(w)
        results[name] = _read_all(r)
        os.close(r)
    if not results["searcher"]:  # it ended without a report: say how, for the failure
        assert wait_until(lambda: len(exits) >= 2), exits
        raise RuntimeError(f"the searcher wrote nothing; the children ended so: {exits}")
    report = json.loads(results["searcher"])
    found = set(report["found"])
    return {"found": sorted(name for name, marker in markers.items() if marker in found),
            "mappings": report["mappings"], "bytes": report["bytes"],
            "templates": _isolated_templates(launcher)}


def _isolated_templates(launcher: int) -> list[dict[str, Any]]:
    """The launcher's isolated template (if it started one): its pid and environment."""
    with open(f"/proc/{launcher}/task/{launcher}/children") as f:
        pids = [int(p) for p in f.read().split()]
    found = []
    for pid in pids:
        with open(f"/proc/{pid}/comm") as f:
            if f.read().strip() != "childkit-isolat":
                continue
        with open(f"/proc/{pid}/environ", "rb") as f:
            found.append({"pid": pid, "environ": f.read().decode(errors="replace")})
    return found


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
