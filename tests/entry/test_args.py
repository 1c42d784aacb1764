"""ChildProcessArgs limits (each at its edge, on both sides) and the child-side accessors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from childkit.common._errors import ChildkitError, ErrCode
from childkit.entry._args import (
    MAX_ENTRY_PARAMS_BYTES,
    MAX_FD_NAME_BYTES,
    MAX_FDS,
    ChildProcessArgs,
    get_current_child_process_args,
    set_current_child_process_args,
)
from leakcheck import no_new_fds_threads_or_children


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test leaves no new fd, thread or child process behind."""
    with no_new_fds_threads_or_children():
        yield


@pytest.fixture
def pipe_fds() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def _invalid(make: Callable[[], ChildProcessArgs]) -> str:
    """The message of the error building (or, for an fd that is not open, validating)
    the args raises: every limit but that one is checked by the constructor."""
    with pytest.raises(ChildkitError) as info:
        make().validate()
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    return info.value.message


def test_limits_are_the_documented_ones() -> None:
    assert MAX_ENTRY_PARAMS_BYTES == 150 * 1024 == 153600
    assert MAX_FDS == 16
    assert MAX_FD_NAME_BYTES == 20


def test_defaults_are_valid_and_not_shared() -> None:
    a, b = ChildProcessArgs(), ChildProcessArgs()
    a.validate()
    assert a.entry_params == "" and a.fds == {}
    a.fds["x"] = 1
    assert b.fds == {}


# --------------------------------------------------------------------- entry_params


def test_entry_params_at_limit_passes() -> None:
    ChildProcessArgs("p" * 153600).validate()


def test_entry_params_one_byte_over_fails() -> None:
    message = _invalid(lambda: ChildProcessArgs("p" * 153601))
    assert "153601 bytes" in message and "153600" in message


def test_entry_params_limit_counts_utf8_bytes_not_characters() -> None:
    ChildProcessArgs("\u00e9" * 76800).validate()  # 76,800 characters, 153,600 bytes
    message = _invalid(lambda: ChildProcessArgs("\u00e9" * 76800 + "x"))
    assert "153601 bytes" in message


@pytest.mark.parametrize("value", [b"bytes", None, 5, ["a"]])
def test_entry_params_must_be_str(value: object) -> None:
    message = _invalid(lambda: ChildProcessArgs(value))  # type: ignore[arg-type]
    assert "entry_params must be a str" in message
    assert type(value).__name__ in message


def test_entry_params_with_nul_fails() -> None:
    assert "NUL" in _invalid(lambda: ChildProcessArgs("ab\0cd"))


def test_entry_params_not_utf8_encodable_fails() -> None:
    assert "UTF-8" in _invalid(lambda: ChildProcessArgs("lone \ud800 surrogate"))


def test_huge_entry_params_message_stays_short() -> None:
    message = _invalid(lambda: ChildProcessArgs("\ud800" + "x" * 1_000_000))
    assert len(message) < 300


# --------------------------------------------------------------------------- fd count


def test_sixteen_fds_pass(pipe_fds: tuple[int, int]) -> None:
    r, _ = pipe_fds
    ChildProcessArgs(fds={f"fd{i}": r for i in range(16)}).validate()


def test_seventeen_fds_fail(pipe_fds: tuple[int, int]) -> None:
    r, _ = pipe_fds
    message = _invalid(lambda: ChildProcessArgs(fds={f"fd{i}": r for i in range(17)}))
    assert "17 entries" in message and "16" in message


@pytest.mark.parametrize("value", [[("a", 1)], None, "a=1"])
def test_fds_must_be_a_dict(value: object) -> None:
    assert "fds must be a dict" in _invalid(lambda: ChildProcessArgs(fds=value))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- fd names


def test_name_of_twenty_characters_passes(pipe_fds: tuple[int, int]) -> None:
    ChildProcessArgs(fds={"n" * 20: pipe_fds[0]}).validate()


def test_name_of_twenty_one_characters_fails(pipe_fds: tuple[int, int]) -> None:
    message = _invalid(lambda: ChildProcessArgs(fds={"n" * 21: pipe_fds[0]}))
    assert "21 bytes" in message and "20" in message


def test_name_limit_counts_utf8_bytes(pipe_fds: tuple[int, int]) -> None:
    # OpenHarmony compares std::string::length(), a byte count.
    ChildProcessArgs(fds={"\u00e9" * 10: pipe_fds[0]}).validate()  # 20 bytes
    assert "21 bytes" in _invalid(lambda: ChildProcessArgs(fds={"\u00e9" * 10 + "x": pipe_fds[0]}))


def test_name_has_no_character_set(pipe_fds: tuple[int, int]) -> None:
    ChildProcessArgs(fds={"a b-c.d/e:f;\u00e9": pipe_fds[0]}).validate()


def test_empty_name_fails(pipe_fds: tuple[int, int]) -> None:
    assert "empty" in _invalid(lambda: ChildProcessArgs(fds={"": pipe_fds[0]}))


@pytest.mark.parametrize("name", [1, None, b"out"])
def test_name_must_be_str(name: object, pipe_fds: tuple[int, int]) -> None:
    message = _invalid(lambda: ChildProcessArgs(fds={name: pipe_fds[0]}))  # type: ignore[dict-item]
    assert "must be a str" in message


def test_name_with_nul_fails(pipe_fds: tuple[int, int]) -> None:
    assert "NUL" in _invalid(lambda: ChildProcessArgs(fds={"a\0b": pipe_fds[0]}))


def test_name_not_utf8_encodable_fails(pipe_fds: tuple[int, int]) -> None:
    assert "UTF-8" in _invalid(lambda: ChildProcessArgs(fds={"\udc80": pipe_fds[0]}))


def test_huge_name_message_stays_short(pipe_fds: tuple[int, int]) -> None:
    message = _invalid(lambda: ChildProcessArgs(fds={"n" * 1_000_000: pipe_fds[0]}))
    assert len(message) < 300 and "1000000 bytes" in message


# -------------------------------------------------------------------------- fd values


@pytest.mark.parametrize("fd", ["3", 3.0, True, None])
def test_fd_must_be_an_int(fd: object) -> None:
    message = _invalid(lambda: ChildProcessArgs(fds={"out": fd}))  # type: ignore[dict-item]
    assert "fd 'out' must be an int" in message


@pytest.mark.parametrize("fd", [-1, 2**31, 2**64])
def test_fd_out_of_range_fails(fd: int) -> None:
    assert f"fd 'out' ({fd}) is not a valid" in _invalid(lambda: ChildProcessArgs(fds={"out": fd}))


def test_closed_fd_fails() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    message = _invalid(lambda: ChildProcessArgs(fds={"name": r}))
    assert message == f"fd 'name' ({r}) is not an open file descriptor"


def test_validate_leaves_the_callers_fds_open(pipe_fds: tuple[int, int]) -> None:
    r, w = pipe_fds
    ChildProcessArgs("x", {"r": r, "w": w}).validate()
    os.fstat(r)
    os.fstat(w)


def test_same_fd_under_two_names_is_allowed(pipe_fds: tuple[int, int]) -> None:
    ChildProcessArgs(fds={"a": pipe_fds[1], "b": pipe_fds[1]}).validate()


# ---------------------------------------------------------------------- child accessors


def test_get_current_is_none_outside_a_child() -> None:
    assert get_current_child_process_args() is None


def _run_fresh(body: str, *fds: int) -> str:
    """Run module-level function ``body(*fds)`` of this file in a fresh interpreter (a
    process that is not yet a child, as a launcher-forked child is before its args are
    set); return what it returned, or fail with its traceback. Not a fork of this
    process: pytest's process has threads, and forking one is unsafe (and deprecated on
    3.12+)."""
    here = Path(__file__).resolve()
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('args_bodies', {str(here)!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            f"print(module.{body}(*map(int, sys.argv[1:])), end='')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent.parent),
                                                       *(p for p in sys.path if p)]))
    done = subprocess.run([sys.executable, "-c", code, *map(str, fds)], pass_fds=fds,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def body_set_then_get_from_another_thread(r: int, w: int) -> str:
    original = ChildProcessArgs("params", {"out": w, "in": r})
    set_current_child_process_args(original)
    original.fds["late"] = r  # changes after set_... must not show
    seen: list[ChildProcessArgs | None] = []
    thread = threading.Thread(target=lambda: seen.append(get_current_child_process_args()))
    thread.start()
    thread.join(30)
    got = seen[0]
    assert got == ChildProcessArgs("params", {"out": w, "in": r}), got
    assert got is not get_current_child_process_args()  # a fresh copy each time
    got.fds.clear()
    assert get_current_child_process_args() == ChildProcessArgs("params", {"out": w, "in": r})
    return "ok"


def test_set_then_get_in_a_child_from_another_thread(pipe_fds: tuple[int, int]) -> None:
    assert _run_fresh("body_set_then_get_from_another_thread", *pipe_fds) == "ok"


def body_set_twice() -> str:
    set_current_child_process_args(ChildProcessArgs("first"))
    with pytest.raises(RuntimeError, match="already set"):
        set_current_child_process_args(ChildProcessArgs("second"))
    args = get_current_child_process_args()
    assert args is not None and args.entry_params == "first"
    return "ok"


def test_set_twice_fails_in_a_child() -> None:
    assert _run_fresh("body_set_twice") == "ok"


def body_set_validates() -> str:
    with pytest.raises(ChildkitError) as info:
        set_current_child_process_args(ChildProcessArgs("p" * 153601))
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM
    with pytest.raises(TypeError):
        set_current_child_process_args("params")  # type: ignore[arg-type]
    assert get_current_child_process_args() is None
    return "ok"


def test_set_validates_in_a_child() -> None:
    assert _run_fresh("body_set_validates") == "ok"


# ------------------------------------------------------------- checked when built


@pytest.mark.parametrize("build", [
    lambda: ChildProcessArgs(123),  # type: ignore[arg-type]
    lambda: ChildProcessArgs("p" * 153601),
    lambda: ChildProcessArgs(fds={"x": "notint"}),  # type: ignore[dict-item]
    lambda: ChildProcessArgs(fds={f"fd{i}": 0 for i in range(17)}),
    lambda: ChildProcessArgs(fds={"n" * 21: 0}),
    lambda: ChildProcessArgs(fds={"": 0}),
    lambda: ChildProcessArgs(fds={"x": -1}),
])
def test_the_constructor_refuses_what_start_would(build: Callable[[], object]) -> None:
    with pytest.raises(ChildkitError) as info:
        build()
    assert info.value.code == ErrCode.NCP_ERR_INVALID_PARAM


def test_the_constructor_accepts_every_limit_at_its_edge() -> None:
    ChildProcessArgs("p" * 153600, {f"f{i:019}"[:20]: 0 for i in range(16)})


def test_whether_an_fd_is_open_is_checked_at_start_not_when_built() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    args = ChildProcessArgs(fds={"gone": r})  # may be opened later: accepted now
    assert "not an open file descriptor" in _invalid(lambda: args)
