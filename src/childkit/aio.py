"""asyncio face of childkit: await requests without a thread per waiting call.

``await aio.send_request(proxy, code, data)`` sends like :meth:`RemoteProxy.send_request`
but lets the running event loop read the reply (the connection's call socket is watched
with ``loop.add_reader`` while awaited calls are pending). Cancelling the await (or a
timeout) forgets the call: its late reply is dropped and the connection stays usable.
Works on the default loop and on uvloop.

``await aio.connect(entry)`` and ``await aio.create_native_child_process(entry)`` start
IPC-mode children without blocking the loop: the start runs on childkit's own start
thread (as :func:`childkit.create_native_child_process` does) and resolves a future.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from childkit import _children
from childkit._errors import ChildkitError, ErrCode
from childkit._manager import START_TIMEOUT
from childkit._options import ChildProcessOptions
from childkit.ipc._errors import DeadRemoteObjectError, ParamError
from childkit.ipc._option import SYNC_OPTION, MessageOption
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._proxy import RemoteProxy
from childkit.ipc._stub import check_request_code

if TYPE_CHECKING:
    from childkit._pool import ChildProcessPool

__all__ = [
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
    check_request_code(code)
    if not isinstance(proxy, RemoteProxy):
        raise ParamError(f"proxy must be a RemoteProxy, not {type(proxy).__name__}")
    if not isinstance(data, MessageParcel):
        raise ParamError(f"data must be a MessageParcel, not {type(data).__name__}")
    option = option or SYNC_OPTION
    if not isinstance(option, MessageOption):
        raise ParamError(f"option must be a MessageOption, not {type(option).__name__}")
    if proxy._closed:
        raise DeadRemoteObjectError("the proxy is closed")
    return await proxy._conn.transact_async(proxy._handle, code, data, option)


async def send_requests(
    proxy: RemoteProxy,
    requests: Sequence[tuple[int, MessageParcel]],
    option: MessageOption | None = None,
) -> list[MessageParcel]:
    """Await several requests sent concurrently; replies in request order."""
    import asyncio

    tasks = [asyncio.ensure_future(send_request(proxy, code, data, option))
             for code, data in requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        if isinstance(result, _children.ChildConnection):
            threading.Thread(target=result.close, daemon=True).start()  # nobody wants it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def connect(entry: str, options: ChildProcessOptions | None = None,
                  timeout: float = START_TIMEOUT) -> _children.ChildConnection:
    """Await an IPC-mode child with a usable proxy (see :func:`childkit.connect`).

    Raises the :class:`~childkit.ChildkitError` that :func:`childkit.connect` raises.
    Cancelling the await stops the child if it started meanwhile.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_children.ChildConnection] = loop.create_future()
    opts, deadline = _children._prepare_ipc(entry, options, timeout)

    def start() -> None:
        try:
            child, conn, proxy = _children._start_ipc(entry, opts, deadline)
            result = _children.ChildConnection(child, conn, proxy)
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=start, name="childkit-start", daemon=True).start()
    return await future


async def create_native_child_process(entry: str, options: ChildProcessOptions | None = None,
                                      timeout: float = START_TIMEOUT) -> RemoteProxy:
    """Await :func:`childkit.create_native_child_process`'s callback: the child's proxy,
    or its error code raised as :class:`~childkit.ChildkitError`."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[RemoteProxy] = loop.create_future()

    def on_started(code: int, proxy: RemoteProxy | None) -> None:
        if code == ErrCode.NCP_NO_ERROR and proxy is not None:
            loop.call_soon_threadsafe(_settle, future, proxy, None)
        else:
            error = ChildkitError(ErrCode(code), f"starting {entry!r} failed")
            loop.call_soon_threadsafe(_settle, future, None, error)

    _children.create_native_child_process(entry, on_started, options, timeout=timeout)
    return await future


async def pool_request(pool: ChildProcessPool, code: int, data: MessageParcel,
                       option: MessageOption | None = None) -> MessageParcel:
    """Await one request on the pool's least loaded member (see
    :meth:`ChildProcessPool.send_request`). The loop reads the reply; only while every
    member is being replaced does a worker thread wait for one to come back."""
    try:
        member = pool._checkout(0)
    except ChildkitError as exc:
        if exc.code != ErrCode.NCP_ERR_TIMEOUT:
            raise
        member = await asyncio.to_thread(pool._checkout, None)
    try:
        return await send_request(member.conn.proxy, code, data, option)
    finally:
        pool._checkin(member)


async def run_in_executor(executor: Executor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Await ``executor.submit(fn, *args, **kwargs)`` (a :class:`ChildProcessExecutor` or
    any Executor) without a waiting thread: the future's completion is chained to the
    loop. Cancelling the await cancels the task if it has not started."""
    return await asyncio.wrap_future(executor.submit(fn, *args, **kwargs))
