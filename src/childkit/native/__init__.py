"""childkit's native kit: IPCKit's and AbilityKit's C APIs for C and C++ code.

``libipc_capi.so`` (``#include <IPCKit/ipc_kit.h>``) and, when built, ``libchild_process.so``
(``#include <AbilityKit/native_child_process.h>``) are built by ``pip install`` (CMake,
driven from ``setup.py``) into :func:`get_lib_dir`; their headers are under
:func:`get_include`. ``python -m childkit.native --cflags --libs`` prints the compiler
flags, and ``childkit-native.pc`` in :func:`get_pkgconfig_dir` says the same to pkg-config.

An install without a C compiler or CMake has no libraries: the Python API works as before,
and :func:`require_library` raises :class:`NativeLibraryMissing` saying so.

May import: this face nothing of childkit's (the launcher's children use it to find the
libraries). Its Python parts sit at two levels (pyproject.toml's import contract):
``_agent`` (what a C parent runs: the process layer and below) and ``_child`` (a native
IPC child's loader, run by the launcher: :mod:`childkit.common` only).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "LIBRARIES",
    "NativeLibraryMissing",
    "get_include",
    "get_lib_dir",
    "get_pkgconfig_dir",
    "library_path",
    "require_library",
]

_HERE = Path(__file__).resolve().parent

#: The libraries of the kit, by link name (``-l<name>``).
LIBRARIES = ("ipc_capi", "child_process")


class NativeLibraryMissing(RuntimeError):
    """A native library was not built (no C compiler or CMake when childkit was installed)."""


def get_include() -> str:
    """The directory that makes ``#include <IPCKit/ipc_kit.h>`` work (``-I`` this)."""
    return str(_HERE / "include")


def get_lib_dir() -> str:
    """The directory holding ``libipc_capi.so`` (whether or not it was built)."""
    return str(_HERE / "lib")


def get_pkgconfig_dir() -> str:
    """The directory of ``childkit-native.pc`` (put it on ``PKG_CONFIG_PATH``)."""
    return str(_HERE / "pkgconfig")


def library_path(name: str) -> Path:
    """Where ``lib<name>.so`` is (or would be) for a name of :data:`LIBRARIES`.

    Raises:
        ValueError: ``name`` is not one of the kit's libraries.
    """
    if name not in LIBRARIES:
        raise ValueError(f"{name!r} is not one of childkit's native libraries {LIBRARIES}")
    return Path(get_lib_dir()) / f"lib{name}.so"


def require_library(name: str) -> Path:
    """:func:`library_path` of a library that exists.

    Raises:
        NativeLibraryMissing: it was not built, with what to do about it.
        ValueError: ``name`` is not one of the kit's libraries.
    """
    path = library_path(name)
    if not path.is_file():
        raise NativeLibraryMissing(
            f"childkit's native library lib{name}.so is missing from {path.parent}: it is "
            "built by 'pip install' when a C compiler and CMake are available (the Python "
            "API works without it); install gcc and cmake, then reinstall childkit")
    return path
