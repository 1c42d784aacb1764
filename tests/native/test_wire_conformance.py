"""One protocol, two decoders: ipc/_wire.py (Python) and csrc/ck_frame.c (the C one that
libipc_capi.so and the speedups use) judge every record of wire_corpus.json alike, and
fuzzed records too; a hostile record never crashes the C decoder (this process would die).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from make_wire_corpus import build, summary

from childkit.ipc import _accel
from childkit.ipc import _wire as w
from childkit.ipc._errors import ProtocolError

CORPUS = json.loads((Path(__file__).parent / "wire_corpus.json").read_text())
C = _accel.speedups


@pytest.fixture(autouse=True)
def _need_c_decoder() -> None:
    if C is None:
        if os.environ.get("CHILDKIT_NO_SPEEDUPS") == "1":
            pytest.skip("the speedups are turned off in this run (CHILDKIT_NO_SPEEDUPS=1)")
        pytest.fail("childkit.ipc._speedups was not built: the C decoder cannot be tested")


def c_summary(t: tuple[Any, ...]) -> list[object]:
    """A ``decode_record_frames`` tuple as :func:`make_wire_corpus.summary` shapes it."""
    (ftype, flags, _start, n_fds, seq, handle, code, status, count, after, version, data,
     objects) = t  # fmt: skip
    objs = [list(o) for o in objects]
    if ftype == w.F_HELLO:
        return ["hello", version, bool(flags & w.FLAG_HAS_ROOT)]
    if ftype == w.F_RELEASE:
        return ["release", handle, count, after]
    if ftype == w.F_CHANNEL:
        return ["channel", n_fds]
    if ftype == w.F_TRANSACTION:
        return ["transaction", seq, handle, code, bool(flags & w.FLAG_ONEWAY), data.hex(),
                objs, n_fds]
    if flags & w.FLAG_ERROR:
        return ["reply", seq, status, "", data.decode("utf-8", "replace"), [], 0]
    return ["reply", seq, status, data.hex(), "", objs, n_fds]


def py_decode(record: bytes, n_fds: int) -> list[list[object]] | None:
    try:
        return [summary(f) for f in w.decode_record(record, list(range(100, 100 + n_fds)))]
    except ProtocolError:
        return None


def c_decode(record: bytes, n_fds: int) -> list[list[object]] | None:
    assert C is not None
    try:
        return [c_summary(t) for t in C.decode_record_frames(record, n_fds)]
    except ValueError:
        return None


def test_corpus_is_current() -> None:
    """The committed corpus is what make_wire_corpus.py writes (its valid records were
    decoded by _wire when it was written; this catches either side drifting silently)."""
    assert build() == CORPUS


@pytest.mark.parametrize("entry", CORPUS, ids=[e["name"] for e in CORPUS])
def test_both_decoders_agree_with_the_corpus(entry: dict[str, Any]) -> None:
    record = bytes.fromhex(entry["record"])
    assert py_decode(record, entry["n_fds"]) == entry["frames"]
    assert c_decode(record, entry["n_fds"]) == entry["frames"]


def test_corpus_has_both_kinds() -> None:
    assert sum(e["frames"] is None for e in CORPUS) >= 30
    assert sum(e["frames"] is not None for e in CORPUS) >= 15


def test_fd_ranges_follow_frame_order() -> None:
    assert C is not None
    record = bytes.fromhex(next(e for e in CORPUS if e["name"] == "mixed record")["record"])
    frames = C.decode_record_frames(record, 2)
    assert [(t[2], t[3]) for t in frames] == [(0, 0), (0, 1), (1, 1)]


_valid = [bytes.fromhex(e["record"]) for e in CORPUS if e["frames"] is not None]


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(_valid), st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)),
                                         max_size=6),
       st.integers(-40, 40), st.integers(0, 3))
def test_mutated_records_judged_alike(base: bytes, flips: list[tuple[int, int]], cut: int,
                                      n_fds: int) -> None:
    """Byte flips and truncations of valid records: both accept with the same frames or
    both refuse; the C decoder reads only inside the record (ASan run: test_sanitizers)."""
    record = bytearray(base)
    for pos, value in flips:
        if pos < len(record):
            record[pos] = value
    if cut < 0:
        del record[cut:]
    elif cut:
        record += bytes(cut)
    assert c_decode(bytes(record), n_fds) == py_decode(bytes(record), n_fds)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 4))
def test_random_bytes_judged_alike(record: bytes, n_fds: int) -> None:
    assert c_decode(record, n_fds) == py_decode(record, n_fds)
