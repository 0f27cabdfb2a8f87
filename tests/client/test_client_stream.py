"""``AsyncClient.stream`` against a v2 peer written from docs/protocol.md (DESIGN §9).

The peer is the protocol's server side in a few lines (the wire module's decoder and
encoders over a real socket), so that the client's side of ITEM, END and CANCEL is
proven before asyncapy's own v2 server serves streams.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

from asyncapy.client import AsyncClient
from asyncapy.wire.errors import ErrorReply, ReplyValidationError
from asyncapy.wire.protocol import CANCEL, SENT_BY_CLIENT, FrameDecoder, encode_end, encode_item, encode_reply


class Tick(BaseModel):
    n: int


class Peer:
    """Answers ``{"ticks": k}`` with k ITEMs and an END, ``{"fail": k}`` with k ITEMs and an
    error END, ``{"forever": 1}`` with ITEMs until CANCEL (then END ERR_CANCELLED), anything
    else with a REPLY echoing it."""

    def __init__(self) -> None:
        self.cancelled: list[int] = []
        self.connections = 0
        self._forever: dict[int, asyncio.Task[None]] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = FrameDecoder(4, "big", kinds=SENT_BY_CLIENT)
        try:
            while data := await reader.read(65536):
                for encoding, kind, sid, _, payload in decoder.receive(data, 1000):  # type: ignore[misc]
                    if kind == CANCEL:
                        self.cancelled.append(sid)
                        task = self._forever.pop(sid, None)
                        if task is not None:
                            task.cancel()
                        continue
                    self._answer(writer, sid, json.loads(payload))
        finally:
            writer.close()

    def _answer(self, writer: asyncio.StreamWriter, sid: int, request: dict[str, Any]) -> None:
        if "ticks" in request or "fail" in request:
            for n in range(request.get("ticks", request.get("fail", 0))):
                writer.write(encode_item(sid, json.dumps({"n": n}).encode(), 0))
            error = b'{"status":"failure","error":"ERR_HALTED","detail":"halted"}' if "fail" in request else b""
            writer.write(encode_end(sid, error, 0))
        elif "forever" in request:
            self._forever[sid] = asyncio.get_running_loop().create_task(self._flood(writer, sid))
        else:
            writer.write(encode_reply(sid, json.dumps(request).encode(), 0))

    async def _flood(self, writer: asyncio.StreamWriter, sid: int) -> None:
        try:
            for n in range(100_000):
                writer.write(encode_item(sid, json.dumps({"n": n}).encode(), 0))
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            writer.write(encode_end(sid, b'{"status":"failure","error":"ERR_CANCELLED"}', 0))


@pytest.fixture
async def peer() -> Any:
    p = Peer()
    server = await asyncio.start_server(p.serve, "127.0.0.1", 0)
    p.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        server.close()
        await server.wait_closed()


async def test_items_are_typed_and_the_end_stops_the_loop(peer: Any) -> None:
    async with AsyncClient("127.0.0.1", peer.port, protocol=2) as client:
        assert [t.n async for t in client.stream({"ticks": 3}, item=Tick)] == [0, 1, 2]
        assert [m async for m in client.stream({"ticks": 2})] == [{"n": 0}, {"n": 1}]
        assert [t async for t in client.stream({"ticks": 0}, item=Tick)] == []
        both = await asyncio.gather(*[_collect(client, 5), _collect(client, 7)])  # interleaved on one connection
        assert [len(b) for b in both] == [5, 7]
    assert peer.connections == 1


async def _collect(client: AsyncClient, count: int) -> list[Tick]:
    return [t async for t in client.stream({"ticks": count}, item=Tick)]


async def test_an_error_end_raises_after_the_items(peer: Any) -> None:
    async with AsyncClient("127.0.0.1", peer.port, protocol=2) as client:
        got: list[int] = []
        with pytest.raises(ErrorReply) as raised:
            async for tick in client.stream({"fail": 2}, item=Tick):
                got.append(tick.n)
        assert got == [0, 1] and raised.value.code == "ERR_HALTED"
        with pytest.raises(ReplyValidationError):
            async for _ in client.stream({"ticks": 1}, item=BaseModelWithX):
                pass


class BaseModelWithX(BaseModel):
    x: str


async def test_leaving_the_loop_early_sends_cancel_and_keeps_the_connection(peer: Any) -> None:
    async with AsyncClient("127.0.0.1", peer.port, protocol=2) as client:
        async for tick in client.stream({"forever": 1}, item=Tick):
            if tick.n == 3:
                break
        for _ in range(100):  # bounded wait for the CANCEL to reach the peer
            if peer.cancelled:
                break
            await asyncio.sleep(0.02)
        assert len(peer.cancelled) == 1
        assert await client.request({"after": 1}) == {"after": 1}  # the same connection
        async with client.stream({"forever": 1}, item=Tick) as ticks:
            async for tick in ticks:
                break
        for _ in range(100):
            if len(peer.cancelled) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(peer.cancelled) == 2
    assert peer.connections == 1


async def test_stream_needs_protocol_two() -> None:
    client = AsyncClient("127.0.0.1", 1, protocol=1)
    with pytest.raises(ValueError, match="protocol=2"):
        client.stream({"ticks": 1})
