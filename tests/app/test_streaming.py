"""Streaming handlers on v1 over real sockets (DESIGN §9, issue 23).

Items go out as ordinary packets, in order; an error that ends a stream is an ordinary
error packet; the connection's next packet is handled after the last item. A client
that does not read stops the generator; one that leaves closes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from asyncapy import ApiError, CallNext, Client, Depends, Packet, Server, UsageError

from ..conftest import make_server, read_frame, running


class Watch(BaseModel):
    symbol: str
    count: int = 3


class Tick(BaseModel):
    symbol: str
    price: float


class Quote(BaseModel):
    last_price: float = Field(alias="lastPrice")


EVENTS: list[str] = []
TORN_DOWN: list[asyncio.Event] = []


async def logged_resource(client: Client) -> AsyncIterator[str]:
    EVENTS.append("open")
    yield "db"
    EVENTS.append("teardown")


async def flagged_resource(client: Client) -> AsyncIterator[str]:
    try:
        yield "db"
    finally:
        TORN_DOWN[0].set()


def frame(obj: dict[str, Any]) -> bytes:
    payload = json.dumps(obj).encode()
    return (len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload


async def read_maps(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    return [json.loads((await asyncio.wait_for(read_frame(reader), 5))[1]) for _ in range(count)]


async def nothing_more(reader: asyncio.StreamReader) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.readexactly(1), 0.3)


def ticker(server: Server) -> None:
    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        for n in range(packet.data.count):
            yield Tick(symbol=packet.data.symbol, price=n + 0.5)

    @server.add_handler()
    async def ping(client: Client, packet: Packet[dict[str, Any]]) -> dict[str, Any]:
        return {"pong": True}


async def test_items_arrive_in_order_then_the_next_requests_reply() -> None:
    server = make_server()
    ticker(server)
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "ACME", "count": 3}) + frame({"ping": 1}))
            got = await read_maps(reader, 4)
            assert got == [
                {"symbol": "ACME", "price": 0.5},
                {"symbol": "ACME", "price": 1.5},
                {"symbol": "ACME", "price": 2.5},
                {"pong": True},
            ]
            await nothing_more(reader)
        finally:
            writer.close()


async def test_a_dict_item_is_validated_into_the_item_model_and_aliases_are_the_wire_names() -> None:
    server = make_server()

    @server.add_handler()
    async def quotes(client: Client, packet: Packet[Watch]) -> AsyncGenerator[Quote, None]:
        yield {"lastPrice": 1.25}  # type: ignore[misc]  # a dict is validated into the model
        yield Quote(lastPrice=2.5)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "X"}))
            assert await read_maps(reader, 2) == [{"lastPrice": 1.25}, {"lastPrice": 2.5}]
        finally:
            writer.close()


@pytest.mark.parametrize(
    ("raise_", "code"),
    [(ApiError("ERR_MARKET_CLOSED", "closed"), "ERR_MARKET_CLOSED"), (KeyError("boom"), "ERR_INTERNAL")],
)
async def test_an_error_mid_stream_is_an_error_packet_after_the_items(
    raise_: Exception, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        yield Tick(symbol="A", price=1)
        raise raise_

    @server.add_handler()
    async def ping(client: Client, packet: Packet[dict[str, Any]]) -> dict[str, Any]:
        return {"pong": True}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "A"}) + frame({"ping": 1}))
            first, error, pong = await read_maps(reader, 3)
            assert first == {"symbol": "A", "price": 1.0}
            assert error["status"] == "failure" and error["error"] == code
            assert pong == {"pong": True}
            await nothing_more(reader)
        finally:
            writer.close()
    if code == "ERR_INTERNAL":
        assert any(r.exc_info and isinstance(r.exc_info[1], KeyError) for r in caplog.records)


async def test_an_item_of_the_wrong_type_ends_the_stream_with_err_internal(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()
    closed = asyncio.Event()

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        try:
            yield Tick(symbol="A", price=1)
            yield {"symbol": "A"}  # type: ignore[misc]  # no price: not a Tick
            yield Tick(symbol="never", price=0)
        finally:
            closed.set()

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "A"}))
            first, error = await read_maps(reader, 2)
            assert first["symbol"] == "A"
            assert error["error"] == "ERR_INTERNAL"
            await nothing_more(reader)
            assert closed.is_set()
        finally:
            writer.close()
    assert any("watch" in r.getMessage() or (r.exc_info and "watch" in str(r.exc_info[1])) for r in caplog.records)


async def test_an_item_with_nan_is_err_internal_never_null() -> None:
    server = make_server()

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        yield Tick(symbol="A", price=1)
        yield Tick(symbol="A", price=float("nan"))

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "A"}))
            first, error = await read_maps(reader, 2)
            assert first["price"] == 1.0 and error["error"] == "ERR_INTERNAL"
        finally:
            writer.close()


async def test_dependencies_tear_down_after_the_stream_and_middleware_wrap_it() -> None:
    server = make_server()
    events = EVENTS
    events.clear()

    @server.middleware
    async def around(client: Client, packet: Packet, call_next: CallNext) -> None:
        events.append("before")
        result: object = await call_next()  # type: ignore[func-returns-value]  # None, once the stream was sent
        events.append(f"after {result}")

    @server.add_handler()
    async def watch(
        client: Client, packet: Packet[Watch], db: Annotated[str, Depends(logged_resource)]
    ) -> AsyncIterator[Tick]:
        for n in range(packet.data.count):
            events.append(f"item {n}")
            yield Tick(symbol=db, price=n)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "A", "count": 2}) + frame({"symbol": "B", "count": 1}))
            got = await read_maps(reader, 3)
            assert [g["symbol"] for g in got] == ["db", "db", "db"]
            await nothing_more(reader)
        finally:
            writer.close()
    assert events[:6] == ["before", "open", "item 0", "item 1", "teardown", "after None"]


async def test_an_exception_handler_reply_ends_the_stream() -> None:
    server = make_server()

    @server.exception_handler(LookupError)
    async def not_found(client: Client, packet: Packet, exc: LookupError) -> dict[str, Any]:
        return {"status": "failure", "error": "ERR_NOT_FOUND", "detail": str(exc)}

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        yield Tick(symbol="A", price=1)
        raise LookupError("gone")

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "A"}))
            first, error = await read_maps(reader, 2)
            assert first["symbol"] == "A" and error["error"] == "ERR_NOT_FOUND"
            await nothing_more(reader)
        finally:
            writer.close()


async def test_a_failure_after_the_end_is_logged_never_answered(caplog: pytest.LogCaptureFixture) -> None:
    server = make_server()

    @server.middleware
    async def late(client: Client, packet: Packet, call_next: CallNext) -> None:
        await call_next()
        raise ApiError("ERR_LATE")

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
        for n in range(packet.data.count):
            yield Tick(symbol="A", price=n)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(frame({"symbol": "A", "count": 2}) + frame({"symbol": "A", "count": 0}))
            assert [m["price"] for m in await read_maps(reader, 2)] == [0, 1]
            await nothing_more(reader)
        finally:
            writer.close()
    assert sum("ERR_LATE" in r.getMessage() for r in caplog.records) == 2


async def test_a_client_that_does_not_read_stops_the_generator() -> None:
    server = make_server()
    produced = 0
    blob = "x" * 16_000

    @server.add_handler()
    async def flood(client: Client, packet: Packet[Watch]) -> AsyncIterator[dict[str, Any]]:
        nonlocal produced
        while True:
            produced += 1
            yield {"n": produced, "blob": blob}

    async with running(server):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            writer.write(frame({"symbol": "A"}))
            last, still = -1, 0
            for _ in range(100):  # until the count holds still for 0.5 s (at most 10 s)
                await asyncio.sleep(0.1)
                still = still + 1 if produced == last else 0
                last = produced
                if still >= 5:
                    break
            assert still >= 5, f"the generator kept running: {produced} items"
            assert produced < 1000  # 16 MB unbounded; the buffers hold far less
            stalled = produced
            for _ in range(200):  # reading again resumes it (bounded)
                await read_frame(reader)
            for _ in range(50):
                if produced > stalled:
                    break
                await asyncio.sleep(0.1)
            assert produced > stalled
        finally:
            writer.close()


async def test_a_client_that_disconnects_mid_stream_closes_the_generator() -> None:
    server = make_server()
    started, closed, torn_down = asyncio.Event(), asyncio.Event(), asyncio.Event()
    TORN_DOWN[:] = [torn_down]

    @server.add_handler()
    async def watch(client: Client, packet: Packet[Watch], db: Annotated[str, Depends(flagged_resource)]) -> AsyncIterator[Tick]:
        try:
            yield Tick(symbol="A", price=1)
            started.set()
            await asyncio.sleep(3600)  # waiting for the next event, as a subscription does
            yield Tick(symbol="A", price=2)
        finally:
            closed.set()

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame({"symbol": "A"}))
        await read_maps(reader, 1)
        await asyncio.wait_for(started.wait(), 5)
        writer.close()
        await asyncio.wait_for(closed.wait(), 5)  # bounded wait for the event, not a timing assertion
        await asyncio.wait_for(torn_down.wait(), 5)


async def test_a_disconnect_while_the_generator_is_blocked_by_backpressure_closes_it() -> None:
    server = make_server()
    closed = asyncio.Event()
    blob = "y" * 16_000

    @server.add_handler()
    async def flood(client: Client, packet: Packet[Watch]) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                yield {"blob": blob}
        finally:
            closed.set()

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame({"symbol": "A"}))
        await read_frame(reader)
        await asyncio.sleep(0.3)  # let the buffers fill: the generator waits for the drain
        writer.transport.abort()
        await asyncio.wait_for(closed.wait(), 5)


# -- registration ------------------------------------------------------------------------


def test_a_streaming_handler_without_an_item_annotation_fails_at_registration() -> None:
    server = Server()
    with pytest.raises(UsageError, match=r"streaming handler .*nothing.* AsyncIterator\[Item\]"):

        @server.add_handler()
        async def nothing(client: Client, packet: Packet[Watch]):  # type: ignore[no-untyped-def]
            yield {"a": 1}


def test_a_streaming_handler_yielding_a_non_model_fails_at_registration() -> None:
    server = Server()
    with pytest.raises(UsageError, match=r"streaming handler .*numbers.* yields int"):

        @server.add_handler()
        async def numbers(client: Client, packet: Packet[Watch]) -> AsyncIterator[int]:
            yield 1


def test_a_coroutine_annotated_as_a_stream_fails_at_registration() -> None:
    server = Server()
    with pytest.raises(UsageError, match=r"handler .*fake.* does not `yield`"):

        @server.add_handler()
        async def fake(client: Client, packet: Packet[Watch]) -> AsyncIterator[Tick]:
            raise NotImplementedError
