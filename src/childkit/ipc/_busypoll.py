"""Adaptive busy polling: look at a socket for a few microseconds before sleeping on it.

A thread that sleeps in ``recvmsg`` or ``epoll_wait`` pays for its wake-up when the data
comes: the scheduler, an inter-processor interrupt, on a virtual machine a halted vCPU's
exit and re-entry, and then caches gone cold. For a request/reply that costs more than the
work on both sides together. A thread that polls the socket (``poll`` with a zero timeout)
for a little while instead sees the data as soon as it lands. That is the trade Linux makes
with ``busy_poll`` and KVM with halt polling (``halt_poll_ns``), and this module copies
KVM's rule for choosing how long to poll:

- each waiter keeps a *window*; it polls that long, then sleeps as before;
- when the data came while polling, the window was right;
- when it came after the window but within the maximum, polling a little longer would have
  caught it: the window doubles (from :data:`START_NS`), up to the maximum;
- when it came later than the maximum, polling was CPU thrown away: the window halves, and
  below :data:`START_NS` it is zero (no polling) until a short wait grows it again.

So a ping-pong of small requests polls, and a caller of slow requests, or a server whose
peer calls now and then, soon stops.

Polling only pays while a CPU would otherwise idle. When the machine has more runnable
tasks than CPUs, a polling thread takes the CPU that its peer (or anyone else) needs, and a
round trip gets many times slower, not faster. So before polling, a waiter looks at how
many tasks are running or ready to run right now (the fourth field of ``/proc/loadavg``,
sampled at most every :data:`LOAD_SAMPLE_NS`) and sleeps at once while there are more than
CPUs in two samples running; a poller that finds itself descheduled in the middle of
polling takes that as the same sign. Either way the process's waiters sleep at once until
the next sample. (This bounds the harm; it cannot see a peer that is about to wake on the
CPU we poll on, so on a machine whose other CPUs are busy polling still costs a little:
see docs/ipc.md.)

Polling is off by default on a machine (or an affinity mask) with one CPU, where it could
only delay the peer it waits for. The maximum comes from the ``CHILDKIT_BUSY_POLL_US``
environment variable (read at import; children inherit it) or
``Skeleton.set_busy_poll_us``; 0 turns polling off.

This module knows nothing of frames or connections: :func:`spin` is handed a ``poll``
function (or the fd it watches).

May import: ``_accel`` only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from childkit.ipc import _accel

#: The default maximum window, in microseconds.
DEFAULT_MAX_US = 100
#: The largest maximum window that may be set, in microseconds.
MAX_US = 10_000
#: The window a short wait grows a zero window to, in nanoseconds.
START_NS = 10_000
#: The environment variable that sets the maximum window (microseconds) at import.
ENV_VAR = "CHILDKIT_BUSY_POLL_US"
#: How often, at most, the machine's count of runnable tasks is read while waiters poll.
LOAD_SAMPLE_NS = 2_000_000
#: A gap this long between two looks while polling means the poller lost its CPU.
PREEMPTED_NS = 50_000
_CROWDED = 1 << 30  # the count when it cannot be read: never poll then

#: The rule's one clock (``time.perf_counter_ns``, CLOCK_MONOTONIC): every waiter reads the
#: time through :func:`now_ns`, so a test can replace it with a fake one.
_now_ns = time.perf_counter_ns


def now_ns() -> int:
    """The time on the rule's clock, in nanoseconds (what ``started_ns`` arguments mean)."""
    return _now_ns()


def _sample_fresh(now_ns: int) -> bool:
    # A sample is fresh for LOAD_SAMPLE_NS after it was taken, and never when it lies in
    # the future of ``now_ns``: a sample stamped by another clock (a fake one, or a clock
    # that started later) must be retaken, not trusted until that clock catches up.
    return 0 <= now_ns - _sampled_ns < LOAD_SAMPLE_NS
# The polling loop's C twin (childkit/ipc/_speedups.c), if built and not turned off.
_poll_readable: Callable[[int, int, int], int] | None = (
    _accel.speedups.poll_readable if _accel.speedups is not None else None)


def _initial_max_ns() -> int:
    text = os.environ.get(ENV_VAR, "").strip()
    if text:  # an explicit choice wins, even on one CPU
        try:
            us = int(text)
        except ValueError:
            us = -1
        if 0 <= us <= MAX_US:
            return us * 1000
        logging.getLogger("childkit.ipc").warning(
            "%s=%r is not a whole number of microseconds in 0..%d; using the default",
            ENV_VAR, text, MAX_US)
    try:
        if len(os.sched_getaffinity(0)) < 2:
            return 0
    except (AttributeError, OSError):  # pragma: no cover - no affinity call
        return 0
    return DEFAULT_MAX_US * 1000


# The process's maximum window, read by every waiter at each wait (a setting, not state
# shared between waiters: each waiter adapts its own window).
_max_ns = _initial_max_ns()
# The last sample of the machine's load, shared by the process's waiters (a cache of a
# fact about the machine; races between threads only make a sample a little older).
_cpus = os.cpu_count() or 1
_sampled_ns = -LOAD_SAMPLE_NS
_crowded = False
_over_before = False  # whether the last sample had more runnable tasks than CPUs


def runnable_tasks() -> int:
    """Tasks running or ready to run on the whole machine now, this one included (from
    ``/proc/loadavg``); a huge number when that cannot be read (in a sandbox without
    ``/proc``, say), so that nobody polls blind."""
    try:
        fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 256)
        finally:
            os.close(fd)
        return int(text.split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return _CROWDED


def machine_crowded(now_ns: int) -> bool:
    """Whether more tasks want to run than there are CPUs, in this sample and the one
    before (sampled at most every :data:`LOAD_SAMPLE_NS`; ``now_ns`` is
    ``time.perf_counter_ns()``). One sample over is not enough: a task that runs for a
    moment (a kernel worker, a timer's thread) would stop polling for a whole sample
    period, while a task that keeps a CPU busy is still there at the next sample."""
    global _sampled_ns, _crowded, _over_before
    if not _sample_fresh(now_ns):
        _sampled_ns = now_ns
        over = runnable_tasks() > _cpus
        _crowded = over and _over_before
        _over_before = over
    return _crowded


def crowded_now() -> bool:
    """Whether the machine counts as crowded now, so that no waiter polls: the last sample
    while it is fresh (it may come from :func:`lost_cpu`), else a new one
    (:func:`machine_crowded`). For a caller choosing between paths, the one that is
    cheapest when nobody polls (``Caller.call``); waiters use :meth:`BusyPoll.poll_end`."""
    now_ns = _now_ns()
    if 0 <= now_ns - _sampled_ns < LOAD_SAMPLE_NS:
        return _crowded
    return machine_crowded(now_ns)


def nobody_polls() -> bool:
    """Whether no waiter of this process polls now: polling is off (a maximum window of 0:
    set so, or the default on one CPU) or the machine counts as crowded
    (:func:`crowded_now`). For a caller choosing between paths, the one that is cheapest
    when nobody polls (``Caller.prefer_channel``)."""
    return not _max_ns or crowded_now()


def lost_cpu(now_ns: int) -> None:
    """A poller lost its CPU in the middle of polling: someone else needed it. Count the
    machine as crowded until the next sample."""
    global _sampled_ns, _crowded
    _crowded = True
    _sampled_ns = now_ns


def reload_from_environment() -> None:
    """Read ``CHILDKIT_BUSY_POLL_US`` again (a launcher child whose environment was just
    brought up to date with the parent's)."""
    global _max_ns
    _max_ns = _initial_max_ns()


def set_max_us(max_us: int) -> None:
    """Poll at most ``max_us`` microseconds (0..:data:`MAX_US`; 0: never) from each
    waiter's next wait on (``Skeleton.set_busy_poll_us`` checks the argument)."""
    global _max_ns
    _max_ns = max_us * 1000


def max_us() -> int:
    """The current maximum polling window, in microseconds (0: polling is off)."""
    return _max_ns // 1000


def spin(poll: Callable[[int], list[tuple[int, int]]], started_ns: int, end_ns: int,
         fd: int = -1) -> bool:
    """Call ``poll(0)`` until it reports something (True) or ``end_ns`` passes (False).
    Looks at least once. Two looks more than :data:`PREEMPTED_NS` apart (counted from
    ``started_ns``) mean this thread lost its CPU: :func:`lost_cpu`, and False. With the
    ``fd`` that ``poll`` watches, ``_speedups.poll_readable`` does it in C."""
    if fd >= 0 and _poll_readable is not None:
        seen = _poll_readable(fd, end_ns, PREEMPTED_NS)
        if seen < 0:
            lost_cpu(_now_ns())
        return seen > 0
    last = started_ns
    while True:
        if poll(0):
            return True
        now = _now_ns()
        if now - last > PREEMPTED_NS:
            lost_cpu(now)
            return False
        if now >= end_ns:
            return False
        last = now


class BusyPoll:
    """One waiter's adaptive window. Not locked: one thread uses it at a time, and a race
    between two would only blur the heuristic, never lose data (polling decides nothing
    but how long to look before sleeping)."""

    __slots__ = ("window_ns",)

    def __init__(self) -> None:
        self.window_ns = min(START_NS * 4, _max_ns)

    def poll_end(self, started_ns: int) -> int:
        """When a wait that began at ``started_ns`` stops polling, or 0 if it should not
        poll at all (polling off, a zero window, a crowded machine). The caller then polls
        until that time: with :func:`spin`, or in C along with its I/O
        (``_speedups.exchange``)."""
        limit = _max_ns
        if not limit:  # turned off since this waiter last adapted
            self.window_ns = 0
            return 0
        window = self.window_ns
        # Polling would take a CPU someone needs? (machine_crowded, inlined: the hot path)
        if not window or (_crowded if 0 <= started_ns - _sampled_ns < LOAD_SAMPLE_NS
                          else machine_crowded(started_ns)):
            return 0
        return started_ns + (window if window < limit else limit)

    def waited(self, waited_ns: int) -> None:
        """Adapt after a wait that polling did not end: the data came ``waited_ns`` after
        the wait began."""
        limit = _max_ns
        window = self.window_ns
        if not limit:
            window = 0
        elif waited_ns <= limit:
            window = min(limit, window * 2 if window >= START_NS else START_NS)
        else:
            window //= 2
            if window < START_NS:
                window = 0
        self.window_ns = window
