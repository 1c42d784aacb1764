"""Aggregate limits: one cgroup per isolated child, holding all its processes together.

Rlimits are per process: with ``cpu_seconds=1`` four forked processes use four seconds,
with ``memory_bytes=512 MiB`` each holds 512 MiB (issue 12, classes 6 and 7). Where the
kernel offers cgroups to this process (root, in practice), the supervisor makes a group
for the sandbox before it clones the init, so the init and everything it starts are in
it, and the kernel counts them together:

- ``memory_bytes``: resident memory (and swap) of the whole sandbox, tmpfs pages of its
  private /tmp included (v2 ``memory.max`` + ``memory.swap.max``; v1
  ``memory.limit_in_bytes`` + ``memory.memsw.limit_in_bytes``). Past it the kernel's
  OOM killer ends a process of the group (SIGKILL); the supervisor reports the
  sandboxed process's end then as the memory limit's exit code.
- ``max_processes``: processes and threads together (``pids.max``).
- ``cpu_seconds``: no controller caps a total, so the supervisor reads the group's CPU
  time (v2 ``cpu.stat``, v1 ``cpuacct.usage``), waking only when the budget could be
  spent at the earliest, and past it sends SIGXCPU to the sandboxed process, SIGKILL to
  the whole sandbox a second later: what RLIMIT_CPU does to one process.

The per-process rlimits stay in force beneath (they are the fallback, and catch a single
process early with an error it can handle). A controller the kernel does not offer
leaves its limit per process, and :func:`describe` says so. The group is removed by the
supervisor when the init has ended (every process of the pid namespace is gone by then),
and again, after killing what is left, by :func:`remove_named` in the launcher when it
reaps the supervisor (a supervisor killed with SIGKILL cannot clean up).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import time

from childkit.sandbox._config import ResourceLimits

#: Group names: ``childkit-sandbox-<parent>-<supervisor>``, the pids of the process that
#: forked the supervisor (a launcher, the isolated template) and of the supervisor: what
#: the parent knows when it reaps it, and what tells one application's groups from
#: another's in a hierarchy they share.
_PREFIX = "childkit-sandbox-"
PREFIX = _PREFIX
_REMOVE_TRIES = 200  # each after a short wait: the kernel ends the last tasks


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """Where this process's cgroup lies in one mounted hierarchy (v1: per controller)."""

    version: int
    controllers: frozenset[str]
    path: str  # this process's own cgroup directory in it


@dataclasses.dataclass
class Group:
    """One sandbox's cgroup: a directory per hierarchy, held by fds (the supervisor lives
    in the sandbox's mount namespace, where /sys is absent), and which limits it holds.

    ``dirs``: per hierarchy, an fd of the parent directory, the group's name in it and
    an fd of the group's own directory. ``cpu_file``/``events_file``: where its CPU
    time is read and OOM kills are counted (a name in the first directory holding that
    controller), when that limit is held together."""

    dirs: list[tuple[int, str, int]]
    version: int
    cpu_file: tuple[int, str] | None
    events_file: tuple[int, str] | None
    aggregate: frozenset[str]
    #: Which hierarchy holds each limit (field name), and the group's own directory fd
    #: in it.
    planned: dict[str, Hierarchy] = dataclasses.field(default_factory=dict)
    held_in: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Made and joined ahead by the process that forked the supervisor, which removes it
    #: (:mod:`childkit.sandbox._ahead`): the supervisor, inside it, must not.
    ahead: bool = False

    def fds(self) -> set[int]:
        """Every fd the group holds (kept open by the supervisor)."""
        return {fd for parent, _name, own in self.dirs for fd in (parent, own)}

    def close(self) -> None:
        """Close the group's fds (the init does, at once: no fd of a host directory may
        reach the sandboxed process); the group itself stays."""
        for fd in self.fds():
            os.close(fd)
        self.dirs = []


_hierarchies: tuple[Hierarchy, ...] | None = None


def hierarchies() -> tuple[Hierarchy, ...]:
    """The cgroup hierarchies this process is in (found once per process: the launcher
    finds them before forking). Empty when none is mounted where this process sees it."""
    global _hierarchies
    if _hierarchies is None:
        _hierarchies = tuple(_find_hierarchies())
    return _hierarchies


def _find_hierarchies() -> list[Hierarchy]:
    try:
        with open("/proc/self/cgroup") as f:
            own = [line.rstrip("\n").split(":", 2) for line in f]
        with open("/proc/self/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError:
        return []
    found = []
    for mount in mounts:
        fields, _, rest = mount.partition(" - ")
        parts, extra = fields.split(), rest.split()
        if len(parts) < 5 or len(extra) < 3 or extra[0] not in ("cgroup", "cgroup2"):
            continue
        root, point = parts[3], parts[4]
        if extra[0] == "cgroup2":
            version, controllers = 2, _v2_controllers(point)
            mine = [path for hid, names, path in own if hid == "0" and names == ""]
        else:
            version = 1
            controllers = frozenset(extra[2].split(",")) & {"memory", "pids", "cpuacct"}
            mine = [path for _hid, names, path in own
                    if controllers and controllers <= set(names.split(","))]
        if not controllers or not mine or not (mine[0] + "/").startswith(root.rstrip("/") + "/"):
            continue
        relative = mine[0][len(root.rstrip("/")):]
        found.append(Hierarchy(version, controllers, point + relative))
    return found


def _v2_controllers(point: str) -> frozenset[str]:
    # The controllers a child group of ours can use: those enabled in our own group's
    # subtree (we never enable one: that would move other processes' accounting).
    try:
        with open(os.path.join(point, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
    except OSError:
        return frozenset()
    return frozenset(enabled & {"memory", "pids"}) | {"cpuacct"}  # cpu.stat is always there


def plan(limits: ResourceLimits) -> dict[str, Hierarchy]:
    """Which hierarchy would hold each limit set in ``limits`` (by field name); a limit
    missing from the result stays per process. Only hierarchies this process can write
    count (root, or a delegated subtree)."""
    wanted = {"memory_bytes": "memory", "max_processes": "pids", "cpu_seconds": "cpuacct"}
    result: dict[str, Hierarchy] = {}
    for field, controller in wanted.items():
        if getattr(limits, field) is None:
            continue
        for hierarchy in hierarchies():
            if controller in hierarchy.controllers and os.access(hierarchy.path, os.W_OK):
                result[field] = hierarchy
                break
    return result


@dataclasses.dataclass
class Parents:
    """The directories a sandbox's group is to be made in, opened ahead (by fd: the
    supervisor makes the group after it has moved into the sandbox's root, where /sys is
    absent), and which limit each holds."""

    planned: dict[str, Hierarchy]
    fds: dict[Hierarchy, int]

    def close(self) -> None:
        """Close the fds (the init does, at once: it holds nothing of the host's)."""
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def open_parents(limits: ResourceLimits) -> Parents | None:
    """Open where the group for ``limits`` is to be made; ``None`` if no limit can be held
    together here. OSError if a directory cannot be opened."""
    planned = plan(limits)
    if not planned:
        return None
    parents = Parents(planned, {})
    try:
        for hierarchy in dict.fromkeys(planned.values()):
            parents.fds[hierarchy] = os.open(hierarchy.path,
                                             os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        parents.close()
        raise
    return parents


def create(limits: ResourceLimits, owner: int,
           parents: Parents | None = None) -> Group | None:
    """Make the group of the sandbox supervised by process ``owner`` (this one, a child
    of the process that forked it) and set ``limits`` in it, in ``parents`` (opened by
    :func:`open_parents`, whose fds the group then owns) or where :func:`plan` says;
    ``None`` if no limit can be held together here. Raises OSError if the kernel refuses
    (the caller then keeps the per-process limits only). Nothing is left behind on
    failure."""
    if parents is None:
        parents = open_parents(limits)
        if parents is None:
            return None
    group = make(parents, f"{_PREFIX}{os.getppid()}-{owner}")
    try:
        set_limits(group, limits, 1)  # the init on top
    except OSError:
        remove(group)
        raise
    return group


def make(parents: Parents, name: str) -> Group:
    """Make the directories of a group called ``name`` in ``parents`` (whose fds it then
    owns), without limits. OSError if the kernel refuses (nothing is left behind)."""
    planned = parents.planned
    group = Group([], max(h.version for h in planned.values()), None, None, frozenset(),
                  dict(planned))
    try:
        for hierarchy in list(parents.fds):
            parent = parents.fds.pop(hierarchy)
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
                own = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
            except OSError:
                os.close(parent)
                raise
            group.dirs.append((parent, name, own))
            for field, h in planned.items():
                if h == hierarchy:
                    group.held_in[field] = own
            if "memory_bytes" in group.held_in and group.events_file is None:
                group.events_file = (own, "memory.events" if hierarchy.version == 2
                                     else "memory.oom_control")
            if "cpu_seconds" in group.held_in and group.cpu_file is None:
                group.cpu_file = (own, "cpu.stat" if hierarchy.version == 2
                                  else "cpuacct.usage")
    except OSError:
        parents.close()
        remove(group)
        raise
    return group


def set_limits(group: Group, limits: ResourceLimits, extra_tasks: int) -> None:
    """Set ``limits`` in ``group`` (``None``: unlimited), ``extra_tasks`` added to
    ``max_processes`` for the sandbox's own helpers in it; record which limits it now
    holds. OSError if the kernel refuses a value."""
    held = []
    for field, own in group.held_in.items():
        version = group.planned[field].version
        value = getattr(limits, field)
        if field == "memory_bytes":
            _set_memory(own, version, value)
        elif field == "max_processes":
            _write(own, "pids.max", "max" if value is None else str(value + extra_tasks))
        if value is not None:
            held.append(field)
    group.aggregate = frozenset(held)


def _set_memory(directory: int, version: int, limit: int | None) -> None:
    if version == 2:
        _write(directory, "memory.max", "max" if limit is None else str(limit))
        _write_if_there(directory, "memory.swap.max", "max" if limit is None else "0")
        return
    # memsw (memory and swap) may never be below the memory limit: order the two writes.
    value = "-1" if limit is None else str(limit)
    if limit is None:
        _write_if_there(directory, "memory.memsw.limit_in_bytes", value)
        _write(directory, "memory.limit_in_bytes", value)
    else:
        _write(directory, "memory.limit_in_bytes", value)
        _write_if_there(directory, "memory.memsw.limit_in_bytes", value)  # no swap past it


def _write(directory: int, name: str, value: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=directory)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_if_there(directory: int, name: str, value: str) -> None:
    try:
        _write(directory, name, value)
    except FileNotFoundError:
        pass  # a kernel without swap accounting


def _read(where: tuple[int, str]) -> str:
    fd = os.open(where[1], os.O_RDONLY | os.O_CLOEXEC, dir_fd=where[0])
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def add(group: Group, pid: int) -> None:
    """Move process ``pid`` (not yet running anything: the init, before it is told to
    go) into every directory of ``group``. OSError if the kernel refuses."""
    for _parent, _name, own in group.dirs:
        _write(own, "cgroup.procs", str(pid))


def leave(group: Group) -> None:
    """Move this process out of ``group``, back into the directory it was made in (this
    process's own cgroup) in every hierarchy. Never raises."""
    for parent, _name, _own in group.dirs:
        try:
            _write(parent, "cgroup.procs", str(os.getpid()))
        except OSError:
            pass  # then it stays, and the group cannot be removed before it ends


def rename(group: Group, name: str) -> None:
    """Give ``group`` another name in every hierarchy. Never raises (a directory that
    cannot be renamed keeps its name, and :func:`sweep` finds it once it is empty)."""
    renamed = []
    for parent, old, own in group.dirs:
        try:
            os.rename(old, name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:
            renamed.append((parent, old, own))
            continue
        renamed.append((parent, name, own))
    group.dirs = renamed


def members(group: Group) -> list[int]:
    """The processes in the group (pids as this process sees them)."""
    found: set[int] = set()
    for _parent, _name, own in group.dirs:
        try:
            found.update(int(p) for p in _read((own, "cgroup.procs")).split())
        except (OSError, ValueError):
            continue
    return sorted(found)


def cpu_seconds(group: Group) -> float:
    """The CPU time (user + system) the group's processes used, together, in seconds."""
    assert group.cpu_file is not None
    text = _read(group.cpu_file)
    if group.cpu_file[1] == "cpu.stat":
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
        return 0.0
    return int(text) / 1e9


def oom_killed(group: Group) -> bool:
    """Whether the kernel's OOM killer ended a process of the group (its memory limit)."""
    if group.events_file is None:
        return False
    try:
        for line in _read(group.events_file).splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill" and int(value) > 0:
                return True
    except (OSError, ValueError):
        pass
    return False


def remove(group: Group) -> None:
    """Remove the group and close its fds: its processes are killed first (there are none
    once the init has ended). Never raises; a group the kernel will not remove is left
    (and listed by :func:`leftovers`)."""
    for parent, name, own in group.dirs:
        _remove_dir(parent, name, own)
    group.close()


def remove_named(owner: int | str) -> None:
    """Remove the group of the sandbox that process ``owner``, a child of this process,
    supervised, if it is still there (the launcher calls this when it reaps ``owner``;
    a str: the group's name after the maker's pid, e.g. a spare's). Never raises."""
    for hierarchy in hierarchies():
        try:
            parent = os.open(hierarchy.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            name = f"{_PREFIX}{os.getpid()}-{owner}"
            try:
                own = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=parent)
            except OSError:
                continue  # removed already (the usual case), or never made
            try:
                _remove_dir(parent, name, own)
            finally:
                os.close(own)
        finally:
            os.close(parent)


def rename_named(owner: str, new_owner: str) -> None:
    """Rename the group of this process named after ``owner`` (see :func:`remove_named`)
    to ``new_owner`` in every hierarchy. Never raises (a group that keeps its name is
    removed by that name's maker, or by :func:`sweep`)."""
    prefix = f"{_PREFIX}{os.getpid()}-"
    for hierarchy in hierarchies():
        try:
            os.rename(os.path.join(hierarchy.path, prefix + owner),
                      os.path.join(hierarchy.path, prefix + new_owner))
        except OSError:
            continue


def sweep(patience_s: float = 0.0) -> None:
    """Remove the groups sandboxes left behind: every group whose maker (the process
    that forked its supervisor, or made it ahead: a launcher's isolated template) has
    ended, killing what is left in it (its processes die with their maker anyway), and
    the empty groups of supervisors that ended without being reaped by their maker.
    Groups in use are left: one whose maker lives is its own. The isolated template
    calls it when it starts, the application's manager when its launcher has ended
    (with ``patience_s``: how long to wait for the last processes of a group to be
    reaped). Never raises."""
    for path in leftovers(ahead=True):
        maker, _, owner = path.rsplit("/", 1)[-1][len(_PREFIX):].partition("-")
        if not maker.isdigit():
            continue  # not ours
        if _gone(int(maker)):
            parent, name = path.rsplit("/", 1)
            try:
                parent_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                own = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                              dir_fd=parent_fd)
            except OSError:
                os.close(parent_fd)
                continue
            try:
                _remove_dir(parent_fd, name, own, patience_s)
            finally:
                os.close(own)
                os.close(parent_fd)
        elif owner.isdigit() and _gone(int(owner)):
            try:
                os.rmdir(path)
            except OSError:
                pass  # in use (or not ours)


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie has: it waits only to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def leftovers(parents: set[int] | None = None, ahead: bool = False) -> list[str]:
    """Every sandbox group under this process's cgroups, or only those of supervisors
    forked by one of ``parents`` (for tests and diagnostics); groups made ahead (which
    their maker sits in while idle, or a spare waits in for its order) only with
    ``ahead``."""
    found: list[str] = []
    for hierarchy in hierarchies():
        try:
            names = os.listdir(hierarchy.path)
        except OSError:
            continue
        for name in names:
            if not name.startswith(_PREFIX):
                continue
            parent, _, owner = name[len(_PREFIX):].partition("-")
            if owner.startswith(("ahead", "spare")) and not ahead:
                continue
            if parents is None or (parent.isdigit() and int(parent) in parents):
                found.append(os.path.join(hierarchy.path, name))
    return found


def _remove_dir(parent: int, name: str, own: int, patience_s: float = 0.0) -> None:
    # A group stays busy until its last process is reaped; an orphan (e.g. a sandbox's
    # init whose supervisor died) is reaped by pid 1, which may take seconds on a busy
    # machine: ``patience_s`` waits that long at most beyond the usual tries.
    deadline = time.monotonic() + patience_s
    attempt = 0
    while attempt < _REMOVE_TRIES or time.monotonic() < deadline:
        attempt += 1
        try:
            os.rmdir(name, dir_fd=parent)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return  # not ours to remove (permissions): nothing more to try
        _kill_members(own)
        time.sleep(0.0005 * min(attempt, 20))  # the kernel is ending them


def _kill_members(own: int) -> None:
    try:
        pids = [int(p) for p in _read((own, "cgroup.procs")).split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        if pid == os.getpid():
            continue  # this process, still in it, is leaving
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def describe(limits: ResourceLimits) -> str:
    """What the limits of ``limits`` are here: held together, or per process and what
    that multiplies to."""
    planned = plan(limits)
    together = [f for f in ("memory_bytes", "cpu_seconds", "max_processes") if f in planned]
    apart = [f for f in ("memory_bytes", "cpu_seconds")
             if f not in planned and getattr(limits, f) is not None]
    parts = []
    if together:
        versions = sorted({f"v{planned[f].version}" for f in together})
        parts.append(f"{', '.join(together)} for all its processes together (cgroup "
                     f"{'/'.join(versions)})")
    if apart:
        parts.append(f"{', '.join(apart)} per process only{_product(limits, apart)}")
    return "; ".join(parts) or "no memory, CPU or process limit set"


def _product(limits: ResourceLimits, fields: list[str]) -> str:
    if limits.max_processes is None:
        return " (no process limit: no ceiling for the whole child)"
    products = []
    if "memory_bytes" in fields and limits.memory_bytes is not None:
        total = limits.memory_bytes * limits.max_processes
        products.append(f"memory up to {limits.max_processes} x "
                        f"{limits.memory_bytes >> 20} MiB = {total >> 20} MiB")
    if "cpu_seconds" in fields and limits.cpu_seconds is not None:
        products.append(f"CPU up to {limits.max_processes} x {limits.cpu_seconds} s")
    return f" ({'; '.join(products)} for the whole child)" if products else ""
