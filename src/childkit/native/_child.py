"""A native IPC-mode child: a C library served by the C kit (the seed's section II).

The launcher's forked child calls :func:`prepare` for an IPC entry naming a library
(``"libx.so"`` or a path): the library is ``dlopen``ed, ``NativeChildProcess_OnConnect()``
gives the root stub (an ``OHIPCRemoteStub *`` made with IPCKit's C API), the C kit serves
it on the child's two sockets with its own work threads (no Python on the request path),
and the returned function runs ``NativeChildProcess_MainProc()``; the child exits when it
returns, once the requests being answered then have sent their replies (at most 2 s).

The kit is the ``libipc_capi.so`` the library itself was linked against (looked up through
the library's own handle), so one copy of the C kit runs in the child; a library not
linked against it gets childkit's.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from childkit.common import ChildkitError, ErrCode

ON_CONNECT = "NativeChildProcess_OnConnect"
MAIN_PROC = "NativeChildProcess_MainProc"
_CONNECT = "childkit_ipc_connect"
_DRAIN = "childkit_ipc_drain"
#: How long the requests being answered when NativeChildProcess_MainProc() returns may
#: hold the child's exit, in ms: as long as a Python child's (launcher/_replies.py's
#: DRAIN_TIMEOUT; the launcher layer is above this one).
DRAIN_MS = 2000
_ERR_LEN = 200


def _load(library: str, entry: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(library)
    except OSError as exc:
        raise ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                            f"cannot load the library of {entry!r}: {exc}") from None


def _symbol(lib: ctypes.CDLL, name: str, entry: str) -> Any:  # a ctypes function
    try:
        return getattr(lib, name)
    except AttributeError:
        raise ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                            f"the library of {entry!r} does not export {name}()") from None


def _kit(lib: ctypes.CDLL, entry: str) -> tuple[Any, Any]:  # two ctypes functions
    """The C kit's ``childkit_ipc_connect`` and ``childkit_ipc_drain``: of the kit the
    library was linked against, else of childkit's own."""
    kit: Any = lib
    if not hasattr(lib, _CONNECT):
        from childkit.native import NativeLibraryMissing, require_library

        try:
            kit = _load(str(require_library("ipc_capi")), entry)
        except NativeLibraryMissing as exc:
            raise ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                                f"no IPCKit C library to serve {entry!r}: {exc}") from None
    try:
        connect, drain = getattr(kit, _CONNECT), getattr(kit, _DRAIN)
    except AttributeError as exc:
        raise ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                            f"no IPCKit C library to serve {entry!r}: {exc}") from None
    connect.restype = ctypes.c_int
    connect.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    drain.restype = ctypes.c_int
    drain.argtypes = [ctypes.c_int]
    return connect, drain


def prepare(library: str, entry: str, call_fd: int, serve_fd: int) -> Callable[[], int]:
    """Load ``library``, serve its ``NativeChildProcess_OnConnect()`` stub on the two
    sockets (taken over, also on failure) and return the function that runs
    ``NativeChildProcess_MainProc()`` (and answers exit status 0).

    Raises:
        ChildkitError: ``NCP_ERR_LIB_LOADING_FAILED`` if the library does not load or
            lacks either function (naming what was missing);
            ``NCP_ERR_CONNECTION_FAILED`` if ``NativeChildProcess_OnConnect()`` returns
            NULL or the connection cannot start (with the C kit's reason).
    """
    try:
        lib = _load(library, entry)
        on_connect = _symbol(lib, ON_CONNECT, entry)
        main_proc = _symbol(lib, MAIN_PROC, entry)
        connect, drain = _kit(lib, entry)
    except ChildkitError:
        _close(call_fd, serve_fd)
        raise
    # A library linked with childkit's libchild_process.so learns it is in a child (its
    # OH_Ability_* starts answer NCP_ERR_ALREADY_IN_CHILD), before its own code runs.
    in_child = getattr(lib, "childkit_set_in_child", None)
    if in_child is not None:
        in_child.argtypes = []
        in_child.restype = None
        in_child()
    on_connect.restype = ctypes.c_void_p
    on_connect.argtypes = []
    main_proc.restype = None
    main_proc.argtypes = []
    stub = on_connect()
    if not stub:
        _close(call_fd, serve_fd)
        raise ChildkitError(ErrCode.NCP_ERR_CONNECTION_FAILED,
                            f"{ON_CONNECT}() of {entry!r} returned NULL, not a stub")
    err = ctypes.create_string_buffer(_ERR_LEN)
    status = connect(call_fd, serve_fd, stub, 0, None, err, _ERR_LEN)
    if status != 0:
        raise ChildkitError(ErrCode.NCP_ERR_CONNECTION_FAILED,
                            f"the C kit could not serve {entry!r} ({status}): "
                            f"{err.value.decode('utf-8', 'replace')}")

    def run() -> int:
        main_proc()
        # Requests being answered hold the exit until their replies are sent (bounded),
        # so a request that made MainProc return is still answered, as in a Python child.
        drain(DRAIN_MS)
        return 0

    return run


def _close(*fds: int) -> None:
    import os

    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
