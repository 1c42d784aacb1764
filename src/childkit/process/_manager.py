"""The application side: the launcher it owns, the registry of live children, spawning.

One :class:`Manager` per application process (:func:`manager`). It owns:

* the launcher (:mod:`childkit.launcher._template`), started lazily on first use from the
  manager's own long-lived thread (``childkit-manager``), which also reads everything the
  launcher sends. ``PR_SET_PDEATHSIG`` follows the thread that started a process, so
  starting the launcher from whichever user thread came first would kill it when that
  thread ended. If the launcher dies it is started again on next use; its children die
  with it (their own death signal) and are reported as killed by ``SIGKILL``.
  The launcher, and its children, have a session of their own (``may_leave_session``).
* the registry of children (pid -> :class:`Child`), each with a pidfd from the
  launcher, so signals never reach a recycled pid. At most :data:`MAX_CHILDREN` live
  children or starts in progress; a slot frees when the child has been reaped.
* the exit callbacks (:class:`childkit.process._exit.ExitCallbacks`).

A start (:meth:`Manager.spawn`) sends one request with the fds to pass, waits for the
``forked`` answer, then reads the child's start-up report from a pipe the child holds
(:mod:`childkit.process._report`: one bounded frame, the child's exit watched too).
A child whose start fails is reaped before the error is reported (so its slot is free
and no zombie or stray process remains) and is never announced to exit callbacks:
the caller never learnt its pid.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from childkit.common import _role as _role
from childkit.common import _sysutil as _sysutil
from childkit.common._errors import ChildkitError, ErrCode
from childkit.launcher import _isolated
from childkit.launcher import _protocol as proto
from childkit.process import _report
from childkit.process._child import (
    Child,
    ChildStartFailed,
    Mode,
    absolute_sys_path,
    describe_exit,
    env_changes,
    start_cwd,
)
from childkit.process._exit import ChildExitInfo, ExitCallbacks

_log = logging.getLogger("childkit")

#: Live native children per application process (OpenHarmony: 50 since API 15).
MAX_CHILDREN = 50
#: Default seconds a start may take, from the call to a started child.
START_TIMEOUT = 30.0
#: Seconds the launcher may take to start and import the preload modules.
LAUNCHER_TIMEOUT = 60.0
#: Seconds to wait for a child that failed to start (and so exits at once) to be reaped.
_REAP_TIMEOUT = 10.0
#: How long a dead launcher's sandbox cgroups wait for pid 1 to reap their orphans.
_SWEEP_PATIENCE_S = 5.0


# The launcher imports childkit from where this process did, installed or not.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_LAUNCHER_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from childkit.launcher._template import main; sys.exit(main(sys.argv[1:]))"
)


class Slot:
    """One of the :data:`MAX_CHILDREN` child slots, taken by :meth:`Manager.reserve` for
    one start, which owns it until it ends in exactly one of two ways: passed to the
    child the launcher forked for that start (the manager does that when the launcher
    answers), or given back with :meth:`release`. Both are idempotent, so every failure
    path of a start may release it without counting who released it first; used as a
    context manager, it is given back when the block raises.
    """

    __slots__ = ("_held", "_manager")

    def __init__(self, manager: Manager) -> None:
        self._manager = manager
        self._held = True  # guarded by the manager's lock

    @property
    def held(self) -> bool:
        """Whether the start still holds the slot (not yet passed on or released)."""
        return self._held

    def release(self) -> None:
        """Give the slot back, unless it already went to a child or was given back."""
        self._manager._end_slot(self)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc_type is not None:
            self.release()


@dataclass(eq=False)
class _Pending:
    """A spawn request waiting for the launcher's ``forked`` or ``failed``."""

    mode: Mode
    slot: Slot
    done: threading.Event = field(default_factory=threading.Event)
    child: Child | None = None
    error: ChildkitError | None = None


class Manager:
    """The per-process child manager. Thread-safe; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._children: dict[int, Child] = {}
        self._reserved = 0
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self.exit_callbacks = ExitCallbacks()
        self._preload: list[str] = []
        # The environment the launcher was started with: a child gets the changes made
        # to os.environ since (see env_changes).
        self._launcher_env: dict[str, str] = {}
        # Launcher state: "idle" (none), "starting", "ready".
        self._state = "idle"
        self._failures = 0
        self._last_error = ""
        self._sock: socket.socket | None = None
        self._launcher_pid = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._stopping = False  # stop(): the manager thread ends instead of waiting
        #: An isolated child was asked of this launcher (its template makes cgroups).
        self._isolated_asked = False
        #: Where isolated requests go (to the launcher's isolated template).
        self._template: socket.socket | None = None

    # ------------------------------------------------------------------ slots
    def reserve(self) -> Slot:
        """Take a child slot for a start about to begin; the caller owns the returned
        :class:`Slot` until :meth:`spawn` passes it to the forked child, and must give it
        back on every other way out (``with mgr.reserve() as slot:`` does).

        Raises:
            ChildkitError: ``NCP_ERR_ALREADY_IN_CHILD`` in a child (or the launcher);
                ``NCP_ERR_MAX_CHILD_PROCESSES_REACHED`` with 50 children live or starting.
        """
        check_not_in_child()
        with self._lock:
            busy = len(self._children) + self._reserved
            if busy >= MAX_CHILDREN:
                raise ChildkitError(
                    ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED,
                    f"this process already has {busy} native children live or starting; "
                    f"at most {MAX_CHILDREN} are allowed (a slot frees when one exits)",
                )
            self._reserved += 1
            return Slot(self)

    def _end_slot(self, slot: Slot) -> None:
        with self._lock:
            self._end_slot_locked(slot)

    def _end_slot_locked(self, slot: Slot) -> None:
        # The one place a reservation ends, whether the slot goes to a child (which then
        # counts in _children) or back to the pool: at most once per slot.
        if slot._held:
            slot._held = False
            self._reserved -= 1

    # ------------------------------------------------------------------ spawning
    def spawn(self, slot: Slot, *, mode: Mode, entry: str, params: str, fd_names: list[str],
              fds: list[int], process_name: str, deadline: float,
              meanwhile: Callable[[], object] | None = None,
              sandbox: dict[str, Any] | None = None) -> Child:
        """Start a child in ``slot`` (from :meth:`reserve`): the slot passes to the child
        once the launcher has forked it, and is given back if no child was forked.

        Returns the child once its start-up report said all is well (for IPC mode:
        the connection is up on the child's side). The child is not announced yet:
        the caller calls :meth:`announce` when it hands the pid out. ``meanwhile`` runs
        once the request is on its way (``fds`` may be closed then), while the launcher
        forks: work that overlaps the child's start. If it raises and the child still
        reports success, the child is killed and reaped and the exception propagates
        (a failure the child reports takes precedence: it is the cause).

        Raises:
            ChildkitError: ``NCP_ERR_SERVICE_ERROR`` if the launcher cannot start or
                dies; ``NCP_ERR_INVALID_PARAM`` if one of ``fds`` was closed meanwhile;
                ``NCP_ERR_INTERNAL`` if the fork fails; a broken start's code
                (``NCP_ERR_INTERNAL`` in args mode, ``NCP_ERR_CONNECTION_FAILED`` in IPC
                mode) at once if the child dies before its report is whole, or sends a
                malformed one, or closes the pipe without one (the child is killed);
                ``NCP_ERR_TIMEOUT`` if ``deadline`` (a ``time.monotonic()`` value) passes
                (the child is killed); the child's own code (e.g.
                ``NCP_ERR_LIB_LOADING_FAILED``, ``NCP_ERR_CONNECTION_FAILED``) with its
                message if it could not start.
        """
        try:
            sock = self._ensure_launcher(deadline)
            status_r, status_w = os.pipe2(os.O_CLOEXEC)
            try:
                pending = _Pending(mode, slot)
                with self._lock:
                    request_id = self._next_id
                    self._next_id += 1
                    self._pending[request_id] = pending
                header: dict[str, Any] = {
                    "op": "spawn", "id": request_id, "mode": mode, "entry": entry,
                    "fd_names": fd_names, "process_name": process_name,
                    "cwd": start_cwd(), "sys_path": absolute_sys_path(),
                    "sandbox": sandbox,
                }
                env = env_changes(self._launcher_env)
                if env is not None:
                    header["env"] = env
                template = None
                if sandbox is not None:
                    self._isolated_asked = True
                    template = self._template
                    if template is not None:  # the environment it keeps, nothing more
                        from childkit.sandbox import SandboxConfig

                        header["env"] = _isolated.kept_now(SandboxConfig.keep_env)
                try:
                    self._send(sock, header, params.encode("utf-8"), [status_w, *fds],
                               template)
                finally:
                    os.close(status_w)
                failure: BaseException | None = None
                if meanwhile is not None:
                    try:
                        meanwhile()
                    except BaseException as exc:
                        failure = exc
                child = self._await_fork(request_id, pending, deadline)
                if sandbox is not None:
                    child.limits = sandbox["limits"]
                # The child's own report comes first: if it failed to start, that is
                # why ``meanwhile`` failed too (e.g. it hung up before our greeting).
                self._await_report(child, status_r, deadline)
                if failure is not None:
                    self._kill_and_reap(child)
                    raise failure
                return child
            finally:
                os.close(status_r)
        finally:
            slot.release()  # a no-op once the slot went to the forked child

    def _send(self, sock: socket.socket, header: dict[str, Any], payload: bytes,
              fds: list[int], template: socket.socket | None = None) -> None:
        try:
            if template is not None:
                _isolated.send_order(template, header, payload, fds)
            else:
                proto.send(sock, header, payload, fds)
        except proto.RecordTooLarge as exc:
            with self._lock:
                self._pending.pop(header["id"], None)
            env = len(json.dumps(header.get("env", {})))
            raise ChildkitError(
                ErrCode.NCP_ERR_INVALID_PARAM,
                f"the start request is {exc.size} bytes, more than the launcher takes "
                f"({proto.MAX_RECORD}); {env} of them are changes made to os.environ since "
                "the launcher started: make them before the first child starts, or smaller",
            ) from None
        except OSError as exc:
            with self._lock:
                self._pending.pop(header["id"], None)
            if exc.errno == errno.EBADF:  # one of the caller's fds was closed meanwhile
                raise ChildkitError(ErrCode.NCP_ERR_INVALID_PARAM,
                                    "a file descriptor to pass was closed before the "
                                    "child could receive it") from None
            raise ChildkitError(ErrCode.NCP_ERR_SERVICE_ERROR,
                                f"cannot reach the launcher: {exc}") from None

    def _await_fork(self, request_id: int, pending: _Pending, deadline: float) -> Child:
        if not pending.done.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                self._pending.pop(request_id, None)
                if pending.child is None:  # the answer may have raced the timeout
                    raise ChildkitError(ErrCode.NCP_ERR_TIMEOUT,
                                        "the launcher did not answer the start request in time")
        if pending.error is not None:
            raise pending.error
        assert pending.child is not None
        return pending.child

    def _await_report(self, child: Child, status_r: int, deadline: float) -> None:
        # The report's reading (bounded, framed, watching the child's exit) is _report's;
        # here, what its absence means: the child is killed (unless dead) and reaped.
        broken = ErrCode.NCP_ERR_INTERNAL if child.mode == "args" \
            else ErrCode.NCP_ERR_CONNECTION_FAILED
        try:
            with self._lock:  # a copy: the manager thread closes the child's at its exit
                pidfd = os.dup(child.pidfd) if child.pidfd >= 0 else -1
            try:
                code, message = _report.read_report(status_r, pidfd, deadline)
            finally:
                if pidfd >= 0:
                    os.close(pidfd)
        except _report.NoReport as exc:
            info = self._kill_and_reap(child)  # a dead child is only reaped
            err = ErrCode.NCP_ERR_TIMEOUT if exc.why == "timeout" else broken
            text = (f"died during start-up ({describe_exit(info)}) {exc.detail}; see its stderr"
                    if exc.why == "died" else f"{exc.detail}; it was killed")
            raise ChildkitError(err, f"child {child.pid} {text}") from None
        except BaseException:
            self._kill_and_reap(child)  # e.g. no fd left to watch it with
            raise
        if code != ErrCode.NCP_NO_ERROR:
            # It exits right after saying so; one that lives on (its entry wrote a
            # failure and carried on) is killed all the same.
            info = self._wait_reaped(child) or self._kill_and_reap(child)
            raise ChildStartFailed(ErrCode(code), message, child.pid, info)

    def announce(self, child: Child) -> None:
        """Hand ``child`` to the user: exit callbacks and kill now apply to it."""
        with self._lock:
            child.announced = True
            info = child.exit_info
        if info is not None:  # it exited before the start call could return
            self.exit_callbacks.notify(info)

    def discard(self, child: Child) -> None:
        """Kill a started child the caller will not hand out (a later step failed)."""
        self._kill_and_reap(child)

    # ------------------------------------------------------------------ children
    def signal_child(self, child: Child, signum: int) -> bool:
        """Send ``signum`` through the child's pidfd; ``False`` if it was already reaped."""
        with self._lock:
            if child.exit_info is not None or child.pid not in self._children:
                return False
            try:
                signal.pidfd_send_signal(child.pidfd, signum)
            except ProcessLookupError:
                return False  # exited, not yet reaped: it is on its way out anyway
            return True

    def announced_child(self, pid: int) -> Child | None:
        """The live, announced child with this pid, if any."""
        with self._lock:
            child = self._children.get(pid)
            return child if child is not None and child.announced else None

    def live_count(self) -> int:
        """Children live or starting (what the 50 limit counts)."""
        with self._lock:
            return len(self._children) + self._reserved

    def _kill_and_reap(self, child: Child) -> ChildExitInfo | None:
        self.signal_child(child, signal.SIGKILL)
        return self._wait_reaped(child)

    @staticmethod
    def _wait_reaped(child: Child) -> ChildExitInfo | None:
        child.exited.wait(_REAP_TIMEOUT)
        return child.exit_info

    # ------------------------------------------------------------------ preload
    def set_preload_modules(self, modules: list[str]) -> None:
        """Remember modules for the launcher to import; a running launcher imports them now."""
        with self._lock:
            for name in modules:
                if name not in self._preload:
                    self._preload.append(name)
            sock = self._sock if self._state == "ready" else None
        if sock is not None:
            try:
                proto.send(sock, {"op": "preload", "modules": list(modules)})
            except OSError:
                pass  # the launcher died; the next one imports them at start

    def ensure_launcher(self, timeout: float = LAUNCHER_TIMEOUT) -> int:
        """Start the launcher now if it is not running; return its pid.

        Raises:
            ChildkitError: ``NCP_ERR_ALREADY_IN_CHILD`` in a child;
                ``NCP_ERR_SERVICE_ERROR`` if it cannot be started.
        """
        check_not_in_child()
        self._ensure_launcher(time.monotonic() + timeout)
        return self._launcher_pid

    def start_threads(self) -> None:
        """Start this process's childkit threads now (the manager's, which then starts
        the launcher in the background, and the exit callbacks'), from a thread that may
        still start threads: from Python 3.12 on, none can once the main thread has
        finished, so work that outlives it (an executor's tasks at exit) must not be the
        first to need them."""
        check_not_in_child()
        with self._cond:
            if self._state == "idle":
                self._begin_launcher_start_locked()

    def _begin_launcher_start_locked(self) -> None:
        self._state = "starting"
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="childkit-manager")
            self._thread.start()
            self.exit_callbacks.start()
        self._cond.notify_all()

    # ------------------------------------------------------------------ the launcher
    def _ensure_launcher(self, deadline: float) -> socket.socket:
        with self._cond:
            seen_failures = self._failures
            while True:
                if self._state == "ready" and self._sock is not None:
                    return self._sock
                if self._failures != seen_failures:
                    raise ChildkitError(ErrCode.NCP_ERR_SERVICE_ERROR,
                                        f"the launcher could not start: {self._last_error}")
                if self._state == "idle":
                    self._begin_launcher_start_locked()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChildkitError(ErrCode.NCP_ERR_TIMEOUT,
                                        "the launcher did not become ready in time")
                self._cond.wait(left)

    def _run(self) -> None:
        # The manager thread: starts launchers (so that their death signal is tied to
        # this thread, which lives as long as the process) and reads what they send.
        while True:
            with self._cond:
                while self._state != "starting":
                    if self._stopping:  # stop(): no launcher, no child: end
                        return
                    self._cond.wait()
            try:
                proc, sock = self._start_launcher()
            except Exception as exc:
                with self._cond:
                    self._state = "idle"
                    self._failures += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    self._cond.notify_all()
                continue
            try:
                self._serve(sock)
            finally:
                try:
                    self._launcher_lost(proc, sock)
                except Exception:  # never let the manager thread die: starts would hang
                    _log.exception("childkit: cleaning up after the launcher failed")

    def _start_launcher(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        # Two socket pairs: the control socket, and where isolated requests go (the
        # launcher hands its end to the isolated template it starts for the first one).
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        orders, their_orders = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (mine, theirs, orders, their_orders):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, proto.SOCKET_BUFFER)
        try:
            env = dict(os.environ)
            proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER_BOOT, _PACKAGE_ROOT, str(theirs.fileno()),
                 str(os.getpid()), str(their_orders.fileno())],
                pass_fds=(theirs.fileno(), their_orders.fileno()), stdin=subprocess.DEVNULL,
                close_fds=True, env=env, start_new_session=_sysutil.may_leave_session())
            self._launcher_env = env
        except BaseException:
            mine.close()
            orders.close()
            raise
        finally:
            theirs.close()
            their_orders.close()
        try:
            with self._lock:
                preload = list(self._preload)
            proto.send(mine, {"op": "config", "preload": preload,
                              "sys_path": [p for p in sys.path if isinstance(p, str)]})
            if not select.select([mine], [], [], LAUNCHER_TIMEOUT)[0]:
                raise TimeoutError(f"no answer within {LAUNCHER_TIMEOUT} s")
            got = proto.recv(mine)
            if got is None:
                raise RuntimeError(f"it exited at start-up (status {proc.wait()})")
            header, _payload, fds = got
            proto.close_fds(fds)
            if header["op"] != "ready":
                raise proto.ProtocolError(f"expected ready, got {header['op']!r}")
        except BaseException:
            mine.close()
            orders.close()
            proc.kill()
            proc.wait()
            raise
        for problem in header.get("preload_errors", []):
            _log.warning("childkit launcher could not preload %s", problem)
        with self._cond:
            self._sock = mine
            self._template = orders
            self._launcher_pid = proc.pid
            self._state = "ready"
            self._cond.notify_all()
        return proc, mine

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                got = proto.recv(sock)
            except proto.ProtocolError as exc:
                _log.error("childkit launcher sent a bad record: %s", exc)
                return
            except OSError:
                return
            if got is None:
                return
            header, _payload, fds = got
            try:
                self._dispatch(header, fds)
            except Exception:  # a malformed record is a launcher bug: start a new one
                proto.close_fds(fds)
                _log.exception("childkit launcher sent a record the manager cannot use")
                return

    def _dispatch(self, header: dict[str, Any], fds: list[int]) -> None:
        op = header["op"]
        if op == "forked":
            self._on_forked(header, fds)
        elif op == "failed":
            proto.close_fds(fds)
            self._on_failed(header)
        elif op == "exited":
            proto.close_fds(fds)
            pid = int(header["pid"])
            status = int(header["status"])
            with self._lock:
                known = self._children.get(pid)
                limits = known.limits if known is not None else None
            self._on_exited(pid, ChildExitInfo.from_wait_status(pid, status, limits))
        else:
            proto.close_fds(fds)  # "preloaded" and anything newer: nothing to do

    def _on_forked(self, header: dict[str, Any], fds: list[int]) -> None:
        # Checked whole before any pidfd is handed to a Child: on a malformed record
        # _serve closes every fd that came with it.
        answers = [(int(request_id), int(pid)) for request_id, pid in header["children"]]
        if len(answers) != len(fds):
            raise proto.ProtocolError(f"{len(answers)} children came with {len(fds)} pidfds")
        unwanted: list[Child] = []
        with self._lock:
            for (request_id, pid), pidfd in zip(answers, fds, strict=True):
                pending = self._pending.pop(request_id, None)
                child = Child(pid, pidfd, pending.mode if pending else "args")
                self._children[child.pid] = child
                if pending is None:  # its starter timed out waiting: nobody wants it
                    unwanted.append(child)
                    continue
                self._end_slot_locked(pending.slot)  # the slot passes to the child
                pending.child = child
                pending.done.set()
        for child in unwanted:
            threading.Thread(target=self._kill_and_reap, args=(child,), daemon=True).start()

    def _on_failed(self, header: dict[str, Any]) -> None:
        with self._lock:
            pending = self._pending.pop(header.get("id"), None)  # type: ignore[arg-type]
        if pending is not None:
            pending.error = ChildkitError(ErrCode.NCP_ERR_INTERNAL,
                                          f"the launcher could not fork: {header.get('message')}")
            pending.done.set()

    def _on_exited(self, pid: int, info: ChildExitInfo) -> None:
        with self._lock:
            child = self._children.pop(pid, None)
            if child is None:
                return
            child.exit_info = info
            os.close(child.pidfd)
            child.pidfd = -1
            announced = child.announced
            self._cond.notify_all()
        child.exited.set()
        if announced:
            self.exit_callbacks.notify(info)

    def _launcher_lost(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        with self._cond:
            self._state = "idle"
            self._sock = None
            template, self._template = self._template, None
            pending = list(self._pending.values())
            self._pending.clear()
            children = list(self._children.values())
            self._cond.notify_all()
        if template is not None:
            template.close()
        closing = self._closing
        if not closing:
            _log.warning("childkit launcher (pid %d) exited; its children died with it", proc.pid)
        try:
            # Closing: the launcher saw end-of-file and kills and reaps its children
            # before it exits; give it that time. Otherwise it is gone or broken.
            proc.wait(timeout=5.0 if closing else 0.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.close()
        for p in pending:
            p.error = ChildkitError(ErrCode.NCP_ERR_SERVICE_ERROR,
                                    "the launcher exited before starting the child")
            p.done.set()
        # The children die of their own PR_SET_PDEATHSIG (SIGKILL) and are reaped by
        # init; a pidfd turns readable once a process has exited.
        deadline = time.monotonic() + _REAP_TIMEOUT
        for child in children:
            if child.pidfd >= 0:
                select.select([child.pidfd], [], [], max(0.0, deadline - time.monotonic()))
        if self._isolated_asked:
            # Its isolated template, killed with it, left its cgroups: removed before
            # anyone hears of the children's end.
            self._isolated_asked = False
            from childkit.sandbox import sweep

            sweep(patience_s=_SWEEP_PATIENCE_S)
        for child in children:
            self._on_exited(child.pid, ChildExitInfo(child.pid, None, signal.SIGKILL))

    # ------------------------------------------------------------------ shutdown
    def stop(self, timeout: float) -> bool:
        """End the launcher, the manager thread and the exit-callback thread, if no child
        is live or starting (``childkit.shutdown``); the next start begins again from
        scratch. Returns False, stopping nothing, while a child lives or starts."""
        with self._cond:
            if self._children or self._reserved or self._pending \
                    or self._state == "starting":
                return False
            thread = self._thread
            sock = self._sock
            self._stopping = True
            self._closing = True  # the launcher's exit is expected: no warning
            self._cond.notify_all()
        try:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # the launcher sees EOF and exits
                except OSError:
                    pass
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)
        finally:
            with self._cond:
                if thread is None or not thread.is_alive():
                    self._thread = None
                self._stopping = False
                self._closing = False
        self.exit_callbacks.stop(timeout)
        return True

    def shutdown(self) -> None:
        """At interpreter exit: close the launcher's socket and wait for it to reap and
        kill every child, so no child outlives a normally exiting application."""
        with self._lock:
            self._closing = True
            sock = self._sock
            pid = self._launcher_pid
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        deadline = time.monotonic() + 5.0
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(pidfd)

    def forget_after_fork(self) -> None:
        """In a forked copy of the application: close the fds this copy inherited."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for child in self._children.values():
            try:
                os.close(child.pidfd)
            except OSError:
                pass


def check_not_in_child() -> None:
    """Raise ``NCP_ERR_ALREADY_IN_CHILD`` in a child (or the launcher itself)."""
    role = _role.current_role()
    if role != "app":
        raise ChildkitError(
            ErrCode.NCP_ERR_ALREADY_IN_CHILD,
            "a native child process cannot start children of its own"
            if role == "child" else "the childkit launcher cannot start children",
        )


_manager: Manager | None = None
_manager_lock = threading.Lock()


def manager() -> Manager:
    """This process's manager, made on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = Manager()
            atexit.register(_manager.shutdown)
        return _manager


def live_manager() -> Manager | None:
    """This process's manager if it was made, without making one."""
    with _manager_lock:
        return _manager


def _after_fork_in_child() -> None:
    global _manager, _manager_lock
    old, _manager = _manager, None
    _manager_lock = threading.Lock()
    if old is not None and _role.current_role() == "app":
        old.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
