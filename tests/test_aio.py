"""childkit.aio: starting children from a running loop (default loop and uvloop)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

import childkit
from childkit import ErrCode, aio
from childkit.ipc import MessageOption, MessageParcel, RequestMode

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


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
    from childkit._executor import ChildProcessExecutor
    from childkit._pool import ChildProcessPool

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
