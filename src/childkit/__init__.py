"""childkit: HarmonyOS-style native child processes and a Binder-style IPC kit for Python."""

from childkit._errors import ChildkitError, ErrCode

__all__ = ["ChildkitError", "ErrCode"]
