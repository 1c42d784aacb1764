"""Batching and large arrays: the gains the seed's section 4.2 promises, measured.

Run ``python -m bench.bench_batching`` from the repository root (``--quick`` for a smoke
run). Measured side by side in one run, medians of repeated rounds (the two sides of each
pair alternate inside every round, so machine noise hits both alike):

* sync requests batched: ``proxy.send_requests([...])`` sends a batch of ADD_ONE requests
  in as few writes as fit and gathers every reply, against the same requests sent one by
  one with ``send_request`` (microseconds per request, replies read on both sides);
* a NumPy array handed to a child: ``write_array`` of a :class:`~childkit.ipc.SharedArray`
  and ``read_array`` in the child (it maps the pages and reads the first and last
  element), against ``multiprocessing.Pipe.send_bytes`` of the same array to a forked
  reader that makes it an array again (``np.frombuffer``); beside them, ``write_array`` of
  a plain ndarray (copied once into a new region) and the bare Ashmem hand-over of the
  same region without the array header. 1 GiB in the full run, 16 MiB with ``--quick``.

The child is an IPC-mode childkit child whose entry is this module (``on_connect`` and
``main_proc`` below). Nothing asserts a speed; the ratios are printed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

if __package__ in (None, ""):  # run as a file: make "bench" importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import childkit
from bench._module_main import module_main
from childkit.ipc import MessageOption, MessageParcel, RemoteProxy, RemoteStub

ENTRY = "bench.bench_batching"
ADD_ONE, ARRAY, ASHMEM = 1, 2, 3
MiB = 1024 * 1024


# ---------------------------------------------------------------------------- the child
class _BenchStub(RemoteStub):
    def __init__(self) -> None:
        super().__init__("childkit.bench.Batching")

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        if code == ADD_ONE:
            reply.write_int32(data.read_int32() + 1)
        elif code == ARRAY:
            from childkit.ipc import read_array

            with read_array(data) as got:
                arr = got.array
                reply.write_int64(arr.nbytes)
                reply.write_double(float(arr.flat[0]) + float(arr.flat[arr.size - 1]))
                del arr  # the view goes before the region is unmapped
        elif code == ASHMEM:
            with data.read_ashmem() as ash:
                ash.map_read_only()
                view = ash.buffer()
                reply.write_int64(len(view))
                reply.write_double(float(view[0] + view[len(view) - 1]))
                view.release()
        else:
            return 1909001
        return 0


def on_connect() -> RemoteStub:
    return _BenchStub()


def main_proc() -> None:
    threading.Event().wait()  # serves until the parent stops it


# ---------------------------------------------------------------------------- batching
def _one_by_one(proxy: RemoteProxy, requests: list[tuple[int, MessageParcel]]) -> float:
    send = proxy.send_request
    t = time.perf_counter()
    for code, data in requests:
        send(code, data).read_int32()
    return (time.perf_counter() - t) / len(requests)


def _batched(proxy: RemoteProxy, requests: list[tuple[int, MessageParcel]]) -> float:
    t = time.perf_counter()
    for r in proxy.send_requests(requests):
        r.read_int32()
    return (time.perf_counter() - t) / len(requests)


def batching(proxy: RemoteProxy, batch: int, rounds: int, reps: int) -> dict[str, float]:
    """Microseconds per request, batched and one by one (medians of ``reps``)."""
    data = MessageParcel()
    data.write_int32(41)
    requests = [(ADD_ONE, data)] * batch
    if [r.read_int32() for r in proxy.send_requests(requests)] != [42] * batch:
        raise RuntimeError("the batch got wrong replies")
    _one_by_one(proxy, requests)  # warm-up: work threads, busy-poll windows
    samples: dict[str, list[float]] = {"batched": [], "single": []}
    for rep in range(reps):
        order = ("batched", "single") if rep % 2 == 0 else ("single", "batched")
        for kind in order:
            run = _batched if kind == "batched" else _one_by_one
            samples[kind].append(statistics.median(run(proxy, requests)
                                                   for _ in range(rounds)))
    return {kind: statistics.median(v) * 1e6 for kind, v in samples.items()}


# ---------------------------------------------------------------------------- arrays
def _pipe_array_reader(conn: PipeEnd) -> None:
    import numpy as np

    while True:
        data = conn.recv_bytes()
        if not data:
            return
        arr = np.frombuffer(data, dtype=np.float64)
        conn.send((arr.nbytes, float(arr[0] + arr[-1])))


def _send(proxy: RemoteProxy, code: int, write: Any, arg: Any) -> tuple[int, float]:
    with MessageParcel() as data:
        write(data, arg)
        with proxy.send_request(code, data) as reply:
            return reply.read_int64(), reply.read_double()


def arrays(proxy: RemoteProxy, nbytes: int, reps: int) -> dict[str, float]:
    """Milliseconds to hand an ``nbytes`` float64 array to a child, per way (medians)."""
    import numpy as np

    from childkit.ipc import SharedArray, write_array

    count = nbytes // 8
    expect = (count * 8, 2.0)
    with SharedArray.create(count, "float64", "bench-array") as shared:
        shared.array[:] = 1.0  # the data exists before any hand-over is timed
        plain = np.ones(count, dtype=np.float64)
        ctx = mp.get_context("fork")
        parent_end, child_end = ctx.Pipe()
        reader = ctx.Process(target=_pipe_array_reader, args=(child_end,))
        reader.start()
        child_end.close()

        def shared_way() -> tuple[int, float]:
            return _send(proxy, ARRAY, write_array, shared)

        def plain_way() -> tuple[int, float]:
            return _send(proxy, ARRAY, write_array, plain)

        def ashmem_way() -> tuple[int, float]:
            return _send(proxy, ASHMEM, MessageParcel.write_ashmem, shared.ashmem)

        def pipe_way() -> tuple[int, float]:
            parent_end.send_bytes(shared.array)
            answer: tuple[int, float] = parent_end.recv()
            return answer

        ways = {"childkit write_array/read_array (SharedArray)": shared_way,
                "multiprocessing.Pipe send_bytes + np.frombuffer": pipe_way,
                "childkit write_array of a plain ndarray (copied once)": plain_way,
                "Ashmem hand-over of the same region (no array header)": ashmem_way}
        samples: dict[str, list[float]] = {name: [] for name in ways}
        raw = memoryview(shared.array).cast("B")  # the bare way's child reads bytes
        expects = dict.fromkeys(ways, expect)
        expects[list(ways)[3]] = (count * 8, float(raw[0] + raw[len(raw) - 1]))
        raw.release()
        try:
            _send(proxy, ARRAY, write_array, np.ones(4))  # warm-up: NumPy in the child
            for rep in range(reps):
                names = list(ways) if rep % 2 == 0 else list(reversed(ways))
                for name in names:
                    t = time.perf_counter()
                    got = ways[name]()
                    samples[name].append(time.perf_counter() - t)
                    if got != expects[name]:
                        raise RuntimeError(f"{name}: the child saw {got}, not {expects[name]}")
        finally:
            parent_end.send_bytes(b"")
            reader.join(60)
            parent_end.close()
    return {name: statistics.median(v) * 1e3 for name, v in samples.items()}


# ---------------------------------------------------------------------------- the run
def run(quick: bool = False) -> list[dict[str, Any]]:
    """The uniform rows of bench._suite: batched sync requests, the NumPy hand-over."""
    batch, rounds, reps = (64, 3, 3) if quick else (256, 10, 7)
    nbytes, array_reps = (16 * MiB, 3) if quick else (1024 * MiB, 5)
    with childkit.connect(ENTRY) as child:
        per_request = batching(child.proxy, batch, rounds, reps)
        hand_over = arrays(child.proxy, nbytes, array_reps)
    label = f"{nbytes // MiB} MiB" if nbytes < 1024 * MiB else f"{nbytes // (1024 * MiB)} GiB"
    key = "array_1g" if nbytes == 1024 * MiB else f"array_{nbytes // MiB}m"
    names = list(hand_over)
    return [
        {"key": "batched_sync",
         "metric": f"sync requests in batches of {batch} (send_requests, replies gathered)",
         "unit": "us", "better": "lower", "childkit": per_request["batched"],
         "peers": {"the same requests one by one (send_request)": per_request["single"]},
         "bare": {}, "goal": "faster than one by one", "source": "bench_batching"},
        {"key": key, "metric": f"NumPy {label} float64 array hand-over (write_array)",
         "unit": "ms", "better": "lower", "childkit": hand_over[names[0]],
         "peers": {names[1]: hand_over[names[1]], names[2]: hand_over[names[2]]},
         "bare": {names[3]: hand_over[names[3]]},
         "goal": "1 GiB in milliseconds; >= 100x faster than Pipe",
         "source": "bench_batching"},
    ]


def _print(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"\n{r['metric']} ({r['unit']}, {r['better']} is better; medians)")
        print(f"  {'childkit':<60} {r['childkit']:>12.3f}")
        for kind in ("peers", "bare"):
            for name, value in r[kind].items():
                ratio = value / r["childkit"] if r["childkit"] > 0 else float("nan")
                print(f"  {name:<60} {value:>12.3f}   {ratio:.2f}x childkit's")
        print(f"  goal: {r['goal']}")


def main() -> None:
    module_main(__doc__, run, _print, "small sizes, few repeats")


if __name__ == "__main__":
    # The child imports its entry by the module's name: run the importable module's
    # main, not this __main__ copy.
    from bench import bench_batching

    bench_batching.main()
