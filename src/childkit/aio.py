"""asyncio face of childkit: await requests without a thread per waiting call.

``await aio.AsyncProxy(proxy).send_request(code, data)`` (or the functional
``await aio.send_request(proxy, code, data)``) sends like
:meth:`RemoteProxy.send_request` but lets the running event loop read the reply (the
connection's call socket is watched with ``loop.add_reader`` while awaited calls are
pending). Cancelling the await (or a timeout) forgets the call: its late reply is dropped
and the connection stays usable. Works on the default loop and on uvloop.

``await aio.connect(entry)`` and ``await aio.create_native_child_process(entry)`` start
IPC-mode children without blocking the loop: the start runs on a start thread of its own
(as :func:`childkit.create_native_child_process` does) and wakes the awaiting task.
Cancelling either await stops the child it was starting (killed and reaped), whenever the
cancel lands: before the child forked, while it starts, or after it started but before
the task resumed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from childkit.common import ChildkitError, ErrCode
from childkit.ipc import (
    Connection,
    MessageOption,
    MessageParcel,
    ParamError,
    RemoteProxy,
)
from childkit.ipc._proxy import request_pairs
from childkit.process import START_TIMEOUT, Child, ChildConnection, ChildProcessOptions, IPCStart

if TYPE_CHECKING:
    from childkit.pool import ChildProcessPool

__all__ = [
    "AsyncChildConnection",
    "AsyncProxy",
    "connect",
    "create_native_child_process",
    "pool_request",
    "run_in_executor",
    "send_request",
    "send_requests",
]


async def send_request(
    proxy: RemoteProxy, code: int, data: MessageParcel, option: MessageOption | None = None
) -> MessageParcel:
    """Await the reply of request ``code`` (one-way requests return at once).

    Raises what :meth:`RemoteProxy.send_request` raises; the timeout of ``option`` gives
    :class:`~childkit.ipc.IPCTimeoutError`.
    """
    if not isinstance(proxy, RemoteProxy):
        raise ParamError(f"proxy must be a RemoteProxy, not {type(proxy).__name__}")
    return await proxy.send_request_async(code, data, option)


async def send_requests(
    proxy: RemoteProxy,
    requests: Sequence[tuple[int, MessageParcel]],
    option: MessageOption | None = None,
) -> list[MessageParcel]:
    """Await several requests sent concurrently; replies in request order.

    Raises the first failure; the other requests are cancelled (their replies dropped).
    :class:`ParamError` if ``requests`` is not an iterable of ``(code, parcel)`` pairs
    (nothing is sent then).
    """
    tasks = [asyncio.ensure_future(send_request(proxy, code, data, option))
             for code, data in request_pairs(requests)]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


class AsyncProxy:
    """The awaitable face of a :class:`~childkit.ipc.RemoteProxy`:
    ``await AsyncProxy(proxy).send_request(code, data)``.

    ``send_request`` and ``send_requests`` are coroutines (see the module functions of
    the same names); every other attribute is the wrapped proxy's own, unchanged
    (``add_death_recipient``, ``is_object_dead``, ...). ``proxy`` is the wrapped proxy.

    Raises:
        ParamError: if ``proxy`` is not a :class:`~childkit.ipc.RemoteProxy`.
    """

    __slots__ = ("proxy",)

    def __init__(self, proxy: RemoteProxy) -> None:
        if not isinstance(proxy, RemoteProxy):
            raise ParamError(f"proxy must be a RemoteProxy, not {type(proxy).__name__}")
        self.proxy = proxy

    async def send_request(self, code: int, data: MessageParcel,
                           option: MessageOption | None = None) -> MessageParcel:
        """Await the reply; see :func:`childkit.aio.send_request`."""
        return await send_request(self.proxy, code, data, option)

    async def send_requests(self, requests: Sequence[tuple[int, MessageParcel]],
                            option: MessageOption | None = None) -> list[MessageParcel]:
        """Await several requests; see :func:`childkit.aio.send_requests`."""
        return await send_requests(self.proxy, requests, option)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proxy, name)

    def __repr__(self) -> str:
        return f"<AsyncProxy {self.proxy!r}>"


class AsyncChildConnection(ChildConnection):
    """What :func:`connect` returns: a :class:`~childkit.ChildConnection` whose
    ``aproxy`` is its root proxy as an :class:`AsyncProxy`."""

    def __init__(self, child: Child, conn: Connection, proxy: RemoteProxy) -> None:
        super().__init__(child, conn, proxy)
        self.aproxy: AsyncProxy = AsyncProxy(proxy)


# ---------------------------------------------------------------------------- starting
class _Start:
    """One child start handed from its start thread to the task awaiting it.

    Exactly one side ends up owning the started child: the task if it takes it, else
    whichever side learns that the task gave up (cancelled, or its loop closed), which
    stops it. ``lock`` orders the two sides' looks at the box.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result: AsyncChildConnection | None = None
        self.error: BaseException | None = None
        self.abandoned = False

    def take(self) -> AsyncChildConnection | None:
        with self.lock:
            result, self.result = self.result, None
            return result


def _stop_unwanted(child: AsyncChildConnection) -> None:
    """Kill and reap a child nobody awaits any more, on a thread (reaping blocks)."""
    threading.Thread(target=child.close, args=(0.0,), name="childkit-aio-stop",
                     daemon=True).start()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _start(entry: str, options: ChildProcessOptions | None,
                 timeout: float) -> AsyncChildConnection:
    loop = asyncio.get_running_loop()
    starting = IPCStart(entry, options, timeout)  # takes a slot
    box = _Start()
    woken: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        result: AsyncChildConnection | None = None
        error: BaseException | None = None
        try:
            child, conn, proxy = starting.run()
            result = AsyncChildConnection(child, conn, proxy)
        except BaseException as exc:
            error = exc
        with box.lock:
            box.result, box.error = result, error
            abandoned = box.abandoned
        if abandoned:
            if box.take() is not None and result is not None:
                result.close(0.0)
            return
        try:
            loop.call_soon_threadsafe(_wake, woken)
        except RuntimeError:  # the loop is closed: its task will never take the child
            orphan = box.take()
            if orphan is not None:
                orphan.close(0.0)

    try:
        threading.Thread(target=run, name="childkit-start", daemon=True).start()
    except RuntimeError as exc:  # "can't start new thread": give the slot back
        starting.cancel()
        raise ChildkitError(ErrCode.NCP_ERR_INTERNAL, f"cannot start a thread: {exc}") from None
    try:
        await woken
    except BaseException:  # cancelled (or the loop is tearing the task down)
        with box.lock:
            box.abandoned = True
        orphan = box.take()
        if orphan is not None:
            _stop_unwanted(orphan)
        raise
    result = box.take()
    if result is None:
        assert box.error is not None
        raise box.error
    return result


async def connect(entry: str, options: ChildProcessOptions | None = None,
                  timeout: float = START_TIMEOUT) -> AsyncChildConnection:
    """Await an IPC-mode child with a usable proxy (see :func:`childkit.connect`); its
    ``aproxy`` is the root proxy's awaitable face.

    Raises the :class:`~childkit.ChildkitError` that :func:`childkit.connect` raises.
    Cancelling the await stops the child (killed and reaped) whenever the cancel lands.
    """
    return await _start(entry, options, timeout)


async def create_native_child_process(entry: str, options: ChildProcessOptions | None = None,
                                      timeout: float = START_TIMEOUT) -> RemoteProxy:
    """Await what :func:`childkit.create_native_child_process` gives its callback: the
    child's proxy, or its error code raised as :class:`~childkit.ChildkitError`
    (``NCP_ERR_INTERNAL`` for an unexpected failure). The child lives until it returns
    from ``main_proc`` (the proxy does not own it). Cancelling the await stops the child
    (killed and reaped) whenever the cancel lands."""
    try:
        child = await _start(entry, options, timeout)
    except (ChildkitError, asyncio.CancelledError):
        raise
    except Exception as exc:
        raise ChildkitError(ErrCode.NCP_ERR_INTERNAL,
                            f"starting {entry!r} failed: {exc!r}") from exc
    return child.proxy


# ---------------------------------------------------------------------------- pools
async def pool_request(pool: ChildProcessPool, code: int, data: MessageParcel,
                       option: MessageOption | None = None) -> MessageParcel:
    """Await one request on the pool's least loaded member (see
    :meth:`ChildProcessPool.send_request`). The loop reads the reply, and while every
    member is being replaced the task waits on the loop for one to come back (no
    thread). Cancelling the await at any point returns the member it held.

    Raises:
        DeadRemoteObjectError: the pool is closed, or the member died with the request.
        ChildkitError: no member runs and none can be started.
    """
    return await pool.send_request_async(code, data, option)


async def run_in_executor(executor: Executor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Await ``executor.submit(fn, *args, **kwargs)`` (a :class:`ChildProcessExecutor` or
    any Executor) without a waiting thread: the future's completion is chained to the
    loop. Cancelling the await cancels the task if it has not started; a task already
    running finishes in its worker and its result is dropped."""
    return await asyncio.wrap_future(executor.submit(fn, *args, **kwargs))
