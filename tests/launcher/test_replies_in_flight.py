"""An IPC-mode child answers the request that makes its main_proc return: its exit waits
(bounded) for replies in flight. The README's worker, exactly, quit by a sync request."""

from __future__ import annotations

import re
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import childkit
from child_helpers import exit_recorder, no_child_leaks
from childkit.ipc import MessageParcel
from childkit.launcher._replies import InFlight

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_worker() -> str:
    """The child module of the README's first snippet (up to '# the parent')."""
    text = README.read_text()
    block = re.search(r"```python\n# worker\.py, the child module\n(.*?)```", text, re.S)
    assert block is not None, "the README's worker snippet moved"
    return block.group(1).split("# the parent")[0]


@pytest.fixture
def module_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))


def test_the_readme_worker_answers_its_quit_request_30_times(module_dir: Path) -> None:
    (module_dir / "readme_worker.py").write_text(_readme_worker())
    with no_child_leaks(), exit_recorder() as exits:
        for _ in range(30):
            with childkit.connect("readme_worker") as child, MessageParcel() as data:
                data.write_int32(21)
                with child.proxy.send_request(1, data) as reply:
                    assert reply.read_int32() == 42
                child.proxy.send_request(2, data).close()  # quit: answered, then it exits
                info = exits.wait_for(child.pid)
                assert (info.exit_code, info.signal) == (0, None)


def test_a_handler_that_never_returns_does_not_hold_the_child(module_dir: Path) -> None:
    (module_dir / "stuck_worker.py").write_text(textwrap.dedent('''
        import threading
        from childkit.ipc import RemoteStub
        done = threading.Event()

        class Stub(RemoteStub):
            def on_remote_request(self, code, data, reply, option):
                done.set()
                threading.Event().wait()  # never returns
                return 0

        def on_connect(): return Stub()
        def main_proc(): done.wait()
    '''))
    with no_child_leaks(), exit_recorder() as exits:
        child = childkit.connect("stuck_worker")
        try:
            with MessageParcel() as data:
                child.proxy.send_request(1, data, childkit.ipc.MessageOption(
                    childkit.ipc.RequestMode.ASYNC))
            info = exits.wait_for(child.pid, timeout=60)  # the drain gives up (2 s)
            assert (info.exit_code, info.signal) == (0, None)
        finally:
            child.close()


# ---------------------------------------------------------------------------- InFlight itself


def _run(target: Callable[[], object]) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def body() -> None:
        target()
        done.set()

    t = threading.Thread(target=body)
    t.start()
    return t, done


def test_drain_returns_at_once_when_no_request_ran() -> None:
    assert InFlight().drain(timeout=30) is True


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "re-entered"])
def test_drain_waits_for_a_running_handler_to_return(nested: bool) -> None:
    in_flight = InFlight()
    entered, release = threading.Event(), threading.Event()

    def handler(depth: object, *_: object) -> object:
        if depth == 0 and nested:
            return 0  # the nested call: returns at once
        if depth:  # a nested call re-enters the handler on its thread, then returns
            counted(0, None, None, None)
        entered.set()
        assert release.wait(60)
        return depth

    counted = in_flight.wrap(handler)
    worker, _ = _run(lambda: counted(1 if nested else 0, None, None, None))
    assert entered.wait(30)
    results: list[bool] = []
    drainer, drained = _run(lambda: results.append(in_flight.drain(timeout=60)))
    # Still running (the nested call's return did not end the outer one): no drain yet.
    assert not drained.wait(0.3)
    release.set()
    assert drained.wait(60)
    worker.join(30)
    drainer.join(30)
    assert results == [True]


def test_drain_gives_up_on_a_handler_that_never_returns() -> None:
    in_flight = InFlight()
    entered, release = threading.Event(), threading.Event()

    def handler(*_: object) -> None:
        entered.set()
        release.wait(60)

    counted = in_flight.wrap(handler)
    worker, _ = _run(lambda: counted(1, None, None, None))
    try:
        assert entered.wait(30)
        assert in_flight.drain(timeout=0.2) is False
    finally:
        release.set()
        worker.join(30)


def test_counts_stay_exact_across_threads_and_exceptions() -> None:
    # Each thread counts in its own slot: many threads, many calls, some raising; at the
    # end nothing counts as running, and every thread that ran one is known.
    in_flight = InFlight()

    def handler(i: object, *_: object) -> object:
        if isinstance(i, int) and i % 7 == 0:
            raise ValueError(i)
        return i

    counted = in_flight.wrap(handler)
    tids: list[int] = []

    def many() -> None:
        tids.append(threading.get_native_id())
        for i in range(2000):
            try:
                counted(i, None, None, None)
            except ValueError:
                pass

    threads = [threading.Thread(target=many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(in_flight._slots) == set(tids)
    assert all(slot[0] == 0 for slot in in_flight._slots.values())
    assert in_flight.drain(timeout=30) is True
