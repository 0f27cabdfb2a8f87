"""Filters: IP networks, exact fields, API keys and a custom filter, composed.

Run: ``python examples/filters.py`` (drives the server in memory with TestClient).
"""

from __future__ import annotations

from asyncapy import APIKeyFactory, Client, Packet, Server
from asyncapy.filters import ApiKey, Fields, Ip
from asyncapy.testing import TestClient

server = Server("127.0.0.1", 0)
keys = APIKeyFactory()
KEY = keys.create()


def is_weekday_request(client: Client, packet: Packet) -> bool:
    """A custom filter is any callable (or object with ``check``), sync or async."""
    return packet.get("day") != "sunday"


@server.add_handler(Ip("127.0.0.0/8", "::1") & ApiKey(keys))
async def admin(client: Client, packet: Packet) -> dict[str, str]:
    return {"area": "admin"}


@server.add_handler(Fields(user=r"\w{3,16}", day=None) & is_weekday_request)
async def office(client: Client, packet: Packet) -> dict[str, str]:
    return {"area": "office", "user": packet["user"]}


@server.add_handler(~Ip("10.0.0.0/8"))
async def lobby(client: Client, packet: Packet) -> dict[str, str]:
    return {"area": "lobby"}


def main() -> None:
    with TestClient(server) as local:
        print(local.request({"api_key": KEY}))  # admin: loopback with a valid key
        print(local.request({"user": "ada", "day": "monday"}))  # office
        print(local.request({"user": "ada", "day": "sunday"}))  # lobby: the custom filter said no
    with TestClient(server, address="10.1.2.3") as remote:
        print(remote.request({"api_key": "wrong"}))  # nothing matches: ERR_NO_HANDLER, key not echoed


if __name__ == "__main__":
    main()
