"""ChildProcessPool: least-loaded hand-out, replacement of dead members with the caller
told (DeadRemoteObjectError), recycling, the 50-children limit at its edge, clean close.

This module is also the entry of a pool member that kills itself while answering a
request (``ENTRY_SELF``: ``on_connect``/``main_proc`` below, imported by the child)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

import childkit
from child_helpers import (
    no_child_leaks,
    wait_until,
)
from childkit import ChildkitError, ErrCode
from childkit.ipc import (
    DeadRemoteObjectError,
    IPCErrorCode,
    MessageOption,
    MessageParcel,
    RemoteProxy,
    RemoteStub,
)
from childkit.pool._executor import ExecutorParamError
from childkit.pool._pool import ChildProcessPool
from childkit.process._manager import manager
from workers import echo_worker as ew

ENTRY = "workers.echo_worker"
ENTRY_SELF = "test_pool"  # this module, as a child's entry (see the stub below)
DIE = 99  # the self-killing member's code: SIGKILL itself while answering


class _DyingStub(RemoteStub):
    """Answers ew.PID and ew.ADD_ONE; on DIE kills its own process mid-request."""

    def __init__(self) -> None:
        super().__init__("childkit.test.DyingMember")

    def on_remote_request(
        self, code: int, data: MessageParcel, reply: MessageParcel, option: MessageOption
    ) -> int:
        if code == DIE:
            os.kill(os.getpid(), signal.SIGKILL)  # no reply is ever written
        if code == ew.PID:
            reply.write_int32(os.getpid())
        elif code == ew.ADD_ONE:
            reply.write_int32(data.read_int32() + 1)
        else:
            return 1909001
        return 0


def on_connect() -> RemoteStub:
    return _DyingStub()


def main_proc() -> None:
    threading.Event().wait()  # until the parent closes it (or it kills itself)


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    with no_child_leaks():
        yield


def pid_of(proxy: RemoteProxy) -> int:
    with MessageParcel() as data:
        reply = proxy.send_request(ew.PID, data)
    with reply:
        return reply.read_int32()


def add_one(pool: ChildProcessPool, value: int) -> int:
    with MessageParcel() as data:
        data.write_int32(value)
        reply = pool.send_request(ew.ADD_ONE, data)
    with reply:
        return reply.read_int32()


def test_members_answer_and_hand_out_is_least_loaded() -> None:
    with ChildProcessPool(ENTRY, size=3) as pool:
        assert len(pool.pids) == 3
        assert add_one(pool, 41) == 42
        # Three proxies held at once come from three different members.
        with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            assert sorted({pid_of(a), pid_of(b), pid_of(c)}) == sorted(pool.pids)
            # The fourth goes to a member with one in flight (all have one): still valid.
            with pool.acquire() as d:
                assert pid_of(d) in pool.pids


def test_dead_member_fails_its_caller_and_is_replaced() -> None:
    with ChildProcessPool(ENTRY, size=2) as pool:
        with pool.acquire() as proxy:
            holder = pid_of(proxy)
            assert holder in pool.pids
            childkit.kill_child_process(holder)
            with pytest.raises(DeadRemoteObjectError):
                pid_of(proxy)
        assert wait_until(lambda: holder not in pool.pids and len(pool.pids) == 2)
        assert pool.wait_ready(2)
        assert add_one(pool, 1) == 2


def test_no_restart_keeps_fewer_members() -> None:
    with ChildProcessPool(ENTRY, size=2, restart=False) as pool:
        gone = pool.pids[0]
        childkit.kill_child_process(gone)
        assert wait_until(lambda: pool.pids == [p for p in pool.pids if p != gone]
                          and len(pool.pids) == 1)
        assert add_one(pool, 2) == 3


def test_max_requests_per_child_recycles() -> None:
    with ChildProcessPool(ENTRY, size=1, max_requests_per_child=2) as pool:
        seen = []
        for _ in range(6):
            with pool.acquire(timeout=30) as proxy:
                seen.append(pid_of(proxy))
        assert len(set(seen)) == 3


def test_limit_counts_other_children_at_the_edge() -> None:
    others = []
    try:
        for _ in range(47):
            others.append(childkit.connect(ENTRY))
        assert manager().live_count() == 47
        with pytest.raises(ChildkitError) as info:
            ChildProcessPool(ENTRY, size=4)
        assert info.value.code == ErrCode.NCP_ERR_MAX_CHILD_PROCESSES_REACHED
        with ChildProcessPool(ENTRY, size=3) as pool:  # exactly 50
            assert manager().live_count() == 50
            assert add_one(pool, 0) == 1
    finally:
        for child in others:
            child.close()


def test_member_dying_mid_request_fails_that_caller_and_is_replaced() -> None:
    with ChildProcessPool(ENTRY_SELF, size=2) as pool:
        with pool.acquire() as proxy:
            victim = pid_of(proxy)
            with MessageParcel() as data, pytest.raises(DeadRemoteObjectError) as info:
                proxy.send_request(DIE, data)  # in flight when its process dies
        assert info.value.code == IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT
        assert wait_until(lambda: victim not in pool.pids and len(pool.pids) == 2)
        assert pool.wait_ready(2)
        assert pool.last_start_error is None
        assert add_one(pool, 7) == 8
        # Every member answers: the replacement and the one that never died.
        with pool.acquire() as a, pool.acquire() as b:
            assert sorted({pid_of(a), pid_of(b)}) == sorted(pool.pids)


def test_pool_send_request_tells_the_caller_its_member_died() -> None:
    with ChildProcessPool(ENTRY_SELF, size=1) as pool:
        first = pool.pids[0]
        with MessageParcel() as data, pytest.raises(DeadRemoteObjectError):
            pool.send_request(DIE, data)
        # Taken out at once (not when its death recipient's thread runs): the next
        # hand-out waits for the replacement instead of getting the dead member.
        assert first not in pool.pids
        assert pool.wait_ready(1)
        assert pool.pids != [first]
        assert add_one(pool, 1) == 2


def _pool_start_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "childkit-pool-start")


def test_recycling_at_the_limit_keeps_the_pool_full() -> None:
    # 47 other children + 3 members = 50: a recycled member's replacement cannot start
    # while the retiring member still holds its slot; it must start once that one is
    # reaped, not give up and leave the pool smaller.
    others = []
    try:
        for _ in range(47):
            others.append(childkit.connect(ENTRY))
        with ChildProcessPool(ENTRY, size=3, max_requests_per_child=1) as pool:
            assert manager().live_count() == 50
            for round_ in range(4):
                with pool.acquire(timeout=60) as proxy:
                    # The replacement's first try has run (refused: all 50 slots are
                    # taken while this retiring member answers).
                    assert wait_until(lambda: _pool_start_threads() == 0, 60)
                    assert manager().live_count() == 50
                    assert pid_of(proxy) not in pool.pids
                assert pool.wait_ready(3), f"round {round_}: {len(pool.pids)} members"
                assert pool.wait_ready()  # no replacement left pending
                assert pool.last_start_error is None
                assert manager().live_count() == 50
            assert add_one(pool, 0) == 1
    finally:
        for child in others:
            child.close()


def test_close_stops_retiring_members_too() -> None:
    pool = ChildProcessPool(ENTRY, size=1, max_requests_per_child=1)
    try:
        with pool.acquire() as proxy:
            retiring = pid_of(proxy)
            assert pool.wait_ready(1)
            pool.close()  # while the retiring member still has a request out
            assert wait_until(proxy.is_object_dead)
            with pytest.raises(DeadRemoteObjectError):
                pid_of(proxy)
        assert manager().announced_child(retiring) is None
    finally:
        pool.close()


@pytest.mark.parametrize("kwargs,match", [
    ({"size": 0}, "size"), ({"size": 51}, "size"), ({"size": True}, "size"),
    ({"size": 1, "max_requests_per_child": 0}, "max_requests"),
    ({"size": 1, "restart": 1}, "restart"),
])
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ExecutorParamError, match=match):
        ChildProcessPool(ENTRY, **kwargs)  # type: ignore[arg-type]


def test_bad_entry_starts_nothing() -> None:
    with pytest.raises(ChildkitError) as info:
        ChildProcessPool("workers.no_such_module", size=2)
    assert info.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED


def test_close_fails_in_flight_and_later_hand_outs() -> None:
    pool = ChildProcessPool(ENTRY, size=2)
    errors: list[BaseException] = []
    held = threading.Event()

    def hold() -> None:
        try:
            with pool.acquire() as proxy:
                held.set()
                assert wait_until(proxy.is_object_dead)
                pid_of(proxy)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(30)
    pool.close()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], DeadRemoteObjectError)
    with pytest.raises(DeadRemoteObjectError), pool.acquire():
        pass
    pool.close()  # idempotent
