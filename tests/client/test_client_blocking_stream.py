"""The blocking ``Client.stream`` against an asyncapy server over a real socket (DESIGN §9).

The server runs on the test's event loop; the blocking client runs in a worker thread
(``asyncio.to_thread``), as a program with no event loop of its own would call it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import ApiError, Packet, Server
from asyncapy import Client as Peer
from asyncapy.client import Client as BlockingClient
from asyncapy.wire.errors import ClientError, ConnectionClosed, ErrorReply, ReplyValidationError

from ..conftest import make_server, running

#: Bounds every wait of these tests (seconds).
PATIENCE = 15.0


class Watch(BaseModel):
    symbol: str
    count: int = 0
    forever: bool = False
    fail: bool = False


class Tick(BaseModel):
    symbol: str
    price: float


class Other(BaseModel):
    volume: int


class Seen:
    """What the server saw: the peers (address, port) of each request, the streams it closed."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []
        self.closed = 0
        self.produced = 0


def market() -> tuple[Server, Seen]:
    server, seen = make_server(), Seen()

    @server.add_handler()
    async def watch(client: Peer, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        seen.peers.append((client.address, client.port))
        try:
            n = 0
            while packet.data.forever or n < packet.data.count:
                seen.produced += 1
                yield Tick(symbol=packet.data.symbol, price=float(n))
                n += 1
                await asyncio.sleep(0.001 if packet.data.forever else 0)
            if packet.data.fail:
                raise ApiError("ERR_HALTED", "trading is halted")
        finally:
            seen.closed += 1

    @server.add_handler()
    async def echo(client: Peer, packet: Packet[Other]) -> Other:
        seen.peers.append((client.address, client.port))
        return packet.data

    return server, seen


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Seen]]:
    server, seen = market()
    async with running(server):
        yield server, seen


async def until(check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds."""
    for _ in range(int(PATIENCE / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def client_of(server: Server, **kwargs: Any) -> BlockingClient:
    return BlockingClient("127.0.0.1", server.port, timeout=PATIENCE, **kwargs)


async def test_items_are_typed_and_the_end_stops_the_loop(served: tuple[Server, Seen]) -> None:
    server, seen = served

    def talk() -> tuple[list[Any], list[Any], list[Any]]:
        with client_of(server) as client:
            ticks = list(client.stream(Watch(symbol="ACME", count=3), item=Tick))
            maps = [m for m in client.stream({"symbol": "INIT", "count": 2})]
            none = list(client.stream(Watch(symbol="ACME"), item=Tick))
            return ticks, maps, none

    ticks, maps, none = await asyncio.to_thread(talk)
    assert ticks == [Tick(symbol="ACME", price=p) for p in (0, 1, 2)]
    assert all(type(t) is Tick for t in ticks)
    assert maps == [{"symbol": "INIT", "price": 0.0}, {"symbol": "INIT", "price": 1.0}]
    assert none == []
    assert len(set(seen.peers)) == 1  # every stream on the client's one connection


async def test_an_error_end_raises_error_reply_after_the_items(served: tuple[Server, Seen]) -> None:
    server, _ = served

    def talk() -> tuple[list[float], str, dict[str, Any]]:
        got: list[float] = []
        with client_of(server) as client:
            with pytest.raises(ErrorReply) as raised:
                for tick in client.stream(Watch(symbol="ACME", count=2, fail=True), item=Tick):
                    got.append(tick.price)
            with pytest.raises(ReplyValidationError):
                list(client.stream(Watch(symbol="ACME", count=1), item=Other))
            after = client.request(Other(volume=7))  # the connection is still good
        return got, raised.value.code, after

    got, code, after = await asyncio.to_thread(talk)
    assert got == [0.0, 1.0] and code == "ERR_HALTED"
    assert after == {"volume": 7}


async def test_break_sends_cancel_and_keeps_the_connection(served: tuple[Server, Seen]) -> None:
    server, seen = served

    def talk() -> dict[str, Any]:
        with client_of(server) as client:
            for tick in client.stream(Watch(symbol="ACME", forever=True), item=Tick):
                if tick.price == 3:
                    break  # the iterator is dropped: its CANCEL goes out
            return client.request(Other(volume=1))

    assert await asyncio.to_thread(talk) == {"volume": 1}
    await until(lambda: seen.closed == 1)  # the CANCEL closed the generator (its finally ran)
    assert len(set(seen.peers)) == 1  # the request after it went on the same connection
    produced = seen.produced
    await asyncio.sleep(0.2)
    assert seen.produced == produced  # and nothing more is produced


async def test_close_and_with_send_cancel(served: tuple[Server, Seen]) -> None:
    server, seen = served

    def talk() -> tuple[list[float], list[float]]:
        with client_of(server) as client:
            ticks = client.stream(Watch(symbol="A", forever=True), item=Tick)
            first = [next(ticks).price, next(ticks).price]
            ticks.close()
            assert list(ticks) == []  # a closed stream yields nothing more
            with client.stream(Watch(symbol="B", forever=True), item=Tick) as more:
                second = [next(more).price]
            client.request(Other(volume=2))
            return first, second

    assert await asyncio.to_thread(talk) == ([0.0, 1.0], [0.0])
    await until(lambda: seen.closed == 2)
    assert len(set(seen.peers)) == 1


async def test_streams_of_many_threads_share_one_connection(served: tuple[Server, Seen]) -> None:
    server, seen = served
    counts = [5, 9, 13, 17]

    def talk() -> list[int]:
        got: dict[int, int] = {}
        with client_of(server) as client:

            def one(count: int) -> None:
                got[count] = sum(1 for _ in client.stream(Watch(symbol="M", count=count), item=Tick))

            threads = [threading.Thread(target=one, args=(c,)) for c in counts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(PATIENCE)
        return [got[c] for c in counts]

    assert await asyncio.to_thread(talk) == counts
    assert len(set(seen.peers)) == 1


async def test_closing_the_client_ends_a_stream_being_read(served: tuple[Server, Seen]) -> None:
    server, seen = served

    def talk() -> BaseException | None:
        client = client_of(server)
        ticks = client.stream(Watch(symbol="A", forever=True), item=Tick)
        next(ticks)
        failure: list[BaseException] = []

        def read() -> None:
            try:
                for _ in ticks:
                    pass
            except ConnectionClosed as exc:
                failure.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        client.close()
        reader.join(PATIENCE)
        assert not reader.is_alive()
        with pytest.raises(StopIteration):
            next(ticks)  # ended: nothing more, no hang
        return failure[0] if failure else None

    failure = await asyncio.to_thread(talk)
    assert isinstance(failure, ConnectionClosed)
    await until(lambda: seen.closed == 1)  # the disconnect closed the generator


async def test_a_v1_client_cannot_stream(served: tuple[Server, Seen]) -> None:
    server, _ = served
    with pytest.raises(ValueError, match="protocol=2"):
        client_of(server, protocol=1).stream(Watch(symbol="A"), item=Tick)


async def test_against_a_v1_only_server_iterating_raises_client_error() -> None:
    """A peer that answers the first v2 frame with a v1 ERR_HEADER_INVALID, as AsyncAPY does."""

    async def v1_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        payload = b'{"status":"failure","error":"ERR_HEADER_INVALID"}'
        writer.write((len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload)
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(v1_only, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:

        def talk() -> None:
            with BlockingClient("127.0.0.1", port, timeout=PATIENCE) as client:
                with pytest.raises(ClientError, match="v1 only"):
                    list(client.stream(Watch(symbol="A"), item=Tick))

        await asyncio.to_thread(talk)
    finally:
        listener.close()
        await listener.wait_closed()
