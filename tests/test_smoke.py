from __future__ import annotations

from asyncapy import Client, Packet, Server
from asyncapy.client import AsyncClient

from .conftest import make_server, running


async def test_echo_roundtrip() -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        async with AsyncClient("127.0.0.1", server.port) as client:
            assert await client.request({"test": 1}) == {"test": 1}
            assert await client.request({"z": [1, 2]}, "ziproto") == {"z": [1, 2]}
    assert isinstance(server, Server)
