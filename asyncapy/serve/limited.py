"""``Server(rate_limit=...)``: a plan that checks the limit before routing each packet."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable, Coroutine
from typing import Any

from ..wire.errors import ERR_INTERNAL, ERR_RATE_LIMITED, error_payload
from ..model.packet import Packet
from ..model.peer import Client
from ..shared.ratelimit import RateLimit
from ..app.routing import Miss, Plan
from ..shared.state import SHARED_STATE_UNAVAILABLE, SharedStateUnavailable


@dataclass(frozen=True, slots=True)
class LimitedPlan(Plan):
    """A ``Plan`` behind ``Server(rate_limit=...)``: the limit is checked before routing.

    An in-memory limit keeps a simple plan simple: ``start`` counts the packet, then
    picks the handler as before. A shared limit awaits its backend, so every packet
    goes through ``dispatch``. Either answers an over-limit packet itself
    (ERR_RATE_LIMITED), or one the shared state could not count (ERR_INTERNAL).
    """

    limit: RateLimit = field(default=None)  # type: ignore[assignment]
    _count: Callable[[Client, Packet[Any]], float] = field(init=False)

    def __post_init__(self) -> None:
        Plan.__post_init__(self)
        object.__setattr__(self, "simple", self.simple and self.limit.state is None)
        object.__setattr__(self, "_count", self.limit.local_counter())

    def start(self, client: Client, packet: Packet[Any]) -> Coroutine[Any, Any, Any] | Miss:
        wait = self._count(client, packet)
        if wait:
            return _answer(client, packet, ERR_RATE_LIMITED, self.limit.detail(wait))
        return Plan.start(self, client, packet)

    async def dispatch(self, client: Client, packet: Packet[Any]) -> Miss | None:
        limit = self.limit
        try:
            wait = self._count(client, packet) if limit.state is None else await limit.hit(client, packet)
        except SharedStateUnavailable:
            await _answer(client, packet, ERR_INTERNAL, SHARED_STATE_UNAVAILABLE)
            return None
        if wait:
            await _answer(client, packet, ERR_RATE_LIMITED, limit.detail(wait))
            return None
        return await Plan.dispatch(self, client, packet)


async def _answer(client: Client, packet: Packet[Any], code: str, detail: str) -> None:
    """The error reply, in the encoding the packet declared; returns None (no reply to send)."""
    await client.send(error_payload(code, detail), encoding=packet.encoding)


def limited_plan(plan: Plan, limit: RateLimit | None) -> Plan:
    """``plan`` with ``limit`` checked before routing (``plan`` itself when there is no limit)."""
    if limit is None:
        return plan
    return LimitedPlan(groups=plan.groups, app=plan.app, limit=limit)
