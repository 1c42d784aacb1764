"""Child entry points: parsing them in the parent, resolving them in the child.

Two modes, as in AbilityKit:

* ``"args"`` (``OH_Ability_StartNativeChildProcess``): the entry names a function that
  receives the start-up arguments. Either a Python function ``"pkg.module:func"``
  (called as ``func(args: ChildProcessArgs)``; an int return is the exit code, ``None``
  means 0) or a native one ``"libentry.so:Main"`` / ``"path/to/libentry.so:Main"``
  (called as C ``void Main(NativeChildProcess_Args args)``, the struct by value; the
  exit code is 0 when it returns).
* ``"ipc"`` (``OH_Ability_CreateNativeChildProcess``): the entry names a whole module
  that provides ``on_connect()`` (returns the child's root stub, or ``None``) and
  ``main_proc()`` (the child's work; the child exits when it returns). Either a dotted
  module ``"pkg.worker"`` or a file ``"path/to/worker.py"``, or a native library
  (``"libworker.so"``) exporting ``NativeChildProcess_OnConnect`` and
  ``NativeChildProcess_MainProc``, which the launcher's child hands to the C kit
  (``childkit.native._child``); :func:`resolve_ipc_entry` resolves Python ones only.

Parsing (parent side) checks syntax only and imports nothing; resolving (child side)
imports or ``dlopen``s and reports what failed with ``NCP_ERR_LIB_LOADING_FAILED``.

The text after the *last* ``':'`` is the function, so a library path may itself
contain ``':'``. A library is anything whose last path component ends in ``.so`` or
``.so.N[.N...]``, or anything containing ``'/'``; it is handed to ``dlopen`` unchanged
(a bare name is searched the way ``dlopen`` searches, a path with ``'/'`` is used as
is; a relative path or ``.py`` file is relative to the child's working directory).
OpenHarmony's ``CreateNativeChildProcess`` also refuses names containing ``"../"``; so
does childkit's C API (libchild_process.so, for conformance), while the Python API
leaves paths to the caller.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import itertools
import keyword
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from childkit.common._errors import ChildkitError, ErrCode
from childkit.entry._args import ChildProcessArgs
from childkit.entry._native_args import NativeEntryFunc, build_native_args

EntryMode = Literal["args", "ipc"]
EntryKind = Literal["python", "pyfile", "native"]

#: Names an IPC-mode Python module must define.
ON_CONNECT = "on_connect"
MAIN_PROC = "main_proc"

_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LIB_NAME = re.compile(r"[^/]+\.so(\.[0-9]+)*\Z")
_pyfile_counter = itertools.count(1)


@dataclass(frozen=True)
class ParsedEntry:
    """A syntactically valid entry.

    ``kind`` says what ``target`` is: a dotted module name (``"python"``), a path to a
    ``.py`` file (``"pyfile"``) or a library for ``dlopen`` (``"native"``). ``symbol`` is
    the function name in args mode and ``None`` in IPC mode. ``text`` is the entry as
    given.
    """

    text: str
    mode: EntryMode
    kind: EntryKind
    target: str
    symbol: str | None


def _quote(entry: str, limit: int = 60) -> str:
    if len(entry) <= limit:
        return repr(entry)
    return f"{entry[:limit]!r}... ({len(entry)} characters)"


def _bad(entry: str, problem: str) -> ChildkitError:
    return ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, f"entry {_quote(entry)} {problem}")


def _is_module_name(name: str) -> bool:
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split("."))


def _is_library(target: str) -> bool:
    return "/" in target or _LIB_NAME.match(target) is not None


def _check_library(entry: str, target: str) -> None:
    last = target.rsplit("/", 1)[-1]
    if not last:
        raise _bad(entry, "names a directory, not a shared library")
    if _LIB_NAME.match(last) is None:
        raise _bad(entry, f"names library {last!r}, which does not end in .so or .so.N")


def parse_entry(entry: str, *, mode: EntryMode) -> ParsedEntry:
    """Check ``entry``'s syntax for ``mode`` and split it; nothing is imported or loaded.

    Args mode accepts ``"pkg.mod:func"`` and ``"[path/]libx.so[.N]:Symbol"``; IPC mode
    accepts ``"pkg.worker"``, ``"path/to/worker.py"`` and ``"[path/]libx.so[.N]"``.

    Raises:
        ChildkitError: ``NCP_ERR_INVALID_PARAM``, quoting the entry (cut short when
            long) and saying what is wrong: not a str, empty, a NUL character, no
            ``':'`` (args mode) or an unexpected one (IPC mode), an empty part, a bad
            module name, Python identifier or C identifier, or a library name that
            does not end in ``.so``/``.so.N``.
        ValueError: ``mode`` is neither ``"args"`` nor ``"ipc"`` (a caller bug).
    """
    if mode not in ("args", "ipc"):
        raise ValueError(f"mode must be 'args' or 'ipc', not {mode!r}")
    if not isinstance(entry, str):
        raise ChildkitError(
            ErrCode.NCP_ERR_INVALID_PARAM, f"entry must be a str, not {type(entry).__name__}"
        )
    if not entry:
        raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, "entry must not be empty")
    if "\0" in entry:
        raise _bad(entry, "contains a NUL character")
    if mode == "args":
        return _parse_args_entry(entry)
    return _parse_ipc_entry(entry)


def _parse_args_entry(entry: str) -> ParsedEntry:
    target, colon, symbol = entry.rpartition(":")
    if not colon:
        raise _bad(entry, "has no ':'; expected 'package.module:function' or 'libname.so:Function'")
    if not target:
        raise _bad(entry, "has nothing before ':'; expected a module or a library")
    if not symbol:
        raise _bad(entry, "has nothing after ':'; expected a function name")
    if target.endswith(".py"):
        raise _bad(
            entry, "names a .py file; args mode takes 'package.module:function' or a library"
        )
    if _is_library(target):
        _check_library(entry, target)
        if _C_IDENTIFIER.match(symbol) is None:
            raise _bad(entry, f"names function {symbol!r}, which is not a C identifier")
        return ParsedEntry(entry, "args", "native", target, symbol)
    if not _is_module_name(target):
        raise _bad(entry, f"names module {target!r}, which is not a dotted Python module name")
    if not symbol.isidentifier() or keyword.iskeyword(symbol):
        raise _bad(entry, f"names function {symbol!r}, which is not a Python identifier")
    if target == "__main__":
        raise _bad(entry, _main_hint("args", symbol))
    return ParsedEntry(entry, "args", "python", target, symbol)


def _parse_ipc_entry(entry: str) -> ParsedEntry:
    if entry.endswith(".py"):
        if entry.endswith("/.py") or entry == ".py":
            raise _bad(entry, "names a .py file without a name")
        return ParsedEntry(entry, "ipc", "pyfile", entry, None)
    if _is_library(entry):
        _check_library(entry, entry)
        return ParsedEntry(entry, "ipc", "native", entry, None)
    if ":" in entry:
        raise _bad(entry, "has a ':'; an IPC-mode entry names a module, a .py file or a library")
    if not _is_module_name(entry):
        raise _bad(entry, "is not a dotted Python module name, a .py path or a .so library")
    if entry == "__main__":
        raise _bad(entry, _main_hint("ipc", None))
    return ParsedEntry(entry, "ipc", "python", entry, None)


def _main_hint(mode: EntryMode, symbol: str | None) -> str:
    """Why ``__main__`` cannot be an entry, and the entry that names the same code."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    why = ("names __main__, which in a child is not this program's main script (children "
           "are forked from childkit's launcher, whose __main__ is its own)")
    if not isinstance(path, str) or not path.endswith(".py"):
        return (f"{why}; define the entry in a module (a .py file on sys.path) and name "
                "that module")
    if mode == "ipc":
        return f"{why}; name the script by its file instead: {os.path.abspath(path)!r}"
    stem = os.path.basename(path)[:-3]
    return (f"{why}; name the script's module instead: '{stem}:{symbol}' (its directory is "
            "on sys.path, as for python script.py; its 'if __name__ == \"__main__\":' "
            "block does not run in the child)")


# ---------------------------------------------------------------------------- child side


def _load_failed(message: str) -> ChildkitError:
    return ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED, message)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


#: In an isolated child, the host paths its sandbox shows (readonly_paths and the
#: entry's own files), set by :func:`note_sandbox`; ``None`` outside a sandbox.
_sandbox_paths: tuple[str, ...] | None = None


def note_sandbox(readonly_paths: list[str] | tuple[str, ...]) -> None:
    """In a child, once inside its sandbox: the host paths it was given, so that a failed
    import can say what to add (see :func:`_not_visible_hint`)."""
    global _sandbox_paths
    _sandbox_paths = tuple(readonly_paths)


def _not_visible_hint(exc: BaseException, entry_module: str | None,
                      entry_file: str | None = None) -> str:
    """For a ``ModuleNotFoundError`` in an isolated child: which module, where it would
    have come from (beside the entry: its module or its ``.py`` file), and that
    ``readonly_paths`` makes it visible."""
    if _sandbox_paths is None or not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return ""
    missing = exc.name.split(".")[0]
    where = None
    if entry_file is not None:
        where = os.path.dirname(os.path.abspath(entry_file))
    elif entry_module is not None:
        top = entry_module.split(".")[0]
        homes = [p for p in _sandbox_paths if os.path.basename(p) in (top, top + ".py")]
        where = os.path.dirname(homes[0]) if homes else None
    beside = (f"beside the entry in {where}, which the sandbox does not show: add "
              f"{os.path.join(where, missing)!r} (its .py file or package) or {where!r} "
              if where else "in a directory of sys.path the sandbox does not show: add it ")
    return (f". This child is ISOLATED: of this machine's own files it sees only the "
            f"interpreter's and {list(_sandbox_paths)}; if module {missing!r} lives "
            f"{beside}to ChildProcessOptions(readonly_paths=[...]) (childkit run "
            f"--readonly PATH) to make it visible, read-only")


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any failure while importing user code is a loading failure
        raise _load_failed(f"cannot import module {name!r}: {_describe(exc)}"
                           f"{_not_visible_hint(exc, name)}") from exc


def _load_pyfile(path: str) -> ModuleType:
    # A unique name per load: two children templates loading "worker.py" from two
    # directories must not share (or overwrite) a sys.modules entry.
    stem = re.sub(r"\W", "_", path.rsplit("/", 1)[-1][: -len(".py")]) or "worker"
    name = f"_childkit_entry_{stem}_{next(_pyfile_counter)}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
    except Exception as exc:
        raise _load_failed(f"cannot load {path!r}: {_describe(exc)}") from exc
    if spec is None or spec.loader is None:
        raise _load_failed(f"cannot load {path!r}: not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, as a normal import does, so the module can refer
    # to itself (dataclasses, pickling-free introspection, relative lookups).
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _load_failed(f"cannot load {path!r}: {_describe(exc)}"
                           f"{_not_visible_hint(exc, None, path)}") from exc
    return module


def _attribute(module: ModuleType, where: str, name: str) -> Callable[..., object]:
    try:
        value = getattr(module, name)
    except AttributeError:
        raise _load_failed(f"{where} has no function {name!r}") from None
    if not callable(value):
        raise _load_failed(f"{where}.{name} is not callable ({type(value).__name__})")
    return value  # type: ignore[no-any-return]


def _load_library(target: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(target)
    except OSError as exc:
        raise _load_failed(f"cannot load library {target!r}: {exc}") from exc


def resolve_args_entry(parsed: ParsedEntry) -> Callable[[ChildProcessArgs], int]:
    """Load an args-mode entry; return a callable that runs it and gives the exit code.

    For a Python entry the module is imported and the function looked up; the
    returned callable calls ``func(args)`` and returns its int result (``None`` -> 0).
    A result that is not an int in 0..255 raises ``TypeError``/``ValueError`` from the
    callable, since it cannot be an exit status.

    For a native entry the library is ``dlopen``ed and the symbol looked up; the
    returned callable lays ``args`` out as ``NativeChildProcess_Args``, calls
    ``Symbol(args)`` (by value, no return value) and returns 0.

    Raises:
        ChildkitError: ``NCP_ERR_LIB_LOADING_FAILED`` naming what failed: the module
            import (with the exception), the ``dlopen`` (with its message), a missing
            function or symbol, or an attribute that is not callable.
            ``NCP_ERR_INVALID_PARAM`` if ``parsed`` is not an args-mode entry.
    """
    if parsed.mode != "args" or parsed.symbol is None:
        raise ChildkitError(
            ErrCode.NCP_ERR_INVALID_PARAM, f"{_quote(parsed.text)} is not an args-mode entry"
        )
    symbol = parsed.symbol
    if parsed.kind == "native":
        library = _load_library(parsed.target)
        try:
            native_main = NativeEntryFunc((symbol, library))
        except AttributeError:
            raise _load_failed(f"library {parsed.target!r} does not export {symbol!r}") from None
        return _native_runner(native_main, library)
    module = _import_module(parsed.target)
    func = _attribute(module, f"module {parsed.target!r}", symbol)
    return _python_runner(parsed.text, func)


def _native_runner(native_main: Callable[..., object],
                   library: ctypes.CDLL) -> Callable[[ChildProcessArgs], int]:
    def run(args: ChildProcessArgs) -> int:
        native = build_native_args(args)
        # A library linked with childkit's libchild_process.so reads the args back through
        # OH_Ability_GetCurrentChildProcessArgs(): hand them to it (found through the
        # library's own handle, so the copy it uses).
        setter = getattr(library, "childkit_set_current_child_process_args", None)
        if setter is not None:
            setter.argtypes = [ctypes.c_void_p]
            setter.restype = None
            setter(ctypes.addressof(native))
        native_main(native)  # ``native`` (and its buffers) outlive the call
        return 0

    return run


def _python_runner(text: str, func: Callable[..., object]) -> Callable[[ChildProcessArgs], int]:
    def run(args: ChildProcessArgs) -> int:
        result = func(args)
        if result is None:
            return 0
        if not isinstance(result, int) or isinstance(result, bool):
            raise TypeError(
                f"entry {_quote(text)} returned a {type(result).__name__}; "
                "expected an int exit code or None"
            )
        if not 0 <= result <= 255:
            raise ValueError(
                f"entry {_quote(text)} returned {result}; an exit code must be in 0..255"
            )
        return result

    return run


def resolve_ipc_entry(
    parsed: ParsedEntry,
) -> tuple[Callable[[], object], Callable[[], object]]:
    """Load an IPC-mode entry; return its ``(on_connect, main_proc)`` functions.

    A dotted module is imported; a ``.py`` path is loaded under a unique module name.

    Raises:
        ChildkitError: ``NCP_ERR_NOT_SUPPORTED`` for a native library (the C kit
            resolves those: ``childkit.native._child.prepare``);
            ``NCP_ERR_LIB_LOADING_FAILED`` if the module cannot be imported or loaded,
            or lacks (or has a non-callable) ``on_connect`` or ``main_proc``, naming it;
            ``NCP_ERR_INVALID_PARAM`` if ``parsed`` is not an IPC-mode entry.
    """
    if parsed.mode != "ipc":
        raise ChildkitError(
            ErrCode.NCP_ERR_INVALID_PARAM, f"{_quote(parsed.text)} is not an IPC-mode entry"
        )
    if parsed.kind == "native":
        raise ChildkitError(
            ErrCode.NCP_ERR_NOT_SUPPORTED,
            f"{_quote(parsed.text)} is a native library: the launcher's child serves it "
            "with the C kit (childkit.native), not through Python's on_connect()",
        )
    if parsed.kind == "pyfile":
        module = _load_pyfile(parsed.target)
        where = f"file {parsed.target!r}"
    else:
        module = _import_module(parsed.target)
        where = f"module {parsed.target!r}"
    on_connect = _attribute(module, where, ON_CONNECT)
    main_proc = _attribute(module, where, MAIN_PROC)
    return on_connect, main_proc
