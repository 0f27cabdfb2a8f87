"""An app for the operating tests: logs through its own logger, replies with its PID.

``asyncapy run tests.servers.observed:server ...``; ``person`` answers ``{"name": ...}``
(``"boom"`` raises), ``audit`` in group -1 runs before it for packets with ``"audit"``.
"""

import logging
import os

from pydantic import BaseModel

from asyncapy import Client, Packet, Server

log = logging.getLogger("shop")

server = Server("127.0.0.1", 0)


class Person(BaseModel):
    name: str


class Reply(BaseModel):
    hello: str
    pid: int


def wants_audit(client: Client, packet: Packet) -> bool:
    return "audit" in packet


@server.add_handler(wants_audit, group=-1)
async def audit(client: Client, packet: Packet) -> None:
    log.info("audited %s", packet["audit"])


@server.add_handler()
async def person(client: Client, packet: Packet[Person]) -> Reply:
    log.info("hello %s", packet.data.name)
    if packet.data.name == "boom":
        raise RuntimeError("boom")
    return Reply(hello=packet.data.name, pid=os.getpid())
