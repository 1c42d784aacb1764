"""Tests for childkit.ipc._ashmem.Ashmem: a sealed memfd shared between processes."""

from __future__ import annotations

import array
import errno
import fcntl
import gc
import mmap
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from childkit.ipc._ashmem import F_SEAL_FUTURE_WRITE, MAX_NAME_BYTES, MAX_SIZE, Ashmem
from childkit.ipc._errors import IPCError, IPCErrorCode, ParamError, ParcelReadError

CHECK = IPCErrorCode.OH_IPC_CHECK_PARAM_ERROR
READ_WRITE = Ashmem.PROT_READ | Ashmem.PROT_WRITE
CHILD_TIMEOUT = 60.0


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_fd_leak() -> Iterator[None]:
    """Every test must give back every fd it (or Ashmem) opened."""
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


def state_error(excinfo: pytest.ExceptionInfo[IPCError]) -> str:
    """Check that a state error is a plain IPCError with the CHECK_PARAM code."""
    assert type(excinfo.value) is IPCError
    assert excinfo.value.code == CHECK
    return excinfo.value.message


def sealed_memfd(size: int, seals: int = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW) -> int:
    """A memfd as a (possibly hostile) peer would make it, with the given seals."""
    fd = os.memfd_create("peer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


@pytest.fixture
def ashmem() -> Iterator[Ashmem]:
    shm = Ashmem.create("test", 16)
    yield shm
    shm.close()


# ------------------------------------------------------------------------- create


def test_create_gives_a_sealed_zeroed_named_memfd() -> None:
    with Ashmem.create("frames", 4096) as shm:
        assert shm.name == "frames"
        assert shm.size == shm.get_size() == 4096
        assert not shm.closed
        fd = shm.fileno()
        assert os.readlink(f"/proc/self/fd/{fd}") == "/memfd:frames (deleted)"
        assert not os.get_inheritable(fd)
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
        assert not seals & fcntl.F_SEAL_SEAL  # set_protection must still be able to seal
        assert shm.get_protection() == READ_WRITE
        assert "unmapped" in repr(shm)
        shm.map_read_only()
        assert shm.read(4096) == bytes(4096)
    assert shm.closed
    assert "closed" in repr(shm)
    assert shm.size == 4096 and shm.name == "frames"


@pytest.mark.parametrize("new_size", [0, 8, 4095, 4097])
def test_size_cannot_change_under_a_mapping(new_size: int) -> None:
    with Ashmem.create("fixed", 4096) as shm:
        with pytest.raises(PermissionError):
            os.ftruncate(shm.fileno(), new_size)
        assert os.fstat(shm.fileno()).st_size == 4096


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "x" * MAX_NAME_BYTES,
        "é" * 124 + "a",  # 249 bytes in UTF-8
        "name with spaces/and:punctuation",
    ],
)
def test_create_accepts_names_up_to_the_byte_limit(name: str) -> None:
    with Ashmem.create(name, 1) as shm:
        assert shm.name == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "must not be empty"),
        ("a\x00b", "NUL"),
        ("x" * (MAX_NAME_BYTES + 1), "250 bytes"),
        ("é" * 125, "250 bytes"),
        ("\ud800", "cannot be encoded"),
        (b"bytes", "must be a str"),
        (None, "must be a str"),
        (7, "must be a str"),
    ],
)
def test_create_refuses_bad_names(name: object, fragment: str) -> None:
    with pytest.raises(ParamError, match=fragment) as excinfo:
        Ashmem.create(name, 16)  # type: ignore[arg-type]
    assert excinfo.value.code == CHECK


@pytest.mark.parametrize("size", [1, 4096, MAX_SIZE])
def test_create_accepts_sizes_up_to_the_limit(size: int) -> None:
    # Memfds are sparse: even the 1 TiB edge costs nothing until touched (and is not mapped).
    with Ashmem.create("sized", size) as shm:
        assert shm.get_size() == size
        assert os.fstat(shm.fileno()).st_size == size


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        (0, "too small"),
        (-1, "too small"),
        (MAX_SIZE + 1, "too large"),
        (True, "must be an int"),
        (1.0, "must be an int"),
        ("16", "must be an int"),
    ],
)
def test_create_refuses_bad_sizes(size: object, fragment: str) -> None:
    with pytest.raises(ParamError, match=fragment):
        Ashmem.create("bad", size)  # type: ignore[arg-type]


def test_constructor_is_not_public() -> None:
    with pytest.raises(TypeError, match=r"Ashmem\.create"):
        Ashmem()


# ------------------------------------------------------------------------ mapping


def test_map_read_write_then_read_and_write(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    ashmem.map_read_write()  # same mode again: nothing happens
    assert "mapped read-write" in repr(ashmem)
    ashmem.write(b"hello", 3)
    assert ashmem.read(5, 3) == b"hello"
    assert ashmem.read(16) == bytes(3) + b"hello" + bytes(8)


def test_mode_switch_needs_unmap(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    ashmem.write(b"kept")
    with pytest.raises(IPCError) as excinfo:
        ashmem.map_read_only()
    assert "already mapped read-write" in state_error(excinfo)
    ashmem.unmap()
    ashmem.unmap()  # nothing mapped: nothing happens
    ashmem.map_read_only()
    ashmem.map_read_only()
    assert "mapped read-only" in repr(ashmem)
    with pytest.raises(IPCError) as excinfo:
        ashmem.map_read_write()
    assert "already mapped read-only" in state_error(excinfo)
    assert ashmem.read(4) == b"kept"


def test_read_only_mapping_refuses_writes(ashmem: Ashmem) -> None:
    ashmem.map_read_only()
    with pytest.raises(IPCError) as excinfo:
        ashmem.write(b"x")
    assert "mapped read-only" in state_error(excinfo)
    view = ashmem.buffer()
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1
    view.release()
    assert ashmem.read(1) == b"\x00"


@pytest.mark.parametrize("call", ["read", "write", "buffer"])
def test_data_calls_need_a_mapping(ashmem: Ashmem, call: str) -> None:
    with pytest.raises(IPCError) as excinfo:
        if call == "read":
            ashmem.read(1)
        elif call == "write":
            ashmem.write(b"x")
        else:
            ashmem.buffer()
    message = state_error(excinfo)
    assert "not mapped" in message and "map_read_write()" in message


# ------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("length", "offset"),
    [(16, 0), (1, 15), (0, 16), (0, 0), (15, 1)],
)
def test_bounds_accepted_at_the_edge(ashmem: Ashmem, length: int, offset: int) -> None:
    ashmem.map_read_write()
    ashmem.write(b"\xab" * length, offset)
    assert ashmem.read(length, offset) == b"\xab" * length


@pytest.mark.parametrize(
    ("length", "offset", "fragment"),
    [
        (17, 0, "offset 0 \\+ .* 17 = 17 is past the end of the region \\(size 16\\)"),
        (1, 16, "offset 16 \\+ .* 1 = 17 is past the end"),
        (2, 15, "= 17 is past the end"),
        (0, 17, "offset 17 is past the end"),
        (1, -1, "offset -1 is negative"),
        (0, -1, "offset -1 is negative"),
    ],
)
def test_bounds_refused_one_past_the_edge(
    ashmem: Ashmem, length: int, offset: int, fragment: str
) -> None:
    ashmem.map_read_write()
    with pytest.raises(ParamError, match=fragment):
        ashmem.write(b"\xab" * length, offset)
    with pytest.raises(ParamError, match=fragment):
        ashmem.read(length, offset)
    assert ashmem.read(16) == bytes(16)  # nothing was written


def test_read_refuses_negative_size(ashmem: Ashmem) -> None:
    ashmem.map_read_only()
    with pytest.raises(ParamError, match="size -1 is negative"):
        ashmem.read(-1)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("16",), "size must be an int"),
        ((1.0,), "size must be an int"),
        ((True,), "size must be an int"),
        ((1, "0"), "offset must be an int"),
        ((1, False), "offset must be an int"),
    ],
)
def test_read_refuses_non_int_arguments(
    ashmem: Ashmem, args: tuple[object, ...], fragment: str
) -> None:
    ashmem.map_read_only()
    with pytest.raises(ParamError, match=fragment):
        ashmem.read(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "offset", "fragment"),
    [
        ("text", 0, "bytes-like object, not str"),
        (None, 0, "bytes-like object, not NoneType"),
        (memoryview(b"abcdef")[::2], 0, "C-contiguous"),
        (b"x", 1.0, "offset must be an int"),
        (b"x", True, "offset must be an int"),
    ],
)
def test_write_refuses_bad_arguments(
    ashmem: Ashmem, data: object, offset: object, fragment: str
) -> None:
    ashmem.map_read_write()
    with pytest.raises(ParamError, match=fragment):
        ashmem.write(data, offset)  # type: ignore[arg-type]


def test_write_takes_any_contiguous_buffer_by_its_byte_size(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    ints = array.array("i", [1, 2, 3, 4])
    assert ints.itemsize * len(ints) == 16
    ashmem.write(ints)
    assert ashmem.read(16) == ints.tobytes()
    with pytest.raises(ParamError, match="= 17 is past the end"):
        ashmem.write(ints, 1)
    grid = memoryview(bytearray(b"abcdefgh")).cast("B", (2, 4))
    ashmem.write(grid, 8)
    assert ashmem.read(8, 8) == b"abcdefgh"
    ashmem.write(bytearray(b"zz"), 0)
    assert ashmem.read(2) == b"zz"


# ------------------------------------------------------------------------- buffer


def test_buffer_is_a_zero_copy_view(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    with ashmem.buffer() as view:
        assert not view.readonly
        assert view.nbytes == 16 and view.format == "B"
        view[2:5] = b"abc"
        ashmem.write(b"Z", 0)
        assert bytes(view[0:1]) == b"Z"
    assert ashmem.read(5) == b"Z\x00abc"


def test_write_from_an_overlapping_view_of_itself(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    ashmem.write(b"0123456789abcdef")
    with ashmem.buffer() as view, view[0:8] as source:
        ashmem.write(source, 4)
    assert ashmem.read(16) == b"012301234567cdef"


def test_unmap_and_close_refuse_while_views_are_alive(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    view = ashmem.buffer()
    part = view[4:8]
    for call in (ashmem.unmap, ashmem.close):
        with pytest.raises(IPCError) as excinfo:
            call()
        assert "release them" in state_error(excinfo)
    # Nothing happened: the object and the views still work.
    assert not ashmem.closed
    part[:] = b"live"
    assert ashmem.read(4, 4) == b"live"
    view.release()
    with pytest.raises(IPCError, match="release them"):
        ashmem.unmap()  # the slice still holds the export
    part.release()
    ashmem.unmap()
    ashmem.close()
    assert ashmem.closed


def test_context_exit_with_a_live_view_raises_and_keeps_the_object() -> None:
    with pytest.raises(IPCError, match="release them"):  # noqa: SIM117 - the order matters
        with Ashmem.create("ctx", 8) as shm:
            shm.map_read_write()
            view = shm.buffer()
    assert not shm.closed
    view.release()
    shm.close()


# --------------------------------------------------------------------- protection


def test_set_protection_read_only_seals_future_writes(ashmem: Ashmem) -> None:
    ashmem.set_protection(READ_WRITE)  # while writable: accepted, no change
    assert ashmem.get_protection() == READ_WRITE
    ashmem.map_read_write()
    ashmem.write(b"before")
    ashmem.set_protection(Ashmem.PROT_READ)
    ashmem.set_protection(Ashmem.PROT_READ)  # again: nothing to do
    assert ashmem.get_protection() == Ashmem.PROT_READ
    assert fcntl.fcntl(ashmem.fileno(), fcntl.F_GET_SEALS) & F_SEAL_FUTURE_WRITE
    # This object's own writable mapping no longer writes, and its views are read-only.
    with pytest.raises(IPCError) as excinfo:
        ashmem.write(b"after")
    assert "write-protected" in state_error(excinfo)
    with ashmem.buffer() as view:
        assert view.readonly
        assert bytes(view[:6]) == b"before"
    with pytest.raises(IPCError) as excinfo:
        ashmem.set_protection(READ_WRITE)
    assert "only be reduced" in state_error(excinfo)
    ashmem.unmap()
    with pytest.raises(IPCError) as excinfo:
        ashmem.map_read_write()
    assert "map_read_only()" in state_error(excinfo)
    # The kernel itself refuses a writable mapping, for any holder of the region.
    with pytest.raises(PermissionError):
        mmap.mmap(ashmem.fileno(), 16, access=mmap.ACCESS_WRITE)
    ashmem.map_read_only()
    assert ashmem.read(6) == b"before"


@pytest.mark.parametrize(
    "prot",
    [
        Ashmem.PROT_NONE,
        Ashmem.PROT_WRITE,
        Ashmem.PROT_EXEC,
        Ashmem.PROT_READ | Ashmem.PROT_EXEC,
        READ_WRITE | Ashmem.PROT_EXEC,
        8,
        -1,
    ],
)
def test_set_protection_refuses_unsupported_values(ashmem: Ashmem, prot: int) -> None:
    with pytest.raises(ParamError, match="not supported"):
        ashmem.set_protection(prot)
    assert ashmem.get_protection() == READ_WRITE


@pytest.mark.parametrize("prot", ["1", 1.0, None, True])
def test_set_protection_refuses_non_ints(ashmem: Ashmem, prot: object) -> None:
    with pytest.raises(ParamError, match="prot must be an int"):
        ashmem.set_protection(prot)  # type: ignore[arg-type]


def test_set_protection_fails_cleanly_when_seals_are_sealed() -> None:
    fd = sealed_memfd(16, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    with Ashmem._from_received_fd(fd, "sealed-seals") as shm:
        with pytest.raises(IPCError) as excinfo:
            shm.set_protection(Ashmem.PROT_READ)
        assert "F_SEAL_SEAL" in state_error(excinfo)
        assert shm.get_protection() == READ_WRITE
        shm.map_read_write()
        shm.write(b"ok")


# ----------------------------------------------------------------- closed object


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.map_read_write(),
        lambda s: s.map_read_only(),
        lambda s: s.read(1),
        lambda s: s.write(b"x"),
        lambda s: s.buffer(),
        lambda s: s.fileno(),
        lambda s: s.dup_fd(),
        lambda s: s.get_protection(),
        lambda s: s.set_protection(Ashmem.PROT_READ),
    ],
)
def test_closed_object_refuses_every_call(call: object) -> None:
    shm = Ashmem.create("gone", 16)
    shm.map_read_write()
    shm.close()
    shm.close()  # idempotent
    shm.unmap()  # nothing mapped any more: nothing to do
    with pytest.raises(IPCError) as excinfo:
        call(shm)  # type: ignore[operator]
    assert "is closed" in state_error(excinfo)


def test_dup_fd_gives_an_owned_fd_for_the_same_region(ashmem: Ashmem) -> None:
    fd = ashmem.dup_fd()
    try:
        assert fd != ashmem.fileno()
        assert not os.get_inheritable(fd)
        assert os.fstat(fd).st_ino == os.fstat(ashmem.fileno()).st_ino
        ashmem.close()
        assert is_open(fd)  # the dup outlives the Ashmem
    finally:
        os.close(fd)


def test_forgotten_close_warns_and_releases_the_fd() -> None:
    before = open_fds()
    shm = Ashmem.create("forgotten", 16)
    shm.map_read_write()
    with pytest.warns(ResourceWarning, match="unclosed <Ashmem 'forgotten'"):
        del shm
        gc.collect()
    assert open_fds() == before


# ------------------------------------------------------------------ received fds


def test_received_fd_is_adopted_with_the_size_from_fstat(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    ashmem.write(b"payload", 9)
    fd = ashmem.dup_fd()
    os.set_inheritable(fd, True)
    with Ashmem._from_received_fd(fd, "peer's name") as peer:
        assert peer.fileno() == fd  # owned, not copied
        assert not os.get_inheritable(fd)
        assert peer.name == "peer's name"
        assert peer.get_size() == 16
        peer.map_read_write()
        assert peer.read(7, 9) == b"payload"
        peer.write(b"back")
    assert not is_open(fd)
    assert ashmem.read(4) == b"back"


def test_received_region_cannot_be_shrunk_by_the_sender() -> None:
    sender_fd = sealed_memfd(8192)
    with Ashmem._from_received_fd(os.dup(sender_fd), "peer") as shm:
        shm.map_read_only()
        with pytest.raises(PermissionError):
            os.ftruncate(sender_fd, 0)  # the hostile move a missing seal would allow
        assert shm.read(1, 8191) == b"\x00"
    os.close(sender_fd)


def _plain_memfd() -> int:
    fd = os.memfd_create("unsealable", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4096)
    return fd


def _unsealed_memfd() -> int:
    return sealed_memfd(4096, 0)


def _grow_sealed_only() -> int:
    return sealed_memfd(4096, fcntl.F_SEAL_GROW)


def _pipe_end() -> int:
    r, w = os.pipe()
    os.close(w)
    return r


def _socket_end() -> int:
    a, b = socket.socketpair()
    b.close()
    return a.detach()


def _directory() -> int:
    return os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _write_only_reopen() -> int:
    fd = sealed_memfd(4096)
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("make_fd", "fragment"),
    [
        (_plain_memfd, "F_SEAL_SHRINK missing"),
        (_unsealed_memfd, "F_SEAL_SHRINK missing"),
        (_grow_sealed_only, "F_SEAL_SHRINK missing"),
        (_pipe_end, "is a pipe, not a memfd"),
        (_socket_end, "is a socket, not a memfd"),
        (_directory, "is a directory, not a memfd"),
        (_write_only_reopen, "not open for reading"),
        (lambda: sealed_memfd(0), "has size 0"),
        (lambda: sealed_memfd(MAX_SIZE + 1), f"has size {MAX_SIZE + 1}; at most {MAX_SIZE}"),
    ],
)
def test_received_fd_refused_and_closed(make_fd: object, fragment: str) -> None:
    fd = make_fd()  # type: ignore[operator]
    with pytest.raises(ParcelReadError, match=fragment):
        Ashmem._from_received_fd(fd, "peer")
    assert not is_open(fd)


def test_received_regular_file_on_disk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(4096))
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    with pytest.raises(ParcelReadError, match="F_SEAL_SHRINK missing"):
        Ashmem._from_received_fd(fd, "file")
    assert not is_open(fd)


@pytest.mark.parametrize("size", [1, MAX_SIZE])
def test_received_size_accepted_at_the_edges(size: int) -> None:
    with Ashmem._from_received_fd(sealed_memfd(size), "edge") as shm:
        assert shm.size == size


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "must not be empty"),
        ("a\x00", "NUL"),
        ("n" * (MAX_NAME_BYTES + 1), "250 bytes"),
        (None, "must be a str"),
    ],
)
def test_received_fd_with_a_bad_name_is_refused_and_closed(name: object, fragment: str) -> None:
    fd = sealed_memfd(16)
    with pytest.raises(ParcelReadError, match=f"invalid name: .*{fragment}"):
        Ashmem._from_received_fd(fd, name)  # type: ignore[arg-type]
    assert not is_open(fd)


@pytest.mark.parametrize("fd", [-1, "3", True, None])
def test_received_non_fd_values_are_refused(fd: object) -> None:
    with pytest.raises(ParcelReadError, match="not a valid fd number"):
        Ashmem._from_received_fd(fd, "peer")  # type: ignore[arg-type]


def test_received_closed_fd_number_is_refused() -> None:
    fd = sealed_memfd(16)
    os.close(fd)
    with pytest.raises(ParcelReadError, match="cannot be inspected: Bad file descriptor"):
        Ashmem._from_received_fd(fd, "peer")


def test_received_read_only_fd_maps_read_only_only() -> None:
    writer = Ashmem.create("writer", 16)
    writer.map_read_write()
    writer.write(b"shared")
    ro_fd = os.open(f"/proc/self/fd/{writer.fileno()}", os.O_RDONLY | os.O_CLOEXEC)
    with Ashmem._from_received_fd(ro_fd, "reader") as reader:
        with pytest.raises(IPCError) as excinfo:
            reader.map_read_write()
        assert "read-only fd" in state_error(excinfo)
        with pytest.raises(IPCError) as excinfo:
            reader.set_protection(Ashmem.PROT_READ)  # cannot seal through a read-only fd
        assert "read-only" in state_error(excinfo)
        reader.map_read_only()
        assert reader.read(6) == b"shared"
    writer.close()


@pytest.mark.parametrize("seal", [fcntl.F_SEAL_WRITE, F_SEAL_FUTURE_WRITE])
def test_received_write_sealed_region_refuses_map_read_write(seal: int) -> None:
    fd = sealed_memfd(16, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | seal)
    with Ashmem._from_received_fd(fd, "sealed") as shm:
        assert shm.get_protection() == Ashmem.PROT_READ
        with pytest.raises(IPCError) as excinfo:
            shm.map_read_write()
        assert "write-protected" in state_error(excinfo)
        shm.map_read_only()
        assert shm.read(16) == bytes(16)


def test_peer_sealing_later_stops_our_writes(ashmem: Ashmem) -> None:
    ashmem.map_read_write()
    peer_fd = ashmem.dup_fd()
    with Ashmem._from_received_fd(peer_fd, "peer") as peer:
        peer.set_protection(Ashmem.PROT_READ)
    with pytest.raises(IPCError, match="write-protected"):
        ashmem.write(b"x")
    assert ashmem.get_protection() == Ashmem.PROT_READ


# ------------------------------------------------------------------ leaks, threads


def test_no_fd_leak_over_many_cycles_and_refusals() -> None:
    before = open_fds()
    for i in range(50):
        shm = Ashmem.create(f"cycle{i}", 4096)
        shm.map_read_write()
        with shm.buffer() as view:
            view[0] = i
        shm.write(b"abc", 4093)
        peer = Ashmem._from_received_fd(shm.dup_fd(), "peer")
        peer.map_read_only()
        assert peer.read(1) == bytes([i])
        with pytest.raises(ParcelReadError):
            Ashmem._from_received_fd(_unsealed_memfd(), "bad")
        with pytest.raises(IPCError):
            peer.write(b"x")
        peer.close()
        shm.unmap()
        shm.close()
    assert open_fds() == before


def test_concurrent_map_read_unmap_and_close_never_crash() -> None:
    shm = Ashmem.create("threads", 4096)
    shm.map_read_write()
    shm.write(b"\x5a" * 4096)
    shm.unmap()
    start = threading.Barrier(5)
    unexpected: list[BaseException] = []

    def worker() -> None:
        start.wait(timeout=CHILD_TIMEOUT)
        for _ in range(300):
            try:
                shm.map_read_only()
                assert shm.read(4096) == b"\x5a" * 4096
                shm.unmap()
            except IPCError as exc:
                # Another thread unmapped or closed in between: a clean state error.
                if exc.code != CHECK:
                    unexpected.append(exc)
            except BaseException as exc:
                unexpected.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    start.wait(timeout=CHILD_TIMEOUT)
    shm.close()
    for thread in threads:
        thread.join(timeout=CHILD_TIMEOUT)
        assert not thread.is_alive()
    assert unexpected == []
    assert shm.closed
    shm.unmap()  # a mapping made after the close check cannot exist: nothing to release


# ------------------------------------------------------------------ two processes

CHILD_PROGRAM = textwrap.dedent(
    """
    import mmap, sys
    from childkit.ipc._ashmem import Ashmem
    from childkit.ipc._errors import IPCError

    fd, mode = int(sys.argv[1]), sys.argv[2]
    shm = Ashmem._from_received_fd(fd, "from-parent")
    if mode == "rw":
        shm.map_read_write()
        got = shm.read(17)
        shm.write(b"reply from child", 4096)
        print(shm.get_size(), got.decode())
    else:
        try:
            shm.map_read_write()
        except IPCError as exc:
            print("map_read_write refused:", exc.message)
        try:
            mmap.mmap(shm.fileno(), shm.get_size(), access=mmap.ACCESS_WRITE)
        except PermissionError:
            print("raw writable mmap refused")
        shm.map_read_only()
        print(shm.read(17).decode())
    shm.close()
    """
)


def run_child(fd: int, mode: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-c", CHILD_PROGRAM, str(fd), mode],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
    finally:
        os.close(fd)  # the child has its own copy now


def test_two_processes_share_the_memory() -> None:
    with Ashmem.create("parent", 8192) as shm:
        shm.map_read_write()
        shm.write(b"hello from parent")
        result = run_child(shm.dup_fd(), "rw")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "8192 hello from parent\n"
        # The parent's mapping, made before the child ran, sees the child's write.
        assert shm.read(16, 4096) == b"reply from child"


def test_read_only_protection_binds_the_other_process() -> None:
    with Ashmem.create("parent", 4096) as shm:
        shm.map_read_write()
        shm.write(b"hello from parent")
        shm.set_protection(Ashmem.PROT_READ)
        result = run_child(shm.dup_fd(), "ro")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("map_read_write refused:") and "write-protected" in lines[0]
        assert lines[1:] == ["raw writable mmap refused", "hello from parent"]


# ------------------------------------------------------------------------ big data


def test_256_mib_pattern_through_buffer_is_seen_by_a_second_mapping() -> None:
    size = 256 * 1024 * 1024
    chunk = 1024 * 1024
    with Ashmem.create("big", size) as shm:
        shm.map_read_write()
        with shm.buffer() as view:
            for i in range(size // chunk):
                view[i * chunk : (i + 1) * chunk] = i.to_bytes(4, "little") * (chunk // 4)
        with Ashmem._from_received_fd(shm.dup_fd(), "big-reader") as reader:
            reader.map_read_only()
            assert reader.get_size() == size
            for i in range(size // chunk):
                expected = i.to_bytes(4, "little") * (chunk // 4)
                assert reader.read(chunk, i * chunk) == expected
            assert reader.read(4, size - 4) == (size // chunk - 1).to_bytes(4, "little")
