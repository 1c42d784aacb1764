"""A child forked with no cgroup of its own is born outside every group made ahead, so
it never dies with another child's group (ahead_births.py says how, and why it was
the SIGKILLed searcher of memory_markers.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ahead_births.py")


@pytest.mark.parametrize("first", ["spare", "child"])
def test_a_child_without_a_group_outlives_the_previous_child_s_group(first: str) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), first], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    if "skip" in result:
        pytest.skip(result["skip"])
    # Both ended as told (exit 0), the second only once the first's group was removed.
    assert result == {"first": 0, "second": 0}, (
        f"second child: {describe(result['second'])}")


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
