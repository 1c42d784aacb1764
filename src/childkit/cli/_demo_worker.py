"""The child side of ``childkit demo``: both of HarmonyOS's native child modes.

* IPC mode (``OH_Ability_CreateNativeChildProcess``): :func:`on_connect` returns a
  :class:`Calculator` stub;
  :func:`main_proc` runs until the parent sends ``QUIT``.
* Args mode (``OH_Ability_StartNativeChildProcess``): :func:`args_main` reads its
  start-up string and writes a
  greeting back through the fd named ``"reply"``.
"""

from __future__ import annotations

import os
import threading

from childkit.entry import ChildProcessArgs, get_current_child_process_args
from childkit.ipc import MessageOption, MessageParcel, RemoteStub, Skeleton

DESCRIPTOR = "childkit.demo.Calculator"
ADD = 1  # data: token, int32 a, int32 b; reply: a + b
PID = 2  # reply: this child's pid, and the pid it sees calling
QUIT = 3  # one-way: main_proc returns, the child exits 0

_quit = threading.Event()


class Calculator(RemoteStub):
    def __init__(self) -> None:
        super().__init__(DESCRIPTOR)

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        if code == QUIT:
            _quit.set()
            return 0
        if data.read_interface_token() != DESCRIPTOR:
            return 1909001  # wrong interface: a user error code
        if code == ADD:
            reply.write_int64(data.read_int32() + data.read_int32())
        elif code == PID:
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


def args_main(args: ChildProcessArgs) -> int:
    # As OH_Ability_GetCurrentChildProcessArgs: the args can also be read anywhere
    # later, from any thread.
    again = get_current_child_process_args()
    assert again is not None and again.entry_params == args.entry_params
    fd = args.fds["reply"]
    os.write(fd, f"child {os.getpid()} got {args.entry_params!r}\n".encode())
    os.close(fd)
    return 0
