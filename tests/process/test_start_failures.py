"""A start that fails at any step gives its child slot back and raises a documented code
(issue 13: slots leaked when a start failed late; out-of-fd errors escaped as OSError).

Each step of a start is made to fail more times than there are slots
(:data:`childkit.MAX_CHILDREN`): one slot kept by a failure would show as
``NCP_ERR_MAX_CHILD_PROCESSES_REACHED`` before the loop ends, and a start afterwards
must still succeed.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator

import pytest

import childkit
from child_helpers import no_child_leaks, wait_until
from childkit import MAX_CHILDREN, ChildkitError, ChildProcessArgs, ErrCode
from childkit.ipc import Connection, MessageParcel
from childkit.process import _children, manager
from workers import echo_worker as ew

TRIES = MAX_CHILDREN + 5


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield


def _no_slot_kept() -> None:
    assert wait_until(lambda: manager().live_count() == 0), manager().live_count()
    with childkit.connect("workers.echo_worker") as child, MessageParcel() as data:
        data.write_int32(41)
        assert child.proxy.send_request(ew.ADD_ONE, data).read_int32() == 42


def _emfile(*args: object, **kwargs: object) -> object:
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))


def _fails_with(code: ErrCode, start: Callable[[], object]) -> ChildkitError:
    with pytest.raises(ChildkitError) as info:
        start()
    assert info.value.code == code, info.value
    return info.value


def _connect() -> object:
    return childkit.connect("workers.echo_worker")


def _start_args() -> object:
    return childkit.start_native_child_process("workers.args_entries:block",
                                               ChildProcessArgs("", {}))


def test_no_socket_pairs_for_the_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_children, "channel_socketpairs", _emfile)
    for _ in range(TRIES):
        err = _fails_with(ErrCode.NCP_ERR_INTERNAL, _connect)
        assert "open files" in str(err) and "RLIMIT_NOFILE" in str(err)
    monkeypatch.undo()
    _no_slot_kept()


def test_no_socket_pairs_reaches_the_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_children, "channel_socketpairs", _emfile)
    codes: list[ErrCode] = []
    called = threading.Semaphore(0)

    def on_started(code: ErrCode, proxy: object) -> None:
        codes.append(code)
        called.release()

    for _ in range(TRIES):
        childkit.create_native_child_process("workers.echo_worker", on_started)
        assert called.acquire(timeout=30)
    assert codes == [ErrCode.NCP_ERR_INTERNAL] * TRIES
    monkeypatch.undo()
    _no_slot_kept()


@pytest.mark.parametrize("start", [_connect, _start_args], ids=["ipc", "args"])
def test_no_status_pipe(monkeypatch: pytest.MonkeyPatch, start: Callable[[], object]) -> None:
    manager().ensure_launcher()
    real_pipe2 = os.pipe2
    me = threading.get_ident()

    def pipe2(flags: int) -> tuple[int, int]:  # fails for this thread's starts only
        if threading.get_ident() == me:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_pipe2(flags)

    monkeypatch.setattr(os, "pipe2", pipe2)
    for _ in range(TRIES):
        _fails_with(ErrCode.NCP_ERR_INTERNAL, start)
    monkeypatch.undo()
    _no_slot_kept()


@pytest.mark.parametrize("start", [_connect, _start_args], ids=["ipc", "args"])
def test_the_launchers_answer_comes_too_late(start: Callable[[], object]) -> None:
    manager().ensure_launcher()
    for _ in range(TRIES):
        try:
            if start is _connect:
                childkit.connect("workers.echo_worker", timeout=1e-4)
            else:
                childkit.start_native_child_process(
                    "workers.args_entries:block", ChildProcessArgs("", {}), timeout=1e-4)
        except ChildkitError as exc:
            assert exc.code == ErrCode.NCP_ERR_TIMEOUT, exc
        else:  # pragma: no cover - a 0.1 ms start: not on this machine
            pytest.fail("a start finished within 0.1 ms")
    _no_slot_kept()  # the children forked after their starts gave up were killed


def test_the_childs_status_reports_a_failure() -> None:
    for _ in range(TRIES):
        _fails_with(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                    lambda: childkit.connect("workers.no_such_module_here"))
    _no_slot_kept()


def test_the_child_never_greets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Connection, "wait_peer_hello", lambda self, timeout: False)
    for _ in range(TRIES):
        _fails_with(ErrCode.NCP_ERR_CONNECTION_FAILED, _connect)
    monkeypatch.undo()
    _no_slot_kept()


_AT_THE_FD_LIMIT = textwrap.dedent("""
    import json, os, resource, sys
    import childkit
    from childkit import ChildkitError, ChildProcessArgs
    from childkit.process import manager

    childkit.prestart_launcher()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (held, hard))  # no fd more
    seen = []
    for start in ("ipc", "args") * 40:
        try:
            if start == "ipc":
                childkit.connect("workers.echo_worker")
            else:
                childkit.start_native_child_process("workers.args_entries:block",
                                                    ChildProcessArgs("", {}))
            seen.append("started")
        except ChildkitError as exc:
            seen.append(exc.code.name + (" names the limit" if "RLIMIT_NOFILE" in str(exc)
                                         else " " + str(exc)))
        except BaseException as exc:
            seen.append(type(exc).__name__ + ": " + str(exc))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with childkit.connect("workers.echo_worker") as child:
        pass
    print(json.dumps({"seen": sorted(set(seen)), "live": manager().live_count()}))
""")


def test_eighty_starts_at_the_fd_limit_raise_codes_and_keep_no_slot() -> None:
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", _AT_THE_FD_LIMIT], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"seen": ["NCP_ERR_INTERNAL names the limit"], "live": 0}, result
