"""Every fenced ``python`` snippet of README.md and docs/*.md runs, as a reader would run
it, so that the docs cannot drift from the code (examples/ run in test_examples.py).

How a snippet runs, in a fresh directory per page (the working directory of every
snippet of that page, and on ``sys.path``): a line ``# NAME.py...`` at the start of a
line begins a module, written there as ``NAME.py`` for the page's later snippets; a
line ``# the parent`` begins the script, run at once with ``python -X dev`` (a
ResourceWarning on stderr fails it too: a snippet must close what it opens). A snippet
without either header is all script; one that is only a module with an ``if __name__
== "__main__":`` block is run as ``python NAME.py``.

A snippet that cannot run on its own (a fragment that needs a proxy from an earlier one,
an ``await`` outside a coroutine, a file the reader brings) is listed in
:data:`NOT_STANDALONE` with the reason, keyed by its page and a line it contains; a key
that matches no snippet fails too, so the list cannot go stale.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
MODULE = re.compile(r"# ([A-Za-z_][A-Za-z0-9_]*)\.py\b")

#: (page, a line the snippet contains) -> why it cannot run on its own.
NOT_STANDALONE: dict[tuple[str, str], str] = {
    ("README.md", "class Calculator(RemoteStub):              # lives in the child"):
        "a fragment: the parent's half uses `proxy`, a proxy to a child the page's first "
        "snippet shows how to get",
    ("docs/guide.md", "def on_started(code, proxy):"):
        "a fragment: shows the callback's signature with `...` as its body",
    ("docs/guide.md", "class Listener(RemoteStub):"):
        "a fragment: `proxy` is a child's proxy from the snippets above",
    ("docs/guide.md", 'proxy.add_death_recipient(lambda: print("child died"))'):
        "a one-line fragment on a `proxy` from the snippets above",
    ("docs/guide.md", "child = await aio.connect"):
        "top-level `await`: the lines of a coroutine",
    ("docs/guide.md", '"parser:parse_main",'):
        "needs the reader's own parser module and input file",
    ("docs/ipc.md", "class Calculator(RemoteStub):"):
        "a fragment: the caller's half uses `proxy` from a connection not shown",
    ("docs/ipc.md", "aproxy = aio.AsyncProxy(proxy)"):
        "top-level `await` on a `proxy` not shown: the lines of a coroutine",
    ("docs/ipc.md", 'region = Ashmem.create("frames", 256 * 1024 * 1024)'):
        "a fragment: hands the region to a `proxy` not shown",
    ("docs/ipc.md", "with SharedArray.create((4096, 4096), \"float32\") as shared:"):
        "a fragment: hands the array to a `proxy` not shown",
    ("docs/guide.md", 'with ChildProcessPool("myapp.worker", size=4) as pool:'):
        "needs the reader's myapp.worker module",
    ("docs/executor.md", "from childkit.ipc import MessageParcel, DeadRemoteObjectError"):
        "needs the reader's worker module (myapp.worker)",
    ("docs/guide.md", "def on_exit(pid, info):"):
        "a fragment: `pid` is a child started by the snippets above",
    ("docs/ipc.md", "data.write_file_descriptor(fd)"):
        "a fragment: `fd`, `my_stub` and `region` are the reader's",
    ("docs/sandbox.md", "enter(config, keep_fds=[ipc_fd])"):
        "enter() is for a freshly forked child: it would sandbox the test's interpreter",
    ("docs/sandbox.md", '"parsers.pdf:main"'):
        "needs the reader's parsers.pdf and plugins.host modules and the document `fd`",
}


def _snippets() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        name = str(page.relative_to(ROOT))
        for match in FENCE.finditer(text):
            found.append((name, text[:match.start()].count("\n") + 1, match.group(1)))
    return found


SNIPPETS = _snippets()


def _reason(page: str, code: str) -> str | None:
    for (where, line), reason in NOT_STANDALONE.items():
        if where == page and line in code:
            return reason
    return None


def test_every_not_standalone_mark_matches_a_snippet() -> None:
    for (where, line), reason in NOT_STANDALONE.items():
        assert reason
        assert any(page == where and line in code for page, _, code in SNIPPETS), (
            f"{where}: no snippet contains {line!r} any more: drop or update its mark")


def _run(script: Path, cwd: Path, label: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd), *(p for p in sys.path if p)]))
    done = subprocess.run([sys.executable, "-X", "dev", str(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)
    text = script.read_text()
    assert done.returncode == 0, f"{label} failed:\n{text}\n{done.stdout}\n{done.stderr}"
    assert "ResourceWarning" not in done.stderr, f"{label} leaks:\n{done.stderr}"


def _sections(code: str) -> tuple[dict[str, str], str]:
    """The modules (name -> text) and the script of a snippet."""
    modules: dict[str, list[str]] = {}
    script: list[str] = []
    current = script
    for line in code.splitlines(keepends=True):
        header = MODULE.match(line)
        if header is not None:
            current = modules.setdefault(header.group(1), [])
        elif line.startswith("# the parent"):
            current = script
        current.append(line)
    return {name: "".join(lines) for name, lines in modules.items()}, "".join(script)


@pytest.mark.parametrize("page", sorted({page for page, _, _ in SNIPPETS}))
def test_every_snippet_of_the_page_runs(page: str, tmp_path: Path) -> None:
    ran = 0
    for index, (where, line, code) in enumerate(SNIPPETS):
        if where != page or _reason(where, code) is not None:
            continue
        label = f"{where}:{line}"
        modules, script = _sections(code)
        for name, text in modules.items():
            (tmp_path / f"{name}.py").write_text(text)
        if script.strip():
            path = tmp_path / f"snippet_{index}.py"
            path.write_text(script)
        elif len(modules) == 1 and '__name__ == "__main__"' in next(iter(modules.values())):
            path = tmp_path / f"{next(iter(modules))}.py"  # a script file: python NAME.py
        else:
            continue  # modules for the page's later snippets
        _run(path, tmp_path, label)
        ran += 1
    marked = sum(1 for where, _, code in SNIPPETS if where == page and _reason(where, code))
    assert ran or marked, page
