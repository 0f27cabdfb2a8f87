"""Slow and greedy clients: slowloris, connection and session limits, backpressure."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from asyncapy import Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.wire.codecs import get_codec
from asyncapy.serve.connection import Connection
from asyncapy.wire.protocol import encode_frame

from ..conftest import make_server, read_frame, running

JSON = get_codec("json")
#: Concurrent connects in the limit tests: well over the limits, well under any ulimit.
CONNECTS = 40


def _echo_server(**kwargs: Any) -> Server:
    server = make_server(**kwargs)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    return server


def _connections(server: Server) -> list[Connection]:
    assert server._ctx is not None
    return list(server._ctx.connections)


async def test_slowloris_cannot_hold_a_connection() -> None:
    """One byte every 0.1 s never idles 0.5 s, yet the packet must be whole 0.5 s after its first byte."""
    async with running(_echo_server(timeout=0.5)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        frame = encode_frame(JSON.encode({"slow": "x" * 20}), JSON.id)
        answer = asyncio.create_task(read_frame(reader))
        sent = 0
        for sent, byte in enumerate(frame):
            if answer.done():  # the server answered: stop sending
                break
            writer.write(bytes((byte,)))
            await asyncio.sleep(0.1)
        encoding, payload = await answer
        assert JSON.decode(payload)["error"] == "ERR_TIMED_OUT"
        assert await reader.read() == b""
        assert sent < len(frame) - 1  # cut off before the packet was complete
        writer.close()


class _Storm:
    """CONNECTS clients connect at once, each asks for one echo, all hold on until every answer is in."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.go = asyncio.Event()
        self.release = asyncio.Event()
        self.answers: list[str] = []

    async def run(self) -> list[str]:
        tasks = [asyncio.create_task(self._client()) for _ in range(CONNECTS)]
        await asyncio.sleep(0.2)  # let every connect land before anyone sends
        self.go.set()
        for _ in range(1000):  # bounded: 10 s at most
            if len(self.answers) == CONNECTS:
                break
            await asyncio.sleep(0.01)
        self.release.set()
        await asyncio.gather(*tasks)
        return self.answers

    async def _client(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            await self.go.wait()
            self.answers.append(await self._ask(reader, writer))
            await self.release.wait()
        finally:
            writer.close()

    @staticmethod
    async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        try:
            writer.write(encode_frame(JSON.encode({"n": 1}), JSON.id))
            _, payload = await read_frame(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            return "reset"  # refused and closed before our request was read
        reply = JSON.decode(payload)
        return "ok" if reply == {"n": 1} else str(reply.get("error"))


async def test_max_connections_under_concurrent_connects() -> None:
    async with running(_echo_server(max_connections=5)) as server:
        answers = await _Storm(server.port).run()
        assert answers.count("ok") == 5
        assert set(answers) <= {"ok", "ERR_SERVER_BUSY", "reset"}
        assert "ERR_SERVER_BUSY" in answers
        async with AsyncClient("127.0.0.1", server.port) as client:  # the slots came back
            assert await client.request({"after": 1}) == {"after": 1}


async def test_session_limit_under_concurrent_connects() -> None:
    async with running(_echo_server(session_limit=3)) as server:
        answers = await _Storm(server.port).run()
        assert answers.count("ok") == 3
        assert set(answers) <= {"ok", "ERR_SESSION_LIMIT_REACHED", "reset"}
        assert "ERR_SESSION_LIMIT_REACHED" in answers


#: 20,000 packets of ~1 KiB: 20 MB each way, far past what loopback socket buffers absorb.
PIPELINED = 20_000
#: What one connection may hold: a socket read (256 KiB) plus a packet, the write
#: buffer's high-water mark (64 KiB) plus the replies of one queue. 1 MiB is loose.
CONNECTION_BOUND = 1024 * 1024


async def test_pipelining_without_reading_is_bounded() -> None:
    async with running(_echo_server(max_pending=8)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        body = "x" * 1000
        for i in range(PIPELINED):
            writer.write(encode_frame(JSON.encode({"i": i, "b": body}), JSON.id))
        paused = await _sample_bounded(server)
        assert paused, "the server never paused reading"
        for i in range(PIPELINED):
            _, payload = await read_frame(reader)
            assert JSON.decode(payload)["i"] == i
        writer.close()


async def _sample_bounded(server: Server) -> bool:
    """Watch the server's only connection for a while; True if reading was paused."""
    paused = False
    for _ in range(100):
        await asyncio.sleep(0.01)
        (conn,) = _connections(server)
        assert conn.pending <= 8
        assert conn.buffered <= CONNECTION_BOUND
        transport = conn._transport
        assert transport is not None
        paused = paused or not transport.is_reading()
    return paused


async def test_ziproto_and_errors_pipelined_without_reading() -> None:
    """Error replies (no handler awaits drain) are bounded the same way."""
    server = make_server(max_pending=4)
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        bad = encode_frame(b"[1, 2" + b" " * 500, JSON.id)  # malformed: each gets an error reply
        for _ in range(PIPELINED):
            writer.write(bad)
        await _sample_bounded_errors(server)
        for _ in range(PIPELINED):
            _, payload = await read_frame(reader)
            assert JSON.decode(payload)["error"] == "ERR_REQUEST_MALFORMED"
        writer.close()


async def _sample_bounded_errors(server: Server) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        for conn in _connections(server):
            assert conn.pending <= 4
            assert conn.buffered <= CONNECTION_BOUND


def test_limit_options_are_checked(tmp_path: Any) -> None:
    import pytest

    with pytest.raises(ValueError):
        make_server(max_pending=0)
    with pytest.raises(ValueError):
        make_server(handler_timeout=-1)
    ini = tmp_path / "server.ini"
    ini.write_text("[AsyncAPY]\nmax_pending = 16\nhandler_timeout = 0\n")
    server = make_server(config=str(ini))
    assert server.max_pending == 16 and server.handler_timeout is None
