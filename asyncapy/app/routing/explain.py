"""Explaining a miss: short, per-candidate reasons that never echo input values.

Validation errors are formatted only here, once a miss is certain, because
formatting them costs more than validating.

A ``loc`` may hold the client's own text (an unknown field's name, a map's key), so
every part of a miss is bounded: each name, each path, each line, the detail and the
``errors`` list as a whole. ``MAX_DETAIL`` plus ``MAX_ERRORS_TEXT`` characters, at most
6 bytes each once encoded (JSON's ``\\u00XX``), plus the entries' keys, keep an
ERR_NO_HANDLER reply under 64 KiB whatever the packet.
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
MAX_NAME = 64  # characters of one part of a loc (a field name, a map key: maybe the client's)
MAX_LOC = 8  # parts of a loc: the first and last four of a deeper path, "..." between
MAX_TEXT = 200  # characters of a handler's name or a filter's description in an entry
MAX_LINE = 600  # characters of one handler's line in the detail
MAX_DETAIL = 3_000  # characters of the whole detail
MAX_ERRORS_TEXT = 6_000  # characters of the text of every ``errors`` entry together


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
        return _shorten(f"{head}: filter failed: {flt.describe()}", MAX_LINE)
    assert error is not None
    return _shorten(f"{head}: invalid: {validation_summary(error)}", MAX_LINE)


def miss_errors(failures: Sequence[Failure]) -> tuple[dict[str, Any], ...]:
    """ERR_NO_HANDLER's ``errors``: one entry per rejecting handler, capped at ``MAX_REASONS``
    and at ``MAX_ERRORS_TEXT`` characters of text in all (the detail counts the rest).

    A validation entry carries pydantic's first error (``loc``, ``msg``; never the input);
    a filter entry the filter's description as ``msg``.
    """
    entries = []
    budget = MAX_ERRORS_TEXT
    for route, flt, error in failures[:MAX_REASONS]:
        name = _shorten(route.name, MAX_TEXT)
        loc: list[int | str] = []
        if flt is not None:
            reason, msg = "filter", _shorten(flt.describe(), MAX_TEXT)
        else:
            assert error is not None
            first = error.errors(include_url=False, include_input=False, include_context=False)[:1]
            loc = short_loc(first[0]["loc"]) if first else []
            reason, msg = "validation", _shorten(first[0]["msg"]) if first else "invalid"
        budget -= len(name) + len(msg) + sum(len(str(part)) for part in loc)
        if budget < 0:
            break
        entries.append({"handler": name, "group": route.group, "reason": reason, "loc": loc, "msg": msg})
    return tuple(entries)


def short_loc(loc: Sequence[int | str]) -> list[int | str]:
    """``loc`` with each name cut to ``MAX_NAME`` characters and at most ``MAX_LOC`` parts."""
    parts = [part if isinstance(part, int) else _shorten(str(part), MAX_NAME) for part in loc]
    if len(parts) <= MAX_LOC:
        return parts
    half = MAX_LOC // 2
    return [*parts[:half], "...", *parts[-half:]]


def validation_summary(error: ValidationError) -> str:
    """The first ``MAX_ERRORS`` errors as ``loc: message``, without the input values."""
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for err in errors[:MAX_ERRORS]:
        loc = ".".join(str(p) for p in short_loc(err["loc"])) or "(payload)"
        parts.append(f"{loc}: {_shorten(err['msg'])}")
    if len(errors) > MAX_ERRORS:
        parts.append(f"(+{len(errors) - MAX_ERRORS} more)")
    return ", ".join(parts)


def _shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def group_note(group: CompiledGroup, payload: Mapping[str, Any]) -> str | None:
    """A line when the group's index sent the packet to no tagged handler: the tag is
    missing, or no handler takes its value."""
    if group.key is None or candidates(group, payload) is not group.untagged:
        return None
    known = sorted(group.index, key=repr)
    shown = ", ".join(repr(t) for t in known[:MAX_TAGS]) + (", ..." if len(known) > MAX_TAGS else "")
    if group.key not in payload:
        return f"group {group.group}: the packet has no {group.key!r} field (its handlers take {shown})"
    return f"group {group.group}: no handler takes this {group.key!r} (known: {shown})"


def miss_reasons(
    groups: Sequence[CompiledGroup], payload: Mapping[str, Any], failures: Sequence[Failure]
) -> tuple[str, ...]:
    """The reasons of a miss, group by group in ascending order, capped at ``MAX_REASONS`` handlers and at
    ``MAX_DETAIL`` characters (joined by "; ")."""
    notes = [(g.group, note) for g in groups if (note := group_note(g, payload)) is not None]
    reasons = [(f[0].group, failure_reason(*f)) for f in failures[:MAX_REASONS]]
    lines = [line for _, line in sorted(notes + reasons, key=lambda entry: entry[0])]  # stable: a note before its group's handlers
    shown, budget = 0, MAX_DETAIL
    for line in lines:
        budget -= len(line) + 2
        if budget < 0:
            break
        shown += 1
    more = len(lines) - shown + max(0, len(failures) - MAX_REASONS)
    lines = lines[:shown]
    if more:
        lines.append(f"(+{more} more handlers)")
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
