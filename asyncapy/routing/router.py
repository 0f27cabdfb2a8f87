"""Registration: ``Router`` collects routes; nothing here runs per packet.

Every check happens here, so a wrong handler or filter fails at its decorator line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import UsageError
from ..filters import Filter, as_filter, is_filter
from .introspect import HandlerSpec, handler_name, inspect_handler

HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class Route:
    """One registered handler: its filters, its group and what its signature accepts."""

    handler: Callable[..., Awaitable[Any]]
    filters: tuple[Filter, ...]
    group: int
    spec: HandlerSpec

    @property
    def name(self) -> str:
        return handler_name(self.handler)


def make_route(handler: Callable[..., Awaitable[Any]], filters: tuple[Any, ...], group: int) -> Route:
    """Check ``handler``, ``filters`` and ``group``; a ``UsageError`` naming the handler if wrong."""
    name = handler_name(handler)
    if not isinstance(group, int) or isinstance(group, bool):
        raise UsageError(f"handler {name!r}: group must be an int, not {group!r}")
    for flt in filters:
        if not is_filter(flt):
            raise UsageError(
                f"handler {name!r}: {flt!r} is not a filter; pass a Filter (asyncapy.filters), "
                "an object with check(client, packet), or a callable (client, packet) -> bool"
            )
    spec = inspect_handler(handler)
    return Route(handler, tuple(as_filter(f) for f in filters), group, spec)


class Router:
    """Handlers and the routers included in it, in registration order."""

    def __init__(self) -> None:
        self._entries: list[Route | Router] = []

    def register_handler(self, handler: Callable[..., Awaitable[Any]], *filters: Any, group: int = 0) -> None:
        """Register ``handler`` behind ``filters`` in ``group`` (lower groups run first)."""
        self._entries.append(make_route(handler, filters, group))

    def add_handler(self, *filters: Any, group: int = 0) -> Callable[[HandlerT], HandlerT]:
        """Decorator form of ``register_handler``; returns the function unchanged."""

        def decorate(handler: HandlerT) -> HandlerT:
            self.register_handler(handler, *filters, group=group)
            return handler

        return decorate

    def include_router(self, router: Router) -> None:
        """Add every route of ``router`` (now and later), after the routes registered so far."""
        if router is self or self in router._descendants():
            raise UsageError("a router cannot include itself, directly or through another router")
        self._entries.append(router)

    def routes(self) -> list[Route]:
        """Every route, included routers flattened in place, in registration order."""
        out: list[Route] = []
        for entry in self._entries:
            if isinstance(entry, Router):
                out.extend(entry.routes())
            else:
                out.append(entry)
        return out

    def _descendants(self) -> list[Router]:
        found: list[Router] = []
        for entry in self._entries:
            if isinstance(entry, Router):
                found.append(entry)
                found.extend(entry._descendants())
        return found
