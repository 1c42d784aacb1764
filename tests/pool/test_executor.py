"""ChildProcessExecutor: results, exceptions with remote tracebacks, crashes and timeouts
that fail only their own task, cancellation, recycling, codecs, bad arguments, leaks."""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import os
import threading
import time
from collections.abc import Iterator

import pytest

from child_helpers import (
    no_child_leaks,
    wait_until,
)
from childkit import ChildkitError, ChildProcessOptions, ErrCode, IsolationMode
from childkit.pool._executor import (
    BrokenChildExecutor,
    ChildProcessExecutor,
    ChildTaskError,
    ExecutorParamError,
    RemoteTraceback,
    TaskTimeoutError,
    WorkerDiedError,
)
from childkit.pool._executor_worker import CodecError, safe_dumps, safe_loads


# ---------------------------------------------------------------------------- tasks
def add(a: int, b: int = 0) -> int:
    return a + b


def pid() -> int:
    return os.getpid()


class CustomError(Exception):
    pass


def raise_value() -> None:
    raise ValueError("bad value 42")


def open_missing(path: str) -> None:
    open(path)  # noqa: SIM115 (it raises)


def raise_os_error(*args: object) -> None:
    raise OSError(*args)


def raise_custom() -> None:
    raise CustomError("mine")


def exit_now(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    ctypes.string_at(0)


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def wait_file(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.01)
    return "released"


def make_object() -> object:
    return threading.Lock


def big(n: int) -> bytes:
    return b"x" * n


_init_value = 0


def set_init(value: int) -> None:
    global _init_value
    _init_value = value


def get_init() -> int:
    return _init_value


def bad_init() -> None:
    raise RuntimeError("init failed")


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield


# ---------------------------------------------------------------------------- behaviour
def test_submit_map_and_chunks() -> None:
    with ChildProcessExecutor(2) as ex:
        assert ex.submit(add, 1, b=2).result(timeout=30) == 3
        assert list(ex.map(add, range(7), range(7))) == [2 * i for i in range(7)]
        assert list(ex.map(add, range(100), chunksize=7)) == list(range(100))
        assert ex.submit(pid).result() in ex.worker_pids
        # Over one iterable each item is passed whole, tuples too (never spread as
        # arguments); over several, one argument from each; over none, nothing.
        assert list(ex.map(len, [(1, 2), (3,), (), "abcd"], chunksize=3)) == [2, 1, 0, 4]
        assert list(ex.map(max, [(1, 9)], [(5, 0)])) == [(5, 0)]
        assert list(ex.map(len)) == []


def test_builtin_exception_keeps_type_and_remote_traceback() -> None:
    with ChildProcessExecutor(1) as ex:
        with pytest.raises(ValueError, match="bad value 42") as info:
            ex.submit(raise_value).result()
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert 'raise ValueError("bad value 42")' in cause.tb
        with pytest.raises(ChildTaskError) as custom:
            ex.submit(raise_custom).result()
        assert custom.value.type_name == "CustomError"
        assert custom.value.message == "mine"
        assert "raise CustomError" in custom.value.remote_traceback


def test_an_os_error_keeps_its_file_names() -> None:
    # As ProcessPoolExecutor's: its subclass, errno, text and file names, none of which
    # the error's args alone carry.
    with ChildProcessExecutor(1) as ex:
        with pytest.raises(FileNotFoundError) as info:
            ex.submit(open_missing, "/no/such/file").result()
        assert (info.value.errno, info.value.filename) == (2, "/no/such/file")
        with pytest.raises(PermissionError) as two:
            ex.submit(raise_os_error, 13, "denied", "a", None, b"b").result()
        assert (two.value.strerror, two.value.filename, two.value.filename2) == (
            "denied", "a", b"b")
        with pytest.raises(OSError) as bare:
            ex.submit(raise_os_error, "just text").result()
        assert bare.value.args == ("just text",) and bare.value.filename is None


@pytest.mark.parametrize("task,args,expect", [(exit_now, (3,), "exit code 3"),
                                              (segfault, (), "SIGSEGV")])
def test_crash_fails_only_its_task_and_worker_is_replaced(task: object, args: tuple[int, ...],
                                                          expect: str) -> None:
    with ChildProcessExecutor(2) as ex:
        before = ex.submit(pid).result()
        others = [ex.submit(add, i) for i in range(20)]
        with pytest.raises(WorkerDiedError, match=expect) as info:
            ex.submit(task, *args).result()  # type: ignore[arg-type]
        assert info.value.exit_info is not None
        assert [f.result() for f in others] == list(range(20))
        assert [ex.submit(add, i).result() for i in range(10)] == list(range(10))
        assert wait_until(lambda: len(ex.worker_pids) == 2)
        assert before in ex.worker_pids or info.value.pid == before


def crash_if(value: int, bad: int) -> int:
    if value == bad:
        ctypes.string_at(0)
    return value


def test_crash_inside_a_batch_fails_only_that_task(tmp_path: object) -> None:
    # A blocked first task lets the rest queue up, so they go out in batches.
    flag = os.path.join(str(tmp_path), "go")
    with ChildProcessExecutor(2) as ex:
        gates = [ex.submit(wait_file, flag) for _ in range(2)]
        assert wait_until(lambda: all(g.running() for g in gates))
        futures = [ex.submit(crash_if, i, 150) for i in range(400)]
        open(flag, "w").close()
        for i, f in enumerate(futures):
            if i == 150:
                with pytest.raises(WorkerDiedError, match="SIGSEGV"):
                    f.result(timeout=60)
            else:
                assert f.result(timeout=60) == i
        assert [g.result() for g in gates] == ["released"] * 2


def test_batch_results_larger_than_the_journal(tmp_path: object) -> None:
    flag = os.path.join(str(tmp_path), "go")
    with ChildProcessExecutor(1) as ex:
        gate = ex.submit(wait_file, flag)
        assert wait_until(gate.running)
        futures = [ex.submit(big, 100_000) for _ in range(12)]  # 1.2 MB > the journal
        open(flag, "w").close()
        assert all(len(f.result(timeout=60)) == 100_000 for f in futures)


def test_worker_killed_while_idle_costs_no_task() -> None:
    import childkit

    with ChildProcessExecutor(2, prestart=True) as ex:
        assert ex.submit(add, 1).result() == 1
        assert wait_until(lambda: len(ex.worker_pids) == 2)
        for p in ex.worker_pids:
            childkit.kill_child_process(p)
        assert [ex.submit(add, i).result(timeout=60) for i in range(20)] == list(range(20))
        assert list(ex.map(add, range(50), chunksize=5)) == list(range(50))


def test_timeout_kills_and_replaces_stuck_worker() -> None:
    with ChildProcessExecutor(1) as ex:
        stuck = ex.submit_with_timeout(sleep_for, 0.2, 60)
        after = ex.submit(add, 5)
        with pytest.raises(TaskTimeoutError) as info:
            stuck.result(timeout=30)
        assert isinstance(info.value, TimeoutError)
        assert "0.2 s timeout" in str(info.value)
        assert after.result(timeout=30) == 5
        # A task within its timeout is unaffected.
        assert ex.submit_with_timeout(sleep_for, 30, 0.01).result() == 0.01


def test_executor_wide_task_timeout() -> None:
    # The initializer imports this module in each worker outside any task's timeout.
    with ChildProcessExecutor(1, task_timeout=1.0, initializer=pid) as ex:
        with pytest.raises(TaskTimeoutError):
            ex.submit(sleep_for, 60).result(timeout=30)
        assert ex.submit(add, 1).result() == 1


def test_cancel_pending_and_shutdown_cancel_futures(tmp_path: object) -> None:
    flag = os.path.join(str(tmp_path), "go")
    ex = ChildProcessExecutor(1)
    running = ex.submit(wait_file, flag)
    assert wait_until(running.running)
    pending = [ex.submit(add, i) for i in range(5)]
    assert pending[0].cancel()
    assert not running.cancel()
    ex.shutdown(wait=False, cancel_futures=True)
    open(flag, "w").close()
    assert running.result(timeout=30) == "released"
    ex.shutdown(wait=True)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(add, 1)


def test_max_tasks_per_child_recycles_workers() -> None:
    with ChildProcessExecutor(1, max_tasks_per_child=2) as ex:
        pids = [ex.submit(pid).result() for _ in range(6)]
    assert len(set(pids)) == 3
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]


def test_initializer_runs_and_failing_initializer_breaks() -> None:
    with ChildProcessExecutor(1, initializer=set_init, initargs=(7,)) as ex:
        assert ex.submit(get_init).result() == 7
    ex = ChildProcessExecutor(1, initializer=bad_init)
    try:
        with pytest.raises(BrokenChildExecutor, match="init failed"):
            ex.submit(add, 1).result(timeout=30)
        assert isinstance(BrokenChildExecutor("x"), cf.BrokenExecutor)
    finally:
        ex.shutdown()


def test_safe_codec_and_pickle_rules() -> None:
    with ChildProcessExecutor(1, result_codec="safe") as ex:
        assert ex.submit(add, 2, 3).result() == 5
        with pytest.raises(ChildTaskError, match="CodecError"):
            ex.submit(make_object).result()
        assert len(ex.submit(big, 1_000_000).result()) == 1_000_000  # through Ashmem
    with ChildProcessExecutor(1) as ex:  # NORMAL: pickle by default
        assert ex.submit(make_object).result() is threading.Lock
    with pytest.raises(ExecutorParamError, match="allow_pickle_results"):
        ChildProcessExecutor(1, isolation_mode=IsolationMode.ISOLATED, result_codec="pickle")


def test_safe_codec_round_trip_and_rejects_garbage() -> None:
    value = [None, True, False, 0, -1, 2**200, 1.5, "héllo\ud800", b"\x00", (1, [2]),
             {"a": {1: (None,)}}]
    assert safe_loads(safe_dumps(value)) == value
    for bad in (b"", b"\x63", b"\x07\xff\xff\xff\xff", b"\x00\x00", b"\x09\x01\x00\x00\x00"
                b"\x07\x00\x00\x00\x00\x00"):
        with pytest.raises(CodecError):
            safe_loads(bad)
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(CodecError, match="deeper"):
        safe_dumps(deep)


@pytest.mark.parametrize("kwargs,match", [
    ({"max_workers": 0}, "greater than 0"),
    ({"max_workers": 51}, "at most 50"),
    ({"max_workers": "2"}, "must be an int"),
    ({"max_tasks_per_child": 0}, ">= 1"),
    ({"result_codec": "json"}, "result_codec"),
    ({"task_timeout": -1}, "timeout"),
])
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ExecutorParamError, match=match) as info:
        ChildProcessExecutor(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_limits_at_the_edge() -> None:
    ChildProcessExecutor(50).shutdown()  # accepted (no worker starts before a submit)
    with ChildProcessExecutor(1) as ex:
        with pytest.raises(ExecutorParamError):
            ex.submit_with_timeout(add, 0, 1)
        with pytest.raises(ValueError, match="chunksize"):
            ex.map(add, [1], chunksize=0)
    with pytest.raises(TypeError):
        ChildProcessExecutor(1, initializer=42)  # type: ignore[arg-type]
    with pytest.raises(ExecutorParamError, match="initargs") as info:
        ChildProcessExecutor(1, initializer=print, initargs=5)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    ChildProcessExecutor(1, initializer=print, initargs=[1, 2]).shutdown()  # any iterable


def make_lock() -> object:
    return threading.Lock()


def test_unpicklable_task_or_result_fails_its_future() -> None:
    with ChildProcessExecutor(1) as ex:
        future = ex.submit(add, threading.Lock())
        with pytest.raises(TypeError):
            future.result()
        with pytest.raises(TypeError, match="pickle"):
            ex.submit(make_lock).result()
        assert ex.submit(add, 1).result() == 1


def test_workers_that_cannot_start_break_the_executor() -> None:
    ex = ChildProcessExecutor(1, options=ChildProcessOptions(process_name="ok_name"),
                              start_timeout=30)
    ex._core.options = "not options"  # type: ignore[assignment]  # every start fails
    try:
        with pytest.raises(BrokenChildExecutor, match="could not start"):
            ex.submit(add, 1).result(timeout=30)
    finally:
        ex.shutdown()
    assert issubclass(BrokenChildExecutor, cf.BrokenExecutor)
    assert ChildkitError  # the start error's type is kept in the message


def test_isolated_workers_use_the_safe_codec() -> None:
    with ChildProcessExecutor(1, isolation_mode=IsolationMode.ISOLATED) as ex:
        assert ex.result_codec == "safe"
        assert ex.submit(pow, 2, 8).result(timeout=60) == 256
        assert list(ex.map(divmod, [7, 8], [2, 3])) == [(3, 1), (2, 2)]
        with pytest.raises(FileNotFoundError):  # the sandbox hides the host's files
            ex.submit(open, "/etc/passwd").result(timeout=60)
    ex2 = ChildProcessExecutor(1, isolation_mode=IsolationMode.ISOLATED, result_codec="pickle",
                               allow_pickle_results=True)
    assert ex2.result_codec == "pickle"
    ex2.shutdown()
