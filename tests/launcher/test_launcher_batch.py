"""Bursts of starts: the launcher takes the requests waiting together, forks them back to
back and answers them in one record; a failure inside a batch stays that request's own.
Also what the launcher learns of an entry before it forks (and what it must not run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest

import childkit
from child_helpers import (
    exit_recorder,
    fd_count,
    no_child_leaks,
    read_all,
)
from childkit import ErrCode
from childkit.ipc import MessageParcel, RemoteProxy
from childkit.launcher import _child as _launcher_child
from childkit.launcher import _protocol as proto
from childkit.process import _manager as manager_module
from workers import echo_worker as ew


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield



# ---------------------------------------------------------------------------- protocol


def test_recv_waiting_takes_what_is_waiting_up_to_the_limit() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        for n in range(3):
            proto.send(a, {"op": "x", "n": n}, fds=[w] if n == 1 else [])
        records, still_open = proto.recv_waiting(b, 2)
        assert still_open and [h["n"] for h, _p, _f in records] == [0, 1]
        (fd,) = records[1][2]
        os.write(fd, b"!")
        assert os.read(r, 1) == b"!"
        os.close(fd)
        records, still_open = proto.recv_waiting(b, 10)  # one waits: no blocking after it
        assert still_open and [h["n"] for h, _p, _f in records] == [2]
        proto.send(a, {"op": "x", "n": 3})
        a.close()
        records, still_open = proto.recv_waiting(b, 10)
        assert not still_open and [h["n"] for h, _p, _f in records] == [3]
        assert proto.recv_waiting(b, 10) == ([], False)
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


def test_recv_waiting_gives_back_the_fds_of_a_batch_with_a_malformed_record() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    before = fd_count()
    try:
        proto.send(a, {"op": "x"}, fds=[w])
        a.sendmsg([b"\x00\x00\x00\x03{x}"])
        with pytest.raises(proto.ProtocolError):
            proto.recv_waiting(b, 10)
        assert fd_count() == before  # the good record's fd was closed too
    finally:
        a.close()
        b.close()
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------------------- launcher


def _spawn_header(request_id: int, entry: str) -> dict[str, Any]:
    return {"op": "spawn", "id": request_id, "mode": "args", "entry": entry,
            "fd_names": [], "process_name": "batch-test", "cwd": os.getcwd(),
            "sys_path": [os.path.abspath(p) for p in sys.path if isinstance(p, str)],
            "sandbox": None}


def test_a_burst_is_forked_back_to_back_and_a_bad_request_fails_alone() -> None:
    # A launcher of our own, driven by hand: stopped while the requests queue up, so
    # that it finds them all waiting at once.
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(
        [sys.executable, "-c", manager_module._LAUNCHER_BOOT, manager_module._PACKAGE_ROOT,
         str(theirs.fileno()), str(os.getpid())],
        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
    theirs.close()
    status: dict[int, int] = {}  # request id -> read end of its status pipe
    answers: dict[int, Any] = {}
    exited: dict[int, int] = {}
    pidfds: list[int] = []
    try:
        proto.send(mine, {"op": "config", "preload": [], "sys_path": sys.path})
        got = proto.recv(mine)
        assert got is not None and got[0]["op"] == "ready"
        os.kill(proc.pid, signal.SIGSTOP)
        entries = {1: "workers.args_entries:exit_with", 2: "workers.args_entries:exit_with",
                   3: "workers.args_entries:exit_with", 4: "workers.no_such_module:f",
                   5: "workers.args_entries:exit_with"}
        for request_id, entry in entries.items():
            r, w = os.pipe2(os.O_CLOEXEC)
            status[request_id] = r
            fds = [w, w] if request_id == 3 else [w]  # 3: an fd too many, a bad request
            proto.send(mine, _spawn_header(request_id, entry), str(request_id).encode(), fds)
            os.close(w)
        os.kill(proc.pid, signal.SIGCONT)
        forked_records = []
        while len(answers) < len(entries):
            got = proto.recv(mine)
            assert got is not None
            header, _payload, fds = got
            if header["op"] == "failed":
                assert fds == []
                answers[header["id"]] = header
            elif header["op"] == "forked":
                forked_records.append(header["children"])
                assert len(fds) == len(header["children"])
                pidfds.extend(fds)
                for request_id, pid in header["children"]:
                    answers[request_id] = pid
            else:
                assert header["op"] == "exited"
                exited[header["pid"]] = header["status"]
        # All four good requests were waiting together: one record answers them.
        assert forked_records == [[[1, answers[1]], [2, answers[2]], [4, answers[4]],
                                   [5, answers[5]]]]
        assert "ProtocolError" in answers[3]["message"]
        assert read_all(status[3]) == b""  # the launcher closed its pipe end
        for request_id in (1, 2, 5):
            assert proto.parse_status(read_all(status[request_id])) == (0, "")
        code, message = proto.parse_status(read_all(status[4]))
        assert code == ErrCode.NCP_ERR_LIB_LOADING_FAILED and "no_such_module" in message
        while len(exited) < 4:
            got = proto.recv(mine)
            assert got is not None and got[0]["op"] == "exited"
            exited[got[0]["pid"]] = got[0]["status"]
        assert {answers[i]: os.waitstatus_to_exitcode(exited[answers[i]])
                for i in (1, 2, 4, 5)} == {answers[1]: 1, answers[2]: 2, answers[4]: 1,
                                           answers[5]: 5}
    finally:
        mine.close()  # end of file: the launcher kills and reaps what is left, then exits
        try:
            os.kill(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        assert proc.wait(30) == 0
        for fd in [*status.values(), *pidfds]:
            os.close(fd)


def test_starts_at_once_each_get_their_own_outcome() -> None:
    workers = ["workers.echo_worker", "workers.no_such_worker", "workers.raising_worker",
               "workers.echo_worker", "workers.no_main_worker"] * 4
    lock = threading.Lock()
    all_done = threading.Event()
    got: dict[int, tuple[ErrCode, RemoteProxy | None]] = {}

    def on_started_for(index: int) -> Any:
        def on_started(code: ErrCode, proxy: RemoteProxy | None) -> None:
            with lock:
                got[index] = (code, proxy)
                if len(got) == len(workers):
                    all_done.set()
        return on_started

    expected = {"workers.echo_worker": ErrCode.NCP_NO_ERROR,
                "workers.no_such_worker": ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                "workers.raising_worker": ErrCode.NCP_ERR_CONNECTION_FAILED,
                "workers.no_main_worker": ErrCode.NCP_ERR_LIB_LOADING_FAILED}
    with exit_recorder() as rec:
        for index, worker in enumerate(workers):
            childkit.create_native_child_process(worker, on_started_for(index))
        assert all_done.wait(60)
        assert {i: code for i, (code, _p) in got.items()} == {
            i: expected[w] for i, w in enumerate(workers)}
        proxies = [p for _c, p in got.values() if p is not None]
        pids = []
        for proxy in proxies:
            data = MessageParcel()
            data.write_int32(7)
            proxy.send_request(ew.QUIT, data, ew.ONE_WAY)
            pids.append(proxy.connection.peer_pid)
        for pid in pids:
            assert rec.wait_for(pid).exit_code == 7
        for proxy in proxies:
            proxy.connection.close()
        assert sorted(rec.exits) == sorted(pids)  # failed starts are never announced


def test_a_preloaded_module_without_its_functions_still_fails_in_the_child() -> None:
    # The launcher looks up a preloaded module's functions before forking; a module
    # lacking one is left to the child, which reports it as before.
    childkit.set_preload_modules(["workers.no_main_worker"])
    with pytest.raises(childkit.ChildkitError) as info:
        childkit.connect("workers.no_main_worker")
    assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
    assert "no function 'main_proc'" in info.value.message


# ---------------------------------------------------------------------------- entries


@pytest.fixture
def fresh_entries() -> Iterator[None]:
    _launcher_child.forget_entries()
    yield
    _launcher_child.forget_entries()


def _module(name: str, **attrs: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@pytest.mark.usefixtures("fresh_entries")
def test_the_launcher_learns_an_imported_modules_functions_by_lookup_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def on_connect() -> None: ...
    def main_proc() -> None: ...
    calls: list[str] = []

    def module_getattr(name: str) -> object:
        calls.append(name)
        return on_connect

    monkeypatch.setitem(sys.modules, "batch_full", _module(
        "batch_full", on_connect=on_connect, main_proc=main_proc))
    monkeypatch.setitem(sys.modules, "batch_lazy", _module(
        "batch_lazy", main_proc=main_proc, __getattr__=module_getattr))
    for entry in ("batch_full", "batch_lazy", "batch_not_imported", "some/file.py"):
        _launcher_child.learn_entry(entry, "ipc")
    _launcher_child.learn_entry("bad entry!", "ipc")  # does not parse: the child says so
    _launcher_child.learn_entry("pkg.mod:func", "args")
    known = _launcher_child._known
    assert known[("batch_full", "ipc")][1] == (on_connect, main_proc)
    assert known[("batch_lazy", "ipc")][1] is None and calls == []  # no user code ran
    assert known[("batch_not_imported", "ipc")][1] is None  # never imported here
    assert known[("some/file.py", "ipc")][0].kind == "pyfile"
    assert known[("pkg.mod:func", "args")][0].symbol == "func"
    assert ("bad entry!", "ipc") not in known
    _launcher_child.forget_entries()
    assert _launcher_child._known == {}
