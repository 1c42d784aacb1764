"""``enter``: apply every layer, in order, to a freshly forked child."""

from __future__ import annotations

import errno
import functools
import gc
import os
import signal
import threading
from collections.abc import Callable, Sequence

from childkit.common._errors import ChildkitError, ErrCode
from childkit.sandbox import (
    _capabilities,
    _cgroups,
    _environment,
    _fds,
    _filesystem,
    _landlock,
    _limits,
    _namespaces,
    _seccomp,
    _supervisor,
    _syscalls,
)
from childkit.sandbox._config import LayerStatus, SandboxConfig
from childkit.sandbox._errors import SandboxUnavailable

#: Outer uid of isolated children of a root parent without ``isolation_uid`` (nobody).
SHARED_UID = 65534
#: ``isolation_uid`` children of a root parent run as this plus the supervisor's pid:
#: a uid of their own, far from real users and from subuid ranges.
ISOLATION_UID_BASE = 2_000_000_000

_report: dict[str, LayerStatus] = {}

#: Whether this sandboxed process is kept to one process (see :func:`single_process`).
_single_process = False

#: Landlock's paths inside the sandbox: read (and execute) beneath, write beneath, devices.
LANDLOCK_PATHS: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (
    ("/",), ("/tmp",), _filesystem.DEVICES)


def layer_report() -> dict[str, LayerStatus]:
    """In a sandboxed process: each layer and whether :func:`enter` applied it (with the
    reason when it did not). Empty outside a sandbox."""
    return dict(_report)


def single_process() -> bool:
    """In a sandboxed process: whether its seccomp filter refuses every new process
    (fork, vfork, clone without CLONE_THREAD answer EAGAIN), because no cgroup holds its
    ``memory_bytes`` or ``cpu_seconds`` and ``allow_subprocesses`` is off: its rlimits
    then hold for the whole child. ``False`` outside a sandbox."""
    return _single_process


def skipped_layers() -> dict[str, str]:
    """In a sandboxed process: the layers skipped under ``allow_reduced``, with why (not
    ``aggregate_limits``: without cgroups the limits hold per process, by design)."""
    return {name: s.reason for name, s in _report.items()
            if not s.supported and name != "aggregate_limits"}


class _Layers:
    """Runs each layer, records the outcome; a failure is fatal unless reduced is allowed."""

    def __init__(self, allow_reduced: bool) -> None:
        self.allow_reduced = allow_reduced
        _report.clear()

    def apply(self, layer: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except OSError as exc:
            self.skip(layer, _describe(exc))
            return False
        _report[layer] = LayerStatus(True, "applied")
        return True

    def skip(self, layer: str, reason: str) -> None:
        if not self.allow_reduced:
            raise SandboxUnavailable(layer, reason)
        _report[layer] = LayerStatus(False, reason)


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    return f"{exc.strerror or exc} ({name})"


def _outer_uid(config: SandboxConfig, privileged: bool) -> int:
    if not privileged:
        return os.geteuid()
    return ISOLATION_UID_BASE + os.getpid() if config.isolation_uid else SHARED_UID


def enter(config: SandboxConfig, keep_fds: Sequence[int]) -> None:
    """Put the calling process into the sandbox ``config`` describes.

    Call it in a freshly forked, single-threaded child, before anything untrusted runs.
    Every fd not in ``keep_fds`` is closed (stdio too: unkept 0, 1, 2 become /dev/null).
    The call forks twice: the caller's process stays outside as a supervisor that never
    returns (it forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2, waits, and exits
    with the sandboxed process's status or re-raises its fatal signal); the first child is
    pid 1 (init) of the new pid namespace, sandboxed too, reaping and forwarding; only the
    second child, pid 2, returns from here, inside every layer, with the caller's signal
    mask and handlers.

    Raises :class:`SandboxUnavailable` (``NCP_ERR_NOT_SUPPORTED``, naming the layer) when a
    layer cannot be applied and ``config.allow_reduced`` is false; ChildkitError
    (``NCP_ERR_INVALID_PARAM``) for a bad ``keep_fds`` or read-only path. After either,
    the process is partly sandboxed: report the error over a kept fd and ``os._exit``;
    never run the entry. With ``allow_reduced``, :func:`skipped_layers` lists what was
    left out.
    """
    enter_planned(config, keep_fds, None, None)


def enter_planned(config: SandboxConfig, keep_fds: Sequence[int],
                  root_plan: _filesystem.RootPlan | None, template: int | None,
                  privileged: bool | None = None, *, netns: int | None = None,
                  single_threaded: bool = False,
                  group: _cgroups.Group | None = None) -> None:
    """:func:`enter`, with the file system view already planned: ``root_plan`` is what
    ``_filesystem.plan(config.readonly_paths)`` returned just before this process was
    forked (the launcher plans in its warm process, so the child need not), or ``None``
    to plan here; ``template``, an fd of a mount namespace holding that very root
    (:mod:`childkit.sandbox._template`), or ``None`` to build it here. The fd is closed
    whatever happens. ``privileged``: what ``_namespaces.is_privileged()`` said in the
    process this one was forked from, which has not changed its credentials since (the
    launcher never does), or ``None`` to find out here. ``netns``: an fd of a fresh
    network namespace no process has joined (:mod:`childkit.sandbox._netns`), made for
    this process alone, which a privileged caller joins so that its init lives there
    rather than in one its clone creates (closed whatever happens, like ``template``),
    or ``None``: the clone creates it.
    ``single_threaded``: the caller knows this process is single-threaded (a fork of the
    single-threaded launcher that has run only childkit's code since), so it is not
    checked again. ``group``: the cgroup this process was born in, its limits set
    (:mod:`childkit.sandbox._ahead`; its maker removes it), or ``None``: a privileged
    caller makes one. Same promises and errors as :func:`enter`."""
    owned = _NamespaceFd(template)
    fresh_netns = _NamespaceFd(netns)
    # No garbage collection while the sandbox is made: a collection in the init or the
    # sandboxed process walks (so copies, page by page) whatever objects were allocated
    # since the caller's last one, for garbage that childkit's few lines here do not
    # make. The supervisor and the init keep it off (they run a fixed loop); the
    # sandboxed process freezes what it inherited (as the launcher did before forking:
    # those objects then never cost it a page) and gets the collector back as it was.
    collecting = gc.isenabled()
    gc.disable()
    try:
        _enter(config, keep_fds, root_plan, owned, privileged, fresh_netns,
               single_threaded, group)
    except BaseException:
        if collecting:
            gc.enable()
        raise
    finally:
        owned.close()
        fresh_netns.close()
    gc.freeze()
    if collecting:
        gc.enable()


class _NamespaceFd:
    """A namespace fd (a template root, a fresh network namespace), closed exactly once
    (its number may be reused afterwards)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _enter(config: SandboxConfig, keep_fds: Sequence[int],
           root_plan: _filesystem.RootPlan | None, template: _NamespaceFd,
           known_privileged: bool | None, netns: _NamespaceFd, single_threaded: bool,
           ahead: _cgroups.Group | None = None) -> None:
    if not isinstance(config, SandboxConfig):
        raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, "config must be a SandboxConfig")
    if not single_threaded and len(os.listdir("/proc/self/task")) != 1:
        # unshare(CLONE_NEWUSER) refuses threaded callers, and the other threads would
        # stay outside every layer.
        raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                            "enter() must be called in a single-threaded process (fork first)")
    try:
        keep = _fds.validate_keep_fds(keep_fds)
        if root_plan is None:
            root_plan = _filesystem.plan(config.readonly_paths)
    except ValueError as exc:
        raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, str(exc)) from None
    layers = _Layers(config.allow_reduced)
    _fds.close_all_except((*keep, *(fd for fd in (template.fd, netns.fd) if fd is not None),
                           *(ahead.fds() if ahead is not None else ())))
    _report["fds"] = LayerStatus(True, "applied")
    try:
        _seccomp.compile_filter()  # libseccomp is only reachable before the pivot
    except OSError as exc:
        seccomp_problem: str | None = _describe(exc)
    else:
        seccomp_problem = None

    privileged = (_namespaces.is_privileged() if known_privileged is None
                  else known_privileged)
    outer = _outer_uid(config, privileged)
    inner = outer if privileged else os.geteuid()
    if config.isolation_uid and not privileged:
        layers.skip("isolation_uid", "a uid of its own needs root (CAP_SETUID and "
                    "CAP_SYS_ADMIN in the initial user namespace)")

    def build() -> None:
        if template.fd is not None and privileged and _join_template(template):
            # A private copy of the template's root, with a /tmp of its own.
            _syscalls.unshare(_syscalls.CLONE_NEWNS)
            _filesystem.mount_tmp("/tmp", config.tmp_size_bytes)
            return
        _namespaces.enter_build_namespace(privileged)
        _filesystem.build_root(root_plan, config.tmp_size_bytes)

    # Where the cgroup goes, opened first: the supervisor then lives in the sandbox's
    # root, without /sys.
    parents = _open_parents(config, privileged) if ahead is None else None
    try:
        built = layers.apply("filesystem", build)
    except BaseException:
        if parents is not None:
            parents.close()
        raise
    template.close()  # joined or not, nothing forked later may hold it
    joined_netns = _join_fresh_netns(netns, privileged)  # its fd closed either way
    if config.isolation_uid and privileged:
        _report["isolation_uid"] = LayerStatus(True, f"applied (uid {outer})")
    previous_mask = _supervisor.block_forwarded()
    death_r, death_w = os.pipe()
    status_r, status_w = os.pipe()
    planned = dict(parents.planned) if parents is not None else {}
    if ahead is not None:  # born in it: nothing to wait for
        planned = {field: h for field, h in ahead.planned.items() if field in ahead.aggregate}
    try:
        init, group, grouped_r = _clone_init(privileged, inner, outer, joined_netns,
                                             config, parents)
        if init is None:  # refused: the same namespaces one by one, naming what fails
            if parents is not None:
                parents.close()
            init, applied = _fork_init_one_by_one(config, layers, privileged, inner, outer)
            extra_processes = 2  # the supervisor lives in the user namespace too
        else:
            applied = _all_namespaces_applied()
            extra_processes = 1  # the init; the supervisor stayed outside
    except BaseException:
        for fd in (death_r, death_w, status_r, status_w):
            os.close(fd)
        if parents is not None:
            parents.close()
        _supervisor.restore_mask(previous_mask)
        raise
    if init != 0:  # the supervisor, outside the new pid namespace
        os.close(death_r)
        os.close(status_w)
        _supervisor.supervise(init, death_w, status_r, group or ahead,
                              config.limits.cpu_seconds)
    if ahead is not None:
        ahead.close()  # no fd of a host directory goes further in
    os.close(death_w)
    os.close(status_r)
    _supervisor.guard_parent(death_r)
    # The init applies every remaining layer to itself; the sandboxed process inherits.
    _inside(config, layers, keep, applied, built, extra_processes)
    # Meanwhile the supervisor made the cgroup and put the init into it: wait for that
    # before the sandboxed process exists (it is then in the group from its first step).
    held = planned if ahead is not None or _grouped(grouped_r) else {}
    # Without a cgroup for memory or CPU the rlimits hold per process: the child is then
    # kept to one process (its filter refuses new ones), so they hold for all of it. The
    # init forks the sandboxed process first, and each loads that filter after the fork.
    single = _needs_single_process(config, held, seccomp_problem)
    if not single:
        _apply_seccomp(layers, seccomp_problem, config, held, single=False)
    # Without the interpreter's fork handling either: the process that called enter()
    # was forked with it (os.fork ran every at-fork hook, re-seeded random, reset the
    # threading module), and neither it nor the init has run anything but childkit's
    # single-threaded code since; the sandboxed process just goes on from there, as it
    # would have had the caller itself been forked into the sandbox. That handling costs
    # the new process about a millisecond of copy-on-write faults.
    workload = _syscalls.fork_without_hooks()
    if workload != 0:
        if single:
            try:
                _seccomp.install(single_process=True)
            except OSError:
                pass  # the sandboxed process loads the same filter: it fails and reports
        _supervisor.run_init(workload, status_w)
    if single:
        _apply_seccomp(layers, seccomp_problem, config, held, single=True)
    _own_thread_id()
    os.close(status_w)
    _supervisor.restore_mask(previous_mask)


#: What the caller writes to the init: once its uid/gid maps are written, and then
#: whether it is in the sandbox's cgroup (or there is none, or it could not join it).
_MAPPED = b"+"
_GROUPED = b"+"
_ALONE = b"-"


def _open_parents(config: SandboxConfig, privileged: bool) -> _cgroups.Parents | None:
    """Where a privileged caller makes the sandbox's cgroup (aggregate limits), opened;
    ``None`` when no limit can be held together here (the rlimits alone then apply)."""
    if not privileged:
        return None
    try:
        return _cgroups.open_parents(config.limits)
    except OSError:
        return None


def _grouped(grouped_r: int | None) -> bool:
    """In the init: whether the caller put it into the sandbox's cgroup (EOF: no)."""
    if grouped_r is None:
        return False
    try:
        return os.read(grouped_r, 1) == _GROUPED
    finally:
        os.close(grouped_r)


#: The limits a cgroup must hold for a child to be allowed more than one process.
_PER_PROCESS_FIELDS = ("memory_bytes", "cpu_seconds")


def _needs_single_process(config: SandboxConfig, held: dict[str, _cgroups.Hierarchy],
                          seccomp_problem: str | None) -> bool:
    """Whether the sandbox must be kept to one process: a memory or CPU limit that no
    cgroup holds, ``allow_subprocesses`` off, and a filter to refuse new processes."""
    limits = config.limits
    return (seccomp_problem is None and not limits.allow_subprocesses
            and any(getattr(limits, f) is not None and f not in held
                    for f in _PER_PROCESS_FIELDS))


def _apply_seccomp(layers: _Layers, seccomp_problem: str | None, config: SandboxConfig,
                   held: dict[str, _cgroups.Hierarchy], single: bool) -> None:
    """Load the filter (``single``: the one that refuses new processes) into this process,
    check it refuses sockets (and, ``single``, processes), and record how the limits
    hold (the ``aggregate_limits`` layer)."""
    global _single_process
    if seccomp_problem is not None:
        layers.skip("seccomp", seccomp_problem)
        layers.skip("socket_filter", "needs seccomp")
    elif layers.apply("seccomp", lambda: _seccomp.install(single_process=single)):
        layers.apply("socket_filter", _seccomp.check_sockets_refused)
        if single:
            _single_process = layers.apply("aggregate_limits",
                                           _seccomp.check_processes_refused)
    else:
        layers.skip("socket_filter", "needs seccomp")
    _report_aggregate(config, held, _single_process)


def _report_aggregate(config: SandboxConfig, planned: dict[str, _cgroups.Hierarchy],
                      single: bool) -> None:
    """Record how the limits hold for the child as a whole: for all its processes
    together (cgroups), kept to one process (``single``), or, missing, per process only
    (an optional layer: never refused)."""
    limits = config.limits
    loose = [f for f in _PER_PROCESS_FIELDS if getattr(limits, f) is not None
             and f not in planned]
    if single:
        _report["aggregate_limits"] = LayerStatus(True, (
            f"applied: kept to one process, so its per-process limits ({', '.join(loose)}) "
            "hold for the whole child (no cgroup holds them here: fork, vfork and clone "
            "without CLONE_THREAD answer EAGAIN, threads start; "
            "ResourceLimits(allow_subprocesses=True) allows processes, each with the full "
            "limits)"))
    elif not loose:
        together = ", ".join(sorted(planned)) or "no memory or CPU limit set"
        version = max((h.version for h in planned.values()), default=0)
        _report["aggregate_limits"] = LayerStatus(True, "applied: " + together + (
            f" for all its processes together (cgroup v{version})" if planned else ""))
    else:
        why = (" (allow_subprocesses=True)" if limits.allow_subprocesses
               else " (no filter to keep it to one process)")
        _report["aggregate_limits"] = LayerStatus(False, "per process only (rlimits"
                                                  + why + "): " + _cgroups.describe(limits))


def _clone_init(privileged: bool, inner: int, outer: int, joined_netns: bool,
                config: SandboxConfig, parents: _cgroups.Parents | None = None,
                ) -> tuple[int | None, _cgroups.Group | None, int | None]:
    """Fork the init straight into every namespace of the sandbox (one clone) and, from
    outside, write its uid/gid maps: no helper process, one system call for all seven
    namespaces (six when the caller has ``joined_netns``, a fresh network namespace the
    init then inherits). Returns 0 in the init (which then has uid ``inner`` and a
    capability set over its own namespaces only), the init's pid in the caller, or
    ``None`` in the caller when the kernel refused the clone or the maps (nothing is left
    behind: an init already forked is killed and reaped).

    With ``parents`` the caller then, while the init sets itself up, makes the sandbox's
    cgroup there and puts the init into it (returned second, to the caller); the init
    gets, third, an fd to read whether that happened (:func:`_grouped`) before it forks
    anything."""
    if not privileged:
        # After a uid change (a launcher that dropped root) this process is non-dumpable,
        # and so would be the init, whose /proc files would then be root's.
        _syscalls.prctl(_syscalls.PR_SET_DUMPABLE, 1)
    go_r, go_w = os.pipe()
    try:
        # The init runs only childkit's code: no at-fork hooks (the workload's os.fork
        # runs them in the process that runs user code).
        init = _syscalls.clone_process(
            _namespaces.SANDBOX_NAMESPACES & ~_syscalls.CLONE_NEWNET if joined_netns
            else _namespaces.SANDBOX_NAMESPACES)
    except OSError:
        os.close(go_r)
        os.close(go_w)
        return None, None, None
    if init == 0:
        os.close(go_w)
        if parents is not None:
            parents.close()  # no fd of a host directory goes further in
        go = os.read(go_r, 1)  # EOF: the caller gave up (and kills this process) or died
        if go != _MAPPED:
            os._exit(1)
        if privileged:
            try:
                _namespaces.become_inner(inner)
            except OSError as exc:  # its maps exist: only a kernel bug gets here
                raise SandboxUnavailable("user_namespace", _describe(exc)) from None
        if parents is None:
            os.close(go_r)
            return 0, None, None
        return 0, None, go_r
    os.close(go_r)
    try:
        try:
            _namespaces.write_child_maps(init, privileged, inner, outer)
            os.write(go_w, _MAPPED)
        except OSError:
            os.kill(init, signal.SIGKILL)
            os.waitpid(init, 0)
            return None, None, None
        group = _make_group(config, parents, init)
        if parents is not None:
            try:
                os.write(go_w, _GROUPED if group is not None else _ALONE)
            except OSError:
                pass  # the init is gone: the supervisor finds out
    finally:
        os.close(go_w)
    return init, group, None


def _make_group(config: SandboxConfig, parents: _cgroups.Parents | None,
                init: int) -> _cgroups.Group | None:
    """Make the sandbox's cgroup in ``parents`` and put ``init`` into it (before it has
    forked anything: all it starts will be in it too); ``None`` if there is none or the
    kernel refuses (what was made is removed, the rlimits alone apply)."""
    if parents is None:
        return None
    try:
        group = _cgroups.create(config.limits, os.getpid(), parents)
    except OSError:
        return None
    if group is None:
        return None
    try:
        _cgroups.add(group, init)
    except OSError:
        _cgroups.remove(group)
        return None
    return group


def _all_namespaces_applied() -> dict[str, bool]:
    """In the init made by :func:`_clone_init`: record every namespace as applied."""
    _report["user_namespace"] = LayerStatus(True, "applied")
    for name, _flag in _namespaces.LATER_NAMESPACES:
        _report[name] = LayerStatus(True, "applied")
    return {name: True for name, _flag in _namespaces.LATER_NAMESPACES}


def _fork_init_one_by_one(config: SandboxConfig, layers: _Layers, privileged: bool,
                          inner: int, outer: int) -> tuple[int, dict[str, bool]]:
    """The careful way, after :func:`_clone_init` failed: the user namespace (its maps
    written by a helper process when root), then each later namespace, one unshare at a
    time so that a failure names its layer (or is skipped under ``allow_reduced``); then
    fork the init. Returns what ``fork`` did and which namespaces were applied."""
    writer: _namespaces.MapWriter | None = None
    if privileged:
        try:
            writer = _namespaces.start_map_writer(inner, outer)
        except OSError:
            writer = None  # enter_user_namespace then fails and names its layer
    try:
        userns = layers.apply("user_namespace", lambda: _namespaces.enter_user_namespace(
            privileged, inner, outer, writer))
        applied = _later_namespaces(layers, userns, privileged, outer)
        init = _syscalls.fork_without_hooks()
    except BaseException:
        if writer is not None:
            writer.cancel()  # end and reap it, whether it wrote the maps or not
        raise
    if init != 0 and writer is not None:
        writer.cancel()  # its child, reaped here (the init just drops its copy)
    return init, applied


def _own_thread_id() -> None:
    # The one thing os.fork's handling would change here: threading's record of the
    # main thread's kernel id (else it names the caller's thread, outside).
    set_native_id = getattr(threading.main_thread(), "_set_native_id", None)
    if set_native_id is not None:
        set_native_id()


def _join_fresh_netns(netns: _NamespaceFd, privileged: bool) -> bool:
    """As a ``privileged`` caller, join the fresh network namespace ``netns`` holds, if
    any; close its fd in any case (it is used once, and nothing forked later may hold
    it). ``False`` if nothing was joined: the init's clone then creates a namespace. The
    init cannot administer a joined one: its owner is the initial user namespace."""
    if netns.fd is None:
        return False
    if not privileged:
        netns.close()
        return False
    return _join_and_close(netns, _syscalls.CLONE_NEWNET)


def _join_template(template: _NamespaceFd) -> bool:
    """Join the template mount namespace (root and cwd become its root) and close its fd;
    ``False`` (nothing changed) if the kernel refuses: the root is then built here."""
    assert template.fd is not None
    return _join_and_close(template, _syscalls.CLONE_NEWNS)


def _join_and_close(namespace: _NamespaceFd, nstype: int) -> bool:
    """``setns`` into the namespace ``namespace.fd`` holds and close the fd, whatever
    happens; ``False`` (nothing changed) if the kernel refuses."""
    assert namespace.fd is not None
    try:
        _syscalls.setns(namespace.fd, nstype)
    except OSError:
        return False
    finally:
        namespace.close()
    return True


def _later_namespaces(layers: _Layers, userns: bool, privileged: bool,
                      outer: int) -> dict[str, bool]:
    """Leave root if there is no user namespace; unshare the namespaces that come after
    it. Returns which of them were applied, by layer name."""
    if not userns and privileged:
        # Without a user namespace, still leave root before anything untrusted runs; if
        # even that fails, no reduced sandbox is acceptable.
        try:
            os.setgroups([])
            os.setresgid(outer, outer, outer)
            os.setresuid(outer, outer, outer)
        except OSError as exc:
            raise SandboxUnavailable("user_namespace", "cannot leave root: "
                                     + _describe(exc)) from None
    applied: dict[str, bool] = {}
    for name, flag in _namespaces.LATER_NAMESPACES:
        if userns:
            applied[name] = layers.apply(name, functools.partial(_namespaces.unshare_one, flag))
        else:
            layers.skip(name, "needs user_namespace")
            applied[name] = False
    return applied


def _inside(config: SandboxConfig, layers: _Layers, keep: tuple[int, ...],
            applied: dict[str, bool], built: bool, extra_processes: int) -> None:
    """The rest but seccomp (:func:`_apply_seccomp`), in the init (pid 1 of the new pid
    namespace)."""
    if applied["pid_namespace"] and built:
        layers.apply("pid_namespace", _filesystem.mount_proc)
    elif applied["pid_namespace"]:
        layers.skip("pid_namespace", "no private /proc without the filesystem layer")
    if applied["uts_namespace"]:
        layers.apply("uts_namespace", lambda: _syscalls.sethostname("isolated"))
    # A uid change left the process non-dumpable, which makes its /proc/self files root's
    # (unreadable to itself); the pid namespace and seccomp already bar ptrace.
    _syscalls.prctl(_syscalls.PR_SET_DUMPABLE, 1)
    _stdio_to_null(keep)
    _environment.scrub(config.keep_env)
    _report["environment"] = LayerStatus(True, "applied")
    layers.apply("limits", lambda: _limits.apply(config.limits, extra_processes))
    layers.apply("no_new_privs", _capabilities.set_no_new_privs)
    layers.apply("landlock", lambda: _landlock.restrict(*LANDLOCK_PATHS))
    layers.apply("capabilities", _capabilities.drop_all)


def _stdio_to_null(keep: tuple[int, ...]) -> None:
    missing = [fd for fd in (0, 1, 2) if fd not in keep]
    if not missing:
        return
    null = os.open("/dev/null", os.O_RDWR)
    for fd in missing:
        if fd != null:
            os.dup2(null, fd, inheritable=True)
    if null not in (0, 1, 2):
        os.close(null)
