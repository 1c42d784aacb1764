"""What pyproject.toml cannot say without an experimental table: the C code.

- ``childkit.ipc._speedups``: C twins of the IPC hot path (see its source), built from
  ``_speedups.c`` and the shared frame code ``native/csrc/ck_frame.c``.
- ``childkit.native``: the native kit, ``libipc_capi.so`` and ``libchild_process.so``,
  built by CMake (``src/childkit/native/CMakeLists.txt``) from the same ``build_ext`` step,
  into ``childkit/native/lib`` (in the source tree for an editable install).

Both are optional: without a C compiler (or CMake) the build skips them with a warning and
childkit runs on its Python code; ``childkit.native`` then says the libraries are missing.
A failed ``_speedups`` build removes an older build of it (an in-place build writes into
the source tree, where the old one would go on being imported as if it were current).
``CHILDKIT_REQUIRE_NATIVE=1`` turns a failed build of either into an error.
"""

import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NATIVE_DIR = os.path.join("src", "childkit", "native")


class BuildExtAndNative(build_ext):
    """``build_ext`` that also configures and builds the native kit with CMake."""

    def run(self) -> None:
        super().run()
        out = os.path.abspath(
            os.path.join(NATIVE_DIR, "lib") if self.inplace
            else os.path.join(self.build_lib, "childkit", "native", "lib"))
        try:
            self._build_native(out)
        except (OSError, subprocess.CalledProcessError) as exc:
            if os.environ.get("CHILDKIT_REQUIRE_NATIVE") == "1":
                raise
            print(f"warning: childkit's native libraries were not built ({exc}); "
                  "the Python API works without them", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception:
            # An older build must not pass for this one: not in build_lib (the build's
            # output), nor in the source tree, where an in-place build copies it (setuptools
            # builds into build_lib and copies after).
            for stale in (self.get_ext_fullpath(ext.name), self._in_source_tree(ext)):
                if os.path.exists(stale):
                    os.remove(stale)
                    print(f"warning: removed {stale}, an older build of {ext.name}",
                          file=sys.stderr)
            if os.environ.get("CHILDKIT_REQUIRE_NATIVE") == "1":
                # Not a compiler error, which build_ext would turn into a warning for an
                # optional extension.
                raise RuntimeError(f"building {ext.name} failed") from None
            raise

    def _in_source_tree(self, ext: Extension) -> str:
        """Where an in-place build puts ``ext`` (its package's directory)."""
        fullname = self.get_ext_fullname(ext.name)
        package = fullname.rpartition(".")[0]
        package_dir = self.get_finalized_command("build_py").get_package_dir(package)
        return os.path.join(package_dir, os.path.basename(self.get_ext_filename(fullname)))

    def _build_native(self, out: str) -> None:
        cmake = shutil.which("cmake")
        if cmake is None:
            raise OSError("cmake is not on PATH")
        build_dir = os.path.abspath(os.path.join(self.build_temp, "childkit-native"))
        subprocess.run(
            [cmake, "-S", NATIVE_DIR, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
             f"-DCK_OUTPUT_DIR={out}", f"-DCK_PYTHON={sys.executable}"], check=True)
        subprocess.run([cmake, "--build", build_dir, "--parallel", "2"], check=True)


setup(
    cmdclass={"build_ext": BuildExtAndNative},
    ext_modules=[
        Extension(
            "childkit.ipc._speedups",
            sources=["src/childkit/ipc/_speedups.c", "src/childkit/native/csrc/ck_frame.c"],
            include_dirs=["src/childkit/native/csrc", "src/childkit/native/include/IPCKit"],
            depends=["src/childkit/native/csrc/ck_internal.h"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"],
        )
    ],
)
