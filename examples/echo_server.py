"""The Getting-started echo server: every packet is sent back as it came.

Run it with ``python examples/echo_server.py [PORT]`` (default port 1500), then
``python examples/testclient.py [PORT]`` in another terminal.
"""

import sys

from asyncapy import Client, Packet, Server

server = Server(addr="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 1500)


async def echo_server(client: Client, packet: Packet) -> None:
    print(f"Hello world from {client}!")
    print(f"Echoing back {packet}...")
    await client.send(packet)
    await client.close()


server.register_handler(echo_server)  # Register our handler

if __name__ == "__main__":
    server.start()  # Start the server
