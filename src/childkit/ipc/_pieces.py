"""Parcel data in pieces: large ``bytes`` buffers kept by reference, not copied (issue 16).

With the C twins, a ``bytes`` object of :data:`KEEP_BYTES` or more written into a parcel
(``write_buffer``, or a string's UTF-8) is not copied: ``bytes`` cannot change, so the
parcel keeps the object itself, and its data becomes a :data:`Pieces`: the bytes written
before it (copied once more, so only when they are fewer than the buffer's) with the
buffer's tag and length, then the buffer. The transport sends the pieces gathered by
``sendmsg``; a received parcel that came scattered (see ``_recvbuf``) is held the same
way, and ``read_buffer`` of such a piece returns it as it is (:func:`take`). Anything
else that needs the data in one piece (another write, other reads, ``append``) joins it
once (``Pieces.flat``, or the buffer protocol).

May import: ``_accel``. Nothing above: the parcel imports this.
"""

from __future__ import annotations

import struct
from typing import Any

from childkit.ipc import _accel

#: From this size up a ``bytes`` buffer written into a parcel is kept by reference.
KEEP_BYTES = 8192
#: ``_speedups.Pieces`` (data in a few bytes objects), or ``None`` without the C twins.
Pieces: Any = _accel.speedups.Pieces if _accel.speedups is not None else None
MAX_PIECES = 8  # _speedups.c's MAX_PIECES
_HEAD = struct.Struct("<BI")  # a blob's tag and u32 length (the parcel's _LEN)


def kept(data: Any, tag: int, blob: bytes, adopted: bool) -> Any:
    """The parcel data ``data`` followed by ``blob``'s ``tag`` and length and ``blob``
    itself, by reference, as :data:`Pieces`; ``None`` when copying costs less: the data
    so far is as large, is an ``adopted`` receive buffer's, or is in too many pieces."""
    head = _HEAD.pack(tag, len(blob))
    if data.__class__ is Pieces:
        parts = data.parts
        if len(parts) + 2 > MAX_PIECES:
            return None
        return Pieces((*parts, head, blob))
    if adopted or len(data) >= len(blob):
        return None
    return Pieces((bytes(data) + head, blob) if data else (head, blob))


def take(pieces: Any, tag: int, pos: int) -> tuple[bytes, int] | None:
    """``(buffer, end)`` if a ``tag`` value whose tag and length are at ``pos`` is one
    of ``pieces``' buffers, kept whole; else ``None`` (the caller reads the joined data)."""
    offset = 0
    before = b""
    for part in pieces.parts:
        if offset == pos + _HEAD.size:
            if len(before) < _HEAD.size:
                return None
            found, size = _HEAD.unpack_from(before, len(before) - _HEAD.size)
            if found != tag or size != len(part):
                return None
            return part, offset + size
        if offset > pos:
            return None
        offset += len(part)
        before = part
    return None
