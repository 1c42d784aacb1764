"""A parcel's storage and its hot path: what every sync call does to its two parcels.

:class:`MessageParcel` (``_parcel``) subclasses :data:`ParcelBase`, which holds the seven
fields of a parcel and runs the few steps that a small request or reply takes on each
side: an empty parcel made, a small ``bytes`` written (``write_bytes``), a buffer read
back (``read_bytes``), an int32 written and read, the parcel closed (``close``, a
``with`` block), and a small received parcel made (``_received``). The C twin also
makes the common large cases (a large ``bytes`` kept by reference as ``Pieces``, a
buffer read back as its piece, a parcel of a record read scattered: see ``_pieces`` and
``_recvbuf``), exactly as the methods below would. Anything else
those calls meet (another type, a large buffer, data in pieces, fds to close, a receive
buffer to give back) goes to the parcel's own methods: ``_write_bytes_slow``,
``_take_blob``, ``_write_int``, ``_take_fixed``, ``_release`` and ``_received_large``,
so the behaviour is theirs.

``ParcelBase`` is the C twin (``_speedups.ParcelBase``) when built, else
:class:`PyParcelBase` below, the reference; the tests run both.

May import: ``_accel``, ``_limits``, ``_pieces``, ``_recvbuf``, ``_tags``. Nothing above.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Protocol, Self

from childkit.ipc import _accel
from childkit.ipc._limits import MAX_PARCEL_DATA
from childkit.ipc._pieces import KEEP_BYTES
from childkit.ipc._recvbuf import ADOPT_BYTES, RecvBuffer
from childkit.ipc._tags import I32, LEN, T_BYTES, T_INT32

if TYPE_CHECKING:
    from childkit.ipc._parcel import RemoteObject


class FdGuard(Protocol):
    """What closes a parcel's fds if it is collected unclosed (``_parcel._FdGuard``)."""

    def detach(self) -> None: ...

_HEAD = LEN.size  # a buffer's tag and length


class PyParcelBase:
    """The fields of a parcel and its hot path in Python (see the module docstring)."""

    __slots__ = ("_buf", "_closed", "_fds", "_finalizer", "_objects", "_owner", "_rpos")

    def __init__(self) -> None:
        # A parcel read from a peer holds the bytes it arrived in (bytes, or a view of the
        # receive buffer it adopted, ``_owner``) until its first write makes them a
        # bytearray (see MessageParcel._own).
        self._buf: bytes | bytearray | memoryview = bytearray()
        self._owner: RecvBuffer | None = None
        self._rpos = 0
        self._fds: list[int] = []
        self._objects: list[RemoteObject] = []
        self._closed = False
        self._finalizer: FdGuard | None = None

    def close(self) -> None:
        """Release the parcel's file descriptors and objects. Idempotent.

        A parcel received in a large record also gives back the buffer it was read into,
        for the next record: its data is gone (it reads as empty).
        """
        self._closed = True
        if self._fds or self._objects or self._finalizer is not None or self._owner is not None:
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._closed = True  # close(), inlined: the end of nearly every parcel's life
        if self._fds or self._objects or self._finalizer is not None or self._owner is not None:
            self._release()

    def write_bytes(self, value: bytes | bytearray | memoryview) -> None:
        """Append a bytes-like value (copied once, into the parcel)."""
        if value.__class__ is bytes:
            buf = self._buf
            if (buf.__class__ is bytearray and len(value) < KEEP_BYTES and not self._closed
                    and len(buf) + _HEAD + len(value) <= MAX_PARCEL_DATA):
                buf += LEN.pack(T_BYTES, len(value))
                buf += value
                return
        self._write_bytes_slow(value)

    write_buffer = write_bytes

    def read_bytes(self) -> bytes:
        """Read a bytes value. Raises ParcelReadError if that is not next."""
        buf = self._buf
        if buf.__class__ is bytes:  # a small received parcel (bytearrays: _take_blob)
            pos = self._rpos
            if pos + _HEAD <= len(buf) and buf[pos] == T_BYTES:
                end = pos + _HEAD + LEN.unpack_from(buf, pos)[1]
                if end <= len(buf):
                    self._rpos = end
                    return buf[pos + _HEAD : end]
        return self._take_blob(T_BYTES)

    read_buffer = read_bytes

    def write_int32(self, value: int) -> None:
        """Append a signed 32-bit int. Raises :class:`ParamError` if it does not fit."""
        # The hot path of small requests: pack directly, check only on failure.
        if value.__class__ is int:
            try:
                chunk = I32.pack(T_INT32, value)
            except struct.error:
                pass
            else:
                self._put(chunk)
                return
        self._write_int(T_INT32, value)

    def read_int32(self) -> int:
        """Read a signed 32-bit int. Raises :class:`ParcelReadError` if that is not next."""
        pos = self._rpos
        buf = self._buf
        if pos + 5 <= len(buf) and buf[pos] == T_INT32:
            self._rpos = pos + 5
            return int(I32.unpack_from(buf, pos)[1])
        return int(self._take_fixed(T_INT32))

    @classmethod
    def _received(cls, buf: RecvBuffer, start: int, end: int) -> Self:
        """A parcel for reading the plain (no fds, no objects) parcel data
        ``buf[start:end]`` of the record just read into this thread's receive buffer:
        copied while small, else see ``MessageParcel._received_large``."""
        if end - start >= ADOPT_BYTES:
            return cls._received_large(buf, start, end)
        return cls._from_wire(buf[start:end], [], [])

    # What the parcel implements (see MessageParcel).
    def _release(self) -> None:
        raise NotImplementedError

    def _write_bytes_slow(self, value: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def _take_blob(self, tag: int) -> bytes:
        raise NotImplementedError

    def _take_fixed(self, tag: int) -> Any:
        raise NotImplementedError

    def _put(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _write_int(self, tag: int, value: int) -> None:
        raise NotImplementedError

    @classmethod
    def _received_large(cls, buf: RecvBuffer, start: int, end: int) -> Self:
        raise NotImplementedError

    @classmethod
    def _from_wire(cls, data: bytes, fds: list[int], objects: list[RemoteObject]) -> Self:
        raise NotImplementedError


def _c_twin() -> type[PyParcelBase] | None:
    speedups = _accel.speedups
    # Built from another checkout's constants? Then it would not check what we check.
    if speedups is None or getattr(speedups, "ParcelBase", None) is None or (
            speedups.MAX_PARCEL_DATA, speedups.PARCEL_SMALL_BYTES) != (
            MAX_PARCEL_DATA, KEEP_BYTES) or KEEP_BYTES != ADOPT_BYTES:
        return None
    return speedups.ParcelBase  # type: ignore[no-any-return]


if TYPE_CHECKING:
    ParcelBase = PyParcelBase
else:
    #: The base class of MessageParcel: the C twin if built, else :class:`PyParcelBase`.
    ParcelBase = _c_twin() or PyParcelBase
