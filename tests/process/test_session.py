"""Children run in a session of their own, the launcher's (``_sysutil.may_leave_session``):
a scheduling autogroup apart from the application's threads, out of reach of the
terminal's Ctrl-C; a niced application keeps them in its session. Each child leads a
process group of its own: signalling its group reaches nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import childkit
from child_helpers import exit_recorder, no_child_leaks, wait_until
from childkit import (
    ChildExitInfo,
    ChildProcessArgs,
    ChildProcessOptions,
    ErrCode,
    IsolationMode,
)
from childkit.common import _sysutil
from childkit.ipc import MessageParcel, RemoteProxy
from workers import echo_worker as ew

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield


def start_echo(options: ChildProcessOptions | None = None) -> RemoteProxy:
    """An IPC child running workers.echo_worker: its proxy (the start must succeed)."""
    done = threading.Event()
    got: list[tuple[ErrCode, RemoteProxy | None]] = []

    def on_started(code: ErrCode, proxy: RemoteProxy | None) -> None:
        got.append((code, proxy))
        done.set()

    childkit.create_native_child_process("workers.echo_worker", on_started, options)
    assert done.wait(60)
    (code, proxy), = got
    assert code == ErrCode.NCP_NO_ERROR and proxy is not None, code
    return proxy


def int_parcel(value: int) -> MessageParcel:
    data = MessageParcel()
    data.write_int32(value)
    return data


def autogroup(pid: int | str) -> str | None:
    """A process's autogroup ("/autogroup-45"); "" for the root autogroup (session 0, where
    CI runners start their jobs), whose line the kernel leaves empty; None without
    autogroups."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return f.read().split(" ")[0].strip()
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(("line", "nice"), [
    ("/autogroup-45 nice 0\n", 0), ("/autogroup-1 nice -5", -5), ("/autogroup-7 nice 19\n", 19),
])
def test_autogroup_nice_reads_the_kernels_line(line: str, nice: int) -> None:
    assert _sysutil.autogroup_nice(line) == nice


@pytest.mark.parametrize("line", ["", "/autogroup-45", "/autogroup-45 prio 0", "a nice b"])
def test_autogroup_nice_refuses_other_text(line: str) -> None:
    with pytest.raises(ValueError):
        _sysutil.autogroup_nice(line)


@pytest.mark.parametrize(("content", "leaves"), [
    ("/autogroup-45 nice 0\n", True),  # the usual case
    ("/autogroup-45 nice 3\n", False),  # the session was niced: stay in it
    ("/autogroup-45 nice -2\n", False),
    ("something else\n", False),  # a format we do not know: stay
    ("", True),  # the root autogroup (session 0): the kernel prints nothing, weight nice 0
    (None, True),  # no autogroups: a session changes no ranking
])
def test_may_leave_session_only_when_nothing_is_niced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None,
        leaves: bool) -> None:
    path = tmp_path / "autogroup"
    if content is not None:
        path.write_text(content)
    monkeypatch.setattr(_sysutil, "AUTOGROUP_PATH", str(path))
    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("the test process itself runs niced")  # (then nothing would leave)
    assert _sysutil.may_leave_session() is leaves


def test_a_niced_thread_may_not_leave_its_session() -> None:
    # A thread's nice value is its own on Linux: nice one thread, which then ends.
    seen: list[bool] = []

    def niced() -> None:
        os.nice(1)
        seen.append(_sysutil.may_leave_session())

    t = threading.Thread(target=niced)
    t.start()
    t.join(30)
    assert seen == [False]


# ---------------------------------------------------------------------------- the children


@pytest.mark.parametrize("isolated", [False, True], ids=["normal", "isolated"])
def test_children_share_a_session_of_their_own_the_launchers(isolated: bool) -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("the test process runs niced: its children stay in its session")
    mode = (IsolationMode.ISOLATED if isolated
            else IsolationMode.NORMAL)
    proxies = [start_echo(ChildProcessOptions(isolation_mode=mode)) for _ in range(2)]
    try:
        pids = [p.connection.peer_pid for p in proxies]
        launcher = childkit.prestart_launcher()  # (the running one)
        # The launcher leads the session, and both children are in it, outside the
        # application's process group (the terminal's foreground group).
        assert os.getsid(launcher) == launcher
        assert os.getpgid(pids[0]) != os.getpgid(pids[1])
        for pid in pids:
            assert pid is not None
            assert os.getsid(pid) == launcher != os.getsid(0)
            assert os.getpgid(pid) != os.getpgid(0)
            # Its own process group, led by itself (an isolated child's peer is the
            # sandboxed process, in the group of its sandbox's supervisor).
            assert os.getpgid(pid) not in (launcher, os.getpgid(0))
            if not isolated:
                assert os.getpgid(pid) == pid
            # One scheduling autogroup for all the children, not the application's.
            if autogroup("self") is not None:
                assert autogroup(pid) == autogroup(launcher) != autogroup("self")
    finally:
        with exit_recorder() as rec:
            for proxy in proxies:
                proxy.send_request(ew.QUIT, int_parcel(0), ew.ONE_WAY)
            # (An isolated child's pid is its sandbox supervisor's, not the peer's.)
            assert wait_until(lambda: len(rec.exits) == len(proxies))
            assert [info.exit_code for info in rec.exits.values()] == [0] * len(proxies)
            for proxy in proxies:
                proxy.connection.close()


@pytest.mark.parametrize("isolated", [False, True], ids=["normal", "isolated"])
def test_a_child_that_signals_its_own_group_reaches_only_itself(isolated: bool) -> None:
    # Code that cleans up after its subprocesses with killpg(getpgrp(), SIGTERM) ends its
    # own child process: not the launcher, and so not every sibling with it.
    mode = IsolationMode.ISOLATED if isolated else IsolationMode.NORMAL
    launcher = childkit.prestart_launcher()
    sibling = start_echo()
    try:
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process(
                "workers.args_entries:kill_own_group", ChildProcessArgs(str(int(signal.SIGTERM))),
                ChildProcessOptions(isolation_mode=mode))
            assert rec.wait_for(pid, 60) == ChildExitInfo(pid, None, signal.SIGTERM)
        assert childkit.prestart_launcher() == launcher  # the same launcher, alive
        assert add_one(sibling, 41) == 42
    finally:
        with exit_recorder() as rec:
            sibling.send_request(ew.QUIT, int_parcel(0), ew.ONE_WAY)
            rec.wait_for(sibling.connection.peer_pid, 60)
        sibling.connection.close()


def add_one(proxy: RemoteProxy, value: int) -> int:
    with proxy.send_request(ew.ADD_ONE, int_parcel(value)) as reply:
        return reply.read_int32()


# ---------------------------------------------------------------------------- in a script

# Starts an echo child, says "ready", and waits for Ctrl-C; then asks the child to exit
# with status 5 and prints how it ended. A child that had the Ctrl-C too ends otherwise.
# The kernel gives a process's SIGINT to any of its threads, and CPython's handler then
# only sets a flag: a main thread blocked in a wait would not see it until the wait ended.
# So the signal is awaited on the wakeup fd, which the handler writes from whichever
# thread it ran on.
_CTRL_C_SCRIPT = """
import os, select, signal, threading, childkit
from childkit import ChildExitInfo
from childkit.ipc import MessageParcel
from workers import echo_worker as ew
signal.signal(signal.SIGINT, lambda signum, frame: None)  # (the wakeup fd says it came)
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w)
ended, got = threading.Event(), []
childkit.register_child_process_exit_callback(lambda pid, info: (got.append(info), ended.set()))
started, proxies = threading.Event(), []
childkit.create_native_child_process(
    "workers.echo_worker", lambda code, proxy: (proxies.append(proxy), started.set()))
assert started.wait(60) and proxies[0] is not None
proxy = proxies[0]
pid = proxy.connection.peer_pid
print("ready", flush=True)
if not select.select([r], [], [], 120)[0] or os.read(r, 1) != bytes([signal.SIGINT]):
    print("no Ctrl-C came")
else:
    data = MessageParcel()
    data.write_int32(5)
    proxy.send_request(ew.QUIT, data, ew.ONE_WAY)
    assert ended.wait(60)
    print(got[0] == ChildExitInfo(pid, 5, None), got[0])
"""

# Runs niced, starts an echo child: is the child in this process's session and autogroup?
_NICED_SCRIPT = """
import os, threading, childkit
from childkit.ipc import MessageParcel
from workers import echo_worker as ew
os.nice(5)
started, proxies = threading.Event(), []
childkit.create_native_child_process(
    "workers.echo_worker", lambda code, proxy: (proxies.append(proxy), started.set()))
assert started.wait(60) and proxies[0] is not None
pid = proxies[0].connection.peer_pid
def autogroup(p):
    try:
        return open(f"/proc/{p}/autogroup").read().split(" ")[0].strip()
    except FileNotFoundError:
        return None
print(os.getsid(pid) == os.getsid(0), autogroup(pid) == autogroup("self"))
data = MessageParcel()
data.write_int32(0)
proxies[0].send_request(ew.QUIT, data, ew.ONE_WAY)
"""


def script_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))


def test_ctrl_c_reaches_the_application_not_its_children() -> None:
    # The terminal sends Ctrl-C's SIGINT to its foreground process group: here, the
    # script's own (a session of its own, so that the signal reaches nothing else). The
    # children are outside it twice over: in the launcher's session, each in a group of
    # its own; this fails only when a child is in the application's group.
    with subprocess.Popen([sys.executable, "-c", _CTRL_C_SCRIPT], env=script_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:  # (closes the pipes, whatever)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=100)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert out.startswith("True "), out + err


def test_a_niced_application_keeps_its_children_in_its_session() -> None:
    out = subprocess.run([sys.executable, "-c", _NICED_SCRIPT], env=script_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "True True\n"
