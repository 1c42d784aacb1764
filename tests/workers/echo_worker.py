"""An IPC-mode child for tests: its root stub adds one, reports its pid and stops it.

``main_proc`` returns (and so the child exits) when the parent sends :data:`QUIT`, with
the exit code sent along.
"""

from __future__ import annotations

import os
import threading

from childkit import get_current_child_process_args, start_native_child_process
from childkit.common._errors import ChildkitError
from childkit.ipc import MessageOption, MessageParcel, RemoteStub, RequestMode, Skeleton

ADD_ONE = 1
PID = 2
QUIT = 3  # one-way; data: an int exit code (send it with ONE_WAY: the child exits at once)
TRY_START = 4  # reply: the error code a start from inside the child gets
ARGS = 5  # reply: 1 if get_current_child_process_args() is None, else 0
FD_COUNT = 6  # reply: how many fds the child has open
BUSY_POLL = 7  # reply: the child's busy poll maximum (Skeleton.get_busy_poll_us)
CALL_BACK = 8  # data: a remote object; the child sends it request 1, and replies its reply's int

ONE_WAY = MessageOption(RequestMode.ASYNC)

_quit = threading.Event()
_exit_code = 0


class EchoStub(RemoteStub):
    def __init__(self) -> None:
        super().__init__("childkit.test.EchoWorker")

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        global _exit_code
        if code == ADD_ONE:
            reply.write_int32(data.read_int32() + 1)
        elif code == PID:
            reply.write_int32(os.getpid())
        elif code == QUIT:
            _exit_code = data.read_int32()
            _quit.set()
        elif code == TRY_START:
            try:
                start_native_child_process("workers.args_entries:write_params")
            except ChildkitError as exc:
                reply.write_int32(int(exc.code))
            else:
                reply.write_int32(0)
        elif code == ARGS:
            reply.write_int32(1 if get_current_child_process_args() is None else 0)
        elif code == FD_COUNT:
            reply.write_int32(len(os.listdir("/proc/self/fd")))
        elif code == BUSY_POLL:
            reply.write_int32(Skeleton.get_busy_poll_us())
        elif code == CALL_BACK:
            target = data.read_remote_object()
            with MessageParcel() as request, target.send_request(1, request) as answer:
                reply.write_int32(answer.read_int32())
        else:
            return 1909001
        return 0


def on_connect() -> RemoteStub:
    return EchoStub()


def main_proc() -> int:
    _quit.wait()
    return _exit_code
