"""A hostile peer process: floods sync requests at the other side's root object and never
reads a reply (nor anything else). Run as ``hostile_peer.py CALL_FD SERVE_FD [MODE]``.

Modes: ``sync`` (default) sends plain sync requests until the link breaks; ``oneway``
sends one-way requests of 200 KB (``oneway-fds``: with 64 fds each) the same way.
"""

from __future__ import annotations

import os
import socket
import sys

from childkit.ipc import MessageParcel, _wire


def main() -> None:
    call = socket.socket(fileno=int(sys.argv[1]))
    serve = socket.socket(fileno=int(sys.argv[2]))
    mode = sys.argv[3] if len(sys.argv) > 3 else "sync"
    call.send(_wire.encode_hello(False))
    data = MessageParcel()
    data.write_int32(1)
    fds: list[int] = []
    if mode.startswith("oneway"):
        data.write_bytes(bytes(200_000))
    if mode == "oneway-fds":
        r, _w = os.pipe()
        fds = [r] * 64
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
            b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))] if fds else []
    seq = 1
    try:
        while seq < 10_000_000:
            oneway = mode != "sync"
            frame = _wire.encode_transaction(0 if oneway else seq, 0, 1, oneway,
                                             bytes(data._buf), (), len(fds))
            call.sendmsg([frame], anc)
            seq += 1
    except OSError:
        pass
    serve.recv(1)  # returns once the other side has closed the link


if __name__ == "__main__":
    main()
