"""Misuse mypy must report (not part of the normal mypy run: see mypy.ini's exclude)."""

from __future__ import annotations

from pydantic import BaseModel

from asyncapy import Client, Packet, Server


class Login(BaseModel):
    user: str


server = Server(port=0)


@server.add_handler()
async def login(client: Client, packet: Packet[Login]) -> None:
    user_id: int = packet.data.user  # E: str is not an int
    print(user_id)


def not_a_handler_result() -> None:
    login_result: int = login  # E: the decorator kept the function's type
    print(login_result)
