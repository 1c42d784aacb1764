"""ISOLATED children through the public API: both start modes, escapes, limits, refusal.

tests/sandbox/test_sandbox_escape.py proves each layer with a bare fork harness; this
file proves that childkit's own start paths put the child inside them. Every attempt is
also made in a NORMAL child (or without the limit), where it must succeed, so that no
test passes because the attempt itself was broken.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import escape_actions as ea
import pytest
from exit_waiter import Exits

import childkit
from child_helpers import exit_recorder
from childkit import ChildProcessArgs, ChildProcessOptions, ErrCode, IsolationMode
from childkit.common._exit_codes import PROCESS_REFUSED_EXIT_CODE
from childkit.ipc import MessageOption, MessageParcel, RemoteStub, Skeleton
from childkit.sandbox import ISOLATION_UID_BASE, SHARED_UID, ResourceLimits

ACTIONS_FILE = str(Path(ea.__file__).resolve())
ROOT = os.geteuid() == 0
ENTRY = "workers.escape_entry"
MIB = 1024 * 1024


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with ea.escape_context(tmp_path, Path.home()) as context:
        yield context


def _options(ctx: dict[str, Any], **kwargs: Any) -> ChildProcessOptions:
    return ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED,
                               readonly_paths=(ACTIONS_FILE, ctx["ro_dir"]), **kwargs)


pytestmark = pytest.mark.usefixtures("launcher_and_probe")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _start(entry: str, params: str, options: ChildProcessOptions | None,
           fds: dict[str, int] | None = None) -> tuple[int, int]:
    """Start an args-mode child with an "out" pipe (plus ``fds``); returns its pid and the
    pipe's read end (the caller's to close)."""
    r, w = os.pipe()
    try:
        pid = childkit.start_native_child_process(
            entry, ChildProcessArgs(params, {"out": w, **(fds or {})}), options)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return pid, r


def _run_with_exit(entry: str, params: str, options: ChildProcessOptions | None,
                   fds: dict[str, int] | None = None,
                   ) -> tuple[dict[str, Any] | None, childkit.ChildExitInfo]:
    """Run an args-mode child to its end: what it wrote to fd "out" (JSON, or None) and
    how it ended, as the exit callback reported it."""
    with Exits() as exits:
        pid, r = _start(entry, params, options, fds)
        try:
            data = _read_all(r)
        finally:
            os.close(r)
        info = exits.wait(pid)
    return (json.loads(data) if data else None), info


def _run(entry: str, params: str, options: ChildProcessOptions | None,
         fds: dict[str, int] | None = None) -> dict[str, Any]:
    report, info = _run_with_exit(entry, params, options, fds)
    assert report is not None and info.exit_code == 0, f"{report} {info}"
    return report


def _action(action: str, ctx: dict[str, Any]) -> str:
    return json.dumps({"actions_file": ACTIONS_FILE, "action": action, "ctx": ctx})


# "inherited_fd" names an fd number only a bare fork inherits; through the API a child
# gets fds by name only, which test_fds_reach_a_child_only_by_name checks.
CASES = [c for c in ea.CASES if c.name != "inherited_fd"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_escape_fails_isolated_and_works_normal(case: ea.Case, ctx: dict[str, Any]) -> None:
    if (reason := case.skip_reason(ROOT)) is not None:
        pytest.skip(reason)
    params = _action(case.action.__name__, ctx)
    normal = _run(f"{ENTRY}:run", params, None)
    assert normal["ok"], f"{case.name} must work in a NORMAL child: {normal}"
    # Processes allowed: where no cgroup holds the limits (nobody) the child would be kept
    # to one process, and an attempt that forks would fail there, not at its own layer.
    isolated = _run(f"{ENTRY}:run", params,
                    _options(ctx, limits=ResourceLimits(allow_subprocesses=True)))
    assert not isolated["ok"], f"{case.name} escaped an ISOLATED child: {isolated}"


def test_env_secret_reaches_normal_child_through_os_environ(ctx: dict[str, Any]) -> None:
    """The secret is set after the launcher started: a NORMAL child sees it because the
    start call's environment rides in the request, which the ISOLATED child scrubs."""
    normal = _run(f"{ENTRY}:run", _action("read_env_secret", ctx), None)
    assert normal == {"ok": True, "result": "'os.environ'"}, normal


def test_fds_reach_a_child_only_by_name(ctx: dict[str, Any]) -> None:
    """An fd on a file the sandbox cannot see: found (by scanning every fd of the child
    for its inode) when passed by name, in both modes; not found otherwise."""
    params = _action("find_secret_fd", ctx)
    for options in (None, _options(ctx)):
        given = _run(f"{ENTRY}:run", params, options, {"secret": ctx["inherited_fd"]})
        assert given["ok"], f"the scan must find a given fd ({options}): {given}"
        hidden = _run(f"{ENTRY}:run", params, options)
        assert not hidden["ok"], f"found an fd that was not given ({options}): {hidden}"
        assert "no fd on the secret file" in hidden["error"], hidden


def test_isolated_ipc_child_serves_requests_and_fds(tmp_path: Path) -> None:
    options = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
    with childkit.connect("workers.echo_worker", options=options) as child:
        with MessageParcel() as data:
            data.write_int32(41)
            with child.proxy.send_request(1, data) as reply:  # ADD_ONE
                assert reply.read_int32() == 42
        with child.proxy.send_request(2, MessageParcel()) as reply:  # PID
            assert reply.read_int32() == 2  # pid 2 of its own pid namespace
        assert child.proxy.connection.peer_pid != os.getpid()


class CallingPid(RemoteStub):
    """Answers request 1 with the calling pid."""

    def __init__(self) -> None:
        super().__init__("childkit.test.CallingPid")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        reply.write_int32(Skeleton.get_calling_pid())
        return 0


@pytest.mark.parametrize("isolated", [False, True], ids=["normal", "isolated"])
def test_a_child_s_peer_pid_is_the_pid_kill_and_exit_callbacks_know(isolated: bool) -> None:
    # An isolated child's code runs in its sandbox's pid namespace, in a process the
    # kernel stamps on its greeting; the application knows the child by the sandbox's
    # pid. The connection, the calling pid and kill_child_process all use that one.
    from workers import echo_worker as ew

    mode = IsolationMode.ISOLATED if isolated else IsolationMode.NORMAL
    started: list[Any] = []
    done = threading.Event()
    with exit_recorder() as rec:
        childkit.create_native_child_process(
            "workers.echo_worker", lambda code, proxy: (started.append((code, proxy)),
                                                        done.set()),
            ChildProcessOptions(isolation_mode=mode))
        assert done.wait(60)
        code, proxy = started[0]
        assert code == ErrCode.NCP_NO_ERROR
        pid = proxy.connection.peer_pid
        try:
            with MessageParcel() as data:
                data.write_remote_object(CallingPid())
                with proxy.send_request(ew.CALL_BACK, data) as reply:
                    assert reply.read_int32() == pid
            childkit.kill_child_process(pid)
            assert rec.wait_for(pid, 60).signal == signal.SIGKILL
        finally:
            proxy.connection.close()


def test_isolated_ipc_child_reads_an_fd_sent_over_ipc(ctx: dict[str, Any]) -> None:
    """The broker pattern: the file is outside the child's view (its directory is not
    in the sandbox), yet the fd the parent sends over IPC reads it."""
    from workers import escape_entry

    secret_path = Path(ctx["hidden_dir"]) / "secret"
    with childkit.connect(ENTRY, options=_options(ctx)) as child:
        fd = os.open(secret_path, os.O_RDONLY)
        try:
            with MessageParcel() as data:
                data.write_file_descriptor(fd)
                with child.proxy.send_request(escape_entry.READ_FD, data) as reply:
                    assert reply.read_string() == ctx["secret"]
        finally:
            os.close(fd)
    # The control: the same file by its path is out of the sandbox's reach.
    opened = _run(f"{ENTRY}:report_identity", json.dumps({"read": str(secret_path)}),
                  _options(ctx))
    assert opened.get("read_error") == "ENOENT", opened


def test_isolated_child_environment_is_scrubbed(ctx: dict[str, Any]) -> None:
    os.environ["CHILDKIT_LAUNCHER_SEES"] = "x"  # set after the launcher started
    try:
        normal = _run(f"{ENTRY}:report_identity", "", None)
        isolated = _run(f"{ENTRY}:report_identity", "", _options(ctx))
    finally:
        del os.environ["CHILDKIT_LAUNCHER_SEES"]
    # A NORMAL child has the caller's whole environment; an ISOLATED one only the locale
    # and the sandbox's own PATH, HOME and TMPDIR, and childkit's role marker for C code
    # (its own role and pid in its pid namespace: nothing of the host).
    assert "CHILDKIT_LAUNCHER_SEES" in normal["env"] and ea.ENV_SECRET_NAME in normal["env"]
    assert set(isolated["env"]) <= {"LANG", "LC_ALL", "LC_CTYPE", "TZ", "PATH", "HOME",
                                    "TMPDIR", "CHILDKIT_ROLE"}
    assert isolated["pid"] == 2 and normal["pid"] != 2


# -------------------------------------------------------------------------- limits

#: name -> (the limit, the entry, its params, how the child must end: ("exit", code) or
#: ("signal", number), words of the exit callback's reason).
LIMITS: dict[str, tuple[dict[str, int], str, str, tuple[str, int], str]] = {
    "memory": ({"memory_bytes": 1024 * MIB}, "exceed",
               json.dumps({"what": "memory", "amount": 1536 * MIB}),
               ("exit", 86), "memory limit (1073741824 bytes) exceeded"),
    "cpu_time": ({"cpu_seconds": 1}, "burn_cpu", "1.5",
                 ("signal", signal.SIGXCPU), "cpu time limit (1 s) exceeded"),
    # Processes allowed (else, without cgroups, the first fork is refused: one process).
    "processes": ({"max_processes": 8, "allow_subprocesses": True}, "exceed",
                  json.dumps({"what": "processes", "amount": 24}),
                  ("exit", 87), "process limit (8 processes and threads) reached"),
    "threads": ({"max_processes": 8}, "exceed",
                json.dumps({"what": "threads", "amount": 24}),
                ("exit", 87), "process limit (8 processes and threads) reached"),
    "open_files": ({"max_open_files": 64}, "exceed",
                   json.dumps({"what": "open_files", "amount": 100}),
                   ("exit", 88), "open files limit (64) reached"),
    "file_size": ({"max_file_size": MIB}, "exceed",
                  json.dumps({"what": "file_size", "amount": 2 * MIB}),
                  ("signal", signal.SIGXFSZ), "file size limit (1048576 bytes) exceeded"),
}


@pytest.mark.parametrize("name", list(LIMITS))
def test_limit_ends_the_child_and_the_exit_callback_says_why(
        name: str, ctx: dict[str, Any]) -> None:
    limit, entry, params, (how, value), reason = LIMITS[name]
    # Without that limit (the others at their defaults) the same work succeeds.
    unlimited = ResourceLimits(**{key: None if isinstance(v, int) and not isinstance(v, bool)
                                  else v for key, v in limit.items()})
    _, info = _run_with_exit(f"{ENTRY}:{entry}", params, _options(ctx, limits=unlimited))
    assert info.exit_code == 0 and info.reason is None, f"without the limit: {info}"
    _, info = _run_with_exit(f"{ENTRY}:{entry}", params,
                             _options(ctx, limits=ResourceLimits(**limit)))
    if how == "exit":
        assert info.exit_code == value and info.signal is None, info
    else:
        assert info.signal == value and info.exit_code is None, info
    assert info.reason == reason, info


def _aggregate_in_force(limit: str) -> bool:
    """Whether an ISOLATED child's ``limit`` holds for all its processes together here
    (cgroups, which the launcher gets as root), as its own layer report says."""
    from childkit.sandbox import _cgroups

    return ROOT and limit in _cgroups.plan(ResourceLimits(cpu_seconds=1))


#: name -> (limits, params of workers.escape_entry:spread: four processes, each within
#: the limit, together past it; how the child ends: exit code or signal; its reason).
SPREAD: dict[str, tuple[dict[str, int], dict[str, int], tuple[str, int], str]] = {
    "cpu_seconds": ({"cpu_seconds": 1}, {"procs": 4, "cpu_s": 0.6},
                    ("signal", signal.SIGXCPU), "cpu time limit (1 s) exceeded"),
    "memory_bytes": ({"memory_bytes": 384 * MIB}, {"procs": 4, "bytes": 128 * MIB},
                     ("exit", 86), f"memory limit ({384 * MIB} bytes) exceeded"),
}


@pytest.mark.parametrize("limit", list(SPREAD))
def test_limit_holds_for_all_processes_together(limit: str, ctx: dict[str, Any]) -> None:
    """Issue 12, classes 6 and 7: four processes, each within ``cpu_seconds`` or
    ``memory_bytes``, together past it. A NORMAL child does the work (the attempt is
    real). Where cgroups hold the limit (root): done without the limit, ended with the
    limit's reason with it. Where none does (nobody): the escape is real when processes
    are allowed (``allow_subprocesses=True``: the limits then multiply), and by default
    the child is kept to one process: its first fork fails with EAGAIN, uncaught, and
    the exit callback says why."""
    limits, params, (how, value), reason = SPREAD[limit]
    entry = f"{ENTRY}:spread"
    _, info = _run_with_exit(entry, json.dumps(params), None)
    assert info.exit_code == 0, f"NORMAL: {info}"
    if not _aggregate_in_force(limit):
        allowed = ResourceLimits(**limits, allow_subprocesses=True)
        _, info = _run_with_exit(entry, json.dumps(params), _options(ctx, limits=allowed))
        assert info.exit_code == 0 and info.reason is None, f"processes allowed: {info}"
        _, info = _run_with_exit(entry, json.dumps(params),
                                 _options(ctx, limits=ResourceLimits(**limits)))
        assert info.exit_code == PROCESS_REFUSED_EXIT_CODE and info.signal is None, info
        assert info.reason is not None and info.reason.startswith(
            "process creation refused: no cgroup holds"), info
        assert "allow_subprocesses=True" in info.reason, info
        report = _run(f"{ENTRY}:report_identity", "", _options(ctx, limits=ResourceLimits(
            **limits)))
        assert report["layers"]["aggregate_limits"][0], report["layers"]
        assert "kept to one process" in report["layers"]["aggregate_limits"][1], report
        return
    unlimited = ResourceLimits(**{key: None for key in limits})
    _, info = _run_with_exit(entry, json.dumps(params), _options(ctx, limits=unlimited))
    assert info.exit_code == 0 and info.reason is None, f"without the limit: {info}"
    _, info = _run_with_exit(entry, json.dumps(params),
                             _options(ctx, limits=ResourceLimits(**limits)))
    if how == "exit":
        assert info.exit_code == value and info.signal is None, info
    else:
        assert info.signal == value and info.exit_code is None, info
    assert info.reason == reason, info


def test_a_killed_isolated_child_leaves_no_cgroup(ctx: dict[str, Any]) -> None:
    """SIGKILL to an isolated child's pid (its supervisor, which cannot clean up): the
    launcher removes the sandbox's cgroup when it reaps it, before the exit callback."""
    from childkit.sandbox import _cgroups

    hold_r, hold_w = os.pipe()
    try:
        with Exits() as exits:
            pid, r = _start(f"{ENTRY}:report_identity", "", _options(ctx),
                            {"hold": hold_r})
            try:
                assert json.loads(os.read(r, 65536))["pid"] == 2
                mine = [p for p in _cgroups.leftovers() if p.endswith(f"-{pid}")]
                assert bool(mine) == _aggregate_in_force("memory_bytes"), mine
                os.kill(pid, signal.SIGKILL)
                info = exits.wait(pid)
            finally:
                os.close(r)
    finally:
        os.close(hold_r)
        os.close(hold_w)
    assert info.signal == signal.SIGKILL, info
    assert not [p for p in _cgroups.leftovers() if p.endswith(f"-{pid}")]


def test_a_limit_exit_code_means_nothing_without_that_limit(ctx: dict[str, Any]) -> None:
    """The reason comes from a limit that was set, not from an exit code alone."""
    options = _options(ctx, limits=ResourceLimits(max_processes=None))
    _, info = _run_with_exit("workers.args_entries:exit_with", "87", options)
    assert info.exit_code == 87 and info.reason is None, info
    _, info = _run_with_exit("workers.args_entries:exit_with", "87", None)
    assert info.exit_code == 87 and info.reason is None, info


def test_an_unrelated_error_is_no_limit(ctx: dict[str, Any]) -> None:
    """An uncaught error with every limit set but not caused by one: plain exit code 1."""
    params = json.dumps({"what": "nothing", "amount": 0})
    _, info = _run_with_exit(f"{ENTRY}:exceed", params, _options(ctx))
    assert info.exit_code == 1 and info.reason is None, info


# ------------------------------------------------------------------ identity, kernel

def test_isolation_uid_gives_each_child_a_uid_of_its_own(ctx: dict[str, Any]) -> None:
    if not ROOT:
        pytest.skip("isolation_uid needs root (CAP_SETUID and CAP_SYS_ADMIN in the initial "
                    "user namespace); test_isolation_uid_refused_without_root runs instead")
    # A file only the plain ISOLATED uid (nobody) may read: if isolation_uid changed
    # nothing, its children would read it too.
    private = Path(ctx["ro_dir"]) / "nobody-only"
    private.write_text("for nobody")
    os.chown(private, SHARED_UID, SHARED_UID)
    private.chmod(0o600)
    params = json.dumps({"read": str(private)})
    plain = _run(f"{ENTRY}:report_identity", params, _options(ctx))
    assert plain["uid"] == SHARED_UID and plain.get("read") == "for nobody", plain
    # Two at once (each waits for EOF on "hold"), so their pids, and uids, cannot repeat.
    hold_r, hold_w = os.pipe()
    started: list[tuple[int, int]] = []
    try:
        with Exits() as exits:
            try:
                for _ in range(2):
                    started.append(_start(f"{ENTRY}:report_identity", params,
                                          _options(ctx, isolation_uid=True),
                                          {"hold": hold_r}))
            finally:
                os.close(hold_w)
                hold_w = -1
            reports = [json.loads(_read_all(r)) for _, r in started]
            infos = [exits.wait(pid) for pid, _ in started]
    finally:
        for _, r in started:
            os.close(r)
        os.close(hold_r)
        if hold_w >= 0:
            os.close(hold_w)
    assert all(info.exit_code == 0 for info in infos), infos
    uids = [report["uid"] for report in reports]
    assert len(set(uids)) == 2, uids
    for report in reports:
        assert report["uid"] >= ISOLATION_UID_BASE, report
        assert report["uid"] not in (os.getuid(), plain["uid"]), report
        assert report["gid"] == report["uid"], report
        assert report.get("read_error") == "EACCES", report


def test_isolation_uid_refused_without_root() -> None:
    if ROOT:
        pytest.skip("runs for an unprivileged parent only (root can give a uid of its "
                    "own: test_isolation_uid_gives_each_child_a_uid_of_its_own)")
    options = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED, isolation_uid=True)
    with pytest.raises(childkit.ChildkitError) as err:
        childkit.start_native_child_process(f"{ENTRY}:report_identity",
                                            ChildProcessArgs(), options)
    assert err.value.code == ErrCode.NCP_ERR_NOT_SUPPORTED
    assert "isolation_uid" in err.value.message


def _own_status() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def test_proc_status_shows_the_sandbox(ctx: dict[str, Any]) -> None:
    isolated = _run(f"{ENTRY}:proc_status", "", _options(ctx))
    assert isolated == {"NoNewPrivs": "1", "CapEff": "0" * 16, "CapPrm": "0" * 16,
                        "CapBnd": "0" * 16, "Seccomp": "2"}, isolated
    normal = _run(f"{ENTRY}:proc_status", "", None)
    own = _own_status()
    assert normal == {name: own[name] for name in normal}, (normal, own)
    assert normal != isolated  # a NORMAL child has the parent's, so the check can fail


@pytest.fixture(scope="module")
def kernel_calls() -> dict[str, dict[str, str]]:
    options = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
    return {"normal": _run(f"{ENTRY}:kernel_calls", "", None),
            "isolated": _run(f"{ENTRY}:kernel_calls", "", options)}


@pytest.mark.parametrize("call", ["keyctl", "bpf", "kexec_load"])
def test_kernel_calls_refused_with_eperm(call: str, kernel_calls: dict[str, dict[str, str]],
                                         ) -> None:
    assert kernel_calls["isolated"][call] == "EPERM", kernel_calls
    if kernel_calls["normal"][call] == "EPERM":
        pytest.skip(f"{call} is refused to this user outside any sandbox too (it lacks "
                    f"the privilege, e.g. CAP_SYS_BOOT for kexec_load): seccomp's EPERM "
                    f"cannot be told apart here")
    assert kernel_calls["normal"][call] != errno.errorcode[errno.EPERM]


def test_limits_and_readonly_paths_need_isolated_mode() -> None:
    with pytest.raises(childkit.ChildkitError) as err:
        ChildProcessOptions(limits=ResourceLimits())
    assert err.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    with pytest.raises(childkit.ChildkitError) as err:
        ChildProcessOptions(readonly_paths=("/tmp",))
    assert err.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_missing_layer_refuses_unless_reduced_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from childkit.process import _options
    from childkit.sandbox import LayerStatus

    real = _options._sandbox_layers()
    fake = dict(real)
    fake["seccomp"] = LayerStatus(False, "pretend libseccomp is missing")
    monkeypatch.setattr(_options, "_sandbox_layers", lambda: fake)
    isolated = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
    with pytest.raises(childkit.ChildkitError) as err:
        childkit.start_native_child_process("workers.args_entries:exit_with",
                                            ChildProcessArgs("0"), isolated)
    assert err.value.code == ErrCode.NCP_ERR_NOT_SUPPORTED
    assert "seccomp" in err.value.message and "pretend" in err.value.message
    # Nothing was started: the refusal comes before any fork.
    reduced = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED,
                                  allow_reduced_sandbox=True)
    reduced.check_supported()  # accepted: the caller asked for a reduced sandbox


def test_memory_exit_code_is_the_sandbox_s() -> None:
    """The runner and a bare ``enter()``'s excepthook end a child the same way."""
    from childkit import sandbox
    from childkit.process import _exit

    assert _exit.MEMORY_LIMIT_EXIT_CODE == sandbox.MEMORY_LIMIT_EXIT_CODE
