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
import dataclasses
import os
import stat
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


@dataclasses.dataclass(frozen=True)
class Ruleset:
    """What a ruleset is made of, worked out ahead (:func:`prepare`): the ABI, the
    ``landlock_create_ruleset`` argument and, per path, the rights to allow beneath it
    (a directory) and on it (anything else)."""

    abi: int
    attr: _RulesetAttr
    size: int
    rules: tuple[tuple[str, int, int], ...]


#: Rulesets prepared, by their paths: a parent (the launcher) prepares the sandbox's once
#: and every child forked later inherits it, instead of asking the kernel for the ABI
#: and building the same structures anew (tens of microseconds of first use each).
_prepared: dict[tuple[tuple[str, ...], ...], Ruleset] = {}


def prepare(read_paths: Iterable[str], write_paths: Iterable[str],
            device_paths: Iterable[str]) -> Ruleset:
    """The ruleset :func:`restrict` makes for these paths, prepared (once per distinct
    set of paths; no path is opened here). OSError if Landlock is missing."""
    key = (tuple(read_paths), tuple(write_paths), tuple(device_paths))
    known = _prepared.get(key)
    if known is not None:
        return known
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
    rules = tuple((path, rights & handled, rights & handled & _FILE_RIGHTS)
                  for paths, rights in ((key[0], EXECUTE | READ_FILE | READ_DIR),
                                        (key[1], handled),
                                        (key[2], READ_FILE | WRITE_FILE))
                  for path in paths)
    ruleset = Ruleset(abi, attr, size, rules)
    _prepared[key] = ruleset
    return ruleset


def restrict(read_paths: Iterable[str], write_paths: Iterable[str],
             device_paths: Iterable[str]) -> int:
    """Restrict this process (and all it starts) to: read/execute beneath ``read_paths``,
    everything beneath ``write_paths``, read/write (no ioctl) of ``device_paths``; no TCP;
    signals and abstract Unix sockets scoped to the sandbox. Needs no_new_privs. Returns
    the ABI used; raises OSError if Landlock is missing or refuses a rule. Uses what
    :func:`prepare` prepared for the same paths, if anything."""
    prepared = prepare(read_paths, write_paths, device_paths)
    ruleset = _syscalls.raw_syscall("landlock_create_ruleset", ctypes.addressof(prepared.attr),
                                    prepared.size, 0)
    try:
        for path, dir_rights, file_rights in prepared.rules:
            _add_path_rule(ruleset, path, dir_rights, file_rights)
        _syscalls.raw_syscall("landlock_restrict_self", ruleset, 0)
    finally:
        os.close(ruleset)
    return prepared.abi


def _add_path_rule(ruleset: int, path: str, dir_rights: int, file_rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        # fstat of the fd opened: what the rule is really about (no second path walk).
        rights = dir_rights if stat.S_ISDIR(os.fstat(fd).st_mode) else file_rights
        rule = _PathBeneathAttr(rights, fd)
        _syscalls.raw_syscall("landlock_add_rule", ruleset, _RULE_PATH_BENEATH,
                              ctypes.addressof(rule), 0)
    finally:
        os.close(fd)
