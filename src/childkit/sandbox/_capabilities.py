"""No privileges: every capability dropped for good, and no_new_privs.

Inside its user namespace the sandboxed process starts with a full capability set (over
that namespace only); it needs it to mount its /proc, then gives all of it up: the
bounding set (so no exec can regain one), the ambient set, the effective/permitted/
inheritable sets, with the securebits locked so uid 0 would not bring them back.
"""

from __future__ import annotations

import ctypes
import errno
import os

from childkit.sandbox import _syscalls

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | ..._LOCKED
# | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | ..._LOCKED
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number this kernel knows (read once per process; a forked
    child inherits it, so the launcher reads it for every isolated child)."""
    global _last_cap
    if _last_cap is None:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            _last_cap = int(f.read())
    return _last_cap


_drop_arguments: tuple[ctypes.c_int, ctypes.c_ulong, tuple[ctypes.c_ulong, ...]] | None = None


def drop_arguments() -> tuple[ctypes.c_int, ctypes.c_ulong, tuple[ctypes.c_ulong, ...]]:
    """The ctypes arguments of the ``PR_CAPBSET_DROP`` calls :func:`drop_all` makes (the
    option, a zero, one per capability), made once per process (the launcher makes them
    for every isolated child). OSError if the last capability cannot be read."""
    global _drop_arguments
    if _drop_arguments is None:
        _drop_arguments = (ctypes.c_int(_syscalls.PR_CAPBSET_DROP), ctypes.c_ulong(0),
                           tuple(ctypes.c_ulong(cap) for cap in range(last_cap() + 1)))
    return _drop_arguments


def drop_all() -> None:
    """Drop every capability from every set of this process, irrevocably.

    Raises OSError if the kernel refuses (e.g. PR_CAPBSET_DROP without CAP_SETPCAP: then
    the bounding set was already reduced by whoever started us, and we go on only if it
    holds no capability).
    """
    option, zero, caps = drop_arguments()
    prctl = _syscalls.libc_prctl()
    for cap, arg in enumerate(caps):
        # Dropping one already dropped succeeds: one call per capability, not two. The
        # arguments were made once (in the launcher): about half the cost of each call.
        if prctl(option, arg, zero, zero, zero) != 0:
            err = ctypes.get_errno()
            if err != errno.EPERM or _syscalls.prctl(_syscalls.PR_CAPBSET_READ, cap) == 1:
                # still in the bounding set, and we may not drop it
                raise OSError(err, f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(err)}")
    _syscalls.prctl(_syscalls.PR_CAP_AMBIENT, _syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    try:
        _syscalls.prctl(_syscalls.PR_SET_SECUREBITS, _SECUREBITS)
    except PermissionError:
        pass  # without CAP_SETPCAP; harmless once every set below is empty
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _syscalls.raw_syscall("capset", ctypes.addressof(header), ctypes.addressof(data))
    if any(capabilities()):
        raise OSError(1, "capabilities remain after capset")


class _RaiseArguments:
    """The ctypes objects :func:`raise_effective` passes to capget/capset, made once per
    process (the launcher makes them for every isolated child's init, which would
    otherwise build them in a freshly forked process: a few hundred microseconds of
    first use and copy-on-write faults)."""

    def __init__(self) -> None:
        self.header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        self.data = (_CapData * 2)()
        self.halves = (self.data[0], self.data[1])  # views of self.data, not copies
        self.header_address = ctypes.c_void_p(ctypes.addressof(self.header))
        self.data_address = ctypes.c_void_p(ctypes.addressof(self.data))
        self.capget = ctypes.c_long(_syscalls.syscall_number("capget"))
        self.capset = ctypes.c_long(_syscalls.syscall_number("capset"))


_raise_arguments: _RaiseArguments | None = None


def raise_arguments() -> _RaiseArguments:
    """The arguments of :func:`raise_effective`, made once per process. OSError (ENOSYS)
    on a machine whose capget/capset numbers are unknown."""
    global _raise_arguments
    if _raise_arguments is None:
        _raise_arguments = _RaiseArguments()
    return _raise_arguments


def raise_effective() -> None:
    """Make the effective set equal the permitted set (after a uid change with KEEPCAPS).
    OSError if the kernel refuses."""
    args = raise_arguments()
    # Whatever a caller before left in them: the version (capget rewrites it on a
    # mismatch) and this process (pid 0).
    args.header.version = _LINUX_CAPABILITY_VERSION_3
    args.header.pid = 0
    syscall = _syscalls.libc_syscall()
    if syscall(args.capget, args.header_address, args.data_address) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    for half in args.halves:
        half.effective = half.permitted
    if syscall(args.capset, args.header_address, args.data_address) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def capabilities() -> tuple[int, int, int]:
    """This process's (effective, permitted, inheritable) capability masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _syscalls.raw_syscall("capget", ctypes.addressof(header), ctypes.addressof(data))

    def mask(field: str) -> int:
        return int(getattr(data[0], field)) | (int(getattr(data[1], field)) << 32)
    return mask("effective"), mask("permitted"), mask("inheritable")


def set_no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: no exec (setuid binaries, file capabilities) can raise privileges;
    it is also what lets an unprivileged process load a seccomp filter and Landlock."""
    _syscalls.prctl(_syscalls.PR_SET_NO_NEW_PRIVS, 1)
