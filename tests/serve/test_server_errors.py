"""Every error code of docs/protocol.md (v1) over a real loopback socket, with its connection rule."""

from __future__ import annotations

import asyncio
import socket
import struct
import logging
import random
from typing import Any

import orjson
import pytest

from asyncapy import Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.wire.codecs import get_codec
from asyncapy.wire.protocol import encode_frame

from ..conftest import make_server, read_frame, running

DOC_PACKET = b'\x00\x00\x00\r\x16\x00{"test": 1}'


def echo_server(**kwargs: Any) -> Server:
    server = make_server(**kwargs)

    async def echo(client: Client, packet: Packet) -> None:
        if packet.get("boom"):
            raise RuntimeError("handler failure")
        if "only_ok" in packet:
            return
        await client.send(packet)

    async def only_ok(client: Client, packet: Packet) -> None:
        await client.send({"ok": True})

    server.register_handler(echo)
    server.register_handler(only_ok, lambda c, p: "only_ok" in p and p["only_ok"] == 1)
    return server


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    encoding, payload = await read_frame(reader)
    value = get_codec(encoding).decode(payload)
    assert isinstance(value, dict)
    return value


async def assert_closed(reader: asyncio.StreamReader) -> None:
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def assert_still_serving(server: Server) -> None:
    async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
        assert await client.request({"still": "here"}) == {"still": "here"}


async def test_echo_answers_the_getting_started_bytes_unchanged() -> None:
    async with running(echo_server()) as server:
        reader, writer = await connect(server)
        writer.write(DOC_PACKET)
        assert await reader.readexactly(17) == DOC_PACKET
        writer.close()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\x00\x00\x00\x04\x15\x00{}", "Protocol-Version 21"),
        (b"\x00\x00\x00\x04\x16\x07{}", "Content-Encoding 7"),
        (b"\x00\x00\x00\x01\x16", "under 2"),
    ],
)
async def test_header_invalid_keeps_the_connection(raw: bytes, words: str) -> None:
    async with running(echo_server()) as server:
        reader, writer = await connect(server)
        writer.write(raw + DOC_PACKET)
        error = await reply(reader)
        assert error["status"] == "failure" and error["error"] == "ERR_HEADER_INVALID"
        assert words in error["detail"]
        assert await reply(reader) == {"test": 1}
        writer.close()
        await assert_still_serving(server)


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [(0, b"{not json"), (0, b"[1, 2]"), (0, b'"text"'), (1, b"\xc1"), (1, b"\x92\x01\x02")],
)
async def test_request_malformed_keeps_the_connection(encoding: int, payload: bytes) -> None:
    async with running(echo_server()) as server:
        reader, writer = await connect(server)
        writer.write(encode_frame(payload, encoding) + encode_frame(b'{"n": 2}', 0))
        first_encoding, body = await read_frame(reader)
        assert first_encoding == encoding  # the reply uses the encoding the packet declared
        assert get_codec(encoding).decode(body)["error"] == "ERR_REQUEST_MALFORMED"
        assert await reply(reader) == {"n": 2}
        writer.close()


async def test_payload_too_large_answers_before_the_body_and_closes() -> None:
    async with running(echo_server(max_packet_size=1000)) as server:
        reader, writer = await connect(server)
        writer.write((1001).to_bytes(4, "big"))  # the header alone, no body ever sent
        error = await reply(reader)
        assert error["error"] == "ERR_PAYLOAD_TOO_LARGE"
        await assert_closed(reader)
        await assert_still_serving(server)


async def test_payload_too_large_reply_survives_a_body_already_on_its_way() -> None:
    """A peer that sends an oversized header with its body in one write gets the error, not a reset.

    Closing a socket with unread input makes the kernel reset the connection, which may
    discard the error reply before the peer reads it; the server half-closes and drains.
    """
    for _ in range(5):
        async with running(echo_server(max_packet_size=1000)) as server:
            reader, writer = await connect(server)
            writer.write((300_001).to_bytes(4, "big") + b"\x16\x00" + b"x" * 300_000)
            error = await asyncio.wait_for(reply(reader), 5)
            assert error["error"] == "ERR_PAYLOAD_TOO_LARGE"
            await assert_closed(reader)
            writer.close()


async def test_peers_that_vanish_after_a_fatal_header_leave_no_connection_behind() -> None:
    """The half-close after a fatal error may meet a socket the peer already reset: it is closed at once."""
    rng = random.Random(2)
    async with running(echo_server(max_packet_size=1000)) as server:
        for _ in range(200):  # bounded: about 2 s
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(rng.randbytes(rng.randrange(6, 64)))  # mostly a huge Content-Length: fatal
            await writer.drain()
            if rng.random() < 0.5:
                sock = writer.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()
            await asyncio.sleep(0.005)
        assert server._ctx is not None
        for _ in range(100):  # bounded: 5 s at most (lingering ends after 1 s)
            if not server._ctx.connections:
                break
            await asyncio.sleep(0.05)
        assert not server._ctx.connections
        await assert_still_serving(server)


async def test_idle_timeout_answers_and_closes() -> None:
    async with running(echo_server(timeout=0.3)) as server:
        reader, writer = await connect(server)
        writer.write(DOC_PACKET)
        assert await reader.readexactly(17) == DOC_PACKET
        error = await asyncio.wait_for(reply(reader), 5)
        assert error["error"] == "ERR_TIMED_OUT"
        await assert_closed(reader)
        await assert_still_serving(server)


async def test_one_sweep_times_out_idle_connections_only_and_restarts_after_a_quiet_spell() -> None:
    """``timeout`` is enforced by one timer per server: busy peers stay, idle ones go, every time."""
    async with running(echo_server(timeout=0.4)) as server:
        for _ in range(2):  # the second round starts after every connection closed
            idle = [await connect(server) for _ in range(3)]
            busy_reader, busy_writer = await connect(server)
            loop = asyncio.get_running_loop()
            start = loop.time()
            while loop.time() - start < 1.0:  # a packet every 0.1 s: never 0.4 s without one
                busy_writer.write(DOC_PACKET)
                assert await asyncio.wait_for(busy_reader.readexactly(17), 5) == DOC_PACKET
                await asyncio.sleep(0.1)
            for reader, writer in idle:
                error = await asyncio.wait_for(reply(reader), 5)
                assert error["error"] == "ERR_TIMED_OUT"
                await assert_closed(reader)
                writer.close()
            busy_writer.write(DOC_PACKET)  # still served
            assert await asyncio.wait_for(busy_reader.readexactly(17), 5) == DOC_PACKET
            busy_writer.close()
            await asyncio.sleep(0.6)  # no connection left: the sweeps stop until the next one


async def test_slow_partial_packet_times_out_from_its_first_byte() -> None:
    async with running(echo_server(timeout=0.5)) as server:
        reader, writer = await connect(server)

        async def trickle() -> None:  # one byte every 0.1 s: 1.6 s for the whole packet
            for byte in DOC_PACKET:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)

        task = asyncio.create_task(trickle())
        error = await asyncio.wait_for(reply(reader), 5)
        assert error["error"] == "ERR_TIMED_OUT"
        assert not task.done()  # cut off before the trickle could complete its packet
        task.cancel()
        await assert_closed(reader)


async def test_session_limit_refuses_the_extra_session_and_closes_it() -> None:
    async with running(echo_server(session_limit=2)) as server:
        held = [await connect(server) for _ in range(2)]
        for reader, writer in held:
            writer.write(DOC_PACKET)
            assert await reader.readexactly(17) == DOC_PACKET
        reader, writer = await connect(server)
        assert (await reply(reader))["error"] == "ERR_SESSION_LIMIT_REACHED"
        await assert_closed(reader)
        held[0][1].close()
        await asyncio.sleep(0.1)
        await assert_still_serving(server)  # a slot came free


async def test_max_connections_refuses_with_server_busy() -> None:
    async with running(echo_server(max_connections=1)) as server:
        reader1, writer1 = await connect(server)
        writer1.write(DOC_PACKET)
        assert await reader1.readexactly(17) == DOC_PACKET
        reader2, _ = await connect(server)
        assert (await reply(reader2))["error"] == "ERR_SERVER_BUSY"
        await assert_closed(reader2)
        writer1.close()
        await asyncio.sleep(0.1)
        await assert_still_serving(server)


async def test_no_handler_keeps_the_connection() -> None:
    server = make_server()
    server.register_handler(lambda_handler, lambda c, p: False)
    async with running(server):
        reader, writer = await connect(server)
        writer.write(DOC_PACKET * 2)
        for _ in range(2):
            error = await reply(reader)
            assert error["error"] == "ERR_NO_HANDLER" and "lambda_handler" in error["detail"]
        writer.close()


async def lambda_handler(client: Client, packet: Packet) -> None:
    await client.send({"never": True})


async def test_internal_error_is_logged_never_sent(caplog: pytest.LogCaptureFixture) -> None:
    async with running(echo_server()) as server:
        reader, writer = await connect(server)
        with caplog.at_level(logging.ERROR, logger="asyncapy"):
            writer.write(encode_frame(orjson.dumps({"boom": True}), 1 - 1) + DOC_PACKET)
            error = await reply(reader)
            assert error["error"] == "ERR_INTERNAL"
            assert "handler failure" not in orjson.dumps(error).decode()
            assert await reader.readexactly(17) == DOC_PACKET
        assert any("handler failure" in (r.exc_text or "") for r in caplog.records)
        writer.close()


async def test_error_reply_uses_the_ziproto_encoding_the_packet_declared() -> None:
    server = make_server()
    async with running(server):
        reader, writer = await connect(server)
        writer.write(encode_frame(get_codec(1).encode({"x": 1}), 1))
        encoding, payload = await read_frame(reader)
        assert encoding == 1
        assert get_codec(1).decode(payload)["error"] == "ERR_NO_HANDLER"
        writer.close()


async def test_stop_propagation_and_groups_with_a_plain_loop() -> None:
    server = make_server()
    seen: list[str] = []

    @server.add_handler(group=-1)
    async def first(client: Client, packet: Packet) -> None:
        seen.append("first")
        if packet.get("stop"):
            packet.stop_propagation()

    @server.add_handler()
    async def second(client: Client, packet: Packet) -> dict[str, Any]:
        seen.append("second")
        return {"seen": list(seen)}

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"a": 1}) == {"seen": ["first", "second"]}
            await client.send({"stop": True})
            assert await client.request({"a": 2}) == {"seen": ["first", "second", "first", "first", "second"]}
