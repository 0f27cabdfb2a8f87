"""An app whose replies carry the client's text: for the log injection tests (issue 21).

``echo`` sends back any packet with a ``status`` (its own bytes: a client can shape it
like an error reply); ``strict`` refuses unknown fields, so their names reach
ERR_NO_HANDLER's detail, which the debug log shows.
"""

from pydantic import BaseModel, ConfigDict

from asyncapy import Client, Packet, Server

server = Server("127.0.0.1", 0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int


def has_status(client: Client, packet: Packet) -> bool:
    return "status" in packet


@server.add_handler(has_status)
async def echo(client: Client, packet: Packet) -> None:
    await client.send(packet)


@server.add_handler()
async def strict(client: Client, packet: Packet[Strict]) -> None:
    await client.send({"a": packet.data.a})
