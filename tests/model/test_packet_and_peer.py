"""Packet as a read-only mapping, and the Client peer handlers receive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy import Client, Packet
from asyncapy.client import AsyncClient

from ..conftest import make_server, running


class Point(BaseModel):
    x: int
    y: int


def test_packet_is_a_read_only_mapping() -> None:
    packet = Packet({"a": 1, "b": [2]})
    assert "a" in packet and "z" not in packet
    assert packet["b"] == [2] and list(packet) == ["a", "b"] and len(packet) == 2
    assert dict(packet) == {"a": 1, "b": [2]} and packet.get("z") is None
    assert repr(packet) == 'Packet({"a": 1, "b": [2]})'
    with pytest.raises(TypeError):
        packet["a"] = 2  # type: ignore[index]


def test_packet_from_a_model_carries_the_instance_and_its_map() -> None:
    packet = Packet(Point(x=1, y=2), encoding="ziproto")
    assert_type(packet, Packet[Point])
    assert_type(Packet({"a": 1}), Packet[dict[str, Any]])
    assert packet.data == Point(x=1, y=2)
    assert packet.payload == {"x": 1, "y": 2} and packet.encoding == "ziproto"


def test_packet_refuses_unknown_encodings_and_non_maps() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        Packet({}, encoding="xml")
    with pytest.raises(TypeError, match="mapping or a pydantic model"):
        Packet([1, 2])  # type: ignore[call-overload]


async def test_peer_attributes_sessions_and_every_kind_of_send() -> None:
    server = make_server()
    seen: dict[str, Any] = {}

    @server.add_handler(lambda c, p: "warm" in p)
    async def warm(client: Client, packet: Packet) -> dict[str, int]:
        return {"warm": 1}

    @server.add_handler()
    async def inspect(client: Client, packet: Packet) -> None:
        seen["address"], seen["encoding"] = client.address, client.encoding
        seen["sessions"] = len(client.get_sessions())
        seen["session"] = str(client.session.id)
        await client.send(Packet({"built": True}, encoding="json"))
        await client.send(Point(x=3, y=4))
        await client.send({"plain": 1}, encoding="json")
        await client.send(packet, close=True)
        await client.send({"after": "close"})  # harmless: ignored

    async with running(server):
        other = AsyncClient("127.0.0.1", server.port)
        await other.request({"warm": 1})  # a second open session from the same address
        # v1: the packet-level calls on the client's only connection (on v2 they have one of their own)
        async with AsyncClient("127.0.0.1", server.port, encoding="ziproto", protocol=1) as client:
            await client.send({"hello": "world"})
            replies = [await client.receive() for _ in range(4)]
            with pytest.raises(ConnectionError):
                await client.receive()
        await other.close()
    assert replies == [{"built": True}, {"x": 3, "y": 4}, {"plain": 1}, {"hello": "world"}]
    assert seen["address"] == "127.0.0.1" and seen["encoding"] == "ziproto"
    assert seen["sessions"] == 2 and len(seen["session"]) == 36


async def test_a_received_packet_re_sent_keeps_its_original_bytes() -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    async with running(server):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        odd = b'{ "spaced" :  1 ,"u":"\\u00e9"}'
        frame = (len(odd) + 2).to_bytes(4, "big") + b"\x16\x00" + odd
        writer.write(frame)
        assert await reader.readexactly(len(frame)) == frame
        writer.close()
