"""Spares: isolated children forked before their order comes, so no start waits for a fork.

An isolated start costs three forks (the isolated template's, the sandbox's init and
the sandboxed process) where a normal start costs one. The isolated template therefore
forks, while idle, a **spare**: a child that closes every fd but its own socket to the
template (and the directories of the cgroup it was born in), asks to die with the
template, and waits. When a fork order comes, the template hands it to the spare instead
of forking: the order, the channel holding the request and what the template prepared
for the sandbox (:func:`childkit.launcher._child.prepared_fds`: the "entered" pipe, a
template root, a fresh network namespace) go over that socket; the spare sets its
cgroup's limits and goes on exactly as a child forked for the order would
(:func:`childkit.launcher._child.run_ordered_child`). The template answers ``forked``
with the spare's pid as for any child.

A spare is a fork of the isolated template at an earlier moment, so its memory holds
less than a child forked for the order would: no request, no environment, and only the
orders (sandbox shapes) that came before it. As root it is born in a cgroup made ahead
(``childkit.sandbox.forking``), named after it, whose limits it sets itself when its
order comes; the template removes the group when it reaps the spare, used or not. A
spare whose template ends dies with it (``PR_SET_PDEATHSIG``, and end of file on its
socket). One spare is kept; a burst of orders forks the rest as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
from collections.abc import Callable
from typing import Any, NoReturn

from childkit.common import _role as _role
from childkit.common import _sysutil as _sysutil
from childkit.launcher import _child as _launcher_child
from childkit.launcher import _protocol as proto

#: How many spares the isolated template keeps.
SPARES = 1
#: What a spare says once it waits for its order.
_READY = b"+"


class Spare:
    """The template's handle of one spare: its pid, a pidfd (watched for its end) and
    the template's end of their socket."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket, grouped: bool) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.sock = sock
        #: Born in a cgroup made ahead (named ``spare<pid>`` until its order).
        self.grouped = grouped
        self._ready = False

    def ready(self) -> bool:
        """Whether it waits for its order (it first takes its own pages: an order sent
        then would wait for that). Never blocks."""
        if not self._ready:
            try:
                self._ready = self.sock.recv(16, socket.MSG_DONTWAIT) == _READY
            except OSError:  # not yet (or it died: its pidfd tells)
                pass
        return self._ready

    def hand(self, order: dict[str, Any], channel: int) -> None:
        """Send ``order`` with its ``channel`` and what :func:`learn_sandbox` prepared
        (the caller's fds stay the caller's). OSError if the spare is gone."""
        fds, template, netns = _launcher_child.prepared_fds()
        proto.send(self.sock, {"op": "spawn", "order": order, "template": template,
                               "netns": netns}, fds=[channel, *fds])
        if self.grouped:  # its group is now a child's: removed when it is reaped
            from childkit.sandbox import forking

            forking.spare_ordered(self.pid)

    def release_unused(self) -> None:
        """After reaping a spare that got no order: remove the group it was born in."""
        if self.grouped:
            from childkit.sandbox import forking

            forking.spare_unused(self.pid)

    def close(self) -> None:
        """Close the template's socket to it (a spare waiting for its order then ends)
        and its pidfd; the caller reaps it."""
        self.sock.close()
        os.close(self.pidfd)


def make(launcher_pid: int, forget_launcher: Callable[[], None]) -> Spare | None:
    """In the isolated template, while idle: fork a spare (as root, in the cgroup made
    ahead, which is then named after it). ``None`` if it cannot be forked."""
    from childkit.sandbox import forking

    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    group = forking.take_group_unset() if _launcher_child.uses_templates() else None
    try:
        pid = os.fork()
    except OSError:
        forking.group_forked(None)
        mine.close()
        theirs.close()
        return None
    if pid == 0:
        mine.detach()  # closed by number below
        _wait_for_order(theirs.detach(), group, launcher_pid, forget_launcher)
    forking.group_forked(pid, spare=True)
    theirs.close()
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # it cannot be watched: it must not live
        mine.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    return Spare(pid, pidfd, mine, group is not None)


def _wait_for_order(sock_fd: int, group: Any, launcher_pid: int,
                    forget_launcher: Callable[[], None]) -> NoReturn:
    """In the spare: wait for an order, then become the child it orders; never returns.
    Ends with status 0 at end of file (the template discarded it or ended), 1 if the
    order is malformed or its sandbox cannot be taken."""
    try:
        _role.set_role("child")
        _sysutil.close_all_fds_except({0, 1, 2, sock_fd,
                                       *(group.fds() if group is not None else ())})
        _sysutil.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != launcher_pid:
            os._exit(0)
        own_pages()
        sock = socket.socket(fileno=sock_fd)
        try:
            sock.send(_READY)
            got = proto.recv(sock)
        finally:
            sock.close()
        if got is None:
            os._exit(0)
        header, _payload, fds = got
        order = header["order"]
        channel = fds[0]
    except BaseException:
        os._exit(1)
    if len(fds) > 1:  # else the template prepared nothing: the sandbox is made as usual
        try:
            _launcher_child.prepare_in_spare(order["sandbox"], fds[1:],
                                             bool(header["template"]), bool(header["netns"]),
                                             group)
        except Exception:
            pass  # made as usual, where what failed here fails again and is reported
    _launcher_child.run_ordered_child(order, channel, launcher_pid, forget_launcher)


_MADV_POPULATE_WRITE = 23  # Linux 5.14
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: Writable private mappings that are not files' but are worth owning ahead.
_OWNED_NAMES = ("[heap]", "[stack]")


def own_pages() -> None:
    """In a spare, while it waits: take its own copy of every page it shares with the
    template and will write (the resident pages of its writable private mappings), so
    that neither the spare, once its order comes, nor the template, while the spare
    lives, stops for a copy-on-write fault on the start path (hundreds of them, about a
    millisecond on a loaded machine). Only pages already resident are taken: a mapping
    reserved but never touched stays unbacked. Costs the spare its own copy of the
    template's written memory (some MB). Never raises; a kernel without
    MADV_POPULATE_WRITE leaves the pages shared."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/self/maps") as maps:
            regions = [line.split() for line in maps]
        for fields in regions:
            perms = fields[1]
            name = fields[5] if len(fields) > 5 else ""
            if "w" not in perms or "p" not in perms or (
                    name and not name.startswith("/") and name not in _OWNED_NAMES):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            _own_resident(libc, start, (end - start) // _PAGE)
    except (OSError, ValueError, AttributeError):
        pass


def _own_resident(libc: ctypes.CDLL, start: int, pages: int) -> None:
    resident = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(pages * _PAGE), resident) != 0:
        return
    run = -1
    for index in range(pages + 1):
        present = index < pages and resident[index] & 1
        if present and run < 0:
            run = index
        elif not present and run >= 0:
            if libc.madvise(ctypes.c_void_p(start + run * _PAGE),
                            ctypes.c_size_t((index - run) * _PAGE), _MADV_POPULATE_WRITE):
                return  # not supported here (EINVAL): leave them shared
            run = -1
