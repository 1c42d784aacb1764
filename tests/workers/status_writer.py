"""A child whose own code meddles with its start-up report (tests/process/test_report_child.py).

``CK_TEST_STATUS`` (the environment of the start call) says what, and when:
``import_<what>`` at import (both modes: args entry ``workers.status_writer:main``),
``<what>`` in ``on_connect()`` (IPC mode). What:

* ``raw_nested``, ``framed_nested``, ``spaces``, ``huge_head``, ``bad_code``, ``extra_key``,
  ``ok_message``: write that to the status pipe, then go on as a good start would (the
  child's own report follows);
* ``lie_fail_live``: a whole, valid failure report, the pipe closed, then carry on alive;
* ``close_live``: close the status pipe, then carry on alive;
* ``hello_twice`` / ``frame_garbage``: write a ``HELLO`` / bytes that are no frame to
  both of its sockets, before its own greeting;
* ``fork_die`` / ``fork_ok``: fork a grandchild that holds the pipe (its pid goes to the
  file ``CK_TEST_GRANDCHILD``; the test kills it), then die at once / carry on.

An isolated child sees none of the start call's environment: tests run a copy of this
file with ``WHAT`` written in (:func:`tests.process.test_report._copy_for`).
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading

from childkit.common._errors import ErrCode
from childkit.ipc import RemoteStub, _wire
from childkit.launcher import _protocol as proto

WHAT = os.environ.get("CK_TEST_STATUS", "")
DOUBLE = 1


class _Doubler(RemoteStub):
    def __init__(self) -> None:
        super().__init__("status_writer")

    def on_remote_request(self, code: int, data: object, reply: object, option: object) -> int:
        reply.write_int32(data.read_int32() * 2)  # type: ignore[attr-defined]
        return 0


def _pipe_write_ends() -> list[int]:
    """The fds that are write ends of pipes, past stdio: the status pipe (and in an
    isolated child its "entered" pipe, which ignores what it is sent)."""
    found = []
    for fd in range(3, 256):
        try:
            if (stat.S_ISFIFO(os.fstat(fd).st_mode)
                    and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY):
                found.append(fd)
        except OSError:
            pass
    return found


def _sockets() -> list[int]:
    """The fds that are sockets: the child's call and serve sockets."""
    return [fd for fd in range(3, 256) if _is_socket(fd)]


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def _framed(body: bytes, size: int | None = None) -> bytes:
    return proto.STATUS_MAGIC + (len(body) if size is None else size).to_bytes(4, "big") + body


_WRITES = {
    "raw_nested": b"[" * 200_000,
    "framed_nested": _framed(b"[" * 60_000),
    "spaces": b" " * (4 << 20),
    "huge_head": _framed(b"", 1 << 30),
    "bad_code": _framed(b'{"code": 16010011, "message": "hello from the child"}'),
    "extra_key": _framed(b'{"code": 0, "message": "", "pid": 1}'),
    "ok_message": _framed(b'{"code": 0, "message": "fine"}'),
}


def _grandchild() -> None:
    pid = os.fork()
    if pid == 0:  # holds every fd of the child, the status pipe too, until killed
        os.setsid()
        threading.Event().wait(120)
        os._exit(0)
    where = os.environ.get("CK_TEST_GRANDCHILD")  # (none in a sandbox: it dies with it)
    if where is not None:
        with open(where, "w") as f:
            f.write(str(pid))


def _meddle(what: str) -> None:
    fds = _pipe_write_ends()
    if what in _WRITES:
        for fd in fds:
            try:
                os.write(fd, _WRITES[what])  # blocks once the pipe is full: until killed
            except OSError:
                pass
    elif what in ("lie_fail_live", "close_live"):
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in fds:
            if what == "lie_fail_live":
                os.write(fd, proto.status_error(ErrCode.NCP_ERR_LIB_LOADING_FAILED, "a lie"))
            os.dup2(null, fd)  # the pipe's end closes; the child's own report goes nowhere
        os.close(null)
    elif what in ("hello_twice", "frame_garbage"):
        frame = _wire.encode_hello(True) if what == "hello_twice" else b"\0" * 16
        for fd in _sockets():
            os.write(fd, frame)  # the child's own greeting follows on its call socket
    elif what in ("fork_die", "fork_ok"):
        _grandchild()
        if what == "fork_die":
            os._exit(0)


if WHAT.startswith("import_"):
    _meddle(WHAT[len("import_"):])


def on_connect() -> RemoteStub:
    if not WHAT.startswith("import_"):
        _meddle(WHAT)
    return _Doubler()


def main_proc() -> None:
    threading.Event().wait()  # until the test closes it


def main(_args: object) -> int:
    threading.Event().wait()  # until the test kills it
    return 0
