"""IPC error codes (IPCKit's ``OH_IPC_ErrorCode``) and the exceptions that carry them.

Every failure of the IPC kit raises :class:`IPCError` or a subclass; ``.code`` is an
:class:`IPCErrorCode` (or, for a stub's own error, an int in the user range).

May import: nothing of childkit (the lowest module with ``_limits``).
"""

from __future__ import annotations

import enum
import errno


class IPCErrorCode(enum.IntEnum):
    """IPCKit's error codes, names and values as in ``ipc_error_code.h``.

    ``CK_IPC_TIMEOUT`` is childkit's own: IPCKit has no code for a sync call that timed
    out, so childkit uses a value inside IPCKit's reserved range that IPCKit leaves unused.
    """

    OH_IPC_SUCCESS = 0
    OH_IPC_CHECK_PARAM_ERROR = 1901000
    OH_IPC_ERROR_CODE_BASE = 1901000  # an alias: the enum prints CHECK_PARAM_ERROR
    OH_IPC_PARCEL_WRITE_ERROR = 1901001
    OH_IPC_PARCEL_READ_ERROR = 1901002
    OH_IPC_MEM_ALLOCATOR_ERROR = 1901003
    OH_IPC_CODE_OUT_OF_RANGE = 1901004
    OH_IPC_DEAD_REMOTE_OBJECT = 1901005
    OH_IPC_INVALID_USER_ERROR_CODE = 1901006
    OH_IPC_INNER_ERROR = 1901007
    CK_IPC_TIMEOUT = 1901900
    OH_IPC_ERROR_CODE_MAX = 1902000
    OH_IPC_USER_ERROR_CODE_MIN = 1909000
    OH_IPC_USER_ERROR_CODE_MAX = 1909999


#: Request codes a caller may use (IPCKit: ``[0x01, 0x00ffffff]``).
MIN_REQUEST_CODE = 0x01
MAX_REQUEST_CODE = 0x00FFFFFF


def is_transportable_status(status: int) -> bool:
    """Whether a stub's return value reaches the caller unchanged.

    As OpenHarmony's stub: success, IPCKit's own codes (``OH_IPC_CHECK_PARAM_ERROR`` up to
    ``OH_IPC_INNER_ERROR``) and the user range pass, and so does childkit's own
    ``CK_IPC_TIMEOUT`` (a forwarded call that timed out); anything else becomes
    ``OH_IPC_INVALID_USER_ERROR_CODE``. The caller applies the same rule to the status a
    reply brings, so a peer that skips it cannot hand other values on either.
    """
    return (
        status == 0
        or IPCErrorCode.OH_IPC_ERROR_CODE_BASE <= status <= IPCErrorCode.OH_IPC_INNER_ERROR
        or status == IPCErrorCode.CK_IPC_TIMEOUT
        or IPCErrorCode.OH_IPC_USER_ERROR_CODE_MIN
        <= status
        <= IPCErrorCode.OH_IPC_USER_ERROR_CODE_MAX
    )


def _code_name(code: int) -> str:
    try:
        return IPCErrorCode(code).name
    except ValueError:
        return f"user error {code}"


class IPCError(Exception):
    """An IPC operation failed; ``code`` says why (an :class:`IPCErrorCode` or a user code)."""

    def __init__(self, code: int, message: str) -> None:
        self.code: int = int(code)
        self.message = message
        super().__init__(f"[{_code_name(code)} {int(code)}] {message}")


class ParamError(IPCError):
    """An argument was invalid (``OH_IPC_CHECK_PARAM_ERROR``)."""

    def __init__(self, message: str) -> None:
        super().__init__(IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR, message)


class ParcelWriteError(IPCError):
    """A value could not be written to a parcel (``OH_IPC_PARCEL_WRITE_ERROR``)."""

    def __init__(self, message: str) -> None:
        super().__init__(IPCErrorCode.OH_IPC_PARCEL_WRITE_ERROR, message)


class ParcelReadError(IPCError):
    """A parcel ran out, held another type, or was malformed (``OH_IPC_PARCEL_READ_ERROR``)."""

    def __init__(self, message: str) -> None:
        super().__init__(IPCErrorCode.OH_IPC_PARCEL_READ_ERROR, message)


class DeadRemoteObjectError(IPCError):
    """The remote object's process or connection is gone (``OH_IPC_DEAD_REMOTE_OBJECT``)."""

    def __init__(self, message: str) -> None:
        super().__init__(IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT, message)


class IPCTimeoutError(IPCError, TimeoutError):
    """A sync request got no reply within its timeout (``CK_IPC_TIMEOUT``)."""

    def __init__(self, message: str) -> None:
        super().__init__(IPCErrorCode.CK_IPC_TIMEOUT, message)


class ProtocolError(IPCError):
    """The peer sent bytes that are not valid childkit wire frames; the connection closes."""

    def __init__(self, message: str) -> None:
        super().__init__(IPCErrorCode.OH_IPC_INNER_ERROR, message)


#: errno values that say the process (or machine) ran out of something, not that an
#: argument was wrong; with the resource each names.
_OUT_OF: dict[int, str] = {
    errno.EMFILE: "file descriptors (the process's RLIMIT_NOFILE is reached)",
    errno.ENFILE: "file descriptors (the system's file table is full)",
    errno.ENOMEM: "memory",
    errno.ENOBUFS: "socket buffer space",
}


def resource_error(exc: OSError, doing: str) -> IPCError | None:
    """The :class:`IPCError` (``OH_IPC_INNER_ERROR``) for ``exc`` if it says a resource ran
    out while ``doing`` something (EMFILE, ENFILE, ENOMEM, ENOBUFS), naming the resource;
    ``None`` for any other error, which the caller reports as it would."""
    resource = _OUT_OF.get(exc.errno or 0)
    if resource is None:
        return None
    name = errno.errorcode.get(exc.errno or 0, "")
    return IPCError(IPCErrorCode.OH_IPC_INNER_ERROR, f"out of {resource} {doing} ({name})")
