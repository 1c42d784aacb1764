"""The public calls that start, connect to, watch and kill native children.

Both start modes of OpenHarmony's ``native_child_process.h``, on :mod:`childkit.process._manager`:

* args mode, :func:`start_native_child_process` (``OH_Ability_StartNativeChildProcess``):
  the child calls ``"pkg.mod:func"`` or native ``"libx.so:Main"`` with its
  :class:`~childkit.ChildProcessArgs`; the call returns the pid once the entry resolved;
* IPC mode, :func:`create_native_child_process` (``OH_Ability_CreateNativeChildProcess``):
  the child module's ``on_connect()`` stub becomes reachable through a
  :class:`~childkit.ipc.RemoteProxy` handed to ``on_started`` on another thread, and
  :func:`connect`, its blocking, ``with``-statement face.

Errors found before a call returns raise :class:`~childkit.ChildkitError`; in IPC mode
the ones found later reach ``on_started(code, None)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import keyword
import logging
import math
import os
import signal
import socket
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from childkit.common._errors import ChildkitError, ErrCode
from childkit.entry._args import ChildProcessArgs
from childkit.entry._entries import EntryMode, ParsedEntry, parse_entry
from childkit.ipc import (
    Connection,
    DeadRemoteObjectError,
    IPCTimeoutError,
    RemoteProxy,
    channel_socketpairs,
)
from childkit.process._child import Child
from childkit.process._exit import ChildExitInfo, ExitCallback
from childkit.process._manager import START_TIMEOUT, Slot, check_not_in_child, manager
from childkit.process._options import ChildProcessOptions, IsolationMode

_log = logging.getLogger("childkit")

OnStarted = Callable[[ErrCode, RemoteProxy | None], object]


def _invalid(message: str) -> ChildkitError:
    return ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM, message)


def _check_options(options: ChildProcessOptions | None) -> ChildProcessOptions:
    if options is None:
        return ChildProcessOptions()
    if not isinstance(options, ChildProcessOptions):
        raise _invalid(f"options must be a ChildProcessOptions, not {type(options).__name__}")
    options.validate()
    options.check_supported()
    return options


def _deadline(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise _invalid(f"timeout must be a positive number of seconds, not {timeout!r}")
    return time.monotonic() + timeout


def _process_name(options: ChildProcessOptions, entry: str) -> str:
    return options.process_name or f"childkit:{entry}"


def _entry_files(parsed: ParsedEntry) -> list[str]:
    """What an isolated child must read to load its entry, found without importing it:
    the top-level package directory (or module file) on ``sys.path``, the ``.py`` file,
    or a library given by path (a library on the search path is under /usr/lib)."""
    if parsed.kind != "python":
        path = os.path.abspath(parsed.target)
        return [path] if os.path.exists(path) else []
    top = parsed.target.split(".")[0]
    for base in sys.path:
        if not isinstance(base, str):
            continue
        base = os.path.abspath(base or ".")
        for candidate in (os.path.join(base, top), os.path.join(base, top + ".py")):
            if os.path.exists(candidate):
                return [candidate]
        if os.path.isdir(base):
            for name in os.listdir(base):
                if name.startswith(top + ".") and name.endswith(".so"):
                    return [os.path.join(base, name)]
    return []  # a module the interpreter's own paths provide, or none: resolving says so


def _spawn_entry(options: ChildProcessOptions, entry: str, mode: EntryMode) -> str:
    """The entry an ISOLATED child is given: a bare library name (``"libx.so[:Main]"``)
    found in a ``LD_LIBRARY_PATH`` directory becomes that file's path, which the sandbox
    then shows (it keeps neither the variable nor the directory); as OpenHarmony's isolated
    child loads a bare name from the app's own library directory. Else ``entry``."""
    if options.isolation_mode != IsolationMode.ISOLATED:
        return entry
    parsed = parse_entry(entry, mode=mode)
    if parsed.kind != "native" or "/" in parsed.target:
        return entry
    for base in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        path = os.path.join(os.path.abspath(base or "."), parsed.target)
        if os.path.isfile(path):
            return path if parsed.symbol is None else f"{path}:{parsed.symbol}"
    return entry


def _sandbox_header(options: ChildProcessOptions,
                    parsed: ParsedEntry | str) -> dict[str, Any] | None:
    """The sandbox an ISOLATED child enters, as plain data for the spawn request.

    ``parsed`` may be the IPC-mode entry text, parsed here only if it is needed.
    """
    if options.isolation_mode != IsolationMode.ISOLATED:
        return None
    from childkit.sandbox import ResourceLimits

    if isinstance(parsed, str):
        parsed = parse_entry(parsed, mode="ipc")

    limits = options.limits or ResourceLimits()
    return {
        "limits": dataclasses.asdict(limits),
        "isolation_uid": options.isolation_uid,
        "allow_reduced": options.allow_reduced_sandbox,
        "readonly_paths": [*options.readonly_paths, *_entry_files(parsed)],
    }


# ---------------------------------------------------------------------------- args mode


def start_native_child_process(entry: str, args: ChildProcessArgs | None = None,
                               options: ChildProcessOptions | None = None, *,
                               timeout: float = START_TIMEOUT) -> int:
    """Start a child that runs ``entry`` with ``args``; return its pid.

    ``entry`` is ``"pkg.mod:func"`` (called as ``func(args)``; an int result is the exit
    code) or ``"[path/]libx.so:Main"`` (``dlopen``ed in the child and called as
    ``void Main(NativeChildProcess_Args)``). The child gets dups of ``args.fds`` under
    the same names (new numbers, in name order) and no other fd of this process; the
    caller keeps its own fds. The call returns once the child has resolved its entry, so
    an unknown module, library or function is reported here; the child exits when the
    entry returns, and registered exit callbacks hear of it.

    Raises:
        ChildkitError: ``NCP_ERR_ALREADY_IN_CHILD`` in a child;
            ``NCP_ERR_INVALID_PARAM`` for a malformed entry, bad args (over 150 KB of
            params, over 16 fds, a bad fd name, a closed fd), bad options or timeout;
            ``NCP_ERR_NOT_SUPPORTED`` for ``IsolationMode.ISOLATED`` where a sandbox
            layer is missing (unless ``allow_reduced_sandbox``);
            ``NCP_ERR_MAX_CHILD_PROCESSES_REACHED`` with 50 children live;
            ``NCP_ERR_LIB_LOADING_FAILED`` if the module, library or function cannot be
            loaded (the message says which and why); ``NCP_ERR_TIMEOUT`` if the child
            has not resolved its entry within ``timeout`` seconds (it is killed);
            ``NCP_ERR_SERVICE_ERROR`` if the launcher fails; ``NCP_ERR_INTERNAL`` if
            the child dies while starting.
    """
    check_not_in_child()
    parsed = parse_entry(entry, mode="args")
    if args is None:
        args = ChildProcessArgs()
    if not isinstance(args, ChildProcessArgs):
        raise _invalid(f"args must be a ChildProcessArgs, not {type(args).__name__}")
    args.validate()
    opts = _check_options(options)
    deadline = _deadline(timeout)
    names = list(args.fds)
    mgr = manager()
    spawned = _spawn_entry(opts, entry, "args")
    if spawned != entry:
        parsed = parse_entry(spawned, mode="args")
    with mgr.reserve() as slot, _out_of_resources("start the child"):
        child = mgr.spawn(slot, mode="args", entry=spawned, params=args.entry_params,
                          fd_names=names, fds=[args.fds[n] for n in names],
                          process_name=_process_name(opts, entry), deadline=deadline,
                          sandbox=_sandbox_header(opts, parsed))
    mgr.announce(child)
    return child.pid


@contextlib.contextmanager
def _out_of_resources(doing: str) -> Iterator[None]:
    """Turn the OSError of a resource this process ran out of (fds, memory, processes)
    while it tried to ``doing`` into ``NCP_ERR_INTERNAL`` with a message naming it."""
    try:
        yield
    except OSError as exc:
        what = _EXHAUSTED.get(exc.errno or 0)
        if what is None:
            raise
        raise ChildkitError(ErrCode.NCP_ERR_INTERNAL,
                            f"cannot {doing}: {what} ({exc.strerror})") from exc


#: errno -> the resource it says ran out.
_EXHAUSTED = {
    errno.EMFILE: "this process has as many open files as RLIMIT_NOFILE allows",
    errno.ENFILE: "the system has as many open files as it allows",
    errno.ENOMEM: "out of memory",
    errno.ENOBUFS: "out of socket buffer memory",
    errno.EAGAIN: "out of processes or threads (RLIMIT_NPROC)",
}


# ---------------------------------------------------------------------------- IPC mode


class IPCStart:
    """One IPC-mode start, checked and holding its child slot (from :func:`connect`,
    :func:`create_native_child_process` and ``childkit.aio``): :meth:`run` it once, on
    any thread, or :meth:`cancel` it. It owns the slot until :meth:`run` passes it to
    the child, and gives it back on every failure.

    Raises (the constructor): what :func:`create_native_child_process` raises.
    """

    def __init__(self, entry: str, options: ChildProcessOptions | None,
                 timeout: float) -> None:
        self.entry = entry
        self._options, self._deadline = _prepare_ipc(entry, options, timeout)
        self._slot = manager().reserve()

    def run(self) -> tuple[Child, Connection, RemoteProxy]:
        """Start the child and wait for its root proxy; raises ``ChildkitError`` with the
        code ``on_started`` would get (``NCP_ERR_INTERNAL`` naming the resource when
        this process is out of fds, memory or threads)."""
        with self._slot, _out_of_resources("start the child"):
            return _start_ipc(self.entry, self._options, self._deadline, self._slot)

    def cancel(self) -> None:
        """Give the slot back without starting (the start will not run)."""
        self._slot.release()


def _prepare_ipc(entry: str, options: ChildProcessOptions | None,
                 timeout: float) -> tuple[ChildProcessOptions, float]:
    check_not_in_child()
    # A library ("libx.so") is served by the C kit in the child (childkit.native): its
    # loading and NativeChildProcess_OnConnect() outcome come back as the start's status.
    parse_entry(entry, mode="ipc")
    opts = _check_options(options)
    deadline = _deadline(timeout)
    return opts, deadline


def _start_ipc(entry: str, opts: ChildProcessOptions, deadline: float,
               slot: Slot) -> tuple[Child, Connection, RemoteProxy]:
    """Start an IPC-mode child in ``slot``; return it with a live root proxy."""
    mgr = manager()
    local, remote = channel_socketpairs()
    ours: list[Connection] = []

    def open_our_end() -> None:
        # Runs while the launcher forks: the child's sockets are in flight (so ours
        # can go). Our end starts serving only once the child's report is in, so that
        # what the child sent until then can be judged whole (_sent_beyond_greeting).
        remote[0].close()
        remote[1].close()
        ours.append(Connection(local[0], local[1], name="connection to a starting child"))

    spawned = _spawn_entry(opts, entry, "ipc")
    try:
        child = mgr.spawn(slot, mode="ipc", entry=spawned, params="", fd_names=[],
                          fds=[remote[0].fileno(), remote[1].fileno()],
                          process_name=_process_name(opts, entry), deadline=deadline,
                          meanwhile=open_our_end,
                          sandbox=_sandbox_header(opts, spawned))
    except BaseException:
        if ours:
            ours[0].close()
        else:
            for sock in (*local, *remote):
                sock.close()
        raise
    conn = ours[0]
    conn.name = f"connection to child {child.pid}"
    try:
        if _sent_beyond_greeting(local[0], local[1]):
            raise ChildkitError(ErrCode.NCP_ERR_CONNECTION_FAILED,
                                f"child {child.pid} sent more than its greeting while starting")
        conn.start()
        if not conn.wait_peer_hello(max(0.001, deadline - time.monotonic())):
            raise ChildkitError(ErrCode.NCP_ERR_CONNECTION_FAILED,
                                f"child {child.pid} offered no root object")
        proxy = conn.root_proxy()
        # The kernel stamped the greeting with the pid of the process that runs the
        # code: for an isolated child, the sandboxed one inside its sandbox's pid
        # namespace. The application knows the child by its registered pid (exit
        # callbacks, kill_child_process): so do the connection and calling-pid checks.
        conn.peer_pid = child.pid
    except BaseException as exc:
        conn.close()
        mgr.discard(child)
        if isinstance(exc, IPCTimeoutError):
            raise ChildkitError(ErrCode.NCP_ERR_TIMEOUT,
                                f"child {child.pid} did not greet in time; it was killed") from None
        if isinstance(exc, DeadRemoteObjectError):
            raise ChildkitError(ErrCode.NCP_ERR_CONNECTION_FAILED,
                                f"child {child.pid} closed the connection while "
                                "starting") from None
        raise
    mgr.announce(child)
    return child, conn, proxy


def _sent_beyond_greeting(call: socket.socket, serve: socket.socket) -> bool:
    """Whether a child whose start-up report is in sent more on its connection, before our
    end read any of it, than its one greeting (a ``HELLO`` record, written before its
    report): then its connection breaks once those frames are read, and the start must
    fail rather than hand out a proxy about to die. Until the start returns the child
    can send nothing else: we asked it nothing (so no reply comes to our call socket)
    and gave it no object to call (so no request comes to our serve socket)."""
    try:
        if _unread(call):
            return True
        queued = _unread(serve)  # (every record's bytes, for a SOCK_SEQPACKET socket)
        if not queued:
            return False  # the C kit may greet after its report
        first = serve.recv_into(bytearray(1), 1, _PEEK_LENGTH)  # MSG_TRUNC: its length
        return queued > first
    except OSError:
        return False  # nothing to judge: the connection finds out what is wrong


_PEEK_LENGTH = socket.MSG_PEEK | socket.MSG_TRUNC | socket.MSG_DONTWAIT


def _unread(sock: socket.socket) -> int:
    return int.from_bytes(fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4), sys.byteorder)


def create_native_child_process(entry: str, on_started: OnStarted,
                                options: ChildProcessOptions | None = None, *,
                                timeout: float = START_TIMEOUT) -> None:
    """Start an IPC-mode child; ``on_started(code, proxy)`` tells how it went.

    ``entry`` is a module (``"pkg.worker"``) or file (``"path/to/worker.py"``) defining
    ``on_connect()`` (returns the :class:`~childkit.ipc.RemoteStub` the parent talks
    to) and ``main_proc()`` (the child's work; the child exits when it returns).
    ``on_started`` is called exactly once, on a thread that is not the caller's, with
    ``(ErrCode.NCP_NO_ERROR, proxy)``, or with an error code and ``None``:
    ``NCP_ERR_LIB_LOADING_FAILED`` (module missing, or without ``on_connect`` /
    ``main_proc``), ``NCP_ERR_CONNECTION_FAILED`` (``on_connect()`` raised or returned
    no stub, or the child died or hung up while starting), ``NCP_ERR_TIMEOUT`` (not
    connected within ``timeout`` seconds; the child is killed),
    ``NCP_ERR_SERVICE_ERROR`` (the launcher failed), ``NCP_ERR_INTERNAL``. The child's
    pid is ``proxy.connection.peer_pid`` (for an isolated child, its sandbox's: the pid
    ``kill_child_process`` takes and exit callbacks report); exit callbacks hear of its
    exit. An IPC-mode
    child has no start-up args (:func:`~childkit.get_current_child_process_args`
    returns ``None`` there) and cannot start children of its own.

    Raises:
        ChildkitError: ``NCP_ERR_ALREADY_IN_CHILD`` in a child;
            ``NCP_ERR_INVALID_PARAM`` for a malformed entry, a non-callable
            ``on_started``, bad options or timeout; ``NCP_ERR_NOT_SUPPORTED`` for
            ``IsolationMode.ISOLATED`` without the sandbox's layers;
            ``NCP_ERR_MAX_CHILD_PROCESSES_REACHED`` with 50 children live.
    """
    if not callable(on_started):
        raise _invalid(f"on_started must be callable, not {type(on_started).__name__}")
    starting = IPCStart(entry, options, timeout)

    def start() -> None:
        try:
            _child, _conn, proxy = starting.run()
        except ChildkitError as exc:
            _call_on_started(on_started, exc.code, None)
        except Exception:  # a bug: still call back exactly once
            _log.exception("starting IPC child %r failed", entry)
            _call_on_started(on_started, ErrCode.NCP_ERR_INTERNAL, None)
        else:
            _call_on_started(on_started, ErrCode.NCP_NO_ERROR, proxy)

    try:
        threading.Thread(target=start, name="childkit-start", daemon=True).start()
    except RuntimeError as exc:  # "can't start new thread": give the slot back
        starting.cancel()
        raise ChildkitError(ErrCode.NCP_ERR_INTERNAL, f"cannot start a thread: {exc}") from None


def _call_on_started(on_started: OnStarted, code: ErrCode, proxy: RemoteProxy | None) -> None:
    try:
        on_started(code, proxy)
    except Exception:
        _log.exception("on_started callback %r failed", on_started)


class ChildConnection:
    """A started IPC-mode child: ``pid``, ``proxy`` (to its root stub), and its end.

    Use it in a ``with`` statement: leaving it calls :meth:`close`.
    """

    def __init__(self, child: Child, conn: Connection, proxy: RemoteProxy) -> None:
        self._child = child
        self._conn = conn
        self.pid: int = child.pid
        self.proxy: RemoteProxy = proxy

    @property
    def exit_info(self) -> ChildExitInfo | None:
        """How the child ended, once it has been reaped; ``None`` while it runs."""
        return self._child.exit_info

    def wait(self, timeout: float | None = None) -> ChildExitInfo | None:
        """Wait up to ``timeout`` seconds (``None``: for ever) for the child to end."""
        self._child.exited.wait(timeout)
        return self._child.exit_info

    def close(self, grace: float = 2.0) -> ChildExitInfo | None:
        """Close the connection (every proxy of it dies) and stop the child.

        The child gets ``SIGTERM`` (it may catch it to clean up) and, if still running
        after ``grace`` seconds, ``SIGKILL``. Returns how it ended (``None`` only if it
        could not be reaped within 10 s of the kill). Idempotent.
        """
        self._conn.close()
        mgr = manager()
        if mgr.signal_child(self._child, signal.SIGTERM) and \
                not self._child.exited.wait(grace):
            mgr.signal_child(self._child, signal.SIGKILL)
        self._child.exited.wait(10.0)
        return self._child.exit_info

    def __enter__(self) -> ChildConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self._child.exit_info is None else repr(self._child.exit_info)
        return f"<ChildConnection pid={self.pid} {state}>"


def connect(entry: str, options: ChildProcessOptions | None = None,
            timeout: float = START_TIMEOUT) -> ChildConnection:
    """Start an IPC-mode child and wait until its root proxy is usable.

    The blocking face of :func:`create_native_child_process`: same entry and options,
    but errors raise :class:`~childkit.ChildkitError` with the code ``on_started``
    would have received. ``with connect(...) as child:`` closes the proxy and stops
    the child on leaving (see :meth:`ChildConnection.close`).
    """
    child, conn, proxy = IPCStart(entry, options, timeout).run()
    return ChildConnection(child, conn, proxy)


# ---------------------------------------------------------------------------- the rest


def kill_child_process(pid: int) -> None:
    """Kill (``SIGKILL``) a live child this process started; its exit callbacks fire.

    Returns once the signal is sent; the child is reaped and reported asynchronously.

    Raises:
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` if ``pid`` is not an int;
            ``NCP_ERR_INVALID_PID`` if it is not a live child of this process (never
            one, already exited, or still starting).
    """
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise _invalid(f"pid must be an int, not {type(pid).__name__}")
    mgr = manager()
    child = mgr.announced_child(pid)
    if child is None or not mgr.signal_child(child, signal.SIGKILL):
        raise ChildkitError(ErrCode.NCP_ERR_INVALID_PID,
                            f"pid {pid} is not a live child process of this process")


def register_child_process_exit_callback(callback: ExitCallback) -> None:
    """Call ``callback(pid, exit_info)`` on the ``childkit-exit`` thread whenever a child
    of this process (either mode) exits. Registering the same callback twice keeps one.

    Raises:
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` if ``callback`` is not callable.
    """
    manager().exit_callbacks.register(callback)


def unregister_child_process_exit_callback(callback: ExitCallback) -> None:
    """Stop calling ``callback`` on child exits.

    Raises:
        ChildkitError: ``NCP_ERR_CALLBACK_NOT_EXIST`` if it is not registered.
    """
    manager().exit_callbacks.unregister(callback)


def is_native_child_process_supported() -> bool:
    """Whether this process may start native children: a Linux application process
    (not a child) whose kernel has pidfds."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False
    try:
        check_not_in_child()
        os.close(os.pidfd_open(os.getpid()))
    except (ChildkitError, OSError):
        return False
    return True


def set_preload_modules(modules: Iterable[str]) -> None:
    """Have the launcher import ``modules`` so that children start with them loaded.

    Call it early: the launcher imports them when it starts (or at once if it is
    running). Each module must be found from this process's ``sys.path`` (looked up
    without importing it); one that is found but fails to import in the launcher is
    logged and skipped, and children then import it themselves.

    Raises:
        ChildkitError: ``NCP_ERR_INVALID_PARAM`` for a name that is not a dotted Python
            module name; ``NCP_ERR_LIB_LOADING_FAILED`` for a module that cannot be
            found (naming it and the part missing). Nothing is remembered then.
    """
    names = [modules] if isinstance(modules, str) else list(modules)
    for name in names:
        if not isinstance(name, str) or not name or not all(
                p.isidentifier() and not keyword.iskeyword(p) for p in name.split(".")):
            raise _invalid(f"preload module {name!r} is not a dotted Python module name")
    for name in names:
        _check_findable(name)
    manager().set_preload_modules(names)


def _check_findable(name: str) -> None:
    """Raise ``NCP_ERR_LIB_LOADING_FAILED`` unless module ``name`` can be found; only
    finders run (a package's ``__init__`` is not imported to look inside it)."""
    import importlib.machinery
    import importlib.util

    parts = name.split(".")
    spec = None
    for i, part in enumerate(parts):
        full = ".".join(parts[:i + 1])
        try:
            loaded = sys.modules.get(full)
            if loaded is not None:  # imported already (os.path too, which no finder finds)
                spec = getattr(loaded, "__spec__", None) or importlib.machinery.ModuleSpec(
                    full, None)
            elif i == 0:
                spec = importlib.util.find_spec(full)
            elif spec is not None and spec.submodule_search_locations is not None:
                spec = importlib.machinery.PathFinder.find_spec(
                    full, list(spec.submodule_search_locations))
            else:
                spec = None  # a plain module has no submodules
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            detail = (f"no module {full!r} on sys.path" if i == 0 else
                      f"{'.'.join(parts[:i])!r} has no module {part!r}")
            raise ChildkitError(ErrCode.NCP_ERR_LIB_LOADING_FAILED,
                                f"preload module {name!r} cannot be found: {detail}")


def shutdown(timeout: float = 10.0) -> None:
    """End childkit's background work in this process once nothing uses it: the launcher
    process, and the threads ``childkit-manager``, ``childkit-exit`` (after it has
    delivered every exit already reported) and ``ipc-work-*``. Shut executors and pools
    down first (their own threads end with them). The next start begins again from
    scratch (a new launcher, about as slow as the first start). Idempotent.

    For applications and test runners that want no thread of childkit's left (CPython's
    test runner flags threads that outlive a test as dangling); a process that simply
    exits needs no call.

    Raises:
        ChildkitError: ``NCP_ERR_BUSY`` while a child is live or starting, or while an
            IPC connection is open (nothing is stopped then, or, for an open
            connection, only the launcher and its two threads); ``NCP_ERR_INVALID_PARAM``
            for a timeout that is not a positive number.
    """
    from childkit.ipc._threadpool import close_default_pool_if_unused
    from childkit.process._manager import live_manager

    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise _invalid(f"timeout must be a positive number of seconds, not {timeout!r}")
    mgr = live_manager()
    if mgr is not None and not mgr.stop(timeout):
        raise ChildkitError(ErrCode.NCP_ERR_BUSY, "children are live or starting: close, "
                            "kill or wait for them (and shut executors and pools down) "
                            "before childkit.shutdown()")
    if not close_default_pool_if_unused(timeout):
        raise ChildkitError(ErrCode.NCP_ERR_BUSY, "IPC connections are open (or their "
                            "requests running): close them before childkit.shutdown()")


def start_threads() -> None:
    """Start, from this thread, every thread a child start will need: the manager's (it
    then starts the launcher in the background), the exit callbacks', and two IPC work
    threads. Work that may outlive the main thread calls it first: from Python 3.12 on,
    no thread can start another once the main thread has finished (an executor's tasks
    run at interpreter exit, as ``ProcessPoolExecutor``'s do).

    Raises:
        ChildkitError: ``NCP_ERR_ALREADY_IN_CHILD`` in a child.
    """
    from childkit.ipc._threadpool import default_pool

    manager().start_threads()
    default_pool().prestart(2)


def prestart_launcher(timeout: float = 60.0) -> int:
    """Start the launcher now rather than on the first child start; return its pid.

    Raises:
        ChildkitError: ``NCP_ERR_ALREADY_IN_CHILD`` in a child;
            ``NCP_ERR_SERVICE_ERROR`` or ``NCP_ERR_TIMEOUT`` if it cannot start.
    """
    return manager().ensure_launcher(timeout)
