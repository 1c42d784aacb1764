"""The C kit under AddressSanitizer and UndefinedBehaviorSanitizer, with LeakSanitizer's
check at exit: the parcel self-test, create/send/destroy rounds between C processes
(objects, callbacks, death), and the hostile peer with its fuzzing; and the C-C self-test
under ThreadSanitizer (the serve reader's role, callers reading their own replies, the
outbox). Any report fails the run (halt_on_error, exitcode 23)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from native_build import KIT_INTERNAL_FLAGS, KIT_SOURCES, Build
from test_hostile_peer import check_outcomes, corpus_input

pytestmark = pytest.mark.timeout(900)  # sanitized code runs several times slower

SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=undefined"]
ENV = {
    **os.environ,
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:exitcode=23:detect_stack_use_after_return=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=23",
    "LSAN_OPTIONS": "exitcode=23",
}


@pytest.fixture(scope="module")
def asan(cc: Build) -> Build:
    def build(name: str, source: str) -> Path:
        # The kit's sources compiled in, sanitized like the program.
        return cc(f"asan_{name}", [source, *KIT_SOURCES], kit=False,
                  flags=[*SANITIZE, *KIT_INTERNAL_FLAGS, "-I" + str(Path(__file__).parent)])
    return build  # type: ignore[return-value]


def _run(exe: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True,
                            env=ENV, timeout=900)
    assert "Sanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_parcels_under_sanitizers(asan: Build) -> None:
    _run(asan("parcel_selftest", "parcel_selftest.c"))


def test_create_send_destroy_loop_without_leaks(asan: Build) -> None:
    exe = asan("ipc_selftest", "ipc_selftest.c")
    _run(exe)  # the full run: every call and callback, death recipients
    _run(exe, "loop", "30")  # LeakSanitizer checks at exit, in the parent and every child


def test_hostile_peer_under_sanitizers(asan: Build) -> None:
    result = _run(asan("hostile_peer", "hostile_peer.c"), "1000", stdin=corpus_input())
    check_outcomes(result.stdout)
    bounds = _run(asan("hostile_peer", "hostile_peer.c"), "objects")  # heap, imports table
    assert bounds.stdout.splitlines()[-1] == "open closed"


def test_threads_under_thread_sanitizer(cc: Build) -> None:
    """Data races in the connection's threads: every call, callback, concurrent callers,
    a request waiting for a later one, forwarding, timeouts and death, under TSan."""
    exe = cc("tsan_ipc_selftest", ["ipc_selftest.c", *KIT_SOURCES], kit=False,
             flags=["-fsanitize=thread", *KIT_INTERNAL_FLAGS])
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1:exitcode=23"}
    for args in ([], ["loop", "5"]):
        result = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                                timeout=900)
        assert "ThreadSanitizer" not in result.stderr + result.stdout, result.stderr[-4000:]
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
