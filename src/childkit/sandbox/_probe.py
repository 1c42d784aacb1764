"""Which layers this machine supports: found by trying them in a throw-away child."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

from childkit.sandbox._config import LAYERS, LayerStatus, ResourceLimits, SandboxConfig

_PROBE_TIMEOUT_S = 30.0
_PROBE_CPU_S = 3600


def probe() -> dict[str, LayerStatus]:
    """Each sandbox layer and whether :func:`childkit.sandbox.enter` can apply it here.

    A forked child enters a sandbox with ``allow_reduced=True`` (and ``isolation_uid``
    when this process is root) and reports which layers held; nothing in this process
    changes. The result is as true as the attempt itself, not a guess from versions.
    """
    from childkit.sandbox._enter import enter, layer_report

    read_fd, write_fd = os.pipe()
    # A CPU limit too, so that the report says how every limit is held.
    config = SandboxConfig(allow_reduced=True, isolation_uid=os.geteuid() == 0,
                           limits=ResourceLimits(cpu_seconds=_PROBE_CPU_S))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the probe child
        code = 0
        try:
            os.close(read_fd)
            enter(config, keep_fds=[write_fd])
            payload = {k: [v.supported, v.reason] for k, v in layer_report().items()}
            os.write(write_fd, json.dumps(payload).encode())
        except BaseException as exc:
            code = 1
            try:
                os.write(write_fd, json.dumps({"error": str(exc)}).encode())
            except BaseException:
                pass
        os._exit(code)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    try:
        while True:
            ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:  # a hung probe must not hang the caller
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    try:
        payload = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        payload = {}
    if "error" in payload or not payload:
        why = payload.get("error") or f"probe child ended with wait status {status}"
        return {layer: LayerStatus(False, f"probe failed: {why}") for layer in LAYERS}
    payload["clean_template"] = list(_clean_template())
    result: dict[str, LayerStatus] = {}
    for layer in LAYERS:
        supported, reason = payload.get(layer, [False, "not reached by the probe"])
        if layer == "isolation_uid" and os.geteuid() != 0 and layer not in payload:
            supported, reason = False, "needs root (CAP_SETUID)"
        result[layer] = LayerStatus(bool(supported), str(reason))
    return result


#: What the clean template's check runs: an interpreter started as the launcher starts
#: the isolated template (``python -I``, empty environment), reporting its environment
#: (the locale coercion may add LC_CTYPE, nothing of the caller's).
_CLEAN_CHECK = "import os, sys; sys.stdout.write(' '.join(sorted(os.environ)))"
_CLEAN_ALLOWED = frozenset({"LC_CTYPE"})


def _clean_template() -> tuple[bool, str]:
    """Whether a clean isolated template can be started here (childkit.launcher._isolated
    forks every isolated child from one): a fresh interpreter with an empty environment
    that inherits nothing of this process."""
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _CLEAN_CHECK], env={}, cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"cannot start {sys.executable} -I: {exc}"
    names = set(done.stdout.decode(errors="replace").split())
    if done.returncode != 0 or not names <= _CLEAN_ALLOWED:
        return False, (f"{sys.executable} -I with an empty environment exited with "
                       f"{done.returncode} and variables {sorted(names)}")
    return True, ("applied: isolated children are forked from a fresh interpreter with an "
                  "empty environment that gets no request, only fork orders")
