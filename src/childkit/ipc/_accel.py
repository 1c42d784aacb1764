"""Whether the C twins of the IPC hot path (``_speedups.c``) are in use.

They are built with the package when a C compiler is there; without them every caller
uses the Python functions they mirror. ``CHILDKIT_NO_SPEEDUPS=1`` in the environment (read
at import) keeps the Python ones, to compare the two or to rule the C code out of a bug.
"""

from __future__ import annotations

import os
from types import ModuleType

ENV_VAR = "CHILDKIT_NO_SPEEDUPS"


def _load() -> ModuleType | None:
    if os.environ.get(ENV_VAR, "") not in ("", "0"):
        return None
    try:
        from childkit.ipc import _speedups
    except ImportError:
        return None
    return _speedups


#: The C module, or ``None`` when it is not built or turned off.
speedups = _load()
