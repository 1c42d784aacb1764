"""What a process that forks isolated children prepares for them: ``childkit.sandbox.forking``.

The launcher's isolated template (:mod:`childkit.launcher._isolated`) does, in its warm,
single-threaded process and before each fork, what every child would otherwise repeat:
it plans the child's root, finds (or builds) a template of it, takes a fresh network
namespace and a cgroup made ahead (as root), and, while idle, makes more of them. This
module is the sandbox's face for that work, so that the launcher uses no private module
of the sandbox; each call says what it promises. The child then calls
:func:`enter_planned` with what was prepared.
"""

from __future__ import annotations

from childkit.sandbox import _ahead, _cgroups, _filesystem, _namespaces, _netns, _template
from childkit.sandbox._cgroups import Group as Group
from childkit.sandbox._config import ResourceLimits
from childkit.sandbox._enter import enter_planned as enter_planned
from childkit.sandbox._filesystem import RootPlan as RootPlan
from childkit.sandbox._netns import HomeLost as HomeLost


def plan_root(readonly_paths: tuple[str, ...]) -> RootPlan:
    """The file system view of a sandbox showing ``readonly_paths`` (every path
    resolved now). Raises ValueError for a path the sandbox refuses."""
    return _filesystem.plan(readonly_paths)


def privileged() -> bool:
    """Whether this process may build roots once and make cgroups and network
    namespaces ahead (root with CAP_SYS_ADMIN)."""
    return _namespaces.is_privileged()


def root_template(root_plan: RootPlan) -> int | None:
    """As a privileged parent: the fd (kept here) of a mount namespace holding
    ``root_plan``'s root, built if there is no fresh one; ``None`` if none can be built.
    Never raises."""
    return _template.template_for(root_plan)


def take_netns() -> int | None:
    """As a privileged parent: a fresh network namespace made ahead (its fd, the
    caller's to close once the child that takes it is forked), or ``None``."""
    return _netns.take()


def take_group(limits: ResourceLimits) -> Group | None:
    """Just before forking a child: the cgroup made ahead that this process sits in,
    ``limits`` set, for the child to be born in (``None``: its supervisor makes one, and
    this process has left every group made ahead, as :func:`outside_groups`).
    :func:`group_forked` must follow the fork."""
    return _ahead.take(limits)


def take_group_unset() -> Group | None:
    """Just before forking a spare: the cgroup made ahead, without limits (the spare
    sets its order's with :func:`set_group_limits`; ``None`` as for :func:`take_group`);
    :func:`group_forked` follows."""
    return _ahead.take_unset()


def outside_groups() -> None:
    """Just before forking a child that takes no group made ahead (its preparation
    failed): leave the group of the last child and the one made ahead (removed), so that
    it is born in this process's own groups. A group is one child's: what else is in it
    is killed when that child is reaped. Never raises."""
    _ahead.outside()


def group_forked(child: int | None, spare: bool = False) -> None:
    """Right after the fork a group was taken for (``child`` its pid, ``None`` if the
    fork failed): name the group after the child (``spare``: after the spare until
    :func:`spare_ordered`). Never raises."""
    _ahead.forked(child, spare)


def set_group_limits(group: Group, limits: ResourceLimits) -> None:
    """In a spare, once its order came: set ``limits`` in the group it was born in.
    OSError if the kernel refuses."""
    _cgroups.set_limits(group, limits, _ahead.EXTRA_TASKS)


def spare_ordered(child: int) -> None:
    """Spare ``child`` got its order: its group is named after it from now on (removed
    by :func:`childkit.sandbox.release` when it is reaped). Never raises."""
    _ahead.ordered(child)


def spare_unused(child: int) -> None:
    """After reaping spare ``child``, which got no order: remove its group. Never
    raises."""
    _ahead.settle()
    _cgroups.remove_named(_ahead.spare_name(child))


def group_wanted() -> bool:
    """Whether a cgroup is to be made ahead (none ready; the kernel did not refuse)."""
    return _ahead.wanted()


def idle_work() -> bool:
    """While idle, as a privileged parent: make one thing ahead (a cgroup first, then a
    network namespace); returns whether more is wanted. Raises :class:`HomeLost` if this
    process could not return to its own network namespace (it must end)."""
    if _ahead.wanted():
        _ahead.refill()  # first: the next start waits for no cgroup move
    elif _netns.wanted():
        _netns.refill_one()
    return _netns.wanted() or _ahead.wanted()


def discard_ahead() -> None:
    """When this process ends: leave and remove the cgroup it made ahead. Never
    raises."""
    _ahead.discard()
