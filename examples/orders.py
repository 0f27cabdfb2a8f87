"""A small order service: the application layer at work.

- a lifespan opens the store before serving and closes it after (``server.state.store``);
- ``transaction`` is a dependency with teardown: commit after the reply, roll back on error;
- ``logged_in`` guards every handler of the ``orders`` router (``dependencies=[...]``);
- ``timing`` is a middleware around every packet;
- a ``KeyError`` (unknown order) becomes ERR_NOT_FOUND, ``ApiError`` answers the rest.

Serve it with ``asyncapy run examples.orders:server --port 1500``, then:

    asyncapy send 127.0.0.1:1500 '{"kind": "login", "user": "ada"}'
    asyncapy send 127.0.0.1:1500 '{"kind": "place", "token": "t-ada", "item": "tea", "qty": 2}'
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from asyncapy import ApiError, CallNext, Client, Depends, Packet, Router, Server

log = logging.getLogger("examples.orders")


class Store:
    """Stands in for a database: orders by id, and a log of what was committed."""

    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        self.committed: list[int] = []
        self.open = True

    def close(self) -> None:
        self.open = False


@asynccontextmanager
async def lifespan(server: Server) -> AsyncIterator[None]:
    server.state.store = Store()
    server.state.tokens = {}
    yield
    server.state.store.close()


server = Server("127.0.0.1", 1500, lifespan=lifespan)


# -- packets ----------------------------------------------------------------------------


class Login(BaseModel):
    kind: Literal["login"]
    user: str = Field(min_length=1)


class Place(BaseModel):
    kind: Literal["place"]
    token: str
    item: str
    qty: int = Field(gt=0)


class Show(BaseModel):
    kind: Literal["show"]
    token: str
    id: int


class Order(BaseModel):
    id: int
    user: str
    item: str
    qty: int


class Token(BaseModel):
    token: str


# -- dependencies -----------------------------------------------------------------------


def store() -> Store:
    return server.state.store  # type: ignore[no-any-return]


def transaction(db: Annotated[Store, Depends(store)]) -> Iterator[list[dict[str, Any]]]:
    """Changes are kept aside and applied after the reply was sent; dropped if anything raised."""
    pending: list[dict[str, Any]] = []
    yield pending  # an exception raised by the handler arrives here and drops `pending`
    for order in pending:
        db.orders[order["id"]] = order
        db.committed.append(order["id"])


def logged_in(packet: Packet) -> str:
    user = server.state.tokens.get(packet.get("token"))
    if user is None:
        raise ApiError("ERR_UNAUTHORIZED", "log in first")
    return str(user)


orders = Router(dependencies=[Depends(logged_in)])


# -- handlers ---------------------------------------------------------------------------


@server.add_handler()
async def login(client: Client, packet: Packet[Login]) -> Token:
    token = f"t-{packet.data.user}"
    server.state.tokens[token] = packet.data.user
    return Token(token=token)


@orders.add_handler(errors=["ERR_UNAUTHORIZED", "ERR_OUT_OF_STOCK"])
async def place(
    client: Client,
    packet: Packet[Place],
    tx: Annotated[list[dict[str, Any]], Depends(transaction)],
    user: Annotated[str, Depends(logged_in)],
    db: Annotated[Store, Depends(store)],
) -> Order:
    if packet.data.item == "unobtainium":
        raise ApiError("ERR_OUT_OF_STOCK", f"no {packet.data.item} left")
    order = {"id": len(db.orders) + len(tx) + 1, "user": user, "item": packet.data.item, "qty": packet.data.qty}
    tx.append(order)
    return order  # type: ignore[return-value]  # a dict: validated into Order


@orders.add_handler(errors=["ERR_UNAUTHORIZED", "ERR_NOT_FOUND"])
async def show(client: Client, packet: Packet[Show], db: Annotated[Store, Depends(store)]) -> Order:
    return Order(**db.orders[packet.data.id])  # KeyError -> ERR_NOT_FOUND


server.include_router(orders)


# -- cross-cutting ----------------------------------------------------------------------------


@server.middleware
async def timing(client: Client, packet: Packet, call_next: CallNext) -> None:
    started = time.perf_counter()
    try:
        await call_next()
    finally:
        log.info("%s %s: %.0f us", client.address, packet.get("kind"), (time.perf_counter() - started) * 1e6)


@server.exception_handler(KeyError)
async def not_found(client: Client, packet: Packet, exc: KeyError) -> dict[str, Any]:
    return {"status": "failure", "error": "ERR_NOT_FOUND", "detail": f"no such order: {exc}"}


if __name__ == "__main__":
    server.start()
