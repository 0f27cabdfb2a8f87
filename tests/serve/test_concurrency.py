"""Many connections at once, each pipelining packets: every reply arrives, in order."""

from __future__ import annotations

import asyncio

from asyncapy import Client, Packet
from asyncapy.wire.codecs import get_codec
from asyncapy.wire.protocol import encode_frame

from ..conftest import make_server, read_frame, running

CONNECTIONS = 200
PIPELINED = 10


async def test_200_connections_pipelining_10_packets_each_get_all_replies_in_order() -> None:
    server = make_server()

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        if packet["i"] % 3 == 0:
            await asyncio.sleep(0.001)  # some handlers suspend: order must still hold
        await client.send({"conn": packet["conn"], "i": packet["i"]})

    async def one_connection(conn: int) -> list[int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        frames = [encode_frame(get_codec(conn % 2).encode({"conn": conn, "i": i}), conn % 2) for i in range(PIPELINED)]
        writer.write(b"".join(frames))
        seen = []
        for _ in range(PIPELINED):
            encoding, payload = await read_frame(reader)
            reply = get_codec(encoding).decode(payload)
            assert reply["conn"] == conn
            seen.append(reply["i"])
        writer.close()
        return seen

    async with running(server):
        results = await asyncio.wait_for(asyncio.gather(*(one_connection(c) for c in range(CONNECTIONS))), 60)
    assert results == [list(range(PIPELINED))] * CONNECTIONS
