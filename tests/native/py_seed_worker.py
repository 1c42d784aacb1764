"""A Python child for the C parent test (seed_parent.c): the seed child's ADD_ONE, CALL_BACK
and EXIT codes in IPC mode, and an args-mode entry that blocks until killed."""

from __future__ import annotations

import os
import threading

from childkit import ChildProcessArgs
from childkit.ipc import MessageOption, MessageParcel, RemoteStub

ADD_ONE, CALL_BACK, EXIT = 1, 2, 6
_done = threading.Event()


class _Child(RemoteStub):
    def __init__(self) -> None:
        super().__init__("tests.IPySeedChild")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == ADD_ONE:
            reply.write_int32(data.read_int32() + 1000)  # + 1000: a Python child answered
            return 0
        if code == CALL_BACK:  # a proxy: ADD_ONE(41) on it, answers what it got
            target = data.read_remote_object()
            with MessageParcel() as request:
                request.write_int32(41)
                with target.send_request(ADD_ONE, request) as answer:
                    reply.write_int32(answer.read_int32())
            return 0
        if code == EXIT:
            _done.set()
            return 0
        return 1909999


def on_connect() -> RemoteStub:
    return _Child()


def main_proc() -> None:
    _done.wait()


def block(args: ChildProcessArgs) -> int:
    """Reads fd "r" until end of file (never, while the parent keeps the write end)."""
    while os.read(args.fds["r"], 64):
        pass
    return 0
