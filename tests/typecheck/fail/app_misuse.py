"""Misuse of the application layer mypy must report (excluded from the normal mypy run)."""

from __future__ import annotations

from typing import Annotated

from asyncapy import CallNext, Client, Depends, Packet, Server

server = Server(port=0)


def get_count() -> int:
    return 1


@server.add_handler()
async def h(client: Client, packet: Packet, count: Annotated[int, Depends(get_count)]) -> None:
    name: str = count  # E1: Annotated[int, Depends(...)] is an int
    print(name)


@server.middleware  # E2: a middleware takes (client, packet, call_next)
async def no_call_next(client: Client, packet: Packet) -> None: ...


@server.middleware  # E3: call_next is awaited, not passed a value
async def wrong_next(client: Client, packet: Packet, call_next: int) -> None: ...


@server.exception_handler(KeyError)  # E4: the handler takes the exception it is registered for
async def wrong_exc(client: Client, packet: Packet, exc: ValueError) -> None: ...


@server.exception_handler(KeyError)  # E5: an exception handler takes (client, packet, exc)
async def two_args(client: Client, packet: Packet) -> None: ...


def unused(call_next: CallNext) -> None:
    print(call_next)
