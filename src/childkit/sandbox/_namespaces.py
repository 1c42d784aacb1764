"""User, mount, pid, network, IPC, UTS and cgroup namespaces, and the uid maps.

Two steps. ``enter_build_namespace`` gives the caller a private mount namespace to build
the sandbox root in (as root: just the mount namespace; unprivileged: a user namespace in
which it is root, mapped to its own uid). ``enter_user_namespace`` then creates the
user namespace the child lives in, mapping one uid (``inner`` inside, ``outer`` outside)
and nothing else; ``unshare_one`` adds the other namespaces under it, one at a time so a
failure names its layer. Root cannot map a uid other than its own from inside the new
namespace, so a short-lived helper process, still outside, writes that map.
"""

from __future__ import annotations

import errno
import os

from childkit.sandbox import _capabilities, _syscalls

#: Namespaces unshared after the user namespace (pid only takes effect for children).
LATER_NAMESPACES: tuple[tuple[str, int], ...] = (
    ("mount_namespace", _syscalls.CLONE_NEWNS),
    ("pid_namespace", _syscalls.CLONE_NEWPID),
    ("network_namespace", _syscalls.CLONE_NEWNET),
    ("ipc_namespace", _syscalls.CLONE_NEWIPC),
    ("uts_namespace", _syscalls.CLONE_NEWUTS),
    ("cgroup_namespace", _syscalls.CLONE_NEWCGROUP),
)


def is_privileged() -> bool:
    """Whether this process is root with CAP_SYS_ADMIN and CAP_SETUID in the initial user
    namespace (so it can mount without a user namespace and map another uid)."""
    if os.geteuid() != 0:
        return False
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
                return bool(eff & (1 << 21)) and bool(eff & (1 << 7)) and bool(eff & (1 << 6))
    return False


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def unshare_user_with_own_maps(inner_uid: int, inner_gid: int, extra_flags: int = 0) -> None:
    """unshare a user namespace (plus ``extra_flags``) mapping ``inner`` to the caller's
    own euid/egid, the only map an unprivileged process may write; setgroups is denied
    first, as the kernel then requires."""
    # Read before unshare: inside the new namespace they read as the overflow id.
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    _syscalls.unshare(_syscalls.CLONE_NEWUSER | extra_flags)
    _write("/proc/self/uid_map", f"{inner_uid} {outer_uid} 1\n")
    _write("/proc/self/setgroups", "deny\n")
    _write("/proc/self/gid_map", f"{inner_gid} {outer_gid} 1\n")


def enter_build_namespace(privileged: bool) -> None:
    """A private mount namespace (mount events do not propagate back) for building the
    root; unprivileged callers get a user namespace as well, in which they are uid 0.
    Raises OSError if the kernel refuses."""
    if privileged:
        _syscalls.unshare(_syscalls.CLONE_NEWNS)
    else:
        # After a uid change (a launcher that dropped root) the process is non-dumpable,
        # which makes its /proc/self/uid_map root's and unwritable to it.
        _syscalls.prctl(_syscalls.PR_SET_DUMPABLE, 1)
        unshare_user_with_own_maps(0, 0, _syscalls.CLONE_NEWNS)
    _syscalls.mount(None, "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)


def enter_user_namespace(privileged: bool, inner: int, outer: int) -> None:
    """Create the sandbox's user namespace with the single map ``inner -> outer`` (uid and
    gid alike) and make ``inner`` this process's uid, gids cleared, keeping a capability
    set over the new namespace only (for mounting /proc).

    ``privileged``: the caller is root in the initial namespace and ``outer`` may be any
    uid (a helper writes the map); otherwise ``outer`` must be the caller's own uid.
    Raises OSError if the kernel refuses.
    """
    if not privileged:
        _syscalls.prctl(_syscalls.PR_SET_DUMPABLE, 1)
        unshare_user_with_own_maps(inner, inner)
        return
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    me = os.getpid()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - runs in the helper process
        code = 1
        try:
            os.close(go_w)
            os.close(done_r)
            if os.read(go_r, 1) == b"1":
                _write(f"/proc/{me}/uid_map", f"{inner} {outer} 1\n")
                _write(f"/proc/{me}/gid_map", f"{inner} {outer} 1\n")
                code = 0
        except BaseException as exc:
            try:
                os.write(done_w, str(exc).encode()[:500])
            except OSError:
                pass
        os._exit(code)
    os.close(go_r)
    os.close(done_w)
    failure: OSError | None = None
    try:
        _syscalls.unshare(_syscalls.CLONE_NEWUSER)
    except OSError as exc:
        failure = exc
    os.write(go_w, b"0" if failure else b"1")
    os.close(go_w)
    message = os.read(done_r, 1000).decode(errors="replace")
    os.close(done_r)
    _, status = os.waitpid(helper, 0)
    if failure is not None:
        raise failure
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(errno.EPERM, f"writing the uid map failed: {message}")
    # Root of the old namespace holds every capability over the new one; become `inner`
    # without losing them (KEEPCAPS keeps the permitted set, capset re-raises the
    # effective one), and drop the supplementary groups root had.
    _syscalls.prctl(_syscalls.PR_SET_KEEPCAPS, 1)
    os.setgroups([])
    os.setresgid(inner, inner, inner)
    os.setresuid(inner, inner, inner)
    _syscalls.prctl(_syscalls.PR_SET_KEEPCAPS, 0)
    _capabilities.raise_effective()


def unshare_one(flag: int) -> None:
    """unshare(2) one namespace (after the user namespace, so it is owned by it)."""
    _syscalls.unshare(flag)
