"""The TestClients stream like the real clients (DESIGN §9): items typed, errors raised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from asyncapy import ApiError, Client, Packet, Server
from asyncapy.testing import AsyncTestClient, TestClient
from asyncapy.wire.errors import ClientError, ErrorReply


class Watch(BaseModel):
    symbol: str
    count: int = 3
    fail: bool = False


class Tick(BaseModel):
    symbol: str
    price: float


def build() -> Server:
    server = Server()

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        for n in range(packet.data.count):
            await asyncio.sleep(0)  # a generator that waits between items
            yield Tick(symbol=packet.data.symbol, price=n)
        if packet.data.fail:
            raise ApiError("ERR_MARKET_CLOSED", "closed")

    return server


async def test_the_async_test_client_streams_typed_items() -> None:
    async with AsyncTestClient(build()) as client:
        ticks = [tick async for tick in client.stream(Watch(symbol="ACME"), item=Tick)]
        assert ticks == [Tick(symbol="ACME", price=n) for n in range(3)]
        maps = [m async for m in client.stream({"symbol": "X", "count": 1})]
        assert maps == [{"symbol": "X", "price": 0.0}]
        assert [t async for t in client.stream(Watch(symbol="E", count=0), item=Tick)] == []
        got: list[Tick] = []
        with pytest.raises(ErrorReply) as raised:
            async for tick in client.stream(Watch(symbol="A", count=2, fail=True), item=Tick):
                got.append(tick)
        assert raised.value.code == "ERR_MARKET_CLOSED" and len(got) == 2
        with pytest.raises(ClientError, match="streamed its answer"):  # v2: a stream is no unary reply
            await client.request({"symbol": "B", "count": 1})


def test_the_blocking_test_client_streams_typed_items() -> None:
    with TestClient(build()) as client:
        assert [t.price for t in client.stream(Watch(symbol="ACME", count=2), item=Tick)] == [0, 1]
        assert client.calls["build.<locals>.watch"][0].data == Watch(symbol="ACME", count=2)
