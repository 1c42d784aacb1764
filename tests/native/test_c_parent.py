"""libchild_process.so: a C parent from the seed's snippets (seed_parent.c) starting the
seed's C child, a Python child and args-mode children through childkit's launcher (via
the agent, childkit.native._agent), with exit callbacks, kill and every argument check."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from native_build import HERE, Build

from child_helpers import no_child_leaks


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield


def test_c_parent(cc: Build) -> None:
    child = cc("libchildprocesssample.so", ["seed_child.c"], flags=["-shared", "-fPIC"])
    args_lib = cc("libchild_main.so", ["child_main.c"], flags=["-shared", "-fPIC"])
    parent = cc("seed_parent", ["seed_parent.c"])
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([str(parent), str(child), "py_seed_worker", str(args_lib)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.strip().endswith("0 failures")


def test_openharmony_conformance(cc: Build) -> None:
    """OpenHarmony's own expectations of the API (its unit test, implementation and XTS
    suite; ohos_ncp_conformance.c names which), the child library found by bare name on
    LD_LIBRARY_PATH as the XTS suite's "libentry.so" is."""
    child = cc("libohos_ncp_child.so", ["ohos_ncp_child.c"], flags=["-shared", "-fPIC"])
    cc("libohos_ncp_nullstub.so", ["ohos_ncp_child.c"],
       flags=["-shared", "-fPIC", "-DNULL_STUB"])
    parent = cc("ohos_ncp_conformance", ["ohos_ncp_conformance.c"])
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
        [str(child.parent), os.environ.get("LD_LIBRARY_PATH", "")])}
    result = subprocess.run([str(parent)], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.strip().endswith("0 failures")


def test_agent_dies_with_its_parent(cc: Build, tmp_path: Path) -> None:
    """No orphans: the C parent killed, its agent, launcher and children go too."""
    program = tmp_path / "spawn_and_die.c"
    program.write_text(
        '#include <AbilityKit/native_child_process.h>\n#include <stdio.h>\n#include <unistd.h>\n'
        'int main(void) {\n'
        '    if (!OH_Ability_IsNativeChildProcessSupported()) return 1;\n'
        '    printf("%d\\n", (int)getpid()); fflush(stdout);\n'
        '    pause(); return 0;\n}\n')
    exe = cc("spawn_and_die", [program])
    proc = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())  # type: ignore[union-attr]
        agents = _children_of(pid)
        assert agents, "no agent was started"
    finally:
        proc.kill()
        proc.wait(30)
        proc.stdout.close()  # type: ignore[union-attr]
    from leakcheck import wait_until

    assert wait_until(lambda: not any(Path(f"/proc/{a}").exists() and
                                      _state(a) != "Z" for a in agents), 30)


def _children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_the_agent_keeps_none_of_the_programs_fds(cc: Build, tmp_path: Path) -> None:
    """The agent outlives every call: a pipe's write end the C program had open when it
    started would deny the program its end-of-file. Low and high fd numbers."""
    program = tmp_path / "pipe_then_start.c"
    program.write_text(
        '#include <AbilityKit/native_child_process.h>\n#include <poll.h>\n'
        '#include <stdio.h>\n#include <unistd.h>\n'
        'static int eof_after_closing(int r, int w) {\n'
        '    close(w);\n'
        '    struct pollfd p = {r, POLLIN, 0};\n'
        '    char c;\n'
        '    return poll(&p, 1, 30000) == 1 && read(r, &c, 1) == 0;\n'
        '}\n'
        'int main(void) {\n'
        '    int low[2], high[2];\n'
        '    if (pipe(low) < 0 || pipe(high) < 0) return 2;\n'
        '    if (dup2(high[1], 900) < 0) return 2;\n'
        '    close(high[1]);\n'
        '    if (!OH_Ability_IsNativeChildProcessSupported()) return 3;  /* the agent starts */\n'
        '    printf("%d %d\\n", eof_after_closing(low[0], low[1]),\n'
        '           eof_after_closing(high[0], 900));\n'
        '    return 0;\n}\n')
    exe = cc("pipe_then_start", [program])
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "1 1\n"
