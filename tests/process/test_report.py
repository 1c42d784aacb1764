"""process/_report: a child's start-up report is one bounded frame, read as soon as it is
whole, with the child's own exit watched (red team: a child that forked while starting
held the parent to the full timeout; bytes an entry wrote to the status pipe raised
RecursionError or took the parent to GiBs of memory).

First :func:`read_report` on its own (pipes, and a process of our own for the pidfd), then
starts through the public calls with ``workers.status_writer``, whose own code writes
to, closes or forks with the status pipe while it starts.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import childkit
from child_helpers import exit_recorder, no_child_leaks
from childkit import ChildkitError, ChildProcessArgs, ChildProcessOptions, ErrCode, IsolationMode
from childkit.ipc import MessageParcel, RemoteProxy
from childkit.launcher import _protocol as proto
from childkit.process import _manager, _report
from childkit.process._child import ChildStartFailed
from childkit.process._report import NoReport, read_report

WORKER_FILE = Path(__file__).resolve().parents[1] / "workers" / "status_writer.py"


def _framed(body: bytes, size: int | None = None) -> bytes:
    return proto.STATUS_MAGIC + (len(body) if size is None else size).to_bytes(4, "big") + body


@pytest.fixture()
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture()
def process() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A live process of our own and a pidfd of it: it exits when its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    pidfd = os.pidfd_open(proc.pid)
    yield proc, pidfd
    os.close(pidfd)
    proc.kill()
    proc.wait()
    assert proc.stdin is not None
    proc.stdin.close()


def _end(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()


def _unread(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


def _no_report(status_r: int, pidfd: int, deadline: float) -> NoReport:
    with pytest.raises(NoReport) as info:
        read_report(status_r, pidfd, deadline)
    return info.value


# ------------------------------------------------------------------ read_report itself


def test_a_whole_report_counts_while_the_pipe_stays_open(pipe: tuple[int, int],
                                                         process: tuple[object, int]) -> None:
    r, w = pipe  # ``w`` stays open: as held by a grandchild
    os.write(w, proto.status_error(ErrCode.NCP_ERR_LIB_LOADING_FAILED, "no module"))
    assert read_report(r, process[1], time.monotonic() + 60) == (16010007, "no module")
    os.write(w, proto.status_ok())
    assert read_report(r, process[1], time.monotonic() + 60) == (0, "")


def test_a_report_in_pieces_is_put_together(pipe: tuple[int, int],
                                            process: tuple[object, int]) -> None:
    r, w = pipe
    report = proto.status_error(ErrCode.NCP_ERR_INTERNAL, "x" * 5000)

    def write_slowly() -> None:
        for i in range(0, len(report), 3):  # the head split too
            os.write(w, report[i:i + 3])

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        code, message = read_report(r, process[1], time.monotonic() + 60)
    finally:
        writer.join()
    assert code == ErrCode.NCP_ERR_INTERNAL and message == "x" * 4000 + "..."


def test_a_report_written_before_the_child_exited_is_read(pipe: tuple[int, int],
                                                          process: tuple[object, int]) -> None:
    r, w = pipe
    os.write(w, proto.status_error(ErrCode.NCP_ERR_CONNECTION_FAILED, "raised"))
    _end(process[0])  # type: ignore[arg-type]
    assert read_report(r, process[1], time.monotonic() + 60) == (16010008, "raised")
    os.write(w, proto.status_ok())
    assert read_report(r, -1, time.monotonic() + 60) == (0, "")  # reaped already
    os.write(w, proto.status_ok())
    assert read_report(r, -1, time.monotonic() - 1) == (0, "")  # a whole one beats the clock


@pytest.mark.parametrize("written", [b"", proto.STATUS_MAGIC, proto.status_ok()[:-1]])
def test_a_child_that_exits_before_its_report_is_whole_died(
        pipe: tuple[int, int], process: tuple[object, int], written: bytes) -> None:
    r, w = pipe  # still open: nothing but the exit ends the wait
    os.write(w, written)
    _end(process[0])  # type: ignore[arg-type]
    err = _no_report(r, process[1], time.monotonic() + 60)
    assert err.why == "died"
    assert err.detail == ("before reporting" if not written
                          else f"{len(written)} bytes into its report")
    assert _no_report(r, -1, time.monotonic() + 60).why == "died"


def test_end_of_file_then_an_exit_is_a_death(pipe: tuple[int, int],
                                             process: tuple[object, int],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report, "EOF_GRACE_S", 60.0)
    r, w = pipe
    os.close(w)
    ender = threading.Timer(0.2, _end, (process[0],))
    ender.start()
    try:
        assert _no_report(r, process[1], time.monotonic() + 120).why == "died"
    finally:
        ender.join()


def test_end_of_file_from_a_live_child_is_a_closed_pipe(pipe: tuple[int, int],
                                                        process: tuple[object, int],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_report, "EOF_GRACE_S", 0.05)
    r, w = pipe
    os.write(w, proto.STATUS_MAGIC)
    os.close(w)
    err = _no_report(r, process[1], time.monotonic() + 60)
    assert err.why == "closed" and "without reporting" in err.detail


def test_nothing_by_the_deadline_is_a_timeout(pipe: tuple[int, int],
                                              process: tuple[object, int]) -> None:
    r, _w = pipe
    assert _no_report(r, process[1], time.monotonic() + 0.05).why == "timeout"
    assert _no_report(r, process[1], time.monotonic() - 1).why == "timeout"


@pytest.mark.parametrize("written", [
    b"[" * 200_000, b" " * 60_000, b"XXXX\0\0\0\2{}",  # not a head
    _framed(b"", proto.MAX_STATUS_BODY + 1), _framed(b"", 1 << 31),  # over the bound
])
def test_what_is_no_report_head_is_refused_after_the_head_alone(
        pipe: tuple[int, int], process: tuple[object, int], written: bytes) -> None:
    r, w = pipe
    os.set_blocking(w, False)
    try:
        os.write(w, written)
    except BlockingIOError:
        pass
    before = _unread(r)
    err = _no_report(r, process[1], time.monotonic() + 60)
    assert err.why == "malformed" and "bad start-up report" in err.detail
    assert before - _unread(r) == proto.STATUS_HEAD_SIZE  # not a byte more was read


@pytest.mark.parametrize("body", [
    b"[" * 60_000, b"{" * 60_000, b'{"code": 0, "message": ' + b"[" * 50_000 + b"}",
    b'{"code": 16010011, "message": "x"}', b'{"code": 0, "message": "", "more": 1}',
    b"\xff" * 100, b"",
])
def test_a_malformed_body_is_refused_with_no_other_exception(
        pipe: tuple[int, int], process: tuple[object, int], body: bytes) -> None:
    r, w = pipe
    os.write(w, _framed(body))
    assert _no_report(r, process[1], time.monotonic() + 60).why == "malformed"


def test_the_largest_body_is_taken_and_one_byte_more_is_not(
        pipe: tuple[int, int], process: tuple[object, int]) -> None:
    r, w = pipe
    body = b'{"code":0,"message":""}'
    largest = _framed(body + b" " * (proto.MAX_STATUS_BODY - len(body)))
    writer = threading.Thread(target=os.write, args=(w, largest))  # more than a pipe holds
    writer.start()
    try:
        assert read_report(r, process[1], time.monotonic() + 60) == (0, "")
    finally:
        writer.join()
    os.write(w, _framed(b"", proto.MAX_STATUS_BODY + 1))
    assert _no_report(r, process[1], time.monotonic() + 60).why == "malformed"


# ------------------------------------------------------------------ through the public calls


@pytest.fixture(autouse=False)
def no_leaks() -> Iterator[None]:
    from childkit.process import _options

    _options._sandbox_layers()  # probed once, before the baseline
    with no_child_leaks():
        yield


@pytest.fixture()
def grandchild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where the worker writes the pid of the grandchild it forks; killed at the end."""
    path = tmp_path / "grandchild.pid"
    monkeypatch.setenv("CK_TEST_GRANDCHILD", str(path))
    yield path
    if path.exists():
        pid = int(path.read_text())
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # not ours to reap: init's
        finally:
            os.close(pidfd)


def _doubles(proxy: RemoteProxy) -> int:
    with MessageParcel() as data:
        data.write_int32(21)
        with proxy.send_request(1, data) as reply:
            return reply.read_int32()


def _on_started_code(entry: str, options: ChildProcessOptions | None = None) -> ErrCode:
    got: list[tuple[ErrCode, RemoteProxy | None]] = []
    done = threading.Event()

    def on_started(code: ErrCode, proxy: RemoteProxy | None) -> None:
        got.append((code, proxy))
        done.set()

    childkit.create_native_child_process(entry, on_started, options)
    assert done.wait(60)
    [(code, proxy)] = got
    if proxy is not None:
        proxy.connection.close()
    return code


ISOLATED = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)


def _copy_for(what: str, where: Path) -> str:
    """A copy of the worker that does ``what``: an isolated child keeps none of the start
    call's environment."""
    entry = where / f"status_writer_{what}.py"
    entry.write_text(WORKER_FILE.read_text().replace(
        'os.environ.get("CK_TEST_STATUS", "")', repr(what)))
    return str(entry)


MEDDLING = ["raw_nested", "framed_nested", "spaces", "huge_head", "bad_code", "extra_key",
            "ok_message"]


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("what", MEDDLING)
def test_an_entry_writing_to_the_status_pipe_fails_its_start(
        what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with exit_recorder() as rec:
        monkeypatch.setenv("CK_TEST_STATUS", what)  # in on_connect()
        with pytest.raises(ChildkitError) as info:
            childkit.connect("workers.status_writer")
        assert info.value.code == ErrCode.NCP_ERR_CONNECTION_FAILED, info.value
        assert "bad start-up report" in info.value.message
        assert _on_started_code("workers.status_writer") == ErrCode.NCP_ERR_CONNECTION_FAILED
        monkeypatch.setenv("CK_TEST_STATUS", f"import_{what}")  # at import, in args mode
        with pytest.raises(ChildkitError) as info:
            childkit.start_native_child_process("workers.status_writer:main",
                                                ChildProcessArgs("", {}))
        assert info.value.code == ErrCode.NCP_ERR_INTERNAL, info.value
        assert "bad start-up report" in info.value.message
    assert rec.calls == []  # never announced


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("what", ["raw_nested", "spaces", "bad_code"])
def test_an_isolated_entry_writing_to_the_status_pipe_fails_its_start(
        what: str, tmp_path: Path) -> None:
    with pytest.raises(ChildkitError) as info:
        childkit.connect(_copy_for(what, tmp_path), ISOLATED)
    assert info.value.code == ErrCode.NCP_ERR_CONNECTION_FAILED, info.value
    assert "bad start-up report" in info.value.message


@pytest.mark.usefixtures("no_leaks")
def test_a_child_that_forks_and_dies_while_starting_fails_at_once(
        grandchild: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The grandchild holds the status pipe open: only the child's exit ends the wait
    # (which the start timeout, longer than this test may take, would otherwise end).
    monkeypatch.setenv("CK_TEST_STATUS", "fork_die")
    with pytest.raises(ChildkitError) as info:
        childkit.connect("workers.status_writer", timeout=600)
    assert info.value.code == ErrCode.NCP_ERR_CONNECTION_FAILED, info.value
    assert "died during start-up (exit code 0) before reporting" in info.value.message
    assert grandchild.exists()
    grandchild.unlink()
    monkeypatch.setenv("CK_TEST_STATUS", "import_fork_die")
    with pytest.raises(ChildkitError) as info:
        childkit.start_native_child_process("workers.status_writer:main",
                                            ChildProcessArgs("", {}), timeout=600)
    assert info.value.code == ErrCode.NCP_ERR_INTERNAL, info.value
    assert "died during start-up" in info.value.message


@pytest.mark.usefixtures("no_leaks")
def test_a_child_that_forks_while_starting_starts(grandchild: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CK_TEST_STATUS", "fork_ok")
    with childkit.connect("workers.status_writer", timeout=600) as child:
        assert _doubles(child.proxy) == 42
    assert grandchild.exists()
    grandchild.unlink()
    monkeypatch.setenv("CK_TEST_STATUS", "import_fork_ok")
    with exit_recorder() as rec:
        pid = childkit.start_native_child_process("workers.status_writer:main",
                                                  ChildProcessArgs("", {}), timeout=600)
        childkit.kill_child_process(pid)
        assert rec.wait_for(pid).signal == signal.SIGKILL
    assert grandchild.exists()


@pytest.mark.usefixtures("no_leaks")
def test_an_isolated_child_that_forks_while_starting_starts(tmp_path: Path) -> None:
    with childkit.connect(_copy_for("fork_ok", tmp_path), ISOLATED, timeout=600) as child:
        assert _doubles(child.proxy) == 42


@pytest.mark.usefixtures("no_leaks")
def test_a_child_that_closes_its_status_pipe_and_lives_is_killed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CK_TEST_STATUS", "close_live")
    with pytest.raises(ChildkitError) as info:
        childkit.connect("workers.status_writer", timeout=600)
    assert info.value.code == ErrCode.NCP_ERR_CONNECTION_FAILED, info.value
    assert "closed its status pipe without reporting" in info.value.message


@pytest.mark.usefixtures("no_leaks")
def test_a_child_that_reports_a_failure_and_lives_is_killed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_manager, "_REAP_TIMEOUT", 0.5)
    monkeypatch.setenv("CK_TEST_STATUS", "lie_fail_live")
    with pytest.raises(ChildStartFailed) as info:
        childkit.connect("workers.status_writer")
    assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
    assert info.value.message == "a lie"
    assert info.value.exit_info is not None and info.value.exit_info.signal == signal.SIGKILL


@pytest.mark.usefixtures("no_leaks")
@pytest.mark.parametrize("what", ["hello_twice", "frame_garbage"])
def test_a_child_that_sends_more_than_its_greeting_while_starting_fails_its_start(
        what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its connection would break once those frames were read: never a start that
    # succeeds with a proxy about to die (red team: on_started got NCP_NO_ERROR and a
    # dead proxy now and then). Several times: it was a race.
    monkeypatch.setenv("CK_TEST_STATUS", what)
    with exit_recorder() as rec:
        for _ in range(5):
            with pytest.raises(ChildkitError) as info:
                childkit.connect("workers.status_writer")
            assert info.value.code == ErrCode.NCP_ERR_CONNECTION_FAILED, info.value
            assert "sent more than its greeting while starting" in info.value.message
            assert _on_started_code("workers.status_writer") == \
                ErrCode.NCP_ERR_CONNECTION_FAILED
    assert rec.calls == []


@pytest.mark.usefixtures("no_leaks")
def test_a_start_that_cannot_watch_its_child_kills_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fds(*_args: object) -> tuple[int, str]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_report, "read_report", no_fds)
    for start in (lambda: childkit.connect("workers.echo_worker"),
                  lambda: childkit.start_native_child_process("workers.status_writer:main",
                                                              ChildProcessArgs("", {}))):
        with pytest.raises(ChildkitError) as info:
            start()
        assert info.value.code == ErrCode.NCP_ERR_INTERNAL and "open files" in str(info.value)
