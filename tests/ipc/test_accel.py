"""childkit.ipc._accel: a built C extension that does not import is said loudly (naming
the error); one that was never built (no compiler) is quietly replaced by the Python twins."""

from __future__ import annotations

import importlib.machinery
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
