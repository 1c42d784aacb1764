"""A child's start-up report, as its starter reads it from the status pipe.

The child writes one framed report (:func:`childkit.launcher._protocol.status_ok` /
``status_error``) and closes its end. The starter must not depend on anything else the
child, or its entry's code, does with that pipe:

* the frame, not end of file, ends the report: a process the entry forked while
  starting (a helper, a daemon) holds a copy of the write end for as long as it lives;
* the child's own exit is watched too (its pidfd): a child that dies before its report
  is complete is found out at once, whoever else holds the pipe;
* at most one frame is read (a head, then a body of at most
  :data:`~childkit.launcher._protocol.MAX_STATUS_BODY` bytes), and a report malformed in
  any way is a :class:`NoReport`, never another exception: the entry's code (an import,
  ``on_connect()``) runs with the pipe's write end open and may write anything to it.

Only :func:`read_report` is here; what a missing report means for the child (killed,
reaped, which error) is the manager's (:meth:`childkit.process._manager.Manager.spawn`).
"""

from __future__ import annotations

import math
import os
import select
import time
from typing import Literal

from childkit.launcher import _protocol as proto

#: How long a child that closed its end of the pipe without a whole report is given to
#: exit (it is dying: its files close just before its pidfd turns readable) before it is
#: taken for one that closed the pipe and lives on.
EOF_GRACE_S = 1.0

Why = Literal["timeout", "died", "closed", "malformed"]


class NoReport(Exception):
    """The start ended without a usable report. ``why``: ``"timeout"`` (the deadline
    passed first), ``"died"`` (the child exited first), ``"closed"`` (it closed its end
    of the pipe and did not exit), ``"malformed"`` (what it wrote is not one report);
    ``detail`` says what was seen, for the start's error message (for ``"died"``, where
    in its report the child died)."""

    def __init__(self, why: Why, detail: str) -> None:
        super().__init__(detail)
        self.why: Why = why
        self.detail = detail


class _Frame:
    """The report read so far: never more than one head and the body it announces."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.want = proto.STATUS_HEAD_SIZE  # grows to head + body once the head is in

    @property
    def complete(self) -> bool:
        return len(self.data) == self.want

    def fill(self, fd: int) -> bool:
        """Read what the non-blocking ``fd`` holds, up to the frame's end; return whether
        the pipe reached end of file. Raises ``ProtocolError`` for a bad head."""
        while len(self.data) < self.want:
            try:
                chunk = os.read(fd, self.want - len(self.data))
            except BlockingIOError:
                return False
            if not chunk:
                return True
            self.data += chunk
            if self.want == proto.STATUS_HEAD_SIZE and self.complete:
                head = bytes(self.data)
                self.want += proto.status_body_size(head)
        return False


def read_report(status_r: int, pidfd: int, deadline: float) -> tuple[int, str]:
    """Read the start-up report from ``status_r`` (made non-blocking here) by
    ``deadline`` (a ``time.monotonic()`` value), watching ``pidfd`` (the child's; ``-1``
    when it is known to have exited) for the child's exit.

    Returns the report's code and message as soon as the whole frame is in, whoever
    still holds the pipe. A report the child wrote before it exited is read all the same.

    Raises:
        NoReport: see its ``why``; the child's fate is the caller's to settle.
    """
    os.set_blocking(status_r, False)
    frame = _Frame()
    poller = select.poll()
    poller.register(status_r, select.POLLIN)
    exited = pidfd < 0
    if not exited:
        poller.register(pidfd, select.POLLIN)
    eof_by = math.inf  # set at end of file: by then the child must have exited
    while True:
        try:
            eof = frame.fill(status_r)
            if frame.complete:
                return proto.parse_status(bytes(frame.data))
        except proto.ProtocolError as exc:
            raise NoReport("malformed", f"sent a bad start-up report ({exc})") from None
        if exited:
            raise NoReport("died", "before reporting" if not frame.data
                           else f"{len(frame.data)} bytes into its report")
        now = time.monotonic()
        if eof:
            if eof_by is math.inf:
                eof_by = min(deadline, now + EOF_GRACE_S)
                poller.unregister(status_r)  # at end of file it stays readable
            elif now >= eof_by:
                raise NoReport("closed", "closed its status pipe without reporting its start")
        if now >= deadline:
            raise NoReport("timeout", "did not finish starting in time")
        left = min(deadline, eof_by) - now
        for fd, _events in poller.poll(max(1, math.ceil(left * 1000))):
            if fd == pidfd:
                exited = True
