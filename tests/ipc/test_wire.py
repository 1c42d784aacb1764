"""Tests for childkit.ipc._wire: frames to records and back, and every malformed record."""

from __future__ import annotations

import struct

import pytest

from childkit import ipc
from childkit.ipc import IPCErrorCode
from childkit.ipc import _wire as w
from childkit.ipc._limits import MAX_PARCEL_FDS, MAX_PARCEL_OBJECTS, MAX_WIRE_DATA
from childkit.ipc._wire import (
    F_HELLO,
    F_RELEASE,
    F_REPLY,
    F_TRANSACTION,
    FLAG_ERROR,
    FLAG_HAS_ROOT,
    FLAG_ONEWAY,
    HEADER,
    MAX_DETAIL_BYTES,
    MAX_RECORD_BYTES,
    MAX_RECORD_FDS,
    OBJ_RECEIVER_STUB,
    OBJ_SENDER_STUB,
    PROTOCOL_VERSION,
    Frame,
    Hello,
    Release,
    Reply,
    Transaction,
    decode_record,
    encode_error_reply,
    encode_hello,
    encode_release,
    encode_reply,
    encode_transaction,
)

TXN_BODY = struct.Struct("<QIIIH")  # seq, handle, code, data length, n_objects
REPLY_BODY = struct.Struct("<QiIH")  # seq, status, data length, n_objects
FRAME_OVERHEAD = HEADER.size + TXN_BODY.size  # a transaction frame without data or objects


def fields(frame: Frame) -> dict[str, object]:
    return {"type": type(frame).__name__} | {
        name: getattr(frame, name) for name in type(frame).__slots__
    }


def decode_one(record: bytes | bytearray | memoryview, fds: list[int] | None = None) -> Frame:
    frames = decode_record(record, fds or [])
    assert len(frames) == 1
    return frames[0]


def protocol_error(record: bytes | bytearray, fds: list[int] | None = None) -> str:
    with pytest.raises(ipc.ProtocolError) as info:
        decode_record(record, fds or [])
    assert info.value.code == IPCErrorCode.OH_IPC_INNER_ERROR
    assert info.value.message
    return info.value.message


def frame(ftype: int, body: bytes, flags: int = 0, n_fds: int = 0) -> bytes:
    """A frame built by hand, with a header that agrees with its body unless told not to."""
    return HEADER.pack(ftype, flags, n_fds, len(body)) + body


def txn_body(data: bytes = b"", objects: bytes = b"", n_obj: int = 0, data_len: int = -1) -> bytes:
    size = len(data) if data_len < 0 else data_len
    return TXN_BODY.pack(1, 0, 1, size, n_obj) + data + objects


# ---------------------------------------------------------------------------- round trips
def test_hello_round_trip() -> None:
    for has_root in (True, False):
        got = decode_one(encode_hello(has_root))
        assert isinstance(got, Hello)
        assert (got.version, got.has_root) == (PROTOCOL_VERSION, has_root)


def test_transaction_round_trip() -> None:
    objects = [(OBJ_SENDER_STUB, 7), (OBJ_RECEIVER_STUB, 0), (OBJ_SENDER_STUB, 2**32 - 1)]
    record = encode_transaction(2**64 - 1, 2**32 - 1, 0xFFFFFF, False, b"payload", objects, 3)
    got = decode_one(record, [10, 11, 12])
    assert fields(got) == {
        "type": "Transaction", "seq": 2**64 - 1, "handle": 2**32 - 1, "code": 0xFFFFFF,
        "oneway": False, "data": b"payload", "objects": objects, "fds": [10, 11, 12],
    }  # fmt: skip


def test_oneway_transaction_and_bytearray_data() -> None:
    got = decode_one(encode_transaction(0, 3, 1, True, bytearray(b"\x00\x01"), [], 0))
    assert isinstance(got, Transaction)
    assert (got.seq, got.handle, got.code, got.oneway, got.data) == (0, 3, 1, True, b"\x00\x01")
    assert type(got.data) is bytes
    assert got.objects == [] and got.fds == []


def test_reply_round_trip() -> None:
    objects = [(OBJ_RECEIVER_STUB, 5)]
    got = decode_one(encode_reply(9, 0, b"answer", objects, 2), [4, 5])
    assert fields(got) == {
        "type": "Reply", "seq": 9, "status": 0, "data": b"answer", "objects": objects,
        "fds": [4, 5], "detail": "",
    }  # fmt: skip
    got = decode_one(encode_reply(10, -(2**31), b"", [], 0))
    assert isinstance(got, Reply)
    assert (got.seq, got.status, got.data, got.objects, got.fds) == (10, -(2**31), b"", [], [])


def test_error_reply_round_trip() -> None:
    got = decode_one(encode_error_reply(3, 1909001, "stub said nö"))
    assert fields(got) == {
        "type": "Reply", "seq": 3, "status": 1909001, "data": b"", "objects": [], "fds": [],
        "detail": "stub said nö",
    }  # fmt: skip


def test_error_reply_detail_is_cut_to_the_limit() -> None:
    got = decode_one(encode_error_reply(1, 1, "x" * (MAX_DETAIL_BYTES + 100)))
    assert isinstance(got, Reply)
    assert got.detail == "x" * MAX_DETAIL_BYTES
    # A cut through a multi-byte character still decodes (as a replacement character).
    got = decode_one(encode_error_reply(1, 1, "x" + "é" * MAX_DETAIL_BYTES))
    assert isinstance(got, Reply)
    assert len(got.detail.encode("utf-8", "replace")) <= MAX_DETAIL_BYTES + 2
    assert got.detail.startswith("xé")
    got = decode_one(encode_error_reply(1, 1, "lone \ud800"))  # never fails to encode
    assert isinstance(got, Reply) and got.detail.startswith("lone ")


def test_release_round_trip() -> None:
    got = decode_one(encode_release(2**32 - 1, 2**32 - 1, 2**64 - 1))
    assert fields(got) == {
        "type": "Release", "handle": 2**32 - 1, "count": 2**32 - 1, "after_replies": 2**64 - 1,
    }  # fmt: skip
    got = decode_one(encode_release(4, 1))
    assert isinstance(got, Release)
    assert (got.handle, got.count, got.after_replies) == (4, 1, 0)


def test_several_frames_in_one_record_with_fds_distributed() -> None:
    parts = [
        (encode_hello(True), 0),
        (encode_transaction(1, 1, 5, False, b"a", [(OBJ_SENDER_STUB, 1)], 2), 2),
        (encode_release(1, 2, 3), 0),
        (encode_transaction(0, 1, 6, True, b"", [], 0), 0),
        (encode_reply(4, 0, b"r", [], 1), 1),
        (encode_error_reply(5, 1901005, "dead"), 0),
        (encode_transaction(2, 0, 7, False, b"xyz", [], 3), 3),
    ]
    record = b"".join(chunk for chunk, _ in parts)
    fds = [100, 101, 102, 103, 104, 105]
    frames = decode_record(record, fds)
    assert [type(f).__name__ for f in frames] == [
        "Hello",
        "Transaction",
        "Release",
        "Transaction",
        "Reply",
        "Reply",
        "Transaction",
    ]
    assert [getattr(f, "fds", None) for f in frames] == [
        None,
        [100, 101],
        None,
        [],
        [102],
        [],
        [103, 104, 105],
    ]
    # Every frame decodes to the same fields alone as inside the record.
    fd_iter = iter(fds)
    for (chunk, n), got in zip(parts, frames, strict=True):
        alone = decode_one(chunk, [next(fd_iter) for _ in range(n)])
        assert fields(alone) == fields(got)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    record = encode_transaction(1, 2, 3, False, b"data", [], 0) + encode_release(1, 1)
    for data in (bytearray(record), memoryview(record), memoryview(bytearray(record))):
        assert [fields(f) for f in decode_record(data, [])] == [
            fields(f) for f in decode_record(record, [])
        ]
    single = encode_reply(1, 0, b"x", [], 0)
    buf = bytearray(single + bytes(100))  # the connection decodes a slice of a larger buffer
    assert fields(decode_one(memoryview(buf)[: len(single)])) == fields(decode_one(single))


# ---------------------------------------------------------------------------- fast paths
@pytest.mark.parametrize("oneway", [False, True])
@pytest.mark.parametrize("data", [b"", b"small", bytes(MAX_WIRE_DATA)])
def test_fast_and_general_paths_agree_on_transactions(oneway: bool, data: bytes) -> None:
    chunk = encode_transaction(42, 3, 0x123456, oneway, data, [], 0)
    alone = decode_one(chunk)  # the single-frame fast path
    first, second = decode_record(chunk + encode_release(1, 1), [])  # the general loop
    also_first = decode_record(chunk + encode_reply(1, 0, b"", [], 1), [9])[0]  # fds present
    # With an fd or an object the frame takes the full per-frame decoder instead.
    with_fd = decode_one(encode_transaction(42, 3, 0x123456, oneway, data, [], 1), [9])
    objs = [(OBJ_SENDER_STUB, 1)]
    with_obj = decode_one(encode_transaction(42, 3, 0x123456, oneway, data, objs, 0))
    assert fields(alone) == fields(first) == fields(also_first)
    assert fields(with_fd) == fields(alone) | {"fds": [9]}
    assert fields(with_obj) == fields(alone) | {"objects": objs}
    assert isinstance(second, Release)


@pytest.mark.parametrize("data", [b"", b"reply", bytes(MAX_WIRE_DATA)])
def test_fast_and_general_paths_agree_on_replies(data: bytes) -> None:
    chunk = encode_reply(7, 1909000, data, [], 0)
    alone = decode_one(chunk)
    first, _second = decode_record(chunk + encode_release(1, 1), [])
    with_fd = decode_one(encode_reply(7, 1909000, data, [], 1), [9])
    assert fields(alone) == fields(first)
    assert fields(with_fd) == fields(alone) | {"fds": [9]}


def test_fast_path_rejects_what_the_general_path_rejects() -> None:
    good = encode_transaction(1, 2, 3, False, b"abcd", [], 0)
    # Each one-field change of a fast-path candidate must still be refused.
    cases = {
        "unknown flag": bytearray(good),
        "claims an fd": bytearray(good),
        "body too long": bytearray(good),
        "data length short": bytearray(good),
        "data length long": bytearray(good),
    }
    cases["unknown flag"][1] = 0x02
    struct.pack_into("<H", cases["claims an fd"], 2, 1)
    struct.pack_into("<I", cases["body too long"], 4, len(good) - HEADER.size + 1)
    struct.pack_into("<I", cases["data length short"], HEADER.size + 16, 3)
    struct.pack_into("<I", cases["data length long"], HEADER.size + 16, 5)
    for name, record in cases.items():
        assert protocol_error(record), name
    reply = bytearray(encode_reply(1, 0, b"ab", [], 0))
    reply[1] = 0x02
    protocol_error(reply)


# ---------------------------------------------------------------------------- malformed records
def test_empty_record() -> None:
    assert "empty" in protocol_error(b"")
    protocol_error(b"", [3])


@pytest.mark.parametrize("size", range(1, HEADER.size))
def test_truncated_header(size: int) -> None:
    protocol_error(encode_hello(True)[:size])


def test_truncated_header_after_a_good_frame() -> None:
    assert "truncated" in protocol_error(encode_release(1, 1) + b"\x01\x00\x00")


def test_body_length_past_the_end() -> None:
    good = encode_transaction(1, 2, 3, False, b"data", [], 0)
    assert "past the record end" in protocol_error(good[:-1])
    bad = bytearray(good)
    struct.pack_into("<I", bad, 4, 2**32 - 1)
    protocol_error(bad)
    protocol_error(encode_release(1, 1) + good[:-1])


def test_more_fds_claimed_than_given() -> None:
    record = encode_transaction(1, 2, 3, False, b"", [], 2)
    assert "claims 2 fds" in protocol_error(record, [5])
    protocol_error(record)
    two = record + encode_reply(1, 0, b"", [], 1)
    protocol_error(two, [5, 6])  # the second frame finds none left


def test_fewer_fds_claimed_than_given() -> None:
    record = encode_transaction(1, 2, 3, False, b"", [], 1)
    assert "claim 1" in protocol_error(record, [5, 6])
    protocol_error(encode_transaction(1, 2, 3, False, b"", [], 0), [5])
    protocol_error(encode_reply(1, 0, b"", [], 0), [5])


@pytest.mark.parametrize("ftype", [0, 6, 0x7F, 0xFF])
def test_unknown_frame_type(ftype: int) -> None:
    assert f"unknown frame type {ftype}" in protocol_error(frame(ftype, b""))
    protocol_error(frame(ftype, bytes(22)))


def test_channel_frame_carries_exactly_one_fd_and_no_body() -> None:
    (frame_,) = decode_record(w.encode_channel(), [7])
    assert isinstance(frame_, w.Channel) and frame_.fds == [7]
    assert "malformed channel" in protocol_error(w.HEADER.pack(w.F_CHANNEL, 0, 0, 0))  # no fd
    assert "malformed channel" in protocol_error(w.HEADER.pack(w.F_CHANNEL, 0, 2, 0), [5, 6])
    assert "malformed channel" in protocol_error(w.HEADER.pack(w.F_CHANNEL, 0, 1, 1) + b"x", [5])
    assert "malformed channel" in protocol_error(w.HEADER.pack(w.F_CHANNEL, 1, 1, 0), [5])


def test_hello_says_how_many_channels_the_sender_accepts() -> None:
    (old,) = decode_record(w.encode_hello(True), [])
    assert isinstance(old, w.Hello) and old.channels == 0  # what the C kit sends
    (new,) = decode_record(w.encode_hello(False, w.MAX_CHANNELS), [])
    assert isinstance(new, w.Hello) and new.channels == w.MAX_CHANNELS and not new.has_root


@pytest.mark.parametrize(
    ("chunk", "flag"),
    [(encode_transaction(1, 2, 3, False, b"", [], 0), 0x02),
     (encode_transaction(1, 2, 3, True, b"x", [(OBJ_SENDER_STUB, 1)], 0), 0x80),
     (encode_reply(1, 0, b"", [], 0), 0x04),
     (encode_error_reply(1, 1, "e"), 0x02),
     (encode_release(1, 1), 0x01),
     (encode_hello(True), 0x02),
     (encode_hello(False), 0x40)],
)  # fmt: skip
def test_unknown_flags(chunk: bytes, flag: int) -> None:
    bad = bytearray(chunk)
    bad[1] |= flag
    protocol_error(bad)
    protocol_error(encode_release(1, 1) + bad)


def test_record_size_limit_both_sides() -> None:
    # Two transactions that fill a record exactly: accepted.
    half = (MAX_RECORD_BYTES - 2 * FRAME_OVERHEAD) // 2
    rest = MAX_RECORD_BYTES - 2 * FRAME_OVERHEAD - half
    record = encode_transaction(1, 0, 1, True, bytes(half), [], 0) + encode_transaction(
        2, 0, 1, True, bytes(rest), [], 0
    )
    assert len(record) == MAX_RECORD_BYTES
    assert len(decode_record(record, [])) == 2
    # One byte more, every frame still well formed: refused.
    record = encode_transaction(1, 0, 1, True, bytes(half + 1), [], 0) + encode_transaction(
        2, 0, 1, True, bytes(rest), [], 0
    )
    assert len(record) == MAX_RECORD_BYTES + 1
    assert str(MAX_RECORD_BYTES) in protocol_error(record)
    protocol_error(bytes(MAX_RECORD_BYTES + 1))


def _txn_with_fds(n: int) -> bytes:
    return encode_transaction(1, 0, 1, True, b"", [], n)


def test_record_fd_limit_both_sides() -> None:
    counts = [MAX_PARCEL_FDS] * (MAX_RECORD_FDS // MAX_PARCEL_FDS)
    counts.append(MAX_RECORD_FDS - sum(counts))
    record = b"".join(_txn_with_fds(n) for n in counts)
    frames = decode_record(record, list(range(MAX_RECORD_FDS)))
    assert [len(f.fds) for f in frames if isinstance(f, Transaction)] == counts
    record += _txn_with_fds(1)
    assert str(MAX_RECORD_FDS) in protocol_error(record, list(range(MAX_RECORD_FDS + 1)))


@pytest.mark.parametrize("encode", ["transaction", "reply"])
def test_frame_fd_limit_both_sides(encode: str) -> None:
    def chunk(n: int) -> bytes:
        if encode == "transaction":
            return encode_transaction(1, 0, 1, False, b"", [], n)
        return encode_reply(1, 0, b"", [], n)

    got = decode_one(chunk(MAX_PARCEL_FDS), list(range(MAX_PARCEL_FDS)))
    assert isinstance(got, (Transaction, Reply)) and len(got.fds) == MAX_PARCEL_FDS
    message = protocol_error(chunk(MAX_PARCEL_FDS + 1), list(range(MAX_PARCEL_FDS + 1)))
    assert str(MAX_PARCEL_FDS) in message


@pytest.mark.parametrize("objects", [[], [(OBJ_SENDER_STUB, 1)]])
def test_parcel_data_limit_both_sides(objects: list[tuple[int, int]]) -> None:
    for chunk in (encode_transaction(1, 0, 1, False, bytes(MAX_WIRE_DATA), objects, 0),
                  encode_reply(1, 0, bytes(MAX_WIRE_DATA), objects, 0)):  # fmt: skip
        assert len(decode_record(chunk, [])) == 1
        assert len(decode_record(chunk + encode_release(1, 1), [])) == 2
    for chunk in (encode_transaction(1, 0, 1, False, bytes(MAX_WIRE_DATA + 1), objects, 0),
                  encode_reply(1, 0, bytes(MAX_WIRE_DATA + 1), objects, 0)):  # fmt: skip
        assert len(chunk) <= MAX_RECORD_BYTES  # refused for the parcel, not the record
        assert str(MAX_WIRE_DATA) in protocol_error(chunk)
        protocol_error(chunk + encode_release(1, 1))
        protocol_error(encode_release(1, 1) + chunk)


def test_object_limit_both_sides() -> None:
    objects = [(OBJ_SENDER_STUB, i) for i in range(MAX_PARCEL_OBJECTS)]
    got = decode_one(encode_transaction(1, 0, 1, False, b"d", objects, 0))
    assert isinstance(got, Transaction) and got.objects == objects
    got = decode_one(encode_reply(1, 0, b"", objects, 0))
    assert isinstance(got, Reply) and got.objects == objects
    objects.append((OBJ_RECEIVER_STUB, 0))
    for chunk in (encode_transaction(1, 0, 1, False, b"d", objects, 0),
                  encode_reply(1, 0, b"", objects, 0)):  # fmt: skip
        assert str(MAX_PARCEL_OBJECTS) in protocol_error(chunk)


@pytest.mark.parametrize("kind", [0, 3, 0xFF])
def test_unknown_object_kind(kind: int) -> None:
    good = [(OBJ_SENDER_STUB, 1), (OBJ_RECEIVER_STUB, 2)]
    decode_one(encode_transaction(1, 0, 1, False, b"", good, 0))
    for chunk in (encode_transaction(1, 0, 1, False, b"", [*good, (kind, 3)], 0),
                  encode_reply(1, 0, b"x", [(kind, 3)], 0)):  # fmt: skip
        assert f"unknown kind {kind}" in protocol_error(chunk)


def test_lengths_that_do_not_add_up() -> None:
    obj = struct.pack("<BI", OBJ_SENDER_STUB, 1)
    bodies = [
        txn_body(b"abc", data_len=2),  # data shorter than the body says
        txn_body(b"abc", data_len=4),  # longer
        txn_body(b"", obj, n_obj=2),  # fewer objects than counted
        txn_body(b"", obj + obj, n_obj=1),  # more
        txn_body(b"", obj[:-1], n_obj=1),  # a cut-off object
        txn_body(b"", data_len=2**32 - 1),
        TXN_BODY.pack(1, 0, 1, 0, 0)[:-1],  # shorter than the fixed part
    ]
    for body in bodies:
        protocol_error(frame(F_TRANSACTION, body))
        protocol_error(frame(F_TRANSACTION, body, FLAG_ONEWAY))
        protocol_error(encode_release(1, 1) + frame(F_TRANSACTION, body))
    for body in (REPLY_BODY.pack(1, 0, 3, 0) + b"ab", REPLY_BODY.pack(1, 0, 1, 0) + b"ab",
                 REPLY_BODY.pack(1, 0, 0, 1), REPLY_BODY.pack(1, 0, 0, 0)[:-1]):  # fmt: skip
        protocol_error(frame(F_REPLY, body))
        protocol_error(encode_release(1, 1) + frame(F_REPLY, body))


def test_malformed_error_replies() -> None:
    cases = [
        REPLY_BODY.pack(1, 5, 3, 0) + b"ab",  # detail length disagrees with the body
        REPLY_BODY.pack(1, 5, 1, 0) + b"ab",
        REPLY_BODY.pack(1, 5, 0, 1) + struct.pack("<BI", OBJ_SENDER_STUB, 1),  # an object
        REPLY_BODY.pack(1, 5, MAX_DETAIL_BYTES + 1, 0) + bytes(MAX_DETAIL_BYTES + 1),
    ]
    for body in cases:
        assert "error reply" in protocol_error(frame(F_REPLY, body, FLAG_ERROR))
    at_limit = REPLY_BODY.pack(1, 5, MAX_DETAIL_BYTES, 0) + b"d" * MAX_DETAIL_BYTES
    got = decode_one(frame(F_REPLY, at_limit, FLAG_ERROR))
    assert isinstance(got, Reply) and got.detail == "d" * MAX_DETAIL_BYTES


def test_error_reply_carrying_fds() -> None:
    body = REPLY_BODY.pack(1, 5, 1, 0) + b"e"
    assert "error reply" in protocol_error(frame(F_REPLY, body, FLAG_ERROR, n_fds=1), [7])


@pytest.mark.parametrize("version", [0, 2, 0xFFFF])
def test_hello_with_the_wrong_version(version: int) -> None:
    chunk = frame(F_HELLO, struct.pack("<HH", version, 0), FLAG_HAS_ROOT)
    assert f"protocol {version}" in protocol_error(chunk)


def test_malformed_hello() -> None:
    protocol_error(frame(F_HELLO, struct.pack("<H", PROTOCOL_VERSION)))
    protocol_error(frame(F_HELLO, struct.pack("<HHB", PROTOCOL_VERSION, 0, 0)))


def test_release_with_count_zero() -> None:
    assert "zero count" in protocol_error(encode_release(1, 0))
    assert "zero count" in protocol_error(encode_hello(True) + encode_release(1, 0, 5))


def test_malformed_release() -> None:
    body = struct.pack("<IIQ", 1, 1, 0)
    protocol_error(frame(F_RELEASE, body[:-1]))
    protocol_error(frame(F_RELEASE, body + b"\x00"))


@pytest.mark.parametrize("chunk", [encode_release(1, 1), encode_hello(True)])
def test_fds_on_release_or_hello(chunk: bytes) -> None:
    bad = bytearray(chunk)
    struct.pack_into("<H", bad, 2, 1)
    assert "cannot carry file descriptors" in protocol_error(bad, [3])


def test_decode_does_not_touch_the_fds() -> None:
    # The fds are only numbers to this module: nothing is checked, closed, or duplicated.
    record = encode_transaction(1, 0, 1, False, b"", [], 2)
    got = decode_one(record, [-1, 10**6])
    assert isinstance(got, Transaction) and got.fds == [-1, 10**6]
    protocol_error(record, [-1, 10**6, 5])
