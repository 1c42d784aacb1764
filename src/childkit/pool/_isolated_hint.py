"""What an ISOLATED executor's task that cannot import one of the user's modules says.

A sandboxed worker sees only the interpreter's files, the main script's own file and
``readonly_paths``: a task function (or anything pickled with it) from another module of
the user's fails to unpickle there with ``ModuleNotFoundError``. This process can see
where that module would have come from, so the error the future gets names it and the
directory, and says that ``readonly_paths`` makes it visible.
"""

from __future__ import annotations

import importlib.util
import os
import re

_NO_MODULE = re.compile(r"No module named '([^']+)'")


def _origin(name: str) -> str | None:
    """Where ``name`` (a module of this process) comes from: its file or package dir."""
    top = name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return next(iter(spec.submodule_search_locations), None)
    if spec.origin and os.path.isabs(spec.origin):
        return spec.origin
    return None


def explain(exc: BaseException) -> BaseException:
    """``exc`` itself, or for a ``ModuleNotFoundError`` of a module this process can
    import, a ``ModuleNotFoundError`` saying where it lives and how to show it."""
    if type(exc) is not ModuleNotFoundError:
        return exc
    found = _NO_MODULE.search(str(exc))
    if found is None:
        return exc
    name = found.group(1)
    origin = _origin(name)
    if origin is None:
        return exc
    better = ModuleNotFoundError(
        f"{exc} in an ISOLATED worker: module {name.split('.')[0]!r} comes from {origin} "
        f"(in {os.path.dirname(origin)}), which the sandbox does not show; pass "
        f"options=ChildProcessOptions(isolation_mode=IsolationMode.ISOLATED, "
        f"readonly_paths=[{origin!r}]) (or its directory) to make it visible, read-only",
        name=name)
    better.__cause__ = exc.__cause__
    return better
