"""The two start modes end to end: args mode (Python and the seed's native Main) and IPC
mode (create_native_child_process and connect)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import childkit
from child_helpers import (
    exit_recorder,
    no_child_leaks,
    read_all,
    wait_until,
)
from childkit import (
    ChildkitError,
    ChildProcessArgs,
    ChildProcessOptions,
    ErrCode,
)
from childkit.ipc import DeadRemoteObjectError, MessageParcel, RemoteProxy
from workers import echo_worker as ew

NATIVE = Path(__file__).parent.parent / "native"



@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield


def start_described(params: str = "p", extra: dict[str, int] | None = None,
                    options: ChildProcessOptions | None = None) -> dict[str, object]:
    """Start workers.args_entries:describe and return what it reports."""
    r, w = os.pipe()
    try:
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process(
                "workers.args_entries:describe",
                ChildProcessArgs(params, {"out": w, **(extra or {})}), options)
            os.close(w)
            w = -1
            report = json.loads(read_all(r))
            assert rec.wait_for(pid).exit_code == 0
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert report["pid"] == pid
    return report  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- args mode


def test_args_child_gets_params_and_named_fds_only() -> None:
    other_r, other_w = os.pipe()  # open in the parent but not passed: must not leak in
    extra_r, extra_w = os.pipe()
    try:
        report = start_described("héllo", {"zeta": extra_w, "alpha": extra_r})
    finally:
        for fd in (other_r, other_w, extra_r, extra_w):
            os.close(fd)
    assert report["params"] == "héllo"
    fds = report["fds"]
    assert set(fds) == {"out", "alpha", "zeta"}
    # New numbers, in name order, referring to the same files as the parent's.
    assert fds["alpha"] < fds["out"] < fds["zeta"]
    assert report["open_fds"] == sorted([0, 1, 2, *fds.values()])
    targets = report["fd_targets"]
    assert targets["alpha"] == targets["zeta"]  # both ends of one pipe
    # get_current_child_process_args() from another thread sees the same args.
    assert report["current_args"] == ["héllo", fds]
    assert report["nested_start"] == ErrCode.NCP_ERR_ALREADY_IN_CHILD


def test_args_child_exit_codes_and_signals_reach_the_callback() -> None:
    with exit_recorder() as rec:
        a = childkit.start_native_child_process("workers.args_entries:exit_with",
                                                ChildProcessArgs("42"))
        b = childkit.start_native_child_process("workers.args_entries:raise_error")
        c = childkit.start_native_child_process("workers.args_entries:kill_self",
                                                ChildProcessArgs(str(9)))
        d = childkit.start_native_child_process("workers.args_entries:exit_with",
                                                ChildProcessArgs("0"))
        assert rec.wait_for(a) == childkit.ChildExitInfo(a, 42, None)
        assert rec.wait_for(b) == childkit.ChildExitInfo(b, 1, None)
        assert rec.wait_for(c) == childkit.ChildExitInfo(c, None, 9)
        assert rec.wait_for(d) == childkit.ChildExitInfo(d, 0, None)
        # Delivered on the exit thread, never on the caller's.
        assert {name for _p, _i, name in rec.calls} == {"childkit-exit"}
    assert "killed by SIGKILL" in repr(childkit.ChildExitInfo(c, None, 9))
    assert "exit_code=42" in repr(childkit.ChildExitInfo(a, 42, None))


@pytest.mark.parametrize(("entry", "needle"), [
    ("workers.args_entries:no_such_function", "has no function 'no_such_function'"),
    ("workers.no_such_module:main", "cannot import module 'workers.no_such_module'"),
    ("libchildkit_no_such_lib.so:Main", "cannot load library 'libchildkit_no_such_lib.so'"),
])
def test_unknown_module_library_or_function_fails_synchronously(entry: str, needle: str) -> None:
    with exit_recorder() as rec:
        with pytest.raises(ChildkitError) as info:
            childkit.start_native_child_process(entry)
        assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
        assert needle in info.value.message
        assert rec.calls == []  # a child that never started is never announced


@pytest.mark.parametrize("entry", ["", "no_colon", "mod:", ":func", "a b:c", "lib.so:1x", 5])
def test_malformed_entry_is_invalid_param(entry: object) -> None:
    with pytest.raises(ChildkitError) as info:
        childkit.start_native_child_process(entry)  # type: ignore[arg-type]
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_process_name_is_visible_in_ps() -> None:
    name = "childkit_test_worker_" + "x" * 43  # 64 characters: the longest allowed
    report = start_described(options=ChildProcessOptions(process_name=name))
    assert report["cmdline"] == name
    assert report["comm"] == name[:15]
    ps = shutil.which("ps")
    if ps is not None:  # the same name through ps itself, for a live child
        r, w = os.pipe()
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process(
                "workers.args_entries:block", ChildProcessArgs("", {"hold": r}),
                ChildProcessOptions(process_name="ck_ps_probe"))
            os.close(r)
            out = subprocess.run([ps, "-o", "args=", "-p", str(pid)], capture_output=True,
                                 text=True, check=True).stdout
            os.close(w)
            rec.wait_for(pid)
        assert out.strip() == "ck_ps_probe"


def test_default_process_name_names_the_entry() -> None:
    report = start_described()
    assert report["cmdline"] == "childkit:workers.args_entries:describe"


def test_child_runs_in_the_callers_working_directory(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert start_described()["cwd"] == str(tmp_path)


def test_child_sees_the_environment_of_the_start_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # The launcher was started (by this or an earlier test) with the environment of that
    # moment; a child sees os.environ as it is at its own start call, as with fork.
    start_described()
    launcher_env = dict(childkit.process._manager.manager()._launcher_env)
    assert launcher_env, "the launcher is running"
    gone = sorted(launcher_env)[0]
    monkeypatch.delenv(gone)
    monkeypatch.setenv("CHILDKIT_TEST_FRESH", "fresh \u00e9 value")
    env = start_described()["env"]
    assert isinstance(env, dict)
    assert env["CHILDKIT_TEST_FRESH"] == "fresh \u00e9 value"
    assert gone not in env
    monkeypatch.undo()
    env = start_described()["env"]
    assert isinstance(env, dict)
    assert "CHILDKIT_TEST_FRESH" not in env and env[gone] == launcher_env[gone]


def test_environment_too_large_for_a_start_request_is_invalid_param(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start_described()
    monkeypatch.setenv("CHILDKIT_TEST_HUGE", "x" * (600 * 1024))
    with pytest.raises(ChildkitError) as err:
        start_described()
    assert err.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    assert "os.environ" in err.value.message
    monkeypatch.undo()
    assert start_described()["params"] == "p"  # the launcher is still there


def test_bad_args_and_options_types_are_invalid_param() -> None:
    for call in (
        lambda: childkit.start_native_child_process("m:f", "params"),  # type: ignore[arg-type]
        lambda: childkit.start_native_child_process("m:f", None, "opts"),  # type: ignore[arg-type]
        lambda: childkit.start_native_child_process("m:f", timeout=0),
        lambda: childkit.start_native_child_process("m:f", timeout=float("nan")),
    ):
        with pytest.raises(ChildkitError) as info:
            call()
        assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_fd_closed_before_start_is_invalid_param() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(ChildkitError) as info:
        childkit.start_native_child_process("workers.args_entries:write_params",
                                            ChildProcessArgs("x", {"out": w}))
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    assert "not an open file descriptor" in info.value.message


# ---------------------------------------------------------------------------- native Main


@pytest.fixture(scope="module")
def native_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's parameter-passing Main (tests/native/child_main.c) as a .so."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is required to build tests/native/child_main.c")
    out = tmp_path_factory.mktemp("native") / "libchildkit_seed_child.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I", str(NATIVE),
                    "-o", str(out), str(NATIVE / "child_main.c")], check=True)
    return out


def test_seed_native_main_writes_through_the_fd(native_lib: Path) -> None:
    r, w = os.pipe()
    with exit_recorder() as rec:
        pid = childkit.start_native_child_process(
            f"{native_lib}:Main", ChildProcessArgs("testParam", {"fd1": w}))
        os.close(w)
        data = read_all(r)
        os.close(r)
        assert rec.wait_for(pid).exit_code == 0
    assert data == b"params=testParam;fd=fd1\n"


def test_native_missing_symbol_is_lib_loading_failed(native_lib: Path) -> None:
    with pytest.raises(ChildkitError) as info:
        childkit.start_native_child_process(f"{native_lib}:NoSuchMain")
    assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
    assert "NoSuchMain" in info.value.message


_SEARCH_PATH_SCRIPT = """
import os, sys
import childkit
r, w = os.pipe()
pid = childkit.start_native_child_process(
    "libchildkit_seed_child.so:Main", childkit.ChildProcessArgs("viaSearchPath", {"fd1": w}))
os.close(w)
data = b""
while chunk := os.read(r, 4096):
    data += chunk
sys.stdout.write(data.decode())
"""


def test_native_library_found_on_the_library_search_path(native_lib: Path) -> None:
    env = dict(os.environ, LD_LIBRARY_PATH=str(native_lib.parent))
    out = subprocess.run([sys.executable, "-c", _SEARCH_PATH_SCRIPT], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "params=viaSearchPath;fd=fd1\n"


# ---------------------------------------------------------------------------- IPC mode


def add_one(proxy: RemoteProxy, value: int) -> int:
    data = MessageParcel()
    data.write_int32(value)
    return proxy.send_request(ew.ADD_ONE, data).read_int32()


def send_int(proxy: RemoteProxy, code: int, value: int = 0) -> int:
    data = MessageParcel()
    data.write_int32(value)
    if code == ew.QUIT:
        proxy.send_request(code, data, ew.ONE_WAY)
        return 0
    return proxy.send_request(code, data).read_int32()


def test_create_native_child_process_gives_a_live_proxy_on_another_thread() -> None:
    done = threading.Event()
    got: list[tuple[ErrCode, RemoteProxy | None, str]] = []

    def on_started(code: ErrCode, proxy: RemoteProxy | None) -> None:
        got.append((code, proxy, threading.current_thread().name))
        done.set()

    with exit_recorder() as rec:
        assert childkit.create_native_child_process("workers.echo_worker", on_started) is None
        assert done.wait(30)
        (code, proxy, thread), = got
        assert code == ErrCode.NCP_NO_ERROR and proxy is not None
        assert thread != threading.current_thread().name
        assert add_one(proxy, 41) == 42
        pid = send_int(proxy, ew.PID)
        assert proxy.connection.peer_pid == pid
        assert send_int(proxy, ew.ARGS) == 1  # an IPC child has no start-up args
        assert send_int(proxy, ew.TRY_START) == ErrCode.NCP_ERR_ALREADY_IN_CHILD
        # The child holds stdio, its two sockets, and what the IPC kit opened itself
        # (epoll, eventfd): nothing of the parent's.
        # (+1: listdir's own fd; and an extra call channel's socket per channel this side
        # opened, with the child's channel hub, one epoll, once there is one: a lone call
        # takes a channel whenever nobody polls, Caller.prefer_channel)
        count = send_int(proxy, ew.FD_COUNT)
        channels = len(proxy.connection._caller.channels.all)
        assert count <= 3 + 2 + 2 + 1 + channels + (1 if channels else 0)
        send_int(proxy, ew.QUIT, 5)
        assert rec.wait_for(pid) == childkit.ChildExitInfo(pid, 5, None)
        assert wait_until(proxy.is_object_dead)
        with pytest.raises(DeadRemoteObjectError):
            add_one(proxy, 1)
        proxy.connection.close()


@pytest.mark.parametrize(("worker", "code", "needle"), [
    ("workers.no_stub_worker", ErrCode.NCP_ERR_CONNECTION_FAILED, "returned NoneType"),
    ("workers.raising_worker", ErrCode.NCP_ERR_CONNECTION_FAILED, "on_connect failed on purpose"),
    ("workers.no_main_worker", ErrCode.NCP_ERR_LIB_LOADING_FAILED, "no function 'main_proc'"),
    ("workers.no_such_worker", ErrCode.NCP_ERR_LIB_LOADING_FAILED, "cannot import module"),
    ("workers.dying_worker", ErrCode.NCP_ERR_CONNECTION_FAILED,
     "died during start-up (exit code 7)"),
])
def test_ipc_start_failures_reach_on_started_and_connect(worker: str, code: ErrCode,
                                                         needle: str) -> None:
    done = threading.Event()
    got: list[tuple[ErrCode, RemoteProxy | None]] = []

    def on_started(c: ErrCode, proxy: RemoteProxy | None) -> None:
        got.append((c, proxy))
        done.set()

    with exit_recorder() as rec:
        childkit.create_native_child_process(worker, on_started)
        assert done.wait(30)
        assert got == [(code, None)]
        with pytest.raises(ChildkitError) as info:
            childkit.connect(worker)
        assert info.value.code == code
        assert needle in info.value.message
        assert rec.calls == []


def test_ipc_start_timeout_kills_the_child() -> None:
    with pytest.raises(ChildkitError) as info:
        childkit.connect("workers.hanging_worker", timeout=0.5)
    assert info.value.code == ErrCode.NCP_ERR_TIMEOUT
    done = threading.Event()
    got: list[ErrCode] = []
    childkit.create_native_child_process(
        "workers.hanging_worker", lambda c, p: (got.append(c), done.set()), timeout=0.5)
    assert done.wait(30)
    assert got == [ErrCode.NCP_ERR_TIMEOUT]


def test_child_reads_its_busy_poll_window_from_the_start_calls_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The launcher imported the IPC kit long before; the child must still honour the
    # variable as it is at its own start call.
    with childkit.connect("workers.echo_worker") as child:
        default = send_int(child.proxy, ew.BUSY_POLL)
    assert default == (100 if len(os.sched_getaffinity(0)) > 1 else 0)
    monkeypatch.setenv("CHILDKIT_BUSY_POLL_US", "7")
    with childkit.connect("workers.echo_worker") as child:
        assert send_int(child.proxy, ew.BUSY_POLL) == 7
    monkeypatch.setenv("CHILDKIT_BUSY_POLL_US", "0")
    with childkit.connect("workers.echo_worker") as child:
        assert send_int(child.proxy, ew.BUSY_POLL) == 0
        assert add_one(child.proxy, 1) == 2  # and calls work with polling off


def test_ipc_entry_as_a_py_file() -> None:
    path = Path(__file__).parent.parent / "workers" / "echo_worker.py"
    with childkit.connect(str(path)) as child:
        assert add_one(child.proxy, 1) == 2


def test_ipc_missing_native_library_and_bad_callbacks_are_refused() -> None:
    # A library is served by the C kit in the child (tests/native/test_native_child.py);
    # one that does not load is reported to on_started.
    got: list[ErrCode] = []
    done = threading.Event()
    childkit.create_native_child_process(
        "libchildkit-no-such-worker.so", lambda c, p: (got.append(c), done.set()))
    assert done.wait(60) and got == [ErrCode.NCP_ERR_LIB_LOADING_FAILED]
    with pytest.raises(ChildkitError) as info:
        childkit.create_native_child_process("workers.echo_worker", "not callable")  # type: ignore[arg-type]
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    with pytest.raises(ChildkitError) as info:
        childkit.create_native_child_process("workers.echo_worker:x", lambda c, p: None)
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_connect_closes_the_proxy_and_stops_the_child() -> None:
    with exit_recorder() as rec:
        with childkit.connect("workers.echo_worker",
                              ChildProcessOptions(process_name="echo_child")) as child:
            assert add_one(child.proxy, 1) == 2
            assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "echo_child"
            proxy = child.proxy
        assert proxy.is_object_dead()
        info = rec.wait_for(child.pid)
        assert info.signal is not None  # stopped by SIGTERM (it ignores nothing)
        assert child.exit_info == info
        assert "pid=" in repr(child)


def test_args_start_timeout_kills_the_child() -> None:
    with exit_recorder() as rec:
        with pytest.raises(ChildkitError) as info:
            childkit.start_native_child_process("workers.hanging_import:main", timeout=0.5)
        err = info.value
        assert err.code == ErrCode.NCP_ERR_TIMEOUT
        assert "killed" in err.message
        assert rec.calls == []


def test_args_child_dying_while_starting_is_internal() -> None:
    with pytest.raises(ChildkitError) as info:
        childkit.start_native_child_process("workers.exit_on_import:main")
    assert info.value.code == ErrCode.NCP_ERR_INTERNAL
    assert "died during start-up (exit code 3)" in info.value.message


def test_the_application_itself_has_no_child_args() -> None:
    assert childkit.get_current_child_process_args() is None
