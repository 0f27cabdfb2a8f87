"""User-shaped streaming code (DESIGN §9), checked by ``mypy --strict`` (``test_mypy_streams``)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any

from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy import Client, Depends, Packet, Server
from asyncapy.client import AsyncClient, SyncItemStream
from asyncapy.client import Client as BlockingClient
from asyncapy.testing import AsyncTestClient, TestClient

server = Server(port=1500)


class Watch(BaseModel):
    symbol: str


class Tick(BaseModel):
    symbol: str
    price: float


async def feed(client: Client) -> AsyncIterator[str]:
    yield "feed"


@server.add_handler()
async def watch(client: Client, packet: Packet[Watch], source: Annotated[str, Depends(feed)]) -> AsyncIterator[Tick]:
    for n in range(3):
        yield Tick(symbol=packet.data.symbol, price=n)


@server.add_handler()
async def raw(client: Client, packet: Packet[Watch]) -> AsyncGenerator[dict[str, Any], None]:
    yield {"symbol": packet.data.symbol}


same: Callable[[Client, Packet[Watch], str], AsyncIterator[Tick]] = watch  # the decorator keeps the function


async def reads(client: AsyncClient, test_client: AsyncTestClient) -> None:
    async for tick in client.stream(Watch(symbol="ACME"), item=Tick):
        assert_type(tick, Tick)
    async for item in client.stream({"symbol": "ACME"}):
        assert_type(item, dict[str, Any])
    async with client.stream(Watch(symbol="ACME"), item=Tick, timeout=5) as ticks:
        async for tick in ticks:
            assert_type(tick, Tick)
    async for tick in test_client.stream(Watch(symbol="ACME"), item=Tick):
        assert_type(tick, Tick)


def reads_blocking(test_client: TestClient) -> None:
    for tick in test_client.stream(Watch(symbol="ACME"), item=Tick):
        assert_type(tick, Tick)


def reads_blocking_client(client: BlockingClient) -> None:
    for tick in client.stream(Watch(symbol="ACME"), item=Tick):
        assert_type(tick, Tick)
    for item in client.stream({"symbol": "ACME"}):
        assert_type(item, dict[str, Any])
    with client.stream(Watch(symbol="ACME"), item=Tick, timeout=5) as ticks:
        assert_type(ticks, SyncItemStream[Tick])
        assert_type(next(ticks), Tick)
        ticks.close()
