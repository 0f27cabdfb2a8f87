"""Registration: ``Router`` collects routes; nothing here runs per packet.

Every check happens here, so a wrong handler or filter fails at its decorator line.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, Union

from pydantic import BaseModel

from ..depends import Dependency, as_dependency, build_steps
from ...wire.errors import UsageError
from ..filters import Filter, as_filter, is_filter
from ...shared.topics import DEFAULT_MAX_BUFFERED, Topic, check_unique
from .introspect import HandlerSpec, handler_name, inspect_handler

#: A handler: an async function, or an async generator function (a streaming handler).
HandlerT = TypeVar("HandlerT", bound=Callable[..., Union[Awaitable[Any], AsyncIterator[Any]]])
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Route:
    """One registered handler: its filters, its group and what its signature accepts."""

    handler: Callable[..., Union[Awaitable[Any], AsyncIterator[Any]]]
    filters: tuple[Filter, ...]
    group: int
    spec: HandlerSpec
    #: ``dependencies=[...]``: the including routers' first (outermost first), then the handler's.
    dependencies: tuple[Dependency, ...] = ()
    #: The ``ApiError`` codes the handler declares (``errors=[...]``), for the schema.
    errors: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return handler_name(self.handler)


_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


def make_route(
    handler: Callable[..., Union[Awaitable[Any], AsyncIterator[Any]]],
    filters: tuple[Any, ...],
    group: int,
    dependencies: Iterable[Any] | None = None,
    errors: Iterable[str] | None = None,
) -> Route:
    """Check ``handler``, ``filters``, ``group`` and dependencies; a ``UsageError`` naming the handler if wrong."""
    name = handler_name(handler)
    if not isinstance(group, int) or isinstance(group, bool):
        raise UsageError(f"handler {name!r}: group must be an int, not {group!r}")
    deps = check_dependencies(dependencies, f"handler {name!r}")
    codes = check_errors(errors, f"handler {name!r}")
    for flt in filters:
        if not is_filter(flt):
            raise UsageError(
                f"handler {name!r}: {flt!r} is not a filter; pass a Filter (asyncapy.filters), "
                "an object with check(client, packet), or a callable (client, packet) -> bool"
            )
    spec = inspect_handler(handler)
    build_steps(name, dict(spec.dependencies), deps, spec.models)  # a wrong graph fails here, at its decorator
    return Route(handler, tuple(as_filter(f) for f in filters), group, spec, deps, codes)


def check_errors(errors: Iterable[str] | None, where: str) -> tuple[str, ...]:
    """``errors=[...]`` as a tuple of codes, each ``[A-Z][A-Z0-9_]*``."""
    if isinstance(errors, str):
        raise UsageError(f"{where}: errors must be a list of codes, such as ['ERR_NOT_FOUND'], not {errors!r}")
    codes = tuple(errors or ())
    for code in codes:
        if not isinstance(code, str) or _CODE.fullmatch(code) is None:
            raise UsageError(f"{where}: errors=[...] lists error codes like 'ERR_NOT_FOUND', not {code!r}")
    return codes


def check_dependencies(dependencies: Iterable[Any] | None, where: str) -> tuple[Dependency, ...]:
    """``dependencies=[...]`` as ``Dependency`` objects (a bare callable is ``Depends(callable)``)."""
    if dependencies is None:
        return ()
    if isinstance(dependencies, (str, bytes)) or not isinstance(dependencies, Iterable):
        raise UsageError(f"{where}: dependencies must be a list, such as [Depends(provider)], not {dependencies!r}")
    return tuple(as_dependency(dep, where) for dep in dependencies)


class Router:
    """Handlers and the routers included in it, in registration order.

    ``dependencies`` run before every handler of the router (and of the routers it
    includes), for their effect: ``Router(dependencies=[Depends(logged_in)])``.
    ``errors`` are the ``ApiError`` codes every one of those routes may answer with,
    for the schema (after each route's own).
    """

    def __init__(self, *, dependencies: Sequence[Any] | None = None, errors: Sequence[str] | None = None) -> None:
        self._entries: list[Route | Router] = []
        self._topics: dict[str, Topic[Any]] = {}
        self.dependencies = check_dependencies(dependencies, "Router(dependencies=...)")
        self.errors = check_errors(errors, "Router(errors=...)")

    def register_handler(
        self,
        handler: Callable[..., Union[Awaitable[Any], AsyncIterator[Any]]],
        *filters: Any,
        group: int = 0,
        dependencies: Sequence[Any] | None = None,
        errors: Sequence[str] | None = None,
    ) -> None:
        """Register ``handler`` behind ``filters`` in ``group`` (lower groups run first).

        ``dependencies`` run before it (``[Depends(provider)]``); ``errors`` lists the
        ``ApiError`` codes it may answer with, for the schema.
        """
        self._entries.append(make_route(handler, filters, group, dependencies, errors))

    def add_handler(
        self,
        *filters: Any,
        group: int = 0,
        dependencies: Sequence[Any] | None = None,
        errors: Sequence[str] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Decorator form of ``register_handler``; returns the function unchanged."""

        def decorate(handler: HandlerT) -> HandlerT:
            self.register_handler(handler, *filters, group=group, dependencies=dependencies, errors=errors)
            return handler

        return decorate

    def topic(self, name: str, model: type[M], max_buffered: int = DEFAULT_MAX_BUFFERED) -> Topic[M]:
        """A typed topic of ``model`` events (``asyncapy.shared.topics``); its name is unique in the server.

        ``max_buffered``: the events one subscription may hold before it ends with ERR_SLOW_CONSUMER.
        """
        made = Topic(name, model, max_buffered)
        check_unique(self.topics(), made, "this router")
        self._topics[name] = made
        return made

    def topics(self) -> dict[str, Topic[Any]]:
        """Every topic of this router and of the routers it includes, by name (a ``UsageError`` if two share one)."""
        found = dict(self._topics)
        for entry in self._entries:
            if isinstance(entry, Router):
                for topic in entry.topics().values():
                    check_unique(found, topic, "another router")
                    found[topic.name] = topic
        return found

    def include_router(self, router: Router) -> None:
        """Add every route of ``router`` (now and later), after the routes registered so far."""
        if router is self or self in router._descendants():
            raise UsageError("a router cannot include itself, directly or through another router")
        for topic in router.topics().values():
            check_unique(self.topics(), topic, "the including router")
        self._entries.append(router)

    def routes(self) -> list[Route]:
        """Every route, included routers flattened in place, in registration order."""
        out: list[Route] = []
        for entry in self._entries:
            if isinstance(entry, Router):
                out.extend(entry.routes())
            else:
                out.append(entry)
        if self.dependencies:
            out = [replace(route, dependencies=self.dependencies + route.dependencies) for route in out]
        if self.errors:
            out = [replace(route, errors=_merged(route.errors, self.errors)) for route in out]
        return out

    def _descendants(self) -> list[Router]:
        found: list[Router] = []
        for entry in self._entries:
            if isinstance(entry, Router):
                found.append(entry)
                found.extend(entry._descendants())
        return found


def _merged(codes: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    """``codes`` then those of ``more`` not in it yet."""
    return codes + tuple(code for code in more if code not in codes)
