"""A peer process for two-process IPC tests and benchmarks.

Run as ``python peer_main.py CALL_FD SERVE_FD``: serves an :class:`EchoStub` as its root
object over the inherited sockets until the parent closes the connection.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

from childkit.ipc import (
    Ashmem,
    Connection,
    IPCError,
    MessageOption,
    MessageParcel,
    RemoteProxy,
    RemoteStub,
    RequestMode,
    Skeleton,
)

# Request codes of the echo interface.
ADD_ONE = 1
RECORD = 2  # one-way: remember an int
GET_RECORDED = 3  # reply: count, then the ints in order
USER_ERROR = 4
RAISE = 5
CALLING = 6  # reply: calling pid, uid, is_local
CALL_BACK = 7  # data: a remote object; calls it with ADD_ONE and returns its answer
READ_FD = 8  # data: an fd; reply: what it reads from it
SUM_ASHMEM = 9  # data: an ashmem; reply: sum of its first and last byte, and its size
WRITE_ASHMEM = 10  # data: an ashmem and a byte; writes it everywhere through a mapping
BLOCK = 11  # waits until the connection dies
EXIT = 12  # one-way: the process exits at once
ECHO_OBJECT = 13  # data: a remote object; reply: the same object
PID = 14
SLEEP_UNTIL_RELEASED = 15  # waits on an event released by code 16
RELEASE = 16
RECORD_TOTAL = 17  # one-way: add an int to a running total (no list growth)
GET_TOTAL = 18
SUM_ARRAY = 19  # data: a shared array; reply: its sum (double), then it is doubled in place
USES_SPEEDUPS = 20  # reply: a bool, whether this peer runs the C twins of the hot path
DESCRIPTOR = "childkit.test.Echo"


class EchoStub(RemoteStub):
    def __init__(self) -> None:
        super().__init__(DESCRIPTOR)
        self.recorded: list[int] = []
        self.total = 0
        self.count = 0
        self.released = threading.Event()
        self.lock = threading.Lock()

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        if code == ADD_ONE:
            reply.write_int32(data.read_int32() + 1)
        elif code == RECORD:
            with self.lock:
                self.recorded.append(data.read_int32())
        elif code == RECORD_TOTAL:
            self.total += data.read_int32()
            self.count += 1
        elif code == GET_TOTAL:
            reply.write_int64(self.total)
            reply.write_int64(self.count)
        elif code == GET_RECORDED:
            with self.lock:
                reply.write_int32(len(self.recorded))
                for v in self.recorded:
                    reply.write_int32(v)
        elif code == USER_ERROR:
            return 1909042
        elif code == RAISE:
            raise ValueError("the stub raised on purpose")
        elif code == CALLING:
            reply.write_int32(Skeleton.get_calling_pid())
            reply.write_int32(Skeleton.get_calling_uid())
            reply.write_bool(Skeleton.is_local_calling())
        elif code == CALL_BACK:
            target = data.read_remote_object()
            value = data.read_int32()
            with MessageParcel() as out:
                out.write_int32(value)
                answer = target.send_request(ADD_ONE, out)
            reply.write_int32(answer.read_int32())
        elif code == READ_FD:
            fd = data.read_file_descriptor()
            with os.fdopen(fd, "rb") as f:
                reply.write_bytes(f.read())
        elif code == SUM_ASHMEM:
            with data.read_ashmem() as ash:
                ash.map_read_only()
                view = ash.buffer()
                reply.write_int32(view[0] + view[-1])
                reply.write_int64(ash.get_size())
                view.release()
        elif code == WRITE_ASHMEM:
            with data.read_ashmem() as ash:
                value = data.read_int32()
                ash.map_read_write()
                view = ash.buffer()
                view[:] = bytes([value]) * len(view)
                view.release()
        elif code == BLOCK:
            threading.Event().wait(60)
        elif code == EXIT:
            os._exit(3)
        elif code == ECHO_OBJECT:
            reply.write_remote_object(data.read_remote_object())
        elif code == PID:
            reply.write_int32(os.getpid())
        elif code == USES_SPEEDUPS:
            from childkit.ipc import _accel

            reply.write_bool(_accel.speedups is not None)
        elif code == SLEEP_UNTIL_RELEASED:
            if not self.released.wait(30):
                raise IPCError(1909001, "never released")
        elif code == RELEASE:
            self.released.set()
        elif code == SUM_ARRAY:
            from childkit.ipc import read_array

            with read_array(data, writable=True) as shared:
                reply.write_double(float(shared.array.sum()))
                shared.array *= 2
        else:
            return 1909999
        return 0


def main() -> None:
    call_fd, serve_fd = int(sys.argv[1]), int(sys.argv[2])
    conn = Connection(
        socket.socket(fileno=call_fd), socket.socket(fileno=serve_fd), local_root=EchoStub()
    )
    done = threading.Event()
    conn.add_close_callback(done.set)
    conn.start()
    done.wait()
    os._exit(0)


if __name__ == "__main__":
    main()
    _ = (Ashmem, RemoteProxy, RequestMode)
