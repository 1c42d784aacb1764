"""Walking a parcel's values one by one: ``append`` and ``rewind_write_position``.

The parcel reads and writes its values by position; the two calls that must know where
each value starts and ends, and which fds and objects the values refer to, walk the data
here (:func:`walk`), checking it as they go.

May import: ``_errors``, ``_fdutil``, ``_pieces``, ``_tags``; the parcel only for its type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from childkit.ipc._errors import ParamError, ParcelReadError
from childkit.ipc._fdutil import close_fds
from childkit.ipc._pieces import Pieces
from childkit.ipc._tags import (
    ASHMEM,
    FIXED,
    LEN,
    T_ASHMEM,
    T_BYTES,
    T_FD,
    T_REMOTE,
    T_STRING,
    T_TOKEN,
)

if TYPE_CHECKING:
    from childkit.ipc._parcel import MessageParcel


def walk(parcel: MessageParcel, pos: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (tag, start, end, fd-or-object index) for each value from ``pos``.

    Raises :class:`ParcelReadError` for malformed data. Used by append/rewind.
    """
    buf = parcel._buf
    while pos < len(buf):
        tag = buf[pos]
        payload = -1
        if tag in (T_STRING, T_BYTES, T_TOKEN):
            if pos + LEN.size > len(buf):
                raise ParcelReadError(f"truncated value at offset {pos}")
            end = pos + LEN.size + LEN.unpack_from(buf, pos)[1]
        elif tag == T_ASHMEM:
            if pos + ASHMEM.size > len(buf):
                raise ParcelReadError(f"truncated ashmem at offset {pos}")
            _, payload, name_len = ASHMEM.unpack_from(buf, pos)
            end = pos + ASHMEM.size + name_len
        elif tag in FIXED:
            end = pos + FIXED[tag].size
            if tag in (T_FD, T_REMOTE) and end <= len(buf):
                payload = FIXED[tag].unpack_from(buf, pos)[1]
        else:
            raise ParcelReadError(f"unknown type tag {tag} at offset {pos}")
        if end > len(buf):
            raise ParcelReadError(f"value at offset {pos} runs past the end")
        limit = len(parcel._objects) if tag == T_REMOTE else len(parcel._fds)
        if payload >= limit:
            raise ParcelReadError(f"value at offset {pos} refers to a missing fd or object")
        yield tag, pos, end, payload
        pos = end


def rewind_write(parcel: MessageParcel, position: int) -> None:
    """``parcel.rewind_write_position(position)``."""
    if isinstance(position, bool) or not isinstance(position, int):
        raise ParamError(f"write position must be an int, not {type(position).__name__}")
    if not 0 <= position <= len(parcel._buf):
        raise ParamError(f"write position {position} is outside 0..{len(parcel._buf)}")
    parcel._check_writable()
    keep_fds = keep_objs = 0
    offset = 0
    for tag, start, end, payload in walk(parcel, 0):
        if end > position:
            if start != position:
                raise ParamError(f"write position {position} is inside a written value")
            break
        offset = end
        if tag in (T_FD, T_ASHMEM):
            keep_fds = max(keep_fds, payload + 1)
        elif tag == T_REMOTE:
            keep_objs = max(keep_objs, payload + 1)
    else:
        if offset != position:
            raise ParamError(f"write position {position} is inside a written value")
    close_fds(parcel._fds[keep_fds:])
    del parcel._fds[keep_fds:]
    del parcel._objects[keep_objs:]
    del parcel._own()[position:]
    parcel._rpos = min(parcel._rpos, position)


def append(parcel: MessageParcel, other: MessageParcel) -> None:
    """``parcel.append(other)``."""
    from childkit.ipc._parcel import MessageParcel

    if not isinstance(other, MessageParcel):
        raise ParamError(f"append needs a MessageParcel, not {type(other).__name__}")
    if other is parcel:
        raise ParamError("cannot append a parcel to itself")
    if other._closed:
        raise ParamError("the parcel to append is closed")
    parcel._check_writable()
    if other._buf.__class__ is Pieces:
        other._buf = other._buf.flat()  # type: ignore[union-attr]
    # All or nothing: on any failure drop what this call added, closing its fd copies.
    size, n_fds, n_objects = len(parcel._own()), len(parcel._fds), len(parcel._objects)
    try:
        for tag, start, end, payload in walk(other, 0):
            if tag in (T_FD, T_ASHMEM) or tag == T_REMOTE:
                head = bytes(other._buf[start:end])
                if tag == T_FD:
                    parcel._put(FIXED[T_FD].pack(T_FD, parcel._add_fd(other._fds[payload])))
                elif tag == T_ASHMEM:
                    index = parcel._add_fd(other._fds[payload])
                    name = head[ASHMEM.size :]
                    parcel._put(ASHMEM.pack(T_ASHMEM, index, len(name)) + name)
                else:
                    parcel.write_remote_object(other._objects[payload])
            else:
                parcel._put(bytes(other._buf[start:end]))
    except BaseException:
        close_fds(parcel._fds[n_fds:])
        del parcel._fds[n_fds:]
        del parcel._objects[n_objects:]
        del parcel._own()[size:]
        raise
