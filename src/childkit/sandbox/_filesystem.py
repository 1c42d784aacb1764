"""The sandbox's own file system view: a read-only root holding only what Python needs.

Built in a private mount namespace: a small tmpfs becomes the new root; into it are bound,
read-only and at their usual paths, the interpreter (``sys.base_prefix``, the venv), the
``childkit`` package, the shared-library directories and the caller's ``readonly_paths``;
plus /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom, a /proc (replaced by a
fresh one for the new pid namespace) and a private writable /tmp (a size-capped tmpfs that
exists only in this namespace, so it vanishes with the child). ``pivot_root`` then makes
it the root and detaches the old one: the parent's home, /etc, other users' files and the
rest of the work tree are not hidden but absent. Bind sources are opened once (O_PATH) and
mounted through /proc/self/fd, so a path swapped after planning cannot redirect a mount.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import sys
from collections.abc import Iterable

from childkit.sandbox import _syscalls

#: Where the new root is assembled (hidden by the tmpfs mounted there; any dir would do).
_BUILD_DIR = "/tmp"
DEVICES: tuple[str, ...] = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                            "/dev/urandom")
_DEV_LINKS: tuple[tuple[str, str], ...] = (
    ("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"),
)
_LIBRARY_DIRS: tuple[str, ...] = ("/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64",
                                  "/usr/lib32")
_FORBIDDEN_PREFIXES: tuple[str, ...] = ("/proc", "/dev", "/sys")

_ST_TO_MS = {os.ST_NOSUID: _syscalls.MS_NOSUID, os.ST_NODEV: _syscalls.MS_NODEV,
             os.ST_NOEXEC: _syscalls.MS_NOEXEC, os.ST_NOATIME: _syscalls.MS_NOATIME,
             os.ST_NODIRATIME: _syscalls.MS_NODIRATIME, os.ST_RELATIME: _syscalls.MS_RELATIME}


@dataclasses.dataclass(frozen=True)
class RootPlan:
    """What the sandbox root will hold: host paths bound read-only at the same place
    (``binds``, already resolved, none inside another) and symlinks re-created
    (``symlinks``: path -> target) so that paths through them still resolve."""

    binds: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]


def interpreter_paths() -> list[str]:
    """The host paths this interpreter needs to keep running and importing childkit."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # childkit/
    paths = [sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix, package_dir]
    paths.extend(p for p in _LIBRARY_DIRS if os.path.lexists(p))
    executable = sys.executable and os.path.realpath(sys.executable)
    if executable:
        paths.append(executable)
    return paths


def _is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def check_readonly_path(path: str) -> str | None:
    """Why ``path`` cannot be a read-only path of the sandbox, or ``None`` if it can."""
    real = os.path.realpath(path)
    if real == "/":
        return "the whole root file system cannot be exposed"
    if any(_is_within(real, p) for p in _FORBIDDEN_PREFIXES):
        return f"{real} is under /proc, /dev or /sys, which the sandbox provides itself"
    if not os.path.exists(real):
        return f"{path} does not exist"
    return None


_interpreter_plan: tuple[frozenset[str], tuple[tuple[str, str], ...]] | None = None


def interpreter_plan() -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """The interpreter's paths resolved, and the symlinks met (computed once per process:
    they do not change while it runs)."""
    global _interpreter_plan
    if _interpreter_plan is None:
        symlinks: dict[str, str] = {}
        wanted = frozenset(_resolve(p, symlinks) for p in interpreter_paths()
                           if os.path.exists(p))
        _interpreter_plan = (wanted, tuple(symlinks.items()))
    return _interpreter_plan


def plan(readonly_paths: Iterable[str]) -> RootPlan:
    """Resolve the interpreter's paths and ``readonly_paths`` into a :class:`RootPlan`.
    Raises ValueError naming a read-only path that cannot be exposed."""
    base, base_links = interpreter_plan()
    symlinks: dict[str, str] = dict(base_links)
    wanted: set[str] = set(base)
    for path in readonly_paths:
        problem = check_readonly_path(path)
        if problem is not None:
            raise ValueError(f"readonly path {path!r}: {problem}")
        wanted.add(_resolve(path, symlinks))
    binds: list[str] = []
    for path in sorted(wanted):
        if not any(_is_within(path, kept) for kept in binds):
            binds.append(path)
    links = tuple(sorted((link, target) for link, target in symlinks.items()
                         if not any(_is_within(os.path.dirname(link), b) for b in binds)))
    return RootPlan(tuple(binds), links)


def _resolve(path: str, symlinks: dict[str, str]) -> str:
    """The real path of ``path``; every symlink met on the way is recorded (at its
    resolved location) so the sandbox can re-create it."""
    current = "/"
    for part in os.path.normpath(path).split("/"):
        if not part:
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            symlinks[candidate] = os.readlink(candidate)
            candidate = os.path.realpath(candidate)
        current = candidate
    return os.path.realpath(path)


def _mount_flags(fd: int) -> int:
    # Flags the source mount already has must be kept on the remount (the kernel locks
    # them when the mount came from a more privileged namespace).
    flags = 0
    st_flags = os.fstatvfs(fd).f_flag
    for st_bit, ms_bit in _ST_TO_MS.items():
        if st_flags & st_bit:
            flags |= ms_bit
    if not flags & (_syscalls.MS_NOATIME | _syscalls.MS_RELATIME):
        flags |= _syscalls.MS_STRICTATIME
    return flags


_MS_TO_ATTR = {_syscalls.MS_NOSUID: _syscalls.MOUNT_ATTR_NOSUID,
               _syscalls.MS_NODEV: _syscalls.MOUNT_ATTR_NODEV,
               _syscalls.MS_NOEXEC: _syscalls.MOUNT_ATTR_NOEXEC}


def _bind(fd: int, target: str, extra_flags: int, recursive: bool = True) -> None:
    """Bind ``fd``'s file or tree at ``target``, read-only (with ``extra_flags``) down to
    every mount beneath it."""
    source = f"/proc/self/fd/{fd}"
    flags = _syscalls.MS_BIND | (_syscalls.MS_REC if recursive else 0)
    _syscalls.mount(source, target, None, flags)
    attrs = _syscalls.MOUNT_ATTR_RDONLY
    for ms_bit, attr_bit in _MS_TO_ATTR.items():
        if extra_flags & ms_bit:
            attrs |= attr_bit
    try:
        # One call for the whole tree, sub-mounts included; only adds restrictions.
        _syscalls.mount_setattr(target, attrs, recursive)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        # Before Linux 5.12: remount the top mount only, keeping its locked flags.
        _syscalls.mount(None, target, None, _syscalls.MS_REMOUNT | _syscalls.MS_BIND
                        | _syscalls.MS_RDONLY | _mount_flags(fd) | extra_flags)


def _make_mountpoint(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, mode=0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


Identity = tuple[int, int]


def identities(paths: Iterable[str]) -> tuple[Identity, ...]:
    """``(st_dev, st_ino)`` of each of ``paths`` (followed): what a bind of it shows.
    OSError if one is missing."""
    return tuple((st.st_dev, st.st_ino) for st in map(os.stat, paths))


def binds_under_tmp(root_plan: RootPlan) -> bool:
    """Whether ``root_plan`` puts anything inside the sandbox's /tmp."""
    return any(_is_within(path, "/tmp") for path in
               (*root_plan.binds, *(link for link, _target in root_plan.symlinks)))


def mount_tmp(target: str, tmp_size: int) -> None:
    """Mount the sandbox's private, size-capped /tmp (a fresh tmpfs) at ``target``."""
    _syscalls.mount("tmpfs", target, "tmpfs", _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                    f"mode=1777,size={tmp_size},nr_inodes=65536")


def build_root(root_plan: RootPlan, tmp_size: int | None,
               expected: tuple[Identity, ...] | None = None) -> None:
    """Assemble the root described by ``root_plan`` and ``pivot_root`` into it. Must run in
    a private mount namespace where the caller may mount. Raises OSError on failure
    (then the caller's view may be half built: it must not go on unsandboxed).

    ``tmp_size`` ``None`` leaves /tmp an empty mount point (a template's root: each user
    mounts its own /tmp with :func:`mount_tmp`). ``expected``: the :func:`identities` of
    ``root_plan.binds`` the caller saw; a bind source that is no longer the same file
    raises OSError (ESTALE) instead of being bound.
    """
    sources: dict[str, int] = {}
    try:
        for path in (*root_plan.binds, *DEVICES, "/proc"):
            sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        if expected is not None:
            opened = tuple((st.st_dev, st.st_ino) for st in
                           (os.fstat(sources[path]) for path in root_plan.binds))
            if opened != expected:
                raise OSError(errno.ESTALE, "a read-only path changed while it was planned")
        root = _BUILD_DIR
        _syscalls.mount("tmpfs", root, "tmpfs", _syscalls.MS_NOSUID | _syscalls.MS_NODEV,
                        "mode=0755,size=4m,nr_inodes=16384")
        os.mkdir(root + "/tmp")
        if tmp_size is not None:
            mount_tmp(root + "/tmp", tmp_size)
        for device in DEVICES:
            _make_mountpoint(root + device, is_dir=False)
            _bind(sources[device], root + device, _syscalls.MS_NOSUID | _syscalls.MS_NOEXEC,
                  recursive=False)
        for link, target in _DEV_LINKS:
            os.symlink(target, root + link)
        os.mkdir(root + "/proc")
        proc = f"/proc/self/fd/{sources['/proc']}"
        try:
            _syscalls.mount(proc, root + "/proc", None, _syscalls.MS_BIND)
        except OSError:  # locked submounts (unprivileged): they must come along
            _syscalls.mount(proc, root + "/proc", None, _syscalls.MS_BIND | _syscalls.MS_REC)
        for path in root_plan.binds:
            fd = sources[path]
            _make_mountpoint(root + path, stat.S_ISDIR(os.fstat(fd).st_mode))
            _bind(fd, root + path, _syscalls.MS_NOSUID | _syscalls.MS_NODEV)
        for link, target in root_plan.symlinks:
            os.makedirs(os.path.dirname(root + link), mode=0o755, exist_ok=True)
            if not os.path.lexists(root + link):
                os.symlink(target, root + link)
    finally:
        for fd in sources.values():
            os.close(fd)
    os.chdir(root)
    # new_root == put_old: the old root ends up stacked under the new one; detach it.
    _syscalls.pivot_root(".", ".")
    _syscalls.umount2(".", _syscalls.MNT_DETACH)
    os.chdir("/")
    _syscalls.mount(None, "/", None, _syscalls.MS_REMOUNT | _syscalls.MS_BIND
                    | _syscalls.MS_RDONLY | _syscalls.MS_NOSUID | _syscalls.MS_NODEV)


def mount_proc() -> None:
    """Mount a /proc of the caller's (new) pid namespace over the placeholder."""
    _syscalls.mount("proc", "/proc", "proc",
                    _syscalls.MS_NOSUID | _syscalls.MS_NODEV | _syscalls.MS_NOEXEC)
