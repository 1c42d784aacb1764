"""Start cost of an ISOLATED child beside a NORMAL one, in one run.

Measures, for both start modes, the time from the start call to a usable child (args
mode: the child's first write on a pipe; IPC mode: a proxy that answered one call),
interleaving NORMAL and ISOLATED samples so load hits both alike, and prints medians and
the ratio (the goal: ISOLATED at most 3x NORMAL). Run ``python -m bench.bench_isolated``.

Both contenders start the same way, and as ``bench_start`` starts its children: the entry
module is preloaded in the launcher (without that, every child imports, and with
``PYTHONDONTWRITEBYTECODE`` compiles, this module: several ms that would inflate the
NORMAL baseline and flatter the ratio), and every sample waits until the previous child
was reaped (its exit callback ran), so that no sample pays for the teardown of the one
before (an isolated child ends three processes and five namespaces).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import childkit
from childkit import ChildExitInfo, ChildProcessArgs, ChildProcessOptions, IsolationMode
from childkit.ipc import MessageOption, MessageParcel, RemoteStub

ENTRY_MODULE = "bench.bench_isolated"
ISOLATED = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
_EXIT_TIMEOUT_S = 30.0


class _Echo(RemoteStub):
    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        reply.write_int32(data.read_int32() + 1)
        return 0


def on_connect() -> RemoteStub:
    return _Echo()


def main_proc() -> None:
    threading.Event().wait()  # until the parent stops it


def touch(args: ChildProcessArgs) -> int:
    os.write(args.fds["out"], b"x")
    return 0


class _Exits:
    """The exit callback: lets a sample wait until its child has been reaped."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: set[int] = set()
        childkit.register_child_process_exit_callback(self)

    def __call__(self, pid: int, info: ChildExitInfo) -> None:
        with self._cond:
            self._done.add(pid)
            self._cond.notify_all()

    def wait(self, pid: int) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: pid in self._done, _EXIT_TIMEOUT_S):
                raise RuntimeError(f"child {pid} did not exit")
            self._done.discard(pid)


def args_start(exits: _Exits, options: ChildProcessOptions | None) -> float:
    r, w = os.pipe()
    try:
        t = time.perf_counter()
        pid = childkit.start_native_child_process(f"{ENTRY_MODULE}:touch",
                                                  ChildProcessArgs("", {"out": w}), options)
        os.read(r, 1)
        elapsed = time.perf_counter() - t
    finally:
        os.close(r)
        os.close(w)
    exits.wait(pid)  # the next sample starts on a quiet machine
    return elapsed


def ipc_start(exits: _Exits, options: ChildProcessOptions | None) -> float:
    t = time.perf_counter()
    with childkit.connect(ENTRY_MODULE, options=options) as child:
        with MessageParcel() as data:
            data.write_int32(1)
            child.proxy.send_request(1, data).close()
        elapsed = time.perf_counter() - t
    exits.wait(child.pid)  # close() waited for the exit; this also waits for the callback
    return elapsed


def run(quick: bool = False) -> list[dict[str, object]]:
    """Rows of (metric, childkit isolated, peer = childkit normal, ratio)."""
    rounds = 3 if quick else int(os.environ.get("CHILDKIT_BENCH_ROUNDS", "21"))
    childkit.set_preload_modules([ENTRY_MODULE])  # as bench_start: no import in the child
    childkit.prestart_launcher()
    exits = _Exits()
    for _ in range(2):  # warm-up; the first isolated start also probes the machine once
        args_start(exits, ISOLATED)
        args_start(exits, None)
    rows: list[dict[str, object]] = []
    for name, fn in (("args-mode start to first write (ms)", args_start),
                     ("IPC-mode start to first reply (ms)", ipc_start)):
        normal, isolated = [], []
        for _ in range(rounds):
            normal.append(fn(exits, None))
            isolated.append(fn(exits, ISOLATED))
        n, i = statistics.median(normal) * 1e3, statistics.median(isolated) * 1e3
        # The fastest samples too: on a loaded machine the median measures the load as
        # much as the start (an isolated start wakes three more processes than a normal
        # one); the minimum is what each start costs when nothing gets in its way.
        n_min, i_min = min(normal) * 1e3, min(isolated) * 1e3
        rows.append({"metric": name, "childkit": i, "peer": "childkit NORMAL child",
                     "peer_value": n, "ratio": i / n, "goal": "<= 3x",
                     "childkit_min": i_min, "peer_min": n_min, "ratio_min": i_min / n_min})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    for row in run(parser.parse_args().quick):
        print(f"{row['metric']:40s} isolated {row['childkit']:7.2f}  normal "
              f"{row['peer_value']:7.2f}  ratio {row['ratio']:.2f}x  (goal {row['goal']}); "
              f"fastest: isolated {row['childkit_min']:.2f}  normal {row['peer_min']:.2f}  "
              f"ratio {row['ratio_min']:.2f}x")


if __name__ == "__main__":
    main()
