"""The child side of the IPC benchmarks: an IPC-mode child module (``on_connect`` gives the
echo stub; ``main_proc`` returns on :data:`QUIT`), started through the launcher."""

from __future__ import annotations

import resource
import threading

from childkit.ipc import MessageOption, MessageParcel, RemoteStub

ADD_ONE, COUNT, GET_COUNT, TOUCH_ASHMEM, ECHO, FAULTS, QUIT = 1, 2, 3, 4, 5, 6, 7

_quit = threading.Event()


class BenchStub(RemoteStub):
    def __init__(self) -> None:
        super().__init__("childkit.bench.Echo")
        self.total = 0
        self.count = 0

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        if code == ADD_ONE:
            reply.write_int32(data.read_int32() + 1)
        elif code == COUNT:
            self.total += data.read_int32()
            self.count += 1
        elif code == GET_COUNT:
            reply.write_int64(self.count)
            reply.write_int64(self.total)
        elif code == TOUCH_ASHMEM:
            # The child gets the whole region: map it, read its first and last byte.
            with data.read_ashmem() as ash:
                ash.map_read_only()
                view = ash.buffer()
                reply.write_int32(view[0] + view[len(view) - 1])
                reply.write_int64(len(view))
                view.release()
        elif code == ECHO:  # the payload back, as a caller of a parser would get it
            reply.write_buffer(data.read_buffer())
        elif code == FAULTS:  # this process's minor page faults so far
            reply.write_int64(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        elif code == QUIT:  # one-way: main_proc returns and the child exits
            _quit.set()
        return 0


def on_connect() -> BenchStub:
    return BenchStub()


def main_proc() -> int:
    _quit.wait()
    return 0
