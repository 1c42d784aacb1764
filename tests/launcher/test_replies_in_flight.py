"""An IPC-mode child answers the request that makes its main_proc return: its exit waits
(bounded) for replies in flight. The README's worker, exactly, quit by a sync request."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import childkit
from child_helpers import exit_recorder, no_child_leaks
from childkit.ipc import MessageParcel

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
