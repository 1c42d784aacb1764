"""Who is born in a cgroup made ahead: run as ``python ahead_births.py CASE`` in a fresh
process (as root), which plays the isolated template's part with
``childkit.sandbox.forking`` (it moves itself between cgroups, so never in pytest's own
process), and prints as JSON how its second child ended.

The isolated template sits in a group made ahead while idle, and in the group of the
child it just forked until it is idle again (:mod:`childkit.sandbox._ahead`); a burst
forks the next child before that. A group belongs to one child: when that child is
reaped, the group is removed and what is still in it killed. So a child forked with no
group of its own must be born outside both (the template's own groups), or it dies when
the other child's group goes (a spare's, in a burst of two isolated starts: the
SIGKILLed searcher of tests/sandbox/memory_markers.py). CASE names the first child:

- ``spare``: a spare (born in the group made ahead, named after it until its order);
- ``child``: a child that took the group made ahead, with its limits.

The second child takes no group (none is ready). The first then ends and is reaped, its
group removed, as the template does; last the second is told to end, and its wait status
is printed: ``{"skip": reason}`` where no group can be made ahead.
"""

from __future__ import annotations

import json
import os
import sys

from childkit.sandbox import ResourceLimits, forking, release


def _waiter() -> tuple[int, int]:
    """Fork a child that exits 0 at end of file on a pipe: its pid and the write end."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # it keeps only its read end (not the earlier children's write ends)
        os.closerange(3, r)
        os.closerange(r + 1, 2**31 - 1)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    return pid, w


def _end(pid: int, w: int) -> int:
    os.close(w)
    return os.waitpid(pid, 0)[1]


def main(case: str) -> dict[str, object]:
    if os.geteuid() != 0 or not forking.privileged():
        return {"skip": "only a privileged template makes cgroups ahead"}
    forking.idle_work()  # first of the idle work: a group made ahead, this process in it
    if forking.group_wanted():
        return {"skip": "the kernel refused a cgroup made ahead"}
    limits = ResourceLimits()
    try:
        if case == "spare":
            forking.take_group_unset()
        else:
            assert forking.take_group(limits) is not None
        first, first_w = _waiter()
        forking.group_forked(first, spare=case == "spare")
        # A burst: the next fork comes before any idle work, and no group is ready.
        assert forking.take_group(limits) is None
        second, second_w = _waiter()
        forking.group_forked(second)
        first_status = _end(first, first_w)
        if case == "spare":
            forking.spare_unused(first)
        else:
            release(first)
        second_status = _end(second, second_w)
        release(second)
    finally:
        forking.discard_ahead()
    return {"first": first_status, "second": second_status}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
