"""ChildProcessExecutor as a drop-in for ProcessPoolExecutor: the same leading arguments
in the same order, mp_context accepted (fork, forkserver, spawn) and anything else
refused clearly, workers started on demand (or all at once when asked), and a task
whose pickling raises SystemExit failing its future rather than submit()."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest
from test_executor import get_init, pid, set_init

from child_helpers import wait_until
from childkit import ChildProcessExecutor, ErrCode, ExecutorParamError


def wait_for(path: str) -> int:
    while not os.path.exists(path):
        threading.Event().wait(0.01)
    return os.getpid()


class ExitsWhenPickled:
    def __reduce__(self) -> tuple[object, ...]:
        raise SystemExit("no pickling for me")


def test_positional_arguments_in_process_pool_executor_order() -> None:
    with ChildProcessExecutor(2, None, set_init, (7,)) as ex:
        assert ex.submit(get_init).result(timeout=60) == 7
    with ChildProcessExecutor(1, None, set_init, (3,), max_tasks_per_child=1) as ex:
        assert [ex.submit(get_init).result(timeout=60) for _ in range(2)] == [3, 3]


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_mp_context_of_each_start_method_is_accepted(method: str) -> None:
    with ChildProcessExecutor(1, multiprocessing.get_context(method)) as ex:
        assert ex.submit(pow, 3, 2).result(timeout=60) == 9
    with ChildProcessExecutor(mp_context=multiprocessing.get_context(method)) as ex:
        assert ex.submit(abs, -1).result(timeout=60) == 1


@pytest.mark.parametrize("bad", ["spawn", 5, object(), multiprocessing])
def test_anything_else_as_mp_context_is_refused(bad: object) -> None:
    with pytest.raises(ExecutorParamError, match="mp_context must be None or a multiprocessing "
                                                 "context") as info:
        ChildProcessExecutor(1, bad)  # type: ignore[arg-type]
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_workers_start_on_demand(tmp_path: object) -> None:
    with ChildProcessExecutor(4) as ex:
        assert ex.worker_pids == []  # none before the first submit
        first = ex.submit(pid).result(timeout=60)
        # One task at a time: the idle worker takes each, no other starts.
        for _ in range(5):
            assert ex.submit(pid).result(timeout=60) == first
        assert ex.worker_pids == [first]
        # Tasks that wait: one more worker per task while none is idle, up to 4.
        release = os.path.join(str(tmp_path), "go")
        futures = [ex.submit(wait_for, release) for _ in range(3)]
        assert wait_until(lambda: len(ex.worker_pids) == 3)
        open(release, "w").close()
        assert len({f.result(timeout=60) for f in futures}) == 3
        assert len(ex.worker_pids) <= 4


def test_prestart_starts_every_worker() -> None:
    with ChildProcessExecutor(3, prestart=True) as ex:
        assert wait_until(lambda: len(ex.worker_pids) == 3)
        assert ex.submit(abs, -2).result(timeout=60) == 2
    with pytest.raises(ExecutorParamError, match="prestart must be a bool"):
        ChildProcessExecutor(1, prestart="yes")  # type: ignore[arg-type]


def test_pickling_that_raises_system_exit_fails_the_future() -> None:
    with ChildProcessExecutor(1) as ex:
        future = ex.submit(repr, ExitsWhenPickled())
        with pytest.raises(SystemExit, match="no pickling for me"):
            future.result(timeout=60)
        assert ex.submit(abs, -5).result(timeout=60) == 5
