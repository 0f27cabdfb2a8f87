"""Record what each handler received, without changing the router.

The test client compiles its own plan from the server's registrations, each handler
wrapped by a recorder. ``functools.wraps`` keeps the signature and annotations the
router inspects, so the recorded plan routes and validates exactly as the server's.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Union, cast

from ..app.routing import Plan, Router, compile_routes
from ..app.routing.introspect import handler_name

#: A handler: an async function or an async generator function (a streaming handler).
Handler = Callable[..., Union[Awaitable[Any], AsyncIterator[Any]]]


class CallLog:
    """Each handler's calls, oldest first: what its packet parameter received."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Any]] = {}
        self._by_handler: dict[int, list[Any]] = {}

    def watch(self, handler: Handler) -> None:
        self.by_name.setdefault(handler_name(handler), [])
        self._by_handler.setdefault(id(handler), [])

    def record(self, handler: Handler, received: Any) -> None:
        self.by_name.setdefault(handler_name(handler), []).append(received)
        self._by_handler.setdefault(id(handler), []).append(received)

    def of(self, handler: Handler) -> list[Any]:
        """The calls of ``handler`` itself (handlers sharing a name are kept apart)."""
        if id(handler) not in self._by_handler:
            raise KeyError(f"{handler_name(handler)!r} is not a handler of this server")
        return self._by_handler[id(handler)]

    def clear(self) -> None:
        for calls in (*self.by_name.values(), *self._by_handler.values()):
            calls.clear()


def recording_plan(router: Router, log: CallLog) -> Plan:
    """Compile ``router``'s routes again, each handler behind a recorder."""
    shadow = Router()
    for route in router.routes():
        log.watch(route.handler)
        shadow.register_handler(
            _recorder(route.handler, log),
            *route.filters,
            group=route.group,
            dependencies=route.dependencies,
            errors=route.errors,
        )
    with _drop_warnings():  # Server.compile() already warned about the same routes
        return compile_routes(shadow.routes())


def _recorder(handler: Handler, log: CallLog) -> Handler:
    """An async function the router reads exactly as ``handler`` (signature, hints, name)."""
    plain = inspect.isfunction(handler) or inspect.ismethod(handler)
    target = handler if plain else getattr(handler, "__call__", handler)

    if inspect.isasyncgenfunction(target):
        return _stream_recorder(handler, target, log)

    @functools.wraps(target)
    async def recorded(*args: Any, **kwargs: Any) -> Any:
        log.record(handler, args[1] if len(args) > 1 else kwargs)
        return await cast(Awaitable[Any], handler(*args, **kwargs))

    recorded.__qualname__ = handler_name(handler)
    return recorded


def _stream_recorder(handler: Handler, target: Any, log: CallLog) -> Handler:
    """A streaming handler's recorder: an async generator too, closing the handler's when closed."""

    @functools.wraps(target)
    async def recorded(*args: Any, **kwargs: Any) -> Any:
        log.record(handler, args[1] if len(args) > 1 else kwargs)
        gen = cast(AsyncGenerator[Any, None], handler(*args, **kwargs))
        try:
            async for item in gen:
                yield item
        finally:
            await gen.aclose()

    recorded.__qualname__ = handler_name(handler)
    return recorded


@contextlib.contextmanager
def _drop_warnings() -> Iterator[None]:
    def below_warning(record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING

    logger = logging.getLogger("asyncapy")
    logger.addFilter(below_warning)
    try:
        yield
    finally:
        logger.removeFilter(below_warning)
