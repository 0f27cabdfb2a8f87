"""User-shaped code that must type-check under ``mypy --strict`` (see test_mypy.py)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Literal

from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy import APIKeyFactory, Client, Packet, Router, Server, filters
from asyncapy.app.filters import Filters


class Login(BaseModel):
    kind: Literal["login"]
    user: str


class Logout(BaseModel):
    kind: Literal["logout"]
    user: str


class Welcome(BaseModel):
    greeting: str


server = Server(port=0)
router = Router()
keys = APIKeyFactory()


@server.add_handler(filters.Ip("127.0.0.1") & Filters.Fields(kind=None, user=r"\w+"), group=-1)
async def login(client: Client, packet: Packet[Login]) -> Welcome:
    assert_type(packet.data, Login)
    assert_type(packet.data.user, str)
    assert_type(packet.payload["anything"], Any)
    packet.stop_propagation()
    return Welcome(greeting=f"hi {packet.data.user}")


@router.add_handler(filters.ApiKey(keys))
async def either(client: Client, packet: Login | Logout) -> None:
    assert_type(packet, Login | Logout)
    assert_type(packet.kind, Literal["login"] | Literal["logout"])


@router.add_handler()
async def anything(client: Client, packet: Packet) -> dict[str, Any]:
    assert_type(packet.data, dict[str, Any])
    await client.send(packet)
    return {"echo": dict(packet)}




async def decorators_keep_the_signature(client: Client, packet: Packet[Login], raw: Packet) -> None:
    assert_type(await login(client, packet), Welcome)
    assert_type(await anything(client, raw), dict[str, Any])
    handler: Callable[[Client, Packet[Login]], Coroutine[Any, Any, Welcome]] = login
    print(handler)


server.include_router(router)
key: str = keys.create()
