"""The isolated start path: spares (childkit.launcher._spare), isolated children forked
before their order comes, and orders sent by the application to the template itself.

The isolated template keeps one spare while idle; once it has taken its own pages, the
next isolated start becomes that process (its pid existed before the start call). A
spare that dies before its order is reaped by the template without any exit callback
(no one started it) and replaced; its cgroup (root) goes with it. Adding preload
modules replaces the spare (it was forked before they were imported). The leak checks
of conftest.py hold for all of it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from exit_waiter import Exits, run_to_end

import childkit
from childkit import ChildProcessOptions, IsolationMode
from childkit.launcher import _spare
from childkit.sandbox import _cgroups
from leakcheck import wait_until

ISOLATED = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED)
ENTRY = "workers.escape_entry:report_identity"

pytestmark = pytest.mark.usefixtures("launcher_and_probe")


@pytest.fixture()
def exits() -> Iterator[Exits]:
    with Exits() as waiter:
        yield waiter


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _isolated_template() -> int:
    for pid in _children(childkit.prestart_launcher()):
        with open(f"/proc/{pid}/comm") as comm:
            if comm.read().strip() == "childkit-isolat":
                return pid
    raise AssertionError("the launcher has no isolated template")


def _run(exits: Exits) -> int:
    """Start an isolated child, read its report to the end, wait for its exit."""
    pid, _report = run_to_end(exits, ENTRY, "", ISOLATED)
    info = exits.wait(pid)
    assert info.exit_code == 0, info
    return pid


def _spares() -> set[int]:
    """The isolated template's spares, once it has made them (no child of ours runs)."""
    template = _isolated_template()
    assert wait_until(lambda: len(_children(template)) == _spare.SPARES, timeout=30), \
        "the isolated template made no spare"
    return _children(template)


def _run_until_spare_used(exits: Exits, spare: int) -> None:
    """Start isolated children until one is ``spare`` (one that is still taking its own
    pages is passed over for a fork: so the first start may be a fork's)."""
    for _ in range(50):
        if _run(exits) == spare:
            return
        assert spare in _children(_isolated_template()), "the spare ended unused"
    raise AssertionError(f"spare {spare} was never used")


def test_the_next_isolated_start_is_the_spare(exits: Exits) -> None:
    _run(exits)
    (spare,) = _spares()
    _run_until_spare_used(exits, spare)
    assert spare not in _spares()  # a fresh one


def test_a_spare_that_dies_is_reaped_silently_and_replaced(exits: Exits) -> None:
    _run(exits)
    (spare,) = _spares()
    template = _isolated_template()
    os.kill(spare, signal.SIGKILL)
    assert wait_until(lambda: spare not in _children(template), timeout=30)
    assert not [p for p in _cgroups.leftovers(ahead=True) if p.endswith(f"spare{spare}")]
    (fresh,) = _spares()
    assert fresh != spare
    _run_until_spare_used(exits, fresh)
    assert spare not in exits.reported()  # no exit callback names the dead spare


def test_new_preload_modules_replace_the_spare(exits: Exits) -> None:
    _run(exits)
    (spare,) = _spares()
    childkit.set_preload_modules(["json"])
    template = _isolated_template()
    assert wait_until(lambda: spare not in _children(template), timeout=30)
    assert _run(exits) != spare


def test_an_isolated_start_does_not_pass_through_the_launcher(exits: Exits) -> None:
    """The application sends isolated requests to the isolated template itself (a
    channel per request, a fork order on a socket of their own): with the launcher
    stopped, an isolated child still starts (and a NORMAL one would wait)."""
    _run(exits)  # the isolated template runs
    launcher = childkit.prestart_launcher()
    os.kill(launcher, signal.SIGSTOP)
    try:
        _run(exits)  # started, reported and reaped while the launcher was stopped
    finally:
        os.kill(launcher, signal.SIGCONT)
