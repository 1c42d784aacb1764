"""Building C programs against childkit's native kit (the ``cc`` fixture of conftest.py).

gcc and the kit's libraries are required here, not optional: a test suite that skipped
the C API when it was missing would pass without testing it. (An install without a
compiler is tested by test_native_package.py's "missing library" checks.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from childkit import native

HERE = Path(__file__).resolve().parent
#: The kit's C sources and internal header (for programs that test internals).
CSRC = Path(native.__file__).resolve().parent / "csrc"
#: The sources of libipc_capi.so, for programs built from them (internals, sanitizers).
KIT_SOURCES = sorted(CSRC.glob("ck_*.c"))
#: Compiler flags for those programs: the kit's include directories.
KIT_INTERNAL_FLAGS = [f"-I{CSRC}", f"-I{CSRC.parent / 'include' / 'IPCKit'}",
                      f"-I{CSRC.parent / 'include'}", "-D_GNU_SOURCE"]
STRICT = ["-O1", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]

Build = Callable[..., Path]


def kit_flags() -> list[str]:
    """-I, -L, rpath and -l flags from ``python -m childkit.native`` (what users run)."""
    if not native.library_path("ipc_capi").is_file():
        pytest.fail(f"libipc_capi.so was not built ({native.get_lib_dir()}): "
                    "pip install needs gcc and cmake")
    out = subprocess.run(
        [sys.executable, "-m", "childkit.native", "--cflags", "--libs"], check=True,
        capture_output=True, text=True, timeout=60).stdout
    return out.split()


def make_cc(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """``cc(name, sources, *, kit=True, flags=())``: gcc builds an executable (or with
    ``-shared`` in flags a library) from ``sources`` (names in this folder or paths), with
    warnings as errors; ``kit`` links it against libipc_capi.so."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is required to build the native kit's tests but is not on PATH")
    out_dir = tmp_path_factory.mktemp("native-build")

    def build(name: str, sources: Sequence[str | Path], *, kit: bool = True,
              flags: Sequence[str] = ()) -> Path:
        out = out_dir / name
        paths = [str(s if isinstance(s, Path) else HERE / s) for s in sources]
        # The -l flags go after the sources that need them.
        cmd = [gcc, *STRICT, *flags, "-o", str(out), *paths, *(kit_flags() if kit else ()),
               "-lpthread"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode:
            pytest.fail(f"gcc failed for {name}:\n{result.stderr}")
        return out

    return build
