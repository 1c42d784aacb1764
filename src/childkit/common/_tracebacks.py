"""A child's traceback as its user wants it: from the user's first frame on.

An exception raised by an entry or a task travels up through childkit's own frames (the
forked child's start, the entry's runner, the executor worker's stub) before it is
printed or sent; Python's own tracebacks leave ``runpy``'s frames out in the same way.
"""

from __future__ import annotations

import os
import traceback
from types import TracebackType

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The directories whose frames lead into user code (never user code themselves).
_OWN = tuple(os.path.join(_PACKAGE, layer) + os.sep
             for layer in ("launcher", "entry", "pool", "native"))


def user_frames(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading childkit frames; ``tb`` itself if nothing else is left
    (the error is childkit's own, e.g. an entry's result that is not an exit code)."""
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(_OWN):
        first = first.tb_next
    return first if first is not None else tb


def format_user_exception(exc: BaseException) -> str:
    """``traceback.format_exception(exc)`` from the user's first frame on."""
    return "".join(traceback.format_exception(type(exc), exc, user_frames(exc.__traceback__)))
