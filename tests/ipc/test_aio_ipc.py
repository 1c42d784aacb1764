"""Awaited IPC calls: on the default loop and uvloop, with threads, cancellation, death."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import peer_main as pm
import pytest
import uvloop
from ipc_helpers import Peer, non_pool_threads, wait_until

from childkit import aio
from childkit.ipc import (
    DeadRemoteObjectError,
    IPCError,
    IPCTimeoutError,
    MessageOption,
    MessageParcel,
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    loop = LOOPS[request.param]()

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        return loop.run_until_complete(coro)

    yield runner
    loop.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def ints(*values: int) -> MessageParcel:
    p = MessageParcel()
    for v in values:
        p.write_int32(v)
    return p


def test_awaited_calls_concurrently(peer: Peer, run: Callable[..., Any]) -> None:
    threads_before = non_pool_threads()

    async def main() -> list[int]:
        replies = await aio.send_requests(peer.proxy, [(pm.ADD_ONE, ints(i)) for i in range(200)])
        assert non_pool_threads() <= threads_before  # no thread per waiting call
        return [r.read_int32() for r in replies]

    assert run(main()) == [i + 1 for i in range(200)]
    assert not peer.conn._caller.leader  # the loop gave the reader role back


def test_cancelled_call_leaves_connection_usable(peer: Peer, run: Callable[..., Any]) -> None:
    async def main() -> int:
        task = asyncio.ensure_future(
            aio.send_request(peer.proxy, pm.SLEEP_UNTIL_RELEASED, MessageParcel()))
        assert await asyncio.to_thread(wait_until, lambda: peer.conn.outstanding_calls() == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        peer.proxy.send_request(pm.RELEASE, MessageParcel()).close()
        reply = await aio.send_request(peer.proxy, pm.ADD_ONE, ints(1))
        return reply.read_int32()

    assert run(main()) == 2


def test_timeout(peer: Peer, run: Callable[..., Any]) -> None:
    async def main() -> None:
        with pytest.raises(IPCTimeoutError):
            await aio.send_request(peer.proxy, pm.SLEEP_UNTIL_RELEASED, MessageParcel(),
                                   MessageOption(timeout=0.1))
        await aio.send_request(peer.proxy, pm.RELEASE, MessageParcel())

    run(main())


def test_errors_propagate(peer: Peer, run: Callable[..., Any]) -> None:
    async def main() -> None:
        with pytest.raises(IPCError) as err:
            await aio.send_request(peer.proxy, pm.USER_ERROR, MessageParcel())
        assert err.value.code == 1909042
        with pytest.raises(IPCError):
            await aio.send_request(peer.proxy, 0, MessageParcel())

    run(main())


def test_mixed_with_sync_calls_from_threads(peer: Peer, run: Callable[..., Any]) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        try:
            while not stop.is_set():
                with peer.proxy.send_request(pm.ADD_ONE, ints(5)) as r:
                    assert r.read_int32() == 6
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(3)]
    for w in workers:
        w.start()

    async def main() -> None:
        for _ in range(20):
            batch = [(pm.ADD_ONE, ints(i)) for i in range(20)]
            replies = await aio.send_requests(peer.proxy, batch)
            assert [r.read_int32() for r in replies] == [i + 1 for i in range(20)]

    try:
        run(main())
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    assert not errors


def test_sync_call_from_the_loop_thread_while_awaiting(peer: Peer, run: Callable[..., Any]) -> None:
    async def main() -> int:
        pending = asyncio.ensure_future(
            aio.send_request(peer.proxy, pm.SLEEP_UNTIL_RELEASED, MessageParcel()))
        assert await asyncio.to_thread(wait_until, lambda: peer.conn._loop.loop_leader is not None)
        # A blocking call inside the loop: the loop cannot read, so this thread does.
        with peer.proxy.send_request(pm.ADD_ONE, ints(41)) as r:
            value = r.read_int32()
        peer.proxy.send_request(pm.RELEASE, MessageParcel()).close()
        await pending
        return value

    assert run(main()) == 42


def test_peer_death_fails_awaited_calls(peer: Peer, run: Callable[..., Any]) -> None:
    async def main() -> None:
        tasks = [asyncio.ensure_future(aio.send_request(peer.proxy, pm.BLOCK, MessageParcel()))
                 for _ in range(10)]
        assert await asyncio.to_thread(wait_until, lambda: peer.conn.outstanding_calls() == 10)
        peer.proc.kill()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, DeadRemoteObjectError) for r in results)

    run(main())
    peer.proc.wait()


def test_sync_calls_work_on_a_call_socket_an_event_loop_made_non_blocking(
    peer: Peer, run: Callable[..., Any]
) -> None:
    # An event loop that reads the call socket may leave it O_NONBLOCK (libuv does):
    # sync calls made afterwards must wait for their replies and for room to write,
    # not fail with EAGAIN.
    async def main() -> int:
        reply = await aio.send_request(peer.proxy, pm.ADD_ONE, ints(1))
        return int(reply.read_int32())

    assert run(main()) == 2
    call_fd = peer.conn._transport.call.fileno()
    os.set_blocking(call_fd, False)  # whatever this loop did: make it so
    for i in range(200):
        with peer.proxy.send_request(pm.ADD_ONE, ints(i)) as reply:
            assert reply.read_int32() == i + 1
    replies = peer.proxy.send_requests([(pm.ADD_ONE, ints(i)) for i in range(500)])
    assert [r.read_int32() for r in replies] == [i + 1 for i in range(500)]
    with peer.proxy.send_request(pm.ADD_ONE, ints(3), MessageOption(timeout=30)) as reply:
        assert reply.read_int32() == 4

    # A long wait: this thread reads (nothing comes until another thread releases it).
    def release_once_waiting() -> None:
        assert wait_until(lambda: peer.conn.outstanding_calls() == 1)
        peer.proxy.send_request(pm.RELEASE, MessageParcel()).close()

    releaser = threading.Thread(target=release_once_waiting)
    releaser.start()
    peer.proxy.send_request(pm.SLEEP_UNTIL_RELEASED, MessageParcel()).close()
    releaser.join(30)
    assert not releaser.is_alive()
    assert not os.get_blocking(call_fd)
