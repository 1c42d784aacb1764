"""Fixtures of the native kit's tests: ``cc`` builds C programs (see native_build.py)."""

from __future__ import annotations

import pytest
from native_build import Build, make_cc


@pytest.fixture(scope="session")
def cc(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """gcc with warnings as errors, linking against the kit (see native_build.make_cc)."""
    return make_cc(tmp_path_factory)
