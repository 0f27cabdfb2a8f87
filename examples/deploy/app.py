"""The API each instance of the deployment serves (behind HAProxy, sharing one Redis).

Run one instance by hand (``stack.py`` starts two, a Redis and an HAProxy for you):

    ASYNCAPY_REDIS_URL=redis://127.0.0.1:6379/0 \\
        asyncapy run examples.deploy.app:server --port 1501 --proxy-protocol --trusted-proxy 127.0.0.1

Settings come from the environment: ``ASYNCAPY_REDIS_URL``, ``ASYNCAPY_NAMESPACE``,
``ASYNCAPY_REDIS_TIMEOUT`` (seconds), ``ASYNCAPY_SESSION_LIMIT`` (per client IP, across every instance), ``ASYNCAPY_RATE``
(of ``{"kind": "limited"}``, per client IP, across every instance) and
``ASYNCAPY_ADMIN_NETWORK`` (who may create and revoke API keys), ``ASYNCAPY_DRAIN`` (seconds a
stopping instance keeps serving while its health probe says NOT_SERVING, for HAProxy to
take it out first); ``ASYNCAPY_PROXY_PROTOCOL=0`` serves clients directly, without a
balancer (the benchmark's "one instance" row).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel

from asyncapy import APIKeyFactory, Client, Server
from asyncapy.filters import ApiKey, Ip, RateLimit
from asyncapy.redis import RedisState

STATE = RedisState(
    os.environ.get("ASYNCAPY_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ.get("ASYNCAPY_NAMESPACE", "deploy-demo"),
    timeout=float(os.environ.get("ASYNCAPY_REDIS_TIMEOUT", "0.5")),
)
KEYS = APIKeyFactory(store=STATE)
LIMIT = RateLimit(os.environ.get("ASYNCAPY_RATE", "5/minute"), state=STATE, name="limited")
ADMINS = Ip(os.environ.get("ASYNCAPY_ADMIN_NETWORK", "127.0.0.2/32"))

server = Server(
    "127.0.0.1",
    1501,
    session_limit=int(os.environ.get("ASYNCAPY_SESSION_LIMIT", "10")),
    shared_state=STATE,
    proxy_protocol=os.environ.get("ASYNCAPY_PROXY_PROTOCOL", "1") == "1",  # 0: clients connect directly
    health=True,  # answers HAProxy's probe {"asyncapy": "health"} (haproxy.cfg)
    drain=float(os.environ.get("ASYNCAPY_DRAIN", "3")),  # > HAProxy's check interval x its fall count
)


class WhoAmI(BaseModel):
    kind: Literal["whoami"]


class You(BaseModel):
    kind: Literal["you"] = "you"
    address: str
    instance: int  # the port of the instance that answered
    worker: int  # its process id (several with --workers)


class Limited(BaseModel):
    kind: Literal["limited"]


class Admin(BaseModel):
    kind: Literal["admin"]
    op: Literal["create_key", "revoke_key"]
    key: str = ""


class Private(BaseModel):
    kind: Literal["private"]
    api_key: str


@server.add_handler()
async def whoami(client: Client, packet: WhoAmI) -> You:
    """Needs nothing shared: answers even while Redis is down."""
    return You(address=client.address, instance=server.port, worker=os.getpid())


@server.add_handler(dependencies=[LIMIT])  # ERR_RATE_LIMITED past the rate, counted on every instance
async def limited(client: Client, packet: Limited) -> dict[str, object]:
    return {"kind": "ok", "instance": server.port}


@server.add_handler(ADMINS)
async def admin(client: Client, packet: Admin) -> dict[str, object]:
    if packet.op == "create_key":
        return {"kind": "key", "key": await KEYS.acreate()}
    return {"kind": "revoked", "revoked": await KEYS.arevoke(packet.key)}


@server.add_handler(ApiKey(KEYS))
async def private(client: Client, packet: Private) -> dict[str, object]:
    return {"kind": "secret", "instance": server.port}
