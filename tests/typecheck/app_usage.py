"""User-shaped code of the application layer that must type-check (``mypy --strict``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy import ApiError, CallNext, Client, Depends, Packet, Router, Server


class Create(BaseModel):
    item: str


class Order(BaseModel):
    id: int
    item: str


class User:
    name = "ada"


@asynccontextmanager
async def lifespan(server: Server) -> AsyncIterator[None]:
    server.state.orders = {}
    yield
    server.state.orders.clear()


server = Server(port=0, lifespan=lifespan)


async def get_counter() -> AsyncIterator[int]:
    yield 1


def logged_in(client: Client, packet: Packet) -> User:
    if "token" not in packet:
        raise ApiError("ERR_UNAUTHORIZED", "log in first")
    return User()


admin = Router(dependencies=[Depends(logged_in)])


@admin.add_handler(errors=["ERR_UNAUTHORIZED"])
async def create(
    client: Client,
    packet: Packet[Create],
    counter: Annotated[int, Depends(get_counter)],
    user: User = Depends(logged_in),
) -> Order:
    assert_type(counter, int)
    assert_type(user, User)
    return Order(id=counter, item=packet.data.item)


server.include_router(admin)


@server.middleware
async def timing(client: Client, packet: Packet, call_next: CallNext) -> None:
    await call_next()


async def audit(client: Client, packet: Packet[Any], call_next: CallNext) -> None:
    await call_next()


registered = server.middleware(audit)  # the call form returns the function itself
assert registered is audit


@server.exception_handler(KeyError)
async def not_found(client: Client, packet: Packet, exc: KeyError) -> dict[str, Any]:
    return {"status": "failure", "error": "ERR_NOT_FOUND", "detail": str(exc)}


@server.exception_handler(LookupError)
async def nothing(client: Client, packet: Packet, exc: LookupError) -> None:
    return None
