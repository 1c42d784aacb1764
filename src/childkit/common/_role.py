"""What this process is to childkit: an application, the launcher, or a child.

A child may not start children (``NCP_ERR_ALREADY_IN_CHILD``), and neither may the
launcher template, whose forks become children. The launcher sets the role once, before
anything else runs in the new process; it is only read afterwards.

The role is also written to the environment (:data:`ENV_VAR`, ``"ROLE:PID"``) so that C
code the process loads sees it too: ``libchild_process.so`` refuses a start in a process
whose marker names itself. The pid keeps the marker from applying to the programs a child
runs (they inherit the environment, but are not childkit's children).
"""

from __future__ import annotations

import os
from typing import Literal

Role = Literal["app", "launcher", "child"]

#: The environment variable that carries the role to C code in the same process.
ENV_VAR = "CHILDKIT_ROLE"

_role: Role = "app"


def set_role(role: Role) -> None:
    """Record what this process is. Called by the launcher, in itself and in each child."""
    global _role
    _role = role
    mark_environment()


def mark_environment() -> None:
    """Write this process's role to the environment (:data:`ENV_VAR`); again after the
    environment is replaced (a child takes its application's)."""
    if _role == "app":
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = f"{_role}:{os.getpid()}"


def current_role() -> Role:
    """``"app"`` unless this process is childkit's launcher or a child it started."""
    return _role
