"""A server exercising routing and error replies, shared by the socket/memory parity suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from asyncapy import Client, Packet, Server

from .conftest import make_server

Filter = Callable[[Client, Packet[Any]], bool]


def kind(name: str) -> Filter:
    """A plain-callable filter: the packet's "kind" is ``name``."""

    def check(client: Client, packet: Packet[Any]) -> bool:
        return packet.payload.get("kind") == name

    return check


def has(key: str) -> Filter:
    def check(client: Client, packet: Packet[Any]) -> bool:
        return key in packet.payload

    return check


async def tag(client: Client, packet: Packet) -> None:
    """Group -1: sees tagged packets first, then lets group 0 run."""
    await client.send({"seen_by": "tag"})


async def stopper(client: Client, packet: Packet) -> dict[str, Any]:
    packet.stop_propagation()
    return {"stopped": True}


async def echo(client: Client, packet: Packet) -> None:
    await client.send(packet)


async def pick_x(client: Client, packet: Packet) -> dict[str, Any]:
    return {"picked": "x", "x": packet["x"]}


async def pick_any(client: Client, packet: Packet) -> dict[str, Any]:
    return {"picked": "any"}


async def boom(client: Client, packet: Packet) -> None:
    raise RuntimeError("a handler bug")


async def whoami(client: Client, packet: Packet) -> dict[str, Any]:
    return {"address": client.address, "encoding": client.encoding}


class Order(BaseModel):
    kind: Literal["order"]
    qty: int = Field(gt=0)


class AnyOrder(BaseModel):
    kind: Literal["order"]


async def order(client: Client, packet: Packet[Order]) -> dict[str, Any]:
    return {"order": packet.data.qty}


async def odd_order(client: Client, packet: AnyOrder) -> dict[str, Any]:
    """Reached only when ``Order`` did not validate: typed fall-through."""
    return {"order": "invalid"}


def build_server(**settings: Any) -> Server:
    server = make_server(**settings)
    server.register_handler(tag, has("tag"), group=-1)
    server.register_handler(stopper, kind("stop"), group=-1)
    server.register_handler(echo, kind("echo"))
    server.register_handler(pick_x, kind("pick"), has("x"))
    server.register_handler(pick_any, kind("pick"))
    server.register_handler(boom, kind("boom"))
    server.register_handler(whoami, kind("whoami"))
    server.register_handler(order)
    server.register_handler(odd_order)
    server.register_handler(echo, kind("stop"), group=1)
    return server
