"""Ashmem: named shared memory for large data without copies (IPCKit's ``Ashmem``).

Linux has no ``/dev/ashmem`` outside Android, so an :class:`Ashmem` is a *sealed memfd*:
``memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)``, sized with ``ftruncate`` and then
sealed against shrinking and growing (``F_SEAL_SHRINK | F_SEAL_GROW``). The size seal is what
makes sharing safe: nobody, in any process, can shrink the file under a mapping, which would
turn a later read of the mapping into ``SIGBUS``.

Protection follows ashmem's "prot mask": it can only be reduced. ``set_protection(PROT_READ)``
adds ``F_SEAL_FUTURE_WRITE`` (Linux >= 5.1), after which no process can map the region
writable or ``write()`` through an :class:`Ashmem`. Mappings that were already writable keep
their access, as with ashmem; this object's own :meth:`Ashmem.write` and
:meth:`Ashmem.buffer` honour the new protection anyway, as IPCKit's ``WriteToAshmem`` does.

Sending one to a peer: the parcel takes ``ashmem.dup_fd()`` (a new fd it owns) plus the
name. Receiving: ``Ashmem._from_received_fd(fd, name)`` takes ownership of the fd and
refuses anything that is not a readable, shrink-sealed regular file.

May import: ``_errors`` only.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import threading
import warnings
from types import TracebackType
from typing import TYPE_CHECKING, Final, NoReturn

from childkit.ipc._errors import IPCError, IPCErrorCode, ParamError, ParcelReadError

if TYPE_CHECKING:
    # Any object with the buffer protocol (bytes, bytearray, memoryview, array, ndarray).
    from _typeshed import ReadableBuffer

#: memfd names are at most 249 bytes (``NAME_MAX`` minus the ``"memfd:"`` prefix).
MAX_NAME_BYTES: Final = 249
#: The largest Ashmem childkit creates or accepts from a peer (1 TiB; memfds are sparse).
MAX_SIZE: Final = 2**40

# Older Python builds (and C libraries) lack the constant; the kernel ABI value is fixed.
F_SEAL_FUTURE_WRITE: Final[int] = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)
_SIZE_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
_WRITE_SEALS: Final = fcntl.F_SEAL_WRITE | F_SEAL_FUTURE_WRITE

_CHECK: Final = IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR
_ALLOC: Final = IPCErrorCode.OH_IPC_MEM_ALLOCATOR_ERROR


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a size or offset is a caller's mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as an Ashmem name, or None if it is fine."""
    if not isinstance(name, str):
        return f"name must be a str, not {type(name).__name__}"
    if not name:
        return "name must not be empty"
    if "\x00" in name:
        return "name must not contain a NUL character"
    try:
        encoded = os.fsencode(name)
    except UnicodeEncodeError:
        return "name cannot be encoded with the file system encoding"
    if len(encoded) > MAX_NAME_BYTES:
        return f"name is {len(encoded)} bytes when encoded; at most {MAX_NAME_BYTES} are allowed"
    return None


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISLNK, "symbolic link"),
    )
    for test, kind in kinds:
        if test(mode):
            return kind
    return f"file of mode {stat.S_IFMT(mode):#o}"


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class Ashmem:
    """A named shared memory region (a sealed memfd), mapped at most once per object.

    Create one with :meth:`create`; a peer's arrives through a parcel. Every method is
    thread-safe: one lock guards the fd, the mapping and the copies in :meth:`read` and
    :meth:`write`. Errors about the object's *state* (closed, not mapped, mapped read-only,
    write-protected) raise :class:`IPCError` with ``OH_IPC_CHECK_PARAM_ERROR``; bad
    *arguments* raise :class:`ParamError` (same code, narrower type).
    """

    #: Protection values, as on IPCKit's ArkTS ``Ashmem``.
    PROT_NONE: Final = 0  # the mmap module does not export it; the ABI value is 0
    PROT_READ: Final = mmap.PROT_READ
    PROT_WRITE: Final = mmap.PROT_WRITE
    PROT_EXEC: Final = mmap.PROT_EXEC

    # Class-level defaults so that __del__ and __repr__ work on a half-built object.
    _fd: int = -1
    _name: str = ""
    _size: int = 0
    _fd_writable: bool = False
    _map: mmap.mmap | None = None
    _map_writable: bool = False
    _write_sealed_cache: bool = False
    _lock: threading.Lock

    def __init__(self) -> None:
        raise TypeError("use Ashmem.create(name, size); Ashmem() is not a public constructor")

    @classmethod
    def _adopt(cls, fd: int, name: str, size: int, *, fd_writable: bool) -> Ashmem:
        self = cls.__new__(cls)
        self._lock = threading.Lock()
        self._fd = fd
        self._name = name
        self._size = size
        self._fd_writable = fd_writable
        return self

    # ----------------------------------------------------------------- creation

    @classmethod
    def create(cls, name: str, size: int) -> Ashmem:
        """Create a new region of ``size`` bytes (zero-filled), not yet mapped.

        ``name`` is a label (visible in ``/proc/<pid>/fd`` as ``memfd:<name>``): a non-empty
        str without NUL, at most 249 bytes once encoded. ``size`` is an int in
        ``1 .. MAX_SIZE`` (1 TiB); memory is only used for pages that are touched.

        Raises :class:`ParamError` for a bad name or size, :class:`IPCError`
        (``OH_IPC_MEM_ALLOCATOR_ERROR``) if the kernel refuses to create or size it.
        """
        problem = _name_problem(name)
        if problem is not None:
            raise ParamError(problem)
        if not _is_int(size):
            raise ParamError(f"size must be an int, not {type(size).__name__}")
        if size <= 0:
            raise ParamError(f"size {size} is too small: it must be at least 1")
        if size > MAX_SIZE:
            raise ParamError(f"size {size} is too large: at most {MAX_SIZE} (1 TiB) is allowed")
        try:
            fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as exc:
            raise IPCError(_ALLOC, f"memfd_create({name!r}) failed: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, size)
            # Seal the size now, before anyone can map it: no shrink means no SIGBUS.
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SIZE_SEALS)
        except OSError as exc:
            os.close(fd)
            raise IPCError(
                _ALLOC, f"cannot size and seal Ashmem {name!r} to {size} bytes: {exc.strerror}"
            ) from exc
        except BaseException:
            os.close(fd)
            raise
        return cls._adopt(fd, name, size, fd_writable=True)

    @classmethod
    def _from_received_fd(cls, fd: int, name: str) -> Ashmem:
        """Wrap an fd a peer sent; the new Ashmem owns ``fd`` (on failure it is closed).

        The peer is not trusted. The fd must be a regular file (a memfd) open for reading,
        of size ``1 .. MAX_SIZE``, and must carry ``F_SEAL_SHRINK``: without that seal the
        peer could truncate the file and make this process die of SIGBUS on a read of the
        mapping. The size comes from ``fstat`` after the seal was seen (so it can no longer
        drop), never from the peer's word. A read-only fd, or a write-sealed region, can
        still be received but only mapped with :meth:`map_read_only`.

        Raises :class:`ParcelReadError` saying what was wrong; ``fd`` is closed by then.
        """
        if not _is_int(fd) or fd < 0:
            # Not an fd number at all, so there is nothing to close.
            raise ParcelReadError(f"received Ashmem fd {fd!r} is not a valid fd number")
        try:
            return cls._check_received(fd, name)
        except BaseException:
            _close_quietly(fd)
            raise

    @classmethod
    def _check_received(cls, fd: int, name: str) -> Ashmem:
        problem = _name_problem(name)
        if problem is not None:
            raise ParcelReadError(f"received Ashmem has an invalid name: {problem}")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ParcelReadError(
                    f"received Ashmem {name!r} is a {_file_kind(st.st_mode)}, "
                    "not a memfd (regular file)"
                )
            access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            if access == os.O_WRONLY:
                raise ParcelReadError(f"received Ashmem {name!r} is not open for reading")
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                seals = 0  # a file system without sealing support
            if not seals & fcntl.F_SEAL_SHRINK:
                raise ParcelReadError(
                    f"received Ashmem {name!r} is not sealed against shrinking "
                    "(F_SEAL_SHRINK missing): the sender could truncate it under a mapping "
                    "and crash this process with SIGBUS, so it is refused"
                )
            # Only now, with the shrink seal in place, is the size a stable lower bound.
            size = os.fstat(fd).st_size
            os.set_inheritable(fd, False)
        except OSError as exc:
            raise ParcelReadError(
                f"received Ashmem {name!r} cannot be inspected: {exc.strerror}"
            ) from exc
        if size <= 0:
            raise ParcelReadError(f"received Ashmem {name!r} has size {size}; at least 1 needed")
        if size > MAX_SIZE:
            raise ParcelReadError(
                f"received Ashmem {name!r} has size {size}; at most {MAX_SIZE} is accepted"
            )
        return cls._adopt(fd, name, size, fd_writable=access == os.O_RDWR)

    # ------------------------------------------------------------ plain accessors

    @property
    def name(self) -> str:
        """The name given at creation (or sent by the peer); still readable after close."""
        return self._name

    @property
    def size(self) -> int:
        """The size in bytes, fixed for the region's life; still readable after close."""
        return self._size

    def get_size(self) -> int:
        """The size in bytes (IPCKit's ``getAshmemSize``)."""
        return self._size

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has released the fd."""
        return self._fd < 0

    def fileno(self) -> int:
        """The fd this object owns (do not close it). Raises :class:`IPCError` if closed."""
        with self._lock:
            self._check_open("fileno")
            return self._fd

    def dup_fd(self) -> int:
        """A new close-on-exec fd for the same region; the caller owns and closes it.

        This is what a parcel sends (then closes), so that the Ashmem may be closed at any
        time independently of parcels in flight. Raises :class:`IPCError` if closed
        (``OH_IPC_CHECK_PARAM_ERROR``) or if the process is out of fds
        (``OH_IPC_MEM_ALLOCATOR_ERROR``).
        """
        with self._lock:
            self._check_open("dup_fd")
            try:
                return os.dup(self._fd)
            except OSError as exc:
                raise IPCError(_ALLOC, f"cannot dup Ashmem {self._name!r}: {exc.strerror}") from exc

    # ---------------------------------------------------------------- protection

    def get_protection(self) -> int:
        """``PROT_READ | PROT_WRITE``, or ``PROT_READ`` once the region is write-sealed.

        The protection belongs to the region, shared by every process that holds it: it is
        read-only after ``set_protection(PROT_READ)`` here or in a peer. (Whether *this* fd
        may map writable is a separate matter: a peer may send a read-only fd.)
        """
        with self._lock:
            self._check_open("get_protection")
            return self.PROT_READ if self._write_sealed() else self.PROT_READ | self.PROT_WRITE

    def set_protection(self, prot: int) -> None:
        """Reduce the region's protection; like ashmem's prot mask it can never grow back.

        * ``PROT_READ``: adds ``F_SEAL_FUTURE_WRITE`` (Linux >= 5.1). From then on no process
          can map the region writable, and :meth:`write` fails here and in peers. Writable
          mappings made before keep working (the kernel cannot revoke them), but this
          object's :meth:`write` refuses and :meth:`buffer` hands out read-only views.
        * ``PROT_READ | PROT_WRITE``: accepted while the region is still writable (no
          change); after ``PROT_READ`` it raises :class:`IPCError`.
        * ``PROT_NONE``, ``PROT_WRITE`` alone, ``PROT_EXEC`` or unknown bits:
          :class:`ParamError` (seals can forbid writing, never reading or mapping).

        Raises :class:`IPCError` (``OH_IPC_CHECK_PARAM_ERROR``) if closed, if protection
        would grow, or if the kernel refuses the seal (a read-only fd from a peer, a region
        whose seals are themselves sealed, or a kernel older than 5.1).
        """
        if not _is_int(prot):
            raise ParamError(f"prot must be an int, not {type(prot).__name__}")
        read_write = self.PROT_READ | self.PROT_WRITE
        if prot not in (self.PROT_READ, read_write):
            raise ParamError(
                f"prot {prot:#x} is not supported: use PROT_READ or PROT_READ | PROT_WRITE "
                "(memfd seals can forbid writing, but not reading, mapping or executing)"
            )
        with self._lock:
            self._check_open("set_protection")
            sealed = self._write_sealed()
            if prot == read_write:
                if sealed:
                    raise IPCError(
                        _CHECK,
                        f"Ashmem {self._name!r} is already read-only; protection can only be "
                        "reduced, never raised again",
                    )
                return
            if sealed:
                return
            try:
                fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, F_SEAL_FUTURE_WRITE)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    why = "the kernel lacks F_SEAL_FUTURE_WRITE (Linux >= 5.1 needed)"
                elif exc.errno == errno.EPERM:
                    why = "this fd is read-only or the region's seals are sealed (F_SEAL_SEAL)"
                else:
                    why = exc.strerror or str(exc)
                raise IPCError(
                    _CHECK, f"cannot make Ashmem {self._name!r} read-only: {why}"
                ) from exc
            self._write_sealed_cache = True

    # ----------------------------------------------------------------- mapping

    def map_read_write(self) -> None:
        """Map the whole region readable and writable (IPCKit's ``mapReadWriteAshmem``).

        Mapping again in the same mode does nothing. Raises :class:`IPCError`
        (``OH_IPC_CHECK_PARAM_ERROR``) if closed, already mapped read-only, if this fd is
        read-only, or if the region is write-sealed (``set_protection(PROT_READ)``, here or
        in a peer); ``OH_IPC_MEM_ALLOCATOR_ERROR`` if ``mmap`` runs out of memory.
        """
        with self._lock:
            self._check_open("map_read_write")
            if self._map is not None:
                if self._map_writable:
                    return
                raise IPCError(
                    _CHECK,
                    f"Ashmem {self._name!r} is already mapped read-only; unmap() before "
                    "map_read_write()",
                )
            if not self._fd_writable:
                raise IPCError(
                    _CHECK,
                    f"Ashmem {self._name!r} was received on a read-only fd; "
                    "only map_read_only() is possible",
                )
            if self._write_sealed():
                raise IPCError(
                    _CHECK,
                    f"Ashmem {self._name!r} is write-protected (set_protection(PROT_READ) or "
                    "a write seal); map_read_write() is refused, use map_read_only()",
                )
            self._map = self._mmap(mmap.ACCESS_WRITE)
            self._map_writable = True

    def map_read_only(self) -> None:
        """Map the whole region read-only (IPCKit's ``mapReadonlyAshmem``).

        Mapping again in the same mode does nothing. Raises :class:`IPCError`
        (``OH_IPC_CHECK_PARAM_ERROR``) if closed or already mapped read-write;
        ``OH_IPC_MEM_ALLOCATOR_ERROR`` if ``mmap`` runs out of memory.
        """
        with self._lock:
            self._check_open("map_read_only")
            if self._map is not None:
                if not self._map_writable:
                    return
                raise IPCError(
                    _CHECK,
                    f"Ashmem {self._name!r} is already mapped read-write; unmap() before "
                    "map_read_only()",
                )
            self._map = self._mmap(mmap.ACCESS_READ)
            self._map_writable = False

    def unmap(self) -> None:
        """Remove this object's mapping; does nothing if there is none (or it is closed).

        Raises :class:`IPCError` (``OH_IPC_CHECK_PARAM_ERROR``) while memoryviews from
        :meth:`buffer` (or arrays built on them) are alive; the mapping then stays usable.
        """
        with self._lock:
            self._release_map("unmap")

    def close(self) -> None:
        """Unmap and close the fd (IPCKit's ``closeAshmem``); calling it again does nothing.

        Other processes (and fds from :meth:`dup_fd`) keep the region alive. Raises
        :class:`IPCError` (``OH_IPC_CHECK_PARAM_ERROR``) while memoryviews from
        :meth:`buffer` are alive; nothing is closed then and the object stays usable.
        """
        with self._lock:
            if self._fd < 0:
                return
            self._release_map("close")
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Ashmem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------- data

    def write(self, data: ReadableBuffer, offset: int = 0) -> None:
        """Copy ``data`` (any C-contiguous bytes-like object) into the region at ``offset``.

        ``offset + len(data)`` may equal the size, never exceed it. Raises
        :class:`ParamError` for a non-bytes-like ``data`` or a bad ``offset`` (negative, or
        past the end: the message names the bound); :class:`IPCError`
        (``OH_IPC_CHECK_PARAM_ERROR``) if closed, not mapped, mapped read-only or
        write-protected.
        """
        if not _is_int(offset):
            raise ParamError(f"offset must be an int, not {type(offset).__name__}")
        try:
            view = memoryview(data)
        except TypeError:
            raise ParamError(
                f"data must be a bytes-like object, not {type(data).__name__}"
            ) from None
        with view:
            if not view.c_contiguous:
                raise ParamError("data must be C-contiguous")
            self._check_range(offset, view.nbytes, "length of data")
            with self._lock:
                mapping = self._require_map("write")
                if not self._map_writable:
                    raise IPCError(
                        _CHECK,
                        f"Ashmem {self._name!r} is mapped read-only; map_read_write() to write",
                    )
                if self._write_sealed():
                    raise IPCError(
                        _CHECK,
                        f"Ashmem {self._name!r} is write-protected "
                        "(set_protection(PROT_READ) here or in a peer); writing is refused",
                    )
                if view.obj is mapping:
                    # A view of this very mapping may overlap the target, and mmap copies
                    # with memcpy: take a private copy of the source first.
                    mapping[offset : offset + view.nbytes] = view.tobytes()
                elif view.nbytes:
                    # mmap takes any C-contiguous buffer of the right byte length (any shape).
                    mapping[offset : offset + view.nbytes] = view

    def read(self, size: int, offset: int = 0) -> bytes:
        """A copy of ``size`` bytes of the region starting at ``offset``.

        ``offset + size`` may equal the region's size, never exceed it; ``size`` 0 gives
        ``b""``. Raises :class:`ParamError` for a bad ``size`` or ``offset`` (negative, or past
        the end: the message names the bound); :class:`IPCError`
        (``OH_IPC_CHECK_PARAM_ERROR``) if closed or not mapped.
        """
        if not _is_int(size):
            raise ParamError(f"size must be an int, not {type(size).__name__}")
        if not _is_int(offset):
            raise ParamError(f"offset must be an int, not {type(offset).__name__}")
        if size < 0:
            raise ParamError(f"size {size} is negative")
        self._check_range(offset, size, "size")
        with self._lock:
            mapping = self._require_map("read")
            return mapping[offset : offset + size]

    def buffer(self) -> memoryview:
        """A zero-copy memoryview of the whole mapping (wrap it with ``np.frombuffer``).

        The view is read-only for a read-only mapping or a write-protected region. While any
        view (or array built on one) is alive, :meth:`unmap` and :meth:`close` refuse:
        call ``view.release()`` when done. Raises :class:`IPCError`
        (``OH_IPC_CHECK_PARAM_ERROR``) if closed or not mapped.
        """
        with self._lock:
            mapping = self._require_map("buffer")
            view = memoryview(mapping)
            if self._map_writable and self._write_sealed():
                readonly = view.toreadonly()
                view.release()
                return readonly
            return view

    # ---------------------------------------------------------------- internals

    def _check_open(self, what: str) -> None:
        if self._fd < 0:
            raise IPCError(_CHECK, f"{what}(): Ashmem {self._name!r} is closed")

    def _require_map(self, what: str) -> mmap.mmap:
        self._check_open(what)
        if self._map is None:
            raise IPCError(
                _CHECK,
                f"{what}(): Ashmem {self._name!r} is not mapped; call map_read_write() or "
                "map_read_only() first",
            )
        return self._map

    def _check_range(self, offset: int, length: int, length_name: str) -> None:
        if offset < 0:
            raise ParamError(f"offset {offset} is negative")
        if offset > self._size:
            raise ParamError(f"offset {offset} is past the end of the region (size {self._size})")
        if offset + length > self._size:
            raise ParamError(
                f"offset {offset} + {length_name} {length} = {offset + length} is past the end "
                f"of the region (size {self._size})"
            )

    def _write_sealed(self) -> bool:
        # Seals never go away, so once seen the answer is cached; until then ask the kernel,
        # because a peer holding the same region may seal it at any time.
        if not self._write_sealed_cache:
            try:
                seals = fcntl.fcntl(self._fd, fcntl.F_GET_SEALS)
            except OSError as exc:
                raise IPCError(
                    IPCErrorCode.OH_IPC_INNER_ERROR,
                    f"cannot read the seals of Ashmem {self._name!r}: {exc.strerror}",
                ) from exc
            self._write_sealed_cache = bool(seals & _WRITE_SEALS)
        return self._write_sealed_cache

    def _mmap(self, access: int) -> mmap.mmap:
        try:
            return mmap.mmap(self._fd, self._size, access=access)
        except OSError as exc:
            self._raise_map_error(exc)

    def _raise_map_error(self, exc: OSError) -> NoReturn:
        code = _CHECK if exc.errno in (errno.EPERM, errno.EACCES) else _ALLOC
        raise IPCError(code, f"cannot map Ashmem {self._name!r}: {exc.strerror}") from exc

    def _release_map(self, what: str) -> None:
        if self._map is None:
            return
        try:
            self._map.close()
        except BufferError as exc:
            raise IPCError(
                _CHECK,
                f"{what}(): Ashmem {self._name!r} still has memoryviews from buffer() alive "
                "(or arrays built on them); release them (view.release()) first",
            ) from exc
        self._map = None
        self._map_writable = False

    def __repr__(self) -> str:
        if self._fd < 0:
            state = "closed"
        elif self._map is None:
            state = "unmapped"
        else:
            state = "mapped read-write" if self._map_writable else "mapped read-only"
        return f"<Ashmem {self._name!r} size={self._size} {state}>"

    def __del__(self) -> None:
        # A safety net for a forgotten close(): the fd is released here. A mapping still
        # referenced by a live memoryview stays valid (mmap keeps its own reference).
        fd = self._fd
        if fd >= 0:
            message = f"unclosed {self!r}"
            self._fd = -1
            _close_quietly(fd)
            warnings.warn(message, ResourceWarning, stacklevel=2, source=self)
