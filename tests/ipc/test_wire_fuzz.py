"""Property-based fuzzing of childkit.ipc._wire.decode_record, the parser a hostile peer feeds.

The properties: any bytes with any fds either decode to frames or raise ProtocolError,
never another exception; a decoded record hands out exactly the fds it was given, in
order, each once; decoded data is never larger than the record; valid frames round-trip.
Runs are derandomized so the suite is deterministic. To fuzz longer, with fresh random
inputs each run: ``CHILDKIT_FUZZ_EXAMPLES=50000 pytest tests/ipc/test_wire_fuzz.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from childkit import ipc
from childkit.ipc._wire import (
    MAX_DETAIL_BYTES,
    OBJ_RECEIVER_STUB,
    OBJ_SENDER_STUB,
    PROTOCOL_VERSION,
    REPLY_DATA_OFFSET,
    TXN_DATA_OFFSET,
    Channel,
    Frame,
    Hello,
    Release,
    Reply,
    Transaction,
    decode_record,
    encode_channel,
    encode_error_reply,
    encode_hello,
    encode_oneway_frames,
    encode_release,
    encode_reply,
    encode_transaction,
    oneway_run,
    simple_reply,
    simple_request,
)

_LONG_RUN = int(os.environ.get("CHILDKIT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_LONG_RUN or 400, deadline=None, database=None, derandomize=not _LONG_RUN
)

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
OBJECTS = st.lists(st.tuples(st.sampled_from([OBJ_SENDER_STUB, OBJ_RECEIVER_STUB]), U32),
                   max_size=6)  # fmt: skip
DATA = st.binary(max_size=300)
N_FDS = st.integers(0, 4)


def fields(frame: Frame) -> dict[str, object]:
    return {"type": type(frame).__name__} | {
        name: getattr(frame, name) for name in type(frame).__slots__
    }


# A generated frame: (encoded chunk, its fd count, the fields it must decode to, minus fds).
Spec = tuple[bytes, int, dict[str, Any]]


@st.composite
def frame_specs(draw: st.DrawFn) -> Spec:
    kind = draw(st.sampled_from(["hello", "transaction", "reply", "error", "release",
                                 "channel"]))
    if kind == "hello":
        root, channels = draw(st.booleans()), draw(st.integers(0, 0xFFFF))
        return encode_hello(root, channels), 0, {"type": "Hello", "version": PROTOCOL_VERSION,
                                                 "has_root": root, "channels": channels}
    if kind == "channel":
        return encode_channel(), 1, {"type": "Channel"}
    if kind == "transaction":
        seq, handle, code = draw(U64), draw(U32), draw(U32)
        oneway, data, objects, n = draw(st.booleans()), draw(DATA), draw(OBJECTS), draw(N_FDS)
        chunk = encode_transaction(seq, handle, code, oneway, data, objects, n)
        return chunk, n, {"type": "Transaction", "seq": seq, "handle": handle, "code": code,
                          "oneway": oneway, "data": data, "objects": objects}  # fmt: skip
    if kind == "reply":
        seq, status, data, objects, n = draw(U64), draw(I32), draw(DATA), draw(OBJECTS), draw(N_FDS)
        return encode_reply(seq, status, data, objects, n), n, {
            "type": "Reply", "seq": seq, "status": status, "data": data, "objects": objects,
            "detail": ""}  # fmt: skip
    if kind == "error":
        seq, status, detail = draw(U64), draw(I32), draw(st.text(max_size=200))
        assert len(detail.encode()) <= MAX_DETAIL_BYTES
        return encode_error_reply(seq, status, detail), 0, {
            "type": "Reply", "seq": seq, "status": status, "data": b"", "objects": [],
            "detail": detail}  # fmt: skip
    handle, count, after = draw(U32), draw(st.integers(1, 2**32 - 1)), draw(U64)
    return (
        encode_release(handle, count, after),
        0,
        {"type": "Release", "handle": handle, "count": count, "after_replies": after},
    )


RECORDS = st.lists(frame_specs(), min_size=1, max_size=6)


def fds_for(specs: Sequence[Spec]) -> list[int]:
    return list(range(100, 100 + sum(n for _, n, _ in specs)))


def check_fast_paths(record: bytes, frames: list[Frame] | None) -> None:
    """The connection's hot-path checks (records that came with no fds) agree exactly with
    decode_record: they accept a record only if it decodes to that one plain frame, and
    accept every record that does."""
    request = simple_request(record, len(record))
    plain_request = frames is not None and len(frames) == 1 and isinstance(
        frames[0], Transaction) and not frames[0].oneway and not frames[0].objects
    if request is None:
        assert not plain_request
    else:
        assert plain_request and frames is not None
        txn = frames[0]
        assert isinstance(txn, Transaction)
        assert request == (txn.seq, txn.handle, txn.code)
        assert record[TXN_DATA_OFFSET:] == txn.data
    run = oneway_run(record, len(record))
    plain_run = frames is not None and all(
        isinstance(f, Transaction) and f.oneway and not f.objects
        and f.handle == frames[0].handle for f in frames)  # type: ignore[union-attr]
    if run is None:
        assert not plain_run
    else:
        assert plain_run and frames is not None
        assert run == (frames[0].handle,  # type: ignore[union-attr]
                       [(f.code, f.data) for f in frames])  # type: ignore[union-attr]
    reply = simple_reply(record, len(record))
    plain_reply = frames is not None and len(frames) == 1 and isinstance(
        frames[0], Reply) and not frames[0].objects and not frames[0].detail \
        and record[1] == 0  # not an error reply (those may have an empty detail)
    if reply is None:
        assert not plain_reply
    else:
        assert plain_reply and frames is not None
        rep = frames[0]
        assert isinstance(rep, Reply)
        assert reply == (rep.seq, rep.status)
        assert record[REPLY_DATA_OFFSET:] == rep.data


def check_decode(record: bytes, fds: list[int]) -> list[Frame] | None:
    """Decode; only ProtocolError may escape, and a success must be sound."""
    try:
        frames = decode_record(record, fds)
    except ipc.ProtocolError as exc:
        assert exc.code == ipc.IPCErrorCode.OH_IPC_INNER_ERROR
        assert exc.message
        if not fds:
            check_fast_paths(record, None)
        return None
    if not fds:
        check_fast_paths(record, frames)
    assert frames
    handed: list[int] = []
    payload = 0
    for frame in frames:
        assert isinstance(frame, (Hello, Transaction, Reply, Release, Channel))
        if isinstance(frame, (Transaction, Reply, Channel)):
            handed.extend(frame.fds)
        if isinstance(frame, (Transaction, Reply)):
            payload += len(frame.data) + 5 * len(frame.objects)
        if isinstance(frame, Reply):
            payload += len(frame.detail.encode())
    # Every given fd goes to exactly one frame, in the order given: none invented, none
    # used twice, and none dropped (an fd that no frame owns would leak).
    assert handed == list(fds)
    # Bounded allocation: what was decoded never exceeds what was sent (a detail may
    # grow by replacement characters, at most three bytes for each byte it had).
    assert payload <= 3 * len(record)
    return frames


# ---------------------------------------------------------------------------- (1) arbitrary input
@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(0, 1023), max_size=300))
def test_arbitrary_bytes_and_fds(record: bytes, fds: list[int]) -> None:
    check_decode(record, fds)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),
            st.sampled_from([0, 0, 1, 2]),
            st.sampled_from([0, 0, 0, 1, 5]),
            # Bodies of HELLO's and RELEASE's exact sizes sometimes decode as those frames.
            st.one_of(st.binary(max_size=64), st.binary(min_size=4, max_size=4),
                      st.binary(min_size=16, max_size=16)),
        ),
        min_size=1, max_size=5,
    ),
    st.one_of(st.just([]), st.lists(st.integers(0, 63), max_size=12)),
)  # fmt: skip
def test_arbitrary_frames_with_plausible_headers(
    parts: list[tuple[int, int, int, bytes]], fds: list[int]
) -> None:
    # Random bodies behind headers whose type, flags and length are plausible, so that the
    # per-frame decoders, not only the header checks, see the garbage.
    record = b"".join(
        bytes([ftype, flags]) + n.to_bytes(2, "little") + len(body).to_bytes(4, "little") + body
        for ftype, flags, n, body in parts
    )
    check_decode(record, fds)


# ---------------------------------------------------------------------------- (2) mutations
@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    specs = draw(RECORDS)
    data = bytearray(b"".join(chunk for chunk, _, _ in specs))
    fds = fds_for(specs)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "word"]))
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[at:]
        else:  # overwrite a length-sized field with an extreme or off-by-one value
            width = draw(st.sampled_from([1, 2, 4, 8]))
            value = draw(st.sampled_from([0, 1, 2**(8 * width) - 1, len(data), len(data) + 1,
                                          len(data) - at]))  # fmt: skip
            data[at : at + width] = (value % 2 ** (8 * width)).to_bytes(width, "little")
    fd_change = draw(st.integers(-2, 2))
    if fd_change < 0:
        fds = fds[: max(0, len(fds) + fd_change)]
    else:
        fds += list(range(900, 900 + fd_change))
    return bytes(data), fds


@FUZZ
@given(mutated_records())
def test_mutated_valid_records(case: tuple[bytes, list[int]]) -> None:
    check_decode(*case)


# ---------------------------------------------------------------------------- (3) round trip
@FUZZ
@given(RECORDS)
def test_valid_frames_round_trip(specs: list[Spec]) -> None:
    record = b"".join(chunk for chunk, _, _ in specs)
    fds = fds_for(specs)
    frames = check_decode(record, fds)
    assert frames is not None
    expected = []
    fd_iter = iter(fds)
    for _chunk, n, want in specs:
        want = dict(want)
        if want["type"] in ("Transaction", "Reply", "Channel"):
            want["fds"] = [next(fd_iter) for _ in range(n)]
        expected.append(want)
    assert [fields(f) for f in frames] == expected
    # Each frame alone decodes the same as inside the record (fast path vs. general loop).
    fd_iter = iter(fds)
    for (chunk, n, _), frame in zip(specs, frames, strict=True):
        alone = decode_record(chunk, [next(fd_iter) for _ in range(n)])
        assert [fields(f) for f in alone] == [fields(frame)]


# ---------------------------------------------------------------------------- (4) hot paths
def _with_field(record: bytes, offset: int, width: int, value: int) -> bytes:
    return record[:offset] + (value % 2 ** (8 * width)).to_bytes(width, "little") + record[
        offset + width:]


# Header fields of a transaction and a reply frame: (offset, width) of type, flags, n_fds,
# body length, then (after seq) handle/status, code/data length, ...
_TXN_FIELDS = [(0, 1), (1, 1), (2, 2), (4, 4), (16, 4), (20, 4), (24, 4), (28, 2)]
_REPLY_FIELDS = [(0, 1), (1, 1), (2, 2), (4, 4), (16, 4), (20, 4), (24, 2)]


def test_hot_path_checks_reject_every_field_out_of_place() -> None:
    # Each header field of a plain request and reply, set to neighbouring and extreme
    # values: the hot-path checks must agree with decode_record every time.
    one_way = encode_transaction(8, 3, 9, True, b"\x03\x01\x00\x00\x00", [], 0)
    records = [(encode_transaction(7, 3, 9, False, b"\x03\x01\x00\x00\x00", [], 0), _TXN_FIELDS),
               (encode_reply(7, 0, b"\x03\x01\x00\x00\x00", [], 0), _REPLY_FIELDS),
               (one_way, _TXN_FIELDS),
               (one_way * 3, [(at + len(one_way) * i, width) for i in range(3)
                              for at, width in _TXN_FIELDS])]
    assert simple_request(records[0][0], len(records[0][0])) == (7, 3, 9)
    assert simple_reply(records[1][0], len(records[1][0])) == (7, 0)
    assert oneway_run(one_way * 3, 3 * len(one_way)) == (3, [(9, b"\x03\x01\x00\x00\x00")] * 3)
    # A run to two objects is two runs' worth of work: the general path takes it.
    two = one_way + encode_transaction(8, 4, 9, True, b"", [], 0)
    assert oneway_run(two, len(two)) is None and len(decode_record(two, [])) == 2
    tried = 0
    for record, fields in records:
        for offset, width in fields:
            current = int.from_bytes(record[offset:offset + width], "little")
            for value in {current - 1, current + 1, 0, 1, 2, 2 ** (8 * width) - 1}:
                check_decode(_with_field(record, offset, width, value), [])
                tried += 1
        for cut in (1, len(record) - 1):
            check_decode(record[:cut], [])
            check_decode(record + b"\x00" * cut, [])
    assert tried > 150


@FUZZ
@given(U32, st.lists(st.tuples(U32, DATA), max_size=20))
def test_batch_encoding_is_frame_by_frame_encoding(
    handle: int, requests: list[tuple[int, bytes]]
) -> None:
    assert encode_oneway_frames(handle, requests) == [
        encode_transaction(0, handle, code, True, data, [], 0) for code, data in requests]
    record = b"".join(encode_oneway_frames(handle, requests))
    if requests:
        assert oneway_run(record, len(record)) == (handle, requests)
