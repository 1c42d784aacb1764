"""ChildProcessPool: ``size`` warm IPC-mode children of one entry, proxies handed out
least loaded first.

Every member is a :class:`~childkit.ChildConnection`. :meth:`ChildProcessPool.acquire`
hands out the proxy of the member with the fewest requests in flight (counted from
hand-out to return). A member that dies is dropped (its death recipient fires) and, with
``restart=True``, replaced on a background thread; a request in flight on it fails in its
caller's thread with :class:`~childkit.ipc.DeadRemoteObjectError`, as the IPC kit
promises. With ``max_requests_per_child``, a member that has been handed out that many
times takes no new requests, is replaced, and is stopped once its last request returns.
The pool never starts more children than the process may have (``MAX_CHILDREN``, counting
the application's other children): at the limit, a replacement refused because a retiring
member still holds its slot is started again as soon as that member is reaped.
:meth:`ChildProcessPool.close` stops every member (retiring ones included) and waits until
each is reaped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from childkit.common import ChildkitError, ErrCode
from childkit.ipc import DeadRemoteObjectError, MessageOption, MessageParcel, RemoteProxy
from childkit.pool._executor import ExecutorParamError
from childkit.process import (
    MAX_CHILDREN,
    START_TIMEOUT,
    ChildConnection,
    ChildProcessOptions,
    connect,
    manager,
)


class _Member:
    __slots__ = ("closing", "conn", "inflight", "served")

    def __init__(self, conn: ChildConnection) -> None:
        self.conn = conn
        self.inflight = 0
        self.served = 0
        self.closing = False  # retired or closed by the pool: its death is expected


class ChildProcessPool:
    """Keeps ``size`` children of ``entry`` running; see the module docstring.

    Raises (from the constructor):
        ExecutorParamError: ``NCP_ERR_INVALID_PARAM`` for a bad size,
            ``max_requests_per_child`` or ``restart``.
        ChildkitError: ``NCP_ERR_MAX_CHILD_PROCESSES_REACHED`` if ``size`` children and
            the process's other live children exceed ``MAX_CHILDREN``; any error of
            :func:`childkit.connect` (the children already started are stopped).
    """

    def __init__(self, entry: str, size: int, options: ChildProcessOptions | None = None,
                 max_requests_per_child: int | None = None, restart: bool = True, *,
                 start_timeout: float = START_TIMEOUT) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_CHILDREN:
            raise ExecutorParamError(f"size must be an int in 1..{MAX_CHILDREN}, not {size!r}")
        if max_requests_per_child is not None and (
                isinstance(max_requests_per_child, bool)
                or not isinstance(max_requests_per_child, int) or max_requests_per_child < 1):
            raise ExecutorParamError("max_requests_per_child must be an int >= 1 or None")
        if not isinstance(restart, bool):
            raise ExecutorParamError(f"restart must be a bool, not {restart!r}")
        live = manager().live_count()
        if live + size > MAX_CHILDREN:
            raise ChildkitError(
                ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED,
                f"a pool of {size} children with {live} other children live would exceed "
                f"the limit of {MAX_CHILDREN}")
        self._entry = entry
        self._options = options
        self._max_requests = max_requests_per_child
        self._restart = restart
        self._start_timeout = start_timeout
        self._cond = threading.Condition()
        self._members: list[_Member] = []
        # Recycled members still answering their last requests: they hold child slots.
        self._retiring: set[_Member] = set()
        # Replacements refused at the 50-children limit while a retiring member held a
        # slot: started when one is reaped (each still counts in ``_starting``).
        self._deferred = 0
        self._reaped = 0  # retiring members reaped so far (a refused start retries if it moved)
        self._starting = 0
        # Called (under the pool's lock) whenever members come or go: asyncio waiters.
        self._wakers: set[Callable[[], None]] = set()
        self._closed = False
        self._helpers: list[threading.Thread] = []
        self.last_start_error: ChildkitError | None = None
        try:
            for _ in range(size):
                member = self._start_member()
                with self._cond:
                    self._members.append(member)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ members
    def _start_member(self) -> _Member:
        conn = connect(self._entry, self._options, self._start_timeout)
        member = _Member(conn)
        try:
            conn.proxy.add_death_recipient(lambda: self._on_death(member))
        except DeadRemoteObjectError:
            pass  # it died at once: the next hand-out fails and replaces it
        return member

    def _notify_locked(self) -> None:
        """Wake every waiter (threads and asyncio tasks): members came, went or failed."""
        self._cond.notify_all()
        for wake in list(self._wakers):
            wake()

    async def _checkout_on_loop(self) -> _Member:
        """A member, waiting on the running event loop (no thread) while every member is
        being replaced: the pool wakes the loop whenever its members change. Cancelling
        the wait leaves nothing checked out."""
        import asyncio  # already imported: an event loop is running this coroutine

        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:  # called under the pool's lock, from any thread
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more

        with self._cond:
            self._wakers.add(wake)
        try:
            while True:
                changed.clear()
                try:
                    return self._checkout(0)
                except ChildkitError as exc:
                    if exc.code != ErrCode.NCP_ERR_TIMEOUT:
                        raise
                await changed.wait()
        finally:
            with self._cond:
                self._wakers.discard(wake)

    def _on_death(self, member: _Member) -> None:
        with self._cond:
            expected = member.closing
            member.closing = True
            if member in self._members:
                self._members.remove(member)
            replace = not expected and self._restart and not self._closed
            if replace:
                self._starting += 1
            self._notify_locked()
        member.conn.close(grace=0.0)  # reap it (it is dead already)
        if replace:
            self._replace()

    def _replace(self) -> None:
        """Start one member on a helper thread (``self._starting`` already counts it)."""

        def run() -> None:
            while True:
                with self._cond:
                    reaped = self._reaped
                try:
                    member = self._start_member()
                except ChildkitError as exc:
                    with self._cond:
                        if (exc.code == ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED
                                and not self._closed):
                            if self._retiring:
                                # Our own retiring member holds the slot: start again
                                # when it is reaped (see _retire).
                                self._deferred += 1
                                return
                            if self._reaped != reaped:
                                continue  # one was reaped meanwhile: its slot is free
                        self._starting -= 1
                        self.last_start_error = exc
                        self._notify_locked()
                    return
                break
            with self._cond:
                self._starting -= 1
                if not self._closed:
                    self._members.append(member)
                    self._notify_locked()
                    return
                member.closing = True
            member.conn.close()

        thread = threading.Thread(target=run, name="childkit-pool-start", daemon=True)
        with self._cond:
            self._helpers = [t for t in self._helpers if t.is_alive()]
            self._helpers.append(thread)
        thread.start()

    def _retire(self, member: _Member) -> None:
        def run() -> None:
            member.conn.close()  # returns once it is reaped: its slot is free
            with self._cond:
                self._retiring.discard(member)
                self._reaped += 1
                deferred, self._deferred = self._deferred, 0
                if self._closed:
                    self._starting -= deferred
                    deferred = 0
                self._notify_locked()
            for _ in range(deferred):
                self._replace()

        thread = threading.Thread(target=run, name="childkit-pool-retire", daemon=True)
        with self._cond:
            self._helpers.append(thread)
        thread.start()

    # ------------------------------------------------------------------ hand-out
    def _checkout(self, timeout: float | None) -> _Member:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise DeadRemoteObjectError("the pool is closed")
                ready = [m for m in self._members if not m.closing]
                if ready:
                    break
                if self._starting == 0:
                    error = self.last_start_error
                    raise ChildkitError(
                        error.code if error else ErrCode.NCP_ERR_INTERNAL,
                        "no pool member is running and none is starting"
                        + (f": {error.message}" if error else ""))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ChildkitError(ErrCode.NCP_ERR_TIMEOUT,
                                        "no pool member became available in time")
                self._cond.wait(left)
            member = min(ready, key=lambda m: m.inflight)
            member.inflight += 1
            member.served += 1
            if self._max_requests is not None and member.served >= self._max_requests:
                member.closing = True  # no new hand-outs; stopped after its last return
                self._members.remove(member)
                self._retiring.add(member)
                self._starting += 1
                recycle = True
            else:
                recycle = False
        if recycle:
            self._replace()
        return member

    def _checkin(self, member: _Member) -> None:
        with self._cond:
            member.inflight -= 1
            done = member.inflight == 0 and member in self._retiring
        if done:
            self._retire(member)

    @contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[RemoteProxy]:
        """``with pool.acquire() as proxy:`` the least loaded member's proxy, counted as
        in flight until the block ends. Waits up to ``timeout`` seconds (``None``: for
        ever) while every member is being replaced.

        Raises:
            DeadRemoteObjectError: if the pool is closed.
            ChildkitError: ``NCP_ERR_TIMEOUT`` if no member became available in time;
                the start error if no member runs and none can be started.
        """
        member = self._checkout(timeout)
        try:
            yield member.conn.proxy
        finally:
            self._checkin(member)
            if member.conn.proxy.is_object_dead():
                # Replace it now, not when its death recipient's thread gets to run: the
                # caller who just saw it die must not be handed the same member again.
                self._on_death(member)

    def send_request(self, code: int, data: MessageParcel,
                     option: MessageOption | None = None) -> MessageParcel:
        """Send one request to the least loaded member; see
        :meth:`RemoteProxy.send_request`. If that member dies meanwhile, this raises
        :class:`~childkit.ipc.DeadRemoteObjectError` and the member is replaced."""
        with self.acquire() as proxy:
            return proxy.send_request(code, data, option)

    async def send_request_async(self, code: int, data: MessageParcel,
                                 option: MessageOption | None = None) -> MessageParcel:
        """Await one request on the least loaded member (what
        :func:`childkit.aio.pool_request` does): the loop reads the reply, and while every
        member is being replaced the task waits on the loop for one to come back (no
        thread). Cancelling the await at any point returns the member it held.

        Raises:
            DeadRemoteObjectError: the pool is closed, or the member died with the request.
            ChildkitError: no member runs and none can be started.
        """
        member = await self._checkout_on_loop()
        try:
            return await member.conn.proxy.send_request_async(code, data, option)
        finally:
            self._checkin(member)

    @property
    def pids(self) -> list[int]:
        """Pids of the members taking requests now."""
        with self._cond:
            return [m.conn.pid for m in self._members if not m.closing]

    def wait_ready(self, count: int | None = None, timeout: float = START_TIMEOUT) -> bool:
        """Wait until ``count`` (default: every replacement started) members run."""
        deadline = time.monotonic() + timeout
        with self._cond:
            def ready() -> bool:
                live = sum(1 for m in self._members if not m.closing)
                return live >= count if count is not None else self._starting == 0
            return self._cond.wait_for(ready, max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Stop every member (in flight requests fail with ``DeadRemoteObjectError``) and
        wait until each is reaped and every helper thread has ended. Idempotent."""
        with self._cond:
            self._closed = True
            members = [*self._members, *self._retiring]
            self._members.clear()
            for m in members:
                m.closing = True
            self._starting -= self._deferred  # never to be started now
            self._deferred = 0
            self._notify_locked()
        for m in members:
            m.conn.close()
        while True:
            with self._cond:
                helpers = [t for t in self._helpers if t.is_alive()]
                self._helpers = helpers
            if not helpers:
                break
            for t in helpers:
                t.join()

    def __enter__(self) -> ChildProcessPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.pids)} members"
        return f"<ChildProcessPool {self._entry!r} {state}>"
