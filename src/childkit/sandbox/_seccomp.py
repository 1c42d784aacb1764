"""seccomp-bpf: the kernel refuses every system call the policy does not name.

The policy (:mod:`childkit.sandbox._policy`) is a default-deny allow-list: a call it
does not name answers EPERM (not a kill, so code that probes a call gets a clear
``PermissionError`` instead of dying). Calls of the other ABIs of the machine (i386,
x32) are killed by libseccomp's bad-architecture action, so they cannot slip past it.
clone3 answers ENOSYS (its flags live in memory a filter cannot read) so libc falls back
to clone, whose namespace flags the filter refuses, as Chromium and Docker do.
libseccomp (through PyPI ``pyseccomp``) compiles the rules to BPF once (a binary tree
of the call numbers), in the parent when it called ``preload``; the child only hands
the program to the kernel (prctl PR_SET_SECCOMP). Two programs: the usual one, and the
single-process one (``single_process=True``: fork, vfork and clone without
CLONE_THREAD answer EAGAIN) for a child whose limits no cgroup holds.
"""

from __future__ import annotations

import ctypes
import errno
import os
from types import ModuleType
from typing import Any

from childkit.sandbox import _policy, _syscalls

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_INSN_SIZE = 8  # struct sock_filter


def load_library() -> ModuleType:
    """The pyseccomp module; OSError if it or libseccomp.so.2 is missing."""
    try:
        import pyseccomp  # type: ignore[import-untyped]
    except (ImportError, RuntimeError, OSError) as exc:
        raise OSError(errno.ENOSYS, f"pyseccomp/libseccomp.so.2 unavailable ({exc})") from None
    return pyseccomp  # type: ignore[no-any-return]


#: The compiled programs, by ``single_process``.
_programs: dict[bool, bytes] = {}


def compile_filter(single_process: bool = False) -> bytes:
    """The filter as raw BPF (compiled once per process by libseccomp, then cached, so a
    parent that calls this before forking spares every child the work); with
    ``single_process``, the variant that refuses every new process (threads allowed).
    Raises OSError if libseccomp is missing or refuses a rule."""
    program = _programs.get(single_process)
    if program is not None:
        return program
    sc = load_library()
    filt = sc.SyscallFilter(defaction=sc.ERRNO(errno.EPERM))
    try:
        filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # a binary tree, not a linear scan
    except (OSError, RuntimeError, ValueError):
        pass  # an older libseccomp: the same rules, checked in order
    for name in _policy.ALLOWED:
        _add(sc, filt, sc.ALLOW, name)
    for name in _policy.ENOSYS_CALLS:
        _add(sc, filt, sc.ERRNO(errno.ENOSYS), name)
    refused = sc.ERRNO(_policy.SINGLE_PROCESS_ERRNO)
    for name in _policy.PROCESS_CALLS:
        _add(sc, filt, refused if single_process else sc.ALLOW, name)
    allowed_rules = (_policy.SINGLE_PROCESS_RULES if single_process
                     else _policy.PROCESS_RULES)
    for rule in (*_policy.ARGUMENT_RULES, *allowed_rules):
        _add(sc, filt, sc.ALLOW, rule.call,
             sc.Arg(rule.index, sc.MASKED_EQ, rule.mask, rule.value))
    for rule in _policy.SINGLE_PROCESS_REFUSED if single_process else ():
        _add(sc, filt, refused, rule.call,
             sc.Arg(rule.index, sc.MASKED_EQ, rule.mask, rule.value))
    for kind in _policy.SOCKETPAIR_TYPES:
        _add(sc, filt, sc.ALLOW, "socketpair",
             sc.Arg(0, sc.MASKED_EQ, 0xFFFFFFFF, _policy.SOCKETPAIR_DOMAIN),
             sc.Arg(1, sc.MASKED_EQ, _policy.SOCKET_TYPE_MASK, kind))
    fd = os.memfd_create("childkit-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            filt.export_bpf(out)
        size = os.fstat(fd).st_size
        program = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if not program or len(program) % _INSN_SIZE:
        raise OSError(errno.EINVAL, "libseccomp produced no BPF program")
    _programs[single_process] = program
    return program


def _add(sc: ModuleType, filt: Any, action: Any, name: str, *args: Any) -> None:
    # A call this architecture does not have (e.g. a newer one, or one only i386 has)
    # has nothing to allow.
    try:
        number = sc.resolve_syscall(sc.Arch.NATIVE, name)
    except (ValueError, OSError):
        return
    if number < 0:
        return
    filt.add_rule(action, name, *args)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_loadable: dict[bool, tuple[ctypes.Array[ctypes.c_char], _SockFprog]] = {}


def _sock_fprog(single_process: bool) -> _SockFprog:
    # The program in the form prctl takes, built once per process like the program
    # itself (the buffer is kept alongside: fprog points into it).
    loadable = _loadable.get(single_process)
    if loadable is None:
        program = compile_filter(single_process)
        buffer = ctypes.create_string_buffer(program, len(program))
        loadable = (buffer, _SockFprog(len(program) // _INSN_SIZE, ctypes.addressof(buffer)))
        _loadable[single_process] = loadable
    return loadable[1]


def install_ready() -> None:
    """Compile both filters and prepare what :func:`install` hands the kernel, so that a
    child forked afterwards only makes the one prctl. OSError as for
    :func:`compile_filter`."""
    _sock_fprog(False)
    _sock_fprog(True)


def install(single_process: bool = False) -> int:
    """Load the filter (with ``single_process``, the variant that refuses new processes)
    into this process (inherited by all it starts; cannot be removed). Needs
    no_new_privs. Returns the filter's length in instructions; raises OSError if
    libseccomp is missing or the kernel refuses the filter."""
    fprog = _sock_fprog(single_process)
    _syscalls.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    return int(fprog.len)


def check_sockets_refused() -> None:
    """In a process under the filter: try to make a Unix and a netlink socket (the ways to
    sockets the child did not inherit); raise OSError if the kernel made either (the
    socket is closed at once), so the layer is reported from trying, not assumed."""
    import socket

    for family, kind in ((socket.AF_UNIX, socket.SOCK_STREAM),
                         (socket.AF_NETLINK, socket.SOCK_DGRAM)):
        try:
            made = socket.socket(family, kind)
        except PermissionError:
            continue
        made.close()
        raise OSError(errno.EPROTO, f"socket({family.name}) was allowed")


def check_processes_refused() -> None:
    """In a process under the single-process filter: try to fork (the kernel's fork,
    without the interpreter's handling); raise OSError if it was allowed (the child
    made ends at once and is reaped) or refused with anything but EAGAIN."""
    try:
        pid = _syscalls.fork_without_hooks()
    except OSError as exc:
        if exc.errno == _policy.SINGLE_PROCESS_ERRNO:
            return
        raise OSError(errno.EPROTO, f"fork was refused with {exc.errno}, not EAGAIN") from None
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    raise OSError(errno.EPROTO, "fork was allowed")
