"""asyncio face of childkit: await requests without a thread per waiting call.

``await aio.send_request(proxy, code, data)`` sends like :meth:`RemoteProxy.send_request`
but lets the running event loop read the reply (the connection's call socket is watched
with ``loop.add_reader`` while awaited calls are pending). Cancelling the await (or a
timeout) forgets the call: its late reply is dropped and the connection stays usable.
Works on the default loop and on uvloop.
"""

from __future__ import annotations

from collections.abc import Sequence

from childkit.ipc._errors import DeadRemoteObjectError, ParamError
from childkit.ipc._option import SYNC_OPTION, MessageOption
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._proxy import RemoteProxy
from childkit.ipc._stub import check_request_code

__all__ = ["send_request", "send_requests"]


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
