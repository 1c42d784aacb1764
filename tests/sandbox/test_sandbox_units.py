"""The sandbox's interface: config checks, probe, reduced mode, the supervisor's exit
mirroring and signal forwarding, fd passing into the sandbox, and what is inside."""

from __future__ import annotations

import array
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import sandbox_harness as harness

import childkit.sandbox as sandbox
from childkit import ChildkitError, ErrCode
from childkit.sandbox import (
    LAYERS,
    ResourceLimits,
    SandboxConfig,
    SandboxUnavailable,
    _cgroups,
    _filesystem,
    _namespaces,
    _seccomp,
    exit_reason,
    probe,
)

MIB = 1024 * 1024


@pytest.mark.parametrize("kwargs", [
    {"memory_bytes": 64 * MIB - 1}, {"memory_bytes": "1"}, {"cpu_seconds": 0},
    {"max_processes": 0}, {"max_open_files": 15}, {"max_file_size": -1},
    {"max_processes": True}, {"cpu_seconds": 2**62 + 1},
])
def test_limits_rejected_past_edge(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ChildkitError) as info:
        ResourceLimits(**kwargs)
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    assert next(iter(kwargs)) in info.value.message


def test_limits_accepted_at_edge() -> None:
    ResourceLimits(memory_bytes=64 * MIB, cpu_seconds=1, max_processes=1,
                   max_open_files=16, max_file_size=0)
    ResourceLimits(memory_bytes=None, cpu_seconds=None, max_processes=None,
                   max_open_files=None, max_file_size=None)
    SandboxConfig(tmp_size_bytes=MIB)


@pytest.mark.parametrize("kwargs", [
    {"readonly_paths": ("relative/path",)}, {"readonly_paths": "/usr"},
    {"keep_env": ("A=B",)}, {"keep_env": ("",)}, {"tmp_size_bytes": MIB - 1},
    {"limits": {"memory_bytes": 1}},
])
def test_config_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ChildkitError) as info:
        SandboxConfig(**kwargs)
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


@pytest.mark.parametrize("path", ["/", "/proc", "/dev/shm", "/sys/kernel", "/no/such/dir"])
def test_enter_rejects_bad_readonly_path(path: str) -> None:
    outcome = harness.run(lambda ctx: "entered", {}, SandboxConfig(readonly_paths=(path,)))
    assert outcome.report is not None and outcome.report["stage"] == "enter"
    assert "401" in outcome.report["message"] and "readonly path" in outcome.report["message"]


def _enter_with_fds(ctx: dict[str, Any]) -> None:
    sandbox.enter(SandboxConfig(), ctx["fds"])


def test_enter_rejects_bad_keep_fds() -> None:
    never_open = 999_999  # above any RLIMIT_NOFILE here
    for bad in ([never_open], [-1], [None, 1], ["3"], [True]):
        outcome = harness.run(_enter_with_fds, {"fds": bad}, None)
        assert outcome.report is not None and outcome.report["error"] == "ChildkitError"
        assert "401" in outcome.report["message"] and "keep_fds" in outcome.report["message"]


def _enter_with_a_thread(ctx: dict[str, Any]) -> str:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        sandbox.enter(SandboxConfig(), keep_fds=[])
        return "entered"
    finally:
        stop.set()
        thread.join()


def test_enter_refuses_threaded_caller() -> None:
    """Checked before anything changes: the other threads would stay outside."""
    outcome = harness.run(_enter_with_a_thread, {}, None)
    assert outcome.report is not None and outcome.report["error"] == "ChildkitError"
    assert "401" in outcome.report["message"]
    assert "single-threaded" in outcome.report["message"]


def test_probe_reports_every_layer() -> None:
    layers = probe()
    assert set(layers) == set(LAYERS)
    # Issue 12's layers, each found by trying: the clean template's interpreter started
    # with an empty environment, socket() refused under the filter.
    assert layers["clean_template"].supported, layers["clean_template"]
    assert layers["socket_filter"].supported, layers["socket_filter"]
    # This machine (kernel 6.18) supports every layer; a uid of its own needs root, and
    # so do the cgroups that hold the limits for all of a child's processes together:
    # without them the child is kept to one process.
    aggregate = layers["aggregate_limits"]
    if os.geteuid() != 0:
        assert not layers.pop("isolation_uid").supported
        assert aggregate.supported and "kept to one process" in aggregate.reason, aggregate
    else:
        assert "for all its processes together" in aggregate.reason, aggregate
    assert all(s.supported for s in layers.values()), layers


def test_cli_check_lists_layers() -> None:
    out = subprocess.run([sys.executable, "-m", "childkit.sandbox"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for layer in LAYERS:
        assert layer in out
    assert "supported" in out


def _missing_seccomp() -> Any:
    raise OSError(38, "libseccomp.so.2 not found (simulated)")


def _report_layers(ctx: dict[str, Any]) -> dict[str, str]:
    return sandbox.skipped_layers()


def test_missing_layer_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_seccomp, "compile_filter", _missing_seccomp)
    outcome = harness.run(_report_layers, {}, SandboxConfig())
    assert outcome.report is not None and outcome.report["stage"] == "enter"
    assert outcome.report["error"] == "SandboxUnavailable"
    assert outcome.report["message"].startswith(
        "[NCP_ERR_NOT_SUPPORTED 801] isolated mode needs seccomp: ")


def test_reduced_sandbox_reports_skipped_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_seccomp, "compile_filter", _missing_seccomp)
    outcome = harness.run(_report_layers, {}, SandboxConfig(allow_reduced=True))
    assert outcome.ok, outcome.describe()
    # The socket filter is part of the seccomp policy: it goes with it.
    assert list(outcome.report["value"]) == ["seccomp", "socket_filter"]  # type: ignore[index]
    assert "simulated" in outcome.report["value"]["seccomp"]  # type: ignore[index]
    assert outcome.report["value"]["socket_filter"] == "needs seccomp"  # type: ignore[index]


def test_sandbox_unavailable_is_a_childkit_error() -> None:
    exc = SandboxUnavailable("landlock", "kernel too old")
    assert isinstance(exc, ChildkitError) and exc.code == ErrCode.NCP_ERR_NOT_SUPPORTED
    assert exc.layer == "landlock" and "isolated mode needs landlock: kernel too old" in str(exc)


def test_exit_reason() -> None:
    limits = ResourceLimits(cpu_seconds=3)
    assert exit_reason(signal.SIGXCPU, limits) == "cpu time limit (3 s) exceeded"
    assert "file size" in (exit_reason(signal.SIGXFSZ, limits) or "")
    assert exit_reason(sandbox.MEMORY_LIMIT_EXIT_CODE << 8, limits) is not None
    assert exit_reason(signal.SIGTERM, limits) is None
    assert exit_reason(0, limits) is None and exit_reason(1 << 8, limits) is None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "closed"  # listdir's own fd


def _inside_view(ctx: dict[str, Any]) -> dict[str, Any]:
    with open("/tmp/inside", "w") as f:
        f.write("x")
    return {"pid": os.getpid(), "ppid": os.getppid(), "procs": sorted(
        int(p) for p in os.listdir("/proc") if p.isdigit()),
        "root": sorted(os.listdir("/")), "dev": sorted(os.listdir("/dev")),
        "fds": {fd: _readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")},
        "stdio": [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)],
        "env": dict(os.environ), "hostname": socket.gethostname(),
        "report": {k: v.supported for k, v in sandbox.layer_report().items()},
        "interfaces": _interfaces()}


def _interfaces() -> list[str]:
    # /proc/net/dev: this network namespace's interfaces (if_nameindex needs a socket,
    # which seccomp refuses).
    with open("/proc/net/dev") as f:
        return sorted(line.split(":")[0].strip() for line in f.readlines()[2:])


def _open_files() -> set[str]:
    return {_readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")} - {
        "/dev/null", "closed"}


def test_inside_view(tmp_path: Path) -> None:
    parent_files = _open_files()
    outcome = harness.run(_inside_view, {}, SandboxConfig(readonly_paths=(str(tmp_path),),
                                                          keep_env=("LANG",)))
    assert outcome.ok, outcome.describe()
    view = outcome.report["value"]  # type: ignore[index]
    assert view["pid"] == 2 and view["ppid"] == 1 and view["procs"] == [1, 2]
    # The root holds /dev, /proc, /tmp and the top directories of what the plan binds or
    # links (where the checkout and the venv live differs between machines), nothing else.
    root_plan = _filesystem.plan([str(tmp_path)])
    planned = {path.split("/")[1] for path in root_plan.binds}
    planned |= {link.split("/")[1] for link, _ in root_plan.symlinks}
    assert set(view["root"]) <= {"dev", "proc", "tmp"} | planned, (view["root"], planned)
    assert "etc" not in view["root"] and "sys" not in view["root"]
    assert view["dev"] == sorted(["fd", "full", "null", "random", "stderr", "stdin",
                                  "stdout", "urandom", "zero"])
    # None of the files the parent had open before is there: only the report pipe (made
    # for this run, kept) and stdio on /dev/null. (Other new fds may exist: C libraries'
    # fork handlers, e.g. libuv's signal pipe, make them in every forked process.)
    assert view["stdio"] == ["/dev/null"] * 3
    assert set(view["fds"].values()) & parent_files == set(), str(view["fds"])
    assert any(target.startswith("pipe:") for target in view["fds"].values())
    assert set(view["env"]) <= {"LANG", "HOME", "TMPDIR", "PATH"}
    assert view["hostname"] == "isolated" and view["interfaces"] == ["lo"]
    # isolation_uid is reported only when asked for.
    assert all(applied for name, applied in view["report"].items()
               if name != "aggregate_limits" or os.geteuid() == 0), view["report"]
    # The clean template is the launcher's (where the process that calls enter() comes
    # from): the probe finds it, enter() does not make it.
    assert set(view["report"]) == set(LAYERS) - {"isolation_uid", "clean_template"}
    assert not Path("/tmp/inside").exists()  # its /tmp was its own


def _exec_interpreter(ctx: dict[str, Any]) -> str:
    done = subprocess.run([sys.executable, "-c", "import childkit.sandbox; print('ran')"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() + done.stderr


def test_interpreter_can_be_exec_inside() -> None:
    # Processes allowed (where no cgroup holds the limits the sandbox is one process).
    config = SandboxConfig(limits=ResourceLimits(allow_subprocesses=True))
    outcome = harness.run(_exec_interpreter, {}, config)
    assert outcome.ok and outcome.report["value"] == "ran", outcome.describe()  # type: ignore[index]


def _receive_fd(ctx: dict[str, Any]) -> str:
    sock = socket.socket(fileno=ctx["sock"])
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(16, socket.CMSG_LEN(fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    with os.fdopen(fds[0]) as f:
        return msg.decode() + f.read()


def test_fd_passed_over_kept_socket_works(tmp_path: Path) -> None:
    """The broker pattern: the sandbox cannot open the file, but may use an fd sent to it."""
    secret = tmp_path / "data"
    secret.write_text("payload")
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        parent_end.close()
        os.close(read_fd)
        try:
            sandbox.enter(SandboxConfig(), keep_fds=[child_end.fileno(), write_fd])
            result = _receive_fd({"sock": child_end.fileno()})
            if os.path.exists(secret):
                result = "path visible"
        except BaseException as exc:
            result = repr(exc)
        os.write(write_fd, result.encode())
        os._exit(0)
    child_end.close()
    os.close(write_fd)
    try:
        with open(secret) as f:
            socket.send_fds(parent_end, [b"got:"], [f.fileno()])
        assert os.read(read_fd, 1000) == b"got:payload"
    finally:
        parent_end.close()
        os.close(read_fd)
        os.waitpid(pid, 0)


def _wait_for_signal(ctx: dict[str, Any]) -> None:
    os.write(ctx["ready_w"], b"r")
    signal.pause()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1])
def test_supervisor_forwards_and_mirrors_signals(sig: signal.Signals) -> None:
    """SIGTERM to the child's pid (the supervisor) ends the sandboxed process, and the
    parent sees it end by that very signal."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(ready_r)
        signal.signal(sig, signal.SIG_DFL)
        sandbox.enter(SandboxConfig(), keep_fds=[ready_w])
        _wait_for_signal({"ready_w": ready_w})
        os._exit(3)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"r"
        os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(ready_r)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig


@pytest.mark.parametrize("code", [0, 1, 86, 255])
def test_supervisor_mirrors_exit_code(code: int) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        sandbox.enter(SandboxConfig(), keep_fds=[])
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == code


def test_sandboxed_process_dies_with_supervisor() -> None:
    """SIGKILL to the supervisor cannot be forwarded; PDEATHSIG ends the sandbox anyway:
    the write end of a pipe only the sandboxed process holds gets closed. The supervisor
    could not remove the sandbox's cgroup (root): ``release`` after the reap does."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(ready_r)
        os.close(hold_r)
        sandbox.enter(SandboxConfig(), keep_fds=[ready_w, hold_w])
        _wait_for_signal({"ready_w": ready_w})
        os._exit(3)
    os.close(ready_w)
    os.close(hold_w)
    try:
        assert os.read(ready_r, 1) == b"r"
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        left = [path for path in _cgroups.leftovers() if path.endswith(f"-{pid}")]
        assert bool(left) == _cgroups_in_use(), left
        sandbox.release(pid)
        assert os.read(hold_r, 1) == b""  # EOF: every holder is gone
        assert not [path for path in _cgroups.leftovers() if path.endswith(f"-{pid}")]
    finally:
        os.close(ready_r)
        os.close(hold_r)


def _cgroups_in_use() -> bool:
    """Whether a sandbox with the default limits gets a cgroup here (root, controllers)."""
    return _namespaces.is_privileged() and bool(_cgroups.plan(ResourceLimits()))


def test_missing_libseccomp_is_an_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pyseccomp/libseccomp.so.2 the seccomp layer reports ENOSYS (never a crash):
    enter() turns that into SandboxUnavailable('seccomp'), probe() into 'MISSING'."""
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import now raises ImportError
    with pytest.raises(OSError) as info:
        _seccomp.load_library()
    assert info.value.errno == 38 and "libseccomp" in str(info.value)


def _no_mount_setattr(*args: Any) -> None:
    raise OSError(38, "simulated kernel before 5.12")


def _write_into(ctx: dict[str, Any]) -> str:
    Path(ctx["dir"], "new").write_text("x")
    return "written"


def test_readonly_without_mount_setattr(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels before 5.12 lack mount_setattr: the remount fallback still makes binds
    read-only."""
    from childkit.sandbox import _syscalls

    monkeypatch.setattr(_syscalls, "mount_setattr", _no_mount_setattr)
    target = tmp_path / "ro"
    target.mkdir()
    ctx = {"dir": str(target)}
    assert harness.run(_write_into, ctx, None).ok
    target.joinpath("new").unlink()
    outcome = harness.run(_write_into, ctx, SandboxConfig(readonly_paths=(str(target),)))
    assert outcome.errno == 30, outcome.describe()  # EROFS


def _set_secrets(ctx: dict[str, Any]) -> None:
    import ctypes

    os.environ["CHILDKIT_SECRET"] = "hunter2"
    os.environ["LANG"] = "C.UTF-8"
    # Set in the C environment only (as a C library would): os.environ never sees it.
    ctypes.CDLL(None).setenv(b"CHILDKIT_C_ONLY", b"c-secret", 1)


def _environment_view(ctx: dict[str, Any]) -> dict[str, Any]:
    import ctypes

    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    with open("/proc/self/environ", "rb") as f:
        initial = f.read()
    return {"env": dict(os.environ),
            "c": {name: (getenv(name.encode()) or b"").decode()
                  for name in ("CHILDKIT_SECRET", "CHILDKIT_C_ONLY", "LANG", "HOME", "PATH")},
            "initial_block_zeroed": initial.strip(b"\0") == b""}


def test_environment_scrub_clears_python_and_c_environment() -> None:
    """The scrub empties os.environ and the C environment at once (clearenv): a variable
    only C code set is gone too; kept and fixed ones are set in both."""
    normal = harness.run(_environment_view, {}, None, prepare=_set_secrets)
    assert normal.ok, normal.describe()
    seen = normal.report["value"]  # type: ignore[index]
    assert seen["c"]["CHILDKIT_C_ONLY"] == "c-secret" and seen["c"]["CHILDKIT_SECRET"]
    outcome = harness.run(_environment_view, {}, SandboxConfig(keep_env=("LANG",)),
                          prepare=_set_secrets)
    assert outcome.ok, outcome.describe()
    view = outcome.report["value"]  # type: ignore[index]
    assert view["env"] == {"LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
                           "PATH": "/usr/bin:/bin"}
    assert view["c"] == {"CHILDKIT_SECRET": "", "CHILDKIT_C_ONLY": "", "LANG": "C.UTF-8",
                         "HOME": "/tmp", "PATH": "/usr/bin:/bin"}
    assert view["initial_block_zeroed"]


def _collector_state(ctx: dict[str, Any]) -> dict[str, Any]:
    import gc

    return {"enabled": gc.isenabled(), "collected": gc.collect() >= 0}


def _collector_off(ctx: dict[str, Any]) -> None:
    import gc

    gc.disable()


@pytest.mark.parametrize("enabled", [True, False])
def test_sandboxed_process_gets_its_collector_back(enabled: bool) -> None:
    """enter() runs without garbage collection (a collection copies pages) but hands the
    sandboxed process the collector as the caller had it."""
    outcome = harness.run(_collector_state, {}, SandboxConfig(),
                          prepare=None if enabled else _collector_off)
    assert outcome.ok, outcome.describe()
    assert outcome.report["value"] == {"enabled": enabled,  # type: ignore[index]
                                       "collected": True}


def _failed_enter_collector(ctx: dict[str, Any]) -> dict[str, Any]:
    import gc

    r, w = os.pipe()
    os.close(w)  # a closed fd in keep_fds: enter refuses before anything forks
    try:
        sandbox.enter(SandboxConfig(), keep_fds=[w])
    except ChildkitError as exc:
        return {"code": int(exc.code), "enabled": gc.isenabled()}
    finally:
        os.close(r)
    return {"code": None, "enabled": gc.isenabled()}


def test_failed_enter_restores_the_collector() -> None:
    outcome = harness.run(_failed_enter_collector, {}, None)
    assert outcome.ok, outcome.describe()
    assert outcome.report["value"] == {  # type: ignore[index]
        "code": int(ErrCode.NCP_ERR_INVALID_PARAM), "enabled": True}


def _drop_without_setpcap(ctx: dict[str, Any]) -> dict[str, Any]:
    from childkit.sandbox import _capabilities, _syscalls

    if os.geteuid() == 0:
        os.setresuid(65534, 65534, 65534)  # loses CAP_SETPCAP, keeps the bounding set
    bounded = _syscalls.prctl(_syscalls.PR_CAPBSET_READ, 0) == 1
    try:
        _capabilities.drop_all()
    except OSError as exc:
        return {"bounded": bounded, "errno": exc.errno, "message": str(exc)}
    return {"bounded": bounded, "errno": None, "message": ""}


def test_capability_drop_refused_names_the_capability() -> None:
    """Without CAP_SETPCAP the bounding set cannot be emptied: drop_all says so, naming
    the first capability it could not drop (unless the set was already empty)."""
    outcome = harness.run(_drop_without_setpcap, {}, None)
    assert outcome.ok, outcome.describe()
    result = outcome.report["value"]  # type: ignore[index]
    if result["bounded"]:
        assert result["errno"] == errno.EPERM, result
        assert "PR_CAPBSET_DROP, 0" in result["message"], result
    else:  # a bounding set already empty: nothing to refuse
        assert result["errno"] is None, result
