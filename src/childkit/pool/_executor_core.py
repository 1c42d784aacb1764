"""The executor's machinery behind :class:`~childkit.ChildProcessExecutor`: work items,
the dispatcher threads that each own one worker child (``ExecutorCore``), a worker's journal,
and how a reply becomes a result. One task in flight per worker, so a crash or a
timeout is that task's alone (see :mod:`childkit.pool._executor`)."""

from __future__ import annotations

import logging
import pickle
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Literal, ParamSpec, TypeVar

from childkit.common import ChildkitError
from childkit.ipc import (
    Ashmem,
    DeadRemoteObjectError,
    IPCError,
    IPCTimeoutError,
    MessageOption,
    MessageParcel,
    RequestMode,
)
from childkit.pool import _executor_worker as ew
from childkit.pool import _isolated_hint
from childkit.pool._executor_errors import (
    BrokenChildExecutor,
    ChildExecutorError,
    ExecutorParamError,
    RemoteTraceback,
    TaskTimeoutError,
    WorkerDiedError,
    rebuild_exception,
)
from childkit.pool._main_script import (
    MainScript,
    main_script,
)
from childkit.process import (
    ChildConnection,
    ChildProcessOptions,
    IsolationMode,
    connect,
    start_threads,
)

_log = logging.getLogger("childkit")

P = ParamSpec("P")
T = TypeVar("T")
ResultCodec = Literal["safe", "pickle"]

WORKER_ENTRY = "childkit.pool._executor_worker"
_STOP_OPTION = MessageOption(RequestMode.ASYNC)


def _read_reply(reply: MessageParcel, codec: int) -> tuple[bool, Any]:
    """(True, result) or (False, exception) from a worker's reply."""
    status = reply.read_int8()
    if status == ew.OK:
        blob = ew.read_blob(reply)
        if codec == ew.CODEC_PICKLE:
            return True, pickle.loads(blob)
        return True, ew.safe_loads(blob)
    if status == ew.RAISED:
        return _outcome(status, ew.read_blob(reply), codec)
    raise ew.CodecError(f"unknown reply status {status}")


# ---------------------------------------------------------------------------- work items


class WorkItem:
    __slots__ = ("code", "future", "needs_main", "payload", "started", "timeout")

    def __init__(self, future: Future[Any], code: int, payload: bytes,
                 timeout: float | None, needs_main: bool = False) -> None:
        self.future = future
        self.code = code
        self.payload = payload
        self.timeout = timeout
        self.needs_main = needs_main  # it refers to __main__: the worker runs the script
        self.started = False  # set running already (a batch item queued again)


#: Most tasks one batch request carries.
BATCH_MAX = 256

# Executors whose dispatcher threads run, for the interpreter-exit hook below.
_live_lock = threading.Lock()
_live_cores: set[ExecutorCore] = set()
_interpreter_exiting = False


def _python_exit() -> None:
    """At interpreter exit, before the atexit callbacks (so while the launcher still
    runs): stop every executor and wait for the tasks already submitted to finish, as
    ``ProcessPoolExecutor`` does; ``submit`` fails from now on."""
    global _interpreter_exiting
    with _live_lock:
        _interpreter_exiting = True
        cores = list(_live_cores)
    for core in cores:
        for thread in core.stop(False):
            thread.join()


# The hook concurrent.futures uses: it runs before the interpreter stops daemon threads.
threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


class _Worker:
    """One child of a slot, with its journal (see _executor_worker)."""

    __slots__ = ("conn", "has_main", "region", "view")

    def __init__(self, conn: ChildConnection) -> None:
        self.conn = conn
        self.has_main = False  # it has run the parent's main script (see _main_script)
        self.region = Ashmem.create("childkit-executor-journal", ew.JOURNAL_SIZE)
        try:
            self.region.map_read_write()
            self.view: memoryview | None = self.region.buffer()
            with MessageParcel() as data:
                data.write_ashmem(self.region)
                conn.proxy.send_request(ew.JOURNAL, data).close()
        except BaseException:
            self.close_journal()
            raise

    @property
    def pid(self) -> int:
        return self.conn.pid

    def close_journal(self) -> None:
        if self.view is not None:
            self.view.release()
            self.view = None
        self.region.close()

    def entries(self, codec: int) -> tuple[int, int, list[tuple[bool, Any]]]:
        """(running, committed, outcomes) from the journal."""
        assert self.view is not None
        view = self.view
        running, committed, _end = ew.JOURNAL_HEADER.unpack_from(view, 0)
        offset = ew.JOURNAL_HEADER.size
        out: list[tuple[bool, Any]] = []
        for _ in range(committed):
            status, length = ew.JOURNAL_ENTRY.unpack_from(view, offset)
            offset += ew.JOURNAL_ENTRY.size
            out.append(_outcome(status, bytes(view[offset:offset + length]), codec))
            offset += length
        return running, committed, out


def _outcome(status: int, blob: bytes, codec: int) -> tuple[bool, Any]:
    if status == ew.OK:
        return True, pickle.loads(blob) if codec == ew.CODEC_PICKLE else ew.safe_loads(blob)
    if status == ew.RAISED:
        parts = ew.safe_loads(blob)
        if not (isinstance(parts, tuple) and len(parts) == 5
                and all(isinstance(p, str) for p in parts[:4])
                and (parts[4] is None or isinstance(parts[4], tuple))):
            raise ew.CodecError("malformed exception record")
        module, name, message, tb, args = parts
        return False, rebuild_exception(module, name, message, tb, args)
    raise ew.CodecError(f"unknown outcome status {status}")


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not timeout > 0 or timeout == float("inf"):
        raise ExecutorParamError(f"timeout must be a positive number of seconds or None, "
                                 f"not {timeout!r}")
    return float(timeout)


class ExecutorCore:
    """The executor's state, shared with its dispatcher threads (which never hold the
    executor itself, so an executor nobody references can be collected and stopped)."""

    def __init__(self, max_workers: int, options: ChildProcessOptions, codec: int,
                 max_tasks_per_child: int | None, init_payload: bytes | None,
                 task_timeout: float | None, start_timeout: float,
                 init_needs_main: bool = False) -> None:
        self.max_workers = max_workers
        self.options = options
        self.codec = codec
        self.max_tasks_per_child = max_tasks_per_child
        self.init_payload = init_payload
        self.init_needs_main = init_needs_main
        self.main: MainScript | None = main_script()
        self.task_timeout = task_timeout
        self.start_timeout = start_timeout
        self.queue: queue.SimpleQueue[WorkItem | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.live_slots = 0
        # Slots about to take another task (each marks itself just before it settles a
        # task's future, so a submit made as soon as a result is seen finds it); a
        # submit takes one, or starts another slot when there is none.
        self.idle_slots = 0
        self.shutdown = False
        self.broken: str | None = None
        self.workers: dict[int, _Worker] = {}  # slot -> its current worker

    # ------------------------------------------------------------------ submitting
    def put(self, item: WorkItem) -> None:
        with self.lock:
            if self.broken is not None:
                raise BrokenChildExecutor(self.broken)
            if self.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            # Workers start on demand, as ProcessPoolExecutor's: one more only while no
            # slot is idle, up to max_workers.
            if self.idle_slots > 0:
                self.idle_slots -= 1
            elif len(self.threads) < self.max_workers:
                self._start_slots_locked(1)
            self.queue.put(item)

    def prestart(self) -> None:
        """Start every slot (and so every worker) now rather than on demand."""
        with self.lock:
            if self.shutdown or self.broken is not None:
                return
            missing = self.max_workers - len(self.threads)
            if missing > 0:
                self._start_slots_locked(missing)
                self.idle_slots += missing

    def _start_slots_locked(self, count: int) -> None:
        with _live_lock:
            if _interpreter_exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            _live_cores.add(self)
        start_threads()  # what the workers' starts need, while threads may still start
        first = len(self.threads)
        for slot in range(first, first + count):
            thread = threading.Thread(target=self._slot_main, args=(slot,), daemon=True,
                                      name=f"childkit-executor-{slot}")
            self.live_slots += 1  # before start: a slot that ends at once must not be last
            try:
                thread.start()
            except RuntimeError as exc:  # "can't create new thread" (e.g. at finalization)
                self.live_slots -= 1
                self.broken = f"a dispatcher thread could not start: {exc}"
                for _ in self.threads:  # the slots already started end
                    self.queue.put(None)
                if self.live_slots == 0:
                    with _live_lock:
                        _live_cores.discard(self)
                raise BrokenChildExecutor(self.broken) from exc
            self.threads.append(thread)

    def stop(self, cancel_futures: bool) -> list[threading.Thread]:
        with self.lock:
            self.shutdown = True
            threads = list(self.threads)
        if cancel_futures:
            self._drain(lambda item: item.future.cancel())
        for _ in threads:
            self.queue.put(None)
        return threads

    def _drain(self, action: Callable[[WorkItem], object]) -> None:
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                action(item)
            else:
                self.queue.put(None)  # keep the stop request for a slot
                return

    def _drain_orphans(self) -> None:
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and (item.started
                                     or item.future.set_running_or_notify_cancel()):
                item.future.set_exception(ChildExecutorError(
                    "the executor shut down before this task could run (its worker died "
                    "before the task reached it)"))

    def _break(self, reason: str) -> None:
        with self.lock:
            if self.broken is None:
                self.broken = reason

        def fail(item: WorkItem) -> None:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(BrokenChildExecutor(reason))

        self._drain(fail)

    # ------------------------------------------------------------------ a slot
    def _start_worker(self, slot: int) -> tuple[_Worker | None, str]:
        """A new, initialized worker for ``slot``, or (None, why) if none can start."""
        try:
            conn = connect(WORKER_ENTRY, self.options, self.start_timeout)
        except ChildkitError as exc:
            return None, f"a worker could not start: {exc}"
        except Exception as exc:  # e.g. no thread can start at interpreter finalization
            return None, f"a worker could not start: {exc!r}"
        try:
            worker = _Worker(conn)
        except (IPCError, OSError) as exc:
            conn.close(grace=0.0)
            return None, f"a worker could not start: {exc!r}"
        if self.init_payload is not None:
            ok, value = True, None
            if self.init_needs_main:
                ok, value = self._call(worker, ew.MAIN, self._main_payload())
                worker.has_main = ok
            if ok:
                ok, value = self._call(worker, ew.INIT, self.init_payload)
            if not ok:
                # Logged, as ProcessPoolExecutor's worker logs it: the futures only get
                # BrokenChildExecutor, which cannot carry every worker's traceback.
                cause = value.__cause__ if isinstance(value, BaseException) else None
                _log.critical("Exception in initializer (worker pid %d):\n%s", worker.pid,
                              cause.tb if isinstance(cause, RemoteTraceback) else repr(value))
                self._retire(slot, worker, kill=True)
                reason = f"the initializer failed in a worker: {value!r}"
                self._break(reason)
                return None, reason
        with self.lock:
            self.workers[slot] = worker
        return worker, ""

    def _main_payload(self) -> bytes:
        assert self.main is not None  # submit checked it (check_reachable)
        return ew.safe_dumps((self.main.kind, self.main.value))

    @staticmethod
    def _call(worker: _Worker, code: int, payload: bytes) -> tuple[bool, Any]:
        """Send ``worker`` an INIT or MAIN request: (True, None), or (False, the error)."""
        try:
            with MessageParcel() as data:
                ew.write_blob(data, payload)
                reply = worker.conn.proxy.send_request(code, data)
            with reply:
                return _read_reply(reply, ew.CODEC_SAFE)
        except (IPCError, ValueError) as exc:
            return False, exc

    def _load_main(self, worker: _Worker, batch: list[WorkItem]) -> tuple[bool, list[WorkItem]]:
        """Have ``worker`` run the main script for the items of ``batch`` that need it.
        Returns (worker still usable, the items left to run); on a failure the items
        that needed the script fail with its error."""
        ok, value = self._call(worker, ew.MAIN, self._main_payload())
        if ok:
            worker.has_main = True
            return True, batch
        if isinstance(value, IPCError):
            value = ChildExecutorError(
                f"the worker (pid {worker.pid}) died running the main script "
                f"{self.main.value if self.main else ''!r} as __mp_main__ (does code outside "
                f"its 'if __name__ == \"__main__\":' block end the process?): {value}")
        for item in batch:
            if item.needs_main:
                item.future.set_exception(self._explained(value))
        alive = not worker.conn.proxy.is_object_dead()
        return alive, [item for item in batch if not item.needs_main]

    def _retire(self, slot: int, worker: _Worker | None, *, kill: bool) -> None:
        with self.lock:
            self.workers.pop(slot, None)
        if worker is None:
            return
        conn = worker.conn
        if kill:
            conn.close(grace=0.0)
        else:
            try:
                with MessageParcel() as data:
                    conn.proxy.send_request(ew.STOP, data, _STOP_OPTION)
            except IPCError:
                pass  # already gone
            if conn.wait(2.0) is None:
                conn.close(grace=1.0)
            else:
                conn.close()
        worker.close_journal()

    def _take(self, first: WorkItem, backlog: list[WorkItem | None],
              room: int) -> list[WorkItem]:
        """``first`` and, if it can be batched, more queued tasks: a fair share of the
        backlog (so idle slots get work too), at most ``room``."""
        batch = [first]
        if first.timeout is not None or self.task_timeout is not None:
            return batch
        want = min(BATCH_MAX, room, self.queue.qsize() // self.max_workers + 1) - 1
        while want > 0:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None or item.timeout is not None:
                backlog.append(item)  # run it next, alone
                break
            batch.append(item)
            want -= 1
        return batch

    def _slot_main(self, slot: int) -> None:
        worker: _Worker | None = None
        done = 0
        failure = ""
        backlog: list[WorkItem | None] = []
        try:
            while True:
                if worker is None:  # start (or replace) before taking a task
                    worker, failure = self._start_worker(slot)
                    if worker is None:
                        return
                item = backlog.pop(0) if backlog else self.queue.get()
                if item is None:
                    return
                if worker.conn.proxy.is_object_dead():  # it died while idle: replace it
                    backlog.insert(0, item)
                    self._retire(slot, worker, kill=True)
                    worker, done = None, 0
                    continue
                room = (BATCH_MAX if self.max_tasks_per_child is None
                        else self.max_tasks_per_child - done)
                batch = [i for i in self._take(item, backlog, room)
                         if i.started or i.future.set_running_or_notify_cancel()]
                if not batch:
                    continue
                if self.broken is not None:
                    for i in batch:
                        i.future.set_exception(BrokenChildExecutor(self.broken))
                    continue
                if not worker.has_main and any(i.needs_main for i in batch):
                    usable, batch = self._load_main(worker, batch)
                    if not usable:
                        self._requeue(batch)
                        self._retire(slot, worker, kill=True)
                        worker, done = None, 0
                        continue
                    if not batch:
                        continue
                try:
                    if len(batch) == 1:
                        keep, ran = self._run(worker, batch[0]), 1
                    else:
                        keep, ran = self._run_batch(worker, batch)
                except BaseException as exc:  # a bug here must not leave futures hanging
                    _log.exception("childkit executor slot %d failed", slot)
                    for i in batch:
                        if not i.future.done():
                            i.future.set_exception(ChildExecutorError(
                                f"the executor failed running this task: {exc!r}"))
                    keep, ran = False, len(batch)
                done += ran
                if not keep or (self.max_tasks_per_child is not None
                                and done >= self.max_tasks_per_child):
                    self._retire(slot, worker, kill=not keep)
                    worker, done = None, 0
        finally:
            if worker is not None:
                self._retire(slot, worker, kill=False)
            for left in backlog:  # a stop request, or a task another slot must run
                if left is not None:
                    self.queue.put(left)
            with self.lock:
                self.live_slots -= 1
                last = self.live_slots == 0
                stopping = self.shutdown
            if last:
                with _live_lock:
                    _live_cores.discard(self)
            if last and failure and not stopping:  # no slot is left to run what is queued
                self._break(failure)
            elif last:  # tasks queued again behind the stop requests: nobody will run them
                self._drain_orphans()

    def _requeue(self, items: list[WorkItem]) -> None:
        for item in items:  # never started in the child: another worker runs them
            item.started = True
            self.queue.put(item)

    def _run_batch(self, worker: _Worker, batch: list[WorkItem]) -> tuple[bool, int]:
        """Run RUN / RUN_CHUNK items in one request, outcomes through the journal. Returns (worker
        still usable, tasks it ran)."""
        assert worker.view is not None
        # Cleared here, not only in the child: a worker that dies before it starts the
        # batch must not leave the previous batch's record to be read as this one's.
        ew.JOURNAL_HEADER.pack_into(worker.view, 0, 0, 0, ew.JOURNAL_HEADER.size)
        try:
            with MessageParcel() as data:
                data.write_int8(self.codec)
                ew.write_blob(data, pickle.dumps([(i.code, i.payload) for i in batch],
                                                 protocol=pickle.HIGHEST_PROTOCOL))
                reply = worker.conn.proxy.send_request(ew.RUN_BATCH, data)
        except DeadRemoteObjectError:
            info = worker.conn.wait(10.0)
            running, committed, outcomes = self._journal(worker, batch)
            self._settle(batch[:committed], outcomes)
            # The task running when the worker died (none if it died before the batch
            # reached it, e.g. killed while idle: then every task runs elsewhere).
            if running > committed:
                batch[committed].future.set_exception(WorkerDiedError(worker.pid, info))
                committed += 1
            self._requeue(batch[committed:])
            return False, committed
        except IPCError as exc:  # the batch did not fit a parcel (a stub failure)
            self._requeue(batch[1:])
            batch[0].future.set_exception(ChildExecutorError(f"the task could not be run: {exc}"))
            return True, 1
        try:
            with reply:
                done = reply.read_int32()
                status = reply.read_int8()
                spilled = None if status == -1 else _outcome(status, ew.read_blob(reply),
                                                             self.codec)
            _running, committed, outcomes = worker.entries(self.codec)
            if committed != done or done > len(batch) or (spilled and done >= len(batch)):
                raise ew.CodecError("the journal does not match the reply")
        except BaseException as exc:  # a malformed reply (or unpickling it raised
            # SystemExit: a result's __reduce__ runs here): do not trust this worker again
            error = ChildExecutorError(
                f"worker pid {worker.pid} sent results that cannot be decoded: {exc!r}")
            for i in batch:
                i.future.set_exception(error)
            return False, len(batch)
        if not spilled and done == len(batch):
            self._now_idle()
        self._settle(batch[:done], outcomes)
        if spilled is not None:
            self._settle([batch[done]], [spilled])
            done += 1
        self._requeue(batch[done:])
        return True, done

    def _journal(self, worker: _Worker,
                 batch: list[WorkItem]) -> tuple[int, int, list[tuple[bool, Any]]]:
        try:
            running, committed, outcomes = worker.entries(self.codec)
            if committed <= len(batch) and running <= len(batch):
                return running, committed, outcomes
        except BaseException:  # unpickling a result may raise anything, SystemExit too
            pass
        return len(batch), 0, []  # unreadable: blame every task, run none again

    def _settle(self, items: list[WorkItem], outcomes: list[tuple[bool, Any]]) -> None:
        for item, (ok, value) in zip(items, outcomes, strict=True):
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(self._explained(value))

    def _explained(self, exc: BaseException) -> BaseException:
        """A task's exception, with what to do when an ISOLATED worker could not import
        one of the user's modules (see _isolated_hint)."""
        if self.options.isolation_mode == IsolationMode.ISOLATED:
            return _isolated_hint.explain(exc)
        return exc

    def _run(self, worker: _Worker, item: WorkItem) -> bool:
        """Run one item on ``worker``; settle its future. False if the worker is lost."""
        future = item.future
        timeout = item.timeout if item.timeout is not None else self.task_timeout
        option = MessageOption(timeout=timeout) if timeout is not None else None
        assert worker.view is not None
        ew.JOURNAL_HEADER.pack_into(worker.view, 0, 0, 0, ew.JOURNAL_HEADER.size)
        try:
            with MessageParcel() as data:
                data.write_int8(self.codec)
                ew.write_blob(data, item.payload)
                reply = worker.conn.proxy.send_request(item.code, data, option)
        except IPCTimeoutError:
            worker.conn.close(grace=0.0)
            future.set_exception(TaskTimeoutError(timeout or 0.0, worker.pid))
            return False
        except DeadRemoteObjectError:
            info = worker.conn.wait(10.0)
            if ew.JOURNAL_HEADER.unpack_from(worker.view, 0)[0] == 0:
                self._requeue([item])  # it died before the task reached it: run it elsewhere
            else:
                future.set_exception(WorkerDiedError(worker.pid, info))
            return False
        except IPCError as exc:  # the task did not fit a parcel, or a stub failure
            future.set_exception(ChildExecutorError(f"the task could not be run: {exc}"))
            return True
        try:
            with reply:
                ok, value = _read_reply(reply, self.codec)
        except BaseException as exc:  # a malformed reply (or unpickling it raised
            # SystemExit: a result's __reduce__ runs here): do not trust this worker again
            future.set_exception(ChildExecutorError(
                f"worker pid {worker.pid} sent a result that cannot be decoded: {exc!r}"))
            return False
        self._now_idle()
        if ok:
            future.set_result(value)
        else:
            future.set_exception(self._explained(value))
        return True

    def _now_idle(self) -> None:
        """This slot settles its last task and takes the next: a submit may use it."""
        with self.lock:
            self.idle_slots = min(self.idle_slots + 1, len(self.threads))


