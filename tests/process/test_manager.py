"""The rules: the 50-child limit, exit callbacks, kill, options, concurrency."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator

import pytest

import childkit
from child_helpers import (
    exit_recorder,
    launcher_pid,
    no_child_leaks,
    read_all,
    wait_until,
)
from childkit import (
    MAX_CHILDREN,
    ChildExitInfo,
    ChildkitError,
    ChildProcessArgs,
    ChildProcessOptions,
    ErrCode,
    IsolationMode,
)
from childkit.ipc import MessageParcel, RemoteProxy
from workers import echo_worker as ew


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield



def start_blocking(hold: int) -> int:
    return childkit.start_native_child_process("workers.args_entries:block",
                                               ChildProcessArgs("", {"hold": hold}))


def expect(code: ErrCode, call: object, *args: object, **kwargs: object) -> ChildkitError:
    with pytest.raises(ChildkitError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    assert info.value.code == code, info.value
    return info.value


# ---------------------------------------------------------------------------- 50 children


def test_fifty_children_then_max_reached_until_one_exits() -> None:
    hold_r, hold_w = os.pipe()
    with exit_recorder() as rec:
        try:
            pids = [start_blocking(hold_r) for _ in range(MAX_CHILDREN - 1)]
            # The 50th goes through IPC mode: both modes share the limit.
            fiftieth = childkit.connect("workers.echo_worker")
            assert len(set(pids)) == MAX_CHILDREN - 1
            err = expect(ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED, start_blocking, hold_r)
            assert "50" in err.message
            expect(ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED, childkit.connect,
                   "workers.echo_worker")
            expect(ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED,
                   childkit.create_native_child_process, "workers.echo_worker",
                   lambda c, p: None)
            # A slot frees when a child exits.
            childkit.kill_child_process(pids[0])
            assert rec.wait_for(pids[0]).signal == signal.SIGKILL
            pids[0] = start_blocking(hold_r)
            expect(ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED, start_blocking, hold_r)
            fiftieth.close()
            assert rec.wait_for(fiftieth.pid).signal == signal.SIGTERM
            pids.append(start_blocking(hold_r))
        finally:
            os.close(hold_r)
            os.close(hold_w)  # every blocked child reads end of file and exits
        for pid in pids:
            assert rec.wait_for(pid).exit_code == 0


# ---------------------------------------------------------------------------- exit callbacks


def test_same_callback_twice_is_kept_once_and_unknown_is_callback_not_exist() -> None:
    calls: list[int] = []

    def cb(pid: int, info: ChildExitInfo) -> None:
        calls.append(pid)

    childkit.register_child_process_exit_callback(cb)
    childkit.register_child_process_exit_callback(cb)
    with exit_recorder() as rec:
        pid = childkit.start_native_child_process("workers.args_entries:exit_with",
                                                  ChildProcessArgs("0"))
        rec.wait_for(pid)
    childkit.unregister_child_process_exit_callback(cb)
    # Callbacks run in registration order on one thread: cb ran before the recorder.
    assert calls == [pid]
    err = expect(ErrCode.NCP_ERR_CALLBACK_NOT_EXIST,
                 childkit.unregister_child_process_exit_callback, cb)
    assert "not registered" in err.message
    expect(ErrCode.NCP_ERR_CALLBACK_NOT_EXIST,
           childkit.unregister_child_process_exit_callback, lambda p, i: None)
    expect(ErrCode.NCP_ERR_INVALID_PARAM, childkit.register_child_process_exit_callback, 42)
    # As OpenHarmony's (a null callback is an invalid parameter, not an unknown one):
    for bad in (None, 42):
        expect(ErrCode.NCP_ERR_INVALID_PARAM,
               childkit.unregister_child_process_exit_callback, bad)


def test_a_raising_callback_does_not_stop_the_others() -> None:
    def bad(pid: int, info: ChildExitInfo) -> None:
        raise RuntimeError("callback failed on purpose")

    childkit.register_child_process_exit_callback(bad)
    try:
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process("workers.args_entries:exit_with",
                                                      ChildProcessArgs("3"))
            assert rec.wait_for(pid).exit_code == 3
    finally:
        childkit.unregister_child_process_exit_callback(bad)


def test_exit_info_decodes_wait_status() -> None:
    assert ChildExitInfo.from_wait_status(5, 3 << 8) == ChildExitInfo(5, 3, None)
    assert ChildExitInfo.from_wait_status(5, signal.SIGTERM) == ChildExitInfo(5, None, 15)
    assert repr(ChildExitInfo(5, None, 15)) == "ChildExitInfo(pid=5, killed by SIGTERM)"
    assert repr(ChildExitInfo(5, 0, None)) == "ChildExitInfo(pid=5, exit_code=0)"


# ---------------------------------------------------------------------------- kill


def test_kill_child_process_fires_the_exit_callback_then_pid_is_invalid() -> None:
    hold_r, hold_w = os.pipe()
    try:
        with exit_recorder() as rec:
            pid = start_blocking(hold_r)
            childkit.kill_child_process(pid)
            assert rec.wait_for(pid) == ChildExitInfo(pid, None, signal.SIGKILL)
            expect(ErrCode.NCP_ERR_INVALID_PID, childkit.kill_child_process, pid)
    finally:
        os.close(hold_r)
        os.close(hold_w)


def test_kill_ipc_child_by_pid() -> None:
    with exit_recorder() as rec:
        child = childkit.connect("workers.echo_worker")
        childkit.kill_child_process(child.pid)
        assert rec.wait_for(child.pid).signal == signal.SIGKILL
        assert wait_until(child.proxy.is_object_dead)
        child.close()


@pytest.mark.parametrize("pid", [0, -1, 1, os.getpid(), 2**31 - 1, 2**80])
def test_kill_not_a_child_is_invalid_pid(pid: int) -> None:
    err = expect(ErrCode.NCP_ERR_INVALID_PID, childkit.kill_child_process, pid)
    assert str(pid) in err.message


def test_kill_launcher_pid_is_invalid_pid() -> None:
    expect(ErrCode.NCP_ERR_INVALID_PID, childkit.kill_child_process, launcher_pid())


@pytest.mark.parametrize("pid", ["12", 1.0, None, True])
def test_kill_non_int_is_invalid_param(pid: object) -> None:
    expect(ErrCode.NCP_ERR_INVALID_PARAM, childkit.kill_child_process, pid)


# ---------------------------------------------------------------------------- limits, edges


def start_echo_size(params: str, fds: dict[str, int]) -> list[object]:
    """Start echo_size with every name in ``fds`` mapped to one pipe; return its report."""
    r, w = os.pipe()
    try:
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process(
                "workers.args_entries:echo_size", ChildProcessArgs(params, dict.fromkeys(fds, w)))
            os.close(w)
            w = -1
            data = read_all(r)
            assert rec.wait_for(pid).exit_code == 0
        return json.loads(data)  # type: ignore[no-any-return]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_params_of_exactly_150_kb_arrive_and_one_byte_more_is_refused() -> None:
    limit = 150 * 1024
    assert start_echo_size("é" * (limit // 2), {"a": 0}) == [limit, ["a"]]
    with pytest.raises(ChildkitError, match=str(limit + 1)):  # refused when built
        ChildProcessArgs("x" * (limit + 1), {"a": 1})
    args = ChildProcessArgs("", {"a": 1})
    args.entry_params = "x" * (limit + 1)  # ...and when started, if changed since
    err = expect(ErrCode.NCP_ERR_INVALID_PARAM, childkit.start_native_child_process,
                 "workers.args_entries:echo_size", args)
    assert str(limit + 1) in err.message


def test_sixteen_fds_arrive_and_seventeen_are_refused() -> None:
    names = {f"fd{i:02}": 0 for i in range(16)}
    assert start_echo_size("", names) == [0, sorted(names)]
    r, w = os.pipe()
    try:
        args = ChildProcessArgs()
        args.fds.update({f"fd{i:02}": w for i in range(17)})  # the constructor refuses 17
        err = expect(ErrCode.NCP_ERR_INVALID_PARAM, childkit.start_native_child_process,
                     "workers.args_entries:echo_size", args)
    finally:
        os.close(r)
        os.close(w)
    assert "17" in err.message


def test_fd_name_of_20_characters_arrives_and_21_is_refused() -> None:
    assert start_echo_size("", {"n" * 20: 0}) == [0, ["n" * 20]]
    for bad in ("n" * 21, ""):
        args = ChildProcessArgs()
        args.fds[bad] = 1  # the constructor refuses it too
        expect(ErrCode.NCP_ERR_INVALID_PARAM, childkit.start_native_child_process,
               "workers.args_entries:echo_size", args)


def test_process_name_rules_at_their_edges() -> None:
    assert ChildProcessOptions(process_name="a" * 64).process_name == "a" * 64
    assert ChildProcessOptions(process_name="A_9").process_name == "A_9"
    for bad, needle in (("a" * 65, "65"), ("", "empty"), ("a-b", "'-'"), ("é", "'é'"),
                        ("a b", "' '"), (5, "str")):
        with pytest.raises(ChildkitError) as info:
            ChildProcessOptions(process_name=bad)  # type: ignore[arg-type]
        assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
        assert needle in info.value.message


def test_isolation_options() -> None:
    assert ChildProcessOptions(isolation_mode=1).isolation_mode is IsolationMode.ISOLATED  # type: ignore[arg-type]
    ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED, isolation_uid=True)
    for kwargs in ({"isolation_uid": True}, {"isolation_mode": 2}, {"isolation_mode": "x"},
                   {"isolation_uid": 1}):
        with pytest.raises(ChildkitError) as info:
            ChildProcessOptions(**kwargs)  # type: ignore[arg-type]
        assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    # ISOLATED children run in the sandbox: tests/sandbox/test_isolated_children.py.


def test_is_supported_in_the_application() -> None:
    assert childkit.is_native_child_process_supported() is True


# ---------------------------------------------------------------------------- threads


def test_many_threads_start_talk_to_and_kill_children_at_once() -> None:
    errors: list[BaseException] = []
    started: list[int] = []
    lock = threading.Lock()
    hold_r, hold_w = os.pipe()

    def work(index: int) -> None:
        try:
            pids = [start_blocking(hold_r) for _ in range(2)]
            with childkit.connect("workers.echo_worker") as child:
                data = MessageParcel()
                data.write_int32(index)
                assert child.proxy.send_request(ew.ADD_ONE, data).read_int32() == index + 1
            childkit.kill_child_process(pids[0])
            ready = threading.Event()
            got: list[tuple[ErrCode, RemoteProxy | None]] = []
            childkit.create_native_child_process(
                "workers.echo_worker", lambda c, p: (got.append((c, p)), ready.set()))
            assert ready.wait(60)
            code, proxy = got[0]
            assert code == ErrCode.NCP_NO_ERROR and proxy is not None
            quit_data = MessageParcel()
            quit_data.write_int32(0)
            proxy.send_request(ew.QUIT, quit_data, ew.ONE_WAY)
            with lock:
                started.extend([*pids, child.pid, proxy.connection.peer_pid])
        except BaseException as exc:
            with lock:
                errors.append(exc)

    with exit_recorder() as rec:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        os.close(hold_w)
        os.close(hold_r)
        assert errors == []
        assert len(set(started)) == 8 * 4
        for pid in started:
            rec.wait_for(pid)
