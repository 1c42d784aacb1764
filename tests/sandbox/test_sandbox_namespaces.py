"""How the sandbox's namespaces are made (docs/sandbox.md, "What enter does", 3-5).

The usual way: the init is cloned straight into every namespace and the supervisor,
still outside, writes its uid/gid maps. When the kernel refuses that, the namespaces are
made one by one (a helper writes the maps as root), so that a failure names its layer.
Each test checks what the sandboxed process ends up with (uid, gids, maps, namespaces,
fds, layers), which must not depend on the way taken, and that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import threading
from collections.abc import Iterator
from typing import Any

import escape_actions as ea
import pytest
import sandbox_harness as harness

import childkit.sandbox as sandbox
from childkit.sandbox import (
    ISOLATION_UID_BASE,
    SHARED_UID,
    ResourceLimits,
    SandboxConfig,
    _namespaces,
    _syscalls,
)
from childkit.sandbox._check import OPTIONAL_LAYERS

ROOT = os.geteuid() == 0 and _namespaces.is_privileged()
NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup")


def _open_fds() -> list[int]:
    found = []
    for fd in range(256):  # fstat opens nothing, unlike listing /proc/self/fd
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def _inside_view() -> dict[str, Any]:
    def read(path: str) -> list[str]:
        with open(path) as f:
            return f.read().split()

    return {
        "uids": os.getresuid(), "gids": os.getresgid(), "groups": os.getgroups(),
        "uid_map": read("/proc/self/uid_map"), "gid_map": read("/proc/self/gid_map"),
        "ns": {name: os.readlink(f"/proc/self/ns/{name}") for name in NAMESPACES},
        "pid": os.getpid(), "main_native_id": threading.main_thread().native_id,
        "native_id": threading.get_native_id(), "fds": _open_fds(),
        "layers": {name: status.supported for name, status in sandbox.layer_report().items()},
    }


@contextlib.contextmanager
def _sandboxed(config: SandboxConfig) -> Iterator[tuple[int, dict[str, Any]]]:
    """Fork a child that enters ``config``'s sandbox and reports what it sees; yield
    (the child's pid, i.e. the supervisor's, and that report) while the sandboxed process
    still lives, then let it exit and reap the child."""
    info_r, info_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(info_r)
            os.close(go_w)
            sandbox.enter(config, keep_fds=[info_w, go_r])
            view = _inside_view()
            view["kept"] = [info_w, go_r]
            os.write(info_w, json.dumps(view).encode())
            os.close(info_w)
            os.read(go_r, 1)  # until the test has looked from outside
        except BaseException as exc:
            os.write(info_w, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            code = 1
        os._exit(code)
    os.close(info_w)
    os.close(go_r)
    try:
        chunks = []
        while True:
            ready, _, _ = select.select([info_r], [], [], harness.DEADLINE_S)
            assert ready, "the sandboxed process did not report"
            chunk = os.read(info_r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        view = json.loads(b"".join(chunks))
        assert "error" not in view, view["error"]
        yield pid, view
    finally:
        os.close(go_w)  # EOF: the sandboxed process exits
        os.close(info_r)
        os.waitpid(pid, 0)


def _children(pid: int) -> list[str]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return f.read().split()


def _check_view(pid: int, view: dict[str, Any], uid: int) -> None:
    """What docs/sandbox.md promises, whichever way the namespaces were made."""
    gid = uid
    assert view["uids"] == [uid] * 3 and view["gids"] == [gid] * 3
    assert view["groups"] in ([], [gid])  # cleared (root) or denied with setgroups
    outside = uid if ROOT else 0  # unprivileged: root of the namespace the root was built in
    assert view["uid_map"] == [str(uid), str(outside), "1"]
    assert view["gid_map"] == [str(gid), str(outside if ROOT else 0), "1"]
    # Every layer but the optional ones: aggregate limits need cgroups and root, and the
    # namespaces made one by one leave them per process (docs/sandbox.md, "Limits").
    assert all(applied for name, applied in view["layers"].items()
               if name not in OPTIONAL_LAYERS), view["layers"]
    for name in NAMESPACES:  # every one of its own
        assert view["ns"][name] != os.readlink(f"/proc/self/ns/{name}"), name
    assert view["pid"] == 2 and view["main_native_id"] == view["native_id"] == 2
    assert set(view["kept"]) <= set(view["fds"])
    assert len(_children(pid)) == 1, "the supervisor has exactly one child, its init"


def test_init_is_cloned_into_every_namespace() -> None:
    with _sandboxed(SandboxConfig()) as (pid, view):
        _check_view(pid, view, SHARED_UID if ROOT else os.geteuid())
        # The supervisor stayed outside: the init's maps were written from there.
        supervisor_userns = os.readlink(f"/proc/{pid}/ns/user")
        assert supervisor_userns != view["ns"]["user"]
        if ROOT:
            assert supervisor_userns == os.readlink("/proc/self/ns/user")


@pytest.mark.skipif(not ROOT, reason="isolation_uid needs root; "
                    "test_isolation_uid_refused_unprivileged checks the refusal")
def test_isolation_uid_map_written_from_outside() -> None:
    with _sandboxed(SandboxConfig(isolation_uid=True)) as (pid, view):
        _check_view(pid, view, ISOLATION_UID_BASE + pid)


def _refuse(*_args: object) -> None:
    raise OSError(errno.EPERM, "simulated refusal")


def _usual_fds() -> list[int]:
    """The fds a sandboxed process has when made the usual way, from this test process
    (which other tests may have left with at-fork hooks of their own)."""
    with _sandboxed(SandboxConfig()) as (_pid, view):
        return list(view["fds"])


def test_refused_clone_makes_them_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    usual = _usual_fds()
    monkeypatch.setattr(_syscalls, "clone_process", _refuse)
    with _sandboxed(SandboxConfig()) as (pid, view):
        _check_view(pid, view, SHARED_UID if ROOT else os.geteuid())
        assert view["fds"] == usual
        # The one-by-one way: the supervisor is in the sandbox's user namespace too.
        assert os.readlink(f"/proc/{pid}/ns/user") == view["ns"]["user"]


def test_refused_map_write_kills_the_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cloned init is killed and reaped (no zombie: the supervisor's only child is
    the init made the other way), its pipe closed (no fd left), and the sandbox made."""
    usual = _usual_fds()
    monkeypatch.setattr(_namespaces, "write_child_maps", _refuse)
    with _sandboxed(SandboxConfig()) as (pid, view):
        _check_view(pid, view, SHARED_UID if ROOT else os.geteuid())
        assert view["fds"] == usual
        assert os.readlink(f"/proc/{pid}/ns/user") == view["ns"]["user"]


def test_user_namespace_failure_names_the_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_namespaces, "write_child_maps", _refuse)
    monkeypatch.setattr(_namespaces, "enter_user_namespace", _refuse)
    outcome = harness.run(lambda ctx: "entered", {}, SandboxConfig())
    assert outcome.report is not None and outcome.report["stage"] == "enter"
    assert outcome.report["error"] == "SandboxUnavailable"
    assert outcome.report["message"] == ("[NCP_ERR_NOT_SUPPORTED 801] isolated mode needs "
                                         "user_namespace: simulated refusal (EPERM)")


@pytest.mark.parametrize("clone", ["cloned", "one by one"])
def test_process_limit_edge_either_way(clone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor counts towards RLIMIT_NPROC only when it shares the sandbox's user
    namespace (one by one); either way exactly max_processes - 1 children fit beside the
    sandboxed process."""
    if clone != "cloned":
        monkeypatch.setattr(_syscalls, "clone_process", _refuse)
    # Processes allowed: one by one, the supervisor makes no cgroup, which would keep
    # the sandbox to one process (test_a_sandbox_without_cgroups_is_one_process).
    config = SandboxConfig(limits=ResourceLimits(max_processes=8, allow_subprocesses=True))
    within = harness.run(ea.fork_bomb, {"forks": 7}, config)
    assert within.ok and within.report["value"] == 7, within.describe()  # type: ignore[index]
    over = harness.run(ea.fork_bomb, {"forks": 8}, config)
    assert over.report is not None and over.report["error"] == "BlockingIOError", \
        over.describe()


def _start_processes(ctx: dict[str, Any]) -> dict[str, Any]:
    """Try every way to start a process (errno, or "started"), and a thread."""
    import subprocess
    import sys

    tried: dict[str, Any] = {}

    def attempt(name: str, start: Any) -> None:
        try:
            pid = start()
        except OSError as exc:
            tried[name] = exc.errno
            return
        if pid == 0:
            os._exit(0)  # the forked child
        if pid is not None:
            os.waitpid(pid, 0)
        tried[name] = "started"

    attempt("fork", os.fork)
    attempt("posix_spawn", lambda: os.posix_spawn(sys.executable, [sys.executable, "-c", ""],
                                                  {}))
    attempt("subprocess", lambda: subprocess.run([sys.executable, "-c", ""], check=True)
            and None)
    ran: list[int] = []
    thread = threading.Thread(target=ran.append, args=(1,))
    thread.start()
    thread.join()
    tried["thread"] = ran
    tried["single"] = sandbox.single_process()
    tried["aggregate"] = sandbox.layer_report()["aggregate_limits"].reason
    return tried


@pytest.mark.parametrize("allowed", [False, True], ids=["default", "allow_subprocesses"])
def test_a_sandbox_without_cgroups_is_one_process(allowed: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12, classes 6 and 7 where no cgroup holds the limits (here: the namespaces
    made one by one, whose supervisor makes no group; an unprivileged launcher never has
    one): the sandbox is kept to one process, so its rlimits hold for all of it. fork,
    posix_spawn and subprocess fail with EAGAIN; threads start. ``allow_subprocesses``
    lets it start processes (each with the full limits)."""
    monkeypatch.setattr(_syscalls, "clone_process", _refuse)
    config = SandboxConfig(limits=ResourceLimits(cpu_seconds=10,
                                                 allow_subprocesses=allowed))
    outcome = harness.run(_start_processes, {}, config)
    assert outcome.ok, outcome.describe()
    tried = outcome.report["value"]  # type: ignore[index]
    assert tried["thread"] == [1], tried
    if allowed:
        assert tried["fork"] == tried["posix_spawn"] == tried["subprocess"] == "started"
        assert tried["single"] is False and tried["aggregate"].startswith("per process only")
        assert "allow_subprocesses=True" in tried["aggregate"], tried
    else:
        assert tried["fork"] == tried["posix_spawn"] == tried["subprocess"] == errno.EAGAIN
        assert tried["single"] is True and "kept to one process" in tried["aggregate"]
        assert "memory_bytes, cpu_seconds" in tried["aggregate"], tried


def test_clone_process_takes_namespace_flags_only() -> None:
    with pytest.raises(OSError) as info:
        _syscalls.clone_process(_syscalls.CLONE_NEWUSER | 0x100)  # CLONE_VM
    assert info.value.errno == errno.EINVAL
