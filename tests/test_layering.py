"""The tree tells the architecture: one package per layer, imports only downwards.

The contracts live in pyproject.toml (``[tool.importlinter]``, also run as
``lint-imports`` in CI); here they run with the test suite, and a reversed contract shows
that the checker does see the imports it judges.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import childkit

importlinter_cli = pytest.importorskip("importlinter.cli", reason="pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(childkit.__file__).resolve().parent

#: What may sit at the top of src/childkit: the public face and one package per layer.
TOP_LEVEL = {"__init__.py", "__main__.py", "aio.py", "py.typed", "common", "ipc", "sandbox",
             "entry", "launcher", "process", "pool", "cli", "native"}


def test_the_layers_import_downwards_only() -> None:
    assert importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    # process imports launcher: with the two layers swapped the contract must break.
    config = tmp_path / "reversed.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "childkit"\n'
        '[[tool.importlinter.contracts]]\nname = "reversed"\ntype = "layers"\n'
        'layers = ["childkit.launcher", "childkit.process"]\n')
    assert importlinter_cli.lint_imports(config_filename=str(config)) != 0


def test_nothing_but_the_face_and_the_layer_packages_at_the_top() -> None:
    entries = {p.name for p in PACKAGE.iterdir()
               if p.name != "__pycache__" and not p.name.endswith((".so", ".pyc"))}
    assert entries <= TOP_LEVEL, f"not in a layer package: {sorted(entries - TOP_LEVEL)}"


@pytest.mark.parametrize("layer", sorted(n for n in TOP_LEVEL if "." not in n))
def test_every_layer_package_says_what_it_may_import(layer: str) -> None:
    init = PACKAGE / layer / "__init__.py"
    if not init.parent.is_dir():
        pytest.skip(f"{layer} is a module, not a package")
    doc = init.read_text().split('"""')[1]
    assert "May import:" in doc, f"{init}: the docstring does not say what the package may import"


#: The longest a module of Python may grow before it is split by concept (issue 11: "no
#: module of Python over about 700 lines").
MAX_MODULE_LINES = 750


def test_no_module_outgrows_one_concept() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these by concept: {long}"
