"""Types of the C twins in _speedups.c (see _wire and _busypoll for what they promise)."""

import mmap
from collections.abc import Sequence

MAX_RECORD_BYTES: int
MAX_PARCEL_DATA: int
TXN_DATA_OFFSET: int
REPLY_DATA_OFFSET: int

def encode_transaction(
    seq: int, handle: int, code: int, oneway: bool, data: bytes | bytearray,
    objects: Sequence[tuple[int, int]], n_fds: int,
) -> bytes: ...
def encode_reply(
    seq: int, status: int, data: bytes | bytearray, objects: Sequence[tuple[int, int]],
    n_fds: int,
) -> bytes: ...
def simple_request(
    buf: bytes | bytearray | memoryview | mmap.mmap, size: int
) -> tuple[int, int, int] | None: ...
def simple_reply(
    buf: bytes | bytearray | memoryview | mmap.mmap, size: int
) -> tuple[int, int] | None: ...
def poll_readable(fd: int, end_ns: int, preempted_ns: int) -> int: ...
def exchange(
    fd: int, record: bytes, buf: mmap.mmap | bytearray, end_ns: int, preempted_ns: int,
    epfd: int = -1,
) -> tuple[int, list[tuple[int, int, bytes]], int, int, int]: ...
