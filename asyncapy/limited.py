"""``Server(rate_limit=...)``: a plan that checks the limit before routing each packet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ERR_INTERNAL, ERR_RATE_LIMITED, error_payload
from .packet import Packet
from .peer import Client
from .ratelimit import RateLimit
from .routing import Miss, Plan
from .state import SHARED_STATE_UNAVAILABLE, SharedStateUnavailable


@dataclass(frozen=True, slots=True)
class LimitedPlan(Plan):
    """A ``Plan`` behind ``Server(rate_limit=...)``: the limit is checked before routing.

    Never simple: every packet goes through ``dispatch``, which answers an over-limit
    packet itself (ERR_RATE_LIMITED) or one the shared state could not count
    (ERR_INTERNAL) and routes the rest.
    """

    limit: RateLimit = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        Plan.__post_init__(self)
        object.__setattr__(self, "simple", False)

    async def dispatch(self, client: Client, packet: Packet[Any]) -> Miss | None:
        limit = self.limit
        try:
            wait = limit.hit_local(client, packet) if limit.state is None else await limit.hit(client, packet)
        except SharedStateUnavailable:
            await client.send(error_payload(ERR_INTERNAL, SHARED_STATE_UNAVAILABLE), encoding=packet.encoding)
            return None
        if wait:
            await client.send(error_payload(ERR_RATE_LIMITED, limit.detail(wait)), encoding=packet.encoding)
            return None
        return await Plan.dispatch(self, client, packet)


def limited_plan(plan: Plan, limit: RateLimit | None) -> Plan:
    """``plan`` with ``limit`` checked before routing (``plan`` itself when there is no limit)."""
    if limit is None:
        return plan
    return LimitedPlan(plan.groups, limit)
