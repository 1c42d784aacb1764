"""Start options of a native child (``NativeChildProcess_Options`` / child process configs).

:class:`ChildProcessOptions` carries what OpenHarmony spreads over
``NativeChildProcess_Options`` and the ``OH_Ability_ChildProcessConfigs_Set*`` calls:

* ``isolation_mode``: :attr:`IsolationMode.NORMAL` (parent and child share files and
  network) or :attr:`IsolationMode.ISOLATED` (meant for untrusted code and data).
  childkit has no sandbox yet, so starting an ISOLATED child fails with
  ``NCP_ERR_NOT_SUPPORTED``; it never silently runs the child unsandboxed.
* ``process_name``: the child's name as ``ps`` shows it; ``None`` gives a default.
  Checked as ``OH_Ability_ChildProcessConfigs_SetProcessName`` checks it: non-empty,
  ASCII letters, digits and underscore only, at most 64 characters.
* ``isolation_uid``: run the child under a separate uid; only meaningful (and only
  accepted) together with ``ISOLATED``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from childkit._errors import ChildkitError, ErrCode

#: Longest accepted process name, in characters.
MAX_PROCESS_NAME = 64
_PROCESS_NAME = re.compile(r"[A-Za-z0-9_]+\Z")


class IsolationMode(enum.IntEnum):
    """``NativeChildProcess_IsolationMode``: names and values as in OpenHarmony."""

    NORMAL = 0
    ISOLATED = 1


def _invalid(message: str) -> ChildkitError:
    return ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, message)


def check_process_name(name: object) -> None:
    """Check a process name; return ``None`` if it is acceptable.

    Raises:
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` if ``name`` is not a str, is empty, is
            longer than 64 characters, or holds anything but ASCII letters, digits and
            ``_``, saying which.
    """
    if not isinstance(name, str):
        raise _invalid(f"process_name must be a str, not {type(name).__name__}")
    if not name:
        raise _invalid("process_name must not be empty")
    if len(name) > MAX_PROCESS_NAME:
        raise _invalid(
            f"process_name is {len(name)} characters long; at most {MAX_PROCESS_NAME} "
            "are allowed"
        )
    if _PROCESS_NAME.match(name) is None:
        bad = next(ch for ch in name if _PROCESS_NAME.match(ch) is None)
        raise _invalid(
            f"process_name {name[:MAX_PROCESS_NAME]!r} contains {bad!r}; only ASCII "
            "letters, digits and underscore are allowed"
        )


@dataclass(frozen=True)
class ChildProcessOptions:
    """How to start a child. Validated when built (and again when used).

    Raises (from the constructor):
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` for an ``isolation_mode`` that is not
            an :class:`IsolationMode` value, a bad ``process_name`` (see
            :func:`check_process_name`), an ``isolation_uid`` that is not a bool, or
            ``isolation_uid=True`` without ``IsolationMode.ISOLATED``.
    """

    isolation_mode: IsolationMode = IsolationMode.NORMAL
    process_name: str | None = None
    isolation_uid: bool = False

    def __post_init__(self) -> None:
        mode = self.isolation_mode
        if isinstance(mode, bool) or not isinstance(mode, int):
            raise _invalid(f"isolation_mode must be an IsolationMode, not {mode!r}")
        try:
            object.__setattr__(self, "isolation_mode", IsolationMode(mode))
        except ValueError:
            raise _invalid(
                f"isolation_mode {mode!r} is not an IsolationMode (0 NORMAL or 1 ISOLATED)"
            ) from None
        self.validate()

    def validate(self) -> None:
        """Check every field again; see the class docstring for what raises."""
        if not isinstance(self.isolation_mode, IsolationMode):
            raise _invalid(f"isolation_mode must be an IsolationMode, not {self.isolation_mode!r}")
        if self.process_name is not None:
            check_process_name(self.process_name)
        if not isinstance(self.isolation_uid, bool):
            raise _invalid(
                f"isolation_uid must be a bool, not {type(self.isolation_uid).__name__}"
            )
        if self.isolation_uid and self.isolation_mode != IsolationMode.ISOLATED:
            raise _invalid("isolation_uid=True needs isolation_mode=IsolationMode.ISOLATED")

    def check_supported(self) -> None:
        """Raise unless childkit can start a child with these options.

        Raises:
            ChildkitError: ``NCP_ERR_NOT_SUPPORTED`` for ``IsolationMode.ISOLATED``: the
                sandbox is not implemented yet, and an ISOLATED child must never run
                unsandboxed.
        """
        if self.isolation_mode == IsolationMode.ISOLATED:
            raise ChildkitError(
                ErrCode.NCP_ERR_NOT_SUPPORTED,
                "IsolationMode.ISOLATED needs the sandbox, which is not implemented yet; "
                "childkit refuses rather than run the child unsandboxed",
            )
