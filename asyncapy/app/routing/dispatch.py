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

from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from ..depends import Scope
from ...wire.errors import StopPropagation
from ...model.packet import Packet
from ...model.peer import Client
from .compiled import CompiledGroup, CompiledRoute, candidates
from .evaluate import failing_cheap, failing_custom
from .explain import Explanation, Failure, explain_plan, miss_errors, miss_reasons
from .invoke import close_quietly


@dataclass(frozen=True, slots=True)
class Miss:
    """Why no handler accepted a packet: one line per candidate (``detail`` joins them),
    and ``errors``, one entry per rejecting handler (``handler``, ``group``, ``reason``,
    ``loc``, ``msg``) for the ERR_NO_HANDLER reply."""

    reasons: tuple[str, ...]
    entries: tuple[dict[str, Any], ...] = ()

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.entries)

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
    #: One group (or none) and no custom filters: ``start`` can choose the one handler to run.
    groups_simple: bool = field(init=False)
    #: The same as ``groups_simple``: ``start`` may stand in for ``dispatch``.
    simple: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", tuple(r for g in self.groups for r in g.routes))
        groups_simple = len(self.groups) <= 1 and not any(r.post for r in self.routes)
        object.__setattr__(self, "groups_simple", groups_simple)
        object.__setattr__(self, "simple", groups_simple)

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
                    return route.call(client, packet)  # type: ignore[return-value]  # a coroutine function
                try:
                    data = validate(payload)
                except ValidationError as exc:
                    failures = _add(failures, (route, None, exc))
                    continue
                if route.call_data:
                    return route.call(client, data)  # type: ignore[return-value]
                packet.data = data
                return route.call(client, packet)  # type: ignore[return-value]
        return _miss(self.groups, payload, failures or ())

    def dispatch(self, client: Client, packet: Packet[Any]) -> Coroutine[Any, Any, Miss | None]:
        """Run ``packet`` through every group: a coroutine, which returns a ``Miss`` when the
        packet gets ERR_NO_HANDLER (the pipeline's layers around it: ``asyncapy.pipeline``)."""
        return self.route(client, packet)

    async def route(self, client: Client, packet: Packet[Any]) -> Miss | None:
        """Run ``packet`` through every group (DESIGN §3); a ``Miss`` when it gets ERR_NO_HANDLER.

        That is when no group matched, or (rule 5) when some group did not match and
        nothing was sent for the packet at all: its reasons are those of the groups
        that did not match.
        """
        payload = packet.payload
        failures: list[Failure] = []
        matched = False
        missed: list[CompiledGroup] = []  # the groups that did not match
        scope: Scope | None = None
        link: Any = client._link  # the exchange counts what is sent for the packet (rule 5)
        sent_before = getattr(link, "writes", 0)
        try:
            for group in self.groups:
                group_start = len(failures)
                stop = False
                missed.append(group)
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
                    missed.pop()
                    del failures[group_start:]  # this group matched: its rejections are no reason
                    try:
                        if route.run is None:
                            reply = await route.handler(client, arg)
                        else:
                            if scope is None:
                                scope = Scope()
                            reply = await route.run(client, target, scope)
                    except StopPropagation:
                        stop = True
                        break
                    if isinstance(reply, (dict, BaseModel)):
                        await client.send(reply)
                    stop = target._stopped
                    break
                if stop:
                    break
        except BaseException as exc:
            if scope is not None and scope.exits:
                await scope.close(exc)
            raise
        if scope is not None and scope.exits:
            await close_quietly(scope, "of this packet")
        if not matched:
            return _miss(self.groups, payload, failures)
        if missed and len(self.groups) > 1 and getattr(link, "writes", 0) == sent_before and not link.closing:
            return _miss(missed, payload, failures)  # rule 5: matched somewhere, but nothing was sent
        return None

    async def explain(self, client: Client, packet: Packet[Any]) -> Explanation:
        """What dispatch would do with ``packet``, without calling any handler."""
        return await explain_plan(self.groups, client, packet)


def _miss(groups: Sequence[CompiledGroup], payload: Mapping[str, Any], failures: Sequence[Failure]) -> Miss:
    return Miss(miss_reasons(groups, payload, failures), miss_errors(failures))


def _add(failures: list[Failure] | None, failure: Failure) -> list[Failure]:
    if failures is None:
        return [failure]
    failures.append(failure)
    return failures
