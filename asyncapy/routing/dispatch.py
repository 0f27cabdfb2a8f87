"""Dispatch: runs one decoded packet through the compiled plan (DESIGN §3)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..errors import StopPropagation
from ..packet import Packet
from ..peer import Client
from .router import Route


@dataclass(frozen=True, slots=True)
class Miss:
    """Why no handler accepted a packet: one line per candidate."""

    reasons: tuple[str, ...]

    @property
    def detail(self) -> str:
        return "; ".join(self.reasons) or "no handler is registered"


class Plan:
    """The immutable, compiled form of a router: groups in ascending order."""

    __slots__ = ("_groups",)

    def __init__(self, groups: Sequence[tuple[int, Sequence[Route]]]) -> None:
        self._groups = tuple((g, tuple(routes)) for g, routes in groups)

    async def dispatch(self, client: Client, packet: Packet[Any]) -> Miss | None:
        """Run ``packet`` through every group; a ``Miss`` when none matched."""
        reasons: list[str] = []
        matched = False
        for group, routes in self._groups:
            for route in routes:
                failed = await _failed_filter(route, client, packet)
                if failed is not None:
                    reasons.append(f"{route.name}: filter {failed} failed")
                    continue
                matched = True
                try:
                    reply = await route.handler(client, packet)
                except StopPropagation:
                    return None
                if isinstance(reply, (dict, BaseModel)):
                    await client.send(reply)
                if packet.propagation_stopped:
                    return None
                break
        return None if matched else Miss(tuple(reasons))


async def _failed_filter(route: Route, client: Client, packet: Packet[Any]) -> str | None:
    for flt in route.filters:
        check = getattr(flt, "check", flt)
        result = check(client, packet)
        if inspect.isawaitable(result):
            result = await result
        if not result:
            return type(flt).__name__
    return None


def compile_routes(routes: Sequence[Route]) -> Plan:
    """Group ``routes`` by ascending group, keeping registration order inside each."""
    groups: dict[int, list[Route]] = {}
    for route in routes:
        groups.setdefault(route.group, []).append(route)
    return Plan(sorted(groups.items()))
