"""The pre-forked launcher: one per application, single-threaded, restarted when it dies,
dying with its application (children too), and its wire protocol."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import childkit
from child_helpers import (
    exit_recorder,
    is_gone,
    launcher_pid,
    live_children_of,
    no_child_leaks,
    read_all,
    wait_until,
)
from childkit import ChildkitError, ChildProcessArgs, ErrCode
from childkit.launcher import _protocol as proto

WORKERS = Path(__file__).parent.parent / "workers"


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield



def test_one_single_threaded_launcher_forks_every_child() -> None:
    launcher = launcher_pid()
    assert childkit.prestart_launcher() == launcher
    assert os.listdir(f"/proc/{launcher}/task") == [str(launcher)]
    assert Path(f"/proc/{launcher}/comm").read_text().strip() == "childkit-launch"
    hold_r, hold_w = os.pipe()
    try:
        with exit_recorder() as rec:
            pids = [childkit.start_native_child_process(
                "workers.args_entries:block", ChildProcessArgs("", {"hold": hold_r}))
                for _ in range(3)]
            assert sorted(live_children_of(launcher)) == sorted(pids)
            assert os.listdir(f"/proc/{launcher}/task") == [str(launcher)]
            os.close(hold_w)
            hold_w = -1
            for pid in pids:
                assert rec.wait_for(pid).exit_code == 0
    finally:
        os.close(hold_r)
        if hold_w >= 0:
            os.close(hold_w)


def _a_new_launcher_starts(rec: Any) -> None:
    """The next start brings up a new launcher."""
    again = childkit.start_native_child_process(
        "workers.args_entries:exit_with", ChildProcessArgs("4"))
    assert rec.wait_for(again).exit_code == 4


def test_launcher_death_kills_its_children_and_a_new_one_starts() -> None:
    old = launcher_pid()
    hold_r, hold_w = os.pipe()
    try:
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process(
                "workers.args_entries:block", ChildProcessArgs("", {"hold": hold_r}))
            os.kill(old, signal.SIGKILL)
            # The child dies with its launcher and is reported as killed.
            assert rec.wait_for(pid).signal == signal.SIGKILL
            assert wait_until(lambda: is_gone(pid))
            _a_new_launcher_starts(rec)
    finally:
        os.close(hold_r)
        os.close(hold_w)
    assert launcher_pid() != old
    assert wait_until(lambda: is_gone(old))


def _children_of(parent: int) -> list[int]:
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        return [int(p) for p in f.read().split()]


def _isolated_template_of(launcher: int) -> int:
    for pid in _children_of(launcher):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "childkit-isolat":
            return pid
    raise AssertionError("the launcher has no isolated template")


def test_launcher_death_takes_its_isolated_template_and_its_cgroups() -> None:
    """Killed with its launcher, the isolated template cannot remove the cgroups it made
    (the one made ahead, its spare's, its children's): the application's manager removes
    them once the launcher is gone, before the exit callbacks hear of the children. (As
    an unprivileged user there are no cgroups: the processes' end is checked alone.)"""
    from childkit import ChildProcessOptions, IsolationMode
    from childkit.launcher import _spare
    from childkit.sandbox import _cgroups

    isolated = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
    old = launcher_pid()
    hold_r, hold_w = os.pipe()
    try:
        with exit_recorder() as rec:
            first = childkit.start_native_child_process(
                "workers.args_entries:exit_with", ChildProcessArgs("0"), isolated)
            assert rec.wait_for(first).exit_code == 0
            template = _isolated_template_of(old)
            assert wait_until(lambda: len(_children_of(template)) == _spare.SPARES)
            spares = _children_of(template)
            pid = childkit.start_native_child_process(
                "workers.args_entries:block", ChildProcessArgs("", {"hold": hold_r}),
                isolated)
            made = [g for g in _cgroups.leftovers(ahead=True)
                    if g.rsplit("/", 1)[-1].startswith(f"{_cgroups.PREFIX}{template}-")]
            assert bool(made) == bool(_cgroups.plan(childkit.sandbox.ResourceLimits())), made
            os.kill(old, signal.SIGKILL)
            assert rec.wait_for(pid).signal == signal.SIGKILL
            assert not [g for g in _cgroups.leftovers(ahead=True)
                        if g.rsplit("/", 1)[-1].startswith(f"{_cgroups.PREFIX}{template}-")]
            for gone in (template, *spares, pid):
                assert wait_until(lambda gone=gone: is_gone(gone)), gone
            _a_new_launcher_starts(rec)
    finally:
        os.close(hold_r)
        os.close(hold_w)


@contextmanager
def _parent(mode: str) -> Iterator[tuple[subprocess.Popen[str], list[int], list[int]]]:
    """Run orphan_parent.py; yield it, the pids of its launcher and children, and a
    pidfd for each (pidfds observe exits without racing pid reuse: these are not our
    children). Everything is released on the way out, whatever happens."""
    proc = subprocess.Popen([sys.executable, str(WORKERS / "orphan_parent.py"), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pidfds: list[int] = []
    try:
        assert proc.stdout is not None
        report = json.loads(proc.stdout.readline())
        pids = [report["launcher"], *report["children"]]
        pidfds.extend(os.pidfd_open(p) for p in pids)
        yield proc, pids, pidfds
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        for pidfd in pidfds:
            os.close(pidfd)


def _all_exit(pidfds: list[int]) -> bool:
    return all(select.select([pidfd], [], [], 20)[0] for pidfd in pidfds)


def test_sigkilled_parent_leaves_no_launcher_and_no_children() -> None:
    with _parent("wait") as (proc, pids, pidfds):
        assert all(not is_gone(p) for p in pids)
        proc.kill()
        proc.wait()
        assert _all_exit(pidfds), f"an orphan of {pids} outlived its killed parent"


def test_normally_exiting_parent_leaves_no_children() -> None:
    with _parent("exit") as (proc, pids, pidfds):
        assert all(not is_gone(p) for p in pids)
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(60) == 0
        assert _all_exit(pidfds), f"an orphan of {pids} outlived its parent"


def test_preload_modules_are_imported_in_the_launcher() -> None:
    with pytest.raises(ChildkitError, match="'workers' has no module 'no_such_preload") as info:
        childkit.set_preload_modules(["workers.preload_probe", "workers.no_such_preload_module"])
    assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED  # and nothing is kept
    childkit.set_preload_modules(["workers.preload_probe"])
    r, w = os.pipe()
    try:
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process(
                "workers.args_entries:preload_probe", ChildProcessArgs("", {"out": w}))
            os.close(w)
            w = -1
            imported_in = int(read_all(r))
            rec.wait_for(pid)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert imported_in == launcher_pid()


@pytest.mark.parametrize("bad", [["a-b"], [""], ["x..y"], [3], ["class.x"]])
def test_bad_preload_names_are_invalid_param(bad: list[object]) -> None:
    with pytest.raises(ChildkitError) as info:
        childkit.set_preload_modules(bad)  # type: ignore[arg-type]
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_a_forked_copy_of_the_application_gets_its_own_manager() -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked copy
        code = 1
        try:
            os.close(r)
            child = childkit.start_native_child_process(
                "workers.args_entries:exit_with", ChildProcessArgs("0"))
            os.write(w, json.dumps([child, childkit.prestart_launcher()]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data = read_all(r)
    os.close(r)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _child, launcher = json.loads(data)
    assert launcher != launcher_pid()
    assert wait_until(lambda: is_gone(launcher))


def test_nothing_is_started_in_a_child() -> None:
    # A child (or the launcher) may not start children: ALREADY_IN_CHILD, and
    # is_native_child_process_supported() says False there.
    from childkit.common import _role

    _role.set_role("child")
    try:
        assert childkit.is_native_child_process_supported() is False
        for call in (lambda: childkit.start_native_child_process("m:f"),
                     lambda: childkit.connect("workers.echo_worker"),
                     lambda: childkit.create_native_child_process("m", lambda c, p: None),
                     childkit.prestart_launcher):
            with pytest.raises(ChildkitError) as info:
                call()
            assert info.value.code == ErrCode.NCP_ERR_ALREADY_IN_CHILD
    finally:
        _role.set_role("app")


# ---------------------------------------------------------------------------- protocol


def test_protocol_round_trip_keeps_raw_payload() -> None:
    payload = "é\\\"\n".encode() * 1000
    header, body = proto.decode(proto.encode({"op": "spawn", "id": 3}, payload))
    assert header == {"op": "spawn", "id": 3}
    assert body == payload


def test_record_size_limit_at_its_edge() -> None:
    # A record of exactly MAX_RECORD is sent and arrives whole; one byte more is refused
    # by the sender (nothing sent: the application turns that into NCP_ERR_INVALID_PARAM)
    # and, sent anyway by a buggy or hostile peer, arrives truncated and is refused.
    header = {"op": "spawn", "id": 1}
    base = len(proto.encode(header))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, proto.SOCKET_BUFFER)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, proto.SOCKET_BUFFER)
    try:
        payload = b"p" * (proto.MAX_RECORD - base)
        assert len(proto.encode(header, payload)) == proto.MAX_RECORD
        proto.send(a, header, payload)
        got = proto.recv(b)
        assert got is not None and got[0] == header and got[1] == payload
        with pytest.raises(proto.RecordTooLarge):
            proto.send(a, header, payload + b"p")
        a.sendmsg([proto.encode(header, payload + b"p")])
        with pytest.raises(proto.ProtocolError, match="truncated"):
            proto.recv(b)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("record", [b"", b"\x00\x00", b"\x00\x00\x00\x09{}",
                                    b"\x00\x00\x00\x02{}", b"\x00\x00\x00\x02[]",
                                    b"\x00\x00\x00\x03{x}", b"\x00\x00\x00\x02\xff\xfe"])
def test_protocol_rejects_malformed_records(record: bytes) -> None:
    with pytest.raises(proto.ProtocolError):
        proto.decode(record)


def _framed(body: bytes, size: int | None = None) -> bytes:
    return proto.STATUS_MAGIC + (len(body) if size is None else size).to_bytes(4, "big") + body


@pytest.mark.parametrize("report", [
    b"", b'{"code": 0, "message": ""}',  # no head
    proto.STATUS_MAGIC[:3], b"XXXX" + _framed(b"{}")[4:],  # a head cut short, a bad magic
    _framed(b"{", 2), _framed(b"{}", 1), _framed(b"{}") + b"x",  # lengths that lie
    _framed(b"{"), _framed(b"[]"), _framed(b"\xff\xfe"), _framed(b"[" * 60_000),  # not a dict
    _framed(b'{"code": "0", "message": ""}'), _framed(b'{"code": 0}'),  # wrong or missing
    _framed(b'{"code": true, "message": ""}'), _framed(b'{"code": 0.0, "message": ""}'),
    _framed(b'{"code": 0, "message": []}'), _framed(b'{"code": 0, "message": null}'),
    _framed(b'{"code": 0, "message": "", "extra": 1}'),  # an unknown field
    _framed(b'{"code": 16010011, "message": "x"}'),  # a code no start reports
    _framed(b'{"code": 16010002, "message": "x"}'), _framed(b'{"code": -1, "message": "x"}'),
    _framed(b'{"code": 1' + b"0" * 5000 + b', "message": "x"}'),  # int(str) refuses it
    _framed(b'{"code": 0, "message": "ok"}'),  # success says nothing more
    _framed(b'{"code": 401, "message": "' + b"x" * (proto.MAX_STATUS_MESSAGE + 4) + b'"}'),
    _framed(b" " * (proto.MAX_STATUS_BODY + 1)),  # over the bound
])
def test_bad_start_up_reports_are_protocol_errors(report: bytes) -> None:
    with pytest.raises(proto.ProtocolError):
        proto.parse_status(report)


def test_start_up_report_bounds_hold_at_their_edges() -> None:
    # The longest message a child may report, in the characters that cost most in JSON.
    for char in ("\U0001f600", "\x01", "\\", "\u00e9"):
        report = proto.status_error(401, char * 100_000)
        assert len(report) - proto.STATUS_HEAD_SIZE <= proto.MAX_STATUS_BODY
        code, message = proto.parse_status(report)
        assert code == 401 and message == char * proto.MAX_STATUS_MESSAGE + "..."
    # A body of exactly MAX_STATUS_BODY is read (and judged on its content); one more is not.
    pad = proto.MAX_STATUS_BODY - len(b'{"code":0,"message":""}')
    assert proto.parse_status(_framed(b'{"code":0,"message":""}' + b" " * pad)) == (0, "")
    head = _framed(b"", proto.MAX_STATUS_BODY)[: proto.STATUS_HEAD_SIZE]
    assert proto.status_body_size(head) == proto.MAX_STATUS_BODY
    with pytest.raises(proto.ProtocolError):
        proto.status_body_size(_framed(b"", proto.MAX_STATUS_BODY + 1))


def test_status_error_never_reports_a_code_the_starter_refuses() -> None:
    for code in (0, ErrCode.NCP_ERR_TIMEOUT, 16010011, -5):
        got, message = proto.parse_status(proto.status_error(code, "why"))
        assert got == ErrCode.NCP_ERR_INTERNAL and f"code {code}" in message and "why" in message
    for code in proto.START_CODES - {0}:
        assert proto.parse_status(proto.status_error(code, "why")) == (code, "why")


def test_fds_travel_with_a_record_and_are_owned_by_the_receiver() -> None:
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        proto.send(a, {"op": "x"}, b"payload", [w])
        got = proto.recv(b)
        assert got is not None
        header, payload, fds = got
        assert header == {"op": "x"} and payload == b"payload" and len(fds) == 1
        os.write(fds[0], b"!")
        assert os.read(r, 1) == b"!"
        proto.close_fds(fds)
        a.close()
        assert proto.recv(b) is None
    finally:
        b.close()
        os.close(r)
        os.close(w)


def test_on_started_threads_do_not_outlive_their_callback() -> None:
    done = threading.Event()
    childkit.create_native_child_process("workers.no_such_worker", lambda c, p: done.set())
    assert done.wait(30)
    # The fixture checks the thread count is back to its baseline.


def test_status_error_messages_are_cut_to_a_bounded_size() -> None:
    code, message = proto.parse_status(proto.status_error(401, "x" * 100_000))
    assert code == 401
    assert len(message) == proto.MAX_STATUS_MESSAGE + 3
    assert proto.parse_status(proto.status_ok()) == (0, "")


def test_launcher_template_does_not_import_asyncio() -> None:
    # Every page of the launcher is shared with each forked child and copied on write:
    # asyncio (and the ssl it pulls in, ~6 MB) is imported only when a loop is used.
    code = ("import sys, childkit, childkit.launcher._template, childkit.launcher._child; "
            "print(sorted(m for m in ('asyncio', 'ssl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
