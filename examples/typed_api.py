"""A typed API: handlers declare the pydantic models they accept and reply with.

Serve it with ``asyncapy run examples.typed_api:server --port 1500`` and call it with
``asyncapy send 127.0.0.1:1500 '{"kind": "add", "a": 1, "b": 2}'``; print its AsyncAPI
document with ``asyncapy schema examples.typed_api:server --asyncapi``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

from asyncapy import Client, Packet, Server
from asyncapy.filters import Fields

server = Server("127.0.0.1", 1500)

# Input ranges: a sum that both codecs carry (a signed 64-bit integer, which ZiProto
# needs), and lengths whose area is a finite float (1e200 squared would overflow).
MAX_TERM = 2**62
MAX_LENGTH = 1e150


class Ping(BaseModel):
    kind: Literal["ping"]


class Pong(BaseModel):
    kind: Literal["pong"] = "pong"


class Add(BaseModel):
    kind: Literal["add"]
    a: int = Field(ge=-MAX_TERM, le=MAX_TERM)
    b: int = Field(ge=-MAX_TERM, le=MAX_TERM)


class Sum(BaseModel):
    kind: Literal["sum"] = "sum"
    result: int


class Circle(BaseModel):
    kind: Literal["circle"]
    radius: float = Field(ge=0, le=MAX_LENGTH)


class Square(BaseModel):
    kind: Literal["square"]
    side: float = Field(ge=0, le=MAX_LENGTH)


Shape = Annotated[Union[Circle, Square], Field(discriminator="kind")]


class Area(BaseModel):
    kind: Literal["area"] = "area"
    area: float


@server.add_handler()
async def ping(client: Client, packet: Packet[Ping]) -> Pong:
    """Answer a ping, to check the server is up."""
    return Pong()


@server.add_handler()
async def add(client: Client, packet: Packet[Add]) -> Sum:
    """Add two integers."""
    return Sum(result=packet.data.a + packet.data.b)


@server.add_handler()
async def area(client: Client, shape: Shape) -> Area:
    """The area of a circle or a square."""
    if isinstance(shape, Circle):
        return Area(area=3.141592653589793 * shape.radius**2)
    return Area(area=shape.side**2)


@server.add_handler(Fields(user=r"[a-z]{1,16}"))
async def hello(client: Client, packet: Packet) -> dict[str, str]:
    """Greet a user whose name is 1 to 16 lowercase letters (any other packet falls through)."""
    return {"hello": packet["user"]}


if __name__ == "__main__":
    server.start()
