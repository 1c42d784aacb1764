"""A peer process for test_large_parcels and test_zero_copy: echoes a buffer (or every
value), and says how many receive buffers it has made because a parcel adopted one and
how many requests came scattered (so that a test sees what the server side did)."""

from __future__ import annotations

import os
import socket
import sys
import threading

from childkit.ipc import Connection, MessageOption, MessageParcel, RemoteStub, _recvbuf

ECHO, REFILLS, ECHO_ALL, SCATTERED = 1, 2, 3, 4


class LargeEcho(RemoteStub):
    def __init__(self) -> None:
        super().__init__("test.LargeEcho")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == ECHO:
            reply.write_buffer(data.read_buffer())
        elif code == REFILLS:
            reply.write_int64(_recvbuf.refills)
        elif code == ECHO_ALL:  # every value back, whatever they are
            reply.append(data)
        elif code == SCATTERED:  # requests whose buffer came scattered, so far
            reply.write_int64(_recvbuf.scattered_count())
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
