"""Health probes (DESIGN §10): ``Server(health=True)`` answers ``{"asyncapy": "health"}`` itself.

The probe is recognised before anything else looks at the packet (routing, the
server's rate limit, filters, middleware): ``HealthPlan`` stands in front of the plan
the connections run, and is only there when ``health=True`` (a server without it
pays nothing). The answer, in the probe's encoding, is ``{"status": "SERVING"}``
while the server serves and ``{"status": "NOT_SERVING"}`` from the moment a graceful
stop begins, so that a balancer takes the instance out before it stops accepting
(``Server(drain=...)`` keeps it serving that long). ``asyncapy probe HOST:PORT`` asks
it from the command line; ``examples/deploy/haproxy.cfg`` from HAProxy.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from .codecs import get_codec
from .packet import Packet
from .peer import Client
from .protocol import Byteorder, encode_frame
from .routing import Miss, Plan

__all__ = ["HEALTH_PACKET", "NOT_SERVING", "SERVING", "Health", "HealthPlan", "health_frame", "health_plan", "is_probe"]

#: The probe: a packet of its own, which no application route ever sees.
HEALTH_PACKET: Final = {"asyncapy": "health"}
SERVING: Final = "SERVING"
NOT_SERVING: Final = "NOT_SERVING"


class Health:
    """Whether this server is serving: set when a serving run starts, cleared when a graceful stop begins."""

    __slots__ = ("serving",)

    def __init__(self) -> None:
        self.serving = False

    def reply(self) -> dict[str, str]:
        return {"status": SERVING if self.serving else NOT_SERVING}


def is_probe(payload: dict[str, Any]) -> bool:
    """True for the health packet (its ``"asyncapy"`` key says ``"health"``)."""
    return payload.get("asyncapy") == "health"


@dataclass(frozen=True, slots=True)
class HealthPlan(Plan):
    """``inner`` (the plan with its rate limit and middleware) behind the health probe."""

    inner: Plan = field(default=None)  # type: ignore[assignment]
    health: Health = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        Plan.__post_init__(self)
        object.__setattr__(self, "simple", self.inner.simple)
        object.__setattr__(self, "groups_simple", self.inner.groups_simple)

    def start(self, client: Client, packet: Packet[Any]) -> Coroutine[Any, Any, Any] | Miss:
        if is_probe(packet.payload):  # type: ignore[arg-type]  # a received payload is a dict
            return _answer(self.health, client, packet)
        return self.inner.start(client, packet)

    def dispatch(self, client: Client, packet: Packet[Any]) -> Coroutine[Any, Any, Miss | None]:
        if is_probe(packet.payload):  # type: ignore[arg-type]
            return _answer(self.health, client, packet)
        return self.inner.dispatch(client, packet)


async def _answer(health: Health, client: Client, packet: Packet[Any]) -> None:
    client.send_nowait(health.reply(), encoding=packet.encoding)


_answer.__qualname__ = "asyncapy.health"  # what the access log and metrics name it


def health_plan(plan: Plan, health: Health | None) -> Plan:
    """``plan`` behind the health probe (``plan`` itself when the server has no health probe)."""
    if health is None:
        return plan
    return HealthPlan(groups=plan.groups, app=plan.app, inner=plan, health=health)


def health_frame(status: str | None = None, header_size: int = 4, byteorder: Byteorder = "big") -> bytes:
    """The probe (``status=None``) or its answer as one JSON frame: what a balancer sends and expects."""
    payload = HEALTH_PACKET if status is None else {"status": status}
    codec = get_codec("json")
    return encode_frame(codec.encode(payload), codec.id, header_size, byteorder)
