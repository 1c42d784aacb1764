"""What an isolated child is allowed: :class:`ResourceLimits` and :class:`SandboxConfig`."""

from __future__ import annotations

import dataclasses
import os

from childkit.common._errors import ChildkitError, ErrCode

#: The layers, in the order :func:`childkit.sandbox.enter` applies them.
LAYERS: tuple[str, ...] = (
    "user_namespace", "mount_namespace", "pid_namespace", "network_namespace",
    "ipc_namespace", "uts_namespace", "cgroup_namespace", "filesystem", "isolation_uid",
    "limits", "aggregate_limits", "landlock", "capabilities", "no_new_privs", "seccomp",
    "socket_filter", "environment", "fds", "clean_template",
)

_MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ResourceLimits:
    """Per-child resource limits (``None``: no limit of that kind).

    ``memory_bytes`` caps memory, ``cpu_seconds`` the CPU time, ``max_processes`` the
    processes and threads, always of the child **as a whole**:

    - where the kernel gives the launcher cgroups (root; v2 or v1 controllers), for all
      its processes together (``memory_bytes``: resident memory and swap, past it the
      kernel's OOM killer ends a process of the child; ``cpu_seconds``: past it each
      process gets SIGXCPU, SIGKILL a second later);
    - otherwise (an unprivileged launcher) the child is kept to **one process**: its
      seccomp filter refuses ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD``
      with EAGAIN (``BlockingIOError``; uncaught, the exit callback's reason says
      "process creation refused"), threads still start, and the per-process limits
      below then cover all of it. ``allow_subprocesses=True`` lets such a child start
      processes anyway, but then ``memory_bytes`` and ``cpu_seconds`` hold **per
      process** only and multiply: up to ``max_processes`` x ``memory_bytes`` of memory
      and ``max_processes`` x ``cpu_seconds`` of CPU (which is why ``max_processes``
      defaults to a small 32). With cgroups ``allow_subprocesses`` changes nothing.

    ``childkit sandbox-check`` and :func:`childkit.sandbox.layer_report` (the
    ``aggregate_limits`` layer) say which of these holds here.

    Per process, always and beneath: ``memory_bytes`` caps the address space
    (RLIMIT_AS: an allocation past it fails, MemoryError in Python); ``cpu_seconds`` the
    CPU time (RLIMIT_CPU: SIGXCPU at the limit, SIGKILL a second later); ``max_processes``
    the processes and threads of the sandbox (RLIMIT_NPROC, counted in its own user
    namespace: fork/thread creation fails with EAGAIN past it); ``max_open_files`` the
    fd numbers (RLIMIT_NOFILE: EMFILE); ``max_file_size`` the size of any file it writes
    (RLIMIT_FSIZE) and of its private /tmp.

    In a child started by childkit, exceeding a limit ends the child and its exit callback
    names the limit (a write past the file size by SIGXFSZ; an uncaught MemoryError or
    the OOM killer, EAGAIN from a process or thread start, or EMFILE by an exit code):
    docs/sandbox.md, "Limits". Code that only enters the sandbox (``enter()``) sees the
    bare kernel behaviour: the failing call (EFBIG, with SIGXFSZ ignored) and nothing more.

    Raises ChildkitError (``NCP_ERR_INVALID_PARAM``) for a value of the wrong type or
    out of range.
    """

    memory_bytes: int | None = 2048 * _MIB
    cpu_seconds: int | None = None
    max_processes: int | None = 32
    max_open_files: int | None = 256
    max_file_size: int | None = 64 * _MIB
    allow_subprocesses: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.allow_subprocesses, bool):
            raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                "ResourceLimits.allow_subprocesses must be a bool, not "
                                f"{type(self.allow_subprocesses).__name__}")
        minimum = {"memory_bytes": 64 * _MIB, "cpu_seconds": 1, "max_processes": 1,
                   "max_open_files": 16, "max_file_size": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                    f"ResourceLimits.{name} must be an int or None, "
                                    f"not {type(value).__name__}")
            if not low <= value <= 2**62:
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                    f"ResourceLimits.{name}={value} is out of range "
                                    f"[{low}, 2**62]")


_DEFAULT_ENV: tuple[str, ...] = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """How to sandbox one isolated child.

    ``readonly_paths``: absolute host paths (files or directories) the child may read, at
    the same place, besides what the interpreter itself needs (typically the entry's
    module directory). ``keep_env``: names of environment variables kept; all others are
    removed. ``isolation_uid``: run the child under a uid of its own (needs root or
    CAP_SETUID). ``allow_reduced``: skip layers this machine cannot apply instead of
    failing (the skipped ones are reported by :func:`childkit.sandbox.skipped_layers`).
    ``tmp_size_bytes``: the size of the private /tmp (a tmpfs, charged to host memory).
    """

    limits: ResourceLimits = ResourceLimits()
    isolation_uid: bool = False
    allow_reduced: bool = False
    readonly_paths: tuple[str, ...] = ()
    keep_env: tuple[str, ...] = _DEFAULT_ENV
    tmp_size_bytes: int = 64 * _MIB

    def __post_init__(self) -> None:
        if not isinstance(self.limits, ResourceLimits):
            raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                "SandboxConfig.limits must be a ResourceLimits")
        for name in ("readonly_paths", "keep_env"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                    f"SandboxConfig.{name} must be a tuple of str")
            object.__setattr__(self, name, tuple(value))
        for path in self.readonly_paths:
            if not os.path.isabs(path) or "\0" in path:
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                    f"readonly path {path!r} must be absolute")
        for name in self.keep_env:
            if not name or "=" in name or "\0" in name:
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                    f"keep_env name {name!r} is not a variable name")
        if (isinstance(self.tmp_size_bytes, bool) or not isinstance(self.tmp_size_bytes, int)
                or not _MIB <= self.tmp_size_bytes <= 2**40):
            raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                f"tmp_size_bytes={self.tmp_size_bytes!r} must be an int in "
                                "[1 MiB, 1 TiB]")


@dataclasses.dataclass(frozen=True)
class LayerStatus:
    """Whether one sandbox layer can be applied on this machine, and why (not)."""

    supported: bool
    reason: str
