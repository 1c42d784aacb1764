"""The isolated template: a clean process that forks every ISOLATED child.

A forked child is a copy of the memory of the process that forked it. The launcher holds
the application's environment (the one it was started with, and every request's changes)
and every request it ever handled, of every child; an isolated child forked from it
could read all of that back (issue 12, classes 1 to 3: frames, heap, a sibling's
params). So isolated children come from a process of their own, which never holds
anything an isolated child may not see:

- it is a fresh interpreter (``python -I``, never a fork of the launcher) started with
  an **empty environment**, configured with ``sys.path`` and the preload modules only;
- it never receives a request: for each isolated start the launcher makes a channel (a
  socketpair), writes the child's whole request into it (entry, params, working
  directory, fds, and of the environment only the variables the sandbox keeps), and
  sends the template a **fork order** carrying the channel's other end and the
  sandbox's shape (read-only paths, limits: what it prepares before the fork). The
  child reads its own request from its own channel after the fork;
- it answers ``forked``, ``failed`` and ``exited`` as a launcher does, straight to the
  application on a duplicate of the launcher's socket to it (each record is one
  datagram of a ``SOCK_SEQPACKET`` socket, so the two writers' records never mix; the
  template never reads from it), sparing every start a relay through the launcher.

The launcher starts it on the first isolated start (then it lives as long as the
launcher) and relays; it ends with the launcher (``PR_SET_PDEATHSIG``, and end of file
on its socket, after which it kills and reaps its children).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

from childkit.launcher import _protocol as proto

#: Runs the template: the launcher's own main, told to be the isolated template.
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from childkit.launcher._template import main; sys.exit(main(sys.argv[1:]))")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = "isolated"
#: What the launcher passes on from the template to the application.
_PASSED_ON = frozenset({"forked", "failed", "exited"})


class IsolatedTemplate:
    """The launcher's handle of its isolated template (started by :meth:`start`)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def start(self, sys_path: list[str], preload: list[str], answers: int,
              orders: int | None = None) -> None:
        """Start the template with an empty environment and configure it (its ``ready``
        comes later and is dropped); it answers on ``answers`` (the launcher's socket to
        the application) and takes fork orders from ``orders`` too (the application's
        socket for isolated requests). OSError if it cannot be started."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            for s in (mine, theirs):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, proto.SOCKET_BUFFER)
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, str(theirs.fileno()),
                 str(os.getpid()), ROLE, str(answers),
                 *([str(orders)] if orders is not None else [])],
                pass_fds=(theirs.fileno(), answers, *([orders] if orders is not None else [])),
                stdin=subprocess.DEVNULL,
                close_fds=True, env={}, cwd="/")
            # Absolute: the template works in / (a relative entry such as "" would name
            # another directory there, and the preload modules would not be found).
            proto.send(mine, {"op": "config", "preload": preload,
                              "sys_path": [os.path.abspath(p) for p in sys_path]})
        except BaseException:
            mine.close()
            self.close()
            raise
        finally:
            theirs.close()
        self.sock = mine

    @property
    def started(self) -> bool:
        return self.sock is not None

    def relay(self, header: dict[str, Any], payload: bytes, fds: list[int]) -> None:
        """Pass one isolated spawn request on (:func:`send_order`; its environment
        already cut to the kept names). Raises as :func:`send_order`."""
        assert self.sock is not None
        send_order(self.sock, header, payload, fds)

    def preload(self, modules: list[Any]) -> None:
        """Have the template import more modules too (its answer is dropped)."""
        if self.sock is not None:
            proto.send(self.sock, {"op": "preload", "modules": modules})

    def pass_on(self, to: socket.socket) -> bool:
        """Read what the template said to the launcher (``ready``, ``preloaded``: dropped;
        anything for the application is sent on to ``to``); ``False`` when the template
        has gone (its children died with it)."""
        assert self.sock is not None
        records, still_open = proto.recv_waiting(self.sock, proto.MAX_RECORD_FDS)
        for header, payload, fds in records:
            try:
                if header["op"] in _PASSED_ON:
                    proto.send(to, header, payload, fds)
            finally:
                proto.close_fds(fds)
        return still_open

    def close(self) -> None:
        """End the template (end of file: it kills and reaps its children) and reap it.
        Shut down, not only closed: the application holds a duplicate of this socket
        (it sends fork orders on it itself), which must not keep the template waiting."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # the template is gone already
            self.sock.close()
            self.sock = None
        if self._proc is not None:
            self._proc.wait()
            self._proc = None


def send_order(template: socket.socket, header: dict[str, Any], payload: bytes,
               fds: list[int]) -> None:
    """Pass one isolated spawn request to the isolated template on ``template``: the
    request itself (``header``, whose environment must already be cut to the names the
    sandbox keeps, ``payload`` and ``fds``) into a channel of its own, and a fork order
    with the channel's other end. ``fds`` stay the caller's. Raises OSError (or
    :class:`proto.RecordTooLarge`, nothing sent) if it cannot be passed on. Used by the
    launcher and, once it has the template's socket, by the application itself (one
    process less on the start path)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, proto.SOCKET_BUFFER)
        proto.send(ours, header, payload, fds)
        proto.send(template, {"op": "spawn", "id": header.get("id"),
                              "sandbox": header["sandbox"]}, fds=[theirs.fileno()])
    finally:
        ours.close()
        theirs.close()


def kept_now(keep: tuple[str, ...]) -> dict[str, Any]:
    """The ``env`` of an isolated request made in the application: of this process's
    environment, only the ``keep`` names, all set (the template's environment is
    empty)."""
    return {"set": {name: os.environ[name] for name in keep if name in os.environ},
            "unset": []}


def kept_environment(header: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    """The ``env`` of an isolated request as the template's child gets it: of the
    environment the child would have (the launcher's, changed as ``header["env"]``
    says), only the ``keep`` names, all set (the template's environment is empty)."""
    changes = header.get("env") or {"set": {}, "unset": []}
    kept = {}
    for name in keep:
        if name in changes["set"]:
            kept[name] = changes["set"][name]
        elif name not in changes["unset"] and name in os.environ:
            kept[name] = os.environ[name]
    return {"set": kept, "unset": []}
