"""Entry parsing (accept/reject tables), resolution, and the seed's native Main run for real."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from childkit.common._errors import ChildkitError, ErrCode
from childkit.entry._args import ChildProcessArgs
from childkit.entry._entries import ParsedEntry, parse_entry, resolve_args_entry, resolve_ipc_entry
from childkit.entry._native_args import (
    NativeChildProcess_Args,
    NativeChildProcess_Fd,
    NativeChildProcess_FdList,
    NativeChildProcess_Options,
    build_native_args,
    read_native_args,
)
from leakcheck import no_new_fds_threads_or_children

NATIVE_DIR = Path(__file__).parent.parent / "native"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test leaves no new fd, thread or child process behind."""
    with no_new_fds_threads_or_children():
        yield


@pytest.fixture(scope="session")
def native_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/native/child_main.c built into a shared library (gcc is required, not optional)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is required to build tests/native/child_main.c but is not on PATH")
    out = tmp_path_factory.mktemp("native") / "libchildkit_test_main.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
         "-I", str(NATIVE_DIR), "-o", str(out), str(NATIVE_DIR / "child_main.c")],
        check=True,
        timeout=120,
    )  # fmt: skip
    return out


@pytest.fixture
def py_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for test modules; modules imported from it are forgotten."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def _error(code: ErrCode, call: Callable[[], object]) -> str:
    with pytest.raises(ChildkitError) as info:
        call()
    assert info.value.code == code, info.value
    return info.value.message


# ----------------------------------------------------------------------------- parsing

ARGS_ACCEPTED = [
    ("pkg.mod:func", "python", "pkg.mod", "func"),
    ("mod:main", "python", "mod", "main"),
    ("a.b.c:_private", "python", "a.b.c", "_private"),
    ("mod:f\u00e9", "python", "mod", "f\u00e9"),  # Python identifiers may be non-ASCII
    ("libx.so:Main", "native", "libx.so", "Main"),
    ("libEntry.so:Main", "native", "libEntry.so", "Main"),
    ("path/to/libx.so:Main", "native", "path/to/libx.so", "Main"),
    ("./libx.so:Main", "native", "./libx.so", "Main"),
    ("/abs/libx.so.1:Main_2", "native", "/abs/libx.so.1", "Main_2"),
    ("libc.so.6:_start", "native", "libc.so.6", "_start"),
    ("/tmp/a:b/libx.so:Main", "native", "/tmp/a:b/libx.so", "Main"),  # last ':' splits
]


@pytest.mark.parametrize(("entry", "kind", "target", "symbol"), ARGS_ACCEPTED)
def test_args_entries_accepted(entry: str, kind: str, target: str, symbol: str) -> None:
    assert parse_entry(entry, mode="args") == ParsedEntry(entry, "args", kind, target, symbol)  # type: ignore[arg-type]


ARGS_REJECTED = [
    ("", "must not be empty"),
    ("module_only", "has no ':'"),
    ("libx.so", "has no ':'"),
    (":func", "nothing before ':'"),
    ("mod:", "nothing after ':'"),
    ("1mod:f", "not a dotted Python module name"),
    ("mod.:f", "not a dotted Python module name"),
    ("a..b:f", "not a dotted Python module name"),
    ("class:f", "not a dotted Python module name"),
    ("pkg-name:f", "not a dotted Python module name"),
    ("mod:1f", "not a Python identifier"),
    ("mod:f-g", "not a Python identifier"),
    ("mod:class", "not a Python identifier"),
    ("mod:a.b", "not a Python identifier"),
    ("libx.so:1Main", "not a C identifier"),
    ("libx.so:Ma-in", "not a C identifier"),
    ("libx.so:M\u00e9", "not a C identifier"),
    ("path/libx.dll:Main", "does not end in .so"),
    ("path/libx.so.x:Main", "does not end in .so"),
    ("dir/:Main", "names a directory"),
    ("worker.py:main", "names a .py file"),
    ("mod:f\0", "NUL"),
]


@pytest.mark.parametrize(("entry", "problem"), ARGS_REJECTED)
def test_args_entries_rejected(entry: str, problem: str) -> None:
    message = _error(ErrCode.NCP_ERR_INVALID_PARAM, lambda: parse_entry(entry, mode="args"))
    assert problem in message
    if entry:
        assert repr(entry) in message  # the entry is quoted


IPC_ACCEPTED = [
    ("pkg.worker", "python"),
    ("worker", "python"),
    ("worker.py", "pyfile"),
    ("path/to/worker.py", "pyfile"),
    ("/abs/odd:name.py", "pyfile"),
    ("libworker.so", "native"),
    ("dir/libworker.so.2", "native"),
]


@pytest.mark.parametrize(("entry", "kind"), IPC_ACCEPTED)
def test_ipc_entries_accepted(entry: str, kind: str) -> None:
    assert parse_entry(entry, mode="ipc") == ParsedEntry(entry, "ipc", kind, entry, None)  # type: ignore[arg-type]


IPC_REJECTED = [
    ("", "must not be empty"),
    ("pkg.worker:main", "has a ':'"),
    ("libx.so:Main", "has a ':'"),
    ("1bad", "not a dotted Python module name"),
    ("a..b", "not a dotted Python module name"),
    ("dir/worker", "does not end in .so"),
    ("dir/", "names a directory"),
    ("dir/.py", "without a name"),
    ("work\0er", "NUL"),
]


@pytest.mark.parametrize(("entry", "problem"), IPC_REJECTED)
def test_ipc_entries_rejected(entry: str, problem: str) -> None:
    message = _error(ErrCode.NCP_ERR_INVALID_PARAM, lambda: parse_entry(entry, mode="ipc"))
    assert problem in message


@pytest.mark.parametrize("entry", [None, b"mod:f", 5, ["mod:f"]])
@pytest.mark.parametrize("mode", ["args", "ipc"])
def test_entry_must_be_a_str(entry: object, mode: str) -> None:
    message = _error(
        ErrCode.NCP_ERR_INVALID_PARAM,
        lambda: parse_entry(entry, mode=mode),  # type: ignore[arg-type]
    )
    assert "entry must be a str" in message and type(entry).__name__ in message


@pytest.mark.parametrize("mode", ["args", "ipc"])
def test_huge_entry_gives_a_short_message(mode: str) -> None:
    huge = "x" * 1_000_000 + "-"
    message = _error(
        ErrCode.NCP_ERR_INVALID_PARAM,
        lambda: parse_entry(huge, mode=mode),  # type: ignore[arg-type]
    )
    assert len(message) < 400 and "1000001 characters" in message


def test_unknown_mode_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="mode"):
        parse_entry("mod:f", mode="both")  # type: ignore[arg-type]


def test_parsing_imports_nothing() -> None:
    name = "childkit_test_never_imported"
    parse_entry(f"{name}:main", mode="args")
    parse_entry(name, mode="ipc")
    assert name not in sys.modules


def test_resolvers_check_the_mode() -> None:
    ipc = parse_entry("pkg.worker", mode="ipc")
    args = parse_entry("pkg.worker:main", mode="args")
    assert "not an args-mode" in _error(
        ErrCode.NCP_ERR_INVALID_PARAM, lambda: resolve_args_entry(ipc)
    )
    assert "not an IPC-mode" in _error(
        ErrCode.NCP_ERR_INVALID_PARAM, lambda: resolve_ipc_entry(args)
    )


# ------------------------------------------------------------ Python args-mode entries

ENTRY_MODULE = """
    received = []
    not_callable = 5

    def ret_none(args):
        received.append(args)

    def ret_seven(args):
        return 7

    def ret_255(args):
        return 255

    def ret_str(args):
        return "7"

    def ret_bool(args):
        return True

    def ret_256(args):
        return 256

    def ret_negative(args):
        return -1
"""


def _resolve_py(text: str) -> Callable[[ChildProcessArgs], int]:
    return resolve_args_entry(parse_entry(text, mode="args"))


def test_python_entry_gets_the_args_and_none_means_zero(py_modules: Path) -> None:
    _write(py_modules, "ck_entry_a.py", ENTRY_MODULE)
    args = ChildProcessArgs("hello")
    assert _resolve_py("ck_entry_a:ret_none")(args) == 0
    assert sys.modules["ck_entry_a"].received == [args]


def test_python_entry_int_is_the_exit_code(py_modules: Path) -> None:
    _write(py_modules, "ck_entry_b.py", ENTRY_MODULE)
    assert _resolve_py("ck_entry_b:ret_seven")(ChildProcessArgs()) == 7
    assert _resolve_py("ck_entry_b:ret_255")(ChildProcessArgs()) == 255


@pytest.mark.parametrize(
    ("func", "error", "text"),
    [
        ("ret_str", TypeError, "returned a str"),
        ("ret_bool", TypeError, "returned a bool"),
        ("ret_256", ValueError, "returned 256"),
        ("ret_negative", ValueError, "returned -1"),
    ],
)
def test_python_entry_bad_exit_codes(
    py_modules: Path, func: str, error: type[Exception], text: str
) -> None:
    _write(py_modules, f"ck_entry_{func}.py", ENTRY_MODULE)
    run = _resolve_py(f"ck_entry_{func}:{func}")
    with pytest.raises(error, match=text):
        run(ChildProcessArgs())


def test_python_entry_in_a_package(py_modules: Path) -> None:
    (py_modules / "ck_pkg").mkdir()
    _write(py_modules / "ck_pkg", "__init__.py", "")
    _write(py_modules / "ck_pkg", "entry.py", ENTRY_MODULE)
    assert _resolve_py("ck_pkg.entry:ret_seven")(ChildProcessArgs()) == 7


def test_python_entry_unknown_module(py_modules: Path) -> None:
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED, lambda: _resolve_py("ck_no_such_module:main")
    )
    assert "cannot import module 'ck_no_such_module'" in message
    assert "ModuleNotFoundError" in message


def test_python_entry_module_that_fails_on_import(py_modules: Path) -> None:
    _write(py_modules, "ck_entry_broken.py", "raise RuntimeError('broken at import')\n")
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED, lambda: _resolve_py("ck_entry_broken:main")
    )
    assert "RuntimeError: broken at import" in message


def test_python_entry_module_with_syntax_error(py_modules: Path) -> None:
    _write(py_modules, "ck_entry_syntax.py", "def main(:\n")
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED, lambda: _resolve_py("ck_entry_syntax:main")
    )
    assert "SyntaxError" in message


def test_python_entry_missing_function(py_modules: Path) -> None:
    _write(py_modules, "ck_entry_c.py", ENTRY_MODULE)
    message = _error(ErrCode.NCP_ERR_LIB_LOADING_FAILED, lambda: _resolve_py("ck_entry_c:nope"))
    assert "module 'ck_entry_c' has no function 'nope'" in message


def test_python_entry_not_callable(py_modules: Path) -> None:
    _write(py_modules, "ck_entry_d.py", ENTRY_MODULE)
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED, lambda: _resolve_py("ck_entry_d:not_callable")
    )
    assert "not_callable is not callable" in message


# ------------------------------------------------------------------------- IPC entries

IPC_MODULE = """
    def on_connect():
        return "stub"

    def main_proc():
        return "done"
"""


def test_ipc_module_entry(py_modules: Path) -> None:
    _write(py_modules, "ck_worker_a.py", IPC_MODULE)
    on_connect, main_proc = resolve_ipc_entry(parse_entry("ck_worker_a", mode="ipc"))
    assert on_connect() == "stub" and main_proc() == "done"


def test_ipc_pyfile_entries_load_separately(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _write(tmp_path / "one", "worker.py", IPC_MODULE)
    _write(tmp_path / "two", "worker.py", IPC_MODULE.replace('"done"', '"other"'))
    before = set(sys.modules)
    try:
        _, main_one = resolve_ipc_entry(parse_entry(str(tmp_path / "one/worker.py"), mode="ipc"))
        _, main_two = resolve_ipc_entry(parse_entry(str(tmp_path / "two/worker.py"), mode="ipc"))
        assert (main_one(), main_two()) == ("done", "other")
        added = set(sys.modules) - before
        assert len(added) == 2 and all(name.startswith("_childkit_entry_") for name in added)
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]


@pytest.mark.parametrize("missing", ["on_connect", "main_proc"])
def test_ipc_entry_missing_function_is_named(py_modules: Path, missing: str) -> None:
    source = IPC_MODULE.replace(f"def {missing}(", "def renamed(")
    _write(py_modules, f"ck_worker_{missing}.py", source)
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_ipc_entry(parse_entry(f"ck_worker_{missing}", mode="ipc")),
    )
    assert f"has no function {missing!r}" in message


def test_ipc_entry_not_callable(py_modules: Path) -> None:
    _write(py_modules, "ck_worker_nc.py", textwrap.dedent(IPC_MODULE) + "\nmain_proc = 3\n")
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_ipc_entry(parse_entry("ck_worker_nc", mode="ipc")),
    )
    assert "main_proc is not callable" in message


def test_ipc_unknown_module(py_modules: Path) -> None:
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_ipc_entry(parse_entry("ck_no_such_worker", mode="ipc")),
    )
    assert "cannot import module 'ck_no_such_worker'" in message


def test_ipc_missing_pyfile(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.py")
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_ipc_entry(parse_entry(path, mode="ipc")),
    )
    assert f"cannot load {path!r}" in message and "FileNotFoundError" in message


def test_ipc_pyfile_that_fails_leaves_no_module(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad_worker.py", "raise ValueError('nope')\n")
    before = set(sys.modules)
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_ipc_entry(parse_entry(str(path), mode="ipc")),
    )
    assert "ValueError: nope" in message
    assert set(sys.modules) == before


def test_ipc_native_library_is_not_supported(native_lib: Path) -> None:
    message = _error(
        ErrCode.NCP_ERR_NOT_SUPPORTED,
        lambda: resolve_ipc_entry(parse_entry(str(native_lib), mode="ipc")),
    )
    assert "native library" in message and "on_connect()" in message


# ------------------------------------------------------------------ native structures


def test_struct_layout_matches_c(native_lib: Path) -> None:
    """gcc's sizeof/offsetof figures for the header equal the ctypes mirrors'."""
    lib = ctypes.CDLL(str(native_lib))
    probe = lib.LayoutProbe
    probe.argtypes = [NativeChildProcess_Args]
    probe.restype = None
    r, w = os.pipe()
    with os.fdopen(r, "rb") as reader:
        try:
            probe(build_native_args(ChildProcessArgs("", {"out": w})))
        finally:
            os.close(w)
        reported = reader.read().decode()
    fd_t, lst, args_t, opt = (
        NativeChildProcess_Fd,
        NativeChildProcess_FdList,
        NativeChildProcess_Args,
        NativeChildProcess_Options,
    )
    expected = (
        f"Fd={ctypes.sizeof(fd_t)},{fd_t.fdName.offset},{fd_t.fd.offset},{fd_t.next.offset} "
        f"FdList={ctypes.sizeof(lst)} "
        f"Args={ctypes.sizeof(args_t)},{args_t.entryParams.offset},{args_t.fdList.offset} "
        f"Options={ctypes.sizeof(opt)},{opt.isolationMode.offset},{opt.reserved.offset}\n"
    )
    assert reported == expected


def test_build_orders_fds_by_name_and_round_trips() -> None:
    r, w = os.pipe()
    try:
        args = ChildProcessArgs("h\u00e9llo", {"zeta": r, "Alpha": w, "alpha": r, "\u00e9": w})
        native = build_native_args(args)
        names = []
        node = native.fdList.head
        while node:
            names.append(node.contents.fdName.decode())
            node = node.contents.next
        assert names == ["Alpha", "alpha", "zeta", "\u00e9"]  # byte order, as std::map
        assert read_native_args(native) == args
        assert native.entryParams == "h\u00e9llo".encode()
    finally:
        os.close(r)
        os.close(w)


def test_build_empty_args_gives_empty_string_and_null_head() -> None:
    native = build_native_args(ChildProcessArgs())
    assert native.entryParams == b""
    assert not native.fdList.head
    assert read_native_args(native) == ChildProcessArgs()


def test_build_validates() -> None:
    _error(ErrCode.NCP_ERR_INVALID_PARAM, lambda: build_native_args(ChildProcessArgs("\0")))


# ---------------------------------------------------------------- native args entries


def test_native_entry_resolves_in_process(native_lib: Path) -> None:
    assert callable(resolve_args_entry(parse_entry(f"{native_lib}:Main", mode="args")))


def test_native_entry_bare_name_is_searched_like_dlopen() -> None:
    # libc.so.6 is found through the loader's search path, not the working directory.
    assert callable(resolve_args_entry(parse_entry("libc.so.6:getpid", mode="args")))


def test_native_entry_missing_library(tmp_path: Path) -> None:
    path = tmp_path / "libabsent.so"
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_args_entry(parse_entry(f"{path}:Main", mode="args")),
    )
    assert f"cannot load library {str(path)!r}" in message


def test_native_entry_not_a_library(tmp_path: Path) -> None:
    path = _write(tmp_path, "libfake.so", "not an ELF file\n")
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_args_entry(parse_entry(f"{path}:Main", mode="args")),
    )
    assert "cannot load library" in message


def test_native_entry_missing_symbol(native_lib: Path) -> None:
    message = _error(
        ErrCode.NCP_ERR_LIB_LOADING_FAILED,
        lambda: resolve_args_entry(parse_entry(f"{native_lib}:NoSuchMain", mode="args")),
    )
    assert f"library {str(native_lib)!r} does not export 'NoSuchMain'" in message


_RUN_NATIVE = """
import json, sys
from childkit.entry._args import ChildProcessArgs
from childkit.entry._entries import parse_entry, resolve_args_entry
entry, fds = json.loads(sys.argv[1])
run = resolve_args_entry(parse_entry(entry, mode="args"))
sys.exit(run(ChildProcessArgs(sys.stdin.read(), fds)))
"""


def _run_native_main_in_fork(entry: str, args: ChildProcessArgs, reader_fd: int) -> str:
    """Resolve and run ``entry`` in a fresh interpreter, as a launcher's child would;
    return what the parent reads from ``reader_fd`` until EOF. (Not a fork of this
    process: pytest's has threads, and forking one is unsafe, deprecated on 3.12+.)

    Takes ownership of ``reader_fd`` and of every fd in ``args`` (the write ends): the
    parent closes its copies once the child has started, so EOF can arrive. The child
    is always reaped, so no zombie stays behind.
    """
    fds = set(args.fds.values())
    with os.fdopen(reader_fd, "rb") as reader:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _RUN_NATIVE, json.dumps([entry, args.fds])],
                stdin=subprocess.PIPE, pass_fds=tuple(fds), text=True)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            assert proc.stdin is not None
            writer = threading.Thread(target=lambda: (proc.stdin.write(args.entry_params),
                                                      proc.stdin.close()))
            writer.start()  # params larger than a pipe: written while we read
            data = reader.read()
            writer.join(60)
        finally:
            status = proc.wait(60)
    assert status == 0
    return data.decode()


def test_seed_main_writes_through_each_fd_in_name_order(native_lib: Path) -> None:
    r, w = os.pipe()
    # The same pipe under two names: the lines arrive in list order, which is by name.
    args = ChildProcessArgs("testParam", {"zeta": w, "alpha": w})
    out = _run_native_main_in_fork(f"{native_lib}:Main", args, r)
    assert out == "params=testParam;fd=alpha\nparams=testParam;fd=zeta\n"


def test_seed_main_with_two_pipes_and_utf8(native_lib: Path) -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    with os.fdopen(r2, "rb") as second_reader:
        args = ChildProcessArgs("h\u00e9llo w\u00f6rld", {"first": w1, "second": w2})
        first = _run_native_main_in_fork(f"{native_lib}:Main", args, r1)
        second = second_reader.read().decode()
    assert first == "params=h\u00e9llo w\u00f6rld;fd=first\n"
    assert second == "params=h\u00e9llo w\u00f6rld;fd=second\n"


def test_seed_main_with_largest_params(native_lib: Path) -> None:
    r, w = os.pipe()
    params = "p" * 153600  # more than a pipe holds: the parent reads while C writes
    out = _run_native_main_in_fork(f"{native_lib}:Main", ChildProcessArgs(params, {"o": w}), r)
    assert out == f"params={params};fd=o\n"


def test_seed_main_with_empty_params(native_lib: Path) -> None:
    r, w = os.pipe()
    out = _run_native_main_in_fork(f"{native_lib}:Main", ChildProcessArgs("", {"o": w}), r)
    assert out == "params=;fd=o\n"
