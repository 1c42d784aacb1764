"""The command line: the demo (the README's first command), ``run``'s inputs and exit
report, error reporting (name, message, hint; never a traceback), ``--help``/``--json``,
the bench pass-through and the CLI's documentation page."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from child_helpers import fd_count, no_child_leaks
from childkit.cli import _main as cli
from childkit.common._errors import ChildkitError, ErrCode
from childkit.ipc import DeadRemoteObjectError, IPCError, IPCErrorCode
from childkit.process._manager import manager

TESTS = Path(__file__).parent.parent
ROOT = TESTS.parent
INVALID = "NCP_ERR_INVALID_PARAM"


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


def test_bench_quick_runs_every_benchmark(tmp_path: Path) -> None:
    # --json keeps the quick run's figures out of bench/results/latest.json.
    results = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "childkit", "bench", "--quick",
                           "--json", str(results)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "sync round trip" in done.stdout and "multiprocessing" in done.stdout
    assert "Python request/reply: parcels" in done.stdout  # the Python floor
    assert f"results written to {results}" in done.stdout
    data = json.loads(results.read_text())
    assert data["quick"] is True and data["failures"] == []
    assert len(data["rows"]) > 5
    assert {"metric", "key"} <= set(data["rows"][0])
    # The bench extra (installed by CI with the tests) brings the RPC and executor peers:
    # the quick run must have measured them, not skipped them.
    peers = {name for row in data["rows"] for name in row.get("peers", {})}
    for module, peer in (("loky", "loky"), ("Pyro5", "Pyro5"), ("rpyc", "RPyC")):
        if importlib.util.find_spec(module) is not None:
            assert any(peer in name for name in peers), (peer, sorted(peers))


# ------------------------------------------------------------------ in-process helpers


@pytest.fixture
def inproc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
           ) -> Iterator[pytest.CaptureFixture[str]]:
    """Call cli.main in this process: sys.path restored afterwards, output captured, and
    no exit callback left registered."""
    monkeypatch.setattr(sys, "path", [*sys.path])
    callbacks = list(manager().exit_callbacks._callbacks)
    yield capsys
    assert manager().exit_callbacks._callbacks == callbacks


def no_traceback_error(capsys: pytest.CaptureFixture[str], name: str, *words: str) -> str:
    """The stderr of a failed command: the code's name, its value, the words, a hint."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    first, _, hint = err.partition("\nhint: ")
    assert re.match(rf"childkit: {name} \(\d+\): ", first), err
    assert hint.strip(), err
    for word in words:
        assert word in first, (word, err)
    return err


# ------------------------------------------------------------------ run: --param-file


def test_param_file_missing_is_an_error_not_a_traceback() -> None:
    done = run("run", "workers.args_entries:exit_with", "--param-file", "/nonexistent/p.txt",
               cwd="tests")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert INVALID in done.stderr and "/nonexistent/p.txt" in done.stderr
    assert "No such file or directory" in done.stderr and "\nhint: " in done.stderr


def test_param_file_bad_inputs(inproc: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"ok\xff\xfe")
    assert cli.main(["run", "x:y", "--param-file", str(binary)]) == 1
    no_traceback_error(inproc, INVALID, "not UTF-8", "0xff at offset 2")
    assert cli.main(["run", "x:y", "--param-file", str(tmp_path)]) == 1  # a directory
    no_traceback_error(inproc, INVALID, "cannot read it")
    # An endless file is refused after 150 KB + 1 bytes, not read forever.
    assert cli.main(["run", "x:y", "--param-file", "/dev/zero"]) == 1
    no_traceback_error(inproc, INVALID, "over 153600 bytes")


def test_param_file_passes_its_text(inproc: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    params, out = tmp_path / "params.txt", tmp_path / "out.txt"
    params.write_text("héllo\n", encoding="utf-8")
    with no_child_leaks():
        status = cli.main(["run", "workers.args_entries:write_params", "--param-file",
                           str(params), "--fd", f"out={out}:w", "--json"])
    assert status == 0, inproc.readouterr().err
    assert out.read_text(encoding="utf-8") == "héllo\n"
    report = json.loads(inproc.readouterr().out)
    assert report["exit_code"] == 0 and report["timed_out"] is False


def test_json_errors_are_also_data_on_stdout(inproc: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "x:y", "--param-file", "/nonexistent", "--json"]) == 1
    out = json.loads(inproc.readouterr().out)
    assert out["error"]["name"] == INVALID and out["error"]["code"] == 401
    assert "/nonexistent" in out["error"]["message"] and out["error"]["hint"]


# ------------------------------------------------------------------ hints for every code


def test_every_err_code_has_a_hint() -> None:
    for code in ErrCode:
        assert cli._HINTS.get(code, "").strip(), code.name


def test_every_ipc_error_code_has_a_hint() -> None:
    for code in IPCErrorCode.__members__.values():  # aliases too
        assert cli.ipc_hint(code).strip(), code.name
    assert "stub's own" in cli.ipc_hint(1909123)
    assert cli.ipc_hint(42).strip()


def test_ipc_errors_print_name_message_and_hint(inproc: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def dead(args: argparse.Namespace) -> int:
        raise DeadRemoteObjectError("the peer went away")

    monkeypatch.setattr(cli, "_cmd_demo", dead)
    assert cli.main(["demo"]) == 1
    err = no_traceback_error(inproc, "OH_IPC_DEAD_REMOTE_OBJECT", "the peer went away")
    assert cli.ipc_hint(IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT) in err

    def user_error(args: argparse.Namespace) -> int:
        raise IPCError(1909007, "the stub said no")

    monkeypatch.setattr(cli, "_cmd_demo", user_error)
    assert cli.main(["demo"]) == 1
    no_traceback_error(inproc, "user error 1909007", "the stub said no")


# ------------------------------------------------------------------ run: --timeout


@pytest.mark.parametrize("text", ["0", "-1", "-0.5", "0.0", "nan", "inf", "-inf", "1e300",
                                  "abc", ""])
def test_timeout_refuses_non_positive_and_non_finite(text: str) -> None:
    with pytest.raises(ChildkitError) as caught:
        cli.parse_timeout(text)
    assert caught.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    assert "--timeout" in caught.value.message


@pytest.mark.parametrize(("text", "seconds"), [("0.001", 0.001), ("1e-6", 1e-6), ("60", 60.0)])
def test_timeout_accepts_small_positive_values(text: str, seconds: float) -> None:
    assert cli.parse_timeout(text) == seconds


@pytest.mark.parametrize("value", ["0", "-1"])
def test_run_refuses_a_bad_timeout_before_anything_starts(
        inproc: pytest.CaptureFixture[str], tmp_path: Path, value: str) -> None:
    out = tmp_path / "out.txt"
    with no_child_leaks():
        status = cli.main(["run", "workers.args_entries:write_params", "--param", "x",
                           "--fd", f"out={out}:w", "--timeout", value])
    assert status == 1
    no_traceback_error(inproc, INVALID, f"--timeout {value!r}")
    assert not out.exists()  # nothing opened, no child started


def test_run_with_a_timeout_the_child_beats(inproc: pytest.CaptureFixture[str]) -> None:
    with no_child_leaks():
        assert cli.main(["run", "workers.args_entries:exit_with", "--param", "7",
                         "--timeout", "120", "--json"]) == 7
    report = json.loads(inproc.readouterr().out)
    assert report["exit_code"] == 7 and report["timed_out"] is False


# ------------------------------------------------------------------ run: --fd


def test_duplicate_fd_names_are_refused_before_any_is_opened(
        inproc: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    before = fd_count()
    assert cli.main(["run", "x:y", "--fd", f"out={first}:w", "--fd", f"out={second}:w"]) == 1
    no_traceback_error(inproc, INVALID, "'out' is given twice")
    assert fd_count() == before
    assert not first.exists() and not second.exists()


def test_no_fd_leaks_on_any_error_path(inproc: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    hosts = "/etc/hosts"
    before = fd_count()
    # The second --fd cannot be opened: the first, already open, is closed again.
    assert cli.main(["run", "x:y", "--fd", f"a={hosts}", "--fd", "b=/nonexistent/x"]) == 1
    no_traceback_error(inproc, INVALID, "cannot open '/nonexistent/x'")
    assert fd_count() == before
    # Too many fds: refused before any is opened.
    many = [arg for i in range(17) for arg in ("--fd", f"f{i}={hosts}")]
    assert cli.main(["run", "x:y", *many]) == 1
    no_traceback_error(inproc, INVALID, "at most 16")
    assert fd_count() == before
    # The fds are open when the start fails (a name the start refuses; an unknown module).
    with no_child_leaks():
        assert cli.main(["run", "x:y", "--fd", f"{'n' * 21}={hosts}"]) == 1
        no_traceback_error(inproc, INVALID)
        assert cli.main(["run", "no_such_module_xyz:main", "--fd", f"a={hosts}"]) == 1
        no_traceback_error(inproc, "NCP_ERR_LIB_LOADING_FAILED", "no_such_module_xyz")


def test_run_refuses_isolation_flags_without_isolated(inproc: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert cli.main(["run", "x:y", "--allow-reduced"]) == 1
    no_traceback_error(inproc, INVALID, "--allow-reduced needs --isolated")
    assert cli.main(["run", "x:y", "--allow-subprocesses"]) == 1
    no_traceback_error(inproc, INVALID, "--allow-subprocesses needs --isolated")
    assert cli.main(["run", "x:y", "--isolated", "--limit", "cpu=1,cpu=2"]) == 1
    no_traceback_error(inproc, INVALID, "given twice")
    assert cli.main(["run", "x:y", "--isolated", "--limit", "mem=lots"]) == 1
    no_traceback_error(inproc, INVALID, "not a whole number")


# ------------------------------------------------------------------ --help, --json


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _subparsers()
    assert set(commands) == {"demo", "run", "sandbox-check", "bench"}
    for name in commands:
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0
        assert f"usage: childkit {name}" in capsys.readouterr().out


def test_json_where_output_is_data() -> None:
    commands = _subparsers()
    for name in ("run", "sandbox-check"):
        assert "--json" in commands[name]._option_string_actions, name


# ------------------------------------------------------------------ bench pass-through


def test_bench_flags_mirror_python_m_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.__main__ import build_parser as bench_parser

    ours = set(_subparsers()["bench"]._option_string_actions)
    theirs = set(bench_parser()._option_string_actions)
    assert ours == theirs
    argv = ["bench", "--quick", "--json", "r.json", "--write-docs", "--from-json", "in.json",
            "--only", "ipc_bench,bulk"]
    passed = cli._bench_argv(cli.build_parser().parse_args(argv))
    assert passed == argv[1:]
    parsed = bench_parser().parse_args(passed)
    assert (parsed.quick, parsed.json, parsed.write_docs, parsed.from_json, parsed.only) == (
        True, Path("r.json"), True, Path("in.json"), "ipc_bench,bulk")
    assert cli._bench_argv(cli.build_parser().parse_args(["bench"])) == []


def test_bench_outside_a_checkout_is_an_error(inproc: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    def missing(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name="bench")

    monkeypatch.setattr(importlib, "import_module", missing)
    assert cli.main(["bench", "--quick"]) == 1
    no_traceback_error(inproc, "NCP_ERR_LIB_LOADING_FAILED", "source checkout")


# ------------------------------------------------------------------ python -m childkit.sandbox


def test_sandbox_module_has_help_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "childkit.sandbox", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "usage: python -m childkit.sandbox" in done.stdout
    assert "seccomp" not in done.stdout  # help, not the report
    from childkit.sandbox import LAYERS
    from childkit.sandbox.__main__ import main as sandbox_main

    status = sandbox_main([])
    assert status in (0, 1) and "seccomp" in capsys.readouterr().out
    assert sandbox_main(["--json"]) == status
    assert set(json.loads(capsys.readouterr().out)) == set(LAYERS)
    with pytest.raises(SystemExit) as bad:
        sandbox_main(["--bogus"])
    assert bad.value.code == 2


# ------------------------------------------------------------------ the documentation


def test_cli_page_documents_every_command_and_flag() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    for name, parser in _subparsers().items():
        assert f"## `childkit {name}`" in page, name
        for option in parser._option_string_actions:
            if option not in ("-h", "--help"):
                assert f"`{option}" in page, (name, option)
    for status in ("124", "128+N", "130"):
        assert status in page
    assert "cli.md" in (ROOT / "mkdocs.yml").read_text()
    assert "(cli.md)" in (ROOT / "docs" / "index.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for page_name in ("cli", "reference", "executor"):
        assert f"(docs/{page_name}.md)" in readme, page_name


def test_run_allow_subprocesses_reaches_the_limits() -> None:
    from childkit.cli import _main

    parser = cli.build_parser()
    args = parser.parse_args(["run", "x:y", "--isolated", "--allow-subprocesses",
                              "--limit", "cpu=5"])
    limits = _main._run_options(args).limits
    assert limits.allow_subprocesses is True and limits.cpu_seconds == 5
    # Without the flag the child stays one process where no cgroup holds its limits.
    args = parser.parse_args(["run", "x:y", "--isolated", "--limit", "cpu=5"])
    assert _main._run_options(args).limits.allow_subprocesses is False
