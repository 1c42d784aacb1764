"""Receive buffers: each thread's, and the ones large received parcels take over.

A thread reads every record into its own receive buffer (one per thread, not one per
connection, keeps a connection cheap to make), and what a small record holds is copied
out before the thread reads again. A plain request or reply whose parcel data is
:data:`ADOPT_BYTES` or more is not copied out: its parcel *adopts* the buffer it was read
into (it reads through a memoryview of it) and the thread takes another buffer for its
next read, from a free list that closed parcels give their buffers back to. In steady
state, a caller whose large replies are closed (a ``with`` block) and a server (which
closes its requests) alternate between two buffers per thread, with no copy and no
fresh memory; a parcel left to the garbage collector frees its buffer instead, and the
next read then costs a new one (faulted in as it fills).

Buffers are anonymous mappings: only the pages a record touches are faulted in (a
zero-filled bytearray would cost all 64 pages up front, per thread).

*Scattered records.* With the C twins, a record that is one plain request or reply whose
parcel is a single buffer of ``_speedups.SCATTER_BYTES`` or more is read in two pieces
(see ``_speedups.exchange``): its frame and the buffer's tag and length into the thread's
receive buffer, the buffer itself straight into a new ``bytes`` object of its size, left
on the receive buffer as ``scattered = (at, blob)``. :func:`adopt` gives that pair to the
parcel (whose ``read_buffer`` returns ``blob`` itself: no copy at all), and the thread
keeps its receive buffer; anything else that reads the record calls :func:`restore`
first, which puts the blob back in place.

May import: ``_accel``, ``_wire``. Nothing above (the parcel imports this to give buffers
back).
"""

from __future__ import annotations

import mmap
import threading
from typing import Any

from childkit.ipc import _accel
from childkit.ipc._wire import MAX_RECORD_BYTES

#: From this much parcel data up, a received plain request or reply adopts its buffer;
#: below it, copying the data out costs less than taking another buffer.
ADOPT_BYTES = 8192
#: Most buffers kept for reuse (each MAX_RECORD_BYTES of address space, resident as used).
FREE_MAX = 8


class RecvBuffer(mmap.mmap):
    """A receive buffer: an anonymous mapping of :data:`MAX_RECORD_BYTES`, and the
    ``(at, blob)`` of a record read into it scattered (else ``None``)."""

    __slots__ = ("scattered",)
    scattered: tuple[int, bytes] | None


_free: list[RecvBuffer] = []  # list.append and list.pop are atomic: no lock
#: Buffers made because a parcel adopted a thread's and none was free (the tests watch it
#: to see closed parcels' buffers reused).
refills = 0
#: Parcels that :func:`adopt` gave a scattered record's buffer (see :func:`scattered_count`).
scattered_taken = 0
_Pieces = _accel.speedups.Pieces if _accel.speedups is not None else None


def _new() -> RecvBuffer:
    buf = RecvBuffer(-1, MAX_RECORD_BYTES)
    buf.scattered = None
    return buf


def take() -> RecvBuffer:
    """A buffer for a thread whose own a parcel adopted: one given back, or a new one."""
    global refills
    try:
        return _free.pop()
    except IndexError:
        refills += 1
        return _new()


def give_back(buf: RecvBuffer) -> None:
    """Return ``buf`` (no view of it left) for reuse; beyond :data:`FREE_MAX` it is freed."""
    if len(_free) < FREE_MAX:
        _free.append(buf)


def free_count() -> int:
    """Buffers waiting for reuse."""
    return len(_free)


def scattered_count() -> int:
    """Parcels that took a scattered record's buffer as it was read, so far: here
    (:func:`adopt`) and in the C twin of ``ParcelBase._received``, which makes the
    common one (a parcel that is one large buffer) without calling in here."""
    speedups = _accel.speedups
    return scattered_taken + (speedups.scattered_count() if speedups is not None else 0)


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.buf = _new()


#: Each thread's receive buffer (``buffers.buf``), for whichever socket it reads.
buffers = _PerThread()


def adopt(start: int, end: int) -> tuple[memoryview | Any, RecvBuffer | None]:
    """Hand the calling thread's receive buffer, which holds a record just read, to a
    parcel whose data is ``buf[start:end]``: returns that view and the buffer (which the
    parcel gives back when closed). The thread reads its next record into another.

    A record read scattered gives instead its data as ``Pieces`` (the buffer's tag and
    length, then the blob) and ``None``: the thread keeps its buffer."""
    global scattered_taken
    local = buffers
    buf = local.buf
    scattered = buf.scattered
    if scattered is not None:
        buf.scattered = None
        at, blob = scattered
        if at + len(blob) == end and _Pieces is not None:
            scattered_taken += 1
            return _Pieces((buf[start:at], blob)), None
        buf[at : at + len(blob)] = blob  # not this record's (it cannot be): put it back
    local.buf = take()
    return memoryview(buf)[start:end], buf


def restore(buf: object) -> None:
    """Put a record read scattered into ``buf`` back in one piece, for a reader that
    reads it whole (the record was not a parcel that :func:`adopt` took)."""
    scattered = getattr(buf, "scattered", None)
    if scattered is not None:
        at, blob = scattered
        buf.scattered = None  # type: ignore[attr-defined]
        buf[at : at + len(blob)] = blob  # type: ignore[index]
