"""A root launcher's stock of fresh network namespaces, made before they are needed.

Creating a network namespace is the dearest part of cloning an isolated child's init
(about a third of a millisecond: the kernel sets up a loopback device and the state of
every protocol). A root launcher therefore keeps :data:`STOCK_SIZE` of them ready, made
while it is idle (:func:`refill_one`, from its request loop, never between a request and
its fork), and hands each one to exactly one isolated child (:func:`take`). That child's
supervisor, still root and outside, ``setns``-es into it and clones the sandbox's init
without ``CLONE_NEWNET`` (:mod:`childkit.sandbox._enter`).

What a child gets is what ``CLONE_NEWNET`` would give it, a new empty namespace (only a
loopback device, down) that no other process ever joined, but owned by the initial user
namespace rather than by the sandbox's: the sandbox's root holds no capability over it
(not even CAP_NET_ADMIN to bring loopback up). Each namespace is used once: the
launcher closes its fd right after forking the child that took it, every other process
forked meanwhile closes it with every fd it was not given, and the child closes it once
joined. An empty stock, or any failure, leaves the child to ``CLONE_NEWNET`` as before;
a namespace is never shared or reused.

The launcher makes each namespace itself: it ``unshare``-s one, opens it, and
``setns``-es back into its own (no thread, no helper process: the launcher forks
children and stays single-threaded). Only a failure to return home could leave it in the
wrong namespace; :func:`refill_one` then raises, and the launcher must end rather than
fork another child there.
"""

from __future__ import annotations

import os

from childkit.sandbox import _syscalls

#: Namespaces kept ready: enough for back-to-back starts, few enough to cost little
#: (an unused network namespace holds a few tens of KiB of kernel memory).
STOCK_SIZE = 2

_NS_PATH = "/proc/thread-self/ns/net"

_stock: list[int] = []
#: The launcher's own network namespace, to return to after making one.
_home: int | None = None
#: Set when the kernel refused to make one: the launcher stops trying (no busy loop).
_refused = False


class HomeLost(RuntimeError):
    """The launcher could not return to its own network namespace after making one."""


def wanted() -> bool:
    """Whether :func:`refill_one` should be called (the stock is short and the kernel has
    not refused)."""
    return not _refused and len(_stock) < STOCK_SIZE


def refill_one() -> None:
    """In the single-threaded, root launcher, while it has nothing else to do: add one
    fresh network namespace to the stock. A refusal by the kernel (no CAP_SYS_ADMIN, no
    network namespaces, out of memory) is not raised: the stock stays as it is and
    :func:`wanted` says no more from then on. Raises :class:`HomeLost` if this process
    could not return to its own network namespace (the caller must not fork again)."""
    global _home, _refused
    try:
        if _home is None:
            _home = os.open(_NS_PATH, os.O_RDONLY | os.O_CLOEXEC)
        _syscalls.unshare(_syscalls.CLONE_NEWNET)
    except OSError:
        _refused = True
        return
    fresh: int | None = None
    try:
        fresh = os.open(_NS_PATH, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        _refused = True
    finally:
        try:
            _syscalls.setns(_home, _syscalls.CLONE_NEWNET)
        except OSError as exc:
            if fresh is not None:
                os.close(fresh)
            _refused = True
            raise HomeLost(f"cannot return to the launcher's network namespace: {exc}") \
                from None
    if fresh is not None:
        _stock.append(fresh)


def take() -> int | None:
    """The fd of a fresh network namespace, now the caller's to close (once the one child
    it is meant for was forked), or ``None`` if the stock is empty."""
    return _stock.pop() if _stock else None


def stocked() -> tuple[int, ...]:
    """The fds now in stock (the launcher's; for tests)."""
    return tuple(_stock)


def clear() -> None:
    """Close every fd in stock and the home fd (the stock may be refilled later)."""
    global _home
    while _stock:
        os.close(_stock.pop())
    home, _home = _home, None
    if home is not None:
        os.close(home)
