"""The seccomp policy of an isolated child, in one place: every system call it may make.

A default-deny allow-list, as Chromium's baseline policy: a call named here is allowed
(some only with the arguments given in :data:`ARGUMENT_RULES`), any other answers EPERM,
so that a call nobody thought of (or a kernel adds later) is refused, not allowed. The
list was measured, not guessed: an isolated child ran a representative workload (imports
of stdlib C extensions and NumPy, threads, a thread pool, asyncio, fork and wait, files
in /tmp, mmap, the IPC kit with fds, Ashmem and remote objects) under ``strace -f``, and
every call it made is here; the rest of the list is what the same families need on other
paths (``*at`` variants, newer calls glibc tries first). docs/sandbox.md says why each
family is (not) here; tests/sandbox/test_seccomp_policy.py runs the workload under the
filter and checks that unlisted calls are refused.

Sockets (issue 12, classes 4 and 5): ``socket()`` is not allowed at all, whatever the
family, and neither are ``connect``, ``bind``, ``listen`` and ``accept``: a child
reaches no socket it did not inherit from childkit (pathname sockets under any path it
can see, abstract sockets, netlink such as uevents). It may still make connected
AF_UNIX pairs (``socketpair``: asyncio's self-pipe, the IPC kit's channels), stream or
seqpacket only: a datagram pair could ``sendto`` a named socket, a connected stream or
seqpacket socket cannot (the kernel ignores or refuses the address).

One process (issue 12, classes 6 and 7, where no cgroup holds the limits): the
**single-process** variant of the policy (:data:`PROCESS_CALLS`,
:data:`SINGLE_PROCESS_RULES`) also refuses ``fork``, ``vfork`` and a ``clone`` without
``CLONE_THREAD``, with EAGAIN (what a full process limit answers: ``BlockingIOError``
in Python), while threads start as before; the per-process rlimits (``RLIMIT_AS``,
``RLIMIT_CPU``) then cover the whole child.
"""

from __future__ import annotations

import dataclasses

from childkit.sandbox import _syscalls

#: Allowed whatever their arguments. Grouped by what they touch; each is harmless in the
#: sandbox either because it acts on the caller's own fds, memory, threads or children
#: only, or because another layer confines it (paths: the mount namespace and Landlock;
#: signals and process ids: the pid namespace; ids: the one-uid user namespace).
ALLOWED: tuple[str, ...] = (
    # fds: reading, writing, positioning, duplicating, closing
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "lseek", "close", "close_range", "dup", "dup2", "dup3", "fcntl",
    "flock", "fsync", "fdatasync", "ftruncate", "fallocate", "fadvise64", "readahead",
    "sendfile", "copy_file_range", "splice", "tee", "pipe", "pipe2",
    # paths (the sandbox's own minimal root; writing only beneath /tmp)
    "open", "openat", "openat2", "creat", "stat", "fstat", "lstat", "newfstatat", "statx",
    "statfs", "fstatfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat",
    "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat", "rmdir",
    "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
    "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
    "fchownat", "truncate", "utime", "utimes", "utimensat", "futimesat", "umask",
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore",
    "mbind", "get_mempolicy", "membarrier", "memfd_create", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "mseal", "map_shadow_stack",
    # processes and threads (clone only without namespace flags: ARGUMENT_RULES; fork
    # and vfork are in PROCESS_CALLS)
    "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
    "set_tid_address", "set_robust_list", "rseq", "arch_prctl", "futex", "futex_waitv",
    "futex_wake", "futex_wait", "futex_requeue", "restart_syscall", "sched_yield",
    "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_getscheduler",
    "sched_getattr", "sched_get_priority_max", "sched_get_priority_min", "getcpu",
    "getpriority", "setpriority", "getrlimit", "setrlimit", "prlimit64", "getrusage",
    "times", "sysinfo", "uname", "capget", "ioprio_get",
    # identity (reading only: no set*id)
    "getpid", "getppid", "gettid", "getpgid", "getpgrp", "setpgid", "getsid", "setsid",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    # signals (the pid namespace and Landlock's scope keep them inside)
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigsuspend", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "kill", "tkill",
    "tgkill", "pause", "alarm", "signalfd", "signalfd4", "pidfd_open", "pidfd_send_signal",
    # time
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time",
    "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime",
    "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
    "timerfd_gettime",
    # waiting for fds
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    # sockets it holds (inherited from childkit, or made by socketpair): no socket(),
    # connect(), bind(), listen() or accept() at all
    "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "sendto", "recvfrom", "shutdown",
    "getsockname", "getpeername", "getsockopt", "setsockopt",
    # randomness
    "getrandom",
)

#: What an allowed call answers besides EPERM: clone3 keeps its flags in memory a filter
#: cannot read, so it answers ENOSYS and glibc falls back to clone, whose flags it can.
ENOSYS_CALLS: tuple[str, ...] = ("clone3",)

#: The namespace flags clone must not carry (CLONE_NEWTIME only exists for clone3 and
#: unshare; in clone's first argument that bit is part of the exit signal).
NAMESPACE_FLAGS = (_syscalls.CLONE_NEWNS | _syscalls.CLONE_NEWCGROUP | _syscalls.CLONE_NEWUTS
                   | _syscalls.CLONE_NEWIPC | _syscalls.CLONE_NEWUSER | _syscalls.CLONE_NEWPID
                   | _syscalls.CLONE_NEWNET)

_AF_UNIX = 1
_SOCK_STREAM = 1
_SOCK_SEQPACKET = 5
_SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC
_S_IFMT = 0o170000
_S_IFIFO = 0o010000

#: ioctl requests allowed: terminal queries (isatty, the window size), close-on-exec and
#: non-blocking switches, bytes readable, and the read-only namespace queries. Chromium's
#: baseline allows the same kind; everything else (TIOCSTI, device ioctls...) is EPERM.
IOCTLS: tuple[int, ...] = (
    0x5401,  # TCGETS
    0x5413,  # TIOCGWINSZ
    0x540F,  # TIOCGPGRP
    0x541B,  # FIONREAD
    0x5421,  # FIONBIO
    0x5451,  # FIOCLEX
    0x5450,  # FIONCLEX
    0xB701, 0xB702, 0xB703, 0xB704,  # NS_GET_USERNS, _PARENT, _NSTYPE, _OWNER_UID
)

#: prctl options allowed: names, the parent-death signal, reading its own state, and the
#: one-way switches (no_new_privs, naming anonymous memory). No PR_SET_SECCOMP, no
#: PR_SET_MM, no PR_SET_PTRACER, no capability changes.
PRCTLS: tuple[int, ...] = (
    1, 2,  # PR_SET_PDEATHSIG, PR_GET_PDEATHSIG
    3,  # PR_GET_DUMPABLE
    7,  # PR_GET_KEEPCAPS
    15, 16,  # PR_SET_NAME, PR_GET_NAME
    21,  # PR_GET_SECCOMP
    23,  # PR_CAPBSET_READ
    29, 30,  # PR_SET_TIMERSLACK, PR_GET_TIMERSLACK
    38, 39,  # PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS
    0x53564D41,  # PR_SET_VMA (glibc names its anonymous mappings)
)


@dataclasses.dataclass(frozen=True)
class ArgRule:
    """Allow ``call`` when ``(argument[index] & mask) == value`` (one comparison)."""

    call: str
    index: int
    mask: int
    value: int


#: Calls allowed only with these arguments (any one rule of a call suffices); with
#: :data:`PROCESS_RULES` (the usual policy) or :data:`SINGLE_PROCESS_RULES`.
ARGUMENT_RULES: tuple[ArgRule, ...] = (
    *(ArgRule("ioctl", 1, 0xFFFFFFFF, request) for request in IOCTLS),
    *(ArgRule("prctl", 0, 0xFFFFFFFF, option) for option in PRCTLS),
    # mkfifo (os.mkfifo) is mknod of a FIFO; device nodes are refused.
    ArgRule("mknod", 1, _S_IFMT, _S_IFIFO),
    ArgRule("mknodat", 2, _S_IFMT, _S_IFIFO),
)

CLONE_THREAD = 0x00010000

#: How the usual policy lets a process start others: fork, vfork, and clone without any
#: namespace flag (threads too).
PROCESS_CALLS: tuple[str, ...] = ("fork", "vfork")
PROCESS_RULES: tuple[ArgRule, ...] = (ArgRule("clone", 0, NAMESPACE_FLAGS, 0),)

#: The single-process policy: threads only (clone with CLONE_THREAD and no namespace
#: flag); fork, vfork and any other clone answer :data:`SINGLE_PROCESS_ERRNO`.
SINGLE_PROCESS_RULES: tuple[ArgRule, ...] = (
    ArgRule("clone", 0, NAMESPACE_FLAGS | CLONE_THREAD, CLONE_THREAD),
)
#: What a refused process start answers in the single-process policy: EAGAIN, as at a
#: process limit (``BlockingIOError``), which code that starts processes handles.
SINGLE_PROCESS_ERRNO = 11  # EAGAIN
#: Refused with :data:`SINGLE_PROCESS_ERRNO` in the single-process policy (a call with
#: these arguments; fork and vfork whatever their arguments).
SINGLE_PROCESS_REFUSED: tuple[ArgRule, ...] = (ArgRule("clone", 0, CLONE_THREAD, 0),)

#: socketpair: AF_UNIX (argument 0), stream or seqpacket (argument 1, flags aside); both
#: comparisons must hold, so it is listed apart from the one-comparison rules.
SOCKETPAIR_DOMAIN = _AF_UNIX
SOCKETPAIR_TYPES: tuple[int, ...] = (_SOCK_STREAM, _SOCK_SEQPACKET)
SOCKET_TYPE_MASK = _SOCK_TYPE_MASK

#: Calls the policy refuses on purpose (not an exhaustive list: everything unlisted is
#: refused); a test checks that the policy allows none of them, so that nobody adds one.
NEVER: tuple[str, ...] = (
    "socket", "connect", "bind", "listen", "accept", "accept4", "mount", "umount2",
    "pivot_root", "chroot", "unshare", "setns", "ptrace",
    "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "bpf",
    "perf_event_open", "keyctl", "add_key", "request_key", "io_uring_setup",
    "userfaultfd", "init_module", "finit_module", "kexec_load", "open_by_handle_at",
    "setuid", "setresuid", "setgroups", "personality", "seccomp",
)
