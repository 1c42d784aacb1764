"""Hand a NumPy array to a child through shared memory, without copying it.

The parent fills a :class:`~childkit.ipc.SharedArray` (an ndarray whose memory is an
Ashmem region) with 256 MiB of float64s and sends it in a parcel: only the dtype, the
shape and the region's fd travel. The child maps the same pages, computes their sum, and
then scales them in place; the parent sees the change without any copy back.

Run: ``python examples/numpy_handover.py [MiB]`` (default 256; exit status 0 on success).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import numpy_worker as worker  # next to this file; the child imports it too

import childkit
from childkit.ipc import MessageOption, MessageParcel, RequestMode, SharedArray, write_array


def main() -> int:
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    count = mib * 1024 * 1024 // 8
    with childkit.connect("numpy_worker") as child, \
            SharedArray.create(count, "float64", name="example-array") as shared:
        shared.array[:] = np.arange(count, dtype=np.float64)
        expected = float(shared.array.sum())
        start = time.perf_counter()
        with MessageParcel() as data:
            write_array(data, shared)
            with child.proxy.send_request(worker.STATS, data) as reply:
                total, biggest = reply.read_double(), reply.read_double()
        elapsed = time.perf_counter() - start
        print(f"handed {mib} MiB ({count} float64) to child {child.pid}: it summed them "
              f"to {total:.6g} (max {biggest:.6g}); request took {elapsed * 1e3:.1f} ms")

        with MessageParcel() as data:
            write_array(data, shared)
            data.write_double(2.0)
            child.proxy.send_request(worker.SCALE, data).close()
        doubled = float(shared.array[-1])
        print(f"the child scaled the array in place: last element {count - 1} -> {doubled:.6g}")
        with MessageParcel() as data:
            child.proxy.send_request(worker.QUIT, data, MessageOption(RequestMode.ASYNC))
        info = child.wait(30)
        print(f"child ended: {info}")
        ok = total == expected and biggest == count - 1 and doubled == 2.0 * (count - 1) \
            and info is not None and info.exit_code == 0
    print("numpy_handover: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
