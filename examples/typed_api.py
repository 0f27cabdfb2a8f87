"""A typed API: handlers declare the pydantic models they accept and reply with.

Serve it with ``asyncapy run examples.typed_api:server --port 1500`` and call it with
``asyncapy send 127.0.0.1:1500 '{"kind": "add", "a": 1, "b": 2}'``; print its AsyncAPI
document with ``asyncapy schema examples.typed_api:server --asyncapi``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from asyncapy import Client, Packet, Server

server = Server("127.0.0.1", 1500)


class Ping(BaseModel):
    kind: Literal["ping"]


class Pong(BaseModel):
    kind: Literal["pong"] = "pong"


class Add(BaseModel):
    kind: Literal["add"]
    a: int
    b: int


class Sum(BaseModel):
    kind: Literal["sum"] = "sum"
    result: int


@server.add_handler()
async def ping(client: Client, packet: Packet[Ping]) -> Pong:
    """Answer a ping, to check the server is up."""
    return Pong()


@server.add_handler()
async def add(client: Client, packet: Packet[Add]) -> Sum:
    """Add two integers."""
    return Sum(result=packet["a"] + packet["b"])


if __name__ == "__main__":
    server.start()
