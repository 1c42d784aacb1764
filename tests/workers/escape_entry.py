"""Entries for the isolated-child tests (tests/sandbox/test_isolated_children.py).

Args mode: each writes a JSON report to fd "out" (when it gets that far) and returns 0.
IPC mode (``on_connect``/``main_proc``): a stub that reads the fds it is sent and runs a
representative workload (:func:`representative_workload`) on request.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import json
import os
import sys
import threading
from typing import Any

from childkit import ChildProcessArgs
from childkit.ipc import MessageOption, MessageParcel, RemoteStub


def _write(args: ChildProcessArgs, report: object) -> None:
    os.write(args.fds["out"], json.dumps(report).encode())


def run(args: ChildProcessArgs) -> int:
    """Params (JSON): ``actions_file`` (tests/sandbox/escape_actions.py), ``action`` (a
    function name there), ``ctx`` (its targets). Reports ``{"ok": ..., "error": ...}``;
    the action gets the child's named fds as ``ctx["fds"]``."""
    params = json.loads(args.entry_params)
    spec = importlib.util.spec_from_file_location("escape_actions", params["actions_file"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["escape_actions"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    try:
        result = getattr(module, params["action"])(dict(params["ctx"], fds=args.fds))
        report = {"ok": True, "result": repr(result)}
    except BaseException as exc:  # the failure is the expected outcome when isolated
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    _write(args, report)
    return 0


def report_identity(args: ChildProcessArgs) -> int:
    """Report pid, uid, gid, the environment's names and the sandbox's layers (none in a
    NORMAL child). Params (JSON, optional):
    ``read`` (a path: report whether its text could be read). With an fd "hold", wait
    for its EOF before returning (so that children started together live together)."""
    params = json.loads(args.entry_params or "{}")
    from childkit.sandbox import layer_report

    report: dict[str, Any] = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
                              "env": sorted(os.environ),
                              "layers": {name: [status.supported, status.reason]
                                         for name, status in layer_report().items()}}
    if "read" in params:
        try:
            with open(params["read"]) as f:
                report["read"] = f.read()
        except OSError as exc:
            report["read_error"] = errno.errorcode.get(exc.errno or 0, str(exc))
    _write(args, report)
    if "hold" in args.fds:
        os.read(args.fds["hold"], 1)
    return 0


#: The markers tests/sandbox/memory_markers.py plants (in the launcher's environment, the
#: application's, another child's params): a prefix and 32 hex digits, found by shape so
#: that the searching child need not know them (knowing them, it would hold them).
MARKER_PATTERN = rb"CKMARK" + rb"-[0-9a-f]{32}"


def search_memory(args: ChildProcessArgs) -> int:
    """Read this process's whole readable memory (``/proc/self/mem`` over every readable
    mapping of ``/proc/self/maps``) and report every marker found, as a JSON list on fd
    "out", with how many mappings and bytes were read."""
    import re

    pattern = re.compile(MARKER_PATTERN)
    found: set[str] = set()
    chunk, overlap = 1 << 22, 64
    mappings = read = 0
    with open("/proc/self/maps") as f:
        maps = f.read().splitlines()
    mem = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            mappings += 1
            position = start
            while position < end:
                try:
                    data = os.pread(mem, min(chunk + overlap, end - position), position)
                except OSError:
                    break  # e.g. [vvar]: not readable this way
                read += len(data)
                found.update(m.decode() for m in pattern.findall(data))
                position += chunk
    finally:
        os.close(mem)
    _write(args, {"found": sorted(found), "mappings": mappings, "bytes": read})
    return 0


def burn_cpu(args: ChildProcessArgs) -> int:
    """Burn CPU time forever, or for ``float(params)`` seconds of it."""
    seconds = float(args.entry_params) if args.entry_params else float("inf")
    while sum(os.times()[:2]) < seconds:
        pass
    return 0


def spread(args: ChildProcessArgs) -> int:
    """Spread work over processes, each within a per-process limit, all together past it
    (issue 12, classes 6 and 7). Params (JSON): ``procs`` (how many are forked) and
    ``cpu_s`` (CPU seconds each burns) or ``bytes`` (resident bytes each holds until all
    hold theirs). Returns 0 when all of it is done; a process killed on the way (the OOM
    killer: SIGKILL) is reported as an uncaught MemoryError."""
    import select
    import signal

    params = json.loads(args.entry_params)
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pids = []
    for _ in range(params["procs"]):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            os.close(release_w)
            if "cpu_s" in params:
                while sum(os.times()[:2]) < params["cpu_s"]:
                    pass
            else:
                held = b"\1" * params["bytes"]  # written, so resident
                os.write(ready_w, b"r")
                os.read(release_r, 1)
                del held
            os._exit(0)
        pids.append(pid)
    os.close(ready_w)
    os.close(release_r)
    pidfds = [os.pidfd_open(pid) for pid in pids]
    try:
        if "bytes" in params:  # until all hold theirs, or one of them died
            readies = 0
            while readies < len(pids):
                ready, _, _ = select.select([ready_r, *pidfds], [], [])
                if ready_r not in ready:
                    break
                readies += len(os.read(ready_r, len(pids)))
        os.close(release_w)
        release_w = -1
        statuses = [os.waitpid(pid, 0)[1] for pid in pids]
        killed = [status for status in statuses
                  if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL]
    finally:
        for fd in pidfds:
            os.close(fd)
        os.close(ready_r)
        if release_w >= 0:
            os.close(release_w)
    if killed:
        raise MemoryError(f"{len(killed)} of {len(pids)} processes were killed")
    return 0


def exceed(args: ChildProcessArgs) -> int:
    """Do one thing past a resource limit and let the error go uncaught. Params (JSON):
    ``what`` (memory, processes, threads, open_files, file_size) and ``amount``. Returns
    0 when all of it succeeds (and releases what it took)."""
    params = json.loads(args.entry_params)
    what, amount = params["what"], params["amount"]
    if what == "memory":
        return 0 if len(bytearray(amount)) == amount else 1
    if what == "processes":
        read_fd, write_fd = os.pipe()
        pids = []
        for _ in range(amount):  # on EAGAIN the error escapes; the children end on EOF
            pid = os.fork()
            if pid == 0:
                os.close(write_fd)
                os.read(read_fd, 1)
                os._exit(0)
            pids.append(pid)
        os.close(write_fd)
        for pid in pids:
            os.waitpid(pid, 0)
        os.close(read_fd)
        return 0
    if what == "threads":
        release = threading.Event()
        threads = [threading.Thread(target=release.wait) for _ in range(amount)]
        for thread in threads:
            thread.start()  # past the limit: RuntimeError, uncaught (the child exits)
        release.set()
        for thread in threads:
            thread.join()
        return 0
    if what == "open_files":
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(amount)]
        for fd in fds:
            os.close(fd)
        return 0
    if what == "file_size":
        path = f"/tmp/childkit-fsize-{os.getpid()}"
        with open(path, "wb") as f:
            f.write(b"\0" * amount)
        os.unlink(path)
        return 0
    raise ValueError(f"nothing to exceed called {what!r}")


def proc_status(args: ChildProcessArgs) -> int:
    """Report the security fields of /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "Seccomp"):
                fields[name] = value.strip()
    _write(args, fields)
    return 0


#: Kernel-facing calls the seccomp filter refuses, with harmless arguments (x86_64
#: numbers): keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), bpf with an
#: unknown command, kexec_load with no segment and made-up flags.
KERNEL_CALLS: dict[str, tuple[int, tuple[object, ...]]] = {
    "keyctl": (250, (ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0))),
    "bpf": (321, (ctypes.c_long(9999), None, ctypes.c_long(0))),
    "kexec_load": (246, (ctypes.c_long(0), ctypes.c_long(0), None,
                         ctypes.c_long(0xDEAD0000))),
}


def kernel_calls(args: ChildProcessArgs) -> int:
    """Report each of :data:`KERNEL_CALLS`'s errno name ("ok" if it succeeded)."""
    libc = ctypes.CDLL(None, use_errno=True)
    report = {}
    for name, (number, call_args) in KERNEL_CALLS.items():
        ctypes.set_errno(0)
        result = libc.syscall(number, *call_args)
        report[name] = "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
    _write(args, report)
    return 0


READ_FD = 1  # data: an fd; reply: the string read from its start
QUIT = 2  # one-way: main_proc returns 0

_quit = threading.Event()


class FdReaderStub(RemoteStub):
    """Reads the fds the parent sends (the broker pattern)."""

    def __init__(self) -> None:
        super().__init__("childkit.test.FdReader")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == READ_FD:
            fd = data.read_file_descriptor()
            try:
                reply.write_string(os.pread(fd, 4096, 0).decode())
            finally:
                os.close(fd)
        elif code == QUIT:
            _quit.set()
        else:
            return 1909001
        return 0


def main_proc() -> int:
    _quit.wait()
    return 0


# ---------------------------------------------------------------- the seccomp workload

WORKLOAD = 3  # data: an fd; reply: a JSON report, an Ashmem and a remote object
CALL_BACK = 1  # to the stub a WORKLOAD reply carries: reply with an int32 + 1


class _EchoBack(RemoteStub):
    def __init__(self) -> None:
        super().__init__("childkit.test.EchoBack")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        reply.write_int32(data.read_int32() + 1)
        return 0


def representative_workload(fd: int) -> dict[str, Any]:
    """What a sandboxed interpreter typically does (the seccomp allow-list must let all of
    it through): imports (stdlib C extensions, NumPy), threads, a thread pool, asyncio
    with its self-pipe and an executor, a fork and wait, files in /tmp, randomness,
    hashing, compression, mmap, socketpairs, reading a passed fd, time, signals."""
    import asyncio
    import concurrent.futures
    import decimal
    import hashlib
    import mmap
    import random
    import signal
    import socket
    import subprocess  # noqa: F401 - imported only: its import-time calls must pass
    import tempfile
    import time
    import zlib

    import numpy

    report: dict[str, Any] = {}
    matrix = numpy.arange(256 * 256, dtype=numpy.float64).reshape(256, 256)
    report["numpy"] = float(numpy.linalg.norm(matrix @ matrix.T))
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        report["threads"] = sum(pool.map(lambda n: n * n, range(100)))

    async def main() -> int:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.001)
        return await loop.run_in_executor(None, sum, range(10))

    report["asyncio"] = asyncio.run(main())
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    report["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    with tempfile.NamedTemporaryFile(dir="/tmp") as f:
        f.write(b"x" * 100_000)
        f.flush()
        with mmap.mmap(f.fileno(), 0) as mapped:
            report["mmap"] = len(mapped)
    report["hash"] = hashlib.sha256(os.urandom(64) + random.randbytes(8)).hexdigest()[:8]
    report["zlib"] = len(zlib.decompress(zlib.compress(b"a" * 10_000)))
    report["decimal"] = str(decimal.Decimal(1) / decimal.Decimal(7))[:6]
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"ping")
        report["socketpair"] = b.recv(4).decode()
    report["fd"] = os.pread(fd, 100, 0).decode()
    signal.pthread_sigmask(signal.SIG_BLOCK, ())  # (a request runs in a pool thread)
    os.kill(os.getpid(), signal.SIGURG)  # ignored by default
    report["time"] = time.monotonic() > 0 and time.time() > 0
    report["cwd"] = os.getcwd()
    report["isatty"] = os.isatty(0)
    return report


class WorkloadStub(FdReaderStub):
    """:class:`FdReaderStub` that also runs :func:`representative_workload` (WORKLOAD)."""

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code != WORKLOAD:
            return super().on_remote_request(code, data, reply, option)
        from childkit.ipc import Ashmem

        fd = data.read_file_descriptor()
        try:
            report = representative_workload(fd)
        finally:
            os.close(fd)
        reply.write_string(json.dumps(report))
        shared = Ashmem.create("workload", 4096)
        try:
            shared.map_read_write()
            shared.write(b"from the child")
            reply.write_ashmem(shared)
        finally:
            shared.close()
        reply.write_remote_object(_EchoBack())
        return 0


def on_connect() -> RemoteStub:
    return WorkloadStub()
