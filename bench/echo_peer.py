"""The child side of the IPC benchmarks: serves an echo stub over inherited sockets."""

from __future__ import annotations

import os
import resource
import socket
import sys
import threading

from childkit.ipc import Connection, MessageOption, MessageParcel, RemoteStub

ADD_ONE, COUNT, GET_COUNT, TOUCH_ASHMEM, ECHO, FAULTS = 1, 2, 3, 4, 5, 6


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
        return 0


def main() -> None:
    conn = Connection(
        socket.socket(fileno=int(sys.argv[1])),
        socket.socket(fileno=int(sys.argv[2])),
        local_root=BenchStub(),
    )
    done = threading.Event()
    conn.add_close_callback(done.set)
    conn.start()
    done.wait()
    os._exit(0)


if __name__ == "__main__":
    main()
