"""Topics shared through a real ``redis-server``: across servers and processes, outages, order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import AsyncClient, ErrorReply, Server, Subscription, Topic
from asyncapy.shared.redis import RedisState
from asyncapy.shared.state import SHARED_STATE_UNAVAILABLE, SharedStateUnavailable

from ..conftest import make_server, running
from ..procs import free_port, server_process
from ..services import RedisProcess, redis_server  # noqa: F401  (fixture)

#: Redis calls of tests that do not test timeouts: generous, the machine may be busy.
TIMEOUT = 3.0
#: Bounds every wait for an event (seconds).
WAIT = 15.0
#: Events one publisher sends in the order test.
IN_ORDER = 300
#: Publishes tried while waiting for a reconnected receiver (one every ``RETRY_EVERY`` s).
RETRIES = 200
RETRY_EVERY = 0.05


class Tick(BaseModel):
    symbol: str
    price: float
    seq: int = 0


def instance(url: str, timeout: float = TIMEOUT) -> tuple[Server, Topic[Tick]]:
    """One "instance": its own server and state, sharing the namespace of the others."""
    server = make_server(shared_state=RedisState(url, namespace="topics", timeout=timeout))
    return server, server.topic("prices", Tick)


async def next_event(events: Subscription[Tick]) -> Tick:
    return await asyncio.wait_for(events.__anext__(), WAIT)


async def close(*servers: Server) -> None:
    for server in servers:
        assert server.shared_state is not None
        await server.shared_state.aclose()  # type: ignore[attr-defined]


async def test_a_publish_reaches_every_instance_once_and_in_order(redis_server: RedisProcess) -> None:  # noqa: F811
    (a, on_a), (b, on_b) = instance(redis_server.url), instance(redis_server.url)
    try:
        async with on_a.subscribe() as here, on_b.subscribe() as there, on_b.subscribe() as there_too:
            for seq in range(IN_ORDER):
                await on_a.publish(Tick(symbol="ACME", price=1.5, seq=seq))
            for events in (here, there, there_too):
                assert [(await next_event(events)).seq for _ in range(IN_ORDER)] == list(range(IN_ORDER))
            await on_b.publish({"symbol": "B", "price": 2})
            for events in (here, there, there_too):
                assert (await next_event(events)).symbol == "B"
            await asyncio.sleep(0.2)  # a duplicate (this process's own echo) would have arrived by now
            assert here.pending == there.pending == 0
    finally:
        await close(a, b)


async def test_one_redis_connection_per_process_whatever_the_subscribers(redis_server: RedisProcess) -> None:  # noqa: F811
    (a, on_a), (b, on_b) = instance(redis_server.url), instance(redis_server.url)
    probe = RedisState(redis_server.url, timeout=TIMEOUT)
    try:
        async with contextlib_many(on_b, 50) as subs:
            numsub = await probe.redis.pubsub_numsub("topics:topic:prices")
            assert numsub == [(b"topics:topic:prices", 1)]  # b's one receiver, not 50
            await on_a.publish(Tick(symbol="X", price=1))
            for events in subs:
                assert (await next_event(events)).symbol == "X"
    finally:
        await close(a, b)
        await probe.aclose()


def contextlib_many(topic: Topic[Tick], n: int) -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def many() -> AsyncIterator[list[Subscription[Tick]]]:
        async with contextlib.AsyncExitStack() as stack:
            yield [await stack.enter_async_context(topic.subscribe()) for _ in range(n)]

    return many()


async def test_redis_down_fails_publishes_fast_and_subscriptions_resume(redis_server: RedisProcess) -> None:  # noqa: F811
    (a, on_a), (b, on_b) = instance(redis_server.url, timeout=0.5), instance(redis_server.url, timeout=0.5)
    try:
        async with on_b.subscribe() as events:
            await on_a.publish(Tick(symbol="before", price=1))
            assert (await next_event(events)).symbol == "before"
            redis_server.kill()
            started = time.monotonic()
            with pytest.raises(SharedStateUnavailable) as info:
                await on_a.publish(Tick(symbol="lost", price=2))
            assert time.monotonic() - started < 3  # bounded by the timeout, not hung
            assert info.value.code == "ERR_INTERNAL" and info.value.detail == SHARED_STATE_UNAVAILABLE
            redis_server.start()  # back, on the same port: the receiver reconnects by itself
            assert (await wait_until_delivered(on_a, events)).symbol == "after"
            assert events.pending == 0  # "lost" never came: nobody received it
    finally:
        await close(a, b)


async def test_a_stopped_redis_times_publishes_out_and_then_delivers_again(redis_server: RedisProcess) -> None:  # noqa: F811
    (a, on_a), (b, on_b) = instance(redis_server.url, timeout=0.5), instance(redis_server.url, timeout=0.5)
    try:
        async with on_b.subscribe() as events:
            redis_server.pause()  # SIGSTOP: connections stay, nothing answers
            started = time.monotonic()
            with pytest.raises(SharedStateUnavailable):
                await on_a.publish(Tick(symbol="late", price=1))
            assert time.monotonic() - started < 3
            redis_server.resume()
            assert (await wait_until_delivered(on_a, events)).symbol == "after"
    finally:
        await close(a, b)


async def wait_until_delivered(topic: Topic[Tick], events: Subscription[Tick]) -> Tick:
    """Publish "after" until the subscription receives it (its receiver may still be reconnecting)."""
    for _ in range(RETRIES):
        try:
            await topic.publish(Tick(symbol="after", price=3))
        except SharedStateUnavailable:
            pass  # the publisher's connection is not back yet
        try:
            return await asyncio.wait_for(events.__anext__(), RETRY_EVERY)
        except asyncio.TimeoutError:
            continue
    raise AssertionError(f"nothing delivered within {RETRIES} tries after Redis came back")


async def test_a_request_that_publishes_gets_err_internal_while_redis_is_down(redis_server: RedisProcess) -> None:  # noqa: F811
    server, prices = instance(redis_server.url, timeout=0.5)

    @server.add_handler()
    async def publish(client: Any, packet: Tick) -> dict[str, str]:
        await prices.publish(packet)
        return {"published": packet.symbol}

    try:
        async with running(server), AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"symbol": "A", "price": 1}) == {"published": "A"}
            redis_server.kill()
            with pytest.raises(ErrorReply) as info:
                await client.request({"symbol": "A", "price": 1}, raise_errors=True)
            assert info.value.code == "ERR_INTERNAL" and info.value.detail == SHARED_STATE_UNAVAILABLE
            redis_server.start()
            for _ in range(RETRIES):  # the pool reconnects on the next call
                try:
                    assert await client.request({"symbol": "A", "price": 1}, raise_errors=True) == {"published": "A"}
                    break
                except ErrorReply:
                    await asyncio.sleep(RETRY_EVERY)
            else:
                raise AssertionError("publishing did not resume after Redis came back")
    finally:
        await close(server)


def test_a_publish_in_one_server_process_reaches_a_subscriber_in_another(redis_server: RedisProcess) -> None:  # noqa: F811
    """Two real server processes sharing Redis: a request to one publishes, a connection to the other receives."""
    ports = free_port(), free_port()
    app = "tests/servers/topics_app.py"
    with server_process([app, str(ports[0]), redis_server.url], ports[0]), server_process([app, str(ports[1]), redis_server.url], ports[1]):
        asyncio.run(_publish_here_receive_there(*ports))


async def _publish_here_receive_there(publisher_port: int, watcher_port: int) -> None:
    async with AsyncClient("127.0.0.1", watcher_port) as watcher, AsyncClient("127.0.0.1", publisher_port) as publisher:
        await watcher.send({"watch": "ACME", "count": 3})
        assert await asyncio.wait_for(watcher.receive(), WAIT) == {"subscribed": "ACME"}
        for seq, symbol in enumerate(["ACME", "OTHER", "ACME", "ACME"]):
            assert await publisher.request({"symbol": symbol, "price": 9.5, "seq": seq}) == {"published": symbol}
        got = [await asyncio.wait_for(watcher.receive(), WAIT) for _ in range(3)]
        assert got == [{"symbol": "ACME", "price": 9.5, "seq": seq} for seq in (0, 2, 3)]
