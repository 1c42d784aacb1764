"""A peer process for test_large_parcels: echoes a buffer, and says how many receive
buffers it has made because a parcel adopted one (so that a test sees the server side
reuse them)."""

from __future__ import annotations

import os
import socket
import sys
import threading

from childkit.ipc import Connection, MessageOption, MessageParcel, RemoteStub, _recvbuf

ECHO, REFILLS = 1, 2


class LargeEcho(RemoteStub):
    def __init__(self) -> None:
        super().__init__("test.LargeEcho")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == ECHO:
            reply.write_buffer(data.read_buffer())
        elif code == REFILLS:
            reply.write_int64(_recvbuf.refills)
        return 0


def main() -> None:
    conn = Connection(socket.socket(fileno=int(sys.argv[1])),
                      socket.socket(fileno=int(sys.argv[2])), local_root=LargeEcho())
    done = threading.Event()
    conn.add_close_callback(done.set)
    conn.start()
    done.wait()
    os._exit(0)


if __name__ == "__main__":
    main()
