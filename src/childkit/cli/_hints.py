"""The command line's hints: for every error code, what its user can do about it.

One hint per ``ErrCode`` and per ``IPCErrorCode`` member (tests/test_cli.py checks that
none is missing); the command prints it under the error's name and message.
"""

from __future__ import annotations

from childkit.common import ErrCode
from childkit.ipc._errors import IPCErrorCode

HINTS: dict[ErrCode, str] = {
    ErrCode.NCP_NO_ERROR: "not an error: nothing to fix",
    ErrCode.NCP_ERR_INVALID_PARAM: "check the entry string, --param/--param-file, the --fd "
                                   "names and paths, --limit and --timeout "
                                   "(childkit run --help)",
    ErrCode.NCP_ERR_NOT_SUPPORTED: "run `childkit sandbox-check` to see which layer is "
                                   "missing, or pass --allow-reduced to start without it",
    ErrCode.NCP_ERR_INTERNAL: "an OS call failed or the child died while starting: check "
                              "free memory and the process and fd limits (ulimit -u, "
                              "ulimit -n), then retry",
    ErrCode.NCP_ERR_BUSY: "another child is still starting: retry",
    ErrCode.NCP_ERR_TIMEOUT: "the child did not reach its entry within the start timeout "
                             "(childkit.START_TIMEOUT seconds): a slow import or an "
                             "overloaded machine; --timeout only limits the run after that",
    ErrCode.NCP_ERR_SERVICE_ERROR: "childkit's launcher process died or stopped answering: "
                                   "retry, and look for an out-of-memory kill (dmesg)",
    ErrCode.NCP_ERR_MULTI_PROCESS_DISABLED: "multi-process mode is off: Linux has no such "
                                            "setting, so this should not happen; report it",
    ErrCode.NCP_ERR_ALREADY_IN_CHILD: "a childkit child may not start children: run this "
                                      "from an ordinary process",
    ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED: "at most 50 children may live at once: "
                                                 "wait for some to exit",
    ErrCode.NCP_ERR_LIB_LOADING_FAILED: "is the module importable from here (PYTHONPATH, "
                                        "the current directory) or the library on the "
                                        "path? An --isolated child sees only its entry's "
                                        "own file: show it the modules that file imports "
                                        "with --readonly PATH",
    ErrCode.NCP_ERR_CONNECTION_FAILED: "the entry's on_connect() must return a RemoteStub; "
                                       "the child's stderr says what it raised",
    ErrCode.NCP_ERR_CALLBACK_NOT_EXIST: "that exit callback was never registered (or was "
                                        "already unregistered)",
    ErrCode.NCP_ERR_INVALID_PID: "the pid is not a live child of this process: it may have "
                                 "exited already",
}
# One hint per IPCErrorCode member (aliases and range markers included).
_IPC_HINTS: dict[IPCErrorCode, str] = {
    IPCErrorCode.OH_IPC_SUCCESS: "not an error: nothing to fix",
    IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR: "an argument of an IPC call is invalid: the "
                                           "message says which",
    IPCErrorCode.OH_IPC_PARCEL_WRITE_ERROR: "a parcel is full (200 KB of data, 64 fds, 256 "
                                            "objects) or closed: send bulk data through "
                                            "shared memory (Ashmem)",
    IPCErrorCode.OH_IPC_PARCEL_READ_ERROR: "the reader expected other types than the writer "
                                           "wrote: read in the order and types written",
    IPCErrorCode.OH_IPC_MEM_ALLOCATOR_ERROR: "the kernel refused the shared memory: check free "
                                             "memory and the size asked for",
    IPCErrorCode.OH_IPC_CODE_OUT_OF_RANGE: "request codes must be in 0x01..0x00FFFFFF",
    IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT: "the peer process or its connection is gone: "
                                            "its exit report says why",
    IPCErrorCode.OH_IPC_INVALID_USER_ERROR_CODE: "a stub returned a status outside 0, the IPC "
                                                 "codes and 1909000..1909999",
    IPCErrorCode.OH_IPC_INNER_ERROR: "a stub raised, or the peer sent invalid frames: the "
                                     "message has the details",
    IPCErrorCode.CK_IPC_TIMEOUT: "no reply within MessageOption.timeout: the peer is slow or "
                                 "stuck; raise the timeout or check the peer",
    IPCErrorCode.OH_IPC_ERROR_CODE_MAX: "a range marker, not an error: report it",
    IPCErrorCode.OH_IPC_USER_ERROR_CODE_MIN: "the stub's own error code: see its documentation",
    IPCErrorCode.OH_IPC_USER_ERROR_CODE_MAX: "the stub's own error code: see its documentation",
}
_USER_CODE_HINT = "the stub's own error code: see its documentation"

def ipc_hint(code: int) -> str:
    """The command line's hint for an :class:`IPCError`'s code (never empty): an
    ``OH_IPC_*`` code, or a stub's own (user) code."""
    try:
        return _IPC_HINTS[IPCErrorCode(code)]
    except ValueError:
        pass
    if IPCErrorCode.OH_IPC_USER_ERROR_CODE_MIN <= code <= IPCErrorCode.OH_IPC_USER_ERROR_CODE_MAX:
        return _USER_CODE_HINT
    return "an error code outside IPCKit's ranges: report it"
