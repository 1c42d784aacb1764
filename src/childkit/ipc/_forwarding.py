"""The forwarding stub: a proxy to a third process, passed on to a peer.

A proxy of process C sent to peer A goes as a stub of this process that forwards each
request to C (docs/wire-format.md): Binder's driver would hand A a direct reference;
here each call takes one more hop, on one of this process's IPC work threads.

A forwarded sync call holds that work thread until C answers. A's own timeout does not
travel with the request, so a C that never answers, with an A that keeps calling, could
hold every work thread of this process and starve its other peers. The forwarded sync
calls in flight are therefore bounded process-wide by half the work-thread maximum
(:func:`forwarded_call_limit`); one over it is refused at once with
``OH_IPC_INNER_ERROR``, and the other half stays for direct requests.

May import: ``_errors``, ``_option``, ``_parcel``, ``_proxy``, ``_stub``, ``_threadpool``.
"""

from __future__ import annotations

import threading

from childkit.ipc import _threadpool
from childkit.ipc._errors import IPCError, IPCErrorCode
from childkit.ipc._option import MessageOption, RequestMode
from childkit.ipc._parcel import MessageParcel
from childkit.ipc._proxy import RemoteProxy
from childkit.ipc._stub import RemoteStub

_lock = threading.Lock()
_in_flight = 0  # forwarded sync calls waiting for their target, in this process


def forwarded_call_limit() -> int:
    """How many forwarded sync calls may wait at once: half the work-thread maximum
    (``Skeleton.set_max_work_thread_num``), at least one."""
    return max(1, _threadpool.default_pool().max_threads // 2)


def forwarded_calls_in_flight() -> int:
    """The forwarded sync calls waiting for their target now."""
    return _in_flight


class ForwardingStub(RemoteStub):
    """Stands in for a proxy to a third process, so that proxy can be passed on."""

    def __init__(self, target: RemoteProxy) -> None:
        super().__init__("childkit.forwarder")
        self._target = target

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        global _in_flight
        if option.mode is RequestMode.ASYNC:  # sent on, not waited for
            self._target.send_request(code, data, option).close()
            return 0
        limit = forwarded_call_limit()
        with _lock:
            if _in_flight >= limit:
                raise IPCError(IPCErrorCode.OH_IPC_INNER_ERROR,
                               f"{_in_flight} forwarded calls already wait for their "
                               f"targets (at most {limit}: half the IPC work threads)")
            _in_flight += 1
        try:
            answer = self._target.send_request(code, data, option)
        finally:
            with _lock:
                _in_flight -= 1
        with answer:
            reply.append(answer)
        return 0
