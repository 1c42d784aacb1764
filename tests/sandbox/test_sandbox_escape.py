"""Escape attempts: each must fail in an ISOLATED child and succeed in a NORMAL one.

Runs as whatever user runs the suite (root in CI; see test_sandbox_unprivileged.py for
the unprivileged run).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import escape_actions as ea
import pytest
import sandbox_harness as harness

from childkit.sandbox import (
    ISOLATION_UID_BASE,
    MEMORY_LIMIT_EXIT_CODE,
    ResourceLimits,
    SandboxConfig,
    _landlock,
    _seccomp,
    _syscalls,
    exit_reason,
)

ROOT = os.geteuid() == 0


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with ea.escape_context(tmp_path, Path.home()) as context:
        yield context


def _config(ctx: dict[str, Any], **kwargs: Any) -> SandboxConfig:
    # Processes allowed unless a test sets limits: where no cgroup holds the limits
    # (nobody) the sandbox would be kept to one process, and an attempt that forks
    # would fail there (EAGAIN) rather than at the layer it tries.
    kwargs.setdefault("limits", ResourceLimits(allow_subprocesses=True))
    return SandboxConfig(readonly_paths=(ctx["ro_dir"],), **kwargs)


def _check_escape(case: ea.Case, ctx: dict[str, Any], config: SandboxConfig) -> None:
    normal = harness.run(case.action, ctx, None)
    assert normal.ok, f"{case.name} must work in a NORMAL child: {normal.describe()}"
    isolated = harness.run(case.action, ctx, config)
    assert isolated.report is not None, isolated.describe()
    assert isolated.report["stage"] == "action", (
        f"{case.name}: the isolated child must get as far as the attempt and fail in it: "
        f"{isolated.describe()}")


ROOT_CASES = [c for c in ea.CASES if c.as_nobody or ROOT]


@pytest.mark.parametrize("case", ea.CASES, ids=[c.name for c in ea.CASES])
def test_escape_fails_isolated_and_works_normal(case: ea.Case, ctx: dict[str, Any]) -> None:
    if (reason := case.skip_reason(ROOT)) is not None:
        pytest.skip(reason)
    _check_escape(case, ctx, _config(ctx))


@pytest.mark.parametrize("case", [c for c in ea.CASES if c.name in
                                  ("read_parent_home", "ptrace", "signal_parent")],
                         ids=lambda c: c.name)
def test_escape_fails_with_isolation_uid(case: ea.Case, ctx: dict[str, Any]) -> None:
    if not ROOT:
        pytest.skip("isolation_uid needs root; test_isolation_uid_refused_unprivileged "
                    "checks the refusal")
    _check_escape(case, ctx, _config(ctx, isolation_uid=True))


def test_specific_errors(ctx: dict[str, Any]) -> None:
    """The failures are the intended ones: EPERM from seccomp where it answers (every
    socket() call: no socket the child did not inherit is reachable), EBADF for a closed
    fd, ESRCH for an invisible pid, EROFS for a read-only mount, ENOENT for what is not
    in the sandbox at all; set*id calls are not in the policy either (EPERM)."""
    config = _config(ctx)
    expected: dict[harness.Action, set[int]] = {
        ea.mount_in_new_userns: {1}, ea.ptrace_child: {1}, ea.load_module: {1},
        ea.find_inherited_fd: {9}, ea.list_parent: {3}, ea.signal_parent: {3},
        ea.write_readonly_dir: {30}, ea.read_home_secret: {2}, ea.write_hidden_dir: {2},
        ea.write_root: {30}, ea.connect_unix: {1}, ea.connect_unix_visible: {1},
        ea.connect_abstract: {1}, ea.netlink_uevent_socket: {1}, ea.connect_tcp: {1},
        ea.resolve_dns: {1}}
    if ROOT:
        expected.update({ea.mount_tmpfs: {1}, ea.change_uid: {1}, ea.read_shadow: {2}})
    for action, errs in expected.items():
        outcome = harness.run(action, ctx, config)
        assert outcome.errno in errs, f"{action.__name__}: {outcome.describe()}"


def _layer_missing() -> None:
    raise OSError(95, "simulated: layer missing")


@pytest.mark.parametrize("layer", ["landlock", "seccomp"])
def test_each_attempt_still_fails_without_one_layer(
        layer: str, ctx: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: with Landlock or seccomp skipped (allow_reduced), the other layers
    still stop every attempt, each for its own reason."""
    module = {"landlock": _landlock, "seccomp": _seccomp}[layer]
    monkeypatch.setattr(module, "restrict" if layer == "landlock" else "install",
                        lambda *a, **k: _layer_missing())
    config = _config(ctx, allow_reduced=True)
    # Seccomp's alone: ptrace of its own child inside the sandbox (the pid namespace keeps
    # every outside process out of reach anyway), and finit_module, which on a kernel
    # without module support answers ENOSYS before any permission check (with modules,
    # the dropped CAP_SYS_MODULE refuses it).
    # And a socket under a path it may read (connect() needs no write access, and this
    # kernel's Landlock has no rule for connecting to pathname sockets): seccomp refuses
    # socket() itself.
    # A uevent socket opens too, but in the child's own network namespace no host event
    # arrives (netlink_host_uevent is refused without seccomp).
    seccomp_only = ({"ptrace", "load_kernel_module", "connect_unix_in_readonly_path",
                     "netlink_uevent_socket"} if layer == "seccomp" else set())
    for case in (c for c in ROOT_CASES if c.name not in seccomp_only):
        outcome = harness.run(case.action, ctx, config)
        assert outcome.report is not None and outcome.report["stage"] == "action", \
            f"{case.name} without {layer}: {outcome.describe()}"
    # Without Landlock: seccomp refuses socket() and unshare. Without seccomp: Landlock
    # refuses TCP and the write of the new namespace's uid map; the child's own network
    # namespace has none of the parent's abstract sockets (and Landlock scopes them), no
    # uevents (its owner is the sandbox's user namespace) and no route for a DNS packet.
    expected: dict[harness.Action, set[int]] = (
        {ea.connect_tcp: {1}, ea.mount_in_new_userns: {1}, ea.connect_abstract: {1}}
        if layer == "landlock"
        else {ea.connect_tcp: {13}, ea.mount_in_new_userns: {13},
              ea.connect_abstract: {1, 111}, ea.resolve_dns: {101}})
    for action, errs in expected.items():
        outcome = harness.run(action, ctx, config)
        assert outcome.errno in errs, f"{action.__name__}: {outcome.describe()}"


def test_fork_bomb_stops_at_max_processes(ctx: dict[str, Any]) -> None:
    ctx = dict(ctx, forks=24)
    assert harness.run(ea.fork_bomb, ctx, None).report["value"] == 24  # type: ignore[index]
    config = _config(ctx, limits=ResourceLimits(max_processes=8, allow_subprocesses=True))
    outcome = harness.run(ea.fork_bomb, ctx, config)
    assert outcome.report is not None and outcome.report["stage"] == "action"
    assert outcome.report["error"] == "BlockingIOError", outcome.describe()  # EAGAIN
    # At the edge: exactly max_processes - 1 children fit beside the sandboxed process.
    within = harness.run(ea.fork_bomb, dict(ctx, forks=7), config)
    assert within.ok and within.report["value"] == 7, within.describe()  # type: ignore[index]
    over = harness.run(ea.fork_bomb, dict(ctx, forks=8), config)
    assert over.report is not None and over.report["error"] == "BlockingIOError"


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize")


def test_memory_limit(ctx: dict[str, Any]) -> None:
    limit = _vm_size() + 256 * 1024 * 1024
    ctx = dict(ctx, alloc_bytes=limit)
    assert harness.run(ea.allocate, ctx, None).ok
    config = _config(ctx, limits=ResourceLimits(memory_bytes=limit))
    outcome = harness.run(ea.allocate, ctx, config)
    assert outcome.report is not None and outcome.report["error"] == "MemoryError", \
        outcome.describe()
    small = harness.run(ea.allocate, dict(ctx, alloc_bytes=16 * 1024 * 1024), config)
    assert small.ok, small.describe()


def _unhandled_memory_error(ctx: dict[str, Any]) -> None:
    try:
        ea.allocate(ctx)
    except MemoryError:
        sys.excepthook(*sys.exc_info())  # what the interpreter does with an uncaught one
    raise AssertionError("allocation did not fail")


def test_unhandled_memory_error_ends_child_with_reason(ctx: dict[str, Any]) -> None:
    limit = _vm_size() + 128 * 1024 * 1024
    limits = ResourceLimits(memory_bytes=limit)
    outcome = harness.run(_unhandled_memory_error, dict(ctx, alloc_bytes=limit),
                          _config(ctx, limits=limits))
    assert outcome.report is None
    assert os.waitstatus_to_exitcode(outcome.status) == MEMORY_LIMIT_EXIT_CODE
    assert "memory limit" in (exit_reason(outcome.status, limits) or "")


def _burn_cpu(ctx: dict[str, Any]) -> str:
    start = os.times()
    while (os.times().user - start.user) < ctx["cpu_s"]:
        pass
    return "done"


def test_cpu_limit_kills_with_sigxcpu(ctx: dict[str, Any]) -> None:
    ctx = dict(ctx, cpu_s=1.5)
    assert harness.run(_burn_cpu, ctx, None).ok
    limits = ResourceLimits(cpu_seconds=1)
    outcome = harness.run(_burn_cpu, ctx, _config(ctx, limits=limits))
    assert outcome.report is None, outcome.describe()
    assert os.WIFSIGNALED(outcome.status) and os.WTERMSIG(outcome.status) == signal.SIGXCPU
    assert "cpu time limit" in (exit_reason(outcome.status, limits) or "")


def _write_file(ctx: dict[str, Any]) -> int:
    with open(f"/tmp/childkit-fsize-{os.getpid()}", "wb") as f:
        try:
            return f.write(b"\0" * ctx["size"])
        finally:
            os.unlink(f.name)


def test_file_size_limit(ctx: dict[str, Any]) -> None:
    ctx = dict(ctx, size=1024 * 1024 + 1)
    assert harness.run(_write_file, ctx, None).ok
    config = _config(ctx, limits=ResourceLimits(max_file_size=1024 * 1024))
    outcome = harness.run(_write_file, ctx, config)
    assert outcome.errno == 27, outcome.describe()  # EFBIG
    at_edge = harness.run(_write_file, dict(ctx, size=1024 * 1024), config)
    assert at_edge.ok, at_edge.describe()


def _open_many(ctx: dict[str, Any]) -> int:
    fds: list[int] = []
    try:
        while len(fds) < ctx["files"]:
            fds.append(os.open("/dev/null", os.O_RDONLY))
        return len(fds)
    finally:
        for fd in fds:
            os.close(fd)


def _open_until_full(ctx: dict[str, Any]) -> dict[str, int]:
    fds: list[int] = []
    try:
        while True:
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        return {"errno": exc.errno or 0, "max_fd": max(fds)}
    finally:
        for fd in fds:
            os.close(fd)


def test_open_files_limit(ctx: dict[str, Any]) -> None:
    ctx = dict(ctx, files=100)
    assert harness.run(_open_many, ctx, None).ok
    config = _config(ctx, limits=ResourceLimits(max_open_files=64))
    outcome = harness.run(_open_many, ctx, config)
    assert outcome.errno == 24, outcome.describe()  # EMFILE
    # At the edge: fd 63 is the last one it gets.
    full = harness.run(_open_until_full, ctx, config)
    assert full.ok and full.report["value"] == {"errno": 24, "max_fd": 63}, full.describe()  # type: ignore[index]


def _with_sub_mount(ctx: dict[str, Any]) -> None:
    """In a private mount namespace, mount a tmpfs beneath the read-only directory."""
    _syscalls.unshare(_syscalls.CLONE_NEWNS)
    _syscalls.mount(None, "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
    _syscalls.mount("tmpfs", ctx["sub_dir"], "tmpfs", 0, "mode=0777,size=1m")


def _write_sub_mount(ctx: dict[str, Any]) -> str:
    Path(ctx["sub_dir"], "file").write_text("x")
    return "written"


def test_mounts_beneath_readonly_path_are_readonly_too(ctx: dict[str, Any]) -> None:
    if not ROOT:
        pytest.skip("making the sub-mount needs root; the sandbox code path is the same")
    sub = Path(ctx["ro_dir"]) / "sub"
    sub.mkdir()
    ctx = dict(ctx, sub_dir=str(sub))
    normal = harness.run(_write_sub_mount, ctx, None, prepare=_with_sub_mount)
    assert normal.ok, normal.describe()
    isolated = harness.run(_write_sub_mount, ctx, _config(ctx), prepare=_with_sub_mount)
    assert isolated.errno == 30, isolated.describe()  # EROFS


def _identity(ctx: dict[str, Any]) -> dict[str, Any]:
    try:
        readable = Path(ctx["private_file"]).read_text() == "private"
    except PermissionError:
        readable = False
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "readable": readable}


def test_isolation_uid(ctx: dict[str, Any], tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("needs root; test_isolation_uid_refused_unprivileged covers the rest")
    private = Path(ctx["ro_dir"]) / "private"
    private.write_text("private")
    private.chmod(0o600)
    ctx = dict(ctx, private_file=str(private))
    normal = harness.run(_identity, ctx, None)
    assert normal.ok and normal.report["value"]["readable"]  # type: ignore[index]
    first = harness.run(_identity, ctx, _config(ctx, isolation_uid=True))
    second = harness.run(_identity, ctx, _config(ctx, isolation_uid=True))
    for outcome in (first, second):
        assert outcome.ok, outcome.describe()
        value = outcome.report["value"]  # type: ignore[index]
        assert value["uid"] != os.getuid() and value["uid"] >= ISOLATION_UID_BASE
        assert value["gid"] == value["uid"] and value["groups"] == []
        assert value["readable"] is False
    assert first.report["value"]["uid"] != second.report["value"]["uid"]  # type: ignore[index]
