"""The seed article's scenario III: start a child with parameters and file descriptors.

``start_native_child_process`` (``OH_Ability_StartNativeChildProcess``) runs
:func:`child_main` of this very module in a child, with the string ``"testParam"`` and
two fds by name: a pipe to write back through and a file to read. The child reads its
arguments the two ways the seed shows (its parameter, and
``get_current_child_process_args()`` from another thread) and answers through the pipe.

Run: ``python examples/seed_args_child.py`` (exit status 0 on success).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading

import childkit
from childkit import ChildExitInfo, ChildProcessArgs


def child_main(args: ChildProcessArgs) -> int:
    """The child's entry (``"seed_args_child:child_main"``): runs in the child only."""
    seen: list[ChildProcessArgs | None] = []
    # The seed's 3.3: the args can be read later, from any thread of the child.
    thread = threading.Thread(target=lambda: seen.append(childkit.get_current_child_process_args()))
    thread.start()
    thread.join()
    again = seen[0]
    with os.fdopen(args.fds["data"], "r") as f:  # the child owns its fds: close them
        content = f.read()
    answer = {
        "pid": os.getpid(),
        "params": args.entry_params,
        "fd_names": sorted(args.fds),
        "same_args_from_thread": again is not None and again.entry_params == args.entry_params,
        "data": content,
    }
    os.write(args.fds["reply"], json.dumps(answer).encode())
    os.close(args.fds["reply"])
    return 0


def main() -> int:
    exited = threading.Event()
    exits: dict[int, ChildExitInfo] = {}

    def on_exit(pid: int, info: ChildExitInfo) -> None:
        exits[pid] = info
        exited.set()

    childkit.register_child_process_exit_callback(on_exit)
    read_end, write_end = os.pipe()
    try:
        with tempfile.TemporaryFile("w+") as data:
            data.write("hello from the parent's file\n")
            data.flush()
            data.seek(0)
            args = ChildProcessArgs("testParam", {"reply": write_end, "data": data.fileno()})
            pid = childkit.start_native_child_process("seed_args_child:child_main", args)
        os.close(write_end)  # the child has its own copy; ours would keep the pipe open
        write_end = -1
        print(f"started child pid {pid} with params 'testParam' and fds 'reply', 'data'")
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        answer = json.loads(b"".join(chunks))
        print(f"the child answered: {answer}")
        if not exited.wait(30):
            print("the child did not exit within 30 s", file=sys.stderr)
            return 1
        print(f"exit callback: {exits[pid]}")
        ok = (answer["pid"] == pid and answer["params"] == "testParam"
              and answer["fd_names"] == ["data", "reply"] and answer["same_args_from_thread"]
              and answer["data"] == "hello from the parent's file\n"
              and exits[pid].exit_code == 0)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
        childkit.unregister_child_process_exit_callback(on_exit)
    print("seed_args_child: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
