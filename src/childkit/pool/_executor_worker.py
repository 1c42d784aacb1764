"""The IPC-mode child that :class:`childkit.ChildProcessExecutor`'s workers run.

``on_connect()`` returns a :class:`TaskStub`; ``main_proc()`` waits until the parent sends
:data:`STOP` (or closes the child). The stub runs one task per request, in the IPC work
thread that received it; the parent sends a worker one request at a time, so a crash is
always the fault of the request in flight.

Wire format (every request and reply is a :class:`~childkit.ipc.MessageParcel`):

* :data:`RUN`: ``int8 codec``, blob of ``pickle((fn, args, kwargs))``. Reply: ``int8
  status`` then, for :data:`OK`, a blob of the result in the codec; for :data:`RAISED`,
  a blob of the safe encoding of the exception's module, qualified name, ``str()``, the
  formatted traceback and its args if the safe codec can carry them (never a pickled
  exception: the parent does not unpickle what a child sends
  unless the caller asked for pickled *results*).
* :data:`RUN_CHUNK`: the same with ``pickle((fn, chunk, spread))``; the result is the
  list of ``fn(*args)`` for each ``args`` of the chunk when ``spread`` (``map`` over
  several iterables), else of ``fn(item)`` for each item (``map`` over one: no tuple per
  item to build, pickle and unpack). A chunk of ``map``: one exception fails the chunk,
  as in ``ProcessPoolExecutor``.
* :data:`INIT`: blob of ``pickle((initializer, initargs))``; reply as for :data:`RUN`.
* :data:`JOURNAL`: an :class:`~childkit.ipc.Ashmem` region the parent made for this
  worker; both map it. Its header is three uint64 ``(running, committed, end)``.
  :data:`RUN` and :data:`RUN_CHUNK` set ``running`` to 1 as they begin, so a worker that
  dies before a request reached it is told apart from one its task killed.
* :data:`RUN_BATCH`: ``int8 codec``, blob of ``pickle([(code, task), ...])`` (each task
  the bytes of a :data:`RUN` or :data:`RUN_CHUNK` request). The tasks run in order and
  each outcome is journalled *before* the next task starts: ``running`` is the 1-based
  index of the task started last, and each entry is ``uint8 status, uint32 length,
  bytes`` (the result in the codec, or the safe encoding of the exception). The memory
  outlives a crash, so the parent knows which task was running, which finished (with
  their results) and which never started. Reply: ``int32 done`` (journalled tasks) and
  ``int8 -1``, or, when the next outcome does not fit the journal, ``int8 status`` and a
  blob with that task's outcome (the batch stops there; the parent queues the rest
  again).
* :data:`STOP` (one-way): ``main_proc`` returns and the child exits with code 0.
* :data:`MAIN`: blob of the safe encoding of ``(kind, value)``: run the parent's main
  program as ``__mp_main__`` (:mod:`childkit.pool._main_script`) before the first task
  that refers to ``__main__``. Reply as for :data:`INIT`.

A blob is ``int8 0`` + ``bytes`` when it fits a parcel, else ``int8 1`` + an
:class:`~childkit.ipc.Ashmem` holding it. The safe codec (:func:`safe_dumps` /
:func:`safe_loads`) is a small typed encoding of ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, ``list``, ``tuple`` and ``dict``: decoding never imports, evaluates or
calls anything.
"""

from __future__ import annotations

import pickle
import struct
import threading
from collections.abc import Callable
from typing import Any

from childkit.common._tracebacks import format_user_exception
from childkit.ipc import Ashmem, MessageOption, MessageParcel, RemoteStub
from childkit.pool._main_script import run_main

DESCRIPTOR = "childkit.ExecutorWorker"
RUN = 1
RUN_CHUNK = 2
INIT = 3
STOP = 4
JOURNAL = 5
RUN_BATCH = 6
MAIN = 7

OK = 0
RAISED = 1

CODEC_SAFE = 0
CODEC_PICKLE = 1

#: Blobs up to this size travel inside the parcel; larger ones in an Ashmem region.
INLINE_LIMIT = 192 * 1024

# ---------------------------------------------------------------------------- blobs


def write_blob(parcel: MessageParcel, data: bytes) -> None:
    """Write ``data`` inline, or through a sealed Ashmem region when it is large."""
    if len(data) <= INLINE_LIMIT:
        parcel.write_int8(0)
        parcel.write_bytes(data)
        return
    region = Ashmem.create("childkit-executor", len(data))
    try:
        region.map_read_write()
        region.write(data)
        region.unmap()
        parcel.write_int8(1)
        parcel.write_ashmem(region)  # the parcel keeps its own fd
    finally:
        region.close()


def read_blob(parcel: MessageParcel) -> bytes:
    """Read what :func:`write_blob` wrote. Raises ``ParcelReadError`` on a malformed parcel."""
    if parcel.read_int8() == 0:
        return parcel.read_bytes()
    region = parcel.read_ashmem()
    try:
        region.map_read_only()
        return region.read(region.get_size())
    finally:
        region.close()


# ---------------------------------------------------------------------------- safe codec

_NONE, _TRUE, _FALSE, _INT, _FLOAT, _STR, _BYTES, _LIST, _TUPLE, _DICT = range(10)
_LEN = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
#: Deepest nesting the safe codec encodes or decodes.
MAX_DEPTH = 200


class CodecError(ValueError):
    """A value the safe codec cannot encode, or bytes it cannot decode."""


def safe_dumps(value: object) -> bytes:
    """Encode ``value`` (None/bool/int/float/str/bytes/list/tuple/dict, nested).

    Raises:
        CodecError: for any other type (naming it) or nesting deeper than
            :data:`MAX_DEPTH`.
    """
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: object, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CodecError(f"the result nests deeper than {MAX_DEPTH} levels")
    cls = value.__class__
    if value is None:
        out.append(_NONE)
    elif cls is bool:
        out.append(_TRUE if value else _FALSE)
    elif cls is int:
        assert isinstance(value, int)
        raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)
        out.append(_INT)
        out += _LEN.pack(len(raw))
        out += raw
    elif cls is float:
        assert isinstance(value, float)
        out.append(_FLOAT)
        out += _DOUBLE.pack(value)
    elif cls is str:
        assert isinstance(value, str)
        raw = value.encode("utf-8", "surrogatepass")
        out.append(_STR)
        out += _LEN.pack(len(raw))
        out += raw
    elif cls is bytes or cls is bytearray:
        assert isinstance(value, bytes | bytearray)
        out.append(_BYTES)
        out += _LEN.pack(len(value))
        out += value
    elif cls is list or cls is tuple:
        assert isinstance(value, list | tuple)
        out.append(_LIST if cls is list else _TUPLE)
        out += _LEN.pack(len(value))
        for item in value:
            _encode(item, out, depth + 1)
    elif cls is dict:
        assert isinstance(value, dict)
        out.append(_DICT)
        out += _LEN.pack(len(value))
        for key, item in value.items():
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        raise CodecError(
            f"a {cls.__module__}.{cls.__qualname__} cannot be sent with the safe result "
            "codec (None, bool, int, float, str, bytes, list, tuple and dict can); return "
            "one of those, or use result_codec='pickle'"
        )


def safe_loads(data: bytes) -> object:
    """Decode what :func:`safe_dumps` encoded.

    Raises:
        CodecError: for truncated or malformed data, an unknown tag, an unhashable dict
            key, nesting deeper than :data:`MAX_DEPTH`, or bytes left over.
    """
    view = memoryview(data)
    try:
        value, pos = _decode(view, 0, 0)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise CodecError(f"malformed result encoding: {exc}") from None
    if pos != len(view):
        raise CodecError(f"malformed result encoding: {len(view) - pos} bytes left over")
    return value


def _take(view: memoryview, pos: int) -> tuple[int, int]:
    (n,) = _LEN.unpack_from(view, pos)
    end = pos + 4 + n
    if end > len(view):
        raise CodecError("malformed result encoding: a length runs past the end")
    return n, pos + 4


def _decode(view: memoryview, pos: int, depth: int) -> tuple[object, int]:
    if depth > MAX_DEPTH:
        raise CodecError(f"the result nests deeper than {MAX_DEPTH} levels")
    tag = view[pos]
    pos += 1
    if tag == _NONE:
        return None, pos
    if tag == _TRUE:
        return True, pos
    if tag == _FALSE:
        return False, pos
    if tag == _FLOAT:
        return _DOUBLE.unpack_from(view, pos)[0], pos + 8
    if tag in (_INT, _STR, _BYTES):
        n, pos = _take(view, pos)
        raw = bytes(view[pos:pos + n])
        if tag == _INT:
            return int.from_bytes(raw, "little", signed=True), pos + n
        if tag == _STR:
            return raw.decode("utf-8", "surrogatepass"), pos + n
        return raw, pos + n
    if tag in (_LIST, _TUPLE, _DICT):
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if n > len(view) - pos:  # every item takes at least one byte
            raise CodecError("malformed result encoding: a count runs past the end")
        if tag == _DICT:
            result: dict[Any, Any] = {}
            for _ in range(n):
                key, pos = _decode(view, pos, depth + 1)
                item, pos = _decode(view, pos, depth + 1)
                try:
                    result[key] = item
                except TypeError:
                    raise CodecError("malformed result encoding: an unhashable dict key") \
                        from None
            return result, pos
        items = []
        for _ in range(n):
            item, pos = _decode(view, pos, depth + 1)
            items.append(item)
        return (items if tag == _LIST else tuple(items)), pos
    raise CodecError(f"malformed result encoding: unknown tag {tag}")


# ---------------------------------------------------------------------------- the child


def _encode_result(codec: int, value: object) -> bytes:
    if codec == CODEC_PICKLE:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return safe_dumps(value)


def _exception_parts(exc: BaseException) -> tuple[str, str, str, str, tuple[Any, ...] | None]:
    cls = type(exc)
    try:
        text = str(exc)
    except Exception:
        text = "<str() of the exception failed>"
    args: tuple[Any, ...] | None = exc.args
    if isinstance(exc, OSError) and exc.filename is not None and len(exc.args) == 2:
        # Its file names are not in its args: OSError(errno, strerror, filename, winerror,
        # filename2) builds the same error again, subclass and all.
        args = (*exc.args, exc.filename, None, exc.filename2)
    try:  # the args too when the safe codec can carry them (RuntimeError(123).args)
        if len(safe_dumps(args)) >= 65536:
            args = None
    except CodecError:
        args = None
    return (cls.__module__, cls.__qualname__, text[:16384],
            format_user_exception(exc)[-65536:], args)


def exception_blob(exc: BaseException) -> bytes:
    """The safe encoding of an exception: module, name, message, traceback text, and
    its args when the safe codec can carry them (else None)."""
    return safe_dumps(_exception_parts(exc))


def _write_exception(reply: MessageParcel, exc: BaseException) -> None:
    reply.write_int8(RAISED)
    write_blob(reply, exception_blob(exc))


class TaskStub(RemoteStub):
    """Runs the parent's tasks: see the module docstring for the requests."""

    def __init__(self) -> None:
        super().__init__(DESCRIPTOR)
        self.stopped = threading.Event()
        self.journal: memoryview | None = None
        self._region: Ashmem | None = None

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        if code == STOP:
            self.stopped.set()
            return 0
        if code == RUN_BATCH:
            _run_batch(self, data, reply)  # its failures are protocol errors: INNER_ERROR
            return 0
        if code == JOURNAL:
            region = data.read_ashmem()
            region.map_read_write()
            self._region, self.journal = region, region.buffer()
            return 0
        try:
            if code in (INIT, MAIN):
                if code == INIT:
                    initializer, initargs = pickle.loads(read_blob(data))
                    initializer(*initargs)
                else:
                    main = safe_loads(read_blob(data))
                    assert isinstance(main, tuple) and len(main) == 2
                    run_main(str(main[0]), str(main[1]))
                reply.write_int8(OK)
                write_blob(reply, safe_dumps(None))
                return 0
            if self.journal is not None:  # "a task has reached the worker" (see JOURNAL)
                _RUNNING.pack_into(self.journal, 0, 1)
            codec = data.read_int8()
            if code == RUN:
                fn, args, kwargs = pickle.loads(read_blob(data))
                value: object = fn(*args, **kwargs)
            elif code == RUN_CHUNK:
                value = run_chunk(pickle.loads(read_blob(data)))
            else:
                return 1909001
            payload = _encode_result(codec, value)
            reply.write_int8(OK)
            write_blob(reply, payload)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: report them
            reply.rewind_write_position(0)
            _write_exception(reply, exc)
        return 0


def run_chunk(payload: tuple[Callable[..., Any], list[Any], bool]) -> list[Any]:
    """The results of one :data:`RUN_CHUNK` payload ``(fn, chunk, spread)``, in order."""
    fn, chunk, spread = payload
    if spread:
        return [fn(*args) for args in chunk]
    return list(map(fn, chunk))


JOURNAL_HEADER = struct.Struct("<QQQ")
JOURNAL_ENTRY = struct.Struct("<BI")
_RUNNING = struct.Struct("<Q")
#: Bytes of one worker's journal.
JOURNAL_SIZE = 256 * 1024


def _run_batch(stub: TaskStub, data: MessageParcel, reply: MessageParcel) -> None:
    journal = stub.journal
    if journal is None:
        raise RuntimeError("RUN_BATCH before JOURNAL")
    codec = data.read_int8()
    tasks = pickle.loads(read_blob(data))
    size = len(journal)
    offset = JOURNAL_HEADER.size
    JOURNAL_HEADER.pack_into(journal, 0, 0, 0, offset)
    done = 0
    for index, (kind, raw) in enumerate(tasks):
        _RUNNING.pack_into(journal, 0, index + 1)
        try:
            if kind == RUN_CHUNK:
                value: object = run_chunk(pickle.loads(raw))
            else:
                fn, args, kwargs = pickle.loads(raw)
                value = fn(*args, **kwargs)
            status, blob = OK, _encode_result(codec, value)
        except BaseException as exc:
            status, blob = RAISED, exception_blob(exc)
        end = offset + JOURNAL_ENTRY.size + len(blob)
        if end > size:  # does not fit: this outcome goes in the reply; the batch stops
            reply.write_int32(done)
            reply.write_int8(status)
            write_blob(reply, blob)
            return
        JOURNAL_ENTRY.pack_into(journal, offset, status, len(blob))
        journal[offset + JOURNAL_ENTRY.size:end] = blob
        offset = end
        done += 1
        JOURNAL_HEADER.pack_into(journal, 0, index + 1, done, offset)  # committed
    reply.write_int32(done)
    reply.write_int8(-1)


_stub: TaskStub | None = None


def on_connect() -> RemoteStub:
    """The worker's root stub."""
    global _stub
    _stub = TaskStub()
    return _stub


def main_proc() -> None:
    """Idle until the parent sends STOP (or closes the child: it then gets SIGTERM)."""
    assert _stub is not None
    _stub.stopped.wait()
