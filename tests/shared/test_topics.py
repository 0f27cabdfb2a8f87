"""Typed topics in one process: registration, publish, bounded subscriptions, unsubscribe.

The end-to-end tests use a real server on a loopback port and a real client.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import AsyncClient, Client, EventInvalid, Packet, Router, Server, Topic, UsageError
from asyncapy.shared.topics import SlowConsumer
from asyncapy.wire.errors import ERR_SLOW_CONSUMER, ApiError

from ..conftest import make_server, running

#: Bounds every wait of these tests (seconds); none is expected to come near it.
WAIT = 10.0


class Tick(BaseModel):
    symbol: str
    price: float


class Watch(BaseModel):
    watch: str
    count: int


# -- registration ------------------------------------------------------------------------


def test_topic_is_typed_and_named() -> None:
    server = Server(port=0)
    prices = server.topic("prices", Tick)
    assert isinstance(prices, Topic) and prices.model is Tick and prices.max_buffered == 1000
    assert server.topics == {"prices": prices}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("", Tick), "non-empty"),
        (("two words", Tick), "letters, digits"),
        ((3, Tick), "non-empty"),
        (("prices", dict), "pydantic model class"),
        (("prices", Tick(symbol="A", price=1)), "pydantic model class"),
        (("prices", Tick, 0), "max_buffered"),
        (("prices", Tick, True), "max_buffered"),
    ],
)
def test_bad_topics_fail_at_registration(args: tuple[Any, ...], words: str) -> None:
    server = Server(port=0)
    with pytest.raises(UsageError, match=words) as info:
        server.topic(*args)
    assert repr(args[0]) in str(info.value)  # names the topic


def test_duplicate_names_fail_at_registration_across_routers() -> None:
    server = Server(port=0)
    server.topic("prices", Tick)
    with pytest.raises(UsageError, match="'prices'.*own name"):
        server.topic("prices", Tick)
    router = Router()
    router.topic("prices", Tick)
    with pytest.raises(UsageError, match="'prices'"):
        server.include_router(router)
    inner, outer = Router(), Router()
    outer.include_router(inner)
    outer.topic("orders", Tick)
    inner.topic("orders", Tick)  # added to the included router later: found when it is read
    with pytest.raises(UsageError, match="'orders'"):
        outer.topics()


def test_router_topics_are_the_servers() -> None:
    server, router = Server(port=0), Router()
    ticks = router.topic("ticks", Tick)
    server.include_router(router)
    assert server.topics["ticks"] is ticks


def test_topics_are_registered_before_serving() -> None:
    server = Server(port=0)
    server.compile()
    with pytest.raises(RuntimeError, match="before the server starts"):
        server.topic("late", Tick)


# -- publish and subscribe ---------------------------------------------------------------------


async def test_subscribers_get_what_is_published_after_they_subscribed() -> None:
    prices = Server(port=0).topic("prices", Tick)
    await prices.publish(Tick(symbol="OLD", price=0))  # nobody subscribed: nobody gets it
    async with prices.subscribe() as first, prices.subscribe() as second:
        event = Tick(symbol="ACME", price=12.5)
        await prices.publish(event)
        await prices.publish({"symbol": "ACME", "price": "13"})  # a dict is validated
        got = [await asyncio.wait_for(first.__anext__(), WAIT) for _ in range(2)]
        assert got[0] is event  # a model instance is handed over as it is, never copied
        assert got[1] == Tick(symbol="ACME", price=13.0)
        assert [await second.__anext__() for _ in range(2)] == got
    assert prices.subscribers == 0


async def test_publish_rejects_what_is_not_the_model() -> None:
    prices = Server(port=0).topic("prices", Tick)
    async with prices.subscribe() as events:
        with pytest.raises(EventInvalid, match="topic 'prices': the event is not a valid Tick") as info:
            await prices.publish({"symbol": "ACME", "price": "cheap"})
        assert info.value.validation_error is not None and info.value.topic == "prices"
        with pytest.raises(EventInvalid, match="takes a Tick or a dict, not a Watch"):
            await prices.publish(Watch(watch="x", count=1))  # type: ignore[arg-type]
        assert events.pending == 0  # nothing was published


async def test_an_instance_is_not_validated_again() -> None:
    prices = Server(port=0).topic("prices", Tick)
    unchecked = Tick.model_construct(symbol="RAW", price="not a float")  # type: ignore[arg-type]  # publish must not look
    async with prices.subscribe() as events:
        await prices.publish(unchecked)
        assert await asyncio.wait_for(events.__anext__(), WAIT) is unchecked


async def test_a_slow_consumer_ends_with_its_events_and_the_others_get_everything() -> None:
    prices = Server(port=0).topic("prices", Tick, max_buffered=5)
    fast_got: list[float] = []

    async def fast(events: Any) -> None:
        async for tick in events:
            fast_got.append(tick.price)
            if len(fast_got) == 20:
                return

    async with prices.subscribe() as slow, prices.subscribe() as quick:
        reader = asyncio.create_task(fast(quick))
        for i in range(20):
            await prices.publish(Tick(symbol="A", price=i))
            await asyncio.sleep(0)  # the fast one reads as it comes; the slow one never does
        await asyncio.wait_for(reader, WAIT)
        assert prices.subscribers == 1  # the slow one was dropped at once
        got = []
        with pytest.raises(ApiError) as info:
            async for tick in slow:
                got.append(tick.price)
        assert info.value.code == ERR_SLOW_CONSUMER and isinstance(info.value, SlowConsumer)
        assert got == [0, 1, 2, 3, 4]  # what it held, in order, then the error
        async for _ in slow:  # the error is raised once; then the iteration is over
            raise AssertionError("no more events after ERR_SLOW_CONSUMER")
    assert fast_got == list(range(20))


async def test_cancelling_a_subscriber_unsubscribes_it_at_once() -> None:
    prices = Server(port=0).topic("prices", Tick)
    entered = asyncio.Event()

    async def subscriber() -> None:
        async with prices.subscribe() as events:
            entered.set()
            async for _ in events:
                pass

    task = asyncio.create_task(subscriber())
    await asyncio.wait_for(entered.wait(), WAIT)
    assert prices.subscribers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert prices.subscribers == 0
    await prices.publish(Tick(symbol="A", price=1))  # goes nowhere, holds nothing


async def test_closing_a_generator_that_subscribed_unsubscribes() -> None:
    """The shape of a streaming handler: closing the generator (CANCEL, disconnect) leaves the subscription."""
    prices = Server(port=0).topic("prices", Tick)

    async def stream() -> Any:
        async with prices.subscribe() as events:
            async for tick in events:
                yield tick

    gen = stream()
    first = asyncio.ensure_future(gen.__anext__())
    while prices.subscribers == 0:
        await asyncio.sleep(0)
    await prices.publish(Tick(symbol="A", price=1))
    assert (await asyncio.wait_for(first, WAIT)).price == 1
    await gen.aclose()
    assert prices.subscribers == 0
    del gen, first
    gc.collect()


async def test_a_subscription_is_entered_once_and_iterated_inside() -> None:
    prices = Server(port=0).topic("prices", Tick)
    outside = prices.subscribe()
    with pytest.raises(RuntimeError, match="inside `async with"):
        await outside.__anext__()
    async with outside:
        pass
    with pytest.raises(RuntimeError, match="entered once"):
        async with outside:
            pass
    async for _ in outside:  # left: iterating ends at once
        raise AssertionError("a closed subscription yields nothing")


# -- through a real server -------------------------------------------------------------------------


def make_app() -> tuple[Server, Topic[Tick]]:
    server = make_server()
    prices = server.topic("prices", Tick)

    @server.add_handler()
    async def publish(client: Client, packet: Tick) -> dict[str, str]:
        await prices.publish(packet)
        return {"published": packet.symbol}

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> None:
        """A v1 handler that forwards ``count`` events of one symbol, then returns."""
        sent = 0
        async with prices.subscribe() as ticks:
            await client.send({"subscribed": packet.data.watch})
            async for tick in ticks:
                if tick.symbol == packet.data.watch:
                    await client.send(tick)
                    sent += 1
                    if sent == packet.data.count:
                        return

    return server, prices


async def test_a_request_publishes_and_a_subscribed_connection_receives() -> None:
    server, prices = make_app()
    async with running(server), AsyncClient("127.0.0.1", server.port) as watcher:
        await watcher.send({"watch": "ACME", "count": 2})
        assert await asyncio.wait_for(watcher.receive(), WAIT) == {"subscribed": "ACME"}
        async with AsyncClient("127.0.0.1", server.port) as publisher:
            for symbol, price in (("ACME", 1), ("OTHER", 2), ("ACME", 3)):
                assert await publisher.request({"symbol": symbol, "price": price}) == {"published": symbol}
        assert await asyncio.wait_for(watcher.receive(), WAIT) == {"symbol": "ACME", "price": 1.0}
        assert await asyncio.wait_for(watcher.receive(), WAIT) == {"symbol": "ACME", "price": 3.0}
    assert prices.subscribers == 0
