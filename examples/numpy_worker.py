"""The child of examples/numpy_handover.py: works on arrays it receives in shared memory."""

from __future__ import annotations

import threading

from childkit.ipc import MessageOption, MessageParcel, RemoteStub, read_array

STATS = 1  # data: array -> reply: float64 sum, float64 max (read-only view)
SCALE = 2  # data: array, float64 factor -> multiplies it in place (read-write view)
QUIT = 3  # one-way: the child exits

_quit = threading.Event()


class ArrayStub(RemoteStub):
    def __init__(self) -> None:
        super().__init__("examples.numpy.Arrays")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == STATS:
            with read_array(data) as shared:  # maps the parent's pages: no copy
                reply.write_double(float(shared.array.sum()))
                reply.write_double(float(shared.array.max()))
        elif code == SCALE:
            with read_array(data, writable=True) as shared:
                factor = data.read_double()
                shared.array *= factor  # the parent sees this: the same pages
        elif code == QUIT:
            _quit.set()
        else:
            return 1909001
        return 0


def on_connect() -> RemoteStub:
    return ArrayStub()


def main_proc() -> None:
    _quit.wait()
