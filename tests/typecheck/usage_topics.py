"""User-shaped code of typed topics that must type-check under ``mypy --strict``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy import Client, Packet, Router, Server, Subscription, Topic


class Tick(BaseModel):
    symbol: str
    price: float


class Watch(BaseModel):
    symbol: str


server = Server(port=0)
prices = server.topic("prices", Tick, max_buffered=100)
assert_type(prices, Topic[Tick])
router = Router()
orders = router.topic("orders", Watch)
assert_type(orders, Topic[Watch])


@server.add_handler()
async def publish(client: Client, packet: Tick) -> None:
    await prices.publish(packet)
    await prices.publish({"symbol": "ACME", "price": 1.0})


@server.add_handler()
async def watch(client: Client, packet: Packet[Watch]) -> None:
    async with prices.subscribe() as ticks:
        assert_type(ticks, Subscription[Tick])
        async for tick in ticks:
            assert_type(tick, Tick)
            await client.send(tick)


async def stream(symbol: str) -> AsyncIterator[Tick]:
    """The shape of a streaming handler: closing it leaves the subscription."""
    async with prices.subscribe() as ticks:
        async for tick in ticks:
            if tick.symbol == symbol:
                yield tick
