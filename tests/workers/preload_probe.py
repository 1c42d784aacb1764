"""A module to preload into the launcher: it remembers which process imported it."""

import os

IMPORTED_IN = os.getpid()
