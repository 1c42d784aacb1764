"""Start cost of an ISOLATED child beside a NORMAL one, in one run.

Measures, for both start modes, the time from the start call to a usable child (args
mode: the child's first write on a pipe; IPC mode: a proxy that answered one call),
interleaving NORMAL and ISOLATED samples so load hits both alike, and prints medians and
the ratio (the goal: ISOLATED at most 3x NORMAL). Run ``python -m bench.bench_isolated``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import childkit
from childkit import ChildProcessArgs, ChildProcessOptions, IsolationMode
from childkit.ipc import MessageOption, MessageParcel, RemoteStub

ISOLATED = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)


class _Echo(RemoteStub):
    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        reply.write_int32(data.read_int32() + 1)
        return 0


def on_connect() -> RemoteStub:
    return _Echo()


def main_proc() -> None:
    import threading

    threading.Event().wait()  # until the parent stops it


def touch(args: ChildProcessArgs) -> int:
    os.write(args.fds["out"], b"x")
    return 0


def args_start(options: ChildProcessOptions | None) -> float:
    r, w = os.pipe()
    try:
        t = time.perf_counter()
        childkit.start_native_child_process("bench.bench_isolated:touch",
                                            ChildProcessArgs("", {"out": w}), options)
        os.read(r, 1)
        return time.perf_counter() - t
    finally:
        os.close(r)
        os.close(w)


def ipc_start(options: ChildProcessOptions | None) -> float:
    t = time.perf_counter()
    with childkit.connect("bench.bench_isolated", options=options) as child:
        with MessageParcel() as data:
            data.write_int32(1)
            child.proxy.send_request(1, data).close()
        elapsed = time.perf_counter() - t
    return elapsed


def run(quick: bool = False) -> list[dict[str, object]]:
    """Rows of (metric, childkit isolated, peer = childkit normal, ratio)."""
    rounds = 3 if quick else 15
    childkit.prestart_launcher()
    args_start(ISOLATED)  # the first isolated start probes the machine's layers once
    rows: list[dict[str, object]] = []
    for name, fn in (("args-mode start to first write (ms)", args_start),
                     ("IPC-mode start to first reply (ms)", ipc_start)):
        normal, isolated = [], []
        for _ in range(rounds):
            normal.append(fn(None))
            isolated.append(fn(ISOLATED))
        n, i = statistics.median(normal) * 1e3, statistics.median(isolated) * 1e3
        rows.append({"metric": name, "childkit": i, "peer": "childkit NORMAL child",
                     "peer_value": n, "ratio": i / n, "goal": "<= 3x"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    for row in run(parser.parse_args().quick):
        print(f"{row['metric']:40s} isolated {row['childkit']:7.2f}  normal "
              f"{row['peer_value']:7.2f}  ratio {row['ratio']:.2f}x  (goal {row['goal']})")


if __name__ == "__main__":
    main()
