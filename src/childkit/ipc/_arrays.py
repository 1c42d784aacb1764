"""NumPy arrays through shared memory, without copies (the seed's "for large data, consider
the shared memory mechanism", as a feature).

A :class:`SharedArray` is an ``ndarray`` whose memory is an :class:`Ashmem` region. Writing
one into a parcel sends a small header (dtype, shape) and the region's fd; the reader maps
the same pages and gets an array view on them: 1 GiB crosses in the time it takes to pass
one fd. NumPy stays optional: it is imported when these functions are first used.

A peer is untrusted: the reader accepts only plain numeric dtypes (never ``object``, which
would be pointers), at most 32 dimensions, and a shape that fits the region it received.

May import: ``_ashmem``, ``_errors``, ``_parcel``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from childkit.ipc._ashmem import Ashmem
from childkit.ipc._errors import IPCError, ParamError, ParcelReadError
from childkit.ipc._parcel import MessageParcel

if TYPE_CHECKING:
    import numpy as np

MAX_DIMS = 32
_MAX_DTYPE_CHARS = 4096
_HEADER_TOKEN = "childkit.SharedArray"


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ParamError("shared arrays need NumPy: pip install 'childkit[numpy]'") from None
    return numpy


class SharedArray:
    """An ndarray backed by an :class:`Ashmem` region. Close it (or use ``with``) when done.

    ``array`` is the view; ``ashmem`` the region. Views of ``array`` that you keep must be
    dropped before :meth:`close`, which otherwise raises :class:`IPCError`.
    """

    def __init__(self, ashmem: Ashmem, array: np.ndarray[Any, Any]) -> None:
        self.ashmem = ashmem
        self.array = array

    @classmethod
    def create(cls, shape: tuple[int, ...] | int, dtype: Any = "float64",
               name: str = "childkit-array") -> SharedArray:
        """A new zero-filled shared array. Raises :class:`ParamError` for a bad shape/dtype."""
        np = _numpy()
        dt = _checked_dtype(np, dtype, ParamError)
        dims = (shape,) if isinstance(shape, int) else tuple(shape)
        _check_shape(dims, ParamError)
        nbytes = math.prod(dims) * dt.itemsize
        ashmem = Ashmem.create(name, max(nbytes, 1))
        try:
            ashmem.map_read_write()
            return cls(ashmem, _view(np, ashmem, dt, dims))
        except BaseException:
            ashmem.close()
            raise

    @classmethod
    def from_array(cls, source: Any, name: str = "childkit-array") -> SharedArray:
        """Copy ``source`` (anything ``numpy.asarray`` takes) into a new shared array."""
        np = _numpy()
        arr = np.asarray(source)
        shared = cls.create(arr.shape, arr.dtype, name)
        shared.array[...] = arr
        return shared

    def close(self) -> None:
        """Drop the view and release the region (idempotent)."""
        self.array = None  # type: ignore[assignment]
        self.ashmem.close()

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.array is None:
            return "<SharedArray closed>"
        return f"<SharedArray {self.array.dtype} {self.array.shape} in {self.ashmem.name!r}>"


def _checked_dtype(np: Any, dtype: Any, error: Callable[[str], IPCError]) -> Any:
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise error(f"not a NumPy dtype: {dtype!r} ({exc})") from None
    if dt.hasobject:
        raise error(f"dtype {dt} holds Python objects; only plain data can be shared")
    if dt.itemsize == 0:
        raise error(f"dtype {dt} has no size")
    return dt


def _check_shape(dims: tuple[int, ...], error: Callable[[str], IPCError]) -> None:
    if len(dims) > MAX_DIMS:
        raise error(f"{len(dims)} dimensions; at most {MAX_DIMS}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise error(f"shape {dims} must hold non-negative ints")


def _view(np: Any, ashmem: Ashmem, dt: Any, dims: tuple[int, ...]) -> Any:
    count = math.prod(dims)
    return np.frombuffer(ashmem.buffer(), dtype=dt, count=count).reshape(dims)


def write_array(parcel: MessageParcel, array: SharedArray | Any) -> None:
    """Write an array: a :class:`SharedArray` travels without a copy; any other array is
    copied once into a new shared region (which the parcel keeps alive)."""
    np = _numpy()
    if isinstance(array, SharedArray):
        if array.array is None:
            raise ParamError("the SharedArray is closed")
        arr, ashmem, temporary = array.array, array.ashmem, None
    else:
        temporary = SharedArray.from_array(array)
        arr, ashmem = temporary.array, temporary.ashmem
    try:
        if not arr.flags.c_contiguous:
            raise ParamError("a SharedArray view must be C-contiguous to be sent")
        parcel.write_interface_token(_HEADER_TOKEN)
        # The .npy format's dtype description: a Python literal, read back with
        # ast.literal_eval (which evaluates nothing), so structured dtypes survive.
        parcel.write_string(repr(np.lib.format.dtype_to_descr(np.dtype(arr.dtype))))
        parcel.write_uint32(arr.ndim)
        for d in arr.shape:
            parcel.write_uint64(d)
        parcel.write_ashmem(ashmem)
    finally:
        if temporary is not None:
            del arr  # the view must go before the region can be unmapped
            temporary.close()  # the parcel holds its own duplicate of the region's fd


def read_array(parcel: MessageParcel, *, writable: bool = False) -> SharedArray:
    """Read an array written by :func:`write_array`: a view on the sender's pages.

    ``writable=True`` maps the region read-write (changes are seen by the sender), which
    fails with :class:`IPCError` if the sender sealed it read-only. Raises
    :class:`ParcelReadError` for a malformed header or a shape larger than the region.
    """
    np = _numpy()
    if parcel.read_interface_token() != _HEADER_TOKEN:
        raise ParcelReadError("not a shared array header")
    dtype_text = parcel.read_string()
    if len(dtype_text) > _MAX_DTYPE_CHARS:
        raise ParcelReadError("dtype description too long")
    try:
        descr = ast.literal_eval(dtype_text)
        described = np.lib.format.descr_to_dtype(descr)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ParcelReadError(f"not a NumPy dtype description: {dtype_text[:80]!r}") from exc
    dt = _checked_dtype(np, described, ParcelReadError)
    ndim = parcel.read_uint32()
    if ndim > MAX_DIMS:
        raise ParcelReadError(f"{ndim} dimensions; at most {MAX_DIMS}")
    dims = tuple(parcel.read_uint64() for _ in range(ndim))
    ashmem = parcel.read_ashmem()
    try:
        nbytes = math.prod(dims) * dt.itemsize
        if nbytes > ashmem.get_size():
            raise ParcelReadError(
                f"array of {nbytes} bytes does not fit the {ashmem.get_size()}-byte region")
        if writable:
            ashmem.map_read_write()
        else:
            ashmem.map_read_only()
        return SharedArray(ashmem, _view(np, ashmem, dt, dims))
    except BaseException:
        ashmem.close()
        raise


__all__ = ["SharedArray", "read_array", "write_array"]
