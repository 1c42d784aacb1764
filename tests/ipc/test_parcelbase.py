"""A parcel's hot path (``_parcelbase``): the C twin and the Python reference agree.

MessageParcel subclasses whichever base is in use; here the same parcel class is built
on each base, so both run in one test run, at every edge of their fast paths (the size
at which a written buffer is kept by reference, the parcel limit, the int32 range) and
on the cases they hand back to the parcel (closed parcels, wrong tags, other types).
"""

from __future__ import annotations

import copy
import gc
import os
import pickle
import weakref
from typing import Any

import pytest

from childkit.ipc import (
    MAX_PARCEL_DATA,
    MessageParcel,
    ParamError,
    ParcelReadError,
    ParcelWriteError,
    _accel,
    _recvbuf,
)
from childkit.ipc._parcelbase import ParcelBase, PyParcelBase
from childkit.ipc._pieces import KEEP_BYTES
from childkit.ipc._tags import T_BYTES, T_INT32
from childkit.ipc._wire import MAX_RECORD_BYTES

BASES: list[Any] = [PyParcelBase]
if _accel.speedups is not None:
    BASES.append(_accel.speedups.ParcelBase)


def _parcel_class(base: Any) -> Any:
    own = {k: v for k, v in MessageParcel.__dict__.items()
           if k not in ("__slots__", "__weakref__", "__dict__")}
    return type("Parcel", (base,), {**own, "__slots__": ("__weakref__",)})


@pytest.fixture(params=BASES, ids=lambda b: b.__module__.rsplit(".", 1)[-1])
def P(request: pytest.FixtureRequest) -> Any:
    return _parcel_class(request.param)


def test_message_parcel_uses_the_c_twin_when_built() -> None:
    expected = _accel.speedups.ParcelBase if _accel.speedups is not None else PyParcelBase
    assert ParcelBase is expected
    assert MessageParcel.__mro__[1] is expected


def test_takes_no_arguments(P: Any) -> None:
    with pytest.raises(TypeError):
        P(1)


@pytest.mark.parametrize("size", [0, 1, 8, KEEP_BYTES - 1, KEEP_BYTES, 64 * 1024])
def test_bytes_round_trip(P: Any, size: int) -> None:
    blob = os.urandom(size)
    with P() as p:
        p.write_int32(7)
        p.write_buffer(blob)
        p.write_bytes(bytearray(blob))
        p.write_bytes(memoryview(blob))
        assert p.get_data_size() == 5 + 3 * (5 + size)
        assert p.read_int32() == 7
        assert p.read_buffer() == blob
        assert p.read_bytes() == blob
        assert p.read_bytes() == blob
        with pytest.raises(ParcelReadError):
            p.read_bytes()
    assert p.closed


def test_the_parcel_limit_at_its_edge(P: Any) -> None:
    p = P()
    p.write_bytes(b"x" * (MAX_PARCEL_DATA - 5 - 5 - 100))  # by reference or copied
    p.write_bytes(b"y" * 100)  # exactly full
    assert p.get_data_size() == MAX_PARCEL_DATA
    with pytest.raises(ParcelWriteError):
        p.write_bytes(b"")  # 5 bytes more: one over
    q = P()
    q.write_bytes(b"z" * (MAX_PARCEL_DATA - 5 - 5))
    q.write_int32(1)  # exactly full
    with pytest.raises(ParcelWriteError):
        q.write_int32(1)
    assert q.get_data_size() == MAX_PARCEL_DATA


def test_a_closed_parcel_takes_no_writes(P: Any) -> None:
    p = P()
    p.close()
    p.close()  # idempotent
    for write in (lambda: p.write_bytes(b"x"), lambda: p.write_int32(1)):
        with pytest.raises(ParcelWriteError):
            write()


@pytest.mark.parametrize("value", [2**31 - 1, -(2**31), 0, -1])
def test_int32_in_range(P: Any, value: int) -> None:
    p = P()
    p.write_int32(value)
    assert p._buf[0] == T_INT32
    assert p.read_int32() == value


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**70, True, 1.0, "1", None])
def test_int32_refused(P: Any, value: object) -> None:
    p = P()
    with pytest.raises(ParamError):
        p.write_int32(value)
    assert p.get_data_size() == 0


def test_wrong_types_and_tags(P: Any) -> None:
    p = P()
    with pytest.raises(ParamError):
        p.write_bytes("text")
    p.write_string("s")
    with pytest.raises(ParcelReadError):
        p.read_bytes()
    with pytest.raises(ParcelReadError):
        p.read_int32()
    assert p.get_read_position() == 0
    assert p.read_string() == "s"


def test_a_truncated_buffer_is_refused(P: Any) -> None:
    lie = bytes([T_BYTES]) + (100).to_bytes(4, "little") + b"short"
    for data in (lie, lie[:3]):
        p = P._from_wire(data, [], [])
        with pytest.raises(ParcelReadError):
            p.read_bytes()
        assert p.get_read_position() == 0


def test_a_write_while_a_view_is_held_fails_as_a_bytearray_does(P: Any) -> None:
    p = P()
    p.write_int32(1)
    view = memoryview(p._buf)
    with pytest.raises(BufferError):
        p.write_bytes(b"x")
    with pytest.raises(BufferError):
        p.write_int32(2)
    view.release()
    p.write_bytes(b"x")
    assert p.read_int32() == 1 and p.read_bytes() == b"x"


def test_close_closes_the_fds(P: Any) -> None:
    r, w = os.pipe()
    try:
        with P() as p:
            p.write_file_descriptor(r)
            copy = p._fds[0]
        with pytest.raises(OSError):
            os.fstat(copy)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("size", [0, 8, _recvbuf.ADOPT_BYTES - 1, _recvbuf.ADOPT_BYTES])
def test_received_small_and_adopted(P: Any, size: int) -> None:
    blob = os.urandom(size)
    buf = _recvbuf.buffers.buf
    record = b"h" * 10 + bytes([T_BYTES]) + size.to_bytes(4, "little") + blob
    buf[: len(record)] = record
    with P._received(buf, 10, len(record)) as p:
        assert type(p) is P
        assert p.read_buffer() == blob
        assert not p._fds and not p._objects and p._finalizer is None
        adopted = p._owner is not None
    assert adopted == (size + 5 >= _recvbuf.ADOPT_BYTES)
    assert p.get_data_size() == (0 if adopted else size + 5)


def test_received_past_the_buffer_is_clamped_as_a_slice(P: Any) -> None:
    buf = _recvbuf.buffers.buf
    p = P._received(buf, MAX_RECORD_BYTES - 3, MAX_RECORD_BYTES + 2)
    assert p.get_data_size() == 3


def test_a_cycle_through_a_parcel_is_collected(P: Any) -> None:
    class Holder:
        parcel: Any = None

    p = P()
    holder = Holder()
    holder.parcel = p
    p._objects.append(holder)  # parcel -> holder -> parcel
    ref = weakref.ref(p)
    del p, holder
    gc.collect()
    assert ref() is None


def test_a_parcel_is_neither_copied_nor_pickled(P: Any) -> None:
    # A copy would share the fds it owns; either base refuses alike.
    p = P()
    p.write_int32(1)
    for dup in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            dup(p)


# Large buffers: kept by reference (Pieces, with the C twins) and received scattered. The C
# twin makes the common cases itself; the Python reference asks _pieces and _recvbuf.
PIECES = _accel.speedups is not None


@pytest.mark.parametrize("before", [0, 5, KEEP_BYTES - 5, KEEP_BYTES + 100])
def test_a_large_buffer_after_other_values_is_kept_while_they_are_smaller(
        P: Any, before: int) -> None:
    blob = os.urandom(KEEP_BYTES)
    with P() as p:
        if before:
            p.write_bytes(bytearray(b"s" * (before - 5)))  # copied into the parcel
        p.write_buffer(blob)
        held = any(part is blob for part in getattr(p._buf, "parts", ()))
        assert held == (PIECES and before < KEEP_BYTES)
        assert p.get_data_size() == before + 5 + KEEP_BYTES
        if before:
            assert p.read_bytes() == b"s" * (before - 5)
        got = p.read_buffer()
        assert got is blob if held else got == blob
        with pytest.raises(ParcelReadError):
            p.read_buffer()
        p.rewind_read_position(before)  # a kept buffer reads again, and as another type not
        with pytest.raises(ParcelReadError):
            p.read_int32()
        assert p.read_buffer() == blob


def test_a_large_buffer_is_not_written_to_a_closed_or_full_parcel(P: Any) -> None:
    p = P()
    p.close()
    with pytest.raises(ParcelWriteError):
        p.write_buffer(bytes(KEEP_BYTES))
    q = P()
    q.write_int32(1)
    q.write_buffer(bytes(MAX_PARCEL_DATA - 5 - 5))  # exactly full
    with pytest.raises(ParcelWriteError):
        q.write_buffer(bytes(KEEP_BYTES))
    assert q.get_data_size() == MAX_PARCEL_DATA
    r = P()
    with pytest.raises(ParcelWriteError):
        r.write_buffer(bytes(MAX_PARCEL_DATA - 4))  # one over
    assert r.get_data_size() == 0


def test_a_received_adopted_parcel_written_to_copies_what_it_holds(P: Any) -> None:
    size = _recvbuf.ADOPT_BYTES
    blob = os.urandom(size)
    buf = _recvbuf.buffers.buf
    record = bytes([T_BYTES]) + size.to_bytes(4, "little") + blob
    buf[: len(record)] = record
    more = os.urandom(KEEP_BYTES * 2)
    with P._received(buf, 0, len(record)) as p:
        assert p._owner is not None
        p.write_buffer(more)  # copy on write: the adopted buffer is given back
        assert p._owner is None
        assert p.read_buffer() == blob
        assert p.read_buffer() == more


@pytest.mark.skipif(not PIECES, reason="records are read scattered only by the C twins")
@pytest.mark.parametrize("start", [0, 24])
def test_received_scattered_takes_the_blob_itself(P: Any, start: int) -> None:
    size = KEEP_BYTES * 2
    blob = os.urandom(size)
    buf = _recvbuf.buffers.buf
    head = b"f" * start + bytes([T_BYTES]) + size.to_bytes(4, "little")
    buf[: len(head)] = head
    buf.scattered = (len(head), blob)  # as exchange leaves a record read scattered
    counted = _recvbuf.scattered_count()
    with P._received(buf, start, len(head) + size) as p:
        assert buf.scattered is None and _recvbuf.buffers.buf is buf  # the thread keeps it
        assert p._owner is None
        assert p.read_buffer() is blob
        assert p.get_data_size() == 5 + size
    assert _recvbuf.scattered_count() == counted + 1


@pytest.mark.skipif(not PIECES, reason="records are read scattered only by the C twins")
def test_a_scattered_blob_that_is_not_the_parcels_end_is_put_back(P: Any) -> None:
    size = KEEP_BYTES * 2
    blob = os.urandom(size)
    buf = _recvbuf.buffers.buf
    head = bytes([T_BYTES]) + size.to_bytes(4, "little")
    buf[: len(head)] = head
    buf[len(head) : len(head) + size] = bytes(size)  # stale bytes where the blob goes
    buf.scattered = (len(head), blob)
    counted = _recvbuf.scattered_count()
    with P._received(buf, 0, len(head) + size - 1) as p:  # the parcel ends before it does
        assert buf.scattered is None
        assert bytes(buf[len(head) : len(head) + size]) == blob
        with pytest.raises(ParcelReadError):  # its length runs past the parcel's end
            p.read_buffer()
    assert _recvbuf.scattered_count() == counted
