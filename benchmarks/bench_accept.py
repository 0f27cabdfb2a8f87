"""Connect-per-request over real loopback sockets: asyncapy's accept loop against asyncio's.

    python benchmarks/bench_accept.py [--connections 2000] [--repeat 5]

Two servers in one process with the same echo handler: one accepting through
``asyncapy.serve.listener.Listener`` (what ``Server`` uses on selector loops: backs off when
out of descriptors), one through plain ``loop.create_server``. A client connects,
sends one packet, reads the reply and closes, ``--connections`` times per run,
alternating the two servers between runs; prints the best run of each, in
microseconds per connection, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncapy import Client, Packet, Server  # noqa: E402
from asyncapy.serve.connection import Connection  # noqa: E402
from asyncapy.wire.protocol import encode_frame  # noqa: E402

REQUEST = encode_frame(b'{"test": 1}', 0)


async def one_run(port: int, connections: int) -> float:
    started = time.perf_counter()
    for _ in range(connections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        length = int.from_bytes(await reader.readexactly(4), "big")
        await reader.readexactly(length)
        writer.close()
        await writer.wait_closed()
    return (time.perf_counter() - started) / connections * 1e6


async def main_async(connections: int, repeat: int) -> None:
    server = Server("127.0.0.1", 0, logging_level=40)

    @server.add_handler()
    async def echo(client: Client, packet: Packet) -> None:
        await client.send(packet)

    await server.start_serving()
    assert server._ctx is not None
    ctx = server._ctx
    loop = asyncio.get_running_loop()
    plain = await loop.create_server(lambda: Connection(ctx), "127.0.0.1", 0, backlog=1024)
    plain_port = plain.sockets[0].getsockname()[1]
    best = {"asyncio create_server": float("inf"), "asyncapy Listener": float("inf")}
    for _ in range(repeat):
        best["asyncio create_server"] = min(best["asyncio create_server"], await one_run(plain_port, connections))
        best["asyncapy Listener"] = min(best["asyncapy Listener"], await one_run(server.port, connections))
    plain.close()
    await server.stop()
    base = best["asyncio create_server"]
    print(f"# {connections} connections per run, best of {repeat}, python {sys.version.split()[0]}")
    for name, us in best.items():
        print(f"{name:24} {us:8.1f} us/connection {us / base:6.2f} x base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main_async(args.connections, args.repeat))


if __name__ == "__main__":
    main()
