"""Issue 12, classes 1 to 3: an isolated child holds nothing of the launcher, the
application or another child, anywhere in its memory.

memory_markers.py (run in a fresh application process, with a launcher of its own)
plants a marker in the environment the launcher starts with, one in the application's
environment after that, and one in the params of a sibling started in the same burst;
the child then reads its whole readable memory (``/proc/self/mem`` over every mapping).
A NORMAL child, forked from the launcher, finds all three (so the search works); an
ISOLATED one, forked from the clean isolated template, none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("memory_markers.py")


def _run(mode: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, str(SCRIPT), mode], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def found() -> dict[str, dict[str, Any]]:
    return {mode: _run(mode) for mode in ("normal", "isolated")}


def test_a_normal_child_finds_every_marker(found: dict[str, dict[str, Any]]) -> None:
    """The control: the search reads the whole memory and finds what is there."""
    normal = found["normal"]
    assert normal["found"] == ["environment", "launcher", "sibling"], normal
    assert normal["mappings"] > 10 and normal["bytes"] > 1 << 20, normal


@pytest.mark.parametrize("marker", ["launcher", "environment", "sibling"])
def test_an_isolated_child_finds_no_marker(marker: str,
                                           found: dict[str, dict[str, Any]]) -> None:
    isolated = found["isolated"]
    assert isolated["mappings"] > 10 and isolated["bytes"] > 1 << 20, isolated
    assert marker not in isolated["found"], isolated


def test_the_isolated_template_has_an_empty_environment(
        found: dict[str, dict[str, Any]]) -> None:
    templates = found["isolated"]["templates"]
    assert len(templates) == 1 and templates[0]["environ"] == "", templates
    assert found["normal"]["templates"] == []  # NORMAL children never start one
