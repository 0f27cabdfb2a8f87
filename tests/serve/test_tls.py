"""The TLS server path, with certificates from trustme."""

from __future__ import annotations

import asyncio
import ssl

import trustme

from asyncapy import Client, Packet
from asyncapy.client import AsyncClient
from asyncapy.client import Client as SyncClient

from ..conftest import make_server, running


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def _sync_request(port: int, ctx: ssl.SSLContext) -> dict[str, object]:
    with SyncClient("127.0.0.1", port, ssl_context=ctx, timeout=10) as client:
        return client.request({"sync": 1})


async def test_tls_round_trips_with_both_clients() -> None:
    server_ctx, client_ctx = _contexts()
    server = make_server(ssl=server_ctx)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, ssl_context=client_ctx) as client:
            assert await client.request({"a": 1}) == {"a": 1}
            assert await client.request({"z": [1]}, "ziproto") == {"z": [1]}
        assert await asyncio.to_thread(_sync_request, server.port, client_ctx) == {"sync": 1}


async def test_tls_refuses_an_untrusting_client() -> None:
    server_ctx, _ = _contexts()
    server = make_server(ssl=server_ctx)
    async with running(server):
        stranger = ssl.create_default_context()  # does not trust the test CA
        client = AsyncClient("127.0.0.1", server.port, ssl_context=stranger, timeout=10)
        try:
            await client.connect()
        except ssl.SSLCertVerificationError:
            pass
        else:
            raise AssertionError("a client that does not trust the CA connected")
        finally:
            await client.close()


async def test_tls_pipelining_and_limits() -> None:
    """Flow control works over TLS too: many pipelined packets all answered."""
    server_ctx, client_ctx = _contexts()
    server = make_server(ssl=server_ctx, max_pending=4)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, ssl_context=client_ctx) as client:
            for i in range(500):
                await client.send({"i": i})
            for i in range(500):
                assert await client.receive() == {"i": i}
