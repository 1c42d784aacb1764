"""The seed article's scenario II: start a child with an IPC channel and talk to it.

``create_native_child_process`` (``OH_Ability_CreateNativeChildProcess``) starts the
module ``seed_ipc_worker``; ``on_started(code, proxy)`` arrives on another thread with
a proxy to the child's Calculator stub. The parent sends a sync request, asks who the
child is, watches its death with a death recipient, then sends a one-way QUIT.

Run: ``python examples/seed_ipc_child.py`` (exit status 0 on success).
"""

from __future__ import annotations

import os
import sys
import threading

import seed_ipc_worker as worker  # next to this file; the child imports it too

import childkit
from childkit import ChildExitInfo, ErrCode
from childkit.ipc import MessageOption, MessageParcel, RemoteProxy, RequestMode


def main() -> int:
    started = threading.Event()
    result: dict[str, object] = {}

    def on_started(code: ErrCode, proxy: RemoteProxy | None) -> None:
        # Runs on a childkit thread, as OnNativeChildProcessStarted does.
        result["code"], result["proxy"] = code, proxy
        started.set()

    exited = threading.Event()
    exits: dict[int, ChildExitInfo] = {}

    def on_exit(pid: int, info: ChildExitInfo) -> None:
        exits[pid] = info
        exited.set()

    childkit.register_child_process_exit_callback(on_exit)
    try:
        childkit.create_native_child_process("seed_ipc_worker", on_started)
        if not started.wait(60):
            print("the child did not start within 60 s", file=sys.stderr)
            return 1
        code, proxy = result["code"], result["proxy"]
        if code != ErrCode.NCP_NO_ERROR or not isinstance(proxy, RemoteProxy):
            print(f"start failed: {code!r}", file=sys.stderr)
            return 1
        pid = proxy.connection.peer_pid
        print(f"on_started: {ErrCode(code).name}, child pid {pid}, "
              f"stub {proxy.get_descriptor()!r}")

        died = threading.Event()
        proxy.add_death_recipient(died.set)

        with MessageParcel() as data:
            data.write_interface_token(worker.DESCRIPTOR)
            data.write_int32(20)
            data.write_int32(22)
            with proxy.send_request(worker.ADD, data) as reply:
                total = reply.read_int64()
        print(f"sync request ADD(20, 22) -> {total}")

        with MessageParcel() as data:
            data.write_interface_token(worker.DESCRIPTOR)
            with proxy.send_request(worker.WHO, data) as reply:
                child_pid, caller = reply.read_int32(), reply.read_int32()
        print(f"the child is pid {child_pid}; it sees its caller as pid {caller} "
              f"(the parent is {os.getpid()})")

        with MessageParcel() as data:
            proxy.send_request(worker.QUIT, data, MessageOption(RequestMode.ASYNC))
        print("one-way QUIT sent")
        if not (died.wait(30) and exited.wait(30)):
            print("the child did not exit within 30 s", file=sys.stderr)
            return 1
        print(f"death recipient called; exit callback: {exits[pid]}")
        proxy.close()
        ok = total == 42 and child_pid == pid and caller == os.getpid() \
            and exits[pid].exit_code == 0
    finally:
        childkit.unregister_child_process_exit_callback(on_exit)
    print("seed_ipc_child: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
