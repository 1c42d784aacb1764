"""``python -m childkit.native --cflags | --libs | --pkgconfig-dir``: flags for C builds.

``cc $(python -m childkit.native --cflags) app.c $(python -m childkit.native --libs)``
compiles and links a program that includes ``<IPCKit/ipc_kit.h>``. ``--libs`` fails (exit
status 1, the reason on stderr) when the libraries were not built.
"""

from __future__ import annotations

import argparse
import sys

from childkit.native import (
    LIBRARIES,
    NativeLibraryMissing,
    get_include,
    get_lib_dir,
    get_pkgconfig_dir,
    require_library,
)


def main(argv: list[str] | None = None) -> int:
    """Print the flags asked for, one group per line; 0, or 1 if the libraries are missing."""
    parser = argparse.ArgumentParser(prog="python -m childkit.native", description=__doc__)
    parser.add_argument("--cflags", action="store_true", help="-I flags for the headers")
    parser.add_argument("--libs", action="store_true", help="-L, rpath and -l flags")
    parser.add_argument("--pkgconfig-dir", action="store_true",
                        help="the directory of childkit-native.pc")
    args = parser.parse_args(argv)
    if not (args.cflags or args.libs or args.pkgconfig_dir):
        parser.error("say --cflags, --libs or --pkgconfig-dir")
    out: list[str] = []
    if args.cflags:
        out.append(f"-I{get_include()} -I{get_include()}/IPCKit")
    if args.libs:
        try:
            for name in LIBRARIES:
                require_library(name)
        except NativeLibraryMissing as exc:
            print(f"childkit.native: {exc}", file=sys.stderr)
            return 1
        lib = get_lib_dir()
        out.append(f"-L{lib} -Wl,-rpath,{lib} " + " ".join(f"-l{n}" for n in LIBRARIES))
    if args.pkgconfig_dir:
        out.append(get_pkgconfig_dir())
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
