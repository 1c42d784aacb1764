"""ISOLATED children through the public API: both start modes, escapes, limits, refusal.

tests/sandbox/test_sandbox_escape.py proves each layer with a bare fork harness; this
file proves that childkit's own start paths put the child inside them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import escape_actions as ea
import pytest

import childkit
from childkit import ChildProcessArgs, ChildProcessOptions, ErrCode, IsolationMode
from childkit.ipc import MessageParcel
from childkit.sandbox import ResourceLimits

ACTIONS_FILE = str(Path(ea.__file__).resolve())
ROOT = os.geteuid() == 0


@pytest.fixture()
def ctx(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with ea.escape_context(tmp_path, Path.home()) as context:
        yield context


def _options(ctx: dict[str, Any], **kwargs: Any) -> ChildProcessOptions:
    return ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED,
                               readonly_paths=(ACTIONS_FILE, ctx["ro_dir"]), **kwargs)


@pytest.fixture(autouse=True, scope="module")
def _launcher_and_probe() -> None:
    """The launcher and the sandbox probe live for the whole process: start them before
    the per-test leak checks take their baseline."""
    from childkit import _options

    childkit.prestart_launcher()
    _options._sandbox_layers()


def _run(entry: str, params: str, options: ChildProcessOptions | None) -> dict[str, Any]:
    """Start an args-mode child, read what it writes to fd "out", wait for its exit."""
    exited: dict[int, childkit.ChildExitInfo] = {}
    cond = threading.Condition()

    def on_exit(pid: int, info: childkit.ChildExitInfo) -> None:
        with cond:
            exited[pid] = info
            cond.notify_all()

    childkit.register_child_process_exit_callback(on_exit)
    r, w = os.pipe()
    try:
        pid = childkit.start_native_child_process(
            entry, ChildProcessArgs(params, {"out": w}), options)
        os.close(w)
        w = -1
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        with cond:
            assert cond.wait_for(lambda: pid in exited, timeout=60)
    finally:
        childkit.unregister_child_process_exit_callback(on_exit)
        os.close(r)
        if w >= 0:
            os.close(w)
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result


# Two cases cannot succeed in a NORMAL child started through the API, so they would prove
# nothing here; test_sandbox_escape.py covers them with a bare fork: every child already
# gets no inherited fd (test_modes.py checks it), and children take the environment the
# launcher started with, not a variable set later (the scrubbing is checked below).
CASES = [c for c in ea.CASES
         if c.name not in ("inherited_fd", "env_secret") and (c.as_nobody or ROOT)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_escape_fails_isolated_and_works_normal(case: ea.Case, ctx: dict[str, Any]) -> None:
    params = json.dumps({"actions_file": ACTIONS_FILE, "action": case.action.__name__,
                         "ctx": ctx})
    normal = _run("workers.escape_entry:run", params, None)
    assert normal["ok"], f"{case.name} must work in a NORMAL child: {normal}"
    isolated = _run("workers.escape_entry:run", params, _options(ctx))
    assert not isolated["ok"], f"{case.name} escaped an ISOLATED child: {isolated}"


def test_isolated_ipc_child_serves_requests_and_fds(tmp_path: Path) -> None:
    options = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
    with childkit.connect("workers.echo_worker", options=options) as child:
        with MessageParcel() as data:
            data.write_int32(41)
            with child.proxy.send_request(1, data) as reply:  # ADD_ONE
                assert reply.read_int32() == 42
        with child.proxy.send_request(2, MessageParcel()) as reply:  # PID
            assert reply.read_int32() == 2  # pid 2 of its own pid namespace
        assert child.proxy.connection.peer_pid != os.getpid()


def test_isolated_child_environment_is_scrubbed(ctx: dict[str, Any]) -> None:
    os.environ["CHILDKIT_LAUNCHER_SEES"] = "x"  # too late for the launcher: a control
    try:
        normal = _run("workers.escape_entry:report_identity", "", None)
        isolated = _run("workers.escape_entry:report_identity", "", _options(ctx))
    finally:
        del os.environ["CHILDKIT_LAUNCHER_SEES"]
    # A NORMAL child has the launcher's whole environment; an ISOLATED one only the
    # locale and the sandbox's own PATH, HOME and TMPDIR.
    assert len(normal["env"]) > len(isolated["env"])
    assert set(isolated["env"]) <= {"LANG", "LC_ALL", "LC_CTYPE", "TZ", "PATH", "HOME",
                                    "TMPDIR"}
    assert isolated["pid"] == 2 and normal["pid"] != 2


def test_cpu_limit_ends_the_child_and_the_exit_callback_says_why(ctx: dict[str, Any]) -> None:
    infos: list[childkit.ChildExitInfo] = []
    done = threading.Event()

    def on_exit(pid: int, info: childkit.ChildExitInfo) -> None:
        infos.append(info)
        done.set()

    childkit.register_child_process_exit_callback(on_exit)
    try:
        options = _options(ctx, limits=ResourceLimits(cpu_seconds=1))
        pid = childkit.start_native_child_process("workers.escape_entry:burn_cpu",
                                                  ChildProcessArgs(), options)
        assert done.wait(60)
    finally:
        childkit.unregister_child_process_exit_callback(on_exit)
    (info,) = infos
    assert info.pid == pid
    assert info.reason is not None and "cpu time limit" in info.reason


def test_limits_and_readonly_paths_need_isolated_mode() -> None:
    with pytest.raises(childkit.ChildkitError) as err:
        ChildProcessOptions(limits=ResourceLimits())
    assert err.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    with pytest.raises(childkit.ChildkitError) as err:
        ChildProcessOptions(readonly_paths=("/tmp",))
    assert err.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_missing_layer_refuses_unless_reduced_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from childkit import _options
    from childkit.sandbox import LayerStatus

    real = _options._sandbox_layers()
    fake = dict(real)
    fake["seccomp"] = LayerStatus(False, "pretend libseccomp is missing")
    monkeypatch.setattr(_options, "_sandbox_layers", lambda: fake)
    isolated = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
    with pytest.raises(childkit.ChildkitError) as err:
        childkit.start_native_child_process("workers.args_entries:exit_with",
                                            ChildProcessArgs("0"), isolated)
    assert err.value.code == ErrCode.NCP_ERR_NOT_SUPPORTED
    assert "seccomp" in err.value.message and "pretend" in err.value.message
    # Nothing was started: the refusal comes before any fork.
    reduced = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED,
                                  allow_reduced_sandbox=True)
    reduced.check_supported()  # accepted: the caller asked for a reduced sandbox
