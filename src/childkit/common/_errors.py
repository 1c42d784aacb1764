"""Child-process error codes (``Ability_NativeChildProcess_ErrCode``) and exceptions."""

from __future__ import annotations

import enum


class ErrCode(enum.IntEnum):
    """The native child process error codes, names and values as in OpenHarmony."""

    NCP_NO_ERROR = 0
    NCP_ERR_INVALID_PARAM = 401
    NCP_ERR_NOT_SUPPORTED = 801
    NCP_ERR_INTERNAL = 16000050
    NCP_ERR_BUSY = 16010001
    NCP_ERR_TIMEOUT = 16010002
    NCP_ERR_SERVICE_ERROR = 16010003
    NCP_ERR_MULTI_PROCESS_DISABLED = 16010004
    NCP_ERR_ALREADY_IN_CHILD = 16010005
    NCP_ERR_MAX_CHILD_PROCESSES_REACHED = 16010006
    NCP_ERR_LIB_LOADING_FAILED = 16010007
    NCP_ERR_CONNECTION_FAILED = 16010008
    NCP_ERR_CALLBACK_NOT_EXIST = 16010009
    NCP_ERR_INVALID_PID = 16010010


class ChildkitError(Exception):
    """A child-process call failed; ``code`` is the :class:`ErrCode` that says why."""

    def __init__(self, code: ErrCode, message: str) -> None:
        self.code: ErrCode = ErrCode(code)
        self.message = message
        super().__init__(f"[{self.code.name} {int(self.code)}] {message}")
