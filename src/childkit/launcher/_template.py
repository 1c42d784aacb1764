"""The launcher: a pre-forked template process that forks children on request.

``python -m childkit.launcher._template CONTROL_FD PARENT_PID`` (or its ``-c`` equivalent, which
first puts the application's copy of childkit on ``sys.path``) is started by the application's
manager (:mod:`childkit.process._manager`), one per application process, as a fresh interpreter
(never a fork of the possibly multi-threaded application). Like HarmonyOS appspawn or
Android's zygote it imports, once, what children need (childkit, ctypes, the IPC kit and
the application's preload modules, see :func:`childkit.set_preload_modules`), freezes
those objects out of the garbage collector's reach (so children do not copy the pages
on write by collecting them), and then forks a child per request. Forking an
initialised interpreter costs about a millisecond; a fresh one costs tens.

The launcher stays single-threaded (forking a threaded process is unsafe), so its
loop is a ``poll`` over the control socket and one pidfd per live child:

* a readable pidfd means that child exited: it is reaped at once (no zombie stays)
  and ``exited`` with the wait status goes to the application;
* a spawn request is forked (:mod:`childkit.launcher._child` runs in the child) and
  answered with ``forked`` and a pidfd of the child, which lets the application signal
  it without pid-reuse races. Requests that arrive together (a burst of starts) are
  taken together and forked back to back, then answered in one record: between forks
  the launcher writes as few pages as it can, since each page it writes after a fork
  is copied.

It dies with the application: ``PR_SET_PDEATHSIG`` (the manager starts it from its
own long-lived thread, since the signal follows the parent *thread*) and end-of-file
on the control socket. On end-of-file it kills and reaps its children first; on
``SIGKILL`` its children get their own ``PR_SET_PDEATHSIG``. So no child outlives the
application. A record it cannot parse also ends it (after killing its children); the
manager then starts a fresh launcher on next use. The protocol is in
:mod:`childkit.launcher._protocol`.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import signal
import socket
import sys
import time
from typing import Any

from childkit.common import _role as _role
from childkit.common import _sysutil as _sysutil
from childkit.common._errors import ErrCode  # noqa: F401

# Imported here so that every child inherits them already initialised.
from childkit.entry import _args as _args
from childkit.launcher import _child as _launcher_child
from childkit.launcher import _isolated, _spare
from childkit.launcher import _protocol as proto

#: The most waiting requests taken (and spawns forked back to back) at once: a large
#: burst is answered in slices, so the application starts on the first children's
#: connections while the launcher forks the next ones. One ``forked`` record answers a
#: batch, so it must fit the pidfds of all of them.
MAX_BATCH = 16
assert MAX_BATCH <= proto.MAX_RECORD_FDS
#: The isolated template's idle work (refills) waits for the children it just forked to
#: be inside their sandboxes, but no longer than this.
ENTER_GRACE_S = 0.25


class Launcher:
    """The template's state: the control socket and its live children (pidfd -> pid)."""

    def __init__(self, sock: socket.socket, isolated: bool = False,
                 answers: socket.socket | None = None,
                 orders: socket.socket | None = None) -> None:
        self._sock = sock
        #: Where ``forked``, ``failed`` and ``exited`` go: the application's socket (the
        #: isolated template writes them there itself, sparing the start a relay).
        self._answers = answers or sock
        self._sock_fd = sock.fileno()
        self._children: dict[int, int] = {}
        self._poll = select.poll()
        self._poll.register(self._sock_fd, select.POLLIN)
        #: Where the application sends isolated requests itself (a request in a channel
        #: and a fork order: :func:`childkit.launcher._isolated.send_order`): the
        #: launcher starts the isolated template once one waits there and hands it this
        #: socket; the template reads its fork orders from it.
        self._orders = orders
        if orders is not None:
            self._poll.register(orders.fileno(), select.POLLIN)
        #: This process is the isolated template (it gets fork orders, not requests).
        self._is_isolated = isolated
        #: The launcher's isolated template, started on the first isolated request.
        self._isolated = _isolated.IsolatedTemplate()
        self._sys_path: list[str] = []
        self._preloaded: list[str] = []
        #: Read ends of the "entered" pipes of isolated children still entering their
        #: sandbox (:func:`childkit.launcher._child.learn_sandbox`): idle work waits.
        self._entering: set[int] = set()
        #: When idle work goes ahead anyway (a child slow to enter must not stop it).
        self._refill_at = 0.0
        #: Isolated children forked ahead of their orders, by pidfd (:mod:`_spare`).
        self._spares: dict[int, _spare.Spare] = {}
        #: Whether a fork order came (spares are made only once one has).
        self._ordered = False

    # ------------------------------------------------------------------ set-up
    def configure(self) -> bool:
        """Read the ``config`` record, import the preload modules, say ``ready``."""
        got = proto.recv(self._sock)
        if got is None:
            return False
        header, _payload, fds = got
        proto.close_fds(fds)
        if header["op"] != "config":
            raise proto.ProtocolError(f"expected config, got {header['op']!r}")
        sys.path[:] = [p for p in header.get("sys_path", []) if isinstance(p, str)]
        self._sys_path = list(sys.path)
        self._preloaded = [str(name) for name in header.get("preload", [])]
        errors = self._preload(header.get("preload", []))
        if self._is_isolated:
            self._prepare_sandbox()  # it forks isolated children only
        self._freeze()
        proto.send(self._sock, {"op": "ready", "pid": os.getpid(), "preload_errors": errors})
        return True

    @staticmethod
    def _preload(modules: list[Any]) -> list[str]:
        errors = []
        for name in modules:
            try:
                importlib.import_module(str(name))
            except BaseException as exc:  # a broken module must not kill the template
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        return errors

    @staticmethod
    def _freeze() -> None:
        # Collect once, then move everything to the permanent generation: a child's
        # collector then never touches (and so never copies) the template's objects.
        gc.collect()
        gc.freeze()

    # ------------------------------------------------------------------ main loop
    def run(self) -> None:
        """Serve requests until the application goes away; then kill and reap children."""
        refill = False
        try:
            while True:
                # While there is work, poll only looks (timeout 0): stocking fresh
                # network namespaces and cgroups for isolated children is done when
                # nothing waits, and once the children just forked are inside their
                # sandboxes (on a loaded machine it would delay their start).
                events = self._poll.poll(self._idle_timeout() if refill else None)
                if not events and refill:
                    self._stop_waiting_for_entries()
                    refill = self._idle_work()
                    continue
                for fd, _events in events:
                    if fd in self._entering:
                        self._entered(fd)
                    elif fd == self._sock_fd:
                        if not self._on_request(self._sock):
                            return
                        refill = True
                    elif self._orders is not None and fd == self._orders.fileno():
                        self._on_orders()
                        refill = True
                    elif self._isolated.sock is not None and fd == self._isolated.sock.fileno():
                        if not self._isolated.pass_on(self._sock):
                            return  # the isolated template died, and its children: end
                    elif self._reap(fd):
                        refill = True  # a spare ended: another is made when idle
        except (BrokenPipeError, ConnectionResetError):
            return  # the application is gone
        finally:
            self._kill_all()

    def _idle_work(self) -> bool:
        """One piece of idle work (a spare, a cgroup or a network namespace made ahead);
        returns whether more is wanted."""
        spare_wanted = (self._is_isolated and self._ordered
                        and len(self._spares) < _spare.SPARES)
        if spare_wanted and not _launcher_child.ahead_wanted():  # born in a fresh group
            spare = _spare.make(os.getpid(), self._forget)
            if spare is None:
                return _launcher_child.refill_netns()
            self._spares[spare.pidfd] = spare
            self._poll.register(spare.pidfd, select.POLLIN)
            return True
        return _launcher_child.refill_netns() or spare_wanted

    def _take_spare(self, ready: bool = True) -> _spare.Spare | None:
        # A spare leaves the pool for good: watched from now on as a child. One still
        # taking its pages is not taken for an order (a fork is quicker then).
        for pidfd, spare in self._spares.items():
            if not ready or spare.ready():
                del self._spares[pidfd]
                self._poll.unregister(pidfd)
                return spare
        return None

    def _drop_spare(self, spare: _spare.Spare) -> None:
        """End a spare (its order is not coming) and reap it; remove its cgroup."""
        spare.close()
        try:
            os.kill(spare.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(spare.pid, 0)
        spare.release_unused()

    def _discard_spares(self) -> None:
        while (spare := self._take_spare(ready=False)) is not None:
            self._drop_spare(spare)

    def _to_spare(self, header: dict[str, Any], channel: int) -> tuple[int, int | None] | None:
        """Hand a fork order to a spare: its pid and the read end of its "entered" pipe,
        or ``None`` if there is no spare (or it was gone: it is reaped)."""
        spare = self._take_spare()
        if spare is None:
            return None
        entered = _launcher_child.learn_sandbox(header["sandbox"], spare=True)
        try:
            spare.hand(header, channel)
        except (OSError, proto.RecordTooLarge):
            _launcher_child.sandbox_forked()
            if entered is not None:
                os.close(entered)
            self._drop_spare(spare)
            return None
        _launcher_child.sandbox_forked(spare.pid)
        spare.close()  # it has its order; from now on it is watched as any child
        return spare.pid, entered

    @property
    def orders(self) -> socket.socket | None:
        """The application's socket for isolated requests, while this process holds it."""
        return self._orders

    def _idle_timeout(self) -> int:
        """How long poll waits before idle work (ms): not at all, unless a child is still
        entering its sandbox (then until it is, or at most :data:`ENTER_GRACE_S`)."""
        if not self._entering:
            return 0
        return max(0, int((self._refill_at - time.monotonic()) * 1000) + 1)

    def _watch_entering(self, entered: int | None) -> None:
        # Idle work waits until that child is inside its sandbox (or ENTER_GRACE_S).
        if entered is not None:
            self._entering.add(entered)
            self._poll.register(entered, select.POLLIN)
            self._refill_at = time.monotonic() + ENTER_GRACE_S

    def _entered(self, fd: int) -> None:
        # End of file (or a stray write): that child is inside its sandbox, or gone.
        self._entering.discard(fd)
        self._poll.unregister(fd)
        os.close(fd)

    def _stop_waiting_for_entries(self) -> None:
        for fd in list(self._entering):
            self._entered(fd)

    def _on_orders(self) -> None:
        """Fork orders wait on the application's orders socket: in the isolated template,
        take them; in the launcher, start the template and hand it the socket (the
        orders stay queued for it)."""
        assert self._orders is not None
        if self._is_isolated:
            if not self._on_request(self._orders):  # the application closed it
                self._poll.unregister(self._orders.fileno())
                self._orders.close()
                self._orders = None
            return
        self._poll.unregister(self._orders.fileno())
        orders, self._orders = self._orders, None
        try:
            self._start_isolated(orders.fileno())
        except OSError as exc:  # the waiting starts fail; later sends fail with EPIPE
            records, _open = proto.recv_waiting(orders, MAX_BATCH)
            for header, _payload, fds in records:
                proto.close_fds(fds)
                proto.send(self._sock, {"op": "failed", "id": header.get("id"), "message":
                                        f"cannot start the isolated template: {exc}"})
        finally:
            orders.close()  # the template has its copy (or there is none: sends fail)

    def _start_isolated(self, orders: int | None = None) -> None:
        """Start the isolated template (handing it the application's ``orders`` socket)
        and watch it. OSError if it cannot be started."""
        self._isolated.start(self._sys_path, self._preloaded, self._sock_fd, orders)
        assert self._isolated.sock is not None
        self._poll.register(self._isolated.sock.fileno(), select.POLLIN)

    def _on_request(self, sock: socket.socket) -> bool:
        # Every request already waiting is taken at once, so that a burst of starts is
        # forked back to back (see _spawn_batch); other requests keep their place.
        records, still_open = proto.recv_waiting(sock, MAX_BATCH)
        batch: list[proto.Record] = []
        try:
            while records:
                header, payload, fds = records.pop(0)
                if header["op"] == "spawn":
                    batch.append((header, payload, fds))
                    continue
                self._spawn_batch(batch)
                proto.close_fds(fds)
                if header["op"] != "preload":
                    raise proto.ProtocolError(f"unknown request {header['op']!r}")
                errors = self._preload(header.get("modules", []))
                self._discard_spares()  # forked before these modules were imported
                self._preloaded.extend(str(name) for name in header.get("modules", []))
                self._isolated.preload(header.get("modules", []))
                _launcher_child.forget_entries()
                self._freeze()
                proto.send(self._sock, {"op": "preloaded", "errors": errors})
            self._spawn_batch(batch)
        finally:
            # Only after an error: the requests not handled yet give back their fds.
            for _header, _payload, fds in batch + records:
                proto.close_fds(fds)
        return still_open

    def _spawn_batch(self, batch: list[proto.Record]) -> None:
        """Fork a child for each spawn request in ``batch`` (emptied), back to back; then
        answer them all.

        Between two forks the launcher does as little as it can: every page it writes
        after a fork is copied (the new child shares it), and each answer wakes the
        application, which then competes for the CPU with the next fork.
        """
        forked: list[tuple[Any, int]] = []  # (request id, pid)
        try:
            while batch:
                header, payload, fds = batch.pop(0)
                request_id = header.get("id")
                if self._is_isolated and not self._sandbox_ready:
                    self._prepare_sandbox()
                entered: int | None = None
                try:
                    if self._is_isolated:  # a fork order: the request is in its channel
                        _check_order(header, fds)
                        self._ordered = True
                        handed = self._to_spare(header, fds[0])
                        if handed is not None:
                            pid, entered = handed
                            proto.close_fds(fds)  # the spare has its copies
                            self._watch_entering(entered)
                            forked.append((request_id, pid))
                            continue
                        entered = _launcher_child.learn_sandbox(header["sandbox"])
                    else:
                        _check_spawn(header, fds)
                        if header.get("sandbox") is not None:
                            self._relay_isolated(header, payload, fds)
                            proto.close_fds(fds)  # the channel holds copies
                            continue
                        _launcher_child.learn_entry(header["entry"], header["mode"])
                    pid = os.fork()
                except (proto.ProtocolError, OSError) as exc:
                    _launcher_child.sandbox_forked()
                    if entered is not None:
                        os.close(entered)
                    proto.close_fds(fds)
                    proto.send(self._answers, {"op": "failed", "id": request_id,
                                            "message": f"{type(exc).__name__}: {exc}"})
                    continue
                if pid == 0:
                    if self._is_isolated:
                        _launcher_child.run_ordered_child(header, fds[0], os.getppid(),
                                                          self._forget)
                    _launcher_child.run_child(header, payload, fds, os.getppid(), self._forget)
                _launcher_child.sandbox_forked(pid)  # its network namespace is the child's
                proto.close_fds(fds)  # the child has its copies
                self._watch_entering(entered)
                forked.append((request_id, pid))
        finally:
            # Whatever happened, every forked child is watched (reaped, killed at the end).
            answers: list[list[Any]] = []
            pidfds: list[int] = []
            for request_id, pid in forked:
                pidfd = os.pidfd_open(pid)
                self._children[pidfd] = pid
                self._poll.register(pidfd, select.POLLIN)
                answers.append([request_id, pid])
                pidfds.append(pidfd)
        if answers:
            proto.send(self._answers, {"op": "forked", "children": answers}, fds=pidfds)

    _sandbox_ready = False

    def _relay_isolated(self, header: dict[str, Any], payload: bytes,
                        fds: list[int]) -> None:
        """Pass an isolated spawn request on to the isolated template (started now if it
        is not running); ``fds`` stay the caller's. Raises OSError or
        :class:`proto.ProtocolError` if it cannot be passed on."""
        from childkit.sandbox import SandboxConfig

        try:
            if not self._isolated.started:
                self._start_isolated()
            own = dict(header, env=_isolated.kept_environment(header, SandboxConfig.keep_env))
            self._isolated.relay(own, payload, fds)
        except proto.RecordTooLarge as exc:
            raise proto.ProtocolError(str(exc)) from None

    def _prepare_sandbox(self) -> None:
        # Once, in the template: find libseccomp, compile the filter, resolve the
        # interpreter's paths. Every isolated child forked later inherits the result
        # instead of redoing it.
        self._sandbox_ready = True
        try:
            from childkit import sandbox

            sandbox.preload()
        except Exception:
            return  # each child's enter() reports what is missing
        self._freeze()

    def _forget(self) -> None:
        # In a child: drop the socket object without closing its fd (the child closes
        # all fds by number), so its finaliser can never close a reused number.
        self._sock.detach()
        if self._answers is not self._sock:
            self._answers.detach()
        if self._orders is not None:
            self._orders.detach()
        self._children.clear()

    def _reap(self, pidfd: int) -> bool:
        """Reap the child ``pidfd`` watches and say so to the application; returns
        whether it was a spare (ended before its order came: no one's child, reaped
        silently)."""
        if pidfd in self._spares:
            self._poll.unregister(pidfd)
            self._drop_spare(self._spares.pop(pidfd))
            return True
        pid = self._children.pop(pidfd)
        self._poll.unregister(pidfd)
        os.close(pidfd)
        _pid, status = os.waitpid(pid, 0)
        self._release(pid)
        proto.send(self._answers, {"op": "exited", "pid": pid, "status": status})
        return False

    def _release(self, pid: int) -> None:
        if self._sandbox_ready:  # an isolated child's cgroup, if its supervisor left it
            from childkit import sandbox

            sandbox.release(pid)

    def _kill_all(self) -> None:
        self._stop_waiting_for_entries()
        self._discard_spares()
        self._isolated.close()  # it kills and reaps its own children
        _launcher_child.sandbox_done()
        for pidfd in self._children:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass  # already gone
        for pidfd, pid in self._children.items():
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            if self._sandbox_ready:
                from childkit import sandbox

                sandbox.release(pid)
            os.close(pidfd)
        self._children.clear()


def _check_spawn(header: dict[str, Any], fds: list[int]) -> None:
    """Check a spawn request's shape (the application builds it; this catches bugs)."""
    for key, kind in (("mode", str), ("entry", str), ("process_name", str), ("cwd", str),
                      ("fd_names", list), ("sys_path", list)):
        if not isinstance(header.get(key), kind):
            raise proto.ProtocolError(f"spawn request field {key!r} is missing or not {kind}")
    env = header.get("env")
    if env is not None and not (
        isinstance(env, dict) and isinstance(env.get("set"), dict)
        and isinstance(env.get("unset"), list)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env["set"].items())
        and all(isinstance(k, str) for k in env["unset"])
    ):
        raise proto.ProtocolError("spawn request field 'env' is not {set: {str: str}, "
                                  "unset: [str]}")
    wanted = 1 + (len(header["fd_names"]) if header["mode"] == "args" else 2)
    if header["mode"] not in ("args", "ipc") or len(fds) != wanted:
        raise proto.ProtocolError(
            f"spawn request mode {header['mode']!r} came with {len(fds)} fds, not {wanted}"
        )


def _check_order(header: dict[str, Any], fds: list[int]) -> None:
    """Check a fork order's shape (the launcher builds it; this catches bugs)."""
    if len(fds) != 1 or not isinstance(header.get("sandbox"), dict):
        raise proto.ProtocolError(f"a fork order needs a sandbox and 1 fd, not {len(fds)}")


def _init_proctitle(title: str) -> None:
    # setproctitle's first call moves argv and environ aside to make room for long
    # titles (about 2 ms); doing it here once spares every child that cost.
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
    # Once initialised, setproctitle also sets the comm name on Linux (1.3 does): if a
    # second call shows that here, children need no prctl of their own for it.
    setproctitle.setproctitle(title)
    try:
        with open("/proc/self/comm", "rb") as f:
            comm = f.read().strip()
    except OSError:
        comm = b""
    _launcher_child.title_sets_comm = comm == title.encode()[:_sysutil.COMM_LIMIT]


def main(argv: list[str]) -> int:
    """Entry point: ``argv`` is ``[prog, CONTROL_FD, PARENT_PID, ORDERS_FD]`` (the last:
    the application's socket for isolated requests), or, for the isolated template a
    launcher starts (:mod:`childkit.launcher._isolated`), ``[prog, CONTROL_FD,
    PARENT_PID, "isolated", ANSWERS_FD, ORDERS_FD]``."""
    _role.set_role("launcher")
    control_fd, parent_pid = int(argv[1]), int(argv[2])
    isolated = argv[3:4] == [_isolated.ROLE]
    answers = socket.socket(fileno=int(argv[4])) if isolated and len(argv) > 4 else None
    # The application's socket for isolated requests (its fork orders, in the template).
    at = 5 if isolated else 3
    orders = socket.socket(fileno=int(argv[at])) if len(argv) > at else None
    # Die with the application's manager thread; if it is already gone, stop now.
    _sysutil.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:
        return 1
    # Ctrl-C in a terminal signals the whole process group; the application decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _init_proctitle("childkit-isolated" if isolated else "childkit-launcher")
    # After the title, which may have set it too.
    _sysutil.set_comm("childkit-isolat" if isolated else "childkit-launch")
    sock = socket.socket(fileno=control_fd)
    launcher = Launcher(sock, isolated, answers, orders)
    try:
        if launcher.configure():
            launcher.run()
    finally:
        sock.close()
        for other in (answers, launcher.orders):
            if other is not None:
                other.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
