"""The messages between an application and its launcher, and from a child to its starter.

Application <-> launcher: one ``AF_UNIX SOCK_SEQPACKET`` socket pair. A record is a
4-byte big-endian header length, a JSON object (the header), then an optional raw
payload (a spawn request's ``entry_params``, up to 150 KB of UTF-8, sent raw so that no
escaping can grow it), with file descriptors attached as ``SCM_RIGHTS``. Nothing is
pickled: the launcher and the children only ever send JSON.

Application -> launcher:

* ``{"op": "config", "sys_path": [...], "preload": [...]}``: the first record.
* ``{"op": "preload", "modules": [...]}``: import more modules into the template.
* ``{"op": "spawn", "id", "mode", "entry", "fd_names", "process_name", "cwd",
  "sys_path", "sandbox"}``, plus ``"env": {"set": {...}, "unset": [...]}`` when the
  application's environment changed since the launcher started, with the params as
  payload and fds ``[status_w, *fds]``: ``status_w``
  is the write end of a pipe on which the child reports its start-up; ``fds`` are the
  named fds (args mode, in ``fd_names`` order) or the call and serve sockets (IPC mode).

Launcher -> application:

* ``{"op": "ready", "pid", "preload_errors": [...]}`` once the template is ready.
* ``{"op": "forked", "children": [[id, pid], ...]}`` with a pidfd of each new child
  attached, in the same order: one record answers every spawn request the launcher
  found waiting together and forked back to back (at most :data:`MAX_RECORD_FDS`).
* ``{"op": "failed", "id", "message"}`` if no child could be forked.
* ``{"op": "exited", "pid", "status"}`` with the raw wait status, after reaping.

Isolated requests go on a second socket pair, made with the launcher: the application
writes each request into a channel of its own and sends a fork order
(``{"op": "spawn", "id", "sandbox"}`` with the channel's other end;
:func:`childkit.launcher._isolated.send_order`). The launcher starts the isolated
template when the first order waits there and hands it its end; the template answers
(``forked``, ``failed``, ``exited``) on the application's control socket.

Child -> starter, on the status pipe, then the child closes its end: one framed report,
:data:`STATUS_MAGIC`, the body's length (4 bytes, big-endian, at most
:data:`MAX_STATUS_BODY`), then the body, ``{"code": int, "message": str}`` in JSON (those
two keys, nothing else); code 0 (``NCP_NO_ERROR``, message empty) means the entry
resolved (and, in IPC mode, ``on_connect()`` gave a stub and the connection is up),
any other code is one of :data:`START_CODES`. The frame, not the pipe's end of file,
ends the report: a process the child forked while starting may hold the pipe open
for as long as it lives. The starter reads no more than one frame, and anything else
on the pipe (bytes the entry's own code wrote to it, say) makes the report malformed.
"""

from __future__ import annotations

import array
import json
import socket
import struct
from typing import Any

from childkit.common._errors import ErrCode
from childkit.ipc import close_fds as close_fds
from childkit.ipc import received_fds, rights

_LEN = struct.Struct(">I")
#: The largest record: 150 KB of params plus headers (sys.path, names) with room to spare.
MAX_RECORD = 512 * 1024
#: The most fds on one record: the status pipe plus 16 named fds.
MAX_RECORD_FDS = 32
SOCKET_BUFFER = 1 << 21
_ANC_SPACE = socket.CMSG_SPACE(MAX_RECORD_FDS * array.array("i").itemsize)


# Plain ints: combining the socket module's flag enums costs more than the syscall.
_RECV_WAIT = int(socket.MSG_CMSG_CLOEXEC)
_RECV_NOWAIT = int(socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
_TRUNCATED = int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
_SEND_FLAGS = int(socket.MSG_NOSIGNAL)


class ProtocolError(Exception):
    """A record that does not follow the protocol (a bug or a corrupted peer)."""


class RecordTooLarge(ValueError):
    """A record to send is larger than :data:`MAX_RECORD`: the receiver would get it cut."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a record of {size} bytes exceeds {MAX_RECORD}")
        self.size = size


def encode(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """One record: header length, JSON header, raw payload."""
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return _LEN.pack(len(body)) + body + payload


def decode(record: bytes) -> tuple[dict[str, Any], bytes]:
    """Split a record into its header and payload. Raises :class:`ProtocolError`."""
    if len(record) < _LEN.size:
        raise ProtocolError(f"record of {len(record)} bytes is too short")
    (size,) = _LEN.unpack_from(record)
    end = _LEN.size + size
    if end > len(record):
        raise ProtocolError(f"header of {size} bytes overruns a {len(record)}-byte record")
    try:
        header = json.loads(record[_LEN.size : end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ProtocolError("header is not an object with an 'op'")
    return header, record[end:]


def send(sock: socket.socket, header: dict[str, Any], payload: bytes = b"",
         fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send one record with ``fds`` attached (the caller keeps its copies of them).

    Raises :class:`RecordTooLarge` (nothing sent) if it exceeds :data:`MAX_RECORD`.
    """
    data = encode(header, payload)
    if len(data) > MAX_RECORD:
        raise RecordTooLarge(len(data))
    # MSG_NOSIGNAL: a dead peer is an EPIPE error here, never a SIGPIPE, whatever the
    # embedding application did with that signal's disposition.
    anc = rights(fds)
    sock.sendmsg([data], anc, _SEND_FLAGS)


Record = tuple[dict[str, Any], bytes, list[int]]


def recv(sock: socket.socket, *, wait: bool = True) -> Record | None:
    """Receive one record; ``None`` at end of stream. The caller owns the returned fds.

    With ``wait=False`` it raises :class:`BlockingIOError` if no record is waiting.
    Received fds are close-on-exec. Raises :class:`ProtocolError` (after closing any
    received fds) for a truncated or malformed record.
    """
    data, anc, flags, _addr = sock.recvmsg(MAX_RECORD, _ANC_SPACE,
                                           _RECV_WAIT if wait else _RECV_NOWAIT)
    fds = received_fds(anc)
    if not data and not fds:
        return None
    try:
        if flags & _TRUNCATED:
            raise ProtocolError("record truncated")
        header, payload = decode(data)
    except ProtocolError:
        close_fds(fds)
        raise
    return header, payload, fds


def recv_waiting(sock: socket.socket, limit: int) -> tuple[list[Record], bool]:
    """Wait for one record, then take every other one already waiting, up to ``limit``.

    Returns the records in order and whether the stream is still open (``False``: end
    of stream came after them). The caller owns every returned fd. A malformed record
    raises :class:`ProtocolError` after the fds of the records before it are closed.
    """
    records: list[Record] = []
    try:
        while len(records) < limit:
            try:
                got = recv(sock, wait=not records)
            except BlockingIOError:
                break
            if got is None:
                return records, False
            records.append(got)
    except BaseException:
        for _header, _payload, fds in records:
            close_fds(fds)
        raise
    return records, True


#: What a start-up report begins with: bytes written to the status pipe by anything but
#: :func:`status_ok` / :func:`status_error` are found out at their first four.
STATUS_MAGIC = b"CKs1"
_STATUS_HEAD = struct.Struct(">4sI")
#: The bytes before a report's body: the magic and the body's length.
STATUS_HEAD_SIZE = _STATUS_HEAD.size
#: A start-up error message is cut to this many characters (an exception's text can be
#: arbitrarily long; the report only has to say what went wrong).
MAX_STATUS_MESSAGE = 4000
#: The largest report body a starter takes. The largest :func:`status_error` writes is
#: about 48 KB: a message cut to ``MAX_STATUS_MESSAGE + 3`` characters, each at most 12
#: bytes of JSON (a character outside the BMP is written as two ``\uXXXX`` escapes),
#: plus the code and keys; 64 KiB leaves room to spare and fits the pipe's buffer.
MAX_STATUS_BODY = 64 * 1024
#: The codes a child's start-up may end with: what resolving an entry, entering a
#: sandbox, ``on_connect()`` and the C kit's set-up raise in the child.
START_CODES: frozenset[int] = frozenset({
    ErrCode.NCP_NO_ERROR, ErrCode.NCP_ERR_INVALID_PARAM, ErrCode.NCP_ERR_NOT_SUPPORTED,
    ErrCode.NCP_ERR_INTERNAL, ErrCode.NCP_ERR_LIB_LOADING_FAILED,
    ErrCode.NCP_ERR_CONNECTION_FAILED,
})


def _framed(code: int, message: str) -> bytes:
    # ASCII JSON: its size follows from the message's length alone (see MAX_STATUS_BODY).
    body = json.dumps({"code": code, "message": message}, separators=(",", ":")).encode("ascii")
    return _STATUS_HEAD.pack(STATUS_MAGIC, len(body)) + body


_STATUS_OK = _framed(0, "")


def status_ok() -> bytes:
    """The child's start-up report: all well."""
    return _STATUS_OK


def status_error(code: int, message: str) -> bytes:
    """The child's start-up report: failed with ``code`` (message cut to 4000 chars).

    A ``code`` that is not one of :data:`START_CODES` (or is 0) is reported as
    ``NCP_ERR_INTERNAL`` naming it, so that the starter, which refuses any other code,
    still hears what happened.
    """
    if code not in START_CODES or code == ErrCode.NCP_NO_ERROR:
        message = f"(start-up failed with code {int(code)}) {message}"
        code = ErrCode.NCP_ERR_INTERNAL
    if len(message) > MAX_STATUS_MESSAGE:
        message = message[:MAX_STATUS_MESSAGE] + "..."
    return _framed(int(code), message)


def status_body_size(head: bytes) -> int:
    """The body length a report's first :data:`STATUS_HEAD_SIZE` bytes announce.

    Raises :class:`ProtocolError` if they are not a report's head or announce a body over
    :data:`MAX_STATUS_BODY` bytes (so a starter never reads, nor keeps, more)."""
    magic: bytes
    size: int
    magic, size = _STATUS_HEAD.unpack(head)
    if magic != STATUS_MAGIC:
        raise ProtocolError(f"the status pipe carries {head[:16]!r}, not a start-up report")
    if size > MAX_STATUS_BODY:
        raise ProtocolError(f"a start-up report of {size} bytes; at most {MAX_STATUS_BODY} "
                            "are taken")
    return size


def parse_status(data: bytes) -> tuple[int, str]:
    """Read one whole framed start-up report (head and body, nothing more).

    Returns its code (one of :data:`START_CODES`) and message. Raises
    :class:`ProtocolError`, never anything else, if it is malformed in any way: a bad
    head, a body over :data:`MAX_STATUS_BODY` or of another length than announced, not
    JSON (nested too deep included), other keys or types than ``code`` (int) and
    ``message`` (str), a code the start path never reports, a message over
    ``MAX_STATUS_MESSAGE + 3`` characters or one with code 0."""
    if len(data) < STATUS_HEAD_SIZE:
        raise ProtocolError(f"a start-up report of {len(data)} bytes has no head")
    size = status_body_size(data[:STATUS_HEAD_SIZE])
    body = data[STATUS_HEAD_SIZE:]
    if len(body) != size:
        raise ProtocolError(f"a start-up report announced {size} bytes and carries {len(body)}")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: nesting deeper than the interpreter's limit (a body of "[[[...").
        raise ProtocolError(f"start-up report is not JSON: {type(exc).__name__}") from None
    if type(obj) is not dict or set(obj) != {"code", "message"}:
        raise ProtocolError("start-up report is not an object of 'code' and 'message'")
    code, message = obj["code"], obj["message"]
    if type(code) is not int or type(message) is not str:
        raise ProtocolError("start-up report lacks an int 'code' and a str 'message'")
    if code not in START_CODES:
        raise ProtocolError(f"start-up report carries code {code}, which no start reports")
    if len(message) > MAX_STATUS_MESSAGE + 3 or (code == 0 and message):
        raise ProtocolError("start-up report carries a message too long or with success")
    return code, message
