"""Landlock: a second, kernel-enforced allow-list of paths, TCP ports and scopes.

The mount namespace already hides everything outside the sandbox root; Landlock repeats
the rule in a different kernel subsystem (defence in depth, as Chromium layers seccomp
over namespaces): files may be read and executed only beneath the read-only paths, written
only beneath /tmp; no TCP bind/connect at all (ABI 4); no signals or abstract Unix
sockets out of the sandbox (ABI 6). A small ctypes binding: the PyPI ``landlock`` package
is a pre-release (1.0.0.dev5) and adds nothing the three syscalls need.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

from childkit.sandbox import _syscalls

_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
_ABI1_ALL = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

#: Access rights that make sense on a file (the kernel rejects others in a file's rule).
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The Landlock ABI this kernel offers; OSError if it has none (or it is disabled)."""
    return _syscalls.raw_syscall("landlock_create_ruleset", 0, 0, _CREATE_RULESET_VERSION)


def _handled_fs(abi: int) -> int:
    rights = _ABI1_ALL
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(read_paths: Iterable[str], write_paths: Iterable[str],
             device_paths: Iterable[str]) -> int:
    """Restrict this process (and all it starts) to: read/execute beneath ``read_paths``,
    everything beneath ``write_paths``, read/write (no ioctl) of ``device_paths``; no TCP;
    signals and abstract Unix sockets scoped to the sandbox. Needs no_new_privs. Returns
    the ABI used; raises OSError if Landlock is missing or refuses a rule."""
    abi = abi_version()
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled, 0, 0)
    size = ctypes.sizeof(_RulesetAttr)
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    else:
        size = 16  # older kernels reject the unknown trailing field
    ruleset = _syscalls.raw_syscall("landlock_create_ruleset", ctypes.addressof(attr), size, 0)
    try:
        for paths, rights in ((read_paths, EXECUTE | READ_FILE | READ_DIR),
                              (write_paths, handled),
                              (device_paths, READ_FILE | WRITE_FILE)):
            for path in paths:
                _add_path_rule(ruleset, path, rights & handled)
        _syscalls.raw_syscall("landlock_restrict_self", ruleset, 0)
    finally:
        os.close(ruleset)
    return abi


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        _syscalls.raw_syscall("landlock_add_rule", ruleset, _RULE_PATH_BENEATH,
                              ctypes.addressof(rule), 0)
    finally:
        os.close(fd)
