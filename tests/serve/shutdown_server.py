"""A server for the graceful-shutdown test: echoes after a short await, prints its port."""

from __future__ import annotations

import asyncio
import logging
import sys

from asyncapy import Client, Packet, Server

#: A short await per packet keeps handlers in flight when SIGTERM lands.
HANDLER_DELAY = 0.001


class PortServer(Server):
    async def start_serving(self) -> None:
        await super().start_serving()
        print(self.port, flush=True)


server = PortServer("127.0.0.1", 0, logging_level=logging.WARNING, shutdown_timeout=20)


@server.add_handler()
async def echo(client: Client, packet: Packet) -> None:
    await asyncio.sleep(HANDLER_DELAY)
    await client.send(packet)


if __name__ == "__main__":
    server.start()
    print("exited cleanly", file=sys.stderr, flush=True)
