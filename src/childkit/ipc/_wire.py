"""The childkit wire protocol, sans I/O: frames to (bytes, fds) records and back.

A *record* is what one ``sendmsg`` on a SOCK_SEQPACKET socket carries: one or more frames
back to back, plus the file descriptors of all its frames, in order, as SCM_RIGHTS. Each
frame starts with an 8-byte header (type, flags, fd count, body length). The layout is in
``docs/wire-format.md``. This module does no I/O and owns no fds: :func:`decode_record`
either returns frames that now refer to the given fds, or raises :class:`ProtocolError`
and leaves closing them to the caller. Every length is checked against the record, so a
hostile peer cannot make it read out of bounds or allocate more than the record it sent.

May import: ``_accel``, ``_errors``, ``_limits``; never ``_parcel`` (the wire is below it).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from types import ModuleType

from childkit.ipc import _accel
from childkit.ipc._errors import ProtocolError
from childkit.ipc._limits import MAX_PARCEL_FDS, MAX_PARCEL_OBJECTS, MAX_WIRE_DATA

PROTOCOL_VERSION = 1
#: Largest record a peer may send (a full parcel plus headers fits with room to spare).
MAX_RECORD_BYTES = 320 * 1024
#: Most fds one record carries (the kernel's SCM_MAX_FD is 253).
MAX_RECORD_FDS = 253
#: Longest error detail a reply may carry.
MAX_DETAIL_BYTES = 4096

# Frame types.
F_HELLO = 1
F_TRANSACTION = 2
F_REPLY = 3
F_RELEASE = 4
F_CHANNEL = 5

# Frame flags.
FLAG_ONEWAY = 0x01  # on F_TRANSACTION: no reply is sent
FLAG_HAS_ROOT = 0x01  # on F_HELLO: the sender exports a root object (handle 0)
FLAG_ERROR = 0x01  # on F_REPLY: the body holds an error detail string, not a parcel

# Kinds of object reference in a parcel's object table.
OBJ_SENDER_STUB = 1  # a stub the sender exports under this handle: the receiver gets a proxy
OBJ_RECEIVER_STUB = 2  # a proxy of the receiver's own stub: the receiver gets its stub back

HEADER = struct.Struct("<BBHI")  # type, flags, n_fds, body length
_HELLO = struct.Struct("<HH")  # version, extra channels the sender accepts (0: none)
_TXN = struct.Struct("<QIIIH")  # seq, handle, code, data length, n_objects
_REPLY = struct.Struct("<QiIH")  # seq, status, data length, n_objects
_RELEASE = struct.Struct("<IIQ")  # handle, count, replies the sender had sent before
_OBJ = struct.Struct("<BI")  # kind, handle
# Header and fixed body fused, for the hot path: one pack call per request.
_TXN_FRAME = struct.Struct("<BBHIQIIIH")
_REPLY_FRAME = struct.Struct("<BBHIQiIH")

ObjectRef = tuple[int, int]  # (kind, handle)
#: A parcel's data as the frames take it (a received parcel's may be a view, see _recvbuf).
Data = bytes | bytearray | memoryview


#: Most extra call channels a side accepts from its peer (docs/wire-format.md, CHANNEL).
MAX_CHANNELS = 31


class Hello:
    """First frame each side sends on its call socket. ``channels``: how many extra call
    channels (CHANNEL frames) the sender accepts; a peer that predates them sends 0."""

    __slots__ = ("channels", "has_root", "version")

    def __init__(self, version: int, has_root: bool, channels: int = 0) -> None:
        self.version = version
        self.has_root = has_root
        self.channels = channels


class Transaction:
    """A request to the receiver's object ``handle``."""

    __slots__ = ("code", "data", "fds", "handle", "objects", "oneway", "seq")

    def __init__(
        self, seq: int, handle: int, code: int, oneway: bool, data: bytes,
        objects: list[ObjectRef], fds: list[int],
    ) -> None:  # fmt: skip
        self.seq = seq
        self.handle = handle
        self.code = code
        self.oneway = oneway
        self.data = data
        self.objects = objects
        self.fds = fds


class Reply:
    """The answer to the sync transaction ``seq``: a status, then a parcel or an error detail."""

    __slots__ = ("data", "detail", "fds", "objects", "seq", "status")

    def __init__(
        self, seq: int, status: int, data: bytes, objects: list[ObjectRef], fds: list[int],
        detail: str = "",
    ) -> None:  # fmt: skip
        self.seq = seq
        self.status = status
        self.data = data
        self.objects = objects
        self.fds = fds
        self.detail = detail


class Release:
    """The sender drops ``count`` references to the receiver's exported object ``handle``.

    ``after_replies`` is how many replies the sender had sent when it let go: the receiver
    applies the release only after it has read that many, because a reply that mentions
    the object travels on the other socket and may otherwise arrive after the release.
    """

    __slots__ = ("after_replies", "count", "handle")

    def __init__(self, handle: int, count: int, after_replies: int = 0) -> None:
        self.handle = handle
        self.count = count
        self.after_replies = after_replies


class Channel:
    """The sender opens an extra call channel: ``fd`` is the receiver's end of a new
    SOCK_SEQPACKET socketpair, a serve socket for the sender's plain sync requests."""

    __slots__ = ("fds",)

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds  # exactly one


Frame = Hello | Transaction | Reply | Release | Channel


# ---------------------------------------------------------------------------- encoding
def _objects_bytes(objects: Sequence[ObjectRef]) -> bytes:
    return b"".join(_OBJ.pack(kind, handle) for kind, handle in objects)


def encode_hello(has_root: bool, channels: int = 0) -> bytes:
    """The greeting; ``channels``: extra call channels this side accepts (0..65535)."""
    return HEADER.pack(F_HELLO, FLAG_HAS_ROOT if has_root else 0, 0, _HELLO.size) + _HELLO.pack(
        PROTOCOL_VERSION, channels
    )


def encode_channel() -> bytes:
    """A CHANNEL frame: its one fd (the receiver's end of the new channel) travels in the
    record's SCM_RIGHTS."""
    return HEADER.pack(F_CHANNEL, 0, 1, 0)


def encode_transaction(
    seq: int, handle: int, code: int, oneway: bool, data: Data,
    objects: Sequence[ObjectRef], n_fds: int,
) -> bytes:  # fmt: skip
    """One transaction frame; its ``n_fds`` fds travel in the record's SCM_RIGHTS."""
    body_len = _TXN.size + len(data) + _OBJ.size * len(objects)
    head = _TXN_FRAME.pack(
        F_TRANSACTION, FLAG_ONEWAY if oneway else 0, n_fds, body_len,
        seq, handle, code, len(data), len(objects),
    )  # fmt: skip
    if objects:
        return head + data + _objects_bytes(objects)
    return head + data


def encode_oneway_frames(handle: int, requests: Sequence[tuple[int, Data]],
                         ) -> list[bytes]:
    """One one-way transaction frame per ``(code, data)`` to the object ``handle``, none
    with fds or objects: :func:`encode_transaction` for a batch, in one comprehension."""
    pack = _TXN_FRAME.pack
    extra = _TXN.size
    return [pack(F_TRANSACTION, FLAG_ONEWAY, 0, extra + len(data), 0, handle, code,
                 len(data), 0) + data for code, data in requests]


def encode_reply(
    seq: int, status: int, data: Data, objects: Sequence[ObjectRef], n_fds: int
) -> bytes:
    body_len = _REPLY.size + len(data) + _OBJ.size * len(objects)
    head = _REPLY_FRAME.pack(F_REPLY, 0, n_fds, body_len, seq, status, len(data), len(objects))
    if objects:
        return head + data + _objects_bytes(objects)
    return head + data


#: From this much parcel data up, a plain sync request or reply goes out as a
#: ``(head, data)`` pair gathered by ``sendmsg`` instead of one concatenated frame: below
#: it, one copy costs less than building the pair (docs/ipc.md, "Large parcels").
GATHER_BYTES = 8192


def transaction_head(seq: int, handle: int, code: int, data_len: int) -> bytes:
    """The header of a plain sync transaction frame (no fds, no objects) whose
    ``data_len`` bytes of parcel data follow it in the same record."""
    return _TXN_FRAME.pack(F_TRANSACTION, 0, 0, _TXN.size + data_len, seq, handle, code,
                           data_len, 0)


def reply_head(seq: int, data_len: int) -> bytes:
    """The header of a plain successful reply frame (no fds, no objects) whose
    ``data_len`` bytes of parcel data follow it in the same record."""
    return _REPLY_FRAME.pack(F_REPLY, 0, 0, _REPLY.size + data_len, seq, 0, data_len, 0)


def encode_error_reply(seq: int, status: int, detail: str) -> bytes:
    """A reply that carries only a failure status and a short human-readable detail."""
    text = detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES]
    body_len = _REPLY.size + len(text)
    return _REPLY_FRAME.pack(F_REPLY, FLAG_ERROR, 0, body_len, seq, status, len(text), 0) + text


def encode_release(handle: int, count: int, after_replies: int = 0) -> bytes:
    return HEADER.pack(F_RELEASE, 0, 0, _RELEASE.size) + _RELEASE.pack(
        handle, count, after_replies)


# ---------------------------------------------------------------------------- decoding
def _parcel_section(
    body: memoryview, offset: int, data_len: int, n_objects: int, what: str
) -> tuple[bytes, list[ObjectRef]]:
    if data_len > MAX_WIRE_DATA:
        raise ProtocolError(f"{what} parcel of {data_len} bytes exceeds {MAX_WIRE_DATA}")
    if n_objects > MAX_PARCEL_OBJECTS:
        raise ProtocolError(f"{what} carries {n_objects} objects (max {MAX_PARCEL_OBJECTS})")
    end = offset + data_len
    if end + _OBJ.size * n_objects != len(body):
        raise ProtocolError(f"{what} lengths do not add up to its body size")
    data = bytes(body[offset:end])
    objects: list[ObjectRef] = []
    for i in range(n_objects):
        kind, handle = _OBJ.unpack_from(body, end + i * _OBJ.size)
        if kind not in (OBJ_SENDER_STUB, OBJ_RECEIVER_STUB):
            raise ProtocolError(f"{what} has an object reference of unknown kind {kind}")
        objects.append((kind, handle))
    return data, objects


def _decode_frame(ftype: int, flags: int, body: memoryview, fds: list[int]) -> Frame:
    if ftype == F_TRANSACTION:
        if len(body) < _TXN.size:
            raise ProtocolError("transaction frame is shorter than its header")
        seq, handle, code, data_len, n_obj = _TXN.unpack_from(body, 0)
        if flags & ~FLAG_ONEWAY:
            raise ProtocolError(f"transaction frame has unknown flags {flags:#x}")
        if len(fds) > MAX_PARCEL_FDS:
            raise ProtocolError(f"transaction carries {len(fds)} fds (max {MAX_PARCEL_FDS})")
        data, objects = _parcel_section(body, _TXN.size, data_len, n_obj, "transaction")
        return Transaction(seq, handle, code, bool(flags & FLAG_ONEWAY), data, objects, fds)
    if ftype == F_REPLY:
        if len(body) < _REPLY.size:
            raise ProtocolError("reply frame is shorter than its header")
        seq, status, data_len, n_obj = _REPLY.unpack_from(body, 0)
        if flags & ~FLAG_ERROR:
            raise ProtocolError(f"reply frame has unknown flags {flags:#x}")
        if flags & FLAG_ERROR:
            if fds or n_obj or data_len > MAX_DETAIL_BYTES or _REPLY.size + data_len != len(body):
                raise ProtocolError("malformed error reply")
            detail = bytes(body[_REPLY.size :]).decode("utf-8", "replace")
            return Reply(seq, status, b"", [], [], detail)
        if len(fds) > MAX_PARCEL_FDS:
            raise ProtocolError(f"reply carries {len(fds)} fds (max {MAX_PARCEL_FDS})")
        data, objects = _parcel_section(body, _REPLY.size, data_len, n_obj, "reply")
        return Reply(seq, status, data, objects, fds)
    if ftype == F_CHANNEL:
        if len(body) or flags or len(fds) != 1:
            raise ProtocolError("malformed channel frame")
        return Channel(fds)
    if fds:
        raise ProtocolError(f"frame type {ftype} cannot carry file descriptors")
    if ftype == F_RELEASE:
        if len(body) != _RELEASE.size or flags:
            raise ProtocolError("malformed release frame")
        handle, count, after_replies = _RELEASE.unpack_from(body, 0)
        if count == 0:
            raise ProtocolError("release frame with a zero count")
        return Release(handle, count, after_replies)
    if ftype == F_HELLO:
        if len(body) != _HELLO.size or flags & ~FLAG_HAS_ROOT:
            raise ProtocolError("malformed hello frame")
        version, channels = _HELLO.unpack_from(body, 0)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"peer speaks protocol {version}, this side {PROTOCOL_VERSION}")
        return Hello(version, bool(flags & FLAG_HAS_ROOT), channels)
    raise ProtocolError(f"unknown frame type {ftype}")


#: Where a transaction's parcel data starts in a record that holds just that transaction.
TXN_DATA_OFFSET = _TXN_FRAME.size
#: Where a reply's parcel data starts in a record that holds just that reply.
REPLY_DATA_OFFSET = _REPLY_FRAME.size
_txn_unpack = _TXN_FRAME.unpack_from
_reply_unpack = _REPLY_FRAME.unpack_from


def simple_request(buf: bytes | bytearray | memoryview | mmap.mmap, size: int,
                   ) -> tuple[int, int, int] | None:
    """``(seq, handle, code)`` if the ``size`` bytes of ``buf`` (a record that came with
    no fds) are exactly one sync transaction with no fds and no objects, else ``None``.

    The hot path of a server: the parcel data is ``buf[TXN_DATA_OFFSET:size]``. Checked as
    strictly as :func:`decode_record`; anything else goes through it.
    """
    if size < TXN_DATA_OFFSET or size > MAX_RECORD_BYTES or buf[0] != F_TRANSACTION:
        return None
    _, flags, n_fds, body_len, seq, handle, code, data_len, n_obj = _txn_unpack(buf, 0)
    if (flags or n_fds or n_obj or body_len != size - HEADER.size
            or data_len != size - TXN_DATA_OFFSET or data_len > MAX_WIRE_DATA):
        return None
    return seq, handle, code


def simple_reply(buf: bytes | bytearray | memoryview | mmap.mmap, size: int,
                 ) -> tuple[int, int] | None:
    """``(seq, status)`` if the ``size`` bytes of ``buf`` (a record that came with no fds)
    are exactly one successful-or-failed parcel reply with no fds and no objects (not an
    error reply), else ``None``. The parcel data is ``buf[REPLY_DATA_OFFSET:size]``."""
    if size < REPLY_DATA_OFFSET or size > MAX_RECORD_BYTES or buf[0] != F_REPLY:
        return None
    _, flags, n_fds, body_len, seq, status, data_len, n_obj = _reply_unpack(buf, 0)
    if (flags or n_fds or n_obj or body_len != size - HEADER.size
            or data_len != size - REPLY_DATA_OFFSET or data_len > MAX_WIRE_DATA):
        return None
    return seq, status


# Header bytes that are the same in every frame of a uniform run: type, flags, fd count,
# body length (0-7), handle (16-19), data length and object count (24-29). The sequence
# number (8-15) and the code (20-23) may differ.
_RUN_CONSTANT_BYTES = (*range(0, 8), *range(16, 20), *range(24, 30))
_run_structs: dict[int, struct.Struct] = {}


def _uniform_run(raw: bytes, size: int) -> tuple[int, list[tuple[int, bytes]]] | None:
    """:func:`oneway_run` for the common batch whose frames all have one size: the first
    frame is checked field by field, every other frame is checked to repeat the first's
    header bytes but its sequence number and code (strided slices, compared in C), and
    ``(code, data)`` pairs come straight from ``Struct.iter_unpack``. ``None`` if the
    record is not such a run (the caller then checks it frame by frame)."""
    ftype, flags, n_fds, body_len, _seq, handle, _code, data_len, n_obj = _txn_unpack(raw, 0)
    frame = TXN_DATA_OFFSET + data_len
    if (ftype != F_TRANSACTION or flags != FLAG_ONEWAY or n_fds or n_obj
            or body_len != data_len + _TXN.size or data_len > MAX_WIRE_DATA
            or size % frame):
        return None
    count = size // frame
    for k in _RUN_CONSTANT_BYTES:
        if raw[k::frame] != raw[k:k + 1] * count:
            return None
    layout = _run_structs.get(data_len)
    if layout is None:
        layout = struct.Struct(f"<20xI6x{data_len}s")  # the code, then the data
        if len(_run_structs) < 64:
            _run_structs[data_len] = layout
    return handle, list(layout.iter_unpack(raw))


def oneway_run(buf: bytes | bytearray | memoryview | mmap.mmap, size: int,
               ) -> tuple[int, list[tuple[int, bytes]]] | None:
    """``(handle, [(code, data), ...])`` if the ``size`` bytes of ``buf`` (a record that came
    with no fds) are one or more one-way transactions, all to the object ``handle``, none
    with fds or objects; else ``None``.

    The hot path of a burst of one-way calls (``send_requests``): plain tuples instead of
    frame objects. Checked as strictly as :func:`decode_record`; anything else goes
    through it.
    """
    if size < TXN_DATA_OFFSET or size > MAX_RECORD_BYTES or buf[0] != F_TRANSACTION:
        return None
    raw = bytes(buf[:size])  # one copy: slicing bytes is cheaper than slicing a buffer
    uniform = _uniform_run(raw, size)
    if uniform is not None:
        return uniform
    run: list[tuple[int, bytes]] = []
    append = run.append
    unpack = _txn_unpack
    body_extra = _TXN.size
    first_handle = unpack(raw, 0)[5]
    pos = 0
    while pos < size:
        if size - pos < TXN_DATA_OFFSET:
            return None
        ftype, flags, n_fds, body_len, _seq, handle, code, data_len, n_obj = unpack(raw, pos)
        start = pos + TXN_DATA_OFFSET
        pos = start + data_len
        if (ftype != F_TRANSACTION or flags != FLAG_ONEWAY or n_fds or n_obj
                or body_len != data_len + body_extra or pos > size
                or data_len > MAX_WIRE_DATA or handle != first_handle):
            return None
        append((code, raw[start:pos]))
    return first_handle, run


def decode_record(data: bytes | bytearray | memoryview, fds: Sequence[int]) -> list[Frame]:
    """Split one received record into frames, handing each frame its own fds.

    Raises :class:`ProtocolError` if the record is empty, truncated, larger than
    :data:`MAX_RECORD_BYTES`, or its frames claim more or fewer fds than arrived. The fds
    are not closed here, on success or failure.
    """
    view = memoryview(data)
    size = len(view)
    if not fds and HEADER.size <= size <= MAX_RECORD_BYTES:
        # Fast path: one small request or reply with no fds and no objects (the common
        # case), checked as strictly as the general path below.
        ftype = view[0]
        if ftype == F_TRANSACTION and size >= _TXN_FRAME.size:
            _, flags, n_fds, body_len, seq, handle, code, data_len, n_obj = (
                _TXN_FRAME.unpack_from(view, 0))
            if (flags & ~FLAG_ONEWAY == 0 and body_len == size - HEADER.size and not n_fds
                    and not n_obj and data_len == size - _TXN_FRAME.size
                    and data_len <= MAX_WIRE_DATA):
                return [Transaction(seq, handle, code, flags == FLAG_ONEWAY,
                                    bytes(view[_TXN_FRAME.size :]), [], [])]
        elif ftype == F_REPLY and size >= _REPLY_FRAME.size:
            _, flags, n_fds, body_len, seq, status, data_len, n_obj = (
                _REPLY_FRAME.unpack_from(view, 0))
            if (not flags and body_len == size - HEADER.size and not n_fds and not n_obj
                    and data_len == size - _REPLY_FRAME.size and data_len <= MAX_WIRE_DATA):
                return [Reply(seq, status, bytes(view[_REPLY_FRAME.size :]), [], [])]
    if size == 0:
        raise ProtocolError("empty record")
    if size > MAX_RECORD_BYTES:
        raise ProtocolError(f"record of {size} bytes exceeds {MAX_RECORD_BYTES}")
    if len(fds) > MAX_RECORD_FDS:
        raise ProtocolError(f"record carries {len(fds)} fds (max {MAX_RECORD_FDS})")
    frames: list[Frame] = []
    pos = 0
    fd_pos = 0
    # One copy of the whole record: slicing bytes below is cheaper than slicing a view
    # and copying each slice (this loop runs once per frame of a batch).
    raw = bytes(view)
    txn_size = _TXN_FRAME.size
    txn_unpack = _TXN_FRAME.unpack_from
    while pos < size:
        if raw[pos] == F_TRANSACTION and size - pos >= txn_size:
            # Inline the common fd-less request (batches of one-way calls are many of these).
            _, flags, n_fds, body_len, seq, handle, code, data_len, n_obj = txn_unpack(raw, pos)
            start = pos + txn_size
            end = start + data_len
            if not n_fds and not n_obj and data_len == body_len - _TXN.size \
                    and flags & ~FLAG_ONEWAY == 0 and data_len <= MAX_WIRE_DATA and end <= size:
                frames.append(Transaction(seq, handle, code, flags == FLAG_ONEWAY,
                                          raw[start:end], [], []))
                pos = end
                continue
        if size - pos < HEADER.size:
            raise ProtocolError(f"truncated frame header at offset {pos}")
        ftype, flags, n_fds, body_len = HEADER.unpack_from(view, pos)
        pos += HEADER.size
        if body_len > size - pos:
            raise ProtocolError(f"frame body of {body_len} bytes runs past the record end")
        if n_fds > len(fds) - fd_pos:
            raise ProtocolError(f"frame claims {n_fds} fds but only {len(fds) - fd_pos} remain")
        frame_fds = list(fds[fd_pos : fd_pos + n_fds])
        frames.append(_decode_frame(ftype, flags, view[pos : pos + body_len], frame_fds))
        pos += body_len
        fd_pos += n_fds
    if fd_pos != len(fds):
        raise ProtocolError(f"record carried {len(fds)} fds but its frames claim {fd_pos}")
    return frames


# ----------------------------------------------------------------------- C twins
# The hot path's functions above have C twins (``_speedups.c``; see ``_accel``). The Python
# ones stay the reference: kept under ``py_*`` names, and the tests fuzz both against each
# other.
py_encode_transaction = encode_transaction
py_encode_reply = encode_reply
py_simple_request = simple_request
py_simple_reply = simple_reply


def _checked(module: ModuleType | None) -> ModuleType | None:
    # Built from another checkout's constants? Then its frames would not be ours.
    if module is None or (
        module.MAX_RECORD_BYTES, module.MAX_WIRE_DATA, module.TXN_DATA_OFFSET,
        module.REPLY_DATA_OFFSET,
    ) != (MAX_RECORD_BYTES, MAX_WIRE_DATA, TXN_DATA_OFFSET, REPLY_DATA_OFFSET):
        return None
    return module


#: The C twins in use for frames, or ``None`` (the Python functions are used).
speedups = _checked(_accel.speedups)
if speedups is not None:
    encode_transaction = speedups.encode_transaction
    encode_reply = speedups.encode_reply
    simple_request = speedups.simple_request
    simple_reply = speedups.simple_reply
