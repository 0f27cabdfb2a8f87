"""Middleware and exception handlers: what wraps the routing of every packet (DESIGN §4).

    @server.middleware
    async def timing(client: Client, packet: Packet, call_next: CallNext) -> None:
        started = time.perf_counter()
        try:
            await call_next()          # routes the packet through every group
        finally:
            log.info("%.0f us", (time.perf_counter() - started) * 1e6)

    @server.exception_handler(KeyError)
    async def not_found(client: Client, packet: Packet, exc: KeyError) -> dict:
        return {"status": "failure", "error": "ERR_NOT_FOUND", "detail": str(exc)}

The chain is built once, by the pipeline (``asyncapy.pipeline``); per packet, each middleware costs its
own coroutine and a ``functools.partial`` for its ``call_next``. A server with neither
middleware nor exception handlers has no ``App``: the pipeline has no such layer.

A streaming handler (an async generator) is one ``call_next()`` from its first item to
its end: ``call_next()`` returns None once the whole stream was sent, and raises what
ended it (the middleware sees it before it ends the stream).

Order of events for one packet: the outermost middleware (registered first) runs, its
``call_next`` runs the next one, the innermost one's routes the packet (an
ERR_NO_HANDLER miss is sent inside it). An exception a handler raised comes out of
``call_next`` (middleware see it first); if it leaves the outermost middleware, the
exception handler registered for its class (or the nearest base class) makes the reply;
with none, ``ApiError`` is its own reply and anything else ERR_INTERNAL. An ``ApiError`` is
the application's answer: only a handler registered for ``ApiError`` or one of its
subclasses maps it, never one for a base class such as ``Exception``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from ..wire.codecs import CODEC_IDS
from ..wire.errors import ERR_NO_HANDLER, ApiError, StopPropagation, UsageError
from ..model.answers import answers_of
from ..model.packet import Packet
from ..model.peer import Client
from .routing.dispatch import Miss, Plan

__all__ = ["App", "CallNext", "ExceptionHandler", "Middleware", "check_exception_handler", "check_middleware"]

#: What a middleware awaits to route the packet (every group); it returns None.
CallNext = Callable[[], Awaitable[None]]
#: ``async def mw(client, packet, call_next) -> None``.
Middleware = Callable[[Client, Packet[Any], CallNext], Awaitable[None]]

E = TypeVar("E", bound=BaseException)
#: ``async def on_error(client, packet, exc) -> dict | BaseModel | None`` (None: nothing sent).
ExceptionHandler = Callable[[Client, Packet[Any], E], Awaitable[Any]]

Route = Callable[[Client, Packet[Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class App:
    """The middleware chain around a plan's routing, and the exception handlers, compiled.

    ``handle(client, packet)`` returns the coroutine that handles one packet: the
    outermost middleware's own when no exception handler is registered.
    """

    chain: Route
    exception_handlers: Mapping[type[BaseException], ExceptionHandler[Any]]
    handle: Route = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "handle", self._mapped if self.exception_handlers else self.chain)

    @classmethod
    def build(
        cls,
        plan: Plan,
        middleware: tuple[Middleware, ...],
        handlers: Mapping[type[BaseException], ExceptionHandler[Any]],
    ) -> App:
        chain = _chain(plan, middleware)
        if any(route.stream for route in plan.routes):
            chain = _settling(chain)
        return cls(chain, dict(handlers))

    async def _mapped(self, client: Client, packet: Packet[Any]) -> None:
        """Route ``packet`` through the middleware; map what escapes them to a reply."""
        try:
            await self.chain(client, packet)
        except Exception as exc:
            on_error = self._handler_for(type(exc))
            if on_error is None:
                raise  # ApiError's own reply, or ERR_INTERNAL: the connection's
            reply = await on_error(client, packet, exc)
            if reply is not None:
                answers_of(client).mapped(reply, CODEC_IDS[packet.encoding])  # one answer per request

    def _handler_for(self, kind: type[BaseException]) -> ExceptionHandler[Any] | None:
        """The handler of ``kind`` or its nearest base; an ``ApiError`` is the app's answer, so
        for one the search stops at ``ApiError`` (a catch-all for ``Exception`` never takes it)."""
        handlers = self.exception_handlers
        if not handlers:
            return None
        for base in kind.__mro__:
            found = handlers.get(base)
            if found is not None:
                return found
            if base is ApiError:
                return None
        return None


def _chain(plan: Plan, middleware: tuple[Middleware, ...]) -> Route:
    """The outermost level: each level calls its middleware with the next level as ``call_next``."""
    call = _simple_route(plan) if plan.groups_simple else _full_route(plan)
    for mw in reversed(middleware):
        call = _level(mw, call)
    return call


def _settling(chain: Route) -> Route:
    """With streaming routes: a stream whose error a middleware swallowed still ends (well).

    A stream left open by an exception is ended by the exchange with that error; one
    whose exception never reached it (caught in a middleware, mapped to no reply) ends
    here, once the chain returned. Only plans with streaming handlers pay for it.
    """

    async def settled(client: Client, packet: Packet[Any]) -> None:
        await chain(client, packet)
        answers_of(client).end()  # nothing when no stream is open

    return settled


def _level(mw: Middleware, inner: Route) -> Route:
    def level(client: Client, packet: Packet[Any]) -> Awaitable[None]:
        return mw(client, packet, partial(inner, client, packet))  # the middleware's coroutine: no frame of ours

    return level


def _full_route(plan: Plan) -> Route:
    async def route(client: Client, packet: Packet[Any]) -> None:
        miss = await plan.route(client, packet)
        if miss is not None:
            send_miss(client, packet, miss)

    return route


def _simple_route(plan: Plan) -> Route:
    """One group and no custom filters: ``start`` picks the handler, as the connection's own fast path does."""
    start = plan.start

    async def route(client: Client, packet: Packet[Any]) -> None:
        started = start(client, packet)
        if type(started) is Miss:
            send_miss(client, packet, started)
            return
        try:
            reply = await started  # type: ignore[misc]
        except StopPropagation:  # control flow, not an error: middleware never see it
            return
        if reply is not None:
            answers_of(client).reply(reply, CODEC_IDS[packet.encoding])

    return route


def send_miss(client: Client, packet: Packet[Any], miss: Miss) -> None:
    """ERR_NO_HANDLER for ``miss``, through the packet's exchange (which applies ``error_details``)."""
    answers_of(client).error(ERR_NO_HANDLER, miss.detail, CODEC_IDS[packet.encoding], miss.errors)


def check_middleware(mw: Any) -> None:
    """A ``UsageError`` unless ``mw`` is an async callable taking (client, packet, call_next)."""
    name = _name(mw)
    if not _is_async(mw):
        raise UsageError(
            f"middleware {name!r} must be an async function: `async def {name}(client, packet, call_next) -> None`"
        )
    if not _takes(mw, 3):
        raise UsageError(f"middleware {name!r} must take (client, packet, call_next)")


def check_exception_handler(kind: Any, handler: Any) -> None:
    """A ``UsageError`` unless ``kind`` is an exception class and ``handler`` an async (client, packet, exc)."""
    name = _name(handler)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        raise UsageError(f"exception_handler({kind!r}): pass an exception class, such as KeyError")
    if not _is_async(handler):
        raise UsageError(
            f"exception handler {name!r} must be an async function: `async def {name}(client, packet, exc)`"
        )
    if not _takes(handler, 3):
        raise UsageError(f"exception handler {name!r} must take (client, packet, exc)")


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004
    return not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _takes(fn: Any, count: int) -> bool:
    try:
        inspect.signature(fn).bind(*([object()] * count))
    except (TypeError, ValueError):
        return False
    return True


def _name(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or repr(obj))
