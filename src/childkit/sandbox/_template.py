"""Sandbox roots built once and reused: a template mount namespace per file system plan.

Building an isolated child's root (a tmpfs, a read-only bind per path, the devices, a
``pivot_root``) is the same work for every child with the same plan. A root parent (the
launcher) therefore builds it once, in a short-lived helper process, and keeps the
helper's mount namespace open by an fd. A child then ``setns``-es into that namespace and
``unshare``-s a private copy of it, where it mounts its own private /tmp: the same view,
with the same flags, as building it would give, in a fraction of the time.

A template is used only while it is fresh: before each fork the launcher plans the view
anew (see :func:`childkit.launcher._child.learn_sandbox`) and compares every bind source's
``(st_dev, st_ino)`` with the ones the template bound; a changed plan or a replaced file
builds a new template. Only a privileged parent (root with CAP_SYS_ADMIN) uses templates:
joining a mount namespace needs CAP_SYS_ADMIN over its owner, and an unprivileged child
builds its root in a user namespace of its own anyway.
"""

from __future__ import annotations

import os

from childkit.sandbox import _filesystem, _syscalls

#: At most this many templates are kept (the oldest is dropped for a new one).
MAX_TEMPLATES = 8

# plan -> (fd of the template's mount namespace, identities of plan.binds)
_templates: dict[_filesystem.RootPlan, tuple[int, tuple[_filesystem.Identity, ...]]] = {}


def template_for(plan: _filesystem.RootPlan) -> int | None:
    """In the (single-threaded, root) launcher: the fd of a template mount namespace
    holding the root ``plan`` describes, building it if there is no fresh one; ``None``
    if none can be built (the child then builds its root itself). Never raises. The fd
    stays owned here: a child keeps its inherited copy only until it has joined it."""
    if _filesystem.binds_under_tmp(plan):
        # A child mounts its private /tmp over the template's: binds beneath would be
        # hidden, so such a root is built in the child (where /tmp comes first).
        return None
    try:
        now = _filesystem.identities(plan.binds)
    except OSError:
        return None  # a path is gone: the child meets and reports it
    known = _templates.get(plan)
    if known is not None:
        if known[1] == now:
            return known[0]
        drop(plan)
    fd = _build(plan, now)
    if fd is None:
        return None
    while len(_templates) >= MAX_TEMPLATES:
        drop(next(iter(_templates)))
    _templates[plan] = (fd, now)
    return fd


def drop(plan: _filesystem.RootPlan) -> None:
    """Forget the template of ``plan`` (closing its fd), if there is one."""
    known = _templates.pop(plan, None)
    if known is not None:
        os.close(known[0])


def _build(plan: _filesystem.RootPlan, expected: tuple[_filesystem.Identity, ...]) -> int | None:
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _syscalls.fork_without_hooks()  # it runs only the lines below
    except OSError:
        for fd in (go_r, go_w, done_r, done_w):
            os.close(fd)
        return None
    if pid == 0:  # pragma: no cover - runs in the builder
        code = 1
        try:
            low = 0
            for fd in sorted((go_r, done_w)):  # nothing of the launcher's stays open
                if fd > low:
                    os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 2**31 - 1)
            _syscalls.unshare(_syscalls.CLONE_NEWNS)
            _syscalls.mount(None, "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE)
            _filesystem.build_root(plan, None, expected)
            os.write(done_w, b"+")
            os.read(go_r, 1)  # until the launcher holds the namespace (or is gone)
            code = 0
        except BaseException:
            pass
        os._exit(code)
    os.close(go_r)
    os.close(done_w)
    ns: int | None = None
    try:
        ready = os.read(done_r, 1) == b"+"
        if ready:
            ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        ns = None
    finally:
        os.close(go_w)
        os.close(done_r)
        os.waitpid(pid, 0)
    return ns
