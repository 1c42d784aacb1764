"""Tests for childkit.ipc._parcel.MessageParcel: every call, every limit at its edge."""

from __future__ import annotations

import array
import errno
import gc
import math
import os
import struct
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childkit import ipc
from childkit.ipc import (
    MAX_PARCEL_DATA,
    MAX_PARCEL_FDS,
    MAX_PARCEL_OBJECTS,
    Ashmem,
    IPCErrorCode,
    MessageParcel,
    ParamError,
    ParcelReadError,
    ParcelWriteError,
)
from childkit.ipc._parcel import (
    T_ASHMEM,
    T_BYTES,
    T_FD,
    T_INT64,
    T_REMOTE,
    T_STRING,
    T_TOKEN,
    RemoteObject,
)
from childkit.ipc._stub import RemoteStub
from childkit.ipc._tags import T_INT32

READ_ERROR = IPCErrorCode.OH_IPC_PARCEL_READ_ERROR
WRITE_ERROR = IPCErrorCode.OH_IPC_PARCEL_WRITE_ERROR
PARAM_ERROR = IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR
HEAD = 5  # every blob and fixed 32-bit value: a one-byte tag and a u32


# ---------------------------------------------------------------------------- helpers
def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_fd_leak() -> Iterator[None]:
    """Every test gives back every fd it, or a parcel, opened."""
    gc.collect()
    before = open_fds()
    yield
    gc.collect()
    assert open_fds() == before


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        assert exc.errno == errno.EBADF
        return False
    return True


class Echo(RemoteStub):
    """The smallest stub: it is only ever carried in parcels here, never called."""

    def on_remote_request(self, code: int, data: Any, reply: Any, option: Any) -> int:
        return 0


class DeadObject(RemoteObject):
    """A remote object that reports itself dead, as a proxy of a closed connection does."""

    def is_object_dead(self) -> bool:
        return True


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        if is_open(fd):
            os.close(fd)


def read_error(call: Callable[[], object], parcel: MessageParcel) -> ParcelReadError:
    """``call()`` must raise ParcelReadError with its code and leave the read position."""
    position = parcel.get_read_position()
    with pytest.raises(ParcelReadError) as info:
        call()
    assert info.value.code == READ_ERROR
    assert info.value.message
    assert parcel.get_read_position() == position
    return info.value


def blob(tag: int, payload: bytes) -> bytes:
    return struct.pack("<BI", tag, len(payload)) + payload


# ---------------------------------------------------------------------------- integers
INTS = [
    ("int8", -(2**7), 2**7 - 1),
    ("int16", -(2**15), 2**15 - 1),
    ("int32", -(2**31), 2**31 - 1),
    ("int64", -(2**63), 2**63 - 1),
    ("uint8", 0, 2**8 - 1),
    ("uint16", 0, 2**16 - 1),
    ("uint32", 0, 2**32 - 1),
    ("uint64", 0, 2**64 - 1),
]


@pytest.mark.parametrize(("kind", "lo", "hi"), INTS)
def test_int_round_trip_at_min_and_max(kind: str, lo: int, hi: int) -> None:
    with MessageParcel() as p:
        for value in (lo, hi, 0, 1):
            getattr(p, f"write_{kind}")(value)
        assert [getattr(p, f"read_{kind}")() for _ in range(4)] == [lo, hi, 0, 1]
        assert p.get_readable_bytes() == 0


@pytest.mark.parametrize(("kind", "lo", "hi"), INTS)
def test_int_one_past_each_side_is_refused(kind: str, lo: int, hi: int) -> None:
    with MessageParcel() as p:
        for value in (lo - 1, hi + 1):
            with pytest.raises(ParamError) as info:
                getattr(p, f"write_{kind}")(value)
            assert info.value.code == PARAM_ERROR
            assert str(value) in info.value.message and kind in info.value.message
        assert p.get_data_size() == 0


@pytest.mark.parametrize("kind", [k for k, _, _ in INTS])
@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_int_writers_refuse_non_ints(kind: str, value: object) -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            getattr(p, f"write_{kind}")(value)
        assert p.get_data_size() == 0


# ---------------------------------------------------------------------------- reals, bools
@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, 3.4e38])
def test_float_round_trip(value: float) -> None:
    with MessageParcel() as p:
        p.write_float(value)
        got = p.read_float()
        assert struct.pack("<f", got) == struct.pack("<f", value)


def test_float_loses_precision_as_in_c_and_keeps_nan() -> None:
    with MessageParcel() as p:
        p.write_float(0.1)
        p.write_float(math.nan)
        assert p.read_float() == struct.unpack("<f", struct.pack("<f", 0.1))[0]
        assert math.isnan(p.read_float())


@pytest.mark.parametrize("value", [0.0, -0.0, 0.1, -1e308, 5e-324, math.inf, -math.inf, 2**53 + 1])
def test_double_round_trip(value: float) -> None:
    with MessageParcel() as p:
        p.write_double(value)
        assert p.read_double() == float(value)


def test_double_nan() -> None:
    with MessageParcel() as p:
        p.write_double(math.nan)
        assert math.isnan(p.read_double())


@pytest.mark.parametrize(
    ("writer", "value"),
    [("float", 1e39), ("float", True), ("float", "1"), ("double", 10**400),
     ("double", False), ("double", None)],
    ids=["float-1e39", "float-bool", "float-str", "double-10**400", "double-bool",
         "double-None"],
)  # fmt: skip
def test_real_writers_refuse_bad_values(writer: str, value: object) -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            getattr(p, f"write_{writer}")(value)
        assert p.get_data_size() == 0


def test_bool_round_trip_and_int_refused() -> None:
    with MessageParcel() as p:
        p.write_bool(True)
        p.write_bool(False)
        for value in (1, 0, None, "True"):
            with pytest.raises(ParamError):
                p.write_bool(value)  # type: ignore[arg-type]
        assert p.read_bool() is True
        assert p.read_bool() is False
        assert p.get_readable_bytes() == 0


# ---------------------------------------------------------------------------- strings, bytes
@pytest.mark.parametrize("value", ["", "ascii", "héllo wörld", "日本語", "🙂\x00tail", "x" * 1000])
def test_string_round_trip(value: str) -> None:
    with MessageParcel() as p:
        p.write_string(value)
        assert p.get_data_size() == HEAD + len(value.encode())
        assert p.read_string() == value


def test_string_lone_surrogate_and_non_str_refused() -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            p.write_string("a\ud800b")
        with pytest.raises(ParamError):
            p.write_string(b"bytes")  # type: ignore[arg-type]
        assert p.get_data_size() == 0


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00\xff" * 10, bytearray(b"abc"), memoryview(b"view"),
     memoryview(b"abcdef")[1:4], array.array("i", [1, -2, 3]), array.array("d", [0.5]),
     memoryview(b"abcdef").cast("B", [2, 3])],
)  # fmt: skip
def test_bytes_round_trip_from_any_buffer(value: Any) -> None:
    with MessageParcel() as p:
        p.write_bytes(value)
        got = p.read_bytes()
        assert type(got) is bytes
        assert got == memoryview(value).tobytes()


def test_write_buffer_and_read_buffer_are_the_bytes_calls() -> None:
    with MessageParcel() as p:
        p.write_buffer(b"abc")
        p.write_bytes(b"def")
        assert p.read_bytes() == b"abc"
        assert p.read_buffer() == b"def"


def test_bytes_copied_at_write_time() -> None:
    source = bytearray(b"before")
    with MessageParcel() as p:
        p.write_bytes(source)
        source[:] = b"after!"
        assert p.read_bytes() == b"before"


@pytest.mark.parametrize("value", ["text", 42, None, [1, 2], memoryview(b"abcdef")[::2]])
def test_bytes_refuses_non_buffers_and_non_contiguous(value: object) -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            p.write_bytes(value)  # type: ignore[arg-type]
        assert p.get_data_size() == 0


def test_bytes_refuses_released_memoryview() -> None:
    view = memoryview(b"abc")
    view.release()
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            p.write_bytes(view)
        assert p.get_data_size() == 0


# ---------------------------------------------------------------------------- interface token
def test_interface_token_round_trip() -> None:
    with MessageParcel() as p:
        p.write_interface_token("ohos.test.IEcho")
        p.write_interface_token("")
        p.write_interface_token("日本")
        assert p.read_interface_token() == "ohos.test.IEcho"
        assert p.read_interface_token() == ""
        assert p.read_interface_token() == "日本"


def test_interface_token_is_not_a_string() -> None:
    with MessageParcel() as p:
        p.write_interface_token("tok")
        read_error(p.read_string, p)
        p.write_string("str")
        assert p.read_interface_token() == "tok"
        read_error(p.read_interface_token, p)
        assert p.read_string() == "str"


def test_interface_token_bad_values_refused() -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            p.write_interface_token(b"tok")  # type: ignore[arg-type]
        with pytest.raises(ParamError):
            p.write_interface_token("a\ud800b")
        assert p.get_data_size() == 0


# ---------------------------------------------------------------------------- file descriptors
def test_fd_parcel_holds_a_dup(pipe: tuple[int, int]) -> None:
    r, w = pipe
    base = fd_count()
    with MessageParcel() as p:
        p.write_file_descriptor(w)
        assert fd_count() == base + 1
        os.close(w)  # the original goes away; the parcel's copy stays usable
        got = p.read_file_descriptor()
        try:
            os.write(got, b"ping")
            assert os.read(r, 4) == b"ping"
        finally:
            os.close(got)
    assert fd_count() == base - 1


def test_fd_each_read_is_a_new_fd_the_caller_owns(pipe: tuple[int, int]) -> None:
    r, w = pipe
    with MessageParcel() as p:
        p.write_file_descriptor(w)
        first = p.read_file_descriptor()
        p.rewind_read_position(0)
        second = p.read_file_descriptor()
        assert len({first, second, w}) == 3
        os.close(first)  # closing one read copy leaves the parcel's and the other usable
        os.write(second, b"x")
        os.close(second)
        p.rewind_read_position(0)
        third = p.read_file_descriptor()
        os.write(third, b"y")
        os.close(third)
    assert os.read(r, 2) == b"xy"


@pytest.mark.parametrize("bad", [-1, -100, True, 1.5, "3", None])
def test_fd_bad_values_refused(bad: object) -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError) as info:
            p.write_file_descriptor(bad)  # type: ignore[arg-type]
        assert info.value.code == PARAM_ERROR
        assert p.get_data_size() == 0


def test_fd_closed_fd_refused(pipe: tuple[int, int]) -> None:
    _r, w = pipe
    os.close(w)
    with MessageParcel() as p:
        with pytest.raises(ParamError) as info:
            p.write_file_descriptor(w)
        assert str(w) in info.value.message
        assert p.get_data_size() == 0


# ---------------------------------------------------------------------------- remote objects
def test_remote_object_round_trip_is_the_same_object() -> None:
    a, b = Echo("test.A"), Echo("test.B")
    with MessageParcel() as p:
        p.write_remote_object(a)
        p.write_int32(7)
        p.write_remote_object(b)
        p.write_remote_object(a)
        assert p.read_remote_object() is a
        assert p.read_int32() == 7
        assert p.read_remote_object() is b
        assert p.read_remote_object() is a
        p.rewind_read_position(0)
        assert p.read_remote_object() is a


def test_remote_object_bad_values_refused() -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            p.write_remote_object("stub")  # type: ignore[arg-type]
        with pytest.raises(ParcelWriteError):
            p.write_remote_object(DeadObject())
        assert p.get_data_size() == 0


# ---------------------------------------------------------------------------- ashmem
def test_ashmem_round_trip_shares_the_memory() -> None:
    with Ashmem.create("parcel-test", 4096) as region, MessageParcel() as p:
        p.write_ashmem(region)
        got = p.read_ashmem()
        with got:
            assert got is not region
            assert got.name == "parcel-test" and got.get_size() == 4096
            assert got.fileno() != region.fileno()
            region.map_read_write()
            got.map_read_write()
            region.write(b"from the writer", 100)
            assert got.read(15, 100) == b"from the writer"
            got.write(b"back", 0)
            assert region.read(4) == b"back"


def test_ashmem_each_read_is_a_new_region_the_caller_owns() -> None:
    with Ashmem.create("twice", 64) as region, MessageParcel() as p:
        p.write_ashmem(region)
        region.close()  # the parcel holds its own fd for the region
        first = p.read_ashmem()
        p.rewind_read_position(0)
        second = p.read_ashmem()
        assert first.fileno() != second.fileno()
        first.map_read_write()
        first.write(b"shared")
        first.close()
        second.map_read_only()
        assert second.read(6) == b"shared"
        second.close()


def test_ashmem_bad_values_refused() -> None:
    with MessageParcel() as p:
        with pytest.raises(ParamError):
            p.write_ashmem(b"memory")  # type: ignore[arg-type]
        region = Ashmem.create("closed", 16)
        region.close()
        with pytest.raises(ipc.IPCError) as info:
            p.write_ashmem(region)
        assert info.value.code == PARAM_ERROR
        assert p.get_data_size() == 0


def test_ashmem_from_a_fd_that_is_not_a_memfd(pipe: tuple[int, int]) -> None:
    r, _w = pipe
    data = struct.pack("<BII", T_ASHMEM, 0, 4) + b"fake"
    with MessageParcel._from_wire(data, [os.dup(r)], []) as p:
        before = fd_count()
        err = read_error(p.read_ashmem, p)
        assert "pipe" in err.message
        assert fd_count() == before  # the dup made for the refused Ashmem was closed


# ---------------------------------------------------------------------------- read errors
READERS = [
    "read_int8", "read_int16", "read_int32", "read_int64", "read_uint8", "read_uint16",
    "read_uint32", "read_uint64", "read_float", "read_double", "read_bool", "read_string",
    "read_bytes", "read_interface_token", "read_file_descriptor", "read_remote_object",
    "read_ashmem",
]  # fmt: skip


@pytest.mark.parametrize("reader", READERS)
def test_reading_past_the_end(reader: str) -> None:
    with MessageParcel() as p:
        read_error(getattr(p, reader), p)
        p.write_int8(1)
        assert p.read_int8() == 1
        err = read_error(getattr(p, reader), p)
        assert "no data left" in err.message


@pytest.mark.parametrize("reader", [r for r in READERS if r != "read_int8"])
def test_reading_the_wrong_type(reader: str) -> None:
    with MessageParcel() as p:
        for _ in range(4):  # enough bytes for any fixed-size reader to see the tag
            p.write_int8(-5)
        read_error(getattr(p, reader), p)
        assert p.read_int8() == -5


def test_int32_read_as_int64_or_string() -> None:
    with MessageParcel() as p:
        p.write_int32(1)
        read_error(p.read_int64, p)  # too short for an int64
        read_error(p.read_string, p)
        read_error(p.read_uint32, p)  # same size, another tag
        p.write_int32(2)
        err = read_error(p.read_int64, p)  # long enough now: the tag is wrong
        assert "int32" in err.message
        assert (p.read_int32(), p.read_int32()) == (1, 2)


MALFORMED: list[tuple[str, bytes, str]] = [
    ("garbage tag", b"\xff\x00\x00\x00\x00", "read_int32"),
    ("zero tag", b"\x00" * 9, "read_int64"),
    ("truncated int64", bytes([T_INT64]) + b"\x00\x00\x00", "read_int64"),
    ("truncated int32 fast path", bytes([T_INT32, 1, 2]), "read_int32"),
    ("truncated blob header", bytes([T_STRING, 3, 0]), "read_string"),
    ("string length past end", struct.pack("<BI", T_STRING, 100) + b"abc", "read_string"),
    ("bytes length 2**32-1", struct.pack("<BI", T_BYTES, 2**32 - 1) + b"abc", "read_bytes"),
    ("token length past end", struct.pack("<BI", T_TOKEN, 4) + b"abc", "read_interface_token"),
    ("string invalid utf-8", blob(T_STRING, b"ok\xff\xfe"), "read_string"),
    ("string surrogate utf-8", blob(T_STRING, b"\xed\xa0\x80"), "read_string"),
    ("token invalid utf-8", blob(T_TOKEN, b"\xc3"), "read_interface_token"),
    ("fd index past fd list", struct.pack("<BI", T_FD, 0), "read_file_descriptor"),
    ("fd index 2**32-1", struct.pack("<BI", T_FD, 2**32 - 1), "read_file_descriptor"),
    ("truncated fd", bytes([T_FD, 0]), "read_file_descriptor"),
    ("object index past list", struct.pack("<BI", T_REMOTE, 0), "read_remote_object"),
    ("truncated object", bytes([T_REMOTE]), "read_remote_object"),
    ("ashmem fd index past list", struct.pack("<BII", T_ASHMEM, 0, 1) + b"a", "read_ashmem"),
    ("ashmem name past end", struct.pack("<BII", T_ASHMEM, 0, 50) + b"a", "read_ashmem"),
    ("truncated ashmem", struct.pack("<BI", T_ASHMEM, 0), "read_ashmem"),
]


@pytest.mark.parametrize(("data", "reader"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])  # fmt: skip
def test_malformed_data_from_a_peer(data: bytes, reader: str) -> None:
    with MessageParcel._from_wire(data, [], []) as p:
        read_error(getattr(p, reader), p)
        assert p.get_read_position() == 0


def test_indices_past_the_lists_with_some_entries(pipe: tuple[int, int]) -> None:
    data = struct.pack("<BI", T_FD, 1) + struct.pack("<BI", T_REMOTE, 1)
    with MessageParcel._from_wire(data, [os.dup(pipe[0])], [Echo()]) as p:
        err = read_error(p.read_file_descriptor, p)
        assert "fd #1" in err.message
        p.rewind_read_position(5)
        read_error(p.read_remote_object, p)


def test_from_wire_takes_ownership_of_the_fds(pipe: tuple[int, int]) -> None:
    base = fd_count()
    copy = os.dup(pipe[1])
    p = MessageParcel._from_wire(struct.pack("<BI", T_FD, 0), [copy], [])
    got = p.read_file_descriptor()
    os.close(got)
    p.close()
    assert not is_open(copy)
    assert fd_count() == base


def test_a_good_value_after_a_failed_read_still_reads() -> None:
    data = blob(T_STRING, b"\xff") + blob(T_STRING, b"fine")
    with MessageParcel._from_wire(data, [], []) as p:
        read_error(p.read_string, p)
        read_error(p.read_bytes, p)
        p.rewind_read_position(HEAD + 1)
        assert p.read_string() == "fine"


# ---------------------------------------------------------------------------- capacity
def test_data_capacity_exactly_fits_and_one_byte_more_fails() -> None:
    with MessageParcel() as p:
        p.write_bytes(bytes(MAX_PARCEL_DATA - HEAD))
        assert p.get_data_size() == MAX_PARCEL_DATA
        assert p.get_writable_bytes() == 0
        with pytest.raises(ParcelWriteError) as info:
            p.write_bool(True)
        assert info.value.code == WRITE_ERROR
        assert p.get_data_size() == MAX_PARCEL_DATA
        assert len(p.read_bytes()) == MAX_PARCEL_DATA - HEAD
    with MessageParcel() as p:
        with pytest.raises(ParcelWriteError) as info:
            p.write_bytes(bytes(MAX_PARCEL_DATA - HEAD + 1))
        assert "Ashmem" in info.value.message
        assert p.get_data_size() == 0
    with MessageParcel() as p:
        with pytest.raises(ParcelWriteError):
            p.write_string("x" * (MAX_PARCEL_DATA - HEAD + 1))
        p.write_string("x" * (MAX_PARCEL_DATA - HEAD))


def test_fixed_values_at_the_capacity_edge(pipe: tuple[int, int]) -> None:
    with MessageParcel() as p:
        p.write_bytes(bytes(MAX_PARCEL_DATA - 2 * HEAD))
        mark = p.get_data_size()
        p.write_int32(1)  # the last 5 bytes
        assert p.get_writable_bytes() == 0
        p.rewind_write_position(mark)
        p.write_file_descriptor(pipe[0])  # a 5-byte fd value fits too
        p.rewind_write_position(mark)
        p.write_uint8(1)
        base = fd_count()
        too_big: list[Callable[[], object]] = [
            lambda: p.write_int32(1),
            lambda: p.write_uint32(1),
            lambda: p.write_float(1.0),
            lambda: p.write_string(""),
            lambda: p.write_file_descriptor(pipe[0]),
            lambda: p.write_remote_object(Echo()),
        ]
        for write in too_big:
            with pytest.raises(ParcelWriteError):
                write()
        assert fd_count() == base  # the refused fd was not duplicated
        assert p.get_data_size() == MAX_PARCEL_DATA - 3
        p.write_uint16(1)
        assert p.get_writable_bytes() == 0


def test_ashmem_at_the_capacity_edge() -> None:
    with Ashmem.create("edge", 16) as region, MessageParcel() as p:
        value = 9 + len(b"edge")  # tag, fd index, name length, name
        p.write_bytes(bytes(MAX_PARCEL_DATA - HEAD - value + 1))
        base = fd_count()
        with pytest.raises(ParcelWriteError):
            p.write_ashmem(region)
        assert fd_count() == base
        p.rewind_write_position(0)
        p.write_bytes(bytes(MAX_PARCEL_DATA - HEAD - value))
        p.write_ashmem(region)
        assert p.get_writable_bytes() == 0


def test_fd_count_limit(pipe: tuple[int, int]) -> None:
    base = fd_count()
    with MessageParcel() as p:
        for _ in range(MAX_PARCEL_FDS):
            p.write_file_descriptor(pipe[0])
        assert fd_count() == base + MAX_PARCEL_FDS
        size = p.get_data_size()
        with pytest.raises(ParcelWriteError) as info:
            p.write_file_descriptor(pipe[0])
        assert str(MAX_PARCEL_FDS) in info.value.message
        assert fd_count() == base + MAX_PARCEL_FDS
        assert p.get_data_size() == size
    assert fd_count() == base


def test_ashmem_counts_toward_the_fd_limit(pipe: tuple[int, int]) -> None:
    with Ashmem.create("limit", 16) as region, MessageParcel() as p:
        for _ in range(MAX_PARCEL_FDS - 1):
            p.write_file_descriptor(pipe[0])
        p.write_ashmem(region)
        with pytest.raises(ParcelWriteError):
            p.write_ashmem(region)
        with pytest.raises(ParcelWriteError):
            p.write_file_descriptor(pipe[0])


def test_object_count_limit() -> None:
    stub = Echo()
    with MessageParcel() as p:
        for _ in range(MAX_PARCEL_OBJECTS):
            p.write_remote_object(stub)
        size = p.get_data_size()
        with pytest.raises(ParcelWriteError) as info:
            p.write_remote_object(stub)
        assert str(MAX_PARCEL_OBJECTS) in info.value.message
        assert p.get_data_size() == size
        for _ in range(MAX_PARCEL_OBJECTS):
            assert p.read_remote_object() is stub


# ---------------------------------------------------------------------------- sizes, positions
def test_sizes_and_positions() -> None:
    with MessageParcel() as p:
        assert (p.get_data_size(), p.get_write_position(), p.get_read_position()) == (0, 0, 0)
        assert p.get_writable_bytes() == MAX_PARCEL_DATA
        assert p.get_readable_bytes() == 0
        p.write_int8(1)  # 2 bytes
        p.write_int64(2)  # 9 bytes
        p.write_string("abc")  # 8 bytes
        assert p.get_data_size() == p.get_write_position() == 19
        assert p.get_writable_bytes() == MAX_PARCEL_DATA - 19
        assert p.get_readable_bytes() == 19
        p.read_int8()
        assert p.get_read_position() == 2
        assert p.get_readable_bytes() == 17
        p.read_int64()
        p.read_string()
        assert p.get_read_position() == 19
        assert p.get_readable_bytes() == 0


def test_rewind_read_position_edges() -> None:
    with MessageParcel() as p:
        p.rewind_read_position(0)
        p.write_int32(5)
        p.write_int32(6)
        p.rewind_read_position(10)  # the end is allowed
        read_error(p.read_int32, p)
        p.rewind_read_position(5)
        assert p.read_int32() == 6
        p.rewind_read_position(0)
        assert p.read_int32() == 5
        for bad in (-1, 11, True, 1.0, "0", None):
            with pytest.raises(ParamError):
                p.rewind_read_position(bad)  # type: ignore[arg-type]
        assert p.get_read_position() == 5


def test_rewind_write_position_drops_values_and_closes_fds(pipe: tuple[int, int]) -> None:
    stub = Echo()
    base = fd_count()
    with MessageParcel() as p:
        p.write_int32(1)
        p.write_file_descriptor(pipe[0])
        p.write_remote_object(stub)
        mark = p.get_write_position()
        p.write_file_descriptor(pipe[0])
        p.write_file_descriptor(pipe[1])
        p.write_remote_object(stub)
        p.write_string("dropped")
        assert fd_count() == base + 3
        p.rewind_write_position(mark)
        assert p.get_data_size() == p.get_write_position() == mark
        assert fd_count() == base + 1  # the two fds written after the mark are closed
        # New values go where the dropped ones were, with fresh indices.
        p.write_file_descriptor(pipe[1])
        p.write_remote_object(stub)
        assert fd_count() == base + 2
        assert p.read_int32() == 1
        for _ in range(2):
            fd = p.read_file_descriptor()
            os.close(fd)
            assert p.read_remote_object() is stub
        read_error(p.read_string, p)
        p.rewind_write_position(0)
        assert fd_count() == base
        assert p.get_data_size() == 0
        assert p.get_read_position() == 0  # the read position never stays past the end


def test_rewind_write_position_drops_ashmem_fds() -> None:
    with Ashmem.create("rewind", 16) as region, MessageParcel() as p:
        base = fd_count()
        p.write_ashmem(region)
        assert fd_count() == base + 1
        p.rewind_write_position(0)
        assert fd_count() == base


def test_rewind_write_position_bad_values(pipe: tuple[int, int]) -> None:
    with MessageParcel() as p:
        p.rewind_write_position(0)  # nothing written: 0 is the only boundary
        p.write_int32(1)
        p.write_file_descriptor(pipe[0])
        p.write_string("abc")
        size = p.get_data_size()
        base = fd_count()
        for inside in (1, 4, 6, 9, 11, size - 1):
            with pytest.raises(ParamError) as info:
                p.rewind_write_position(inside)
            assert "inside" in info.value.message
        for bad in (-1, size + 1, True, 5.0, None):
            with pytest.raises(ParamError):
                p.rewind_write_position(bad)  # type: ignore[arg-type]
        assert p.get_data_size() == size
        assert fd_count() == base
        p.rewind_write_position(size)  # the end is a boundary: nothing changes
        assert p.get_data_size() == size


def test_rewind_write_position_after_close() -> None:
    p = MessageParcel()
    p.write_int32(1)
    p.close()
    with pytest.raises(ParcelWriteError):
        p.rewind_write_position(0)


# ---------------------------------------------------------------------------- append
def test_append_values_fds_and_objects_in_order(pipe: tuple[int, int]) -> None:
    a, b = Echo("a"), Echo("b")
    base = fd_count()
    with Ashmem.create("appended", 32) as region:
        region.map_read_write()
        region.write(b"ashmem")
        with MessageParcel() as target, MessageParcel() as source:
            target.write_remote_object(a)
            target.write_file_descriptor(pipe[0])
            source.write_string("s")
            source.write_file_descriptor(pipe[1])
            source.write_remote_object(b)
            source.write_ashmem(region)
            source.write_remote_object(a)
            source.read_string()  # append copies from the source's start, not its read position
            before = fd_count()
            target.append(source)
            assert fd_count() == before + 2  # the target has its own copies of both fds
            source.close()
            assert target.read_remote_object() is a
            os.close(target.read_file_descriptor())
            assert target.read_string() == "s"
            w = target.read_file_descriptor()
            os.write(w, b"!")
            os.close(w)
            assert os.read(pipe[0], 1) == b"!"
            assert target.read_remote_object() is b
            with target.read_ashmem() as got:
                got.map_read_only()
                assert got.read(6) == b"ashmem"
            assert target.read_remote_object() is a
            assert target.get_readable_bytes() == 0
    assert fd_count() == base


def test_append_refusals() -> None:
    with MessageParcel() as p:
        p.write_int32(1)
        with pytest.raises(ParamError):
            p.append(p)
        with pytest.raises(ParamError):
            p.append(b"\x03\x01\x00\x00\x00")  # type: ignore[arg-type]
        closed = MessageParcel()
        closed.write_int32(2)
        closed.close()
        with pytest.raises(ParamError):
            p.append(closed)
        assert p.get_data_size() == 5


def test_append_into_a_closed_parcel() -> None:
    target = MessageParcel()
    target.close()
    with MessageParcel() as source:
        with pytest.raises(ParcelWriteError):
            target.append(source)  # an empty source too: append is a write
        source.write_int32(1)
        with pytest.raises(ParcelWriteError):
            target.append(source)


def test_append_that_does_not_fit_leaves_the_target_unchanged(pipe: tuple[int, int]) -> None:
    with MessageParcel() as target, MessageParcel() as source:
        target.write_bytes(bytes(MAX_PARCEL_DATA - HEAD - 2 * HEAD))  # room for two values
        size = target.get_data_size()
        source.write_file_descriptor(pipe[0])
        source.write_int32(1)
        source.write_int32(2)
        base = fd_count()
        with pytest.raises(ParcelWriteError):
            target.append(source)
        assert target.get_data_size() == size
        assert fd_count() == base
        source.rewind_write_position(2 * HEAD)
        target.append(source)  # exactly fits
        assert target.get_writable_bytes() == 0


# ---------------------------------------------------------------------------- close, lifetime
WRITES: list[tuple[str, Callable[[MessageParcel, int], object]]] = [
    ("int8", lambda p, fd: p.write_int8(1)),
    ("int32", lambda p, fd: p.write_int32(1)),
    ("uint64", lambda p, fd: p.write_uint64(1)),
    ("double", lambda p, fd: p.write_double(1.0)),
    ("bool", lambda p, fd: p.write_bool(True)),
    ("string", lambda p, fd: p.write_string("x")),
    ("bytes", lambda p, fd: p.write_bytes(b"x")),
    ("token", lambda p, fd: p.write_interface_token("x")),
    ("fd", lambda p, fd: p.write_file_descriptor(fd)),
    ("remote", lambda p, fd: p.write_remote_object(Echo())),
]


@pytest.mark.parametrize("write", [w[1] for w in WRITES], ids=[w[0] for w in WRITES])
def test_writes_after_close_raise(
    write: Callable[[MessageParcel, int], object], pipe: tuple[int, int]
) -> None:
    p = MessageParcel()
    p.close()
    base = fd_count()
    with pytest.raises(ParcelWriteError) as info:
        write(p, pipe[0])
    assert info.value.code == WRITE_ERROR
    assert fd_count() == base


def test_write_ashmem_after_close_raises() -> None:
    p = MessageParcel()
    p.close()
    with Ashmem.create("late", 8) as region, pytest.raises(ParcelWriteError):
        p.write_ashmem(region)


def test_close_is_idempotent_and_closes_fds(pipe: tuple[int, int]) -> None:
    base = fd_count()
    p = MessageParcel()
    p.write_file_descriptor(pipe[0])
    p.write_file_descriptor(pipe[1])
    p.write_remote_object(Echo())
    assert not p.closed
    assert fd_count() == base + 2
    p.close()
    assert p.closed
    assert fd_count() == base
    p.close()
    assert p.closed and fd_count() == base
    assert "closed" in repr(p)


def test_context_manager_closes(pipe: tuple[int, int]) -> None:
    base = fd_count()
    with MessageParcel() as p:
        p.write_file_descriptor(pipe[0])
        assert fd_count() == base + 1
    assert p.closed
    assert fd_count() == base


def test_garbage_collected_parcel_closes_its_fds(pipe: tuple[int, int]) -> None:
    base = fd_count()
    p = MessageParcel()
    p.write_file_descriptor(pipe[0])
    p.write_file_descriptor(pipe[1])
    p2 = MessageParcel._from_wire(struct.pack("<BI", T_FD, 0), [os.dup(pipe[0])], [])
    assert fd_count() == base + 3
    del p, p2
    gc.collect()
    assert fd_count() == base


def test_parcels_with_fds_register_nothing_process_wide(pipe: tuple[int, int]) -> None:
    # weakref.finalize's registry is iterated at interpreter exit, while work threads may
    # still read requests with fds: a parcel must not add to it (yet close its fds when
    # collected unclosed, as the tests around this one check).
    base = fd_count()
    before = len(weakref.finalize._registry)  # type: ignore[attr-defined]
    written = MessageParcel()
    written.write_file_descriptor(pipe[0])
    received = MessageParcel._from_wire(struct.pack("<BI", T_FD, 0), [os.dup(pipe[0])], [])
    assert len(weakref.finalize._registry) == before  # type: ignore[attr-defined]
    closed = MessageParcel()
    closed.write_file_descriptor(pipe[1])
    closed.close()  # detached: collecting it later closes nothing twice
    assert fd_count() == base + 2
    del written, received, closed
    gc.collect()
    assert fd_count() == base


def test_garbage_collected_cycle_closes_its_fds(pipe: tuple[int, int]) -> None:
    base = fd_count()
    holder: list[object] = []
    p = MessageParcel()
    p.write_file_descriptor(pipe[0])
    holder.append(p)
    holder.append(holder)  # a reference cycle: only the cycle collector frees it
    del p, holder
    gc.collect()
    assert fd_count() == base


# ---------------------------------------------------------------------------- property
_VALUES = st.one_of(
    st.tuples(st.just("int8"), st.integers(-(2**7), 2**7 - 1)),
    st.tuples(st.just("int16"), st.integers(-(2**15), 2**15 - 1)),
    st.tuples(st.just("int32"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just("int64"), st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("uint8"), st.integers(0, 2**8 - 1)),
    st.tuples(st.just("uint16"), st.integers(0, 2**16 - 1)),
    st.tuples(st.just("uint32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("uint64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("float"), st.floats(width=32)),
    st.tuples(st.just("double"), st.floats()),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("string"), st.text()),
    st.tuples(st.just("bytes"), st.binary()),
    st.tuples(st.just("interface_token"), st.text(max_size=50)),
)


def _same(kind: str, a: object, b: object) -> bool:
    if kind in ("float", "double"):  # bit-exact, so that nan and -0.0 compare
        fmt = "<f" if kind == "float" else "<d"
        return struct.pack(fmt, a) == struct.pack(fmt, b)
    return type(a) is type(b) and a == b


@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.lists(_VALUES, max_size=40))
def test_any_sequence_of_typed_writes_reads_back_in_order(
    values: list[tuple[str, Any]],
) -> None:
    with MessageParcel() as p:
        for kind, value in values:
            getattr(p, f"write_{kind}")(value)
        for kind, value in values:
            assert _same(kind, getattr(p, f"read_{kind}")(), value)
        assert p.get_readable_bytes() == 0
        read_error(p.read_int8, p)


_TAGGED = st.lists(st.tuples(st.integers(0, 18), st.binary(max_size=12)), max_size=12).map(
    lambda parts: b"".join(bytes([tag]) + payload for tag, payload in parts)
)  # values with known tags and random payloads, so reads get past the tag check


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    data=st.one_of(st.binary(max_size=200), _TAGGED),
    readers=st.lists(st.sampled_from(READERS), max_size=20),
)
def test_hostile_parcel_data_only_raises_read_errors(
    data: bytes, readers: list[str], pipe: tuple[int, int]
) -> None:
    # What a peer sends becomes a parcel as is: any bytes, read as any types, must give
    # values or ParcelReadError (position unchanged), and leak nothing.
    with MessageParcel._from_wire(data, [os.dup(pipe[0])], [Echo()]) as p:
        for reader in readers:
            position = p.get_read_position()
            try:
                value = getattr(p, reader)()
            except ParcelReadError as exc:
                assert exc.code == READ_ERROR
                assert p.get_read_position() == position
                continue
            assert p.get_read_position() > position
            if reader == "read_file_descriptor":
                os.close(value)
            elif reader == "read_ashmem":
                value.close()  # only a memfd passes, and the fd given is a pipe
                raise AssertionError("a pipe was accepted as Ashmem")
