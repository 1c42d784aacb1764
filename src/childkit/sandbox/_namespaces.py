"""User, mount, pid, network, IPC, UTS and cgroup namespaces, and the uid maps.

Two steps. ``enter_build_namespace`` gives the caller a private mount namespace to build
the sandbox root in (as root: just the mount namespace; unprivileged: a user namespace in
which it is root, mapped to its own uid). Then the namespaces the child lives in, each
with one uid (``inner`` inside, ``outer`` outside) mapped and nothing else:

* the usual way, :data:`SANDBOX_NAMESPACES` all at once: the caller forks the sandbox's
  init straight into them (``_syscalls.clone_process``) and, still outside, writes the
  new process's maps (:func:`write_child_maps`); the init then takes its uid
  (:func:`become_inner`);
* after that fails, one at a time, so that the failure names its layer:
  ``enter_user_namespace`` (root cannot map a uid other than its own from inside the new
  namespace, so a short-lived helper process, still outside, writes that map) and then
  ``unshare_one`` for each of :data:`LATER_NAMESPACES`.
"""

from __future__ import annotations

import errno
import functools
import operator
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

#: Every namespace of the sandbox: the user namespace and, owned by it, the later ones.
SANDBOX_NAMESPACES: int = functools.reduce(
    operator.or_, (flag for _name, flag in LATER_NAMESPACES), _syscalls.CLONE_NEWUSER)


def is_privileged() -> bool:
    """Whether this process is root with CAP_SYS_ADMIN and CAP_SETUID in the initial user
    namespace (so it can mount without a user namespace and map another uid)."""
    if os.geteuid() != 0:
        return False
    try:
        effective = _capabilities.capabilities()[0]  # capget: no /proc file to parse
    except OSError:
        return False
    wanted = (1 << 21) | (1 << 7) | (1 << 6)  # CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID
    return effective & wanted == wanted


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


#: What the helper writes once both maps are written (a failure writes its message,
#: which never starts with this byte).
_MAPPED = b"+"


class MapWriter:
    """A helper process, still outside every namespace, that writes the uid/gid map of the
    caller's coming user namespace (root cannot map a uid other than its own from
    inside). Started early (:func:`start_map_writer`) so that its start-up overlaps the
    building of the root; it holds nothing but its two pipes."""

    def __init__(self, pid: int, go_w: int, done_r: int) -> None:
        self._pid = pid
        self._go_w = go_w
        self._done_r = done_r

    def write_maps(self, unshared: bool) -> str:
        """Tell the helper whether the caller's user namespace exists (then it writes the
        maps). Returns "" on success, else what went wrong (the helper is then reaped).

        Success returns as soon as the helper says the maps are written, not when it has
        exited: tearing down a forked interpreter's address space takes most of a
        millisecond, which the caller need not wait for. :meth:`cancel` reaps it later.
        """
        if self._go_w < 0:
            return "the uid map writer is gone"
        try:
            os.write(self._go_w, b"1" if unshared else b"0")
        except BrokenPipeError:
            pass  # it died: its wait status says so
        finally:
            os.close(self._go_w)
            self._go_w = -1
        try:
            answer = os.read(self._done_r, 1000)  # one write of at most 500 bytes
        finally:
            os.close(self._done_r)
        if unshared and answer == _MAPPED:
            return ""
        status = self._reap()
        if not unshared:
            return ""
        message = answer.decode(errors="replace")
        return message or f"wait status {status}"

    def _reap(self) -> int:
        pid, self._pid = self._pid, 0
        if pid == 0:
            return 0
        return os.waitpid(pid, 0)[1]

    def cancel(self) -> None:
        """End and reap the helper (idempotent): untold, it is told there is nothing to
        map; told, it is only reaped."""
        if self._go_w >= 0:
            self.write_maps(False)
        self._reap()


def start_map_writer(inner: int, outer: int) -> MapWriter:
    """Fork the helper that will map ``inner`` (inside) to ``outer`` (outside), uid and
    gid alike, for this process once it has unshared its user namespace. Call it while
    single-threaded and still in the initial user namespace, as root. OSError if the
    fork fails."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    me = os.getpid()
    try:
        helper = _syscalls.fork_without_hooks()  # it runs only the few lines below
    except OSError:
        for fd in (go_r, go_w, done_r, done_w):
            os.close(fd)
        raise
    if helper == 0:  # pragma: no cover - runs in the helper process
        code = 1
        try:
            # Nothing of the child's (its IPC channel above all) stays open here.
            low = 0
            for fd in sorted((go_r, done_w)):
                if fd > low:  # closerange(0, 0) would close every fd
                    os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 2**31 - 1)
            if os.read(go_r, 1) == b"1":  # EOF (the caller died) or "0": nothing to do
                _write(f"/proc/{me}/uid_map", f"{inner} {outer} 1\n")
                _write(f"/proc/{me}/gid_map", f"{inner} {outer} 1\n")
                code = 0
                os.write(done_w, _MAPPED)  # the caller goes on; this process just exits
        except BaseException as exc:
            try:
                os.write(done_w, str(exc).encode()[:500])
            except OSError:
                pass
        os._exit(code)
    os.close(go_r)
    os.close(done_w)
    return MapWriter(helper, go_w, done_r)


def enter_user_namespace(privileged: bool, inner: int, outer: int,
                         writer: MapWriter | None = None) -> None:
    """Create the sandbox's user namespace with the single map ``inner -> outer`` (uid and
    gid alike) and make ``inner`` this process's uid, gids cleared, keeping a capability
    set over the new namespace only (for mounting /proc).

    ``privileged``: the caller is root in the initial namespace and ``outer`` may be any
    uid; ``writer`` (from :func:`start_map_writer` with the same ids) then writes the map
    and is reaped here whatever happens. Otherwise ``outer`` must be the caller's own uid.
    Raises OSError if the kernel refuses.
    """
    if not privileged:
        _syscalls.prctl(_syscalls.PR_SET_DUMPABLE, 1)
        unshare_user_with_own_maps(inner, inner)
        return
    if writer is None:
        raise OSError(errno.EINVAL, "a privileged caller needs a uid map writer")
    failure: OSError | None = None
    try:
        _syscalls.unshare(_syscalls.CLONE_NEWUSER)
    except OSError as exc:
        failure = exc
    problem = writer.write_maps(failure is None)
    if failure is not None:
        raise failure
    if problem:
        raise OSError(errno.EPERM, f"writing the uid map failed: {problem}")
    become_inner(inner)


def write_child_maps(pid: int, privileged: bool, inner: int, outer: int) -> None:
    """From outside: give process ``pid``, just forked into a user namespace of its own
    (:data:`SANDBOX_NAMESPACES`), its single map, uid and gid alike.

    ``privileged`` (root in the initial namespace): ``inner -> outer``, any ``outer``;
    supplementary groups are left to :func:`become_inner`. Otherwise the caller is root
    of the user namespace it built its root in: ``inner`` maps to the caller's own
    euid/egid there, as a process mapping itself would do, and setgroups is denied (it
    already is, inherited from that namespace). Raises OSError if the kernel refuses.
    """
    uid, gid = (outer, outer) if privileged else (os.geteuid(), os.getegid())
    base = f"/proc/{pid}/"
    _write(base + "uid_map", f"{inner} {uid} 1\n")
    if not privileged:
        _write(base + "setgroups", "deny\n")
    _write(base + "gid_map", f"{inner} {gid} 1\n")


def become_inner(inner: int) -> None:
    """In a process created as root in a new user namespace whose map is ``inner ->
    outer`` (root itself unmapped): take ``inner`` as every uid and gid, clear the
    supplementary groups, and keep a full capability set over the new namespace only
    (for mounting /proc). Raises OSError if the kernel refuses."""
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
