"""Native IPC-mode children: the seed's C child (seed_child.c) started from a Python
parent, served by the C kit; Python objects and fds crossing into C and back."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from native_build import Build

import childkit
from child_helpers import exit_recorder, no_child_leaks, read_all
from childkit import ChildkitError, ErrCode
from childkit.ipc import IPCError, MessageOption, MessageParcel, RemoteStub, RequestMode

ADD_ONE, CALL_BACK, WRITE_FD, LOG, GET_LOG, EXIT, GREET, USER_ERR = 1, 2, 3, 4, 5, 6, 7, 8
KEEP_CB, CB_DIED, GIVE_STUB, PID, FILL, TOKENS = 9, 10, 11, 12, 13, 14


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Every test leaves no child unreaped, no new fd or thread, no zombie behind."""
    with no_child_leaks():
        yield


def _exit(proxy: childkit.ipc.RemoteProxy) -> None:
    """Ask the child to end (one-way: its MainProc returns at once, before any reply)."""
    with MessageParcel() as data:
        proxy.send_request(EXIT, data, MessageOption(mode=RequestMode.ASYNC)).close()


def _lib(cc: Build, name: str, *defines: str) -> Path:
    return cc(name, ["seed_child.c"], flags=["-shared", "-fPIC", *defines])


@pytest.fixture(scope="module")
def seed_lib(cc: Build) -> Path:
    return _lib(cc, "libchildprocesssample.so")


def _int_call(proxy: childkit.ipc.RemoteProxy, code: int, value: int) -> int:
    with MessageParcel() as data:
        data.write_int32(value)
        with proxy.send_request(code, data) as reply:
            return reply.read_int32()


class AddOne(RemoteStub):
    def __init__(self) -> None:
        super().__init__("tests.IAddOne")

    def on_remote_request(self, code: int, data: MessageParcel, reply: MessageParcel,
                          option: MessageOption) -> int:
        reply.write_int32(data.read_int32() + 1)
        return 0


def test_python_parent_c_child(seed_lib: Path) -> None:
    with childkit.connect(str(seed_lib)) as child:
        proxy = child.proxy
        assert _int_call(proxy, ADD_ONE, 5) == 6
        assert proxy.get_descriptor() == "childkit.seed.IChild"
        with MessageParcel() as data:
            data.write_string("w\u00f6rld")
            with proxy.send_request(GREET, data) as reply:
                assert reply.read_string() == "hello, w\u00f6rld"
        with pytest.raises(IPCError) as err, MessageParcel() as data:
            proxy.send_request(USER_ERR, data)
        assert err.value.code == 1909042
        # the kernel's word on who calls: this process
        with MessageParcel() as data, proxy.send_request(PID, data) as reply:
            assert reply.read_uint64() == os.getpid()
            assert reply.read_uint64() == child.pid
        _exit(proxy)  # MainProc returns, and so the child ends, with status 0
        info = child.wait(30)
        assert info is not None and info.exit_code == 0


def test_a_c_parcel_full_in_openharmony_layout_reaches_python(seed_lib: Path) -> None:
    # 51,200 uint32s are 204,800 bytes in OpenHarmony's layout (the limit, as there) and
    # 256,000 tagged on the wire: the reply arrives whole; one more is refused in C.
    with childkit.connect(str(seed_lib)) as child:
        with MessageParcel() as data:
            data.write_int32(51200)
            with child.proxy.send_request(FILL, data) as reply:
                assert reply.get_data_size() == 51200 * 5
                got = [reply.read_uint32() for _ in range(51200)]
        assert got == list(range(51200))
        with pytest.raises(IPCError) as err, MessageParcel() as data:
            data.write_int32(51201)
            child.proxy.send_request(FILL, data)
        assert err.value.code == 1909002  # the stub's answer: its reply was full
        assert _int_call(child.proxy, ADD_ONE, 1) == 2  # the link is fine
        _exit(child.proxy)


def test_token_ids_are_the_uid_tagged(seed_lib: Path) -> None:
    # Linux has no access tokens: a token id is the uid with bit 32 set (docs/native.md).
    with childkit.connect(str(seed_lib)) as child:
        with MessageParcel() as data, child.proxy.send_request(TOKENS, data) as reply:
            calling, own, first = reply.read_uint64(), reply.read_uint64(), reply.read_uint64()
        assert calling == (1 << 32) | os.getuid()
        assert own == (1 << 32) | os.getuid()
        assert first == 0
        _exit(child.proxy)


def test_many_python_threads_call_one_c_child(seed_lib: Path) -> None:
    # The C kit's HELLO accepts no extra call channel: every thread shares the one call
    # socket, as before channels existed (ipc/_channels.py), and every answer is right.
    with childkit.connect(str(seed_lib)) as child:
        answers: list[list[int]] = [[] for _ in range(6)]

        def calls(i: int) -> None:
            answers[i] = [_int_call(child.proxy, ADD_ONE, i * 1000 + n) for n in range(100)]

        threads = [threading.Thread(target=calls, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert answers == [[i * 1000 + n + 1 for n in range(100)] for i in range(6)]
        caller = child.proxy._conn._caller  # type: ignore[attr-defined]
        assert caller.channels.limit == 0 and not caller.channels.all


def test_python_stub_called_back_from_c(seed_lib: Path) -> None:
    with childkit.connect(str(seed_lib)) as child, MessageParcel() as data:
        data.write_remote_object(AddOne())
        with child.proxy.send_request(CALL_BACK, data) as reply:
            assert reply.read_int32() == 42


def test_c_stub_handed_to_python(seed_lib: Path) -> None:
    with childkit.connect(str(seed_lib)) as child:
        with MessageParcel() as data, child.proxy.send_request(GIVE_STUB, data) as reply:
            adder = reply.read_remote_object()
        assert _int_call(adder, ADD_ONE, 99) == 100
        assert adder.get_descriptor() == "childkit.seed.IAdder"
        adder.close()
        assert _int_call(child.proxy, ADD_ONE, 1) == 2  # the release kept the link healthy


def test_fd_into_c(seed_lib: Path) -> None:
    r, w = os.pipe()
    try:
        with childkit.connect(str(seed_lib)) as child, MessageParcel() as data:
            data.write_file_descriptor(w)
            os.close(w)
            w = -1
            child.proxy.send_request(WRITE_FD, data).close()
        assert os.read(r, 16) == b"from C"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_oneway_order(seed_lib: Path) -> None:
    async_option = MessageOption(mode=RequestMode.ASYNC)
    with childkit.connect(str(seed_lib)) as child:
        for i in range(1000):
            with MessageParcel() as data:
                data.write_int32(i)
                child.proxy.send_request(LOG, data, async_option).close()
        with MessageParcel() as data, child.proxy.send_request(GET_LOG, data) as reply:
            count = reply.read_int32()
            assert [reply.read_int32() for _ in range(count)] == list(range(1000))


def test_isolated_c_child(seed_lib: Path) -> None:
    """A native IPC child started ISOLATED (docs/sandbox.md): the C kit serves inside the
    sandbox (its threads, fds, one-way order, callbacks into this process); the child is
    in its own pid namespace, where this process is not visible (calling pid 0)."""
    options = childkit.ChildProcessOptions(isolation_mode=childkit.IsolationMode.ISOLATED)
    r, w = os.pipe()
    try:
        with childkit.connect(str(seed_lib), options=options) as child:
            proxy = child.proxy
            assert _int_call(proxy, ADD_ONE, 5) == 6
            with MessageParcel() as data, proxy.send_request(PID, data) as reply:
                assert reply.read_uint64() == 0
                assert reply.read_uint64() != child.pid
            with MessageParcel() as data:
                data.write_remote_object(AddOne())
                with proxy.send_request(CALL_BACK, data) as reply:
                    assert reply.read_int32() == 42
            with MessageParcel() as data:
                data.write_file_descriptor(w)
                proxy.send_request(WRITE_FD, data).close()
            os.close(w)
            w = -1
            assert os.read(r, 16) == b"from C"
            for i in range(200):
                with MessageParcel() as data:
                    data.write_int32(i)
                    proxy.send_request(LOG, data, MessageOption(mode=RequestMode.ASYNC)).close()
            with MessageParcel() as data, proxy.send_request(GET_LOG, data) as reply:
                assert [reply.read_int32() for _ in range(reply.read_int32())] == list(range(200))
            _exit(proxy)
            info = child.wait(30)
            assert info is not None and info.exit_code == 0
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_death_recipient_when_the_c_child_ends(seed_lib: Path) -> None:
    died = threading.Event()
    with childkit.connect(str(seed_lib)) as child:
        child.proxy.add_death_recipient(died.set)
        _exit(child.proxy)
        assert died.wait(30)
        assert child.proxy.is_object_dead()


def test_c_death_recipient_on_a_python_object(seed_lib: Path) -> None:
    """The C child keeps a proxy to a Python stub with a C death recipient on it: the
    recipient does not run while the parent lives (its firing on death is tested between
    C processes, test_ipc_c.py)."""
    with childkit.connect(str(seed_lib)) as child:
        with MessageParcel() as data:
            data.write_remote_object(AddOne())
            child.proxy.send_request(KEEP_CB, data).close()
        with MessageParcel() as data, child.proxy.send_request(CB_DIED, data) as reply:
            assert reply.read_int32() == 0


def test_missing_library(tmp_path: Path) -> None:
    with pytest.raises(ChildkitError) as err:
        childkit.connect(str(tmp_path / "libnothere.so"))
    assert err.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
    assert "libnothere.so" in err.value.message


def test_missing_symbol(cc: Build) -> None:
    lib = _lib(cc, "libnomain.so", "-DNO_MAIN_PROC")
    with pytest.raises(ChildkitError) as err:
        childkit.connect(str(lib))
    assert err.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
    assert "NativeChildProcess_MainProc" in err.value.message


def test_null_stub(cc: Build) -> None:
    lib = _lib(cc, "libnullstub.so", "-DNULL_STUB")
    with pytest.raises(ChildkitError) as err:
        childkit.connect(str(lib))
    assert err.value.code == ErrCode.NCP_ERR_CONNECTION_FAILED
    assert "NativeChildProcess_OnConnect" in err.value.message and "NULL" in err.value.message


def test_create_native_child_process_callback(seed_lib: Path) -> None:
    got: list[tuple[ErrCode, object]] = []
    started = threading.Event()

    def on_started(code: ErrCode, proxy: childkit.ipc.RemoteProxy | None) -> None:
        got.append((code, proxy))
        if proxy is not None:
            assert _int_call(proxy, ADD_ONE, 1) == 2
            _exit(proxy)
        started.set()

    childkit.create_native_child_process(str(seed_lib), on_started)
    assert started.wait(60)
    assert got[0][0] == ErrCode.NCP_NO_ERROR


def test_current_args_in_a_c_args_child(cc: Build) -> None:
    """OH_Ability_GetCurrentChildProcessArgs() in a C args-mode child (launched from
    Python) returns its start-up args."""
    lib = cc("libargs_probe.so", ["args_probe.c"], flags=["-shared", "-fPIC"])
    r, w = os.pipe()
    try:
        childkit.start_native_child_process(
            f"{lib}:Main", childkit.ChildProcessArgs("p\u00e4rams", {"out": w, "extra": w}))
        os.close(w)
        w = -1
        assert os.read(r, 256) == "current=p\u00e4rams;fds=extra,out,;same=1\n".encode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_seed_child_built_as_cpp(cc: Build) -> None:
    """The same child compiled as C++ (the seed's ``extern "C"`` block) serves as well."""
    lib = cc("libchildprocesssample_cpp.so", ["seed_child.c"],
             flags=["-x", "c++", "-shared", "-fPIC"])
    with childkit.connect(str(lib)) as child:
        assert _int_call(child.proxy, ADD_ONE, 41) == 42
        _exit(child.proxy)
        info = child.wait(30)
        assert info is not None and info.exit_code == 0


def test_c_and_python_children_drain_replies_alike() -> None:
    """A native IPC child holds its exit for the replies in flight as long as a Python
    child does (the constant is repeated because native sits below the launcher)."""
    from childkit.launcher._replies import DRAIN_TIMEOUT
    from childkit.native._child import DRAIN_MS

    assert round(DRAIN_TIMEOUT * 1000) == DRAIN_MS


@pytest.mark.parametrize("mode", [childkit.IsolationMode.NORMAL, childkit.IsolationMode.ISOLATED])
def test_c_code_in_a_python_child_may_not_start_children(mode: childkit.IsolationMode) -> None:
    # A Python-entry child that loads C code calling libchild_process.so is a child there
    # too (the CHILDKIT_ROLE marker; an isolated one has it after its sandbox scrubbed the
    # environment and gave it a pid of its own): the start is refused, as a C child's is.
    read, write = os.pipe()
    try:
        with exit_recorder() as rec:
            pid = childkit.start_native_child_process(
                "workers.args_entries:c_start_refused",
                childkit.ChildProcessArgs(fds={"out": write}),
                childkit.ChildProcessOptions(isolation_mode=mode))
            os.close(write)
            write = -1
            answer = json.loads(read_all(read))
            assert rec.wait_for(pid).exit_code == 0
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert answer == {"create": ErrCode.NCP_ERR_ALREADY_IN_CHILD, "supported": False}
