"""A parent process for the no-orphans tests.

``python orphan_parent.py MODE``: starts two args-mode children that block for ever and
one IPC-mode child, prints ``{"launcher": pid, "children": [pids]}`` as one JSON line,
then either waits to be killed (``MODE=wait``) or returns normally (``MODE=exit``) once a
line arrives on stdin (so the test can watch the processes before they go).
"""

from __future__ import annotations

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import childkit

r, w = os.pipe()
pids = [childkit.start_native_child_process("workers.args_entries:block",
                                            childkit.ChildProcessArgs("", {"hold": r}))
        for _ in range(2)]
ipc_child = childkit.connect("workers.echo_worker")
pids.append(ipc_child.pid)
print(json.dumps({"launcher": childkit.prestart_launcher(), "children": pids}), flush=True)
if sys.argv[1] == "wait":
    threading.Event().wait()
sys.stdin.readline()
