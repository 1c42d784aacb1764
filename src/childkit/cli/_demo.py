"""``childkit demo``: HarmonyOS's two native child modes (IPC mode, args mode), end to
end, narrated."""

from __future__ import annotations

import os
import threading

from childkit.cli._demo_worker import ADD, DESCRIPTOR, PID, QUIT
from childkit.entry import ChildProcessArgs
from childkit.ipc import MessageOption, MessageParcel, RequestMode
from childkit.process import (
    ChildExitInfo,
    connect,
    register_child_process_exit_callback,
    start_native_child_process,
    unregister_child_process_exit_callback,
)

WORKER = "childkit.cli._demo_worker"


def run(verbose: bool = True) -> int:
    """Run both scenarios; return 0 if everything behaved as HarmonyOS's modes do."""
    say = print if verbose else (lambda *a, **k: None)
    exits: dict[int, ChildExitInfo] = {}
    exited = threading.Condition()

    def on_exit(pid: int, info: ChildExitInfo) -> None:
        with exited:
            exits[pid] = info
            exited.notify_all()

    register_child_process_exit_callback(on_exit)
    try:
        say("== Scenario 1: a child with an IPC channel (HarmonyOS's IPC mode)")
        with connect(WORKER) as child:
            say(f"started child pid {child.pid}; its Calculator stub is our proxy")
            with MessageParcel() as data:
                data.write_interface_token(DESCRIPTOR)
                data.write_int32(20)
                data.write_int32(22)
                with child.proxy.send_request(ADD, data) as reply:
                    total = reply.read_int64()
            say(f"sync request ADD(20, 22) -> {total}")
            with MessageParcel() as data:
                data.write_interface_token(DESCRIPTOR)
                with child.proxy.send_request(PID, data) as reply:
                    child_pid, caller = reply.read_int32(), reply.read_int32()
            say(f"child reports pid {child_pid}; it sees its caller as pid {caller} "
                f"(we are {os.getpid()})")
            child.proxy.send_request(QUIT, MessageParcel(), MessageOption(RequestMode.ASYNC))
            info = child.wait(30)
            say(f"one-way QUIT sent; child ended: {info}")
            ok1 = total == 42 and child_pid == child.pid and caller == os.getpid() \
                and info is not None and info.exit_code == 0

        say("\n== Scenario 2: a child with start-up parameters and an fd "
            "(HarmonyOS's args mode)")
        read_end, write_end = os.pipe()
        try:
            args = ChildProcessArgs("testParam", {"reply": write_end})
            pid = start_native_child_process(f"{WORKER}:args_main", args)
            os.close(write_end)
            write_end = -1
            say(f"started child pid {pid} with entry params 'testParam' and fd 'reply'")
            chunks = []
            while chunk := os.read(read_end, 4096):
                chunks.append(chunk)
            message = b"".join(chunks).decode()
            say(f"read back through the fd: {message.strip()}")
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        with exited:
            exited.wait_for(lambda: pid in exits, timeout=30)
        say(f"exit callback: {exits.get(pid)}")
        ok2 = "'testParam'" in message and pid in exits and exits[pid].exit_code == 0
    finally:
        unregister_child_process_exit_callback(on_exit)
    ok = ok1 and ok2
    say("\ndemo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1
