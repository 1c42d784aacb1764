"""childkit.ipc._accel: a built C extension that does not import is said loudly (naming
the error); one that was never built (no compiler) is quietly replaced by the Python twins."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import childkit.ipc
from childkit.ipc import _accel


@pytest.fixture
def package_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``childkit.ipc`` searched in an empty directory, with no _speedups imported yet."""
    monkeypatch.setattr(childkit.ipc, "__path__", [str(tmp_path)])
    monkeypatch.delitem(sys.modules, _accel.MODULE, raising=False)
    monkeypatch.delattr(childkit.ipc, "_speedups", raising=False)
    monkeypatch.delenv(_accel.ENV_VAR, raising=False)
    return tmp_path


def test_a_built_extension_that_fails_to_import_warns_naming_the_error(
        package_dir: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package_dir / f"_speedups{suffix}").write_bytes(b"not an ELF file")
    with pytest.warns(RuntimeWarning, match=r"_speedups is built but does not import \(.+\)"):
        assert _accel._load() is None


def test_an_extension_never_built_is_quiet(package_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _accel._load() is None


def test_turned_off_by_the_environment_is_quiet(package_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package_dir / f"_speedups{suffix}").write_bytes(b"not an ELF file")
    monkeypatch.setenv(_accel.ENV_VAR, "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _accel._load() is None


# ---------------------------------------------------------------------------- the build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    """What ``setup.py build_ext`` reads, copied (the C sources and headers, no build),
    with a pyproject.toml of the package layout alone: the interpreter's own setuptools
    runs it, which may predate the real one's metadata (pip builds in an isolated
    environment with a current setuptools)."""
    pytest.importorskip("setuptools", reason="this interpreter has no setuptools to build with")
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "childkit"\nversion = "0"\n'
        '[tool.setuptools.package-dir]\n"" = "src"\n')
    (tmp_path / "src/childkit/ipc").mkdir(parents=True)
    shutil.copy(ROOT / "src/childkit/ipc/_speedups.c", tmp_path / "src/childkit/ipc")
    shutil.copytree(ROOT / "src/childkit/native/csrc", tmp_path / "src/childkit/native/csrc")
    shutil.copytree(ROOT / "src/childkit/native/include",
                    tmp_path / "src/childkit/native/include")
    return tmp_path


def _build(tree: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # CC=false: every compile fails. (No CMake file: the native kit's build fails too,
    # which is a warning unless CHILDKIT_REQUIRE_NATIVE is set.)
    return subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=tree, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CC": "false", **env})


def test_a_failed_build_removes_the_older_build_it_would_have_replaced(
        source_copy: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    stale = source_copy / "src/childkit/ipc" / f"_speedups{suffix}"
    stale.write_bytes(b"an older build")
    os.utime(stale, (1, 1))  # older than the sources: they were edited since
    done = _build(source_copy)
    assert done.returncode == 0, done.stderr  # optional: the build goes on without it
    assert not stale.exists()  # the Python twins run, as the warning says
    assert "removed" in done.stderr and "_speedups" in done.stderr


def test_a_failed_build_is_an_error_when_the_c_code_is_required(source_copy: Path) -> None:
    done = _build(source_copy, CHILDKIT_REQUIRE_NATIVE="1")
    assert done.returncode != 0
    assert "building childkit.ipc._speedups failed" in done.stderr
