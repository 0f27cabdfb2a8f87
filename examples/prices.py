"""A price feed: a typed topic, a streaming handler that subscribes, a handler that publishes.

- ``quote`` publishes a ``Tick`` on the ``prices`` topic;
- ``watch`` streams the ticks of the symbols a client asks for, as they are published,
  until the client leaves (its subscription closes with the stream);
- with ``ASYNCAPY_REDIS_URL`` set (``pip install 'asyncapy[redis]'``), every instance
  sharing that Redis shares the topic: a quote sent to one reaches the watchers of all.

Serve it with ``.venv/bin/asyncapy run examples.prices:server --port 1500``; a second
instance on port 1501 with the same ``ASYNCAPY_REDIS_URL=redis://127.0.0.1:6379/0``
shares its quotes. Then, from Python:

    with Client("127.0.0.1", 1500) as client:
        for tick in client.stream(Watch(symbols=["ACME"]), item=Tick):
            print(tick.symbol, tick.price)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from asyncapy import Client, Packet, Server
from asyncapy.shared.state import SharedState

Symbol = Annotated[str, Field(pattern=r"^[A-Z]{1,8}$")]


class Quote(BaseModel):
    kind: Literal["quote"]
    symbol: Symbol
    price: float = Field(gt=0)


class Watch(BaseModel):
    kind: Literal["watch"] = "watch"
    symbols: list[Symbol] = Field(min_length=1, max_length=50)


class Tick(BaseModel):
    symbol: str
    price: float


class Published(BaseModel):
    kind: Literal["published"] = "published"
    symbol: str


def shared_state() -> SharedState | None:
    """Redis when ``ASYNCAPY_REDIS_URL`` is set: then instances share the topic."""
    url = os.environ.get("ASYNCAPY_REDIS_URL")
    if not url:
        return None
    from asyncapy.redis import RedisState  # imported only when used

    return RedisState(url, namespace="prices", timeout=2.0)


server = Server("127.0.0.1", 1500, shared_state=shared_state())
prices = server.topic("prices", Tick, max_buffered=1000)


@server.add_handler()
async def quote(client: Client, packet: Packet[Quote]) -> Published:
    """Publish a price to every watcher of its symbol (on every instance, with Redis)."""
    await prices.publish(Tick(symbol=packet.data.symbol, price=packet.data.price))
    return Published(symbol=packet.data.symbol)


@server.add_handler()
async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
    """Stream the prices of some symbols as they are published, until the client stops."""
    wanted = set(packet.data.symbols)
    async with prices.subscribe() as ticks:
        async for tick in ticks:
            if tick.symbol in wanted:
                yield tick


if __name__ == "__main__":
    server.start()
