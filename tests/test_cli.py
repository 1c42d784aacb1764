"""The command line: the demo (the README's first command) and error reporting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def run(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "childkit", *args], capture_output=True,
                          text=True, timeout=120, cwd=TESTS.parent / cwd if cwd else None)


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


def test_run_passes_params_and_fds_and_reports_exit(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    done = run("run", "workers.args_entries:write_params", "--param", "hello",
               "--fd", f"out={out}:w", "--json", cwd="tests")
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "hello"
    assert '"exit_code": 0' in done.stdout


def test_run_isolated_with_limits_reports_the_limit(tmp_path: Path) -> None:
    done = run("run", "workers.escape_entry:burn_cpu", "--isolated", "--limit", "cpu=1",
               "--json", cwd="tests")
    assert done.returncode == 128 + 24, done.stdout + done.stderr  # SIGXCPU
    assert "cpu time limit" in done.stdout


def test_run_exit_code_and_errors() -> None:
    done = run("run", "workers.args_entries:exit_with", "--param", "7", cwd="tests")
    assert done.returncode == 7
    done = run("run", "no_such_module:main")
    assert done.returncode == 1
    assert "NCP_ERR_LIB_LOADING_FAILED" in done.stderr and "hint:" in done.stderr
    done = run("run", "workers.args_entries:exit_with", "--limit", "cpu=1", cwd="tests")
    assert done.returncode == 1 and "--limit needs --isolated" in done.stderr
    done = run("run", "workers.args_entries:exit_with", "--isolated", "--limit", "bogus=1",
               cwd="tests")
    assert done.returncode == 1 and "NCP_ERR_INVALID_PARAM" in done.stderr


def test_run_timeout_kills_the_child() -> None:
    done = run("run", "workers.escape_entry:burn_cpu", "--timeout", "0.5", cwd="tests")
    assert done.returncode == 124
    assert "timeout" in done.stderr


def test_sandbox_check() -> None:
    done = run("sandbox-check")
    assert done.returncode in (0, 1)
    assert "seccomp" in done.stdout and "landlock" in done.stdout
    done = run("sandbox-check", "--json")
    assert '"supported"' in done.stdout


def test_bench_quick_runs_every_benchmark() -> None:
    done = subprocess.run([sys.executable, "-m", "childkit", "bench", "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=TESTS.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "sync round trip" in done.stdout and "multiprocessing" in done.stdout
    assert "Python request/reply: parcels" in done.stdout  # the Python floor
