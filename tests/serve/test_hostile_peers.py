"""Hardening, round two (issue 15): what hostile peers and unlucky operators broke.

Every test here reproduced its failure on real sockets before the fix.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest
import trustme
from pydantic import BaseModel

from asyncapy import ApiError, CallNext, Client, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.client import Client as SyncClient
from asyncapy.wire.codecs import get_codec
from asyncapy.wire.protocol import encode_frame

from ..conftest import make_server, read_frame, running

JSON = get_codec("json")


def frames(*payloads: Mapping[str, object], header_size: int = 4) -> bytes:
    return b"".join(encode_frame(orjson.dumps(p), 0, header_size) for p in payloads)


async def read_reply(reader: asyncio.StreamReader, header_size: int = 4) -> dict[str, object]:
    length = int.from_bytes(await asyncio.wait_for(reader.readexactly(header_size), 5), "big")
    rest = await asyncio.wait_for(reader.readexactly(length), 5)
    reply: dict[str, object] = JSON.decode(rest[2:])
    return reply


async def exchange(port: int, data: bytes, replies: int, header_size: int = 4) -> list[dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return [await read_reply(reader, header_size) for _ in range(replies)]
    finally:
        writer.close()


# -- a reply the header cannot carry ---------------------------------------------------

BIG = "x" * 70_000  # over the 65,535 bytes a 2-byte Content-Length can say


class Strict(BaseModel):
    a_field_with_a_long_name_to_make_the_detail_long: int
    another_field_with_a_long_name_to_make_it_longer: int


class Only(BaseModel):
    a: int


async def test_a_returned_reply_too_long_for_the_header_is_err_internal_and_the_connection_goes_on() -> None:
    server = make_server(header_size=2)

    @server.add_handler()
    async def handler(client: Client, packet: Packet) -> dict[str, object]:
        return {"n": packet["n"], "big": BIG} if packet["n"] == 1 else {"n": packet["n"]}

    async with running(server):
        replies = await exchange(server.port, frames({"n": 0}, {"n": 1}, {"n": 2}, header_size=2), 3, 2)
    assert replies[0] == {"n": 0} and replies[2] == {"n": 2}
    assert replies[1]["error"] == "ERR_INTERNAL"


async def test_a_sent_reply_too_long_for_the_header_is_err_internal_too() -> None:
    server = make_server(header_size=2)

    @server.add_handler()
    async def handler(client: Client, packet: Packet) -> None:
        await client.send({"big": BIG} if packet["n"] == 1 else {"n": packet["n"]})

    async with running(server):
        replies = await exchange(server.port, frames({"n": 0}, {"n": 1}, {"n": 2}, header_size=2), 3, 2)
    assert replies[0] == {"n": 0} and replies[2] == {"n": 2}
    assert replies[1]["error"] == "ERR_INTERNAL"


async def test_an_error_reply_too_long_for_a_1_byte_header_is_sent_without_its_detail() -> None:
    """ERR_NO_HANDLER's detail is longer than 255 bytes: the bare error still fits and is sent."""
    server = make_server(header_size=1)

    @server.add_handler()
    async def handler(client: Client, packet: Packet[Strict]) -> dict[str, int]:
        return {"ok": 1}

    async with running(server):
        replies = await exchange(server.port, frames({"x": 1}, {"y": 2}, header_size=1), 2, 1)
    assert replies == [{"status": "failure", "error": "ERR_NO_HANDLER"}] * 2


# -- JSON integers beyond 64 bits ----------------------------------------------------------


class Big(BaseModel):
    n: int


@pytest.mark.parametrize("n", [2**70 + 1, -(2**63) - 1, 2**64, 2**64 - 1, -(2**200) + 7, 10**300])
async def test_json_integers_beyond_64_bits_arrive_exact_and_go_back_exact(n: int) -> None:
    server = make_server()
    seen: list[object] = []

    @server.add_handler()
    async def untyped(client: Client, packet: Packet) -> dict[str, object]:
        seen.append(packet["n"])
        return {"n": packet["n"]}

    async with running(server):
        [reply] = await exchange(server.port, encode_frame(b'{"n": %d}' % n, 0), 1)
    assert seen == [n] and type(seen[0]) is int
    assert reply == {"n": n}


async def test_a_typed_handler_gets_the_exact_integer() -> None:
    server = make_server()

    @server.add_handler()
    async def typed(client: Client, packet: Packet[Big]) -> Big:
        return packet.data

    async with running(server):
        [reply] = await exchange(server.port, encode_frame(b'{"n": 1180591620717411303425}', 0), 1)
    assert reply == {"n": 2**70 + 1}


async def test_an_integer_too_long_to_convert_is_refused_not_rounded() -> None:
    """Thousands of digits: refused as malformed (bounded work), the connection goes on."""
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, object]:
        return {"n": packet["n"]}

    async with running(server):
        data = encode_frame(b'{"n": ' + b"7" * 100_000 + b"}", 0) + frames({"n": 1})
        replies = await exchange(server.port, data, 2)
    assert replies[0]["error"] == "ERR_REQUEST_MALFORMED"
    assert replies[1] == {"n": 1}


# -- error_details=False: AsyncAPY 0.5's exact error replies ---------------------------------


def _strict_server(**kwargs: object) -> Server:
    server = make_server(**kwargs)

    @server.add_handler()
    async def handler(client: Client, packet: Packet[Only]) -> dict[str, int]:
        if packet.data.a == 0:
            raise RuntimeError("boom")
        return {"a": packet.data.a}

    return server


BAD_HEADER = b"\x00\x00\x00\x04\x17\x00{}"  # unknown Protocol-Version
NOT_JSON = encode_frame(b"{nope", 0)


@pytest.mark.parametrize("how", ["argument", "server.ini"])
async def test_error_details_false_sends_exactly_status_and_error(how: str, tmp_path: Path) -> None:
    if how == "argument":
        server = _strict_server(error_details=False)
    else:
        ini = tmp_path / "server.ini"
        ini.write_text("[AsyncAPY]\naddr = 127.0.0.1\nport = 0\nerror_details = false\n")
        server = _strict_server(config=ini)
    assert server.error_details is False
    async with running(server):
        replies = await exchange(server.port, frames({"b": 1}, {"a": 0}) + NOT_JSON + BAD_HEADER, 4)
    assert replies == [
        {"status": "failure", "error": "ERR_NO_HANDLER"},
        {"status": "failure", "error": "ERR_INTERNAL"},
        {"status": "failure", "error": "ERR_REQUEST_MALFORMED"},
        {"status": "failure", "error": "ERR_HEADER_INVALID"},
    ]


async def test_error_details_false_covers_api_errors_and_misses_through_middleware() -> None:
    server = make_server(error_details=False)

    @server.middleware
    async def passthrough(client: Client, packet: Packet, call_next: CallNext) -> None:
        await call_next()

    @server.add_handler()
    async def handler(client: Client, packet: Packet[Only]) -> dict[str, int]:
        raise ApiError("ERR_NOT_FOUND", f"no order {packet.data.a}")

    async with running(server):
        replies = await exchange(server.port, frames({"a": 1}, {"b": 1}), 2)
    assert replies == [
        {"status": "failure", "error": "ERR_NOT_FOUND"},
        {"status": "failure", "error": "ERR_NO_HANDLER"},
    ]


async def test_error_details_true_is_the_default() -> None:
    server = _strict_server()
    assert server.error_details is True
    async with running(server):
        [reply] = await exchange(server.port, frames({"b": 1}), 1)
    assert reply["error"] == "ERR_NO_HANDLER" and "detail" in reply


# -- a session limit must not count a client that already left ------------------------------------


async def test_a_probe_that_connected_and_closed_does_not_count_against_the_session_limit() -> None:
    """A load balancer's health check (connect, close) followed at once by a real client, 20 times."""
    server = make_server(session_limit=1)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, object]:
        return {"n": packet["n"]}

    refused = 0
    async with running(server):
        for n in range(20):
            probe = socket.create_connection(("127.0.0.1", server.port))
            probe.close()
            [reply] = await exchange(server.port, frames({"n": n}), 1)
            refused += reply.get("error") == "ERR_SESSION_LIMIT_REACHED"
            await asyncio.sleep(0.02)  # the client's own close is seen before the next probe
    assert refused == 0


async def test_the_session_limit_still_refuses_a_client_that_is_really_there() -> None:
    server = make_server(session_limit=1)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> dict[str, object]:
        return {"n": packet["n"]}

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frames({"n": 1}))
        assert await read_reply(reader) == {"n": 1}
        half = socket.create_connection(("127.0.0.1", server.port))  # sent a request, then half-closed
        half.sendall(frames({"n": 2}))
        half.shutdown(socket.SHUT_WR)
        [second] = await exchange(server.port, frames({"n": 3}), 1)
        assert second["error"] == "ERR_SESSION_LIMIT_REACHED"
        writer.close()
        half.close()


# -- TLS: `timeout` bounds the handshake ----------------------------------------------------------


async def test_timeout_bounds_a_tls_handshake_that_never_starts() -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = make_server(ssl=context, timeout=0.5)
    async with running(server):
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", server.port))  # never sends a ClientHello
        sock.setblocking(False)
        started = loop.time()
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1024), 10)
        except ConnectionResetError:
            data = b""
        finally:
            sock.close()
        assert data == b""  # the server closed it
        assert loop.time() - started < 5


async def test_the_clients_send_and_receive_integers_beyond_64_bits_exact() -> None:
    server = make_server()

    @server.add_handler()
    async def double(client: Client, packet: Packet) -> dict[str, object]:
        return {"n": packet["n"] * 2}

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"n": 2**70 + 1}) == {"n": 2**71 + 2}

        def sync_request() -> dict[str, object]:
            with SyncClient("127.0.0.1", server.port) as sync:
                reply: dict[str, object] = sync.request({"n": -(2**100)})
                return reply

        assert await asyncio.to_thread(sync_request) == {"n": -(2**101)}
