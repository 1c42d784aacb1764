"""Writes wire_corpus.json: records (valid and hostile) that both decoders must judge alike.

Run ``python tests/native/make_wire_corpus.py`` after a deliberate protocol change and
review the diff: each entry is a record (hex), how many fds came with it, and either the
frames it holds (summarised as in test_wire_conformance.py) or ``null`` for a record the
protocol refuses. The valid records are made with ``_wire``'s encoders; the hostile ones
by hand, one broken rule each (docs/wire-format.md).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from childkit.ipc import _wire as w

H = w.HEADER.pack
TXN = struct.Struct("<QIIIH").pack
REP = struct.Struct("<QiIH").pack


def txn(data: bytes = b"", objects: bytes = b"", n_obj: int = 0, *, flags: int = 0,
        n_fds: int = 0, data_len: int | None = None, body_extra: int = 0) -> bytes:
    dl = len(data) if data_len is None else data_len
    body = TXN(1, 0, 1, dl, n_obj) + data + objects
    return H(w.F_TRANSACTION, flags, n_fds, len(body) + body_extra) + body


def rep(data: bytes = b"", *, flags: int = 0, n_fds: int = 0, n_obj: int = 0,
        objects: bytes = b"", data_len: int | None = None) -> bytes:
    dl = len(data) if data_len is None else data_len
    body = REP(1, 0, dl, n_obj) + data + objects
    return H(w.F_REPLY, flags, n_fds, len(body)) + body


VALID: list[tuple[str, bytes, int]] = [
    ("hello", w.encode_hello(False), 0),
    ("hello with root", w.encode_hello(True), 0),
    ("hello offering channels", w.encode_hello(True, w.MAX_CHANNELS), 0),
    ("channel", w.encode_channel(), 1),
    ("plain request", w.py_encode_transaction(7, 0, 1, False, b"\x03\x01\x00\x00\x00", [], 0), 0),
    ("one-way request", w.py_encode_transaction(0, 3, 0xFFFFFF, True, b"x" * 40, [], 0), 0),
    ("request with objects and fds",
     w.py_encode_transaction(9, 1, 2, False, b"\x0f\x00\x00\x00\x00", [(1, 5), (2, 0)], 2), 2),
    ("plain reply", w.py_encode_reply(7, 0, b"\x07\x05\x00\x00\x00", [], 0), 0),
    ("failed reply", w.py_encode_reply(7, 1909001, b"", [], 0), 0),
    ("error reply", w.encode_error_reply(3, 1901007, "stub raised \u00e9"), 0),
    ("release", w.encode_release(4, 2, 17), 0),
    ("batch of one-way requests", b"".join(
        w.py_encode_transaction(0, 2, c, True, bytes([c]) * c, [], 0) for c in range(1, 6)), 0),
    ("mixed record", w.encode_release(1, 1) + w.py_encode_transaction(
        0, 0, 5, True, b"", [(1, 3)], 1) + w.py_encode_reply(2, 0, b"", [], 1), 2),
    ("largest parcel", w.py_encode_transaction(1, 0, 1, False, b"\x00" * w.MAX_WIRE_DATA,
                                               [], 0), 0),
    ("most objects", w.py_encode_transaction(1, 0, 1, False, b"",
                                             [(1, i) for i in range(256)], 0), 0),
    ("most fds in a transaction", w.py_encode_transaction(1, 0, 1, False, b"", [], 64), 64),
    ("longest error detail", H(w.F_REPLY, w.FLAG_ERROR, 0, 18 + 4096) + REP(1, 5, 4096, 0)
     + b"e" * 4096, 0),
    ("detail cut mid-character", H(w.F_REPLY, w.FLAG_ERROR, 0, 18 + 1) + REP(1, 5, 1, 0)
     + b"\xc3", 0),
]

HOSTILE: list[tuple[str, bytes, int]] = [
    ("empty record", b"", 0),
    ("short header", b"\x02\x00\x00", 0),
    ("record too large", b"\x00" * (w.MAX_RECORD_BYTES + 1), 0),
    ("too many fds for a record", w.encode_hello(False), w.MAX_RECORD_FDS + 1),
    ("unknown frame type", H(9, 0, 0, 0), 0),
    ("frame type 0", H(0, 0, 0, 0), 0),
    ("body past the end", H(w.F_TRANSACTION, 0, 0, 100) + b"\x00" * 10, 0),
    ("body length 2**32-1", H(w.F_REPLY, 0, 0, 0xFFFFFFFF), 0),
    ("trailing partial header", w.encode_hello(False) + b"\x01", 0),
    ("transaction shorter than its header", H(w.F_TRANSACTION, 0, 0, 21) + b"\x00" * 21, 0),
    ("transaction unknown flag", txn(flags=0x02), 0),
    ("transaction data_len past the body", txn(b"abc", data_len=4), 0),
    ("transaction data_len short of the body", txn(b"abc", data_len=2), 0),
    ("transaction data_len 2**32-1", txn(b"", data_len=0xFFFFFFFF), 0),
    ("transaction parcel too large", txn(b"\x00" * (w.MAX_WIRE_DATA + 1)), 0),
    ("transaction too many objects", txn(b"", b"\x01\x00\x00\x00\x00" * 257, 257), 0),
    ("transaction object kind 0", txn(b"", b"\x00\x01\x00\x00\x00", 1), 0),
    ("transaction object kind 3", txn(b"", b"\x03\x01\x00\x00\x00", 1), 0),
    ("transaction object count past the body", txn(b"", b"\x01\x00\x00\x00\x00", 2), 0),
    ("transaction too many fds", txn(n_fds=65), 65),
    ("frame claims fds that did not come", txn(n_fds=1), 0),
    ("fds that no frame claims", txn(), 1),
    ("reply shorter than its header", H(w.F_REPLY, 0, 0, 17) + b"\x00" * 17, 0),
    ("reply unknown flag", rep(flags=0x04), 0),
    ("reply too many fds", rep(n_fds=65), 65),
    ("error reply with fds", rep(b"x", flags=w.FLAG_ERROR, n_fds=1), 1),
    ("error reply with objects", rep(b"", flags=w.FLAG_ERROR, n_obj=1,
                                     objects=b"\x01\x00\x00\x00\x00"), 0),
    ("error detail too long", rep(b"e" * 4097, flags=w.FLAG_ERROR), 0),
    ("error reply length mismatch", rep(b"abc", flags=w.FLAG_ERROR, data_len=2), 0),
    ("release of zero references", H(w.F_RELEASE, 0, 0, 16) + struct.pack("<IIQ", 1, 0, 0), 0),
    ("release with flags", H(w.F_RELEASE, 1, 0, 16) + struct.pack("<IIQ", 1, 1, 0), 0),
    ("release of the wrong size", H(w.F_RELEASE, 0, 0, 12) + struct.pack("<III", 1, 1, 0), 0),
    ("release with an fd", H(w.F_RELEASE, 0, 1, 16) + struct.pack("<IIQ", 1, 1, 0), 1),
    ("hello of another version", H(w.F_HELLO, 0, 0, 4) + struct.pack("<HH", 2, 0), 0),
    ("hello unknown flag", H(w.F_HELLO, 2, 0, 4) + struct.pack("<HH", 1, 0), 0),
    ("hello of the wrong size", H(w.F_HELLO, 0, 0, 5) + struct.pack("<HHB", 1, 0, 0), 0),
    ("hello with an fd", H(w.F_HELLO, 0, 1, 4) + struct.pack("<HH", 1, 0), 1),
    ("channel without its fd", H(w.F_CHANNEL, 0, 0, 0), 0),
    ("channel with two fds", H(w.F_CHANNEL, 0, 2, 0), 2),
    ("channel with a body", H(w.F_CHANNEL, 0, 1, 4) + b"\0" * 4, 1),
    ("channel with a flag", H(w.F_CHANNEL, 1, 1, 0), 1),
    ("good frame then a bad one", w.encode_hello(False) + H(7, 0, 0, 0), 0),
]


def summary(frame: w.Frame) -> list[object]:
    """A frame as JSON: what both decoders must agree on."""
    if isinstance(frame, w.Hello):
        return ["hello", frame.version, frame.has_root]
    if isinstance(frame, w.Channel):
        return ["channel", len(frame.fds)]
    if isinstance(frame, w.Release):
        return ["release", frame.handle, frame.count, frame.after_replies]
    if isinstance(frame, w.Transaction):
        return ["transaction", frame.seq, frame.handle, frame.code, frame.oneway,
                bytes(frame.data).hex(), [list(o) for o in frame.objects], len(frame.fds)]
    assert isinstance(frame, w.Reply)
    return ["reply", frame.seq, frame.status, bytes(frame.data).hex(), frame.detail,
            [list(o) for o in frame.objects], len(frame.fds)]


def build() -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for name, record, n_fds in VALID:
        frames = w.decode_record(record, list(range(100, 100 + n_fds)))
        entries.append({"name": name, "record": record.hex(), "n_fds": n_fds,
                        "frames": [summary(f) for f in frames]})
    for name, record, n_fds in HOSTILE:
        entries.append({"name": name, "record": record.hex(), "n_fds": n_fds, "frames": None})
    return entries


if __name__ == "__main__":
    out = Path(__file__).with_name("wire_corpus.json")
    out.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {out}")
