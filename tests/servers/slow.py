"""A server whose handler takes a while: SIGTERM must let it finish (run as a script)."""

import asyncio
import sys

from asyncapy import Client, Packet, Server

server = Server("127.0.0.1", int(sys.argv[1]))


@server.add_handler()
async def slow(client: Client, packet: Packet) -> None:
    await asyncio.sleep(packet.get("sleep", 0))
    await client.send({"done": packet.get("n")})


if __name__ == "__main__":
    server.start()
    print("exited cleanly", flush=True)
