"""User-shaped code of the past-one-machine features that must type-check under ``mypy --strict``."""

from __future__ import annotations

from pydantic import BaseModel
from typing_extensions import assert_type

from asyncapy import APIKeyFactory, Client, Packet, Server
from asyncapy.app.filters import ApiKey, RateLimit
from asyncapy.wire.proxy import Network
from asyncapy.shared.redis import RedisState


class Search(BaseModel):
    query: str
    api_key: str


state = RedisState("redis://127.0.0.1:6379/0", namespace="shop", ttl=30, timeout=0.5)
keys = APIKeyFactory(store=state)
per_key = RateLimit("10/second", per="api_key", state=state)
per_tenant = RateLimit("100/minute", per=lambda client, packet: str(packet.payload.get("tenant")))
server = Server(
    port=0,
    proxy_protocol=True,
    trusted_proxies=["10.0.0.0/8"],
    session_limit=10,
    shared_state=state,
    rate_limit=RateLimit("600/minute"),
)
assert_type(server.trusted_proxies, tuple[Network, ...])


@server.add_handler(ApiKey(keys), dependencies=[per_key])
async def search(client: Client, packet: Search) -> dict[str, list[str]]:
    await per_tenant.acquire(client, packet)
    return {"results": []}


async def admin() -> None:
    key = await keys.acreate()
    assert_type(key, str)
    assert_type(await keys.arevoke(key), bool)
    assert_type(await keys.acontains(key), bool)
    assert_type(await per_tenant.hit(Client.__new__(Client), Packet({})), float)
