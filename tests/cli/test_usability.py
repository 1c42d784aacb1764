"""What a newcomer notices first (issue 15's polish), each through the public API or the
command: an entry's non-int result, sys.exit("message"), tracebacks from the user's own
frames, RemoteTraceback's public name, the help text, bench's table, the preload check."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import childkit
from childkit import ChildkitError, ChildProcessExecutor, ErrCode

ROOT = Path(__file__).resolve().parents[2]

TOOL = textwrap.dedent('''
    import sys

    def retstr(args):
        return "done"

    def exits_with_message(args):
        sys.exit("the input was empty")

    def helper():
        raise ValueError("bad input")

    def fails(args):
        helper()
''')


@pytest.fixture
def tool_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "tool.py").write_text(TOOL)
    yield tmp_path


def _childkit(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-m", "childkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_non_int_entry_result_is_an_error_as_docs_cli_says(tool_dir: Path) -> None:
    done = _childkit(tool_dir, "run", "tool:retstr")
    assert done.returncode == 1
    assert "returned a str; expected an int exit code or None" in done.stderr
    page = (ROOT / "docs" / "cli.md").read_text()
    assert "any other result is an error" in page and "anything else 0" not in page


def test_sys_exit_with_a_message_prints_it(tool_dir: Path) -> None:
    done = _childkit(tool_dir, "run", "tool:exits_with_message")
    assert done.returncode == 1
    assert "the input was empty" in done.stderr.splitlines()


def test_a_child_traceback_starts_at_the_users_frame(tool_dir: Path) -> None:
    done = _childkit(tool_dir, "run", "tool:fails")
    assert done.returncode == 1
    tb = done.stderr[done.stderr.index("Traceback"):]
    frames = [line for line in tb.splitlines() if line.startswith('  File "')]
    assert frames and all("tool.py" in f for f in frames), tb
    assert "ValueError: bad input" in tb


def fails_in_task() -> None:
    raise KeyError("missing")


def test_task_tracebacks_start_at_the_users_frame_and_name_childkit_remotetraceback() -> None:
    with ChildProcessExecutor(1) as ex, pytest.raises(KeyError) as info:
        ex.submit(fails_in_task).result(timeout=60)
    cause = info.value.__cause__
    assert isinstance(cause, childkit.RemoteTraceback)
    assert type(cause).__module__ == "childkit"
    assert f"{type(cause).__module__}.{type(cause).__qualname__}" == "childkit.RemoteTraceback"
    frames = [line for line in cause.tb.splitlines() if line.startswith('  File "')]
    assert frames and "_executor_worker" not in cause.tb
    assert "fails_in_task" in frames[0] or "fails_in_task" in cause.tb.splitlines()[2]


def test_help_has_no_markup_no_file_pointers_and_names_the_modes() -> None:
    for args in ([], ["demo"], ["run"], ["bench"], ["sandbox-check"]):
        text = _childkit(ROOT, *args, "--help").stdout
        assert "``" not in text and "`" not in text, args
        if args != ["bench"]:  # bench runs in a checkout, whose docs/ it may rewrite
            assert "docs/" not in text and ".md" not in text, args
        assert "seed" not in text.lower(), args
    assert "HarmonyOS's args mode" in _childkit(ROOT, "run", "--help").stdout
    assert "IPC mode" in _childkit(ROOT, "--help").stdout


def test_readme_and_demo_say_harmonyos_modes_not_seed_numbers() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "seed II" not in readme and "seed III" not in readme
    demo = _childkit(ROOT, "demo", "-q")
    assert demo.returncode == 0, demo.stderr
    for path in (ROOT / "src" / "childkit" / "cli").glob("_demo*.py"):
        assert "seed II" not in path.read_text(), path


def test_childkit_bench_runs_from_a_checkouts_root() -> None:
    for command in ([sys.executable, "-m", "childkit"], [str(Path(sys.executable).parent
                                                            / "childkit")]):
        done = subprocess.run([*command, "bench", "--only", "no_such_bench"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert "not installed with the package" not in done.stderr, command
        assert "not importable" not in done.stderr, command
        assert "unknown --only names: no_such_bench" in done.stderr, command


def test_bench_table_shows_full_metric_names() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from bench import _report
    finally:
        sys.path.remove(str(ROOT))
    metric = "sync round trip of a 4 KiB parcel, two threads calling at once, loaded machine"
    peer = "multiprocessing.managers BaseManager proxy through a Unix socket"
    lines = _report.table_lines([{"metric": metric, "unit": "us", "childkit": 10.0,
                                  "peers": {peer: 20.0}, "bare": {}, "better": "lower"}])
    assert metric in lines[2] and peer in lines[2]


def test_preloading_a_module_that_does_not_exist_fails_clearly() -> None:
    with pytest.raises(ChildkitError, match="'nosuchmod' cannot be found") as info:
        childkit.set_preload_modules(["nosuchmod"])
    assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
