"""An isolated entry that imports a sibling module: the default stays narrow (only the
entry's own file), the failing import names the module, the directory it would come
from and readonly_paths; readonly_paths (any sequence) or `childkit run --readonly`
make it visible. An ISOLATED executor's tasks from the user's modules likewise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import childkit
from child_helpers import exit_recorder
from childkit import ChildkitError, ChildProcessArgs, ChildProcessOptions, ErrCode, IsolationMode

ENTRY = textwrap.dedent('''
    import os
    import iso_helpers

    def main(args):
        os.write(args.fds["out"], iso_helpers.greet(args.entry_params).encode())
''')
HELPERS = 'def greet(name):\n    return "hello " + name\n'


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "iso_entry.py").write_text(ENTRY)
    (tmp_path / "iso_helpers.py").write_text(HELPERS)
    (tmp_path / ".env").write_text("SECRET=1")
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("iso_entry", "iso_helpers", "iso_tasks"):
            sys.modules.pop(name, None)


def _start(options: ChildProcessOptions) -> str:
    r, w = os.pipe()
    try:
        with exit_recorder() as exits:
            pid = childkit.start_native_child_process(
                "iso_entry:main", ChildProcessArgs("sandbox", {"out": w}), options)
            os.close(w)
            w = -1
            assert exits.wait_for(pid, timeout=60).exit_code == 0
        return os.read(r, 1000).decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_sibling_import_fails_saying_which_module_where_and_what_to_do(
        project: Path) -> None:
    with pytest.raises(ChildkitError) as info:
        _start(ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED))
    assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
    message = info.value.message
    assert "No module named 'iso_helpers'" in message
    assert f"beside the entry in {project}" in message
    assert "readonly_paths" in message and "--readonly" in message
    assert ".env" not in message


def test_readonly_paths_as_a_list_make_the_sibling_visible(project: Path) -> None:
    options = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED,
                                  readonly_paths=[str(project / "iso_helpers.py")])
    assert options.readonly_paths == (str(project / "iso_helpers.py"),)
    assert _start(options) == "hello sandbox"


def test_readonly_paths_refuses_a_lone_string() -> None:
    with pytest.raises(ChildkitError, match="readonly_paths must be a sequence") as info:
        ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED, readonly_paths="/tmp")
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-m", "childkit", "run", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_childkit_run_readonly_flag(project: Path) -> None:
    failed = _cli(project, "--isolated", "iso_entry:main", "--param", "cli",
                  "--fd", "out=out.txt:w")
    assert failed.returncode != 0
    assert "No module named 'iso_helpers'" in failed.stderr and "--readonly" in failed.stderr
    done = _cli(project, "--isolated", "--readonly", "iso_helpers.py", "iso_entry:main",
                "--param", "cli", "--fd", "out=out.txt:w")
    assert done.returncode == 0, done.stderr
    assert (project / "out.txt").read_text() == "hello cli"
    refused = _cli(project, "--readonly", "iso_helpers.py", "iso_entry:main")
    assert refused.returncode != 0 and "--readonly needs --isolated" in refused.stderr


def test_isolated_executor_tasks_from_the_users_modules(project: Path) -> None:
    (project / "iso_tasks.py").write_text("def double(x):\n    return 2 * x\n")
    import iso_tasks  # type: ignore[import-not-found]

    with childkit.ChildProcessExecutor(1, isolation_mode=IsolationMode.ISOLATED) as ex, \
            pytest.raises(ModuleNotFoundError) as info:
        ex.submit(iso_tasks.double, 21).result(timeout=60)
    message = str(info.value)
    assert "No module named 'iso_tasks'" in message
    assert str(project / "iso_tasks.py") in message and "readonly_paths" in message
    options = ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED,
                                  readonly_paths=[project / "iso_tasks.py"])
    with childkit.ChildProcessExecutor(1, options=options) as ex:
        assert ex.submit(iso_tasks.double, 21).result(timeout=60) == 42
