"""Functions and classes defined in the main script work as tasks and initializers, as
with multiprocessing's spawn: each worker runs the script as ``__mp_main__`` (its
``__main__`` guard keeps the program from running again); where the main program cannot
be run again (``python -c``, stdin) a task that refers to it fails at ``submit``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import childkit
from childkit import ChildProcessExecutor, ErrCode

SCRIPT = textwrap.dedent('''
    import os, sys
    import childkit

    print("loaded as", __name__, file=sys.stderr, flush=True)
    VALUE = 0

    def square(x):
        return x * x

    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

    def make_point(x):
        return Point(x, -x)

    def init(value):
        global VALUE
        VALUE = value

    def get_value():
        return VALUE

    def sees(path):
        return os.path.exists(path)

    if __name__ == "__main__":
        mode = childkit.IsolationMode[sys.argv[1]]
        codec = "pickle" if mode == childkit.IsolationMode.NORMAL else "safe"
        with childkit.ChildProcessExecutor(2, None, init, (5,), isolation_mode=mode,
                                           result_codec=codec) as ex:
            print("square", ex.submit(square, 7).result(timeout=60))
            print("initialized", ex.submit(get_value).result(timeout=60))
            print("map", list(ex.map(square, range(5), chunksize=2)))
            print("sees secret", ex.submit(sees, os.path.abspath("secret.env")).result(60))
            if codec == "pickle":
                point = ex.submit(make_point, 3).result(timeout=60)
                print("point", type(point).__name__, point.x, point.y)
        print("done")
''')


def _run(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=180)


def test_script_functions_classes_and_initializer_run_in_normal_workers(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "secret.env").write_text("KEY=1")
    done = _run(["script.py", "NORMAL"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["square 49", "initialized 5", "map [0, 1, 4, 9, 16]",
                                        "sees secret True", "point Point 3 -3", "done"]
    # The program ran once; every worker ran the script as __mp_main__ (guard closed).
    loads = [line for line in done.stderr.splitlines() if line.startswith("loaded as")]
    assert loads.count("loaded as __main__") == 1
    assert 1 <= loads.count("loaded as __mp_main__") <= 2


def test_a_main_module_run_with_dash_m_works_too(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    done = _run(["-m", "script", "NORMAL"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == ["square 49", "initialized 5",
                                            "map [0, 1, 4, 9, 16]"]


def test_script_functions_run_in_isolated_workers(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "secret.env").write_text("KEY=1")  # beside the script: stays hidden
    done = _run(["script.py", "ISOLATED"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["square 49", "initialized 5", "map [0, 1, 4, 9, 16]",
                                        "sees secret False", "done"]


def test_python_c_fails_at_submit_saying_why(tmp_path: Path) -> None:
    code = textwrap.dedent('''
        import childkit
        def square(x):
            return x * x
        with childkit.ChildProcessExecutor(1) as ex:
            assert ex.submit(pow, 2, 3).result(timeout=60) == 8  # plain tasks still work
            try:
                ex.submit(square, 7)
            except childkit.ChildkitError as exc:
                assert isinstance(exc, ValueError)
                print(exc.code.name, exc)
            try:
                childkit.ChildProcessExecutor(1, initializer=square)
            except ValueError as exc:
                print("init", exc)
    ''')
    done = _run(["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("NCP_ERR_INVALID_PARAM")
    assert "__main__.square" in first and "python -c" in first
    assert "Define it in a module" in first
    assert second.startswith("init ") and "the initializer refers to __main__.square" in second


def test_a_script_read_from_stdin_fails_at_submit(tmp_path: Path) -> None:
    code = textwrap.dedent('''
        import childkit
        def square(x):
            return x * x
        with childkit.ChildProcessExecutor(1) as ex:
            try:
                ex.submit(square, 7)
            except ValueError as exc:
                print(exc)
    ''')
    done = _run(["-"], tmp_path, stdin=code)
    assert done.returncode == 0, done.stderr
    assert "stdin" in done.stdout and "__main__.square" in done.stdout


def test_a_string_that_says_main_is_not_a_reference() -> None:
    with ChildProcessExecutor(1) as ex:
        assert ex.submit(str.upper, "__main__").result(timeout=60) == "__MAIN__"


def test_main_script_that_fails_in_the_worker_fails_only_its_tasks(tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(textwrap.dedent('''
        import os, childkit
        def square(x):
            return x * x
        if os.environ.get("CHILDKIT_IN_WORKER") is None and __name__ != "__main__":
            raise RuntimeError("this script does not import in a worker")
        if __name__ == "__main__":
            with childkit.ChildProcessExecutor(1) as ex:
                try:
                    ex.submit(square, 7).result(timeout=60)
                except RuntimeError as exc:
                    print("failed:", exc)
                print("then", ex.submit(pow, 2, 5).result(timeout=60))
    '''))
    done = _run(["script.py"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["failed: this script does not import in a worker",
                                        "then 32"]


def test_bad_initializer_raises_with_a_code() -> None:
    with pytest.raises(TypeError, match="initializer must be a callable") as info:
        ChildProcessExecutor(1, initializer=5)  # type: ignore[arg-type]
    assert isinstance(info.value, childkit.ChildkitError)
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
