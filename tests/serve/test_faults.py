"""Faults: failing and hung handlers, closed and resetting peers never hurt the server."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from asyncapy import Client, Packet, Server
from asyncapy.client import AsyncClient

from ..conftest import make_server, running

#: 64 KiB chunks x 64: a 4 MiB reply, more than loopback buffers take in one go.
CHUNK = "x" * 64 * 1024
CHUNKS = 64


def _faulty_server(**kwargs: object) -> tuple[Server, asyncio.Event]:
    server = make_server(**kwargs)
    finished = asyncio.Event()

    @server.add_handler()
    async def handle(client: Client, packet: Packet) -> None:
        action = packet["do"]
        if action == "raise":
            raise RuntimeError("boom")
        if action == "own-timeout":
            raise asyncio.TimeoutError  # the handler's own: an internal error, not ERR_TIMED_OUT
        if action == "hang":
            await asyncio.sleep(3600)
        if action == "close-then-send":
            await client.close()
            await client.send({"after": "close"})
            finished.set()
        if action == "late":
            await asyncio.sleep(0.2)  # the peer is gone by now
            await client.send({"late": True})
            finished.set()
        if action == "big":
            try:
                for _ in range(CHUNKS):
                    await client.send({"chunk": CHUNK})
            finally:
                finished.set()
        if action == "echo":
            await client.send(packet)

    return server, finished


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def _still_serving(server: Server) -> None:
    async with AsyncClient("127.0.0.1", server.port) as client:
        assert await client.request({"do": "echo"}) == {"do": "echo"}


async def test_raising_handler_gets_internal_error_and_connection_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    server, _ = _faulty_server()
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            reply = await client.request({"do": "raise"})
            assert reply["error"] == "ERR_INTERNAL" and "boom" not in str(reply)
            assert await client.request({"do": "echo"}) == {"do": "echo"}
    assert any("boom" in (r.exc_text or "") for r in caplog.records)


async def test_handler_timeout_answers_and_keeps_the_connection() -> None:
    server, _ = _faulty_server(handler_timeout=0.2)
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert (await client.request({"do": "hang"}))["error"] == "ERR_TIMED_OUT"
            assert (await client.request({"do": "own-timeout"}))["error"] == "ERR_INTERNAL"
            assert await client.request({"do": "echo"}) == {"do": "echo"}


async def test_handler_timeout_defaults_to_none() -> None:
    assert make_server().handler_timeout is None


async def test_close_then_send_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    server, finished = _faulty_server()
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(AsyncClient("h", 0)._core.frame({"do": "close-then-send"}))
        assert await reader.read() == b""  # closed, and nothing sent after the close
        await asyncio.wait_for(finished.wait(), 5)
        writer.close()
        await _still_serving(server)
    assert _errors(caplog) == []


async def test_send_to_a_vanished_peer_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    server, finished = _faulty_server()
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(AsyncClient("h", 0)._core.frame({"do": "late"}))
        await writer.drain()
        _reset(writer)
        await asyncio.wait_for(finished.wait(), 5)
        await _still_serving(server)
    assert _errors(caplog) == []


async def test_peer_reset_mid_reply_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    server, finished = _faulty_server()
    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(AsyncClient("h", 0)._core.frame({"do": "big"}))
        await reader.readexactly(100_000)  # part of the reply is here, more is being written
        _reset(writer)
        await asyncio.wait_for(finished.wait(), 5)
        await _still_serving(server)
        assert await _connections_settle(server) == 0
    assert _errors(caplog) == []


async def _connections_settle(server: Server) -> int:
    """The server's open connections once the closes in flight have landed (bounded wait)."""
    assert server._ctx is not None
    for _ in range(200):
        if not server._ctx.connections:
            break
        await asyncio.sleep(0.01)
    return len(server._ctx.connections)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST instead of a FIN."""
    sock = writer.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
