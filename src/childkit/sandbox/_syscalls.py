"""Thin ctypes wrappers for the Linux calls the sandbox needs and Python 3.11 lacks.

Every wrapper raises :class:`OSError` with the call's errno on failure and nothing else.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

_libc = ctypes.CDLL(None, use_errno=True)
# The same libc, called with the GIL held (for fork: see fork_without_hooks).
_libc_gil = ctypes.PyDLL(None, use_errno=True)

# x86_64 and aarch64 (asm-generic) numbers of the calls glibc has no wrapper for.
_MACHINE = os.uname().machine
_NR: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "capset": 126, "capget": 125, "clone": 56,
               "landlock_create_ruleset": 444, "landlock_add_rule": 445,
               "landlock_restrict_self": 446, "mount_setattr": 442},
    "aarch64": {"pivot_root": 41, "capset": 91, "capget": 90, "clone": 220,
                "landlock_create_ruleset": 444, "landlock_add_rule": 445,
                "landlock_restrict_self": 446, "mount_setattr": 442},
}

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def resolve_functions() -> None:
    """Look up, once, every libc function the wrappers below call. ctypes resolves a
    function on first use (dlsym, then a new function object: tens of microseconds
    each); done in the launcher, every isolated child inherits them resolved."""
    for name in ("unshare", "setns", "mount", "umount2", "syscall", "prctl", "sethostname",
                 "clearenv"):
        getattr(_libc, name)
    _libc_gil.fork  # noqa: B018 (the lookup is the point)
    _libc_gil.syscall  # noqa: B018


def syscall_number(name: str) -> int:
    """The number of ``name`` on this machine; :class:`OSError` (ENOSYS) if unknown here."""
    try:
        return _NR[_MACHINE][name]
    except KeyError:
        raise OSError(38, f"{name}: no syscall number known for {_MACHINE}") from None


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    """unshare(2): move the caller into new namespaces named by ``flags``."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2): move the caller into the namespace ``fd`` refers to."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """mount(2)."""
    def enc(value: str | None) -> bytes | None:
        return None if value is None else os.fsencode(value)

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                       enc(data)), f"mount {target}")


MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(target: str, attr_set: int, recursive: bool) -> None:
    """mount_setattr(2) (Linux 5.12+): add ``attr_set`` flags to the mount at ``target``
    and, if ``recursive``, to every mount beneath it."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    raw_syscall("mount_setattr", _AT_FDCWD, ctypes.c_char_p(os.fsencode(target)),
                _AT_RECURSIVE if recursive else 0, ctypes.c_void_p(ctypes.addressof(attr)),
                ctypes.sizeof(attr))


def umount2(target: str, flags: int) -> None:
    """umount2(2)."""
    _check(_libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2)."""
    _check(_libc.syscall(ctypes.c_long(syscall_number("pivot_root")),
                         os.fsencode(new_root), os.fsencode(put_old)), "pivot_root")


def libc_prctl() -> Callable[..., int]:
    """libc's prctl itself, for hot loops that pass ready-made ctypes arguments (an int
    option, four unsigned longs) and check the result (-1 and errno) themselves."""
    return _libc.prctl


def libc_syscall() -> Callable[..., int]:
    """libc's syscall itself, for callers that pass ready-made ctypes arguments and check
    the result (-1 and errno) themselves."""
    return _libc.syscall


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2); returns the call's result."""
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


def sethostname(name: str) -> None:
    """sethostname(2) (only in a private UTS namespace)."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def raw_syscall(name: str, *args: int | ctypes.c_void_p | ctypes.c_char_p) -> int:
    """syscall(2) by name with integer/pointer arguments; the result, or OSError."""
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _check(_libc.syscall(ctypes.c_long(syscall_number(name)), *conv), name)


def clearenv() -> None:
    """clearenv(3): empty the C environment (``environ``) of this process. OSError if
    libc reports a failure."""
    if _libc.clearenv() != 0:
        raise OSError(ctypes.get_errno(), "clearenv failed")


def memset(address: int, value: int, length: int) -> None:
    """memset(3) on this process's own memory (used to wipe the initial environment block)."""
    ctypes.memset(address, value, length)


def fork_without_hooks() -> int:
    """fork(2) without the interpreter's fork handling (``os.fork`` runs every
    ``os.register_at_fork`` hook and re-initialises the threading module, which in a
    forked Python touches a few hundred pages: about 1 ms of copy-on-write faults).

    Only for the sandbox's own processes (the uid-map writer, the init, the sandboxed
    process): the caller must be single-threaded, so every lock is in a consistent state
    in the child (fork is called with the GIL held, as ``os.fork`` does), must itself
    descend from an ``os.fork`` (which ran the hooks) through childkit's code only, and
    the child must run only childkit's code until it is the sandboxed process (see
    ``_enter``). Returns 0 in the child and the child's pid in the parent; OSError on
    failure.
    """
    return _check(_libc_gil.fork(), "fork")


_SIGCHLD = 17  # the same number on every Linux architecture


def clone_process(namespaces: int) -> int:
    """clone(2) as a fork (a copy-on-write copy of the caller, which gets SIGCHLD when it
    ends) whose child starts in new namespaces: ``namespaces`` holds ``CLONE_NEW*``
    flags only. With ``CLONE_NEWUSER`` the others are owned by the new user namespace,
    in which the child holds every capability (and no uid until its maps are written).

    The same rules as :func:`fork_without_hooks` apply (single-threaded caller, GIL held,
    no at-fork hooks, the child runs only childkit's code), and more: glibc's fork
    bookkeeping is skipped too, so the child's cached thread id is its parent's; nothing
    childkit runs there reads it (glibc's ``raise`` asks the kernel), and the ``os.fork``
    with which the child starts the process that runs user code sets it right there.
    Returns 0 in the child, its pid in the caller; OSError (nothing created) on failure.
    """
    if namespaces & ~_ALL_NAMESPACES:
        raise OSError(22, f"clone_process takes CLONE_NEW* flags only, not {namespaces:#x}")
    number = syscall_number("clone")
    # flags, new stack (none: the child continues on a copy of this one), parent tid,
    # child tid, tls: all unused. On aarch64 the last two are swapped; both are 0.
    return _check(_libc_gil.syscall(ctypes.c_long(number), ctypes.c_ulong(namespaces | _SIGCHLD),
                                    ctypes.c_void_p(0), ctypes.c_void_p(0), ctypes.c_void_p(0),
                                    ctypes.c_ulong(0)), "clone")


_ALL_NAMESPACES = (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
                   | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWTIME)
