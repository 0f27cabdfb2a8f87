"""The Getting-started groups example: one packet, handled by two groups in turn.

``echo_server_2`` (group -1) runs first, then ``echo_server`` (group 0), so the
client gets its packet back twice before the connection closes.
Run: ``python examples/groups.py [PORT]``.
"""

import sys

from asyncapy import Client, Packet, Server

server = Server(addr="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 1500)


@server.add_handler()
async def echo_server(client: Client, packet: Packet) -> None:
    print(f"Hello world from {client}!")
    print(f"Echoing back {packet}...")
    await client.send(packet)
    await client.close()


@server.add_handler(group=-1)
async def echo_server_2(client: Client, packet: Packet) -> None:
    print(f"Hello world from {client} inside a group!")
    print(f"Echoing back {packet}...")
    await client.send(packet)
    # packet.stop_propagation()  # This would prevent the packet from being forwarded to the next handler


if __name__ == "__main__":
    server.start()
