"""NumPy arrays through shared memory: zero-copy both ways, hostile headers refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import peer_main as pm
import pytest
from ipc_helpers import Peer, fd_count, wait_until

from childkit.ipc import (
    Ashmem,
    IPCError,
    MessageParcel,
    ParamError,
    ParcelReadError,
    SharedArray,
    read_array,
    write_array,
)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def test_shared_array_crosses_without_copy_and_back(peer: Peer) -> None:
    before = fd_count()
    with SharedArray.create((1024, 1024), "float32") as shared:  # 4 MiB
        shared.array[:] = 1.5
        with MessageParcel() as data:
            write_array(data, shared)
            with peer.proxy.send_request(pm.SUM_ARRAY, data) as reply:
                assert reply.read_double() == 1.5 * 1024 * 1024
        # The child doubled the values in place: the parent sees its write.
        assert float(shared.array[0, 0]) == 3.0 and float(shared.array[-1, -1]) == 3.0
    assert wait_until(lambda: fd_count() <= before)


def test_plain_array_is_copied_once(peer: Peer) -> None:
    arr = np.arange(10, dtype=np.int64)
    with MessageParcel() as data:
        write_array(data, arr)
        with peer.proxy.send_request(pm.SUM_ARRAY, data) as reply:
            assert reply.read_double() == 45.0
    assert list(arr) == list(range(10))  # the original is untouched


def test_round_trip_in_process_dtypes_and_shapes() -> None:
    for dtype, shape in [("uint8", (0,)), ("<i4", (3, 4, 5)), ("complex128", (2,)),
                         ([("x", "<f8"), ("y", "<i2")], (4,)), ("bool", ())]:
        with SharedArray.create(shape, dtype) as shared, MessageParcel() as data:
            write_array(data, shared)
            data.rewind_read_position(0)
            with read_array(data) as got:
                assert got.array.dtype == np.dtype(dtype) and got.array.shape == shape
                assert not got.array.flags.writeable


def test_object_dtype_refused() -> None:
    with pytest.raises(ParamError):
        SharedArray.create((3,), object)
    with pytest.raises(ParamError):
        SharedArray.create((-1,), "f8")
    with pytest.raises(ParamError):
        SharedArray.create((1,) * 33, "f8")


def _forged(dtype: str, dims: list[int], size: int) -> MessageParcel:
    data = MessageParcel()
    data.write_interface_token("childkit.SharedArray")
    data.write_string(dtype)
    data.write_uint32(len(dims))
    for d in dims:
        data.write_uint64(d)
    with Ashmem.create("forged", size) as ash:
        data.write_ashmem(ash)
    return data


@pytest.mark.parametrize(
    ("dtype", "dims", "size"),
    [
        ("'|O'", [4], 64),  # pointers: never
        ("[('a', '|O')]", [4], 64),  # pointers inside a structure: never
        ("'<f8'", [9], 64),  # 72 bytes claimed, 64 sent
        ("'<f8'", [2**40, 2**40], 64),  # overflowing claim
        ("not a dtype", [1], 64),
        ("__import__('os').system('true')", [1], 64),  # never evaluated
        ("'<f8'", [1] * 40, 64),  # too many dimensions
    ],
)
def test_hostile_headers_refused(dtype: str, dims: list[int], size: int) -> None:
    before = fd_count()
    with _forged(dtype, dims, size) as data, pytest.raises(ParcelReadError):
        read_array(data)
    assert fd_count() <= before


def test_exact_fit_accepted() -> None:
    with _forged("'<f8'", [8], 64) as data, read_array(data) as got:
        assert got.array.shape == (8,)


def test_read_only_sealed_region_cannot_be_mapped_writable() -> None:
    with SharedArray.create((4,), "f8") as shared, MessageParcel() as data:
        shared.ashmem.set_protection(Ashmem.PROT_READ)
        write_array(data, shared)
        data.rewind_read_position(0)
        with pytest.raises(IPCError):
            read_array(data, writable=True)


# Runs in a fresh interpreter where "import numpy" fails: childkit.ipc must import, its
# non-array parcels and Ashmem must work, and the array helpers must say NumPy is needed.
_NO_NUMPY = textwrap.dedent("""
    import sys

    class _BlockNumpy:
        def find_spec(self, name, path=None, target=None):
            if name == "numpy" or name.startswith("numpy."):
                raise ImportError("numpy is blocked for this test")
            return None

    sys.meta_path.insert(0, _BlockNumpy())
    import childkit, childkit.ipc
    from childkit.ipc import Ashmem, MessageParcel, ParamError, SharedArray, read_array, write_array
    assert "numpy" not in sys.modules
    p = MessageParcel()
    p.write_int32(7)
    with Ashmem.create("no-numpy", 4096) as region:
        region.map_read_write()
        p.write_ashmem(region)
    assert p.read_int32() == 7
    with p.read_ashmem() as got:
        assert got.get_size() == 4096
    for call in (lambda: write_array(MessageParcel(), [1, 2]),
                 lambda: read_array(MessageParcel()),
                 lambda: SharedArray.create(4)):
        try:
            call()
        except ParamError as exc:
            assert "NumPy" in str(exc), exc
        else:
            raise AssertionError("an array helper worked without NumPy")
    assert "numpy" not in sys.modules
    print("ok")
""")


def test_ipc_imports_and_works_without_numpy() -> None:
    done = subprocess.run([sys.executable, "-c", _NO_NUMPY], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
