"""The command line (``childkit ...`` and ``python -m childkit``): its commands
(``_main``), the hints it prints for each error code (``_hints``), and the demo of
HarmonyOS's two child modes (IPC mode, args mode) with its worker module (``_demo``,
``_demo_worker``).

May import: the public face :mod:`childkit` and every layer below it. Nothing imports it
but ``childkit.__main__`` and the ``childkit`` console script.
"""

from childkit.cli._main import main as main

__all__ = ["main"]
