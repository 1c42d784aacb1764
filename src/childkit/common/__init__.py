"""Shared helpers of every layer: the child-process error codes and their exception
(``ErrCode``, ``ChildkitError``), what this process is to childkit (app, launcher, child),
and small Linux process utilities (``prctl``, closing fds).

May import: the standard library only. Everything else in childkit may import this.
"""

from childkit.common._errors import ChildkitError as ChildkitError
from childkit.common._errors import ErrCode as ErrCode

__all__ = ["ChildkitError", "ErrCode"]
