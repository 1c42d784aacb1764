"""Args-mode entry for the isolated-child tests: run one escape attempt and report.

Params (JSON): ``actions_file`` (tests/sandbox/escape_actions.py), ``action`` (a function
name there), ``ctx`` (its targets). Writes ``{"ok": ..., "error": ...}`` to fd "out".
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

from childkit import ChildProcessArgs


def run(args: ChildProcessArgs) -> int:
    params = json.loads(args.entry_params)
    spec = importlib.util.spec_from_file_location("escape_actions", params["actions_file"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["escape_actions"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    try:
        result = getattr(module, params["action"])(params["ctx"])
        report = {"ok": True, "result": repr(result)}
    except BaseException as exc:  # the failure is the expected outcome when isolated
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    os.write(args.fds["out"], json.dumps(report).encode())
    return 0


def report_identity(args: ChildProcessArgs) -> int:
    """Write pid, uid and the environment size to fd "out"."""
    os.write(args.fds["out"], json.dumps(
        {"pid": os.getpid(), "uid": os.getuid(), "env": sorted(os.environ)}).encode())
    return 0


def burn_cpu(args: ChildProcessArgs) -> int:
    while True:
        pass
