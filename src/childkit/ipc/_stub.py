"""RemoteStub: the object that serves requests (IPCKit's OHIPCRemoteStub).

May import: ``_errors``, ``_option``, ``_parcel``, ``_skeleton``.
"""

from __future__ import annotations

import logging
import os

from childkit.ipc._errors import IPCError, IPCErrorCode, ParamError, is_transportable_status
from childkit.ipc._option import SYNC_OPTION, MessageOption
from childkit.ipc._parcel import MessageParcel, RemoteObject
from childkit.ipc._skeleton import _context

_log = logging.getLogger("childkit.ipc")

#: Request codes childkit reserves (outside the user range 0x1..0xFFFFFF, like Binder's).
INTERFACE_TRANSACTION = 0x5F4E5446  # '_NTF': returns the stub's descriptor
PING_TRANSACTION = 0x5F504E47  # '_PNG': returns nothing


class RemoteStub(RemoteObject):
    """Subclass and implement :meth:`on_remote_request` to serve requests.

    A stub lives in the process that created it. Sent in a parcel, it reaches the other
    side as a :class:`RemoteProxy`; it stays alive while any remote proxy refers to it.
    ``descriptor`` names its interface; callers write it with
    ``data.write_interface_token()`` and the stub checks it with ``read_interface_token()``.
    """

    def __init__(self, descriptor: str = "") -> None:
        if not isinstance(descriptor, str):
            raise ParamError(f"descriptor must be a str, not {type(descriptor).__name__}")
        self._descriptor = descriptor

    @property
    def descriptor(self) -> str:
        return self._descriptor

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        """Serve request ``code``: read ``data``, write ``reply``, return 0 on success.

        Runs on an IPC work thread (or the caller's thread for a local call). A non-zero
        return value reaches the caller as ``IPCError.code`` if it is one of IPCKit's codes
        (1901000..1901007), ``CK_IPC_TIMEOUT`` or in the user range 1909000..1909999, else
        as ``OH_IPC_INVALID_USER_ERROR_CODE`` (``is_transportable_status``); raising
        :class:`IPCError` does the same with its message; any other exception reaches the
        caller as ``OH_IPC_INNER_ERROR`` with the exception's type and text.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement on_remote_request")

    def send_request(
        self, code: int, data: MessageParcel, option: MessageOption | None = None
    ) -> MessageParcel:
        """Call this stub directly, in this thread (``Skeleton.is_local_calling()`` is True).

        Raises :class:`IPCError` with the stub's status if it is not 0.
        """
        check_request_code(code)
        if not isinstance(data, MessageParcel):
            raise ParamError(f"data must be a MessageParcel, not {type(data).__name__}")
        option = option or SYNC_OPTION
        copy = data._copy_for_reading()
        try:
            status, detail, reply = invoke_stub(self, code, copy, option, os.getpid(),
                                                os.getuid(), local=True)
        finally:
            copy.close()
        if status:
            reply.close()
            raise IPCError(status, detail or f"request {code} failed")
        reply.rewind_read_position(0)
        if option.is_async:
            reply.close()
            return MessageParcel()
        return reply

    def get_descriptor(self) -> str:
        return self._descriptor

    def is_object_dead(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._descriptor!r}>"


def check_request_code(code: int) -> None:
    """Raise ``OH_IPC_CODE_OUT_OF_RANGE`` unless ``code`` is in 0x1..0xFFFFFF."""
    if isinstance(code, bool) or not isinstance(code, int):
        raise ParamError(f"request code must be an int, not {type(code).__name__}")
    if not 0x1 <= code <= 0xFFFFFF:
        raise IPCError(
            IPCErrorCode.OH_IPC_CODE_OUT_OF_RANGE,
            f"request code {code:#x} is outside 0x1..0xffffff",
        )


def invoke_stub(
    stub: RemoteStub, code: int, data: MessageParcel, option: MessageOption,
    pid: int, uid: int, *, local: bool,
) -> tuple[int, str, MessageParcel]:  # fmt: skip
    """Run one request on ``stub``; return (status, error detail, reply parcel).

    Never raises for the stub's own failures: they become a status and a detail string.
    A ``BaseException`` that is not an ``Exception`` (``SystemExit``...) propagates for a
    local call; for a remote one it raises :class:`StubEscaped`, so that the server
    answers the caller before letting it go on.
    This is the request hot path: the calling identity is set by hand, not by a context
    manager, because that costs more than the rest of the dispatch.
    """
    reply = MessageParcel()
    detail = ""
    ctx = _context
    saved = ctx.identity
    ctx.identity = (pid, uid, local)
    try:
        if code > 0xFFFFFF and not local:
            result: object = _internal_request(stub, code, reply)
        else:
            result = stub.on_remote_request(code, data, reply, option)
        if (result == 0 and result.__class__ is int) or result is None:
            return 0, detail, reply  # the common case (the finally restores the identity)
        if isinstance(result, bool) or not isinstance(result, int):
            status: int = IPCErrorCode.OH_IPC_INVALID_USER_ERROR_CODE
            detail = f"on_remote_request returned {type(result).__name__}, not an int"
        elif not is_transportable_status(result):
            status = IPCErrorCode.OH_IPC_INVALID_USER_ERROR_CODE
            detail = f"on_remote_request returned {result}, outside the transportable codes"
        else:
            status = result
    except IPCError as exc:
        status = exc.code if is_transportable_status(exc.code) and exc.code else (
            IPCErrorCode.OH_IPC_INVALID_USER_ERROR_CODE)
        detail = exc.message
    except Exception as exc:
        _log.exception("%r failed on request %d", stub, code)
        status = IPCErrorCode.OH_IPC_INNER_ERROR
        detail = f"{type(exc).__name__} in {type(stub).__name__}.on_remote_request: {exc}"
    except BaseException as exc:
        if local:
            raise  # the caller's own thread: it goes on as it would without IPC
        # SystemExit, KeyboardInterrupt and the like: the remote caller still gets an
        # answer (the server sends it, then lets the exception go on).
        _log.warning("%r: %s raised on request %d; answering the caller, then letting it "
                     "propagate", stub, type(exc).__name__, code)
        reply.close()
        raise StubEscaped(
            IPCErrorCode.OH_IPC_INNER_ERROR,
            f"{type(exc).__name__} in {type(stub).__name__}.on_remote_request: {exc}",
            exc) from exc
    finally:
        ctx.identity = saved
    return int(status), detail, reply


class StubEscaped(Exception):
    """A remote request's stub raised an exception that is not an ``Exception``
    (``SystemExit``, ``KeyboardInterrupt``...). The server answers the request with
    ``status`` and ``detail``, then raises ``exc`` again."""

    def __init__(self, status: int, detail: str, exc: BaseException) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.detail = detail
        self.exc = exc


def _internal_request(stub: RemoteStub, code: int, reply: MessageParcel) -> int:
    if code == INTERFACE_TRANSACTION:
        reply.write_string(stub.get_descriptor())
        return 0
    if code == PING_TRANSACTION:
        return 0
    return int(IPCErrorCode.OH_IPC_CODE_OUT_OF_RANGE)
