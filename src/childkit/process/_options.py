"""Start options of a native child (``NativeChildProcess_Options`` / child process configs).

:class:`ChildProcessOptions` carries what OpenHarmony spreads over
``NativeChildProcess_Options`` and the ``OH_Ability_ChildProcessConfigs_Set*`` calls:

* ``isolation_mode``: :attr:`IsolationMode.NORMAL` (parent and child share files and
  network) or :attr:`IsolationMode.ISOLATED` (meant for untrusted code and data).
  An ISOLATED child runs in :mod:`childkit.sandbox`; where a layer is missing the start
  fails with ``NCP_ERR_NOT_SUPPORTED`` naming it: never silently unsandboxed.
* ``process_name``: the child's name as ``ps`` shows it; ``None`` gives a default.
  Checked as ``OH_Ability_ChildProcessConfigs_SetProcessName`` checks it: non-empty,
  ASCII letters, digits and underscore only, at most 64 characters.
* ``isolation_uid``: run the child under a separate uid; only meaningful (and only
  accepted) together with ``ISOLATED``.
* ``limits`` (ISOLATED only): a :class:`childkit.sandbox.ResourceLimits` (memory, CPU
  time, processes/threads, open files, file size); ``None`` takes the sandbox defaults.
* ``readonly_paths`` (ISOLATED only): more host files or directories the child may read
  (the interpreter and the entry's own module are always readable); any sequence of
  ``str`` or ``os.PathLike`` paths (a list too), kept as a tuple of ``str``.
* ``allow_reduced_sandbox`` (ISOLATED only): start even when some sandbox layer cannot
  be applied on this machine (the default refuses, naming the missing layer).
"""

from __future__ import annotations

import enum
import functools
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from childkit.common._errors import ChildkitError, ErrCode

if TYPE_CHECKING:
    from childkit.sandbox import LayerStatus, ResourceLimits

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
    limits: ResourceLimits | None = None
    readonly_paths: tuple[str, ...] = ()
    allow_reduced_sandbox: bool = False

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
        paths = self.readonly_paths
        if not isinstance(paths, str | bytes | tuple) and hasattr(paths, "__iter__"):
            paths = tuple(paths)  # any sequence (a list too): kept as a tuple
        if isinstance(paths, tuple) and all(isinstance(p, str | os.PathLike) for p in paths):
            paths = tuple(os.fspath(p) for p in paths)
        object.__setattr__(self, "readonly_paths", paths)
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
        isolated = self.isolation_mode == IsolationMode.ISOLATED
        if self.isolation_uid and not isolated:
            raise _invalid("isolation_uid=True needs isolation_mode=IsolationMode.ISOLATED")
        if self.limits is not None:
            from childkit.sandbox import ResourceLimits

            if not isinstance(self.limits, ResourceLimits):
                raise _invalid(f"limits must be a ResourceLimits, not {self.limits!r}")
            if not isolated:
                raise _invalid("limits need isolation_mode=IsolationMode.ISOLATED")
        if not isinstance(self.readonly_paths, tuple) or not all(
                isinstance(p, str) for p in self.readonly_paths):
            raise _invalid("readonly_paths must be a sequence of paths (str or os.PathLike), "
                           f"not {self.readonly_paths!r}")
        if self.readonly_paths and not isolated:
            raise _invalid("readonly_paths need isolation_mode=IsolationMode.ISOLATED")
        if not isinstance(self.allow_reduced_sandbox, bool):
            raise _invalid("allow_reduced_sandbox must be a bool")

    def check_supported(self) -> None:
        """Raise unless childkit can start a child with these options here.

        Raises:
            ChildkitError: ``NCP_ERR_NOT_SUPPORTED`` (a
                :class:`childkit.sandbox.SandboxUnavailable`) for ``IsolationMode.ISOLATED``
                when a sandbox layer this machine cannot apply is needed (the message names
                it), unless ``allow_reduced_sandbox`` is set; an ISOLATED child never runs
                without the sandbox it asked for.
        """
        if self.isolation_mode != IsolationMode.ISOLATED:
            return
        from childkit.sandbox import OPTIONAL_LAYERS, SandboxUnavailable

        layers = _sandbox_layers()
        needed = [name for name, status in layers.items() if not status.supported
                  and (name not in OPTIONAL_LAYERS or self.isolation_uid)]
        if needed and not self.allow_reduced_sandbox:
            name = needed[0]
            raise SandboxUnavailable(name, layers[name].reason)


_PROBE_SCRIPT = (
    "import json; from childkit.sandbox import probe; "
    "print(json.dumps({k: [v.supported, v.reason] for k, v in probe().items()}))"
)


@functools.cache
def _sandbox_layers() -> dict[str, LayerStatus]:
    # Probing forks a throw-away child that tries every layer. This process may have
    # threads (forking it is unsafe), so a fresh interpreter does it: once per process.
    import json
    import subprocess
    import sys

    from childkit.sandbox import LayerStatus

    try:
        done = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT], capture_output=True,
                              text=True, timeout=60, check=True)
        found = json.loads(done.stdout)
        return {name: LayerStatus(bool(ok), str(why)) for name, (ok, why) in found.items()}
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        from childkit.sandbox import LAYERS

        return {name: LayerStatus(False, f"the sandbox probe failed: {exc}") for name in LAYERS}
