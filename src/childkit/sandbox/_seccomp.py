"""seccomp-bpf: refuse the system calls a sandboxed Python never needs.

A deny-list with EPERM (not a kill), so code that probes a call gets a clear
``PermissionError`` instead of dying. Calls of the other ABIs of the machine (i386, x32)
are killed by libseccomp's bad-architecture action, so they cannot slip past the list.
New namespaces are refused both through unshare/setns and through clone's flags; clone3
answers ENOSYS (its flags live in memory a filter cannot read) so libc falls back to
clone, as Chromium and Docker do. libseccomp (through PyPI ``pyseccomp``) compiles the
rules to BPF once, in the parent when it called ``preload``; the child only hands the
program to the kernel (prctl PR_SET_SECCOMP).
"""

from __future__ import annotations

import ctypes
import errno
import os
from types import ModuleType

from childkit.sandbox import _syscalls

#: Refused with EPERM: file system and namespace changes, other processes' memory, the
#: kernel itself (modules, kexec, keys, bpf, perf, clocks, reboot), io_uring (whose
#: requests bypass this filter), userfaultfd and handle-based opens (old escape tools).
DENIED: tuple[str, ...] = (
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "setns", "unshare",
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
    "pidfd_getfd", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "swapon",
    "swapoff", "reboot", "syslog", "acct", "quotactl", "quotactl_fd", "lookup_dcookie",
    "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "name_to_handle_at", "open_by_handle_at",
    "fanotify_init", "vhangup", "nfsservctl", "personality", "uselib", "_sysctl",
)

_NAMESPACE_FLAGS = (
    _syscalls.CLONE_NEWNS, _syscalls.CLONE_NEWCGROUP, _syscalls.CLONE_NEWUTS,
    _syscalls.CLONE_NEWIPC, _syscalls.CLONE_NEWUSER, _syscalls.CLONE_NEWPID,
    _syscalls.CLONE_NEWNET, _syscalls.CLONE_NEWTIME,
)
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_INSN_SIZE = 8  # struct sock_filter
_TIOCSTI = 0x5412  # push characters into a terminal's input: a classic escape
_TIOCLINUX = 0x541C


def load_library() -> ModuleType:
    """The pyseccomp module; OSError if it or libseccomp.so.2 is missing."""
    try:
        import pyseccomp  # type: ignore[import-untyped]
    except (ImportError, RuntimeError, OSError) as exc:
        raise OSError(errno.ENOSYS, f"pyseccomp/libseccomp.so.2 unavailable ({exc})") from None
    return pyseccomp  # type: ignore[no-any-return]


_program: bytes | None = None


def compile_filter() -> bytes:
    """The filter as raw BPF (compiled once per process by libseccomp, then cached, so a
    parent that calls this before forking spares every child the work). Raises OSError
    if libseccomp is missing or refuses a rule."""
    global _program
    if _program is not None:
        return _program
    sc = load_library()
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            number = sc.resolve_syscall(sc.Arch.NATIVE, name)
        except (ValueError, OSError):
            continue
        if number < 0:
            continue  # no such call on this architecture
        filt.add_rule(eperm, name)
    for flag in _NAMESPACE_FLAGS:
        filt.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for request in (_TIOCSTI, _TIOCLINUX):
        filt.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
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
    _program = program
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_loadable: tuple[ctypes.Array[ctypes.c_char], _SockFprog] | None = None


def _sock_fprog() -> _SockFprog:
    # The program in the form prctl takes, built once per process like the program
    # itself (the buffer is kept alongside: fprog points into it).
    global _loadable
    if _loadable is None:
        program = compile_filter()
        buffer = ctypes.create_string_buffer(program, len(program))
        _loadable = (buffer, _SockFprog(len(program) // _INSN_SIZE, ctypes.addressof(buffer)))
    return _loadable[1]


def install_ready() -> None:
    """Compile the filter and prepare what :func:`install` hands the kernel, so that a
    child forked afterwards only makes the one prctl. OSError as for
    :func:`compile_filter`."""
    _sock_fprog()


def install() -> int:
    """Load the filter into this process (inherited by all it starts; cannot be removed).
    Needs no_new_privs. Returns the filter's length in instructions; raises OSError if
    libseccomp is missing or the kernel refuses the filter."""
    fprog = _sock_fprog()
    _syscalls.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
    return int(fprog.len)
