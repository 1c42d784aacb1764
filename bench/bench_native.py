"""The C kit (childkit.native) side by side with its bare limit and with Python.

Rows (``python -m bench`` or ``python -m bench.bench_native [--quick]``):

* C parent to C child sync round trip (libipc_capi.so) beside the bare C SOCK_SEQPACKET
  ping-pong (bench/native_c.c; goal: at most 1.2x), and beside the same ping-pong reading
  with recvmsg and room for fds, as the wire format requires (the protocol's own floor);
* Python parent to the seed's C child (a C stub) beside Python parent to Python child
  (goal: no slower);
* one-way requests C to C beside multiprocessing.Queue (goal: at least 5x);
* a parcel write+read of a 200 KB string and a 200 KB buffer, C beside Python.

Needs gcc and the built kit; without them the module says so and measures nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED_CHILD = HERE.parent / "tests" / "native" / "seed_child.c"
PARCEL_BYTES = 200 * 1000


class _Built:
    """bench/native_c.c and the seed's C child library, compiled into a temp dir."""

    def __init__(self) -> None:
        from childkit import native

        gcc = shutil.which("gcc")
        if gcc is None:
            raise RuntimeError("no gcc on PATH")
        for name in native.LIBRARIES:
            native.require_library(name)
        flags = subprocess.run([sys.executable, "-m", "childkit.native", "--cflags", "--libs"],
                               capture_output=True, text=True, check=True).stdout.split()
        self._dir = tempfile.TemporaryDirectory(prefix="childkit-native-bench-")
        self.exe = os.path.join(self._dir.name, "native_c")
        self.child = os.path.join(self._dir.name, "libbenchchild.so")
        subprocess.run([gcc, "-O2", "-o", self.exe, str(HERE / "native_c.c"), *flags,
                        "-lpthread"], check=True)
        subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", self.child, str(SEED_CHILD),
                        *flags, "-lpthread"], check=True)

    def run(self, *args: object) -> float:
        done = subprocess.run([self.exe, *map(str, args)], capture_output=True, text=True,
                              timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"native_c {args}: {done.stderr.strip()}")
        return float(done.stdout)


def _turns(repeats: int, first: Callable[[], float],
           second: Callable[[], float]) -> tuple[list[float], list[float]]:
    """Two measurements taken in turns, so a loaded machine's changing load falls on both
    alike (the ratio of the two is what a row compares)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return a, b


def _paired(repeats: int, first: Callable[[], float],
            second: Callable[[], float]) -> tuple[float, float]:
    """The medians of _turns."""
    a, b = _turns(repeats, first, second)
    return statistics.median(a), statistics.median(b)


def _ratios(a: list[float], b: list[float], lower: bool) -> dict[str, float]:
    """The ratio a/b of each turn: its median, lowest and highest, how many turns, and the
    ratio of the two sides' best turns (lowest times, or with lower false highest rates). A
    turn's two runs follow each other, so their ratio is what the load disturbs least; the
    best turns are what the machine gives unloaded."""
    r = [x / y for x, y in zip(a, b, strict=True)]
    best = min(a) / min(b) if lower else max(a) / max(b)
    return {"median": statistics.median(r), "low": min(r), "high": max(r), "turns": len(r),
            "best": best}


def _python_rtt_us(entry: str, rounds: int) -> float:
    """Python parent: microseconds per ADD_ONE round trip to ``entry``'s root."""
    import childkit
    from childkit.ipc import MessageParcel

    with childkit.connect(entry) as child:
        proxy = child.proxy

        def one(i: int) -> None:
            with MessageParcel() as data:
                data.write_int32(i)
                proxy.send_request(1, data).close()

        for i in range(200):
            one(i)
        t = time.perf_counter()
        for i in range(rounds):
            one(i)
        return (time.perf_counter() - t) / rounds * 1e6


def _queue_consumer(q: Any, n: int, done: Any) -> None:
    for _ in range(n):
        q.get()
    done.set()


def _mp_queue_rate(n: int) -> float:
    """multiprocessing.Queue: messages per second, put by this process, got by another."""
    ctx = mp.get_context("fork")
    q, done = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=_queue_consumer, args=(q, n, done))
    p.start()
    t = time.perf_counter()
    for i in range(n):
        q.put(i)
    done.wait()
    secs = time.perf_counter() - t
    p.join()
    return n / secs


def _python_parcel_us(rounds: int) -> float:
    from childkit.ipc import MessageParcel

    text, blob = "x" * PARCEL_BYTES, b"x" * PARCEL_BYTES
    t = time.perf_counter()
    for _ in range(rounds):
        with MessageParcel() as p, MessageParcel() as q:
            p.write_string(text)
            q.write_bytes(blob)
            p.read_string()
            q.read_bytes()
    return (time.perf_counter() - t) / rounds * 1e6


def run(quick: bool = False) -> list[dict[str, object]]:
    reps = 1 if quick else 3
    built = _Built()
    py_worker = "bench_native_py_worker"
    sys.path.insert(0, str(HERE))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE),
                                                              os.environ.get("PYTHONPATH")]))
    rows: list[dict[str, object]] = []
    # 41 alternated turns of 5,000 round trips each (a tenth of a second per pair): the
    # 1.2x goal is a ratio of two small numbers, and a loaded machine moves both by more
    # than that from one second to the next
    rtt_turns, rtt_rounds = (3, 2000) if quick else (41, 5000)
    c_ns, bare_ns, msg_ns = [], [], []
    for _ in range(rtt_turns):  # the kit, its bare limit, and the protocol's own floor
        c_ns.append(built.run("rtt", rtt_rounds))
        bare_ns.append(built.run("seqpacket", rtt_rounds))
        msg_ns.append(built.run("seqpacket-msg", rtt_rounds))
    rows.append({"key": "native_rtt", "metric": "sync round trip, C parent to C child",
                 "unit": "us", "better": "lower", "childkit": statistics.median(c_ns) / 1e3,
                 "peers": {},
                 "bare": {"C SOCK_SEQPACKET ping-pong": statistics.median(bare_ns) / 1e3,
                          "the same, recvmsg with fd room (protocol floor)":
                              statistics.median(msg_ns) / 1e3},
                 "ratio": _ratios(c_ns, bare_ns, lower=True),
                 "ratio_recvmsg": _ratios(msg_ns, bare_ns, lower=True),
                 "goal": "<= 1.2x bare", "source": "bench_native"})
    py_rounds = 500 if quick else 5000
    to_c, to_py = _paired(reps, lambda: _python_rtt_us(built.child, py_rounds),
                          lambda: _python_rtt_us(py_worker, py_rounds))
    rows.append({"key": "native_py_to_c", "metric": "sync round trip, Python parent to C stub",
                 "unit": "us", "better": "lower", "childkit": to_c,
                 "peers": {"Python parent to Python stub (childkit)": to_py}, "bare": {},
                 "goal": "no slower than Python to Python", "source": "bench_native"})
    # alternated turns: 200,000 requests C to C, 50,000 messages through the Queue (each
    # about a quarter of a second)
    n, ow_turns = (20000, 1) if quick else (200000, 7)
    oneway, queue = _turns(ow_turns, lambda: built.run("oneway", n),
                           lambda: _mp_queue_rate(n // 4))
    rows.append({"key": "native_oneway", "metric": "one-way requests, C to C", "unit": "msg/s",
                 "better": "higher", "childkit": statistics.median(oneway),
                 "peers": {"multiprocessing.Queue put/get": statistics.median(queue)},
                 "bare": {}, "ratio": _ratios(oneway, queue, lower=False),
                 "goal": ">= 5x multiprocessing.Queue", "source": "bench_native"})
    p_rounds = 50 if quick else 1000
    c_parcel, py_parcel = _paired(reps, lambda: built.run("parcel", PARCEL_BYTES, p_rounds),
                                  lambda: _python_parcel_us(p_rounds))
    rows.append({"key": "native_parcel", "metric": "parcel write+read, 200 KB string and buffer",
                 "unit": "us", "better": "lower", "childkit": c_parcel,
                 "peers": {"Python MessageParcel": py_parcel}, "bare": {}, "goal": "",
                 "source": "bench_native"})
    return rows


def _show(rows: list[dict[str, object]]) -> None:
    for r in rows:
        others: dict[str, float] = {**r["peers"], **r["bare"]}  # type: ignore[dict-item]
        extra = "; ".join(f"{k}: {v:.1f}" for k, v in others.items())
        print(f"{r['metric']}: {r['childkit']:.1f} {r['unit']}  ({extra})  goal {r['goal']}")
        for key, what in (("ratio", "ratio per turn"),
                          ("ratio_recvmsg", "the recvmsg floor's ratio to bare")):
            if key in r:
                q: dict[str, float] = r[key]  # type: ignore[assignment]
                print(f"    {what}: median {q['median']:.2f}x, {q['low']:.2f}x to "
                      f"{q['high']:.2f}x over {int(q['turns'])} alternated turns; best turns "
                      f"{q['best']:.2f}x")


if __name__ == "__main__":
    from bench._module_main import module_main

    module_main(__doc__, run, _show, "fewer rounds, one repeat")
