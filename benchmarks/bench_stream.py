"""Per-item cost of a streaming handler on v1, against a handler that sends in a loop.

    .venv/bin/python benchmarks/bench_stream.py [--items 20000] [--repeat 5]

A real server on 127.0.0.1 and a raw socket client: one request, then ``--items``
packets read back. ``stream`` is an async generator handler (``-> AsyncIterator[Tick]``:
item check, encode, write, drain per item); ``send loop`` is the same handler written as
``for ...: await client.send(Tick(...))``. Prints the best microseconds per item of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

from pydantic import BaseModel

from asyncapy import Client, Packet, Server


class Ask(BaseModel):
    kind: str
    count: int


class Tick(BaseModel):
    symbol: str
    price: float


def build() -> Server:
    server = Server("127.0.0.1", port=0)

    @server.add_handler(lambda client, packet: packet["kind"] == "stream")
    async def stream(client: Client, packet: Packet[Ask]) -> AsyncIterator[Tick]:
        for n in range(packet.data.count):
            yield Tick(symbol="ACME", price=n)

    @server.add_handler(lambda client, packet: packet["kind"] == "send")
    async def send_loop(client: Client, packet: Packet[Ask]) -> None:
        for n in range(packet.data.count):
            await client.send(Tick(symbol="ACME", price=n))

    return server


def frame(obj: dict[str, object]) -> bytes:
    payload = json.dumps(obj).encode()
    return (len(payload) + 2).to_bytes(4, "big") + b"\x16\x00" + payload


async def run_once(port: int, kind: str, items: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.perf_counter()
        writer.write(frame({"kind": kind, "count": items}))
        for _ in range(items):
            size = int.from_bytes(await reader.readexactly(4), "big")
            await reader.readexactly(size)
        return (time.perf_counter() - started) / items * 1e6
    finally:
        writer.close()


async def main(items: int, repeat: int) -> None:
    server = build()
    await server.start_serving()
    try:
        port = server.port
        for kind, label in (("stream", "stream (async generator)"), ("send", "send loop (await client.send)")):
            best = min([await run_once(port, kind, items) for _ in range(repeat)])
            print(f"{label:32} {best:6.2f} us per item ({items} items, best of {repeat})")
    finally:
        await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.items, args.repeat))
