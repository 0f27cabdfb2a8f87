"""The blocking and asyncio clients: round trips, errors, timeouts and TLS."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asyncapy import Client, ConnectionClosed, ErrorReply, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.client import Client as SyncClient

from ..conftest import make_server, running


def echo_server(**kwargs: Any) -> Server:
    server = make_server(**kwargs)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        if packet.get("close"):
            await client.close()
            return
        if packet.get("sleep"):
            await asyncio.sleep(packet["sleep"])
        await client.send(packet)

    return server


async def test_sync_client_round_trips_both_encodings() -> None:
    def talk(port: int) -> list[Any]:
        with SyncClient("127.0.0.1", port, timeout=5) as client:
            client.send({"test": 1})
            raw = client.receive_all()
            return [raw, client.request({"z": [1, 2.5, None]}, encoding="ziproto"), client.request({"j": "é"})]

    async with running(echo_server()) as server:
        raw, ziproto_reply, json_reply = await asyncio.to_thread(talk, server.port)
    assert raw == b'\x00\x00\x00\x0c\x16\x00{"test":1}'
    assert ziproto_reply == {"z": [1, 2.5, None]}
    assert json_reply == {"j": "é"}


async def test_async_client_raises_connection_closed_when_the_server_closes() -> None:
    async with running(echo_server()) as server:
        async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
            with pytest.raises(ConnectionClosed, match="closed the connection"):
                await client.request({"close": True})


async def test_sync_client_raises_connection_closed_when_the_server_closes() -> None:
    def talk(port: int) -> None:
        with SyncClient("127.0.0.1", port, timeout=5) as client:
            client.request({"close": True})

    async with running(echo_server()) as server:
        with pytest.raises(ConnectionClosed):
            await asyncio.to_thread(talk, server.port)


async def test_clients_time_out_cleanly() -> None:
    def talk(port: int) -> None:
        with SyncClient("127.0.0.1", port, timeout=0.2) as client:
            client.request({"sleep": 1})

    async with running(echo_server()) as server:
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(talk, server.port)
        async with AsyncClient("127.0.0.1", server.port, timeout=0.2) as client:
            with pytest.raises(TimeoutError):
                await client.request({"sleep": 1})


async def test_error_replies_raise_only_when_asked() -> None:
    server = make_server()
    async with running(server):
        async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
            reply = await client.request({"x": 1})
            assert reply["error"] == "ERR_NO_HANDLER"
            with pytest.raises(ErrorReply) as caught:
                await client.request({"x": 1}, raise_errors=True)
            assert caught.value.code == "ERR_NO_HANDLER"


async def test_connecting_to_a_closed_port_is_a_connection_error() -> None:
    server = make_server()
    async with running(server):
        port = server.port
    with pytest.raises(ConnectionError):
        await AsyncClient("127.0.0.1", port, timeout=2).connect()
    with pytest.raises(ConnectionError):
        SyncClient("127.0.0.1", port, timeout=2).connect()
