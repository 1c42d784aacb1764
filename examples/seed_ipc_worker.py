"""The child of examples/seed_ipc_child.py (the seed article's II: a child with IPC).

The seed's child library exports ``NativeChildProcess_OnConnect`` (returns the stub the
parent talks to) and ``NativeChildProcess_MainProc`` (the child's main logic). In
childkit they are this module's :func:`on_connect` and :func:`main_proc`.
"""

from __future__ import annotations

import os
import threading

from childkit.ipc import MessageOption, MessageParcel, RemoteStub, Skeleton

DESCRIPTOR = "examples.seed.Calculator"
ADD = 1  # data: token, int32 a, int32 b -> reply: int64 a + b
WHO = 2  # reply: this child's pid, and the pid it sees calling it
QUIT = 3  # one-way: main_proc returns, so the child exits 0

_quit = threading.Event()


class Calculator(RemoteStub):
    """The seed's ``OnRemoteRequest`` as a stub class."""

    def __init__(self) -> None:
        super().__init__(DESCRIPTOR)

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == QUIT:
            _quit.set()
            return 0
        if data.read_interface_token() != DESCRIPTOR:
            return 1909001  # a user error code: reaches the caller as an IPCError
        if code == ADD:
            reply.write_int64(data.read_int32() + data.read_int32())
        elif code == WHO:
            reply.write_int32(os.getpid())
            reply.write_int32(Skeleton.get_calling_pid())
        else:
            return 1909002
        return 0


def on_connect() -> RemoteStub:
    return Calculator()


def main_proc() -> int:
    _quit.wait()
    return 0
