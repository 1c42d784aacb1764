"""The command line: the demo (the README's first command) and error reporting."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "childkit", *args], capture_output=True,
                          text=True, timeout=120)


def test_demo_runs_both_seed_scenarios() -> None:
    done = run("demo")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ADD(20, 22) -> 42" in out
    assert "got 'testParam'" in out
    assert "exit_code=0" in out and "demo succeeded" in out


def test_unknown_command_fails_with_usage() -> None:
    done = run("no-such-command")
    assert done.returncode == 2
    assert "usage" in done.stderr


def test_help() -> None:
    done = run("--help")
    assert done.returncode == 0 and "demo" in done.stdout
