"""The escape checks again, with the parent running as an unprivileged user (nobody).

When the suite runs as root, a forked process becomes 65534 (nobody) and runs the checks
that make sense for an unprivileged parent (those whose action a normal unprivileged
child can do: not /etc/shadow, mount, module loading or setuid, which nobody cannot do
anyway) with itself as the parent; it reports them as JSON. This interpreter lives under
root's 0700 home (pyenv), which nobody cannot enter, so that process first gets a private
mount namespace whose home is a fresh tmpfs re-exposing only the interpreter directory:
the same files, reachable by nobody, and nothing else of the host is changed. When the
suite itself runs unprivileged, test_sandbox_escape.py already is this run and the
checks here run directly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import escape_actions as ea
import pytest
import sandbox_harness as harness

from childkit.sandbox import ResourceLimits, SandboxConfig, _syscalls, probe
from childkit.sandbox._check import OPTIONAL_LAYERS

NOBODY = 65534
NOBODY_CASES = [c for c in ea.CASES if c.as_nobody]


def _expose_interpreter_only(home: Path) -> None:
    _syscalls.unshare(_syscalls.CLONE_NEWNS)
    _syscalls.mount(None, "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
    prefix = Path(sys.base_prefix).resolve()
    if home not in prefix.parents:
        return
    source = os.open(prefix, os.O_PATH)
    try:
        _syscalls.mount("tmpfs", str(home), "tmpfs", 0, "mode=1777,size=1m")
        prefix.mkdir(parents=True)
        _syscalls.mount(f"/proc/self/fd/{source}", str(prefix), None,
                        _syscalls.MS_BIND | _syscalls.MS_REC)
    finally:
        os.close(source)


def _run_checks() -> dict[str, Any]:
    results: dict[str, Any] = {"uid": os.getuid()}
    workdir = Path(tempfile.mkdtemp(prefix="childkit-nobody-"))
    try:
        with ea.escape_context(workdir, Path.home()) as ctx:
            config = SandboxConfig(readonly_paths=(ctx["ro_dir"],))
            for case in NOBODY_CASES:
                normal = harness.run(case.action, ctx, None)
                isolated = harness.run(case.action, ctx, config)
                results[case.name] = {"normal_ok": normal.ok, "normal": normal.describe(),
                                      "isolated": isolated.report,
                                      "isolated_status": isolated.status}
            bomb = dict(ctx, forks=24)
            results["fork_bomb"] = {
                "normal": harness.run(ea.fork_bomb, bomb, None).report,
                "isolated": harness.run(ea.fork_bomb, bomb, SandboxConfig(
                    limits=ResourceLimits(max_processes=8, allow_subprocesses=True))).report}
            # No cgroup for nobody: kept to one process unless allowed (then per process).
            one = dict(ctx, forks=1)
            results["one_process"] = {
                "normal": harness.run(ea.fork_bomb, one, None).report,
                "isolated": harness.run(ea.fork_bomb, one, SandboxConfig()).report,
                "allowed": harness.run(ea.fork_bomb, one, SandboxConfig(
                    limits=ResourceLimits(allow_subprocesses=True))).report}
            results["isolation_uid"] = harness.run(
                ea.resolve_host, ctx, SandboxConfig(isolation_uid=True)).report
            results["probe"] = {k: [v.supported, v.reason] for k, v in probe().items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


@pytest.fixture(scope="module")
def nobody_results() -> dict[str, Any]:
    if os.geteuid() != 0:
        return _run_checks()
    home = Path.home().resolve()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(read_fd)
            _expose_interpreter_only(home)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            # As if exec'd as nobody: the uid change left us non-dumpable, which would
            # refuse even a NORMAL child's ptrace of its own child.
            _syscalls.prctl(_syscalls.PR_SET_DUMPABLE, 1)
            os.environ["HOME"] = str(home)
            payload = _run_checks()
        except BaseException as exc:
            code, payload = 1, {"error": repr(exc)}
        with contextlib.suppress(BaseException):
            os.write(write_fd, json.dumps(payload, default=repr).encode())
        os._exit(code)
    os.close(write_fd)
    chunks = []
    try:
        while chunk := os.read(read_fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    results: dict[str, Any] = json.loads(b"".join(chunks))
    assert "error" not in results, results
    return results


def test_runs_as_nobody(nobody_results: dict[str, Any]) -> None:
    assert nobody_results["uid"] != 0


@pytest.mark.parametrize("case", NOBODY_CASES, ids=[c.name for c in NOBODY_CASES])
def test_escape_fails_unprivileged(case: ea.Case, nobody_results: dict[str, Any]) -> None:
    result = nobody_results[case.name]
    assert result["normal_ok"], result["normal"]
    assert result["isolated"] is not None, result
    assert result["isolated"]["stage"] == "action", result


def test_fork_bomb_unprivileged(nobody_results: dict[str, Any]) -> None:
    result = nobody_results["fork_bomb"]
    assert result["normal"]["value"] == 24, result
    assert result["isolated"]["error"] == "BlockingIOError", result


def test_one_process_unprivileged(nobody_results: dict[str, Any]) -> None:
    """Issue 12, classes 6 and 7 without cgroups: an isolated child whose limits no
    cgroup holds cannot fork at all (EAGAIN, BlockingIOError), so its per-process limits
    hold for all of it; ``allow_subprocesses=True`` lets it fork."""
    result = nobody_results["one_process"]
    assert result["normal"]["value"] == 1, result
    assert result["isolated"]["error"] == "BlockingIOError", result
    assert result["isolated"]["errno"] == errno.EAGAIN, result
    assert result["allowed"]["value"] == 1, result


def test_isolation_uid_refused_unprivileged(nobody_results: dict[str, Any]) -> None:
    report = nobody_results["isolation_uid"]
    assert report["stage"] == "enter" and report["error"] == "SandboxUnavailable", report
    assert "isolation_uid" in report["message"] and "801" in report["message"]


def test_probe_unprivileged(nobody_results: dict[str, Any]) -> None:
    layers = nobody_results["probe"]
    assert layers["isolation_uid"][0] is False
    assert all(ok for name, (ok, _) in layers.items() if name not in OPTIONAL_LAYERS), layers
    # No cgroup for nobody: the child is kept to one process, and the report says so.
    ok, reason = layers["aggregate_limits"]
    assert ok and "kept to one process" in reason and "allow_subprocesses" in reason, reason
