"""A Python IPC child for bench_native: ADD_ONE (code 1) as the seed's C child answers it."""

from __future__ import annotations

import threading

from childkit.ipc import MessageOption, MessageParcel, RemoteStub

_done = threading.Event()


class _AddOne(RemoteStub):
    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        reply.write_int32(data.read_int32() + 1)
        return 0


def on_connect() -> RemoteStub:
    return _AddOne("bench.IAddOne")


def main_proc() -> None:
    _done.wait()
