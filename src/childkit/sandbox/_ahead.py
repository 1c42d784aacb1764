"""A cgroup made and joined ahead, so that no isolated start waits for a migration.

Moving a process into a cgroup (v1: writing ``cgroup.procs``) waits for an RCU grace
period, which on a loaded machine takes milliseconds; made by the supervisor on every
start, it was most of what issue 12's aggregate limits cost (docs/sandbox.md). A process
is born in its parent's cgroups, so the isolated template (root) instead, while idle,
makes a fresh group with every controller it may use and moves itself into it; the
supervisor it forks next is born there, and so are the init and the sandboxed process.
Just before that fork the template sets the child's limits in it (plain writes), right
after it names the group after the child, and when idle (after answering) it moves back
to its own groups; it removes the group when it reaps the child
(:func:`childkit.sandbox.release`). The supervisor, inside,
never removes it. Between the fork and the move the template counts in the group too,
as the supervisor does all along: ``pids.max`` has room for both.

A group is one child's: when that child is reaped, its group is removed and whatever is
still in it is killed (:func:`childkit.sandbox.release`). So a child that takes no group
(none is ready: the next fork of a burst, before any idle work) is born in the
template's own groups, never in the one the template still sits in: :func:`take` and
:func:`take_unset` leave it first (the group of the last child, or a group made ahead
whose limits cannot be set, then removed). Born in the last child's group, it was
killed with SIGKILL when that child was reaped (in a burst of two isolated starts, the
first forked, the second handed to the spare, whose group the template still sat in:
the second ended first): tests/sandbox/ahead_births.py.
"""

from __future__ import annotations

import os

from childkit.sandbox import _cgroups
from childkit.sandbox._cgroups import Group
from childkit.sandbox._config import ResourceLimits

#: Limits with every field set, to plan a group with every controller there is.
_EVERY = ResourceLimits(memory_bytes=64 << 20, cpu_seconds=1, max_processes=1)
#: Tasks of the sandbox's own in an ahead group besides the init: the supervisor, and
#: the template until it has moved out.
EXTRA_TASKS = 3

_ready: Group | None = None
_taken = False
#: The group the last child was born in, which this process has not left yet: it leaves
#: when idle (:func:`settle`), not between the fork and its answer to the application
#: (leaving waits for an RCU grace period, milliseconds under load).
_leaving: _cgroups.Group | None = None
_count = 0
_refused = False


def wanted() -> bool:
    """Whether :func:`refill` has a group to make (none ready, and the kernel did not
    refuse the last one)."""
    return _ready is None and not _refused


def refill() -> None:
    """While idle: make a fresh group and move this process into it. Never raises; a
    failure stops the stock (each supervisor then makes its own group)."""
    global _ready, _count, _refused
    settle()
    if _ready is not None or _refused:
        return
    try:
        parents = _cgroups.open_parents(_EVERY)
        if parents is None:
            _refused = True
            return
        _count += 1
        group = _cgroups.make(parents, f"{_cgroups.PREFIX}{os.getpid()}-ahead{_count}")
    except OSError:
        _refused = True
        return
    group.ahead = True
    try:
        _cgroups.add(group, os.getpid())
    except OSError:
        _refused = True
        _cgroups.remove(group)
        return
    _ready = group


def take(limits: ResourceLimits) -> _cgroups.Group | None:
    """Just before forking an isolated child: the group this process is in, with
    ``limits`` set, for the child to inherit. ``None`` if there is none (its supervisor
    then makes one): this process has then left every group made ahead (:func:`outside`),
    so the child is born in its own groups. :func:`forked` must follow the fork."""
    global _taken
    if _ready is not None:
        try:
            _cgroups.set_limits(_ready, limits, EXTRA_TASKS)
        except OSError:
            pass  # a group without this child's limits is no group for it
        else:
            _taken = True
            return _ready
    outside()
    return None


def take_unset() -> Group | None:
    """Just before forking a spare (a supervisor forked before its order,
    :mod:`childkit.launcher._spare`): the group this process is in, for the spare to be
    born in and to set its limits in itself once its order comes. ``None`` if there is
    none: this process has then left every group made ahead (:func:`outside`).
    :func:`forked` must follow the fork."""
    global _taken
    if _ready is None:
        outside()
        return None
    _taken = True
    return _ready


def outside() -> None:
    """Just before forking a child that takes no group: leave every group made ahead
    (the last child's, and one made ahead, which is then removed), so that the child is
    born in this process's own groups, never in a group of another child's (killed with
    it when that child is reaped). Never raises."""
    discard()


def forked(child: int | None, spare: bool = False) -> None:
    """Right after the fork :func:`take` prepared (``child``: its pid, ``None`` if it
    failed): name the group after the child (or leave and remove it); this process
    leaves it when idle (:func:`settle`). ``spare``: after :func:`take_unset`, named
    ``spare<pid>`` until :func:`ordered`. Never raises."""
    global _ready, _taken, _leaving
    if not _taken or _ready is None:
        return
    group, _ready, _taken = _ready, None, False
    if child is None:
        _cgroups.leave(group)
        _cgroups.remove(group)
        return
    owner = spare_name(child) if spare else str(child)
    _cgroups.rename(group, f"{_cgroups.PREFIX}{os.getpid()}-{owner}")
    _leaving = group


def spare_name(child: int) -> str:
    """What the group of spare ``child`` is named after until its order comes."""
    return f"spare{child}"


def ordered(child: int) -> None:
    """When spare ``child`` gets its order: name its group after it, as any child's (the
    group is then that child's, removed when it is reaped). Never raises."""
    _cgroups.rename_named(spare_name(child), str(child))


def settle() -> None:
    """Leave the group the last child was born in, if this process is still in it (before
    that group is removed, and when idle). Never raises."""
    global _leaving
    group, _leaving = _leaving, None
    if group is not None:
        _cgroups.leave(group)
        group.close()


def discard() -> None:
    """When this process ends (or stops making isolated children): leave the group made
    ahead and remove it. Never raises."""
    global _ready, _taken
    settle()
    group, _ready, _taken = _ready, None, False
    if group is not None:
        _cgroups.leave(group)
        _cgroups.remove(group)
