"""Dispatch: runs one decoded packet through the compiled plan (DESIGN §3).

Per candidate: cheap filters, then validation, then custom filters (they see the
typed ``packet.data``), then the handler. Nothing is inspected, compiled or formatted
here; a miss is explained only once it is certain.

Most plans are *simple*: one group and no custom filters. There the first candidate
that passes its filters and validates is the only handler to run, so ``start``
finds it without awaiting anything and the connection calls the handler itself,
without a ``dispatch`` coroutine around it.
"""

from __future__ import annotations

from collections.abc import Coroutine
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
    #: One group (or none) and no custom filters: ``start`` may stand in for ``dispatch``.
    simple: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", tuple(r for g in self.groups for r in g.routes))
        object.__setattr__(self, "simple", len(self.groups) <= 1 and not any(r.post for r in self.routes))

    def start(self, client: Client, packet: Packet[Any]) -> Coroutine[Any, Any, Any] | Miss:
        """For a simple plan: the chosen handler's coroutine, not yet started, or the ``Miss``.

        The coroutine returns the handler's reply. A ``Packet[Model]`` argument is
        ``packet`` itself with its ``data`` set: no later handler can see the packet,
        so it needs no copy.
        """
        payload = packet.payload
        failures: list[Failure] | None = None  # made on the first failure: most packets have none
        for group in self.groups:
            for route in group.routes if group.key is None else candidates(group, payload):
                if route.pre:
                    failed = failing_cheap(route.pre, client, packet)
                    if failed is not None:
                        failures = _add(failures, (route, failed, None))
                        continue
                validate = route.validate
                if validate is None:
                    return route.handler(client, packet)  # type: ignore[return-value]  # a coroutine function
                try:
                    data = validate(payload)
                except ValidationError as exc:
                    failures = _add(failures, (route, None, exc))
                    continue
                if route.style == "model":
                    return route.handler(client, data)  # type: ignore[return-value]
                packet.data = data
                return route.handler(client, packet)  # type: ignore[return-value]
        return Miss(miss_reasons(self.groups, payload, failures or ()))

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
                if route.validate is not None:
                    try:
                        data = route.validate(payload)
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


def _add(failures: list[Failure] | None, failure: Failure) -> list[Failure]:
    if failures is None:
        return [failure]
    failures.append(failure)
    return failures
