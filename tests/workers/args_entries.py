"""Args-mode entries for the child-process tests (``"workers.args_entries:NAME"``)."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from childkit import ChildProcessArgs, get_current_child_process_args, start_native_child_process
from childkit.common._errors import ChildkitError


def write_params(args: ChildProcessArgs) -> int:
    """Write the params through fd "out"."""
    os.write(args.fds["out"], args.entry_params.encode("utf-8"))
    return 0


def exit_with(args: ChildProcessArgs) -> int:
    """Exit with the code given as params."""
    return int(args.entry_params)


def raise_error(args: ChildProcessArgs) -> int:
    raise RuntimeError("the entry raised on purpose")


def kill_self(args: ChildProcessArgs) -> int:
    os.kill(os.getpid(), int(args.entry_params))
    return 0


def kill_own_group(args: ChildProcessArgs) -> int:
    """Send signal ``entry_params`` to this process's group, as code that cleans up after
    its own subprocesses does."""
    os.killpg(os.getpgrp(), int(args.entry_params))
    return 0


def block(args: ChildProcessArgs) -> int:
    """Wait until fd "hold" reaches end of file (or the child is killed)."""
    while os.read(args.fds["hold"], 1):
        pass
    return 0


def describe(args: ChildProcessArgs) -> int:
    """Write a JSON description of the child's view of itself through fd "out".

    ``current_args`` is read on another thread (the seed's 3.3).
    """
    seen: dict[str, object] = {}

    def look() -> None:
        current = get_current_child_process_args()
        seen["current_args"] = None if current is None else [current.entry_params, current.fds]

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    try:
        start_native_child_process("workers.args_entries:exit_with", ChildProcessArgs("0"))
        seen["nested_start"] = 0
    except ChildkitError as exc:
        seen["nested_start"] = int(exc.code)
    # listdir's own descriptor is closed again by the time it returns: drop it.
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd")
                 if os.path.exists(f"/proc/self/fd/{fd}"))
    seen.update(
        pid=os.getpid(),
        params=args.entry_params,
        fds=args.fds,
        open_fds=fds,
        cwd=os.getcwd(),
        comm=Path("/proc/self/comm").read_text().strip(),
        cmdline=Path("/proc/self/cmdline").read_bytes().decode().split("\0")[0],
        argv=sys.argv,
        fd_targets={name: os.readlink(f"/proc/self/fd/{fd}") for name, fd in args.fds.items()},
        env=dict(os.environ),
    )
    # The fd list is written last, through the descriptor that sorts first.
    os.write(args.fds["out"], json.dumps(seen).encode("utf-8"))
    return 0


def echo_size(args: ChildProcessArgs) -> int:
    """Write the params' UTF-8 size and the sorted fd names through the first fd by name."""
    first = sorted(args.fds)[0]
    os.write(args.fds[first], json.dumps(
        [len(args.entry_params.encode("utf-8")), sorted(args.fds)]).encode("utf-8"))
    return 0


def preload_probe(args: ChildProcessArgs) -> int:
    """Write where workers.preload_probe was imported (pid) through fd "out"."""
    from workers import preload_probe as probe

    os.write(args.fds["out"], str(probe.IMPORTED_IN).encode())
    return 0


def c_start_refused(args: ChildProcessArgs) -> int:
    """Call libchild_process.so from this child, as a Python entry that loads C code
    would; write what OH_Ability_CreateNativeChildProcess and
    OH_Ability_IsNativeChildProcessSupported answered to fd "out" (as JSON)."""
    import ctypes

    from childkit import native

    lib = ctypes.CDLL(str(Path(native.get_lib_dir()) / "libchild_process.so"))
    started = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)(lambda code, proxy: None)
    lib.OH_Ability_CreateNativeChildProcess.argtypes = [ctypes.c_char_p, type(started)]
    lib.OH_Ability_IsNativeChildProcessSupported.restype = ctypes.c_bool
    answer = {"create": lib.OH_Ability_CreateNativeChildProcess(b"libx.so", started),
              "supported": bool(lib.OH_Ability_IsNativeChildProcessSupported())}
    os.write(args.fds["out"], json.dumps(answer).encode())
    return 0
