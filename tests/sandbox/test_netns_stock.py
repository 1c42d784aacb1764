"""Fresh network namespaces made ahead by a root launcher (childkit.sandbox._netns).

A root launcher stocks a few empty network namespaces while idle; an isolated child's
supervisor joins one and clones the init without CLONE_NEWNET. These tests check that
every isolated child still gets a namespace of its own (two at once differ, and neither
is the parent's), that a stocked one is the one joined (owned outside the sandbox's user
namespace), that an empty stock falls back to a namespace the clone creates, and that
no namespace fd of the launcher's reaches any child. The escape tests
(test_isolated_children.py) prove there is no network either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import escape_actions as ea
import pytest
import sandbox_harness as harness
from exit_waiter import Exits, run_to_end

import childkit
from childkit import ChildProcessArgs, ChildProcessOptions, IsolationMode
from childkit.sandbox import SandboxConfig, _enter, _netns
from leakcheck import wait_until

ROOT = os.geteuid() == 0
ENTRY = "workers.escape_entry:run"
ACTIONS_FILE = str(Path(ea.__file__).resolve())
ISOLATED = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED,
                               readonly_paths=(ACTIONS_FILE,))


pytestmark = pytest.mark.usefixtures("launcher_and_probe")


@pytest.fixture()
def exits() -> Iterator[Exits]:
    with Exits() as waiter:
        yield waiter


def _net_fds(pid: int) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("net:")
        except OSError:
            continue  # closed meanwhile
    return count


def _stocked_launcher(exits: Exits) -> None:
    """Start (and end) an isolated child, then, as root, wait until the isolated template
    has filled its stock (its own namespace's fd and STOCK_SIZE fresh ones)."""
    run_to_end(exits, ENTRY, _params("namespace_fds"), ISOLATED)
    if not ROOT:
        return
    template = _isolated_template(childkit.prestart_launcher())
    assert wait_until(lambda: _net_fds(template) >= _netns.STOCK_SIZE + 1, timeout=30), \
        "the isolated template did not stock network namespaces"


def _isolated_template(launcher: int) -> int:
    """The pid of the launcher's isolated template, which forks isolated children and so
    keeps the stock (childkit.launcher._isolated)."""
    with open(f"/proc/{launcher}/task/{launcher}/children") as f:
        for pid in f.read().split():
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "childkit-isolat":
                    return int(pid)
    raise AssertionError("the launcher has no isolated template")


def _params(action: str) -> str:
    return json.dumps({"actions_file": ACTIONS_FILE, "action": action, "ctx": {}})


def _read_line(fd: int) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        assert chunk, f"the child ended before reporting (got {data!r})"
        data += chunk
    return data


class _Held:
    """An args-mode child running ``network_namespace``, held alive until closed."""

    def __init__(self, options: ChildProcessOptions | None) -> None:
        self._fds: list[int] = []
        out_r, out_w = self._pipe()
        ns_r, ns_w = self._pipe()
        self._hold_r, self._hold_w = self._pipe()
        self.pid = childkit.start_native_child_process(
            ENTRY, ChildProcessArgs(_params("network_namespace"),
                                    {"out": out_w, "ns": ns_w, "hold": self._hold_r}),
            options)
        for fd in (out_w, ns_w, self._hold_r):
            self._close(fd)
        self._out, self._ns = out_r, ns_r

    def _pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self._fds += [r, w]
        return r, w

    def _close(self, fd: int) -> None:
        self._fds.remove(fd)
        os.close(fd)

    def namespace(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(_read_line(self._ns))
        return report

    def finish(self) -> dict[str, Any]:
        """Let the child end; what it reported on "out"."""
        self._close(self._hold_w)
        chunks = []
        while chunk := os.read(self._out, 65536):
            chunks.append(chunk)
        report: dict[str, Any] = json.loads(b"".join(chunks))
        return report

    def close(self) -> None:
        for fd in list(self._fds):
            self._close(fd)


@pytest.fixture()
def held(exits: Exits) -> Iterator[list[_Held]]:
    children: list[_Held] = []
    try:
        yield children
    finally:
        for child in children:
            child.close()
        for child in children:
            exits.wait(child.pid)


def test_isolated_children_at_once_have_their_own_network_namespaces(
        held: list[_Held], exits: Exits) -> None:
    parent = os.stat("/proc/self/ns/net").st_ino
    _stocked_launcher(exits)
    # Three back to back: more than the stock holds, so the last may meet an empty one.
    for _ in range(3):
        held.append(_Held(ISOLATED))
    seen = [child.namespace() for child in held]
    inodes = [s["inode"] for s in seen]
    assert len(set(inodes)) == len(inodes), f"a network namespace was shared: {seen}"
    assert parent not in inodes, f"a child is in its parent's network namespace: {seen}"
    if ROOT:
        # The first two come from the stock: owned by the initial user namespace,
        # outside the sandbox's.
        assert seen[0]["owner"] == seen[1]["owner"] == "outside", seen
    for s in seen:
        assert s["owner"] in ("outside", "own"), seen
    for child in held:
        assert child.finish()["ok"]


def test_a_normal_child_stays_in_its_parents_network_namespace(held: list[_Held]) -> None:
    """The same action, NORMAL: it reports the parent's namespace (so the test above
    would see a shared one)."""
    held.append(_Held(None))
    assert held[0].namespace()["inode"] == os.stat("/proc/self/ns/net").st_ino
    assert held[0].finish()["ok"]


@pytest.mark.parametrize("options", [None, ISOLATED], ids=["normal", "isolated"])
def test_no_namespace_fd_of_the_launcher_reaches_a_child(
        options: ChildProcessOptions | None, exits: Exits) -> None:
    """Started right after an isolated child (so the launcher holds its stock and, as
    root, templates), a child holds no namespace fd at all."""
    _stocked_launcher(exits)
    for _ in range(2):
        pid, out = run_to_end(exits, ENTRY, _params("namespace_fds"), options)
        report = json.loads(out)
        assert report == {"ok": True, "result": "[]"}, f"child {pid}: {report}"


@pytest.fixture()
def fresh_netns() -> Iterator[int]:
    """A namespace made as the launcher makes its stock, the caller's to hand on."""
    assert not _netns.stocked(), "this process keeps no stock of its own"
    try:
        _netns.refill_one()
        fd = _netns.take()
        assert fd is not None, "a root process must be able to make a network namespace"
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        _netns.clear()


def _enter_with(netns: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    def enter(config: SandboxConfig, keep_fds: list[int]) -> None:
        # In the forked child: its own copy of the fd, as a launcher child has.
        _enter.enter_planned(config, keep_fds, None, None,
                             netns=None if netns is None else os.dup(netns))

    monkeypatch.setattr(harness, "enter", enter)


@pytest.mark.skipif(not ROOT, reason="only a root launcher stocks network namespaces")
def test_a_stocked_namespace_is_joined_and_used_once(
        fresh_netns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _enter_with(fresh_netns, monkeypatch)
    outcome = harness.run(ea.network_namespace, {}, SandboxConfig())
    assert outcome.ok, outcome.describe()
    value = outcome.report["value"] if outcome.report else None
    assert value == {"inode": os.fstat(fresh_netns).st_ino, "owner": "outside"}, value
    fds = harness.run(ea.namespace_fds, {}, SandboxConfig())
    assert fds.ok and fds.report is not None and fds.report["value"] == [], fds.describe()


def test_an_empty_stock_falls_back_to_a_namespace_of_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _enter_with(None, monkeypatch)
    outcome = harness.run(ea.network_namespace, {}, SandboxConfig())
    assert outcome.ok, outcome.describe()
    assert outcome.report is not None
    value = outcome.report["value"]
    assert value["owner"] == "own", value  # created by the init's clone, in its userns
    assert value["inode"] != os.stat("/proc/self/ns/net").st_ino


@pytest.mark.skipif(not ROOT, reason="only a root launcher stocks network namespaces")
def test_making_a_namespace_returns_to_the_callers_own() -> None:
    home = os.stat("/proc/self/ns/net").st_ino
    try:
        _netns.refill_one()
        _netns.refill_one()
        stock = _netns.stocked()
        assert len(stock) == 2
        assert os.stat("/proc/self/ns/net").st_ino == home
        inodes = {os.fstat(fd).st_ino for fd in stock}
        assert len(inodes) == 2 and home not in inodes
        assert not _netns.wanted()
    finally:
        _netns.clear()
    assert not _netns.stocked()


def test_a_namespace_that_cannot_be_joined_falls_back_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An fd that is no network namespace (setns refuses it): the clone makes one."""
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _enter_with(null, monkeypatch)
        outcome = harness.run(ea.network_namespace, {}, SandboxConfig())
    finally:
        os.close(null)
    assert outcome.ok and outcome.report is not None, outcome.describe()
    assert outcome.report["value"]["owner"] == "own", outcome.describe()


@pytest.mark.skipif(not ROOT, reason="only a root launcher stocks network namespaces")
def test_a_refusal_stops_the_stock_and_a_lost_home_is_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from childkit.sandbox import _syscalls

    def refuse(*_args: object) -> None:
        raise OSError(1, "refused")

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    real_setns = _syscalls.setns
    try:
        with monkeypatch.context() as patch:
            patch.setattr(_syscalls, "unshare", refuse)
            _netns.refill_one()  # not raised: the stock stops
        assert not _netns.stocked() and not _netns.wanted()
        _netns._refused = False
        with monkeypatch.context() as patch:
            patch.setattr(_syscalls, "setns", refuse)
            with pytest.raises(_netns.HomeLost):
                _netns.refill_one()  # made one, could not return: stranded, says so
        assert not _netns.stocked() and not _netns.wanted()
        assert os.stat("/proc/thread-self/ns/net").st_ino != os.fstat(home).st_ino
    finally:
        real_setns(home, _syscalls.CLONE_NEWNET)  # this test's own way home
        _netns._refused = False
        _netns.clear()
    try:
        assert os.stat("/proc/thread-self/ns/net").st_ino == os.fstat(home).st_ino
    finally:
        os.close(home)
