"""Streaming handlers and typed topics on AsyncAProto v2, end to end over real sockets
(DESIGN §8, §9): ITEM frames then one END, CANCEL and deadlines closing the generator,
backpressure, a topic streamed to its subscribers, a slow consumer."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import ApiError, Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.wire.errors import ErrorReply
from asyncapy.wire.protocol import END, ITEM, REPLY, SENT_BY_SERVER, FrameDecoder, V2Frame, encode_request

from ..conftest import make_server, running, until


class Watch(BaseModel):
    symbol: str
    count: int = 3
    fail: bool = False
    forever: bool = False


class Tick(BaseModel):
    symbol: str
    price: float


class Publish(BaseModel):
    tick: Tick


class Follow(BaseModel):
    follow: str


class Who(BaseModel):
    who: int


def streaming_server(**kwargs: Any) -> tuple[Server, dict[str, Any]]:
    server = make_server(**kwargs)
    state: dict[str, Any] = {"closed": asyncio.Event(), "produced": 0}
    prices = server.topic("prices", Tick, max_buffered=5)
    state["prices"] = prices

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        try:
            n = 0
            while packet.data.forever or n < packet.data.count:
                state["produced"] += 1
                yield Tick(symbol=packet.data.symbol, price=float(n))
                n += 1
                if packet.data.forever:
                    await asyncio.sleep(0)
            if packet.data.fail:
                raise ApiError("ERR_MARKET_CLOSED", "closed for today")
        finally:
            state["closed"].set()

    @server.add_handler()
    async def follow(client: Client, packet: Packet[Follow]) -> AsyncIterator[Tick]:
        async with prices.subscribe() as ticks:
            state["subscribed"] = True
            async for tick in ticks:
                if tick.symbol.startswith(packet.data.follow):
                    yield tick

    @server.add_handler()
    async def publish(client: Client, packet: Packet[Publish]) -> dict[str, bool]:
        await prices.publish(packet.data.tick)
        return {"published": True}

    return server, state


async def test_items_are_typed_and_the_stream_ends() -> None:
    server, _ = streaming_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        ticks = [tick async for tick in client.stream(Watch(symbol="ACME", count=4), item=Tick)]
        assert ticks == [Tick(symbol="ACME", price=float(n)) for n in range(4)]
        assert [t async for t in client.stream(Watch(symbol="X", count=0), item=Tick)] == []  # END only


async def test_the_frames_are_items_then_one_end() -> None:
    server, _ = streaming_server()
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_request(3, json.dumps({"symbol": "A", "count": 2, "fail": True}).encode(), 0))
        decoder = FrameDecoder(kinds=SENT_BY_SERVER)
        frames: list[V2Frame] = []
        while len(frames) < 3:
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data
            decoder.feed(data)
            while isinstance(event := decoder.next_event(), V2Frame):
                frames.append(event)
        writer.close()
    assert [(f.kind, f.stream_id) for f in frames] == [(ITEM, 3), (ITEM, 3), (END, 3)]
    assert json.loads(frames[2].payload)["error"] == "ERR_MARKET_CLOSED"


async def test_an_error_ends_the_stream_after_its_items() -> None:
    server, _ = streaming_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        got: list[Tick] = []
        with pytest.raises(ErrorReply) as info:
            async for tick in client.stream(Watch(symbol="A", count=2, fail=True), item=Tick):
                got.append(tick)
        assert len(got) == 2 and info.value.code == "ERR_MARKET_CLOSED"


async def test_leaving_the_loop_cancels_the_generator_and_keeps_the_connection() -> None:
    server, state = streaming_server()
    sessions: list[str] = []

    @server.add_handler()
    async def who(client: Client, packet: Packet[Who]) -> dict[str, str]:
        sessions.append(str(client.session.id))
        return {"ok": "yes"}

    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        await client.request({"who": 1})
        async for _ in client.stream(Watch(symbol="A", forever=True), item=Tick):
            break
        await asyncio.wait_for(state["closed"].wait(), 1.5)  # closed within a second (and a margin)
        await client.request({"who": 2})
    assert len(sessions) == 2 and sessions[0] == sessions[1]


async def test_a_deadline_ends_the_stream_with_err_deadline_exceeded() -> None:
    server, state = streaming_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        with pytest.raises(ErrorReply) as info:
            async for _ in client.stream(Watch(symbol="A", forever=True), item=Tick, timeout=0.2):
                pass
        assert info.value.code == "ERR_DEADLINE_EXCEEDED"
        assert state["closed"].is_set()


async def test_a_client_that_does_not_read_stops_the_generator() -> None:
    server, state = streaming_server()
    async with running(server):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(encode_request(1, json.dumps({"symbol": "A" * 200, "forever": True}).encode(), 0))
        await until(lambda: state["produced"] > 100)
        samples = []
        for _ in range(5):  # the count settles while nobody reads
            await asyncio.sleep(0.2)
            samples.append(state["produced"])
        assert samples[-1] == samples[-2], samples  # stopped: resumed only when the buffer drains
        sock.close()
        await asyncio.wait_for(state["closed"].wait(), 3)  # and the disconnect closes it


async def test_a_topic_streams_to_its_subscribers() -> None:
    server, state = streaming_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        got: list[Tick] = []

        async def follow() -> None:
            async for tick in client.stream(Follow(follow="ACME"), item=Tick):
                got.append(tick)
                if len(got) == 3:
                    return

        follower = asyncio.create_task(follow())
        await until(lambda: state.get("subscribed"))
        async with AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as publisher:
            for n in range(3):
                await publisher.request(Publish(tick=Tick(symbol="ACME", price=n)))
        await asyncio.wait_for(follower, 10)
        assert [t.price for t in got] == [0.0, 1.0, 2.0]


async def test_a_subscriber_that_does_not_read_ends_with_err_slow_consumer() -> None:
    server, state = streaming_server()
    async with running(server):
        raw = socket.create_connection(("127.0.0.1", server.port))  # subscribes, then reads nothing for a while
        raw.sendall(encode_request(1, json.dumps({"follow": "B"}).encode(), 0))
        await until(lambda: state.get("subscribed"))
        async with AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as publisher:
            big = "B" * 65536
            for n in range(160):  # bounded: 10 MB fill the socket buffers, then the subscription's 5
                await state["prices"].publish(Tick(symbol=big, price=n))
                await asyncio.sleep(0)
            assert await publisher.request(Publish(tick=Tick(symbol="Z", price=1))) == {"published": True}
        raw.setblocking(False)
        decoder = FrameDecoder(kinds=SENT_BY_SERVER)
        ended = None
        items = 0
        deadline = time.monotonic() + 20
        while ended is None and time.monotonic() < deadline:  # read everything it was sent (bounded)
            try:
                data = raw.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            if not data:
                break
            decoder.feed(data)
            while isinstance(event := decoder.next_event(), V2Frame):
                if event.kind == END:
                    ended = json.loads(event.payload)
                else:
                    items += 1
        raw.close()
        assert ended is not None and ended["error"] == "ERR_SLOW_CONSUMER"
        assert items < 160  # it fell behind: what it missed was dropped, not buffered


async def test_a_client_that_closes_mid_stream_ends_a_quiet_topic_stream() -> None:
    """EOF on v2: the peer can send no CANCEL any more, so its open streams end at once,
    even one waiting on a topic nobody publishes to."""
    server, state = streaming_server()
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_request(1, json.dumps({"follow": "Q"}).encode(), 0))
        await until(lambda: state.get("subscribed"))
        assert state["prices"].subscribers == 1
        writer.close()  # a plain close: EOF, no reset
        await until(lambda: state["prices"].subscribers == 0, 3)  # unsubscribed: the generator closed


async def test_stopping_the_server_ends_topic_streams_without_waiting_for_the_deadline() -> None:
    server, state = streaming_server(shutdown_timeout=30)
    await server.start_serving()
    try:
        async with AsyncClient("127.0.0.1", server.port, timeout=10) as client:
            got: list[Tick] = []

            async def follow() -> None:
                async for tick in client.stream(Follow(follow="S"), item=Tick):
                    got.append(tick)

            follower = asyncio.create_task(follow())
            await until(lambda: state.get("subscribed"))
            await state["prices"].publish(Tick(symbol="S", price=1))
            await until(lambda: len(got) == 1)
            stopping = asyncio.create_task(server.stop())
            await asyncio.wait_for(follower, 5)  # the stream ended (END), well before shutdown_timeout
            await asyncio.wait_for(stopping, 5)
            assert [t.price for t in got] == [1.0]
    finally:
        await server.stop()
