"""Registration: ``Router`` collects routes; nothing here runs per packet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import UsageError

HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class Route:
    """One registered handler with its filters and group."""

    handler: Callable[..., Awaitable[Any]]
    filters: tuple[Any, ...]
    group: int

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", repr(self.handler))


class Router:
    """Handlers and the routers included in it, in registration order."""

    def __init__(self) -> None:
        self._entries: list[Route | Router] = []

    def register_handler(self, handler: Callable[..., Awaitable[Any]], *filters: Any, group: int = 0) -> None:
        """Register ``handler`` behind ``filters`` in ``group`` (lower groups run first)."""
        if not isinstance(group, int) or isinstance(group, bool):
            raise UsageError(f"handler {getattr(handler, '__qualname__', handler)!r}: group must be an int, not {group!r}")
        self._entries.append(Route(handler, filters, group))

    def add_handler(self, *filters: Any, group: int = 0) -> Callable[[HandlerT], HandlerT]:
        """Decorator form of ``register_handler``; returns the function unchanged."""

        def decorate(handler: HandlerT) -> HandlerT:
            self.register_handler(handler, *filters, group=group)
            return handler

        return decorate

    def include_router(self, router: Router) -> None:
        """Add every route of ``router`` (now and later), after the routes registered so far."""
        if router is self:
            raise UsageError("a router cannot include itself")
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
