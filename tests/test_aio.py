"""childkit.aio: starting children from a running loop, the awaitable proxy face, pools
and executors, and cancellation at awkward moments (default loop and uvloop). Every test
checks that no child, fd or thread is left behind."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

import childkit
from child_helpers import no_child_leaks, wait_until
from childkit import ErrCode, aio
from childkit.ipc import (
    DeadRemoteObjectError,
    IPCErrorCode,
    MessageOption,
    MessageParcel,
    ParamError,
    RequestMode,
)
from childkit.process._manager import manager
from workers import echo_worker as ew

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
ENTRY = "workers.echo_worker"


@pytest.fixture(autouse=True, scope="module")
def _uvloop_globals() -> None:
    """uvloop's first loop opens two fds (libuv's process-wide signal pipe) that stay for
    the process: open them before the per-test leak checks count fds."""
    loop = uvloop.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


@pytest.fixture(autouse=True)
def _no_leaks(_uvloop_globals: None) -> Iterator[None]:
    with no_child_leaks():
        yield


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    loop = LOOPS[request.param]()
    yield loop.run_until_complete
    loop.close()


def test_connect_and_await_calls(run: Callable[..., Any]) -> None:
    async def main() -> list[int]:
        child = await aio.connect("workers.echo_worker")
        try:
            data = MessageParcel()
            data.write_int32(1)
            replies = await aio.send_requests(child.proxy, [(1, data)] * 5)  # ADD_ONE
            return [r.read_int32() for r in replies]
        finally:
            child.close()

    assert run(main()) == [2] * 5


def test_many_children_at_once(run: Callable[..., Any]) -> None:
    async def main() -> set[int]:
        children = await asyncio.gather(*(aio.connect("workers.echo_worker") for _ in range(5)))
        try:
            pids = []
            for child in children:
                reply = await aio.send_request(child.proxy, 2, MessageParcel())  # PID
                pids.append(reply.read_int32())
            assert pids == [c.pid for c in children]
            return set(pids)
        finally:
            for child in children:
                child.close()

    assert len(run(main())) == 5


def test_create_native_child_process(run: Callable[..., Any]) -> None:
    async def main() -> int:
        proxy = await aio.create_native_child_process("workers.echo_worker")
        data = MessageParcel()
        data.write_int32(41)
        value = (await aio.send_request(proxy, 1, data)).read_int32()
        quit_data = MessageParcel()
        quit_data.write_int32(0)
        proxy.send_request(3, quit_data, MessageOption(RequestMode.ASYNC))  # QUIT
        return value

    assert run(main()) == 42


def test_start_errors_raise(run: Callable[..., Any]) -> None:
    async def main() -> None:
        with pytest.raises(childkit.ChildkitError) as err:
            await aio.connect("workers.no_stub_worker")
        assert err.value.code == ErrCode.NCP_ERR_CONNECTION_FAILED
        with pytest.raises(childkit.ChildkitError) as err:
            await aio.create_native_child_process("no_such_module_here")
        assert err.value.code == ErrCode.NCP_ERR_LIB_LOADING_FAILED
        with pytest.raises(childkit.ChildkitError) as err:
            await aio.connect("")
        assert err.value.code == ErrCode.NCP_ERR_INVALID_PARAM

    run(main())


def test_pool_and_executor_from_the_loop(run: Callable[..., Any]) -> None:
    from childkit.pool._executor import ChildProcessExecutor
    from childkit.pool._pool import ChildProcessPool

    async def main() -> tuple[list[int], list[int]]:
        with ChildProcessPool("workers.echo_worker", size=2) as pool:
            parcels = []
            for i in range(10):
                p = MessageParcel()
                p.write_int32(i)
                parcels.append(p)
            replies = await asyncio.gather(*(aio.pool_request(pool, 1, p) for p in parcels))
            added = [r.read_int32() for r in replies]
        with ChildProcessExecutor(2) as executor:
            results = await asyncio.gather(*(aio.run_in_executor(executor, abs, -i)
                                             for i in range(10)))
        return added, list(results)

    added, results = run(main())
    assert added == [i + 1 for i in range(10)]
    assert results == list(range(10))


# ---------------------------------------------------------------------------- the proxy face
def test_async_proxy_awaits_send_request(run: Callable[..., Any]) -> None:
    async def main() -> tuple[int, list[int], bool]:
        child = await aio.connect(ENTRY)
        try:
            assert isinstance(child, childkit.ChildConnection)  # still the sync face too
            proxy = child.aproxy
            assert isinstance(proxy, aio.AsyncProxy) and proxy.proxy is child.proxy
            data = MessageParcel()
            data.write_int32(41)
            one = (await proxy.send_request(ew.ADD_ONE, data)).read_int32()
            many = await proxy.send_requests([(ew.ADD_ONE, data)] * 3)
            wrapped = aio.AsyncProxy(child.proxy)
            pid = (await wrapped.send_request(ew.PID, MessageParcel())).read_int32()
            assert pid == child.pid
            return one, [r.read_int32() for r in many], proxy.is_object_dead()  # delegated
        finally:
            child.close()

    assert run(main()) == (42, [42, 42, 42], False)


def test_async_proxy_refuses_what_is_not_a_proxy() -> None:
    with pytest.raises(ParamError, match="RemoteProxy"):
        aio.AsyncProxy(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("requests", [None, 5, [(1,)], [7]])
def test_send_requests_refuses_what_is_not_pairs(run: Callable[..., Any],
                                                 requests: object) -> None:
    async def main() -> None:
        child = await aio.connect(ENTRY)
        try:
            with pytest.raises(ParamError, match="pair"):
                child.proxy.send_requests(requests)  # type: ignore[arg-type]
            with pytest.raises(ParamError, match="pair"):
                await aio.send_requests(child.proxy, requests)  # type: ignore[arg-type]
            with pytest.raises(ParamError, match="pair"):
                await aio.AsyncProxy(child.proxy).send_requests(requests)  # type: ignore[arg-type]
        finally:
            child.close()

    run(main())


def test_async_proxy_on_a_dead_child_raises_dead_object(run: Callable[..., Any]) -> None:
    async def main() -> None:
        child = await aio.connect(ENTRY)
        child.close()
        with pytest.raises(DeadRemoteObjectError) as info:
            await child.aproxy.send_request(ew.PID, MessageParcel())
        assert info.value.code == IPCErrorCode.OH_IPC_DEAD_REMOTE_OBJECT

    run(main())


# ---------------------------------------------------------------------------- cancellation
def _start_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "childkit-start")


def _starter(kind: str) -> Callable[[], Coroutine[Any, Any, Any]]:
    if kind == "connect":
        return lambda: aio.connect(ENTRY)
    return lambda: aio.create_native_child_process(ENTRY)


@pytest.mark.parametrize("kind", ["connect", "create"])
@pytest.mark.parametrize("moment", ["before_running", "while_starting", "started_not_resumed"])
def test_cancelled_start_stops_its_child(run: Callable[..., Any], kind: str,
                                         moment: str) -> None:
    async def main() -> int:
        task = asyncio.ensure_future(_starter(kind)())
        if moment != "before_running":
            await asyncio.sleep(0)  # the task ran: its start thread is off
            assert manager().live_count() == 1  # the slot is taken
        if moment == "started_not_resumed":
            # Hold the loop (so the task cannot resume) until the start thread has
            # finished: the child runs and its hand-over is queued on the loop.
            assert wait_until(lambda: _start_threads() == 0, 60)
            assert manager().live_count() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Nobody owns the child now: it must be stopped and reaped without any help.
        for _ in range(200):
            if manager().live_count() == 0:
                break
            await asyncio.sleep(0.05)
        assert manager().live_count() == 0
        # Starting still works afterwards.
        child = await aio.connect(ENTRY)
        try:
            return (await child.aproxy.send_request(ew.PID, MessageParcel())).read_int32()
        finally:
            child.close()

    assert run(main()) > 0


def test_start_abandoned_by_a_closed_loop_stops_its_child() -> None:
    loop = asyncio.new_event_loop()
    try:
        async def begin() -> asyncio.Task[Any]:
            task = asyncio.ensure_future(aio.connect(ENTRY))
            await asyncio.sleep(0)
            return task

        task = loop.run_until_complete(begin())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(task)
    finally:
        loop.close()
    assert wait_until(lambda: manager().live_count() == 0)


def test_cancelled_pool_request_returns_its_member(run: Callable[..., Any]) -> None:
    from childkit.pool._pool import ChildProcessPool

    async def main() -> list[int]:
        with ChildProcessPool(ENTRY, size=1) as pool:
            member = pool._members[0]
            data = MessageParcel()
            data.write_int32(1)
            # Cancelled before it ran, and after its request went out (reply pending).
            for steps in (0, 1):
                task = asyncio.ensure_future(aio.pool_request(pool, ew.ADD_ONE, data))
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert member.inflight == 0
            # The connection stays usable, awaited and blocking.
            out = [(await aio.pool_request(pool, ew.ADD_ONE, data)).read_int32()]
            with pool.acquire() as proxy:
                out.append(proxy.send_request(ew.ADD_ONE, data).read_int32())
            assert pool.pids == [member.conn.pid]
            return out

    assert run(main()) == [2, 2]


def test_cancelled_pool_wait_for_a_member_leaves_no_waiter(run: Callable[..., Any]) -> None:
    from childkit.pool._pool import ChildProcessPool

    async def main() -> int:
        with ChildProcessPool(ENTRY, size=1, max_requests_per_child=1) as pool:
            gate = threading.Event()
            start_member = pool._start_member

            def gated() -> Any:
                assert gate.wait(60)
                return start_member()

            pool._start_member = gated  # type: ignore[method-assign]
            data = MessageParcel()
            data.write_int32(1)
            assert (await aio.pool_request(pool, ew.ADD_ONE, data)).read_int32() == 2
            # The only member retired; its replacement waits at the gate.
            task = asyncio.ensure_future(aio.pool_request(pool, ew.ADD_ONE, data))
            for _ in range(100):
                if pool._wakers:
                    break
                await asyncio.sleep(0.01)
            assert len(pool._wakers) == 1  # waiting on the loop, no thread
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not pool._wakers
            # A waiter that is woken by the replacement gets its answer.
            waiting = asyncio.ensure_future(aio.pool_request(pool, ew.ADD_ONE, data))
            await asyncio.sleep(0)
            gate.set()
            return (await asyncio.wait_for(waiting, 60)).read_int32()

    assert run(main()) == 2


def test_cancelled_executor_call_leaves_the_executor_usable(run: Callable[..., Any]) -> None:
    from childkit.pool._executor import ChildProcessExecutor

    async def main() -> list[int]:
        with ChildProcessExecutor(1) as executor:
            busy = asyncio.ensure_future(aio.run_in_executor(executor, time.sleep, 0.2))
            await asyncio.sleep(0)
            # Cancelled before it ran, and queued behind the busy worker.
            for steps in (0, 1):
                task = asyncio.ensure_future(aio.run_in_executor(executor, abs, -5))
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            busy.cancel()  # running in its worker: it finishes there, dropped here
            with pytest.raises(asyncio.CancelledError):
                await busy
            return list(await asyncio.gather(*(aio.run_in_executor(executor, abs, -i)
                                               for i in range(4))))

    assert run(main()) == [0, 1, 2, 3]
