"""``AsyncClient(protocol=2)`` over real sockets: against this server, which speaks v2
(more in tests/serve/test_v2_server.py), and against one that behaves as AsyncAPY 0.5
does, which must answer every request exactly once through the fallback to v1.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy import Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.wire.protocol import FrameDecoder, encode_frame

from ..conftest import make_server, running
from .test_clientmux import ASYNCAPY_HEADER_INVALID


class Ask(BaseModel):
    n: int
    sleep: float = 0


def answering_server() -> tuple[Server, list[tuple[str, int]]]:
    """Answers ``Ask`` with ``{"n": n}`` after ``sleep``; records (session, n) of each request handled."""
    server = make_server()
    handled: list[tuple[str, int]] = []

    @server.add_handler()
    async def answer(client: Client, packet: Packet[Ask]) -> dict[str, int]:
        handled.append((str(client.session.id), packet.data.n))
        if packet.data.sleep:
            await asyncio.sleep(packet.data.sleep)
        return {"n": packet.data.n}

    return server, handled


async def test_concurrent_requests_share_one_connection() -> None:
    server, handled = answering_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        replies = await asyncio.gather(*(client.request({"n": n, "sleep": 0.001}) for n in range(20)))
        assert replies == [{"n": n} for n in range(20)]
        assert sorted(n for _, n in handled) == list(range(20))  # each handled once
        assert len({session for session, _ in handled}) == 1  # the fallback kept the connection
        assert await client.request({"n": 99}) == {"n": 99}


async def test_a_task_cancelled_on_a_v2_connection_cancels_the_handler_and_keeps_it() -> None:
    server, handled = answering_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        assert await client.request({"n": 1}) == {"n": 1}
        slow = asyncio.create_task(client.request({"n": 2, "sleep": 5}))
        for _ in range(500):  # bounded: until the server runs it
            if len(handled) == 2:
                break
            await asyncio.sleep(0.01)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await client.request({"n": 3}) == {"n": 3}  # v2 sent a CANCEL: the same connection
        sessions = [session for session, _ in handled]
        assert sessions[0] == sessions[1] == sessions[2]
        assert client._mux is not None and client._mux.protocol == 2


async def test_a_timeout_raises_and_the_client_goes_on() -> None:
    server, _ = answering_server()
    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=0.2) as client:
        assert await client.request({"n": 1}) == {"n": 1}
        with pytest.raises(TimeoutError):
            await client.request({"n": 2, "sleep": 2})
        assert await client.request({"n": 3}) == {"n": 3}


class AsyncAPYLike:
    """A server that does what AsyncAPY 0.5 does with a frame (read from its
    ``asyncapy/server.py``): a Protocol-Version other than 22 gets its exact
    ERR_HEADER_INVALID bytes and the connection is closed; a v1 JSON request is answered
    with the same map. Records each connection's frames, to prove nothing ran twice."""

    def __init__(self) -> None:
        self.connections: list[list[bytes]] = []
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames: list[bytes] = []
        self.connections.append(frames)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(4), "big")
                body = await reader.readexactly(length)
                frames.append(body)
                if body[0] != 22:
                    writer.write(ASYNCAPY_HEADER_INVALID)
                    await writer.drain()
                    return
                writer.write(encode_frame(body[2:], 0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        if self.tasks:  # the client closed its connections: each handler ends on its own
            _, pending = await asyncio.wait(self.tasks, timeout=10)
            assert not pending


async def test_against_asyncapy_the_request_is_sent_again_in_v1_on_a_new_connection() -> None:
    peer = AsyncAPYLike()
    async with peer as port, AsyncClient("127.0.0.1", port, protocol=2, timeout=10) as client:
        assert await client.request({"a": 1}) == {"a": 1}
        assert await client.request({"b": 2}) == {"b": 2}  # v1 from the start now
    first, second = peer.connections
    assert len(first) == 1 and first[0][0] == 23  # the v2 probe, refused, then closed
    assert second == [b'\x16\x00{"a":1}', b'\x16\x00{"b":2}']  # each handled once


async def test_pushed_needs_protocol_2_and_the_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="protocol must be 1 or 2"):
        AsyncClient("127.0.0.1", 1, protocol=3)
    with pytest.raises(ValueError, match="pool_size is for v1.*protocol=1"):
        AsyncClient("127.0.0.1", 1, protocol=2, pool_size=2)
    for client in (AsyncClient("127.0.0.1", 1, protocol=1), AsyncClient("127.0.0.1", 1, pool_size=2)):
        with pytest.raises(ValueError, match="speaks v1.*protocol=2"):
            async for _ in client.pushed():
                pass


async def test_v1_packets_no_request_asked_for_come_out_of_pushed() -> None:
    """After the fallback, a packet the server sends on its own is a push (v1 has no PUSH kind)."""
    server = make_server()

    @server.add_handler()
    async def twice(client: Client, packet: Packet) -> None:
        await client.send({"reply": 1})
        await client.send({"extra": 2})

    async with running(server), AsyncClient("127.0.0.1", server.port, protocol=2, timeout=10) as client:
        assert await client.request({"go": 1}) == {"reply": 1}
        pushed = client.pushed()
        assert await asyncio.wait_for(pushed.__anext__(), 10) == {"extra": 2}
    with pytest.raises(StopAsyncIteration):  # closing the client ends it
        await asyncio.wait_for(pushed.__anext__(), 10)


def test_the_blocking_client_checks_its_protocol_as_the_async_one() -> None:
    from asyncapy.client import Client as SyncClient

    assert SyncClient("127.0.0.1", 1).protocol == 2
    assert SyncClient("127.0.0.1", 1, pool_size=3).protocol == 1
    with pytest.raises(ValueError, match="protocol must be 1 or 2"):
        SyncClient("127.0.0.1", 1, protocol=3)
    with pytest.raises(ValueError, match="pool_size is for v1"):
        SyncClient("127.0.0.1", 1, protocol=2, pool_size=2)
    with pytest.raises(ValueError, match="speaks v1.*protocol=2"):
        next(iter(SyncClient("127.0.0.1", 1, protocol=1).pushed()))
    decoder: Any = FrameDecoder()
    assert decoder.version == 22
