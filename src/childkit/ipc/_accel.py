"""Whether the C twins of the IPC hot path (``_speedups.c``) are in use.

They are built with the package when a C compiler is there; without them every caller
uses the Python functions they mirror. ``CHILDKIT_NO_SPEEDUPS=1`` in the environment (read
at import) keeps the Python ones, to compare the two or to rule the C code out of a bug.

An install without a compiler has no built module, and childkit quietly runs on the
Python twins. A module that *is* built for this Python but fails to import (a symbol
missing from this interpreter, a library missing from the machine) is a broken install:
a ``RuntimeWarning`` names the error (everything still works, only slower).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from types import ModuleType

ENV_VAR = "CHILDKIT_NO_SPEEDUPS"
MODULE = "childkit.ipc._speedups"


def _load() -> ModuleType | None:
    if os.environ.get(ENV_VAR, "") not in ("", "0"):
        return None
    try:
        from childkit.ipc import _speedups
    except ImportError as exc:
        if _is_built():
            warnings.warn(
                f"{MODULE} is built but does not import ({exc}); childkit runs on its "
                "slower pure-Python twins. Rebuild it for this Python (pip install "
                "--force-reinstall childkit), or set CHILDKIT_NO_SPEEDUPS=1 to silence this.",
                RuntimeWarning, stacklevel=2)
        return None
    return _speedups


def _is_built() -> bool:
    """Whether an extension module for ``_speedups`` built for this Python is installed."""
    try:
        return importlib.util.find_spec(MODULE) is not None
    except (ImportError, ValueError):
        return True


#: The C module, or ``None`` when it is not built or turned off.
speedups = _load()
