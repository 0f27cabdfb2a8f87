"""Both clients against a server running in the same process.

Run: ``python examples/clients.py`` (serves on a port the OS picks, then exits).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from asyncapy import Client, ErrorReply, Packet, Server
from asyncapy.client import AsyncClient
from asyncapy.client import Client as SyncClient

server = Server("127.0.0.1", 0)


class Add(BaseModel):
    a: int
    b: int


class Sum(BaseModel):
    total: int


@server.add_handler()
async def add(client: Client, packet: Packet[Add]) -> Sum:
    return Sum(total=packet.data.a + packet.data.b)


@server.add_handler()
async def echo(client: Client, packet: Packet) -> None:
    if "fail" in packet:
        raise RuntimeError("asked to fail")  # the peer gets ERR_INTERNAL
    await client.send(packet)


def blocking_calls(port: int) -> list[Any]:
    with SyncClient("127.0.0.1", port, timeout=5) as client:
        client.send({"test": 1})
        raw = client.receive_all()
        return [raw, client.request({"z": [1, 2]}, encoding="ziproto")]


async def main() -> None:
    await server.start_serving()
    try:
        raw, ziproto_reply = await asyncio.to_thread(blocking_calls, server.port)
        print("blocking client, raw packet:", raw)
        print("blocking client, ZiProto reply:", ziproto_reply)
        async with AsyncClient("127.0.0.1", server.port, timeout=5) as client:
            print("async client:", await client.request({"hello": "world"}))
            reply = await client.request(Add(a=1, b=2), reply=Sum)  # a validated Sum
            print("typed reply:", reply)
            sums = await asyncio.gather(*(client.request(Add(a=i, b=i), reply=Sum) for i in range(20)))
            print("concurrent requests, each its own answer:", [s.total for s in sums] == [2 * i for i in range(20)])
            try:
                await client.request({"fail": True}, raise_errors=True)
            except ErrorReply as error:
                print("async client, error reply:", error.code)
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
