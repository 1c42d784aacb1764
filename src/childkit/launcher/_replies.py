"""An IPC-mode child's replies in flight hold its exit (bounded).

A child ends when ``main_proc()`` returns, and a request often makes it return: the
README's worker sets an event in ``on_remote_request`` for its "quit" code. The handler
returns, the IPC work thread goes on to write the reply, and meanwhile the main thread
wakes and exits the process, killing the reply before it leaves: the caller got
``DeadRemoteObjectError`` for a request that was answered. So the child's exit path waits,
at most :data:`DRAIN_TIMEOUT` seconds, for

1. every request its root stub is running to return (:meth:`InFlight.wrap` counts them);
2. every thread that returned from one lately to reach a blocking wait in the kernel
   (epoll, poll, recvmsg: the reply has been written by then). Read from
   ``/proc/self/task/<tid>``: a thread sleeping elsewhere than on a futex is waiting for
   I/O; one on a futex may only want the GIL, so it must still sleep after this thread
   gave the GIL up for a moment (it then waits for a lock of its own, not to send).

The wait is bounded so that a handler that never returns cannot keep the child alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Longest an ending child waits for the replies of requests it was answering.
DRAIN_TIMEOUT = 2.0
#: How long ago a handler may have returned for its thread to be watched at exit.
_RECENT = 1.0
#: How long this thread gives the GIL up between two looks at a futex-waiting thread.
_GIL_GAP = 0.002

Handler = Callable[..., object]


class InFlight:
    """Counts the requests a stub is answering and remembers which threads ran them.

    Each thread that runs a request keeps its own *slot*: how many requests it is running
    (a handler may be re-entered on its thread by a nested call) and when it last returned
    from one. Only its thread writes a slot, so the count needs no lock; the drain, which
    runs once, at exit, reads them all. The count is on every request's path, in the one
    thread that serves a connection's channels: a lock and a condition cost about 2 us per
    request there, a slot about 0.2 us.
    """

    def __init__(self) -> None:
        #: native thread id -> [requests running, monotonic time of the last return]
        self._slots: dict[int, list[float]] = {}
        self._local = threading.local()

    def wrap(self, handler: Handler) -> Handler:
        """``handler`` (a bound ``on_remote_request``) counted while it runs."""
        local = self._local
        slots = self._slots
        monotonic = time.monotonic

        # (The kit calls it with its four arguments, positionally: ``_stub.invoke_stub``.)
        def counted(code: object, data: object, reply: object, option: object) -> object:
            try:
                slot = local.slot
            except AttributeError:  # this thread's first request
                slot = local.slot = slots[threading.get_native_id()] = [0, 0.0]
            slot[0] += 1
            try:
                return handler(code, data, reply, option)
            finally:
                slot[0] -= 1
                slot[1] = monotonic()

        return counted

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Wait until no request is running and the threads that answered one lately have
        sent their replies, at most ``timeout`` seconds. Returns whether they all did."""
        deadline = time.monotonic() + timeout
        me = threading.get_native_id()
        while any(slot[0] for tid, slot in list(self._slots.items()) if tid != me):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_GIL_GAP)  # (once, at exit: a handler's return is not signalled)
        now = time.monotonic()
        tids = {tid for tid, slot in list(self._slots.items()) if now - slot[1] < _RECENT}
        tids.discard(me)
        futex_seen: set[int] = set()
        while tids:
            for tid in list(tids):
                state = _wait_state(tid)
                if state == "io" or (state == "futex" and tid in futex_seen):
                    tids.discard(tid)
                elif state == "futex":
                    futex_seen.add(tid)
                else:
                    futex_seen.discard(tid)
            if not tids:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_GIL_GAP)  # lets a thread that only wanted the GIL run on
        return True


def _wait_state(tid: int) -> str:
    """``"io"`` if thread ``tid`` of this process sleeps on anything but a futex (or has
    ended), ``"futex"`` if it sleeps on one, ``"running"`` otherwise."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "io"  # ended: nothing of it is in flight
    state = stat[stat.rfind(b")") + 2:][:1]
    if state not in (b"S", b"D"):
        return "running"
    try:
        with open(f"/proc/self/task/{tid}/wchan", "rb") as f:
            wchan = f.read()
    except OSError:
        wchan = b""
    if wchan.startswith(b"futex") or wchan in (b"", b"0"):
        return "futex"  # (an unknown wait is treated as one: it must last to count)
    return "io"
