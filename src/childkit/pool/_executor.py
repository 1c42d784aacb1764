"""ChildProcessExecutor: a ``concurrent.futures.Executor`` over IPC-mode children.

Each worker slot is a dispatcher thread in this process that owns one child (started
from the launcher with :func:`childkit.connect`, running :mod:`childkit.pool._executor_worker`)
and sends it one task at a time as a sync request. Idle slots pull from one queue, so
the least loaded worker takes the next task. Because a worker only ever has one request
in flight, a crash or a timeout is always the fault of that request: only its future
fails, the slot starts a new child, and the executor keeps working (there is no
whole-pool breakage like ``BrokenProcessPool``).

Tasks go to the child pickled (by reference, like ``ProcessPoolExecutor``); results come
back in the executor's ``result_codec`` and exceptions always in a safe form (type name,
message, traceback text), never unpickled. See docs/executor.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from multiprocessing.context import BaseContext
from typing import Any, ParamSpec, TypeVar

from childkit.pool import _executor_worker as ew
from childkit.pool._executor_core import (
    ExecutorCore,
    ResultCodec,
    WorkItem,
    check_timeout,
)
from childkit.pool._executor_errors import (
    BrokenChildExecutor as BrokenChildExecutor,
)
from childkit.pool._executor_errors import (
    ChildExecutorError as ChildExecutorError,
)
from childkit.pool._executor_errors import ChildTaskError as ChildTaskError
from childkit.pool._executor_errors import (
    ExecutorParamError as ExecutorParamError,
)
from childkit.pool._executor_errors import (
    ExecutorParamTypeError as ExecutorParamTypeError,
)
from childkit.pool._executor_errors import RemoteTraceback as RemoteTraceback
from childkit.pool._executor_errors import TaskTimeoutError as TaskTimeoutError
from childkit.pool._executor_errors import WorkerDiedError as WorkerDiedError
from childkit.pool._main_script import (
    MainNotImportableError,
    check_reachable,
    main_script,
)
from childkit.process import (
    MAX_CHILDREN,
    START_TIMEOUT,
    ChildProcessOptions,
    IsolationMode,
)

P = ParamSpec("P")
T = TypeVar("T")

_MP_START_METHODS = ("fork", "forkserver", "spawn")


def _check_mp_context(mp_context: object) -> None:
    """Accept ``None`` or a ``multiprocessing`` fork, forkserver or spawn context."""
    if mp_context is None:
        return
    method = None
    if isinstance(mp_context, BaseContext):
        try:
            method = mp_context.get_start_method(allow_none=False)
        except Exception:
            method = None
    if method not in _MP_START_METHODS:
        raise ExecutorParamError(
            f"mp_context must be None or a multiprocessing context whose start method is "
            f"'fork', 'forkserver' or 'spawn' (multiprocessing.get_context('spawn')), "
            f"not {mp_context!r}; childkit's workers are always forked from its launcher, "
            f"a fresh interpreter (see docs/executor.md)")


def _with_main_script(options: ChildProcessOptions) -> ChildProcessOptions:
    """ISOLATED options with the main script's own file readable in the sandbox, so that
    tasks defined in it can run (its directory stays hidden: see docs/executor.md)."""
    main = main_script()
    if main is None or main.kind != "path" or main.value in options.readonly_paths:
        return options
    return dataclasses.replace(options, readonly_paths=(*options.readonly_paths, main.value))


def _chunks(iterables: tuple[Iterable[Any], ...], chunksize: int) -> Iterator[list[Any]]:
    """``map``'s calls, ``chunksize`` at a time: items of the one iterable, or tuples of
    arguments when there are several (see :func:`_executor_worker.run_chunk`)."""
    it: Iterator[Any] = iter(iterables[0]) if len(iterables) == 1 else zip(
        *iterables, strict=False)
    while chunk := list(itertools.islice(it, chunksize)):
        yield chunk


class ChildProcessExecutor(Executor):
    """A ``concurrent.futures.Executor`` whose workers are childkit children.

    A drop-in for ``ProcessPoolExecutor``: the same leading arguments in the same order,
    workers started on demand, functions defined in the main script usable as tasks
    (each worker runs the script as ``__mp_main__``, as ``multiprocessing``'s spawn does;
    see docs/executor.md for the few documented differences).

    Args:
        max_workers: worker processes (default: the CPU count), 1..``MAX_CHILDREN``;
            started on demand (one more while no worker is idle, as
            ``ProcessPoolExecutor``), each forked from the launcher; ``prestart=True``
            starts them all at once.
        mp_context: ``None`` or a ``multiprocessing`` context whose start method is
            ``"fork"``, ``"forkserver"`` or ``"spawn"``, accepted for drop-in use.
            Whatever the context, workers are forked from childkit's launcher, a fresh
            interpreter: like ``spawn``/``forkserver`` they inherit none of this
            process's memory (module globals set at run time, open objects), and run the
            main script as ``__mp_main__`` when a task needs it.
        initializer: run once in every new worker; if it raises, the executor is
            broken (as ``ProcessPoolExecutor``): :class:`BrokenChildExecutor`.
        initargs: the arguments of ``initializer``.
        max_tasks_per_child: replace a worker after it ran this many tasks.
        isolation_mode: ``IsolationMode.NORMAL`` or ``ISOLATED`` (workers sandboxed;
            their functions must come from modules the sandbox can read: the main
            script's own file is made readable; other modules of yours through
            ``options=ChildProcessOptions(readonly_paths=[...])``).
        task_timeout: seconds any task may run (see also :meth:`submit_with_timeout`);
            an overrun fails that task with :class:`TaskTimeoutError` and replaces its
            worker.
        result_codec: ``"pickle"`` (results are unpickled: the default for NORMAL
            workers, which run the caller's own code) or ``"safe"`` (None, bool, int,
            float, str, bytes, list, tuple, dict; the default for ISOLATED). ISOLATED
            with ``"pickle"`` needs ``allow_pickle_results=True``.
        options: a full :class:`ChildProcessOptions` (its isolation mode wins).
        start_timeout: seconds a worker may take to start.
        prestart: start every worker now instead of on demand.

    Raises:
        ExecutorParamError: (a ``ValueError`` and ``ChildkitError`` with
            ``NCP_ERR_INVALID_PARAM``) for a bad argument, saying which: a bad
            ``max_workers``, an ``mp_context`` that is not a fork, forkserver or spawn
            context, an ``initializer`` that is not callable, ...
        MainNotImportableError: (``NCP_ERR_INVALID_PARAM``) the initializer is defined
            in a ``__main__`` that workers cannot run again (an interactive session,
            ``python -c``).
    """

    def __init__(self, max_workers: int | None = None,
                 mp_context: BaseContext | None = None,
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), *,
                 max_tasks_per_child: int | None = None,
                 isolation_mode: IsolationMode = IsolationMode.NORMAL,
                 task_timeout: float | None = None,
                 result_codec: ResultCodec | None = None,
                 allow_pickle_results: bool = False,
                 options: ChildProcessOptions | None = None,
                 start_timeout: float = START_TIMEOUT,
                 prestart: bool = False) -> None:
        if max_workers is None:
            max_workers = min(os.cpu_count() or 1, MAX_CHILDREN)
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise ExecutorParamError(f"max_workers must be an int, not {max_workers!r}")
        if max_workers <= 0:
            raise ExecutorParamError("max_workers must be greater than 0")
        if max_workers > MAX_CHILDREN:
            raise ExecutorParamError(f"max_workers is {max_workers}; a process may have "
                                     f"at most {MAX_CHILDREN} children")
        _check_mp_context(mp_context)
        if max_tasks_per_child is not None and (
                isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int)
                or max_tasks_per_child < 1):
            raise ExecutorParamError(f"max_tasks_per_child must be an int >= 1 or None, "
                                     f"not {max_tasks_per_child!r}")
        if initializer is not None and not callable(initializer):
            raise ExecutorParamTypeError(f"initializer must be a callable or None, "
                                     f"not {initializer!r}")
        try:
            initargs = tuple(initargs)
        except TypeError:
            raise ExecutorParamTypeError(f"initargs must be an iterable of arguments, "
                                         f"not {initargs!r}") from None
        if not isinstance(prestart, bool):
            raise ExecutorParamError(f"prestart must be a bool, not {prestart!r}")
        if options is None:
            options = ChildProcessOptions(isolation_mode=isolation_mode)
        elif not isinstance(options, ChildProcessOptions):
            raise ExecutorParamError(f"options must be a ChildProcessOptions, not {options!r}")
        isolated = options.isolation_mode == IsolationMode.ISOLATED
        if result_codec is None:
            result_codec = "safe" if isolated else "pickle"
        if result_codec not in ("safe", "pickle"):
            raise ExecutorParamError(f"result_codec must be 'safe' or 'pickle', "
                                     f"not {result_codec!r}")
        if result_codec == "pickle" and isolated and allow_pickle_results is not True:
            raise ExecutorParamError(
                "ISOLATED workers run untrusted code: their pickled results would run code "
                "in this process when unpickled; use result_codec='safe', or pass "
                "allow_pickle_results=True if you trust them")
        init_payload = None
        init_needs_main = False
        if initializer is not None:
            init = (initializer, initargs)
            init_payload = pickle.dumps(init, protocol=pickle.HIGHEST_PROTOCOL)
            init_needs_main = check_reachable(init, init_payload, "the initializer")
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, int | float) \
                or not start_timeout > 0:
            raise ExecutorParamError(f"start_timeout must be a positive number, "
                                     f"not {start_timeout!r}")
        if isolated:
            options = _with_main_script(options)
        self._max_workers = max_workers
        self.result_codec: ResultCodec = result_codec
        self._core = ExecutorCore(max_workers, options,
                           ew.CODEC_PICKLE if result_codec == "pickle" else ew.CODEC_SAFE,
                           max_tasks_per_child, init_payload, check_timeout(task_timeout),
                           float(start_timeout), init_needs_main)
        # An executor dropped without shutdown() stops its workers when collected.
        self._finalizer = weakref.finalize(self, ExecutorCore.stop, self._core, False)
        if prestart:
            self._core.prestart()

    # ------------------------------------------------------------------ submitting
    def _submit(self, code: int, payload_obj: object, timeout: float | None) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            payload = pickle.dumps(payload_obj, protocol=pickle.HIGHEST_PROTOCOL)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # as ProcessPoolExecutor: the future fails, not
            # submit (a __reduce__ raising SystemExit too)
            with self._core.lock:
                if self._core.shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown") from None
            future.set_exception(exc)
            return future
        needs_main = check_reachable(payload_obj, payload, "this task")
        self._core.put(WorkItem(future, code, payload, timeout, needs_main))
        return future

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` in a worker; return its future. Tasks
        submitted run to completion even if the interpreter exits first (as with
        ``ProcessPoolExecutor``), unless ``shutdown(cancel_futures=True)`` drops them.

        Raises:
            RuntimeError: after :meth:`shutdown`, or once the interpreter is exiting.
            BrokenChildExecutor: if the executor is broken, or its dispatcher threads
                cannot start (then it is broken from now on).
        """
        return self._submit(ew.RUN, (fn, args, kwargs), None)

    def submit_with_timeout(self, fn: Callable[P, T], timeout: float | None, /,
                            *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Like :meth:`submit`, but the task may run at most ``timeout`` seconds: after
        that its worker is killed and replaced and the future fails with
        :class:`TaskTimeoutError` (a ``TimeoutError``). ``None``: the executor's
        ``task_timeout``.

        Raises:
            ExecutorParamError: for a timeout that is not a positive number or None.
        """
        return self._submit(ew.RUN, (fn, args, kwargs), check_timeout(timeout))

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[T]:
        """``map(fn, *iterables)`` in the workers, ``chunksize`` calls per request.

        As ``ProcessPoolExecutor.map``: the iterables are consumed at once; the returned
        iterator raises ``TimeoutError`` if a result is not ready ``timeout`` seconds
        after this call, and the first exception of a call (which fails its chunk).
        """
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end_time = None if timeout is None else timeout + time.monotonic()
        spread = len(iterables) != 1
        fs = [self._submit(ew.RUN_CHUNK, (fn, chunk, spread), None)
              for chunk in _chunks(iterables, chunksize)]

        def result_iterator() -> Iterator[T]:
            try:
                fs.reverse()
                while fs:
                    future = fs.pop()
                    try:
                        if end_time is None:
                            chunk = future.result()
                        else:
                            chunk = future.result(end_time - time.monotonic())
                    except BaseException:
                        future.cancel()
                        raise
                    del future
                    # Hand the items over one by one, keeping no reference to those
                    # already yielded (the chunk list is the future's result too).
                    chunk.reverse()
                    while chunk:
                        yield chunk.pop()
            finally:
                for future in fs:
                    future.cancel()

        return result_iterator()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting tasks; with ``cancel_futures`` cancel those not started. With
        ``wait``, return once every started task is done and every worker has exited
        and been reaped. Idempotent."""
        threads = self._core.stop(cancel_futures)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the workers now running (for monitoring and tests)."""
        with self._core.lock:
            return [w.pid for w in self._core.workers.values()]


# Their home is the public face: reprs and tracebacks say childkit.RemoteTraceback, not
# this private module's path (pickling by reference finds them there too).
for _public in (BrokenChildExecutor, ChildExecutorError, ChildProcessExecutor, ChildTaskError,
                ExecutorParamError, MainNotImportableError, RemoteTraceback, TaskTimeoutError,
                WorkerDiedError):
    _public.__module__ = "childkit"
del _public

__all__ = [
    "BrokenChildExecutor",
    "ChildExecutorError",
    "ChildProcessExecutor",
    "ChildTaskError",
    "ExecutorParamError",
    "ExecutorParamTypeError",
    "FuturesTimeoutError",
    "MainNotImportableError",
    "RemoteTraceback",
    "TaskTimeoutError",
    "WorkerDiedError",
]
