"""The agent of a C parent: childkit's launcher and child management for libchild_process.so.

A C program calling ``OH_Ability_*`` has no Python of its own, so on its first call
``libchild_process.so`` starts this module (``python -m childkit.native._agent FD``, with
the interpreter childkit was built with, or ``$CHILDKIT_PYTHON``) on one end of a
SOCK_SEQPACKET socketpair, inherited as ``FD``. The agent is the C program's stand-in
toward the rest of childkit: its manager starts the launcher, keeps the 50-child limit,
reaps children and reports exits; for IPC mode it hands the parent's ends of the child's
two sockets to the C program, which talks to the child itself (libipc_capi.so) - the
agent is never on the request path.

Protocol (one record each way, requests answered in order):

* C -> agent: a JSON object ``{"op": ..., "id": N, ...}``, fds as SCM_RIGHTS:
  ``ipc`` (``entry``, ``isolated``, ``isolation_uid``, ``name``), ``args`` (also
  ``params``, ``fd_names``, with the fds), ``kill`` (``pid``).
* agent -> C: text. ``ok ID PID`` (for ``ipc`` with the parent's call and serve sockets
  as fds), ``err ID CODE MESSAGE``, for ``ipc`` first ``acc ID`` once its checks passed
  (the C call returns; ``ok``/``err`` then go to its callback), and unasked
  ``exit PID SIGNAL`` for each child that ends (signal 0 for a normal exit), also an
  args-mode child whose entry did not load (its ``ok`` comes first).

The agent dies with the C program (parent-death signal, and end-of-file on the socket),
and its launcher and children die with it.
"""

from __future__ import annotations

import array
import ctypes
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from childkit.common import ChildkitError, ErrCode, _sysutil

if TYPE_CHECKING:
    from childkit.process._child import ChildStartFailed

_MAX_RECORD = 256 * 1024
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the C program is already gone
        os._exit(0)


class Agent:
    """Serves one C program on ``sock``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()

    def send(self, text: str, fds: list[int] | None = None) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())
                     ] if fds else []
        with self.send_lock:
            self.sock.sendmsg([text.encode("utf-8", "replace")], ancillary)

    def on_exit(self, pid: int, info: Any) -> None:
        self.send(f"exit {pid} {info.signal or 0}")

    def serve(self) -> None:
        from childkit.process import _children

        _children.register_child_process_exit_callback(self.on_exit)
        while True:
            data, ancdata, _flags, _addr = self.sock.recvmsg(
                _MAX_RECORD, socket.CMSG_SPACE(64 * array.array("i").itemsize))
            fds: list[int] = []
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
            if not data:
                for fd in fds:
                    os.close(fd)
                return  # the C program closed its end (or exited)
            try:
                request = json.loads(data)
                ident = int(request["id"])
            except (ValueError, KeyError, TypeError):
                for fd in fds:
                    os.close(fd)
                continue
            # Starts wait for their children; each runs on its own thread so a slow one
            # does not hold up the others (the C side matches answers by id).
            threading.Thread(target=self.handle, args=(ident, request, fds),
                             name=f"agent-{request.get('op')}", daemon=True).start()

    def handle(self, ident: int, request: dict[str, Any], fds: list[int]) -> None:
        try:
            op = request.get("op")
            if op == "ipc":
                pid, ends = _start_ipc(request, lambda: self.send(f"acc {ident}"))
                try:
                    self.send(f"ok {ident} {pid}", ends)
                finally:
                    for fd in ends:
                        os.close(fd)
            elif op == "args":
                pid, failed = _start_args(request, fds)
                self.send(f"ok {ident} {pid}")
                if failed is not None:  # it has ended: the exit callbacks hear of it
                    info = failed.exit_info
                    self.send(f"exit {pid} {info.signal or 0 if info is not None else 0}")
            elif op == "kill":
                from childkit.process import _children

                _children.kill_child_process(int(request["pid"]))
                self.send(f"ok {ident} 0")
            else:
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, f"unknown request {op!r}")
        except ChildkitError as exc:
            self.send(f"err {ident} {int(exc.code)} {exc.message}")
        except Exception as exc:  # a bug here must still answer the C caller
            self.send(f"err {ident} {int(ErrCode.NCP_ERR_INTERNAL)} "
                      f"{type(exc).__name__}: {exc}")
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _options(request: dict[str, Any]) -> Any:
    from childkit.process._options import ChildProcessOptions, IsolationMode

    return ChildProcessOptions(
        isolation_mode=IsolationMode.ISOLATED if request.get("isolated") else IsolationMode.NORMAL,
        isolation_uid=bool(request.get("isolation_uid")),
        process_name=request.get("name") or None)


def _start_ipc(request: dict[str, Any], accepted: Callable[[], None]) -> tuple[int, list[int]]:
    """An IPC-mode child whose two sockets' parent ends go to the C program. ``accepted``
    runs once the entry and options passed their checks and a child slot is taken: the
    C call returns then, and the outcome goes to its callback."""
    from childkit.ipc import channel_socketpairs
    from childkit.process import _children
    from childkit.process._manager import START_TIMEOUT, manager

    entry = str(request["entry"])
    opts, deadline = _children._prepare_ipc(entry, _options(request), START_TIMEOUT)
    mgr = manager()
    slot = mgr.reserve()
    try:
        accepted()
    except BaseException:
        slot.release()
        raise
    local, remote = channel_socketpairs()
    try:
        with slot:
            spawned = _children._spawn_entry(opts, entry, "ipc")
            child = mgr.spawn(slot, mode="ipc", entry=spawned, params="", fd_names=[],
                              fds=[remote[0].fileno(), remote[1].fileno()],
                              process_name=_children._process_name(opts, entry),
                              deadline=deadline,
                              sandbox=_children._sandbox_header(opts, spawned))
    except BaseException:
        for sock in (*local, *remote):
            sock.close()
        raise
    for sock in remote:
        sock.close()
    mgr.announce(child)
    return child.pid, [local[0].detach(), local[1].detach()]


def _start_args(request: dict[str, Any],
                fds: list[int]) -> tuple[int, ChildStartFailed | None]:
    """An args-mode child's pid, and for one whose entry did not load, why.

    As OpenHarmony's ``OH_Ability_StartNativeChildProcess`` (whose XTS suite expects a pid
    for ``"libnoexisted.so:Main"``), a child that was forked but could not load its
    library or function is a started child that ended: its pid is the answer, the reason
    goes to stderr, and the exit callbacks hear of its end.
    """
    from childkit.entry._args import ChildProcessArgs
    from childkit.process import _children
    from childkit.process._child import ChildStartFailed

    names = [str(n) for n in request.get("fd_names", [])]
    if len(names) != len(fds):
        raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                            f"{len(names)} fd names came with {len(fds)} fds")
    args = ChildProcessArgs(entry_params=str(request.get("params", "")),
                            fds=dict(zip(names, fds, strict=True)))
    try:
        return _children.start_native_child_process(str(request["entry"]), args,
                                                    _options(request)), None
    except ChildStartFailed as exc:
        if exc.code != ErrCode.NCP_ERR_LIB_LOADING_FAILED:
            raise
        sys.stderr.write(f"childkit: child {exc.pid} ended: {exc.message}\n")
        return exc.pid, exc


def main(argv: list[str]) -> int:
    """Serve the C program on the inherited socket ``argv[1]``; 0 when it goes away."""
    _die_with_parent()
    fd = int(argv[1])
    # Nothing the C program had open is the agent's: a pipe's write end kept here would
    # deny the program its end-of-file for the agent's whole life. (libchild_process.so
    # closes them in the spawn where glibc can, 2.34 on; this covers the rest.)
    _sysutil.close_all_fds_except({0, 1, 2, fd})
    sock = socket.socket(fileno=fd)
    os.set_inheritable(sock.fileno(), False)
    try:
        Agent(sock).serve()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
