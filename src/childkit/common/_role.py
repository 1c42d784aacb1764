"""What this process is to childkit: an application, the launcher, or a child.

A child may not start children (``NCP_ERR_ALREADY_IN_CHILD``), and neither may the
launcher template, whose forks become children. The launcher sets the role once, before
anything else runs in the new process; it is only read afterwards.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["app", "launcher", "child"]

_role: Role = "app"


def set_role(role: Role) -> None:
    """Record what this process is. Called by the launcher, in itself and in each child."""
    global _role
    _role = role


def current_role() -> Role:
    """``"app"`` unless this process is childkit's launcher or a child it started."""
    return _role
