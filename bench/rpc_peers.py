"""RPC peers for the round-trip benchmark: Pyro5 and RPyC, each serving ``add_one`` from
another process over a Unix socket (the transport childkit uses), plus loky.

``python -m bench.rpc_peers pyro|rpyc SOCKET_PATH`` runs a server (the benchmark starts it
with :class:`RpcServer`); it prints ``ready`` once it accepts calls and exits when its
stdin closes. The client side measures seconds per ``add_one`` round trip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from types import TracebackType

KINDS = ("pyro", "rpyc")


class Adder:
    """The served object: the same work as childkit's ADD_ONE stub."""

    def add_one(self, x: int) -> int:
        return x + 1


def add_one(x: int) -> int:
    """A module-level function for executors (loky pickles it by reference)."""
    return x + 1


# ---------------------------------------------------------------------------- servers
def _serve_pyro(path: str) -> None:
    import Pyro5.api

    expose = Pyro5.api.expose(Adder)
    daemon = Pyro5.api.Daemon(unixsocket=path)
    daemon.register(expose(), objectId="adder")
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    _ready_then_wait()
    daemon.shutdown()


def _serve_rpyc(path: str) -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class AdderService(rpyc.Service):  # type: ignore[misc]
        def exposed_add_one(self, x: int) -> int:
            return x + 1

    server = ThreadedServer(AdderService, socket_path=path,
                            protocol_config={"allow_public_attrs": False})
    threading.Thread(target=server.start, daemon=True).start()
    deadline = time.monotonic() + 30
    while not os.path.exists(path):  # start() binds in the thread: wait for the socket
        if time.monotonic() > deadline:
            raise SystemExit("rpyc server did not bind its socket within 30 s")
        time.sleep(0.01)
    _ready_then_wait()
    server.close()


def _ready_then_wait() -> None:
    print("ready", flush=True)
    sys.stdin.read()  # the parent closes our stdin to stop us


# ---------------------------------------------------------------------------- client side
class RpcServer:
    """One server process of ``kind``; :meth:`rtt` measures it. Use as a context manager."""

    def __init__(self, kind: str, timeout: float = 30.0) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind = kind
        self._dir = tempfile.TemporaryDirectory(prefix="childkit-bench-")
        self.path = os.path.join(self._dir.name, kind + ".sock")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.rpc_peers", kind, self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
        assert self._proc.stdout is not None
        line = _readline_within(self._proc.stdout, timeout)
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"{kind} server did not start (said {line!r})")
        self._client: Callable[[int], float]
        self._closer: Callable[[], None]
        if kind == "pyro":
            import Pyro5.api

            proxy = Pyro5.api.Proxy(f"PYRO:adder@./u:{self.path}")
            proxy._pyroBind()

            def pyro_calls(n: int) -> float:
                t = time.perf_counter()
                for i in range(n):
                    proxy.add_one(i)
                return (time.perf_counter() - t) / n

            self._client, self._closer = pyro_calls, proxy._pyroRelease
        else:
            import rpyc

            conn = rpyc.utils.factory.unix_connect(self.path)

            def rpyc_calls(n: int) -> float:
                add = conn.root.add_one
                t = time.perf_counter()
                for i in range(n):
                    add(i)
                return (time.perf_counter() - t) / n

            self._client, self._closer = rpyc_calls, conn.close

    def rtt(self, n: int) -> float:
        """Seconds per round trip, over ``n`` sequential calls."""
        return self._client(n)

    def close(self) -> None:
        closer = getattr(self, "_closer", None)
        if closer is not None:
            closer()
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._dir.cleanup()

    def __enter__(self) -> RpcServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _readline_within(stream: object, timeout: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()),  # type: ignore[attr-defined]
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def loky_rtt(n: int) -> tuple[float, Callable[[], None]]:
    """Seconds per submit->result on a one-worker loky executor (and its shutdown)."""
    from loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=1)
    executor.submit(add_one, 0).result()  # the worker is up
    t = time.perf_counter()
    for i in range(n):
        executor.submit(add_one, i).result()
    return (time.perf_counter() - t) / n, lambda: executor.shutdown(wait=True)


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    {"pyro": _serve_pyro, "rpyc": _serve_rpyc}[kind](path)


if __name__ == "__main__":
    main()
