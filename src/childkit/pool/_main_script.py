"""The parent's main script in an executor's workers, as ``multiprocessing``'s spawn does.

A function or class defined in the script run as ``python script.py`` is pickled by
reference as ``__main__.name``. A worker is forked from childkit's launcher, whose
``__main__`` is not that script, so before the first task that refers to ``__main__``
the worker runs the script itself under the name ``__mp_main__`` (the
``if __name__ == "__main__":`` guard keeps the program from running again) and makes it
its ``__main__`` too; ``multiprocessing``'s spawn and forkserver workers do the same.
The parent registers its own ``__main__`` as ``__mp_main__`` as well, so results whose
classes were defined in the script come back.

Where the code of ``__main__`` lives nowhere a worker can run it again (an interactive
session, ``python -c``, a script read from stdin), a task that refers to it fails at
``submit`` with :class:`MainNotImportableError`, saying why and what to do.
"""

from __future__ import annotations

import io
import os
import pickle
import runpy
import sys
import types
from dataclasses import dataclass
from typing import Any

from childkit.common._errors import ChildkitError, ErrCode

#: What a worker's copy of the main script is called (multiprocessing's name for it).
MP_MAIN = "__mp_main__"


class MainNotImportableError(ChildkitError, ValueError):
    """A task (or initializer) refers to a name of ``__main__`` that a worker cannot get:
    the main program has no file or module to run again (``NCP_ERR_INVALID_PARAM``)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrCode.NCP_ERR_INVALID_PARAM, message)


@dataclass(frozen=True)
class MainScript:
    """How a worker runs the parent's main program again: ``kind`` is ``"path"`` (a
    script file, or a directory or zip with ``__main__.py``) or ``"module"`` (``python
    -m name``); ``value`` the absolute path or the module name."""

    kind: str
    value: str


def main_script() -> MainScript | None:
    """The parent's main program as a worker can run it again, or ``None`` (an interactive
    session, ``python -c``, stdin, or the ``__main__`` of a package run with ``-m``)."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str):
        if name == "__main__" or name.endswith(".__main__"):
            return None  # a package's __main__: running it again would run the program
        return MainScript("module", name)
    path = getattr(main, "__file__", None)
    if not isinstance(path, str) or not path or path.startswith("<"):
        return None
    path = os.path.abspath(path)
    return MainScript("path", path) if os.path.exists(path) else None


def why_not_importable() -> str:
    """Why :func:`main_script` found nothing to run again, in the user's terms."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if isinstance(getattr(spec, "name", None), str):
        return (f"the main module is a package's {spec.name!r}, which a worker cannot run "  # type: ignore[union-attr]
                "again without running the whole program")
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return "it was defined in an interactive session, which a worker cannot re-run"
    if sys.argv and sys.argv[0] == "-c":
        return "it was defined by 'python -c', whose code a worker cannot re-run"
    if sys.argv and sys.argv[0] in ("-", ""):
        return "it was defined in a script read from stdin, which a worker cannot re-run"
    return "the main program has no file a worker could run again"


class _MainFinder(pickle.Pickler):
    """Pickles to nowhere, noting the first global of ``__main__`` it meets."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), protocol=pickle.HIGHEST_PROTOCOL)
        self.found: str | None = None

    def reducer_override(self, obj: Any) -> Any:
        if self.found is None and isinstance(obj, type | types.FunctionType) \
                and getattr(obj, "__module__", None) in ("__main__", MP_MAIN):
            self.found = getattr(obj, "__qualname__", repr(obj))
        return NotImplemented


def main_reference(obj: object, payload: bytes) -> str | None:
    """The name of ``__main__`` that ``obj`` (pickled as ``payload``) refers to, if any.

    The bytes are searched first, so only a payload that mentions ``__main__`` at all is
    pickled a second time to tell a real reference from a string that says it."""
    if b"__main__" not in payload and MP_MAIN.encode() not in payload:
        return None
    finder = _MainFinder()
    try:
        finder.dump(obj)
    except Exception:
        return None
    return finder.found


def check_reachable(obj: object, payload: bytes, what: str) -> bool:
    """Whether ``obj`` needs the worker to run the main script; registers this process's
    ``__main__`` as ``__mp_main__`` when it does.

    Raises:
        MainNotImportableError: it does, and there is no main script to run.
    """
    name = main_reference(obj, payload)
    if name is None:
        return False
    if main_script() is None:
        raise MainNotImportableError(
            f"{what} refers to __main__.{name}, which a worker process cannot import: "
            f"{why_not_importable()}. Define it in a module (a .py file importable from "
            "this process's sys.path) and import it from there, or run your program as a "
            "script file (python script.py)")
    sys.modules.setdefault(MP_MAIN, sys.modules["__main__"])
    return True


def run_main(kind: str, value: str) -> None:
    """In a worker: run the parent's main program as ``__mp_main__`` and make it this
    process's ``__main__`` (once; a second call does nothing)."""
    if getattr(sys.modules.get("__main__"), "__childkit_mp_main__", False):
        return
    module = types.ModuleType(MP_MAIN)
    # Registered while it runs, so classes it defines can be pickled back by reference.
    sys.modules[MP_MAIN] = module
    try:
        if kind == "module":
            namespace = runpy.run_module(value, run_name=MP_MAIN, alter_sys=False)
        elif kind == "path":
            namespace = runpy.run_path(value, run_name=MP_MAIN)
        else:
            raise ValueError(f"unknown kind of main program {kind!r}")
    except BaseException:
        sys.modules.pop(MP_MAIN, None)
        raise
    module.__dict__.update(namespace)
    module.__dict__["__childkit_mp_main__"] = True
    sys.modules["__main__"] = sys.modules[MP_MAIN] = module
