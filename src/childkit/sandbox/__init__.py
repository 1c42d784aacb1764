"""The sandbox of an isolated child (``IsolationMode.ISOLATED``): layered Linux isolation.

Public face::

    from childkit.sandbox import SandboxConfig, ResourceLimits, probe, enter, SandboxUnavailable

- :class:`ResourceLimits`, :class:`SandboxConfig`: what the child may use and see.
- :func:`enter` (in a freshly forked child): apply every layer; see docs/sandbox.md.
- :func:`probe`: which layers this machine supports; :func:`check_text` and
  :func:`full_sandbox_available` give ``childkit sandbox-check`` its text and exit status.
- :func:`layer_report`, :func:`skipped_layers`: in the sandboxed process, what was applied;
  :func:`single_process`: whether it is kept to one process (no cgroup for its limits).
- :func:`exit_reason`: which resource limit ended a child, from its wait status.
- :func:`preload`: resolve libseccomp once in the parent so each child need not.
- :data:`OPTIONAL_LAYERS`: the layers an isolated child goes without where missing.
- :mod:`forking <childkit.sandbox._forking>`: what a process that forks isolated children
  (the launcher's isolated template) prepares for them before each fork.
- :func:`release`: after reaping an isolated child, remove what its sandbox left (its
  cgroup, when its supervisor could not); :func:`sweep`: remove what sandboxes whose
  maker has ended left (e.g. a launcher's isolated template killed with it).

May import: :mod:`childkit.common` and the standard library (plus pyseccomp); never the
IPC kit or the layers above (the launcher applies it to a child it forked).
"""

from __future__ import annotations

from childkit.sandbox import _forking as forking
from childkit.sandbox._check import OPTIONAL_LAYERS, check_text, full_sandbox_available
from childkit.sandbox._config import LAYERS, LayerStatus, ResourceLimits, SandboxConfig
from childkit.sandbox._enter import (
    ISOLATION_UID_BASE,
    SHARED_UID,
    enter,
    layer_report,
    single_process,
    skipped_layers,
)
from childkit.sandbox._errors import SandboxUnavailable
from childkit.sandbox._limits import MEMORY_LIMIT_EXIT_CODE, exit_reason
from childkit.sandbox._probe import probe


def preload() -> None:
    """Do once, in the parent, the work every isolated child would repeat: locate
    libseccomp (ldconfig), compile the seccomp filter, resolve the interpreter's paths
    and the libc functions the sandbox calls, make the arguments of the capability drop
    (reading the kernel's last capability) and of raising the init's effective
    capabilities, prepare the Landlock ruleset and find where
    the initial environment block lies.
    Children forked afterwards start faster. Errors are not raised here: a missing
    library is reported by :func:`probe` and :func:`enter`."""
    from childkit.sandbox import (
        _capabilities,
        _cgroups,
        _enter,
        _environment,
        _filesystem,
        _landlock,
        _seccomp,
        _syscalls,
    )

    try:
        _seccomp.install_ready()
    except OSError:
        pass
    try:
        _syscalls.resolve_functions()
    except AttributeError:
        pass  # a libc without one of them: the child's call reports it
    _filesystem.interpreter_plan()
    _cgroups.hierarchies()
    _cgroups.sweep()  # what a killed launcher's sandboxes left
    for step in (_capabilities.drop_arguments, _capabilities.raise_arguments,
                 _environment.initial_block,
                 lambda: _landlock.prepare(*_enter.LANDLOCK_PATHS)):
        try:
            step()
        except (OSError, ValueError, IndexError):
            pass  # the child tries again and reports what fails


def sweep(patience_s: float = 0.0) -> None:
    """Remove the cgroups of sandboxes whose maker has ended (a launcher's isolated
    template killed with it: the groups it made ahead and its children's), killing what
    is left in them, and the empty groups of supervisors that were never reaped. A group
    stays busy until its last process is reaped (an orphaned sandbox init is reaped by
    pid 1): ``patience_s`` is how long to wait for that at most. Never raises."""
    from childkit.sandbox import _cgroups

    _cgroups.sweep(patience_s)


def release(pid: int) -> None:
    """After reaping ``pid``, a process that called :func:`enter` (its supervisor): remove
    its sandbox's cgroup if it is still there (killing what is left in it), as happens
    when the supervisor was killed with SIGKILL. Cheap when there is nothing to remove;
    never raises."""
    from childkit.sandbox import _ahead, _cgroups

    _ahead.settle()  # this process may still be in the group it made ahead for ``pid``
    _cgroups.remove_named(pid)


__all__ = [
    "ISOLATION_UID_BASE",
    "LAYERS",
    "MEMORY_LIMIT_EXIT_CODE",
    "OPTIONAL_LAYERS",
    "SHARED_UID",
    "LayerStatus",
    "ResourceLimits",
    "SandboxConfig",
    "SandboxUnavailable",
    "check_text",
    "enter",
    "exit_reason",
    "forking",
    "full_sandbox_available",
    "layer_report",
    "preload",
    "probe",
    "release",
    "single_process",
    "skipped_layers",
    "sweep",
]
