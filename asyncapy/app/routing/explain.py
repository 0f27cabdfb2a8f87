"""Explaining a miss: short, per-candidate reasons that never echo input values.

Validation errors are formatted only here, once a miss is certain, because
formatting them costs more than validating.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ..filters import Filter
from ...model.packet import Packet
from ...model.peer import Client
from .compiled import CompiledGroup, CompiledRoute, candidates
from .evaluate import failing_cheap, failing_custom

Failure = tuple[CompiledRoute, "Filter | None", "ValidationError | None"]
Outcome = Literal["matched", "skipped", "filtered", "invalid", "not-candidate"]

MAX_ERRORS = 3  # per handler: enough to see the mistake, short enough for a reply
MAX_MESSAGE = 80  # characters of one error message
MAX_REASONS = 20  # handlers listed in one ERR_NO_HANDLER detail
MAX_TAGS = 5  # known tags listed when a packet's tag matched no handler


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    """What dispatch would do with one route: ``outcome`` and, when it did not match, why."""

    name: str
    group: int
    outcome: Outcome
    reason: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """The account of one packet: per-route outcomes, the handlers that would run, the text.

    ``matched`` assumes no handler stops propagation (handlers are not called). When
    nothing matches, ``text`` is the ``detail`` ERR_NO_HANDLER would carry.
    """

    outcomes: tuple[RouteOutcome, ...]
    matched: tuple[str, ...]
    text: str

    @property
    def miss(self) -> bool:
        return not self.matched


def failure_reason(route: CompiledRoute, flt: Filter | None, error: ValidationError | None) -> str:
    """One line: the handler, then the filter that failed or its first validation errors."""
    head = f"{route.name} (group {route.group})"
    if flt is not None:
        return f"{head}: filter failed: {flt.describe()}"
    assert error is not None
    return f"{head}: invalid: {validation_summary(error)}"


def miss_errors(failures: Sequence[Failure]) -> tuple[dict[str, Any], ...]:
    """ERR_NO_HANDLER's ``errors``: one entry per rejecting handler, capped at ``MAX_REASONS``.

    A validation entry carries pydantic's first error (``loc``, ``msg``; never the input);
    a filter entry the filter's description as ``msg``.
    """
    entries = []
    for route, flt, error in failures[:MAX_REASONS]:
        if flt is not None:
            entries.append({"handler": route.name, "group": route.group, "reason": "filter", "loc": [], "msg": flt.describe()})
            continue
        assert error is not None
        first = error.errors(include_url=False, include_input=False, include_context=False)[:1]
        loc = list(first[0]["loc"]) if first else []
        msg = _shorten(first[0]["msg"]) if first else "invalid"
        entries.append({"handler": route.name, "group": route.group, "reason": "validation", "loc": loc, "msg": msg})
    return tuple(entries)


def validation_summary(error: ValidationError) -> str:
    """The first ``MAX_ERRORS`` errors as ``loc: message``, without the input values."""
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for err in errors[:MAX_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"]) or "(payload)"
        parts.append(f"{loc}: {_shorten(err['msg'])}")
    if len(errors) > MAX_ERRORS:
        parts.append(f"(+{len(errors) - MAX_ERRORS} more)")
    return ", ".join(parts)


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def group_note(group: CompiledGroup, payload: Mapping[str, Any]) -> str | None:
    """A line when the group's index sent the packet to no tagged handler."""
    if group.key is None or candidates(group, payload) is not group.untagged:
        return None
    known = sorted(group.index, key=repr)
    shown = ", ".join(repr(t) for t in known[:MAX_TAGS]) + (", ..." if len(known) > MAX_TAGS else "")
    return f"group {group.group}: no handler takes this {group.key!r} (known: {shown})"


def miss_reasons(
    groups: Sequence[CompiledGroup], payload: Mapping[str, Any], failures: Sequence[Failure]
) -> tuple[str, ...]:
    """The reasons of a miss, group by group, capped at ``MAX_REASONS`` handlers."""
    lines = [note for note in (group_note(g, payload) for g in groups) if note is not None]
    lines += [failure_reason(*f) for f in failures[:MAX_REASONS]]
    if len(failures) > MAX_REASONS:
        lines.append(f"(+{len(failures) - MAX_REASONS} more handlers)")
    return tuple(lines)


async def explain_plan(groups: Sequence[CompiledGroup], client: Client, packet: Packet[Any]) -> Explanation:
    """Evaluate every route as dispatch would (filters included) without calling handlers."""
    outcomes: list[RouteOutcome] = []
    matched: list[str] = []
    failures: list[Failure] = []
    for group in groups:
        chosen = candidates(group, packet.payload)
        winner: CompiledRoute | None = None
        for route in group.routes:
            if winner is not None or route not in chosen:
                kind: Outcome = "skipped" if winner is not None else "not-candidate"
                why = "an earlier handler matched" if winner is not None else f"its {group.key!r} tag differs"
                outcomes.append(RouteOutcome(route.name, route.group, kind, why))
                continue
            failure = await _evaluate(route, client, packet)
            if failure is None:
                winner = route
                matched.append(route.name)
                outcomes.append(RouteOutcome(route.name, route.group, "matched", ""))
            else:
                failures.append(failure)
                kind = "filtered" if failure[1] is not None else "invalid"
                outcomes.append(RouteOutcome(route.name, route.group, kind, failure_reason(*failure)))
    if matched:
        text = "would run: " + ", ".join(matched)
    else:
        text = "; ".join(miss_reasons(groups, packet.payload, failures)) or "no handler is registered"
    return Explanation(tuple(outcomes), tuple(matched), text)


async def _evaluate(route: CompiledRoute, client: Client, packet: Packet[Any]) -> Failure | None:
    failed = failing_cheap(route.pre, client, packet)
    if failed is not None:
        return (route, failed, None)
    target = packet
    if route.adapter is not None:
        try:
            target = packet._with_data(route.adapter.validate_python(packet.payload))
        except ValidationError as exc:
            return (route, None, exc)
    failed = await failing_custom(route.post, client, target)
    return None if failed is None else (route, failed, None)
