"""What runs in a freshly forked child, from the fork to ``os._exit``.

The launcher forks and calls :func:`run_child` in the new process; it never returns.
In order, the child:

1. becomes a child (:func:`childkit.common._role.set_role`: it may not start children) and
   closes every fd except stdin/stdout/stderr, its status pipe and the fds it was
   given: no other fd of the parent, the launcher or a sibling leaks in;
2. asks for ``SIGKILL`` when the launcher dies (and exits at once if it already has: no
   orphans), restores the default ``SIGINT`` handling the launcher turned off, and leads
   a process group of its own (``setpgid``): a ``kill(0, ...)`` or ``killpg`` of its
   own group, as code that cleans up after its own subprocesses does, reaches this
   child and what it started, not the launcher and every sibling;
3. takes its name (``setproctitle`` for ``ps``'s command column, ``PR_SET_NAME`` for
   its ``comm``), the parent's working directory, ``sys.path`` and environment as they
   were when the start call was made, so relative paths and module names mean what they meant there;
4. args mode: dups the named fds to new numbers in name order (as OpenHarmony's child
   sees them; the dups are inheritable, the received copies are closed), installs the
   args for :func:`childkit.get_current_child_process_args`, resolves the entry;
   IPC mode: resolves the module, calls ``on_connect()`` (a C library: ``dlopen``, its
   ``NativeChildProcess_OnConnect()`` served by the C kit, ``childkit.native._child``),
   starts the IPC connection on
   the two sockets it was given with that stub as its root. What the launcher learnt
   of the entry before forking (:func:`learn_entry`) is used instead of redoing it;
5. reports the outcome on the status pipe and closes it (a failure: the error code and
   what went wrong; then it exits with status 1);
6. runs the entry (``func(args)``, native ``Main(args)``, or ``main_proc()``) and exits
   with its int result (``None``/non-int from ``main_proc`` -> 0). An exception prints
   its traceback on stderr and exits with 1, or, in an isolated child, with the exit
   code of the resource limit that caused it (:func:`_limit_exit_code`), which the
   parent's exit callback names. The child exits when the entry returns, threads it
   started or not, as an OpenHarmony child does.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

from childkit.common import _role as _role
from childkit.common import _sysutil as _sysutil
from childkit.common._errors import ChildkitError, ErrCode
from childkit.common._exit_codes import (
    MEMORY_LIMIT_EXIT_CODE,
    OPEN_FILES_LIMIT_EXIT_CODE,
    PROCESS_LIMIT_EXIT_CODE,
    PROCESS_REFUSED_EXIT_CODE,
)
from childkit.common._tracebacks import format_user_exception
from childkit.entry._args import ChildProcessArgs, set_current_child_process_args
from childkit.entry._entries import (
    MAIN_PROC,
    ON_CONNECT,
    ParsedEntry,
    note_sandbox,
    parse_entry,
    resolve_args_entry,
    resolve_ipc_entry,
)
from childkit.ipc import Connection, RemoteStub, _busypoll
from childkit.launcher import _protocol as proto
from childkit.launcher._replies import InFlight
from childkit.native import _child as native_child

if TYPE_CHECKING:  # imported by the launcher only once an isolated child is asked for
    from childkit.sandbox import SandboxConfig, forking

#: The IPC-mode child's connection to its parent, kept for the child's whole life.
_connection: object = None

#: Whether ``setproctitle`` also sets the kernel's ``comm`` name (it does on Linux once
#: initialised); the launcher finds out once, and children then skip their own prctl.
title_sets_comm = False

IpcFunctions = tuple[Callable[[], object], Callable[[], object]]

#: What the launcher already knows of an entry, by ``(entry, mode)``: it parsed it and,
#: for an IPC-mode module it had imported itself (a preload module), looked up the two
#: functions. Filled in the launcher before it forks, so every child inherits the
#: result instead of redoing the work (and copying every page that work writes).
_known: dict[tuple[str, str], tuple[ParsedEntry, IpcFunctions | None]] = {}
_MAX_KNOWN = 256


def learn_entry(entry: str, mode: str) -> None:
    """In the launcher, before forking a child for ``entry``: parse it once and, for an
    IPC-mode module the launcher has imported, look up its functions. Never raises: an
    entry that does not parse or resolve is left for the child to report."""
    key = (entry, mode)
    if key in _known or len(_known) >= _MAX_KNOWN or mode not in ("args", "ipc"):
        return
    try:
        parsed = parse_entry(entry, mode="args" if mode == "args" else "ipc")
        _known[key] = (parsed, _imported_ipc_functions(parsed))
    except Exception:  # whatever it is, the child meets it again and reports it
        return


def forget_entries() -> None:
    """In the launcher, after importing more modules: what was learnt may be stale."""
    _known.clear()


def _imported_ipc_functions(parsed: ParsedEntry) -> IpcFunctions | None:
    # Only plain lookups in a module the launcher imported itself: no import, and no
    # module __getattr__ (user code) runs in the launcher. Anything else is resolved in
    # the child, as always (after entering its sandbox).
    if parsed.mode != "ipc" or parsed.kind != "python":
        return None
    module = sys.modules.get(parsed.target)
    if not isinstance(module, ModuleType):
        return None
    namespace = vars(module)
    spec = namespace.get("__spec__")
    if spec is not None and getattr(spec, "_initializing", False):
        return None
    on_connect, main_proc = namespace.get(ON_CONNECT), namespace.get(MAIN_PROC)
    if not callable(on_connect) or not callable(main_proc):
        return None
    return on_connect, main_proc


def _parsed(entry: str, mode: str) -> tuple[ParsedEntry, IpcFunctions | None]:
    known = _known.get((entry, mode))
    if known is not None:
        return known
    return parse_entry(entry, mode="args" if mode == "args" else "ipc"), None


class _StartupFailed(Exception):
    def __init__(self, code: ErrCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def run_child(header: dict[str, Any], payload: bytes, fds: list[int], launcher_pid: int,
              forget_launcher: Callable[[], None]) -> NoReturn:
    """Become the child described by a spawn request; never returns.

    ``fds`` are ``[status_w, *given]`` as received; ``forget_launcher`` drops (without
    closing) the launcher's own Python objects that wrap fds, so nothing closes an fd
    number later reused by the child.
    """
    code = 1
    try:
        code = _child(header, payload, fds, launcher_pid, forget_launcher)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            try:  # sys.exit("message"): as Python does, the message goes to stderr
                print(exc.code, file=sys.stderr)
            except BaseException:
                pass
    except BaseException as exc:
        try:  # from the user's first frame on (childkit's own frames left out)
            sys.stderr.write(format_user_exception(exc))
        except BaseException:
            pass  # e.g. no memory left to format it: the exit code still says why
        code = _limit_exit_code(exc)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except BaseException:
                pass
        os._exit(code & 0xFF if code >= 0 else 1)


def run_ordered_child(order: dict[str, Any], channel_fd: int, launcher_pid: int,
                      forget_launcher: Callable[[], None]) -> NoReturn:
    """In a child of the isolated template (:mod:`childkit.launcher._isolated`): read this
    child's own request from its own channel (the template never saw it), then become
    that child as :func:`run_child` does; never returns. ``order`` is the fork order
    whose sandbox the template prepared. Ends with status 1 if no request comes (its
    status pipe, inside the channel, is then closed unread: the starter sees a failed
    start)."""
    try:
        _sysutil.close_all_fds_except({0, 1, 2, channel_fd, *_sandbox_fds(order)})
        channel = socket.socket(fileno=channel_fd)
        try:
            got = proto.recv(channel)
        finally:
            channel.close()
        if got is None:
            os._exit(1)
        header, payload, fds = got
        # The description the template prepared this very fork for (the same one).
        header["sandbox"] = order["sandbox"]
    except BaseException:
        os._exit(1)
    run_child(header, payload, fds, launcher_pid, forget_launcher)


def _child(header: dict[str, Any], payload: bytes, fds: list[int], launcher_pid: int,
           forget_launcher: Callable[[], None]) -> int:
    _role.set_role("child")
    # First of all: the launcher forks a batch of requests back to back, so this child
    # also holds the fds of the requests forked after it (another child's status pipe
    # and sockets) until it closes them; the sooner, the sooner that child's EOFs hold.
    _sysutil.close_all_fds_except({0, 1, 2, *fds, *_sandbox_fds(header)})
    _sysutil.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != launcher_pid:
        return 1  # the launcher died between the fork and the prctl
    os.setpgid(0, 0)  # (cannot fail: a fresh fork leads no session nor group)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    forget_launcher()
    status_fd, given = fds[0], fds[1:]

    _take_name(header)
    try:
        os.chdir(header["cwd"])
    except OSError:
        pass  # the parent's directory is gone; the launcher's will do
    sys.path[:] = header["sys_path"]
    sys.argv[:] = [header["entry"]]
    _take_environment(header.get("env"))

    if header.get("sandbox") is not None:
        # Before anything of the entry is imported: its code is untrusted. This process
        # stays outside as the sandbox's supervisor; only the sandboxed one returns.
        try:
            _enter_sandbox(header["sandbox"], [1, 2, status_fd, *given])
            _enforce_limits(header["sandbox"]["limits"])
            note_sandbox(header["sandbox"]["readonly_paths"])  # for import errors' hints
        except ChildkitError as exc:
            _report(status_fd, proto.status_error(exc.code, exc.message))
            return 1
        except Exception as exc:
            _report(status_fd, proto.status_error(
                ErrCode.NCP_ERR_INTERNAL, f"entering the sandbox failed: {exc}"))
            return 1
    # The application's environment replaced the launcher's, and a sandbox scrubs it (and
    # gives this process a pid of its own namespace): the role marker for C code goes last.
    _role.mark_environment()

    try:
        if header["mode"] == "args":
            run = _prepare_args_child(header, payload, given)
        else:
            run = _prepare_ipc_child(header, given)
    except _StartupFailed as exc:
        _report(status_fd, proto.status_error(exc.code, exc.message))
        return 1
    _report(status_fd, proto.status_ok())
    _entering_done()
    return run()


#: Sandbox configs built in the launcher, by :func:`_sandbox_key` of their description:
#: a config is a pure function of it, so each child forked later inherits it built.
_sandbox_configs: dict[tuple[object, ...], SandboxConfig] = {}

@dataclasses.dataclass
class _Prepared:
    """The sandbox prepared for the very next fork. Set in the launcher just before it
    forks; the child finds its own request's description (the same object) here, and
    the next request replaces it."""

    description: dict[str, Any]
    config: SandboxConfig
    root_plan: forking.RootPlan
    #: An fd of a template of that root (the launcher's: the child's copy is closed
    #: once joined), or None.
    template: int | None
    #: An fd of a fresh network namespace (this child's alone: the launcher closes its
    #: copy right after the fork, :func:`sandbox_forked`), or None.
    netns: int | None
    #: The cgroup made ahead the child is born in (as root), or None.
    group: forking.Group | None
    #: The write end of a pipe the sandboxed process closes once it is inside its
    #: sandbox (the launcher waits for its EOF before idle work: :func:`learn_sandbox`).
    entered: int

    def fds(self) -> set[int]:
        """The fds the child keeps until it has used them."""
        fds = {fd for fd in (self.template, self.netns) if fd is not None}
        return fds | {self.entered} | (self.group.fds() if self.group is not None else set())


_next_sandbox: _Prepared | None = None

#: Whether the launcher may build sandbox roots once and share them (root: see
#: childkit.sandbox._template); found on first use.
_use_templates: bool | None = None


def _sandbox_key(description: dict[str, Any]) -> tuple[object, ...]:
    limits = description["limits"]
    return (tuple(description["readonly_paths"]), description["isolation_uid"],
            description["allow_reduced"], tuple(sorted(limits.items())))


def _sandbox_config(description: dict[str, Any]) -> SandboxConfig:
    from childkit.sandbox import ResourceLimits, SandboxConfig

    return SandboxConfig(
        limits=ResourceLimits(**description["limits"]),
        isolation_uid=bool(description["isolation_uid"]),
        allow_reduced=bool(description["allow_reduced"]),
        readonly_paths=tuple(description["readonly_paths"]),
    )


def learn_sandbox(description: Any, spare: bool = False) -> int | None:
    """In the launcher, just before forking an isolated child: build its sandbox config
    (once per distinct description) and plan its file system view (resolving every path
    it binds) here, in the warm template, rather than in the child; as root, also find
    or build a template of that root (``childkit.sandbox.forking``). The plan is
    made anew for every fork, so it is as fresh as one the child would make.

    Returns the read end of a pipe (the caller's to close) that reaches end of file once
    the child is inside its sandbox, or has ended: until then the launcher does no idle
    work (refills), which would compete for the CPU with the child's start. ``None``
    when nothing was prepared. Never raises: whatever fails is left for the child to
    meet again and report.

    ``spare``: the order goes to a spare forked earlier (:mod:`childkit.launcher._spare`)
    rather than to a new fork: no cgroup is taken (the spare was born in its own), and
    the caller sends it :func:`prepared_fds` before :func:`sandbox_forked`."""
    global _next_sandbox, _use_templates
    sandbox_forked()
    try:
        key = _sandbox_key(description)
        config = _sandbox_configs.get(key)
        if config is None:
            config = _sandbox_config(description)
            if len(_sandbox_configs) < _MAX_KNOWN:
                _sandbox_configs[key] = config
        from childkit.sandbox import forking

        root_plan = forking.plan_root(config.readonly_paths)
        if _use_templates is None:
            _use_templates = forking.privileged()
        template = forking.root_template(root_plan) if _use_templates else None
        entered_r, entered_w = os.pipe2(os.O_CLOEXEC)
    except Exception:  # a bad description or path: the child reports it
        if _use_templates and not spare:
            from childkit.sandbox import forking

            forking.outside_groups()  # the child takes no group: born outside them all
        return None
    # Last, so that nothing above can fail with a namespace taken: this child's alone.
    netns = forking.take_netns() if _use_templates else None
    # The cgroup this process sits in, made ahead (as root): the child is born in it.
    group = forking.take_group(config.limits) if _use_templates and not spare else None
    _next_sandbox = _Prepared(description, config, root_plan, template, netns, group,
                              entered_w)
    return entered_r


def sandbox_forked(child: int | None = None) -> None:
    """In the launcher, once the child a sandbox was prepared for is forked (``child``,
    its pid) or failed to be: forget that preparation, close its network namespace fd,
    which belongs to that one child (every later fork must not inherit it), and the
    write end of its "entered" pipe, and leave the cgroup the child was born in
    (``childkit.sandbox.forking``)."""
    global _next_sandbox
    prepared, _next_sandbox = _next_sandbox, None
    if prepared is None:
        return
    os.close(prepared.entered)
    if prepared.netns is not None:
        os.close(prepared.netns)
    if prepared.group is not None:
        from childkit.sandbox import forking

        forking.group_forked(child)


def prepared_fds() -> tuple[list[int], bool, bool]:
    """In the launcher, after :func:`learn_sandbox` for a spare: the fds the spare needs
    (the "entered" write end, then a template root and a fresh network namespace where
    there are), and whether each of the last two is there. ``([], False, False)`` when
    nothing was prepared."""
    prepared = _next_sandbox
    if prepared is None:
        return [], False, False
    fds = [prepared.entered]
    fds += [fd for fd in (prepared.template, prepared.netns) if fd is not None]
    return fds, prepared.template is not None, prepared.netns is not None


def prepare_in_spare(description: dict[str, Any], fds: list[int], template: bool,
                     netns: bool, group: forking.Group | None) -> None:
    """In a spare that received an order: take what the launcher prepared for it
    (:func:`prepared_fds`, received) as a forked child finds it, the cgroup it was born
    in with this order's limits set. Raises OSError (or ValueError for a bad
    description or path) if that cannot be done."""
    global _next_sandbox
    entered, *rest = fds
    template_fd = rest.pop(0) if template else None
    netns_fd = rest.pop(0) if netns else None
    config = _sandbox_config(description)
    from childkit.sandbox import forking

    if group is not None:
        forking.set_group_limits(group, config.limits)
    _next_sandbox = _Prepared(description, config, forking.plan_root(config.readonly_paths),
                              template_fd, netns_fd, group, entered)


def uses_templates() -> bool:
    """In the launcher: whether it is privileged (roots built once, cgroups and network
    namespaces made ahead), once an isolated child has been prepared."""
    return bool(_use_templates)


def ahead_wanted() -> bool:
    """In the launcher: whether a cgroup is to be made ahead first (a spare is born in
    it)."""
    if not _use_templates:
        return False
    from childkit.sandbox import forking

    return forking.group_wanted()


def refill_netns() -> bool:
    """In the launcher, while idle: add one fresh network namespace to the stock if a
    privileged launcher that has started isolated children is short of them. Returns
    whether more are wanted. Raises ``childkit.sandbox.forking.HomeLost`` (the launcher
    must end) if it could not return to its own network namespace."""
    if not _use_templates:
        return False
    from childkit.sandbox import forking

    return forking.idle_work()


def sandbox_done() -> None:
    """In the launcher, when it ends: give back what it holds for isolated children
    ahead (its cgroup made ahead: left and removed)."""
    if _use_templates:
        from childkit.sandbox import forking

        forking.discard_ahead()


def _prepared(description: object) -> _Prepared | None:
    """In the child: what the launcher prepared for this very request's sandbox."""
    prepared = _next_sandbox
    if prepared is None or description is None or prepared.description is not description:
        return None
    return prepared


def _sandbox_fds(header: dict[str, Any]) -> set[int]:
    """In the child: the fds the launcher prepared for this request's sandbox (a template
    root, a fresh network namespace, the cgroup's directories, the "entered" pipe),
    which it keeps until it has used them."""
    prepared = _prepared(header.get("sandbox"))
    return set() if prepared is None else prepared.fds()


def _enter_sandbox(description: dict[str, Any], keep_fds: list[int]) -> None:
    from childkit.sandbox import forking

    prepared = _prepared(description)
    if prepared is None:
        forking.enter_planned(_sandbox_config(description), keep_fds, None, None)
        return
    # The launcher found out whether it is privileged (it never changes its credentials),
    # so this copy of it need not ask the kernel again; and this process is a fork of the
    # single-threaded launcher that has run only childkit's code since, so it is
    # single-threaded too. The "entered" pipe goes in kept (the supervisor and the init
    # close their copies as they close every fd); the sandboxed process closes it once it
    # has reported its start (:func:`_entering_done`).
    global _entered_fd
    forking.enter_planned(prepared.config, [*keep_fds, prepared.entered], prepared.root_plan,
                  prepared.template, _use_templates, netns=prepared.netns,
                  single_threaded=True, group=prepared.group)
    _entered_fd = prepared.entered


#: In the sandboxed process, the write end of its "entered" pipe until it is closed.
_entered_fd: int | None = None


def _entering_done() -> None:
    """Close the "entered" pipe: the launcher's idle work may start. Done once the start
    is reported (so that idle work does not compete with the start, which on a loaded
    machine delayed it by a millisecond), before the entry function runs. The entry's
    import (or ``on_connect()``) runs with it open: the write end of a pipe whose reader
    (the isolated template) only waits for its end of file and never reads from it;
    holding it open only delays the template's idle work (by at most
    :data:`childkit.launcher._template.ENTER_GRACE_S`), writing to it only hastens it."""
    global _entered_fd
    if _entered_fd is not None:
        os.close(_entered_fd)
        _entered_fd = None


#: An isolated child's resource limits (``ResourceLimits`` as a dict) once it is inside
#: its sandbox; ``None`` in a normal child.
_limits: dict[str, Any] | None = None
#: Whether that sandbox keeps it to one process (childkit.sandbox.single_process).
_one_process = False

#: Audit events raised just before a call that creates a process (the call then fails
#: with EAGAIN at RLIMIT_NPROC). ``subprocess.Popen`` is raised in the Python frame that
#: then forks, a few instructions later; the others by the failing C call itself.
_SPAWN_EVENTS = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp"})
_SPAWN_FRAME_EVENTS = frozenset({"subprocess.Popen"})

#: Where the last process creation was attempted: (code, frame id, instruction or -1 for
#: "anywhere in that frame"). An EAGAIN raised exactly there is the fork that failed.
_last_spawn: tuple[object, int, int] | None = None


def _enforce_limits(limits: dict[str, Any]) -> None:
    """Inside the sandbox, before the entry: make exceeding each limit end the child in a
    way its exit callback can name (docs/sandbox.md, "Limits")."""
    global _limits
    _limits = limits
    if limits.get("max_file_size") is not None:
        # Python starts with SIGXFSZ ignored (a write past RLIMIT_FSIZE then only fails
        # with EFBIG); the default action ends the child with SIGXFSZ, a named reason.
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    global _one_process
    from childkit.sandbox import single_process

    _one_process = single_process()
    if limits.get("max_processes") is not None or _one_process:
        sys.addaudithook(_note_spawn)


def _note_spawn(event: str, _args: tuple[object, ...]) -> None:
    # Called for every audit event of the child: keep the common path to one lookup.
    if event in _SPAWN_EVENTS or event in _SPAWN_FRAME_EVENTS:
        global _last_spawn
        frame = sys._getframe(1)  # the Python frame making the call
        _last_spawn = (frame.f_code, id(frame),
                       frame.f_lasti if event in _SPAWN_EVENTS else -1)


def _limit_exit_code(exc: BaseException) -> int:
    """The exit status for an entry that raised ``exc``: the code of the resource limit
    that caused it in an isolated child, else 1.

    - MemoryError, with a memory limit: :data:`MEMORY_LIMIT_EXIT_CODE`;
    - EAGAIN raised by the very call that tried to create a process in a child kept to
      one process (its filter refused it): :data:`PROCESS_REFUSED_EXIT_CODE`;
    - EAGAIN raised by the very call that tried to create a process (``os.fork``,
      ``os.posix_spawn``, ``subprocess``, so ``multiprocessing`` too), or ``RuntimeError:
      can't start new thread`` while the sandbox holds ``max_processes`` tasks, with a
      process limit: :data:`PROCESS_LIMIT_EXIT_CODE`;
    - EMFILE (only RLIMIT_NOFILE gives it to a sandboxed process), with an open-files
      limit: :data:`OPEN_FILES_LIMIT_EXIT_CODE`.
    """
    limits = _limits
    if limits is None:
        return 1
    if isinstance(exc, MemoryError) and limits.get("memory_bytes") is not None:
        return MEMORY_LIMIT_EXIT_CODE
    if _one_process and _spawn_refused(exc):
        return PROCESS_REFUSED_EXIT_CODE
    if limits.get("max_processes") is not None and _failed_to_spawn(
            exc, limits["max_processes"]):
        return PROCESS_LIMIT_EXIT_CODE
    if (isinstance(exc, OSError) and exc.errno == errno.EMFILE
            and limits.get("max_open_files") is not None):
        return OPEN_FILES_LIMIT_EXIT_CODE
    return 1


def _spawn_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the EAGAIN of the very call that tried to create a process."""
    tb = exc.__traceback__
    if tb is None or not isinstance(exc, OSError) or exc.errno != errno.EAGAIN:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next  # the frame the error was raised in
    spawn = _last_spawn
    return spawn is not None and spawn[0] is tb.tb_frame.f_code and (
        spawn[1] == id(tb.tb_frame) and spawn[2] in (-1, tb.tb_lasti))


def _failed_to_spawn(exc: BaseException, max_processes: int) -> bool:
    if _spawn_refused(exc):
        return True
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next  # the frame the error was raised in
    if (isinstance(exc, RuntimeError) and tb.tb_frame.f_code is threading.Thread.start.__code__
            and "can't start new thread" in str(exc)):
        # pthread_create says EAGAIN for a full RLIMIT_NPROC and for a stack that does
        # not fit the address space alike: count, to name only the first.
        return _sandbox_tasks() >= max_processes
    return False


def _sandbox_tasks() -> int:
    """Threads of every process in this sandbox but its init (pid 1), or -1 where this is
    not a pid namespace of its own (a reduced sandbox): ``/proc`` then shows the host."""
    if os.getpid() != 2:
        return -1
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit() and name != "1":
            try:
                count += len(os.listdir(f"/proc/{name}/task"))
            except OSError:
                pass  # ended meanwhile
    return count


def _take_environment(changes: dict[str, Any] | None) -> None:
    # The launcher's environment is the application's as it was when the launcher
    # started; these are the changes made since, so the child sees os.environ as it was
    # at the start call. (An isolated child then keeps only what its sandbox allows.)
    if not changes:
        return
    for name in changes["unset"]:
        os.environ.pop(name, None)
    os.environ.update(changes["set"])
    if _busypoll.ENV_VAR in changes["set"] or _busypoll.ENV_VAR in changes["unset"]:
        _busypoll.reload_from_environment()  # read at import, in the launcher


def _take_name(header: dict[str, Any]) -> None:
    name = header["process_name"]
    try:
        import setproctitle

        setproctitle.setproctitle(name)
    except ImportError:
        pass  # a declared dependency; without it only the comm name changes
    else:
        if title_sets_comm:
            return
    _sysutil.set_comm(name)


def _report(status_fd: int, report: bytes) -> None:
    # The whole frame, then this end closes at once (the starter needs neither: the frame
    # ends the report, and it also watches this process's exit). A process the entry
    # forked while starting keeps its copy of the pipe; nothing of the starter waits on it.
    view = memoryview(report)
    try:
        while view:
            view = view[os.write(status_fd, view):]
    except OSError:
        pass  # the starter gave up (timeout) and closed its end
    try:
        os.close(status_fd)
    except OSError:
        pass  # the entry's own code closed it


def _prepare_args_child(header: dict[str, Any], payload: bytes,
                        given: list[int]) -> Callable[[], int]:
    names: list[str] = header["fd_names"]
    received = dict(zip(names, given, strict=True))
    placed: dict[str, int] = {}
    # New numbers in name order: OpenHarmony hands them over sorted by name (std::map).
    for name in sorted(received, key=lambda n: n.encode("utf-8")):
        new = os.dup(received[name])
        os.set_inheritable(new, True)
        placed[name] = new
    for fd in given:
        os.close(fd)
    try:
        args = ChildProcessArgs(payload.decode("utf-8"), placed)
        set_current_child_process_args(args)
        runner = resolve_args_entry(_parsed(header["entry"], "args")[0])
    except ChildkitError as exc:
        raise _StartupFailed(exc.code, exc.message) from None
    except Exception as exc:
        raise _StartupFailed(ErrCode.NCP_ERR_INTERNAL,
                             f"child set-up failed: {type(exc).__name__}: {exc}") from None
    return lambda: runner(args)


def _prepare_ipc_child(header: dict[str, Any], given: list[int]) -> Callable[[], int]:
    call_fd, serve_fd = given
    entry = header["entry"]
    try:
        parsed, functions = _parsed(entry, "ipc")
        if parsed.kind == "native":  # a C library: the C kit serves it (childkit.native)
            return native_child.prepare(parsed.target, entry, call_fd, serve_fd)
        on_connect, main_proc = functions or resolve_ipc_entry(parsed)
    except ChildkitError as exc:
        raise _StartupFailed(exc.code, exc.message) from None
    try:
        stub = on_connect()
    except Exception as exc:
        sys.stderr.write(format_user_exception(exc))
        raise _StartupFailed(
            ErrCode.NCP_ERR_CONNECTION_FAILED,
            f"on_connect() of {entry!r} raised {type(exc).__name__}: {exc}",
        ) from None
    if not isinstance(stub, RemoteStub):
        raise _StartupFailed(
            ErrCode.NCP_ERR_CONNECTION_FAILED,
            f"on_connect() of {entry!r} returned {type(stub).__name__}, not a RemoteStub",
        )
    # Requests the stub is answering hold the child's exit until their replies are
    # sent (bounded): a request that makes main_proc return is still answered.
    in_flight = InFlight()
    try:
        counted = in_flight.wrap(stub.on_remote_request)
        stub.on_remote_request = counted  # type: ignore[method-assign,assignment]
    except AttributeError:
        pass  # a stub with __slots__: its replies are not waited for
    conn = Connection(socket.socket(fileno=call_fd), socket.socket(fileno=serve_fd),
                      local_root=stub, name=f"child {os.getpid()} to its parent")
    conn.start()
    global _connection
    _connection = conn  # lives as long as the child does

    def run() -> int:
        try:
            result = main_proc()
        finally:
            in_flight.drain()
        if isinstance(result, int) and not isinstance(result, bool):
            return result
        return 0

    return run
