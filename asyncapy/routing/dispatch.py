"""Dispatch: runs one decoded packet through the compiled plan (DESIGN §3).

Per candidate: cheap filters, then ``adapter.validate_python``, then custom filters
(they see the typed ``packet.data``), then the handler. Nothing is inspected,
compiled or formatted here; a miss is explained only once it is certain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import StopPropagation
from ..packet import Packet
from ..peer import Client
from .compiled import CompiledGroup, CompiledRoute, candidates
from .evaluate import failing_cheap, failing_custom
from .explain import Explanation, Failure, explain_plan, miss_reasons


@dataclass(frozen=True, slots=True)
class Miss:
    """Why no handler accepted a packet: one line per candidate (``detail`` joins them)."""

    reasons: tuple[str, ...]

    @property
    def detail(self) -> str:
        return "; ".join(self.reasons) or "no handler is registered"


@dataclass(frozen=True, slots=True)
class Plan:
    """The immutable, compiled form of a router: groups in ascending order.

    ``routes`` lists every compiled route in group, then registration, order.
    """

    groups: tuple[CompiledGroup, ...]
    routes: tuple[CompiledRoute, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", tuple(r for g in self.groups for r in g.routes))

    async def dispatch(self, client: Client, packet: Packet[Any]) -> Miss | None:
        """Run ``packet`` through every group; a ``Miss`` when no group matched."""
        payload = packet.payload
        failures: list[Failure] = []
        matched = False
        for group in self.groups:
            for route in candidates(group, payload):
                if route.pre:
                    failed = failing_cheap(route.pre, client, packet)
                    if failed is not None:
                        failures.append((route, failed, None))
                        continue
                target = packet
                arg: Any = packet
                if route.adapter is not None:
                    try:
                        data = route.adapter.validate_python(payload)
                    except ValidationError as exc:
                        failures.append((route, None, exc))
                        continue
                    target = packet._with_data(data)
                    arg = data if route.style == "model" else target
                if route.post:
                    failed = await failing_custom(route.post, client, target)
                    if failed is not None:
                        failures.append((route, failed, None))
                        continue
                matched = True
                try:
                    reply = await route.handler(client, arg)
                except StopPropagation:
                    return None
                if isinstance(reply, (dict, BaseModel)):
                    await client.send(reply)
                if target._stopped:
                    return None
                break
        return None if matched else Miss(miss_reasons(self.groups, payload, failures))

    async def explain(self, client: Client, packet: Packet[Any]) -> Explanation:
        """What dispatch would do with ``packet``, without calling any handler."""
        return await explain_plan(self.groups, client, packet)
