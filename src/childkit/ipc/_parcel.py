"""MessageParcel: a typed, append-only write / sequential read buffer (IPCKit's OHIPCParcel).

A parcel is three lists that travel together: the data bytes, the file descriptors it owns,
and the remote objects (stubs or proxies) it refers to. Every value in the data is preceded
by a one-byte type tag, so a reader that asks for the wrong type, runs past the end, or meets
a malformed parcel from an untrusted peer gets :class:`ParcelReadError`, never garbage.
Nothing is ever unpickled or evaluated.

The parcel knows nothing of sockets or threads: the connection turns its three lists into
wire frames (reading ``_buf``, ``_fds`` and ``_objects``) and builds received parcels with
:meth:`MessageParcel._from_wire`.
A parcel is not thread-safe; one thread writes or reads it at a time.

With the C twins, a large ``bytes`` buffer written is kept by reference, not copied, and
the data is then in pieces (see ``_pieces``).

May import: ``_ashmem``, ``_errors``, ``_limits``, ``_option``, ``_pieces``, ``_recvbuf``
(to give a receive buffer back). Nothing that knows of connections: the parcel is below
them all.
"""

from __future__ import annotations

import os
import struct
import weakref
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex

from childkit.ipc import _parcelwalk, _recvbuf
from childkit.ipc._errors import (
    IPCError,
    IPCErrorCode,
    ParamError,
    ParcelReadError,
    ParcelWriteError,
    resource_error,
)
from childkit.ipc._limits import MAX_PARCEL_DATA, MAX_PARCEL_FDS, MAX_PARCEL_OBJECTS
from childkit.ipc._parcelbase import ParcelBase
from childkit.ipc._pieces import KEEP_BYTES, Pieces, kept, take
from childkit.ipc._tags import (  # the tags re-exported: they are the parcel's
    ASHMEM,
    FIXED,
    INT_RANGES,
    LEN,
    T_ASHMEM,
    T_BOOL,
    T_BYTES,
    T_DOUBLE,
    T_FD,
    T_FLOAT,
    T_INT8,
    T_INT16,
    T_INT64,
    T_REMOTE,
    T_STRING,
    T_TOKEN,
    T_UINT8,
    T_UINT16,
    T_UINT32,
    T_UINT64,
    TAG_NAMES,
    VIEW_BYTES,
)

if TYPE_CHECKING:
    from childkit.ipc._ashmem import Ashmem
    from childkit.ipc._option import MessageOption


def _dup_for_reader(fd: int) -> int:
    """A copy of a parcel's ``fd`` for its reader; :class:`IPCError` if none can be made
    (``OH_IPC_INNER_ERROR``, naming the resource that ran out)."""
    try:
        return os.dup(fd)
    except OSError as exc:
        raise resource_error(exc, "duplicating a received fd for its reader") or IPCError(
            IPCErrorCode.OH_IPC_INNER_ERROR, f"cannot duplicate a received fd: {exc.strerror}",
        ) from None


def _close_fds(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass


class _FdGuard(weakref.ref):  # type: ignore[type-arg]
    """Closes a parcel's fds if the parcel is collected unclosed; ``detach()`` once it is
    closed. Not :class:`weakref.finalize`: that registers each parcel in a process-wide
    registry which interpreter exit iterates while work threads may still read requests
    with fds and add to it (``RuntimeError: dictionary changed size during iteration``)."""

    __slots__ = ("fds",)
    fds: list[int]

    def detach(self) -> None:
        _live_guards.pop(id(self), None)


#: Every guard not yet fired or detached, by id: a weak reference's callback runs only
#: while the reference itself lives. (Keyed by id: a weak reference hashes its referent.)
_live_guards: dict[int, _FdGuard] = {}


def _parcel_collected(guard: _FdGuard, _forget: Any = _live_guards.pop,
                      _close: Any = _close_fds) -> None:
    _forget(id(guard), None)  # (bound at import: module globals may be gone at exit)
    _close(guard.fds)


def _guard_fds(parcel: MessageParcel, fds: list[int]) -> _FdGuard:
    """A guard that closes ``fds`` (the parcel's own list) if ``parcel`` is collected
    before it is closed."""
    guard = _FdGuard(parcel, _parcel_collected)
    guard.fds = fds
    _live_guards[id(guard)] = guard
    return guard


class RemoteObject:
    """Something a request can be sent to: a local :class:`RemoteStub` or a :class:`RemoteProxy`
    (IPCKit's remote object).

    Both can travel inside a :class:`MessageParcel`, which is why the base class lives with
    the parcel. Subclasses implement the methods below.
    """

    __slots__ = ("__weakref__",)

    def send_request(
        self, code: int, data: MessageParcel, option: MessageOption | None = None
    ) -> MessageParcel:
        """Send request ``code`` with ``data``; return the reply parcel (empty for one-way)."""
        raise NotImplementedError

    def get_descriptor(self) -> str:
        """The interface descriptor of the object (a stub's own; a proxy's as sent by the peer)."""
        raise NotImplementedError

    def is_object_dead(self) -> bool:
        """Whether requests to this object can no longer succeed."""
        raise NotImplementedError


class MessageParcel(ParcelBase):
    """A typed parcel of values, file descriptors and remote objects.

    Writes append; reads go forward from the read position. File descriptors written are
    duplicated (the parcel owns its copies and closes them in :meth:`close`); each read of
    one returns a new descriptor that the caller owns. Use as a context manager, or call
    :meth:`close`; a parcel that is garbage collected closes its descriptors too.
    """

    __slots__ = ("__weakref__",)

    # ------------------------------------------------------------------ lifetime
    # close(), ``with``: ParcelBase's; what it cannot do alone is here.
    def _release(self) -> None:
        if self._fds:
            _close_fds(self._fds)
        if self._objects:
            self._objects.clear()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._owner is not None:
            self._give_back(b"")

    def _give_back(self, data: bytes | bytearray) -> None:
        """Replace the view of the adopted receive buffer with ``data`` and return the
        buffer for reuse (unless a view of it is still held somewhere: then the garbage
        collector frees it)."""
        owner, view = self._owner, self._buf
        self._owner = None
        self._buf = data
        try:
            view.release()  # type: ignore[union-attr]
        except BufferError:
            return
        if owner is not None:
            _recvbuf.give_back(owner)

    @property
    def closed(self) -> bool:
        return self._closed

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # A copy would share (and close twice) the fds it owns, with either base class.
        raise TypeError(f"a {type(self).__name__} cannot be copied or pickled (it owns its "
                        "fds and objects); append() it to a new parcel instead")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._buf)} bytes"
        return (
            f"<MessageParcel {state}, read at {self._rpos}, {len(self._fds)} fds, "
            f"{len(self._objects)} objects>"
        )

    # ------------------------------------------------------------------ sizes
    def get_data_size(self) -> int:
        """Bytes written so far."""
        return len(self._buf)

    def get_writable_bytes(self) -> int:
        """Bytes that can still be written before the parcel is full."""
        return MAX_PARCEL_DATA - len(self._buf)

    def get_readable_bytes(self) -> int:
        """Bytes left between the read position and the end of the data."""
        return len(self._buf) - self._rpos

    def get_read_position(self) -> int:
        return self._rpos

    def get_write_position(self) -> int:
        return len(self._buf)

    def rewind_read_position(self, position: int) -> None:
        """Move the read position to ``position`` (0 <= position <= data size)."""
        if isinstance(position, bool) or not isinstance(position, int):
            raise ParamError(f"read position must be an int, not {type(position).__name__}")
        if not 0 <= position <= len(self._buf):
            raise ParamError(f"read position {position} is outside 0..{len(self._buf)}")
        self._rpos = position

    def rewind_write_position(self, position: int) -> None:
        """Truncate the data to ``position`` bytes, dropping fds and objects written after it.

        ``position`` must be the end of a value written earlier (or 0); anything else
        raises :class:`ParamError`.
        """
        _parcelwalk.rewind_write(self, position)

    # ------------------------------------------------------------------ writing
    def _check_writable(self) -> None:
        if self._closed:
            raise ParcelWriteError("the parcel is closed")

    def _own(self) -> bytearray:
        """The data, as a bytearray this parcel may grow: a received parcel's bytes are
        copied once, at its first write (copy on write: a parcel that is only read, as
        nearly all received ones are, is never copied)."""
        buf = self._buf
        if isinstance(buf, bytearray):
            return buf
        owned = (bytearray().join(buf.parts) if buf.__class__ is Pieces  # type: ignore[union-attr]
                 else bytearray(buf))
        if self._owner is not None:
            self._give_back(owned)
        else:
            self._buf = owned
        return owned

    def _put(self, chunk: bytes) -> None:
        if self._closed:
            raise ParcelWriteError("the parcel is closed")
        buf = self._buf
        if len(buf) + len(chunk) > MAX_PARCEL_DATA:
            raise ParcelWriteError(
                f"a parcel holds at most {MAX_PARCEL_DATA} bytes; writing {len(chunk)} more "
                f"to {len(buf)} would exceed it (send large data through Ashmem)"
            )
        if buf.__class__ is bytearray:
            buf += chunk
        else:
            self._own().extend(chunk)

    def _write_int(self, tag: int, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"write_{TAG_NAMES[tag]} needs an int, not {type(value).__name__}")
        try:
            chunk = FIXED[tag].pack(tag, value)
        except struct.error:
            lo, hi = INT_RANGES[tag]
            raise ParamError(f"{value} does not fit {TAG_NAMES[tag]} ({lo}..{hi})") from None
        self._put(chunk)

    def write_int8(self, value: int) -> None:
        self._write_int(T_INT8, value)

    def write_int16(self, value: int) -> None:
        self._write_int(T_INT16, value)

    def write_int64(self, value: int) -> None:
        self._write_int(T_INT64, value)

    def write_uint8(self, value: int) -> None:
        self._write_int(T_UINT8, value)

    def write_uint16(self, value: int) -> None:
        self._write_int(T_UINT16, value)

    def write_uint32(self, value: int) -> None:
        self._write_int(T_UINT32, value)

    def write_uint64(self, value: int) -> None:
        self._write_int(T_UINT64, value)

    def _write_real(self, tag: int, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"write_{TAG_NAMES[tag]} needs a number, not {type(value).__name__}")
        try:
            chunk = FIXED[tag].pack(tag, value)
        except (struct.error, OverflowError):
            raise ParamError(f"{value} does not fit a {TAG_NAMES[tag]}") from None
        self._put(chunk)

    def write_float(self, value: float) -> None:
        """Append a 32-bit float (precision is lost as in C)."""
        self._write_real(T_FLOAT, value)

    def write_double(self, value: float) -> None:
        self._write_real(T_DOUBLE, value)

    def write_bool(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ParamError(f"write_bool needs a bool, not {type(value).__name__}")
        self._put(FIXED[T_BOOL].pack(T_BOOL, value))

    def _write_blob(self, tag: int, blob: bytes | bytearray | memoryview) -> None:
        try:
            view = memoryview(blob)
        except ValueError as exc:  # a released memoryview
            raise ParamError(f"buffer cannot be read: {exc}") from None
        if not view.contiguous:
            raise ParamError("buffer must be contiguous")
        size = view.nbytes
        self._check_writable()
        if len(self._buf) + LEN.size + size > MAX_PARCEL_DATA:
            raise ParcelWriteError(
                f"a parcel holds at most {MAX_PARCEL_DATA} bytes; a {size}-byte "
                f"{TAG_NAMES[tag]} does not fit after {len(self._buf)} (use Ashmem)"
            )
        if blob.__class__ is bytes and size >= KEEP_BYTES and Pieces is not None:
            pieces = kept(self._buf, tag, blob, self._owner is not None)  # by reference
            if pieces is not None:
                self._buf = pieces
                return
        buf = self._own()
        buf += LEN.pack(tag, size)
        buf += view.cast("B") if view.ndim != 1 or view.format != "B" else view

    def write_string(self, value: str) -> None:
        """Append a UTF-8 string. Raises :class:`ParamError` for a non-str or lone surrogate."""
        if not isinstance(value, str):
            raise ParamError(f"write_string needs a str, not {type(value).__name__}")
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ParamError(f"string is not encodable as UTF-8: {exc.reason}") from None
        self._write_blob(T_STRING, data)

    # write_bytes, write_buffer: ParcelBase's, for small bytes; else this.
    def _write_bytes_slow(self, value: bytes | bytearray | memoryview) -> None:
        if isinstance(value, str) or not isinstance(value, (bytes, bytearray, memoryview)):
            try:
                value = memoryview(value)  # any other buffer-protocol object, e.g. an array
            except TypeError:
                raise ParamError(
                    f"write_bytes needs a bytes-like object, not {type(value).__name__}"
                ) from None
        self._write_blob(T_BYTES, value)

    def write_interface_token(self, token: str) -> None:
        """Append an interface descriptor for the stub to check with read_interface_token()."""
        if not isinstance(token, str):
            raise ParamError(f"interface token must be a str, not {type(token).__name__}")
        try:
            data = token.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ParamError(f"interface token is not encodable as UTF-8: {exc.reason}") from None
        self._write_blob(T_TOKEN, data)

    def _add_fd(self, fd: int) -> int:
        if len(self._fds) >= MAX_PARCEL_FDS:
            raise ParcelWriteError(f"a parcel carries at most {MAX_PARCEL_FDS} file descriptors")
        try:
            copy = os.dup(fd)
        except OSError as exc:
            # At the fd limit dup fails for an open fd too: say what ran out, not "bad fd".
            raise resource_error(exc, f"duplicating fd {fd} into the parcel") or ParamError(
                f"fd {fd} is not an open file descriptor ({exc.strerror})") from None
        self._fds.append(copy)
        if self._finalizer is None:
            self._finalizer = _guard_fds(self, self._fds)
        return len(self._fds) - 1

    def write_file_descriptor(self, fd: int) -> None:
        """Append a file descriptor. The parcel keeps its own duplicate; ``fd`` stays yours.

        Raises :class:`ParamError` if ``fd`` is not open, and :class:`IPCError`
        (``OH_IPC_INNER_ERROR``, naming the resource) if no duplicate can be made because
        the process is at its fd limit.
        """
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ParamError(f"file descriptor must be a non-negative int, not {fd!r}")
        self._check_writable()
        if len(self._buf) + FIXED[T_FD].size > MAX_PARCEL_DATA:
            raise ParcelWriteError(f"a parcel holds at most {MAX_PARCEL_DATA} bytes")
        index = self._add_fd(fd)
        self._own().extend(FIXED[T_FD].pack(T_FD, index))

    def write_remote_object(self, obj: RemoteObject) -> None:
        """Append a stub or a proxy; the receiver reads it as an object it can call."""
        if not isinstance(obj, RemoteObject):
            raise ParamError(f"write_remote_object needs a RemoteStub or RemoteProxy, not {obj!r}")
        if obj.is_object_dead():
            raise ParcelWriteError(f"{obj!r} is dead or closed and cannot be sent")
        if len(self._objects) >= MAX_PARCEL_OBJECTS:
            raise ParcelWriteError(f"a parcel carries at most {MAX_PARCEL_OBJECTS} objects")
        self._put(FIXED[T_REMOTE].pack(T_REMOTE, len(self._objects)))
        self._objects.append(obj)

    def write_ashmem(self, ashmem: Ashmem) -> None:
        """Append a shared memory region; the receiver reads an :class:`Ashmem` it owns."""
        from childkit.ipc._ashmem import Ashmem

        if not isinstance(ashmem, Ashmem):
            raise ParamError(f"write_ashmem needs an Ashmem, not {type(ashmem).__name__}")
        name = ashmem.name.encode("utf-8", "surrogateescape")
        self._check_writable()
        if len(self._buf) + ASHMEM.size + len(name) > MAX_PARCEL_DATA:
            raise ParcelWriteError(f"a parcel holds at most {MAX_PARCEL_DATA} bytes")
        index = self._add_fd(ashmem.fileno())
        buf = self._own()
        buf += ASHMEM.pack(T_ASHMEM, index, len(name))
        buf += name

    def append(self, other: MessageParcel) -> None:
        """Append every value of ``other`` (from its start), with its fds and objects."""
        _parcelwalk.append(self, other)

    # ------------------------------------------------------------------ reading
    def _fail(self, what: str, msg: str) -> ParcelReadError:
        return ParcelReadError(f"read_{what} at offset {self._rpos}: {msg}")

    def _take_fixed(self, tag: int) -> Any:
        st = FIXED[tag]
        pos = self._rpos
        buf = self._buf
        if pos + st.size > len(buf):
            if pos >= len(buf):
                raise self._fail(TAG_NAMES[tag], "no data left")
            raise self._fail(TAG_NAMES[tag], "value is truncated")
        if buf[pos] != tag:
            raise self._fail(TAG_NAMES[tag], f"found {TAG_NAMES.get(buf[pos], 'garbage')}")
        self._rpos = pos + st.size
        return st.unpack_from(buf, pos)[1]

    def read_int8(self) -> int:
        return int(self._take_fixed(T_INT8))

    def read_int16(self) -> int:
        return int(self._take_fixed(T_INT16))

    def read_int64(self) -> int:
        return int(self._take_fixed(T_INT64))

    def read_uint8(self) -> int:
        return int(self._take_fixed(T_UINT8))

    def read_uint16(self) -> int:
        return int(self._take_fixed(T_UINT16))

    def read_uint32(self) -> int:
        return int(self._take_fixed(T_UINT32))

    def read_uint64(self) -> int:
        return int(self._take_fixed(T_UINT64))

    def read_float(self) -> float:
        return float(self._take_fixed(T_FLOAT))

    def read_double(self) -> float:
        return float(self._take_fixed(T_DOUBLE))

    def read_bool(self) -> bool:
        value = self._take_fixed(T_BOOL)
        return bool(value)

    def _take_blob(self, tag: int) -> bytes:
        pos = self._rpos
        buf = self._buf
        if buf.__class__ is Pieces:
            whole = take(buf, tag, pos)
            if whole is not None:
                self._rpos = whole[1]
                return whole[0]
            # Read from the joined data (joined once, kept by the Pieces), but keep the
            # pieces: a kept buffer after this value still reads back as itself.
            buf = buf.flat()  # type: ignore[union-attr]
        name = TAG_NAMES[tag]
        if pos + LEN.size > len(buf):
            raise self._fail(name, "no data left" if pos >= len(buf) else "header is truncated")
        found, size = LEN.unpack_from(buf, pos)
        if found != tag:
            raise self._fail(name, f"found {TAG_NAMES.get(found, 'garbage')}")
        end = pos + LEN.size + size
        if end > len(buf):
            raise self._fail(name, f"length {size} runs past the end of the parcel")
        self._rpos = end
        if buf.__class__ is not bytearray or size < VIEW_BYTES:
            return bytes(buf[pos + LEN.size : end])  # of bytes or a view: one copy
        with memoryview(buf) as view:  # one copy, not a bytearray slice and then bytes
            return bytes(view[pos + LEN.size : end])

    def read_string(self) -> str:
        """Read a UTF-8 string. Invalid UTF-8 raises :class:`ParcelReadError`."""
        start = self._rpos
        data = self._take_blob(T_STRING)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self._rpos = start
            raise self._fail("string", "not valid UTF-8") from None

    def read_interface_token(self) -> str:
        start = self._rpos
        data = self._take_blob(T_TOKEN)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self._rpos = start
            raise self._fail("interface_token", "not valid UTF-8") from None

    def _fd_at(self, what: str, index: int) -> int:
        if index >= len(self._fds):
            raise self._fail(what, f"refers to fd #{index} but the parcel carries {len(self._fds)}")
        return self._fds[index]

    def read_file_descriptor(self) -> int:
        """Read a file descriptor: a new descriptor that the caller owns and must close.
        At the fd limit raises :class:`IPCError` (``OH_IPC_INNER_ERROR``) and reads nothing."""
        start = self._rpos
        index = self._take_fixed(T_FD)
        try:
            return _dup_for_reader(self._fd_at("file_descriptor", index))
        except IPCError:  # nothing read: the parcel still holds the fd
            self._rpos = start
            raise

    def read_remote_object(self) -> RemoteObject:
        """Read a remote object: a proxy to the sender's stub, or this process's own stub."""
        start = self._rpos
        index = self._take_fixed(T_REMOTE)
        if index >= len(self._objects):
            self._rpos = start
            raise self._fail("remote_object", f"refers to object #{index}, parcel has "
                             f"{len(self._objects)}")
        obj: RemoteObject = self._objects[index]
        return obj

    def read_ashmem(self) -> Ashmem:
        """Read a shared memory region: a new, unmapped :class:`Ashmem` the caller owns."""
        from childkit.ipc._ashmem import Ashmem

        start = pos = self._rpos
        buf = self._buf
        if buf.__class__ is Pieces:
            buf = self._buf = buf.flat()  # type: ignore[union-attr]
        if pos + ASHMEM.size > len(buf):
            raise self._fail("ashmem", "no data left" if pos >= len(buf) else "truncated")
        tag, index, name_len = ASHMEM.unpack_from(buf, pos)
        if tag != T_ASHMEM:
            raise self._fail("ashmem", f"found {TAG_NAMES.get(tag, 'garbage')}")
        end = pos + ASHMEM.size + name_len
        if end > len(buf):
            raise self._fail("ashmem", "name runs past the end of the parcel")
        fd = self._fd_at("ashmem", index)
        name = bytes(buf[pos + ASHMEM.size : end]).decode("utf-8", "replace")
        try:
            copy = _dup_for_reader(fd)
        except IPCError:
            self._rpos = start
            raise
        self._rpos = end
        try:
            return Ashmem._from_received_fd(copy, name)
        except BaseException:
            self._rpos = start
            raise

    # ------------------------------------------------------------------ transport
    @classmethod
    def _from_wire(
        cls, data: bytes, fds: list[int], objects: list[RemoteObject]
    ) -> MessageParcel:
        """A parcel for reading what a peer sent; takes ownership of ``fds``, and keeps
        ``data`` itself (immutable: not copied unless the parcel is written to)."""
        parcel = cls.__new__(cls)  # skips __init__: this runs once per request
        parcel._buf = data
        parcel._owner = None
        parcel._rpos = 0
        parcel._objects = objects
        parcel._closed = False
        parcel._fds = fds
        parcel._finalizer = _guard_fds(parcel, fds) if fds else None
        return parcel

    @classmethod
    def _received_large(cls, buf: _recvbuf.RecvBuffer, start: int, end: int) -> MessageParcel:
        """``_received`` (ParcelBase's) of ADOPT_BYTES or more: the parcel adopts the
        thread's receive buffer and gives it back when closed, or keeps a record read
        scattered as ``Pieces`` (see _recvbuf)."""
        data, owner = _recvbuf.adopt(start, end)
        parcel = cls._from_wire(data, [], [])  # type: ignore[arg-type]  # (a view)
        parcel._owner = owner
        return parcel

    def _copy_for_reading(self) -> MessageParcel:
        """A read-only-use copy (own fd dups) for a local, in-process call."""
        copy = MessageParcel()
        # Data in pieces is immutable: shared (a write to the copy joins its own).
        copy._buf = self._buf if self._buf.__class__ is Pieces else bytearray(self._buf)
        copy._objects = list(self._objects)
        for fd in self._fds:
            copy._add_fd(fd)
        return copy

