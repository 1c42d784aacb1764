"""The seccomp allow-list (sandbox/_policy.py): what a sandboxed interpreter needs passes,
every call the policy does not name is refused with EPERM.

Each call is made twice, as every escape is: in a NORMAL child, where it must succeed
(or fail for its own reason, not EPERM), and inside the sandbox, where seccomp answers.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import sandbox_harness as harness

import childkit
from childkit import ChildProcessOptions, IsolationMode
from childkit.ipc import MessageParcel
from childkit.sandbox import ResourceLimits, SandboxConfig, _policy

_libc = ctypes.CDLL(None, use_errno=True)
_long = ctypes.c_long

# x86_64 call numbers and constants of the calls tried below.
_SYNC, _SETRESUID, _SOCKET, _SOCKETPAIR, _IOCTL, _PRCTL = 162, 117, 41, 53, 16, 157
_AF_UNIX, _AF_NETLINK, _SOCK_STREAM, _SOCK_DGRAM, _SOCK_SEQPACKET = 1, 16, 1, 2, 5
_SOCK_CLOEXEC = 0o2000000
_TIOCSTI, _FIOCLEX, _PR_GET_CHILD_SUBREAPER, _PR_SET_NAME = 0x5412, 0x5451, 37, 15
#: A number no kernel has given a call (yet): outside, ENOSYS; inside, refused by default.
_UNKNOWN_CALL = 1000


def _syscall(number: int, *args: object) -> int:
    """The raw call: 0 (or the result) on success, else the errno (as a negative)."""
    ctypes.set_errno(0)
    result = _libc.syscall(_long(number), *args)
    if result < 0:
        return -ctypes.get_errno()
    for fd in (result,) if number == _SOCKET else ():
        os.close(fd)
    return 0


def _socketpair(domain: int, kind: int) -> int:
    fds = (ctypes.c_int * 2)()
    result = _syscall(_SOCKETPAIR, _long(domain), _long(kind), _long(0), fds)
    if result == 0:
        os.close(fds[0])
        os.close(fds[1])
    return result


def _ioctl(request: int) -> int:
    read_fd, write_fd = os.pipe()
    try:
        return _syscall(_IOCTL, _long(read_fd), _long(request), ctypes.c_char_p(b"x"))
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _prctl_subreaper() -> int:
    value = ctypes.c_int(0)
    return _syscall(_PRCTL, _long(_PR_GET_CHILD_SUBREAPER), ctypes.byref(value), _long(0),
                    _long(0), _long(0))


def _prctl_name() -> int:
    return _syscall(_PRCTL, _long(_PR_SET_NAME), ctypes.c_char_p(b"sandboxed"), _long(0),
                    _long(0), _long(0))


def _mkfifo() -> int:
    path = f"/tmp/childkit-fifo-{os.getpid()}"
    try:
        os.mkfifo(path)
    except OSError as exc:
        return -(exc.errno or 0)
    os.unlink(path)
    return 0


#: name -> (the call, made in the child; the policy refuses it).
REFUSED: dict[str, Callable[[], int]] = {
    "unknown_call_number": lambda: _syscall(_UNKNOWN_CALL),
    "sync": lambda: _syscall(_SYNC),
    "setresuid_unchanged": lambda: _syscall(_SETRESUID, _long(-1), _long(-1), _long(-1)),
    "socket_unix": lambda: _syscall(_SOCKET, _long(_AF_UNIX), _long(_SOCK_STREAM), _long(0)),
    "socket_netlink": lambda: _syscall(_SOCKET, _long(_AF_NETLINK), _long(_SOCK_DGRAM),
                                       _long(15)),
    "socketpair_datagram": lambda: _socketpair(_AF_UNIX, _SOCK_DGRAM),
    "ioctl_tiocsti": lambda: _ioctl(_TIOCSTI),
    "prctl_get_child_subreaper": _prctl_subreaper,
}

#: name -> (the call; the policy allows it, with these arguments).
ALLOWED: dict[str, Callable[[], int]] = {
    "socketpair_stream": lambda: _socketpair(_AF_UNIX, _SOCK_STREAM),
    "socketpair_seqpacket": lambda: _socketpair(_AF_UNIX, _SOCK_SEQPACKET | _SOCK_CLOEXEC),
    "ioctl_fioclex": lambda: _ioctl(_FIOCLEX),
    "prctl_set_name": _prctl_name,
    "mkfifo": _mkfifo,
}


def _results(ctx: dict[str, Any]) -> dict[str, int]:
    return {name: call() for name, call in {**REFUSED, **ALLOWED}.items()}


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, int]]:
    outcomes = {"normal": harness.run(_results, {}, None),
                "isolated": harness.run(_results, {}, SandboxConfig())}
    for mode, outcome in outcomes.items():
        assert outcome.ok, f"{mode}: {outcome.describe()}"
    return {mode: outcome.report["value"]  # type: ignore[index]
            for mode, outcome in outcomes.items()}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_call_the_policy_does_not_allow_is_refused(
        name: str, results: dict[str, dict[str, int]]) -> None:
    normal, isolated = results["normal"][name], results["isolated"][name]
    assert normal != -errno.EPERM, f"{name} is refused outside the sandbox too: {normal}"
    assert isolated == -errno.EPERM, f"{name} inside the sandbox: {isolated}"


@pytest.mark.parametrize("name", list(ALLOWED))
def test_a_call_the_policy_allows_works(name: str, results: dict[str, dict[str, int]]) -> None:
    assert results["normal"][name] == 0, results["normal"]
    assert results["isolated"][name] == 0, results["isolated"]


def test_the_policy_names_each_call_once_and_never_a_refused_one() -> None:
    assert len(set(_policy.ALLOWED)) == len(_policy.ALLOWED)
    argument_calls = {rule.call for rule in _policy.ARGUMENT_RULES} | {"socketpair"}
    assert not set(_policy.NEVER) & (set(_policy.ALLOWED) | argument_calls)
    assert not set(_policy.ENOSYS_CALLS) & set(_policy.ALLOWED)


pytestmark = pytest.mark.usefixtures("launcher_and_probe")


def test_representative_workload_runs_under_the_policy() -> None:
    """Imports (NumPy too), threads, asyncio, fork, files, mmap, socketpairs, and the IPC
    kit with an fd, an Ashmem and a remote object, in an ISOLATED child through the
    public API: every result the same as in a NORMAL child."""
    from workers import escape_entry

    reports = {}
    # The workload forks: allowed, so that where no cgroup holds the limits (nobody) the
    # child is not kept to one process (test_isolated_children checks that refusal).
    for mode, options in (("normal", None),
                          ("isolated", ChildProcessOptions(
                              isolation_mode=IsolationMode.ISOLATED,
                              limits=ResourceLimits(allow_subprocesses=True)))):
        fd, path = tempfile.mkstemp()
        try:
            os.write(fd, b"passed in")
            with childkit.connect("workers.escape_entry", options=options) as child, \
                    MessageParcel() as data:
                data.write_file_descriptor(fd)
                with child.proxy.send_request(escape_entry.WORKLOAD, data) as reply:
                    report = json.loads(reply.read_string())
                    shared = reply.read_ashmem()
                    try:
                        shared.map_read_only()
                        report["ashmem"] = shared.read(14).decode()
                    finally:
                        shared.close()
                    callback = reply.read_remote_object()
                    with MessageParcel() as number:
                        number.write_int32(41)
                        with callback.send_request(escape_entry.CALL_BACK, number) as back:
                            report["callback"] = back.read_int32()
        finally:
            os.close(fd)
            os.unlink(path)
        reports[mode] = report
    for report in reports.values():
        del report["hash"]  # random
        assert report["fd"] == "passed in" and report["ashmem"] == "from the child"
        assert report["callback"] == 42 and report["fork"] == 7
    assert reports["isolated"].pop("cwd") == "/"
    reports["normal"].pop("cwd")
    assert reports["isolated"] == reports["normal"]
