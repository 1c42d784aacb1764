"""Every example in examples/ runs as ``python examples/X.py``, exits 0 and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from childkit import ChildkitError, ChildProcessOptions, ErrCode, IsolationMode

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=120, cwd=EXAMPLES.parent, check=False)


@pytest.mark.parametrize(("name", "args", "needles"), [
    ("seed_ipc_child.py", (), ["on_started: NCP_NO_ERROR", "ADD(20, 22) -> 42",
                               "death recipient called", "exit_code=0", "seed_ipc_child: OK"]),
    ("seed_args_child.py", (), ["'params': 'testParam'", "'same_args_from_thread': True",
                                "hello from the parent's file", "seed_args_child: OK"]),
    ("plugin_host.py", (), ["DeadRemoteObjectError", "killed by SIGSEGV",
                            "upper('still here') -> 'STILL HERE'", "-> 'detratser'",
                            "plugin_host: OK"]),
    # 16 MiB rather than the default 256: the same code path, in a fraction of the time.
    ("numpy_handover.py", ("16",), ["handed 16 MiB", "scaled the array in place",
                                    "numpy_handover: OK"]),
])
def test_example_runs_and_succeeds(name: str, args: tuple[str, ...], needles: list[str]) -> None:
    done = run_example(name, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    for needle in needles:
        assert needle in done.stdout, (needle, done.stdout)


def _isolated_refusal() -> ChildkitError | None:
    """Why this machine refuses isolated children (the refusal start would raise), or None."""
    try:
        ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED).check_supported()
    except ChildkitError as exc:
        return exc
    return None


def test_sandboxed_parser_parses_in_the_sandbox_or_refuses_clearly() -> None:
    done = run_example("sandboxed_parser.py")
    refusal = _isolated_refusal()
    if refusal is None:
        # The sandbox is there: the file is parsed and the malicious include finds nothing.
        assert done.returncode == 0, done.stdout + done.stderr
        assert "parsed settings: {'name': 'report', 'pages': '12'}" in done.stdout
        assert "include /etc/passwd: refused" in done.stdout
        assert "sandboxed_parser: OK" in done.stdout
    else:
        # No sandbox here: the example must refuse, say why, and never parse unsandboxed.
        assert refusal.code == ErrCode.NCP_ERR_NOT_SUPPORTED
        assert done.returncode == 3, done.stdout + done.stderr
        assert "NCP_ERR_NOT_SUPPORTED" in done.stderr
        assert "parsed settings" not in done.stdout


def test_every_example_is_tested() -> None:
    """A new example must be added above (workers and plugins are run through them)."""
    tested = {"seed_ipc_child.py", "seed_args_child.py", "plugin_host.py",
              "numpy_handover.py", "sandboxed_parser.py"}
    helpers = {"seed_ipc_worker.py", "numpy_worker.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested | helpers
