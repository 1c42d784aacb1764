"""childkit.shutdown(): once executors are shut down and no child lives, the launcher and
the childkit-manager, childkit-exit and ipc-work-* threads end (CPython's test runner
would flag them as dangling); refused with NCP_ERR_BUSY while a child lives; the next
start begins again. Run in a fresh interpreter: this test process shares its launcher."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import childkit
from childkit import ChildkitError, ErrCode

SCRIPT = textwrap.dedent('''
    import os, threading, childkit
    from childkit import ChildProcessExecutor, ErrCode

    def ours():
        return sorted(t.name for t in threading.enumerate()
                      if t.name.startswith(("childkit-", "ipc-work-")))

    def gone(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[1].split()[0] == "Z"  # a zombie: not reaped
        except FileNotFoundError:
            return True

    launcher = childkit.prestart_launcher()
    exited = threading.Event()
    childkit.register_child_process_exit_callback(lambda pid, info: exited.set())
    with ChildProcessExecutor(2) as ex:
        assert ex.submit(pow, 2, 5).result(timeout=60) == 32
        try:
            childkit.shutdown()
        except childkit.ChildkitError as exc:
            print("busy", exc.code.name)
        assert ex.submit(pow, 2, 6).result(timeout=60) == 64  # nothing was stopped
    assert exited.wait(60)  # the workers' exits were reported
    print("before", " ".join(ours()))
    childkit.shutdown()
    print("after", " ".join(ours()) or "-")
    print("launcher gone", not os.path.exists(f"/proc/{launcher}") or gone(launcher))
    with ChildProcessExecutor(1) as ex:  # starts again from scratch
        print("again", ex.submit(pow, 3, 3).result(timeout=60))
    childkit.shutdown()
    childkit.shutdown()  # idempotent
    print("end", " ".join(ours()) or "-")
''')


def test_shutdown_ends_childkits_threads_and_launcher_once_unused() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "busy NCP_ERR_BUSY"
    before = lines[1].split()[1:]
    assert {"childkit-exit", "childkit-manager"} <= set(before)
    assert any(name.startswith("ipc-work-") for name in before)
    assert lines[2:] == ["after -", "launcher gone True", "again 27", "end -"]


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "1", True])
def test_shutdown_refuses_a_bad_timeout(timeout: object) -> None:
    with pytest.raises(ChildkitError) as info:
        childkit.shutdown(timeout)  # type: ignore[arg-type]
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
