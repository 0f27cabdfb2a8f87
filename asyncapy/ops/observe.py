"""Observation: the access log, the metrics' counters and tracing's report, told each packet's outcome.

When none is on, nothing here runs: the pipeline gives its exchanges no ``Record``.
When one is on (decided once per serving run, ``asyncapy.serve.pipeline``), each connection's
exchange has a ``Record``: begun when a packet is decoded, named by the coroutine that
handles it (both inline in ``Exchange.begin``), ``end`` once its answer was written. The outcome is the code
the exchange answered with (``Exchange.code``), never read back from the bytes sent,
and its label is one of a bounded set: the codes asyncapy sends, the ``ApiError`` codes
the routes declare (``errors=[...]``), else ``other``.

Handlers are named without a lookup on the hot path: for a plan whose handlers the
exchange calls directly, each route's function gets a ``__qualname__`` of its own and
the coroutine it returns is named by one dict lookup (``named_plan``); otherwise each
handler notes its name on the exchange as it starts (``recording_plan``).
"""

from __future__ import annotations

import dataclasses
import sys
import types
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from time import perf_counter
from types import MappingProxyType
from typing import Any, Final, get_args, get_origin, get_type_hints

from ..wire.errors import ERROR_CODES
from .metrics import BUCKETS, NO_HANDLER, ProcessMetrics
from ..model.peer import Client
from ..app.routing import Plan
from ..app.routing.compiled import CompiledRoute

from ..model.answers import Answers

#: ``on_packet(client, handlers, outcome, seconds)``: called once per packet.
OnPacket = Callable[[Client, str, str, float], None]
#: The outcome label of an error code that is neither asyncapy's nor declared by a route.
OTHER: Final = "other"
#: The outcome of a packet whose handler the server cancelled (shutdown, handler_timeout).
CANCELLED: Final = "CANCELLED"
_FIRST_BUCKET: Final = BUCKETS[0]  # most packets: tested before the bisection
#: The codes of docs/protocol.md's table (asyncapy's own, those of v2 and authentication included).
FRAMEWORK_CODES: Final = ERROR_CODES | {
    "ERR_UNAUTHORIZED", "ERR_CANCELLED", "ERR_DEADLINE_EXCEEDED", "ERR_STREAM_ID_IN_USE", "ERR_SLOW_CONSUMER", CANCELLED,
}  # fmt: skip


@dataclasses.dataclass
class Observer:
    """What the exchanges of one serving run report to, and how they name handlers.

    ``names`` maps the ``__qualname__`` a route's coroutines carry to the route
    (``Named``) when handlers are called directly (``named_plan``); else None.
    ``labels``: the outcome codes that get a label of their own.
    """

    access_log: OnPacket | None
    metrics: ProcessMetrics | None
    names: dict[str, Named] | None = None
    labels: frozenset[str] = FRAMEWORK_CODES

    def record(self, client: Client) -> Record:
        return Record(self, client)

    def declare(self, codes: Iterable[str]) -> None:
        """The application's own codes (``errors=[...]`` of its routes) get labels of their own."""
        self.labels = self.labels | frozenset(codes)


def make_observer(access_log: OnPacket | None, metrics: ProcessMetrics | None, always: bool = False) -> Observer | None:
    """The observer for these outputs, or None when there is nothing to observe.

    ``always``: observe even with neither (a middleware reads the handlers' names,
    ``handlers_of``).
    """
    if access_log is None and metrics is None and not always:
        return None
    return Observer(access_log, metrics)


class Record:
    """One connection's packet being observed: when it began, which handlers ran, how it ended."""

    __slots__ = ("ran", "named", "names", "started", "when_reported", "_observer", "_client", "_metrics", "_log", "_ok_only")

    def __init__(self, observer: Observer, client: Client) -> None:
        self._observer = observer
        self._client = client
        self.names = observer.names  # qualname -> route (read by the exchange)
        self._metrics = observer.metrics
        self._log = observer.access_log
        #: Metrics on, no access log: an OK packet of a named route takes the short path in ``end``.
        self._ok_only = observer.metrics is not None and observer.access_log is None
        #: The handlers that ran for the packet ("a" or "a,b"; None: none yet).
        self.ran: str | None = None
        self.named: Named | None = None
        self.started = 0.0
        #: ``when_reported``'s callback for the packet being handled (tracing).
        self.when_reported: Callable[[str, str], None] | None = None

    def begin(self) -> None:
        """A packet begins (``Exchange.begin`` does the same inline, with the naming)."""
        self.started = perf_counter()
        self.ran = None
        self.named = None

    def end(self, exchange: Answers) -> None:
        """The packet was answered (or needed no answer): report it, once."""
        seconds = perf_counter() - self.started
        code = exchange.code
        named = self.named
        metrics = self._metrics
        if code is None and named is not None and self._ok_only and self.when_reported is None:
            row = named.ok  # the usual packet: its handler's OK row
            if row is None:
                row = named.ok = metrics.rows.get((named.name, "OK")) or metrics.new_row(named.name, "OK")  # type: ignore[union-attr]
            row[0 if seconds <= _FIRST_BUCKET else bisect_left(BUCKETS, seconds)] += 1
            row[-1] += seconds
            return
        handlers = self.ran or NO_HANDLER
        outcome = "OK" if code is None else code if code in self._observer.labels else OTHER
        if metrics is not None:
            key = (handlers, outcome)
            row = metrics.rows.get(key) or metrics.new_row(*key)
            row[0 if seconds <= _FIRST_BUCKET else bisect_left(BUCKETS, seconds)] += 1
            row[-1] += seconds
        if self._log is not None:
            self._log(self._client, handlers, outcome, seconds)
        done = self.when_reported
        if done is not None:
            self.when_reported = None
            done(handlers, outcome)

    def refused(self, code: str) -> None:
        """The connection was refused (ERR_SERVER_BUSY, ERR_SESSION_LIMIT_REACHED...) or timed out."""
        if self._metrics is not None and code != "ERR_TIMED_OUT":
            self._metrics.refuse(code)


def handlers_of(client: Client) -> str | None:
    """The handlers that ran so far for the packet ``client``'s connection is handling ("a" or "a,b").

    None when none ran, or when the connection is not observed (see ``make_observer``).
    """
    record = _record_of(client)
    return None if record is None else record.ran


def when_reported(client: Client, callback: Callable[[str, str], None]) -> bool:
    """Call ``callback(handlers, outcome)`` when the packet being handled is reported; False if it cannot be.

    The report comes once the packet's answer is written, error replies included
    (those of ``ApiError``, exception handlers and ERR_INTERNAL too), so ``outcome`` is
    what the peer got. False when ``client``'s connection is not observed.
    """
    record = _record_of(client)
    if record is None:
        return False
    record.when_reported = callback
    return True


def _record_of(client: Client) -> Record | None:
    record = getattr(getattr(client._link, "exchange", None), "record", None)
    return record if type(record) is Record else None


class Named:
    """A route of a simple plan as its packets are reported: its name, its metrics row for
    ``OK`` (made on its first such packet) and whether its handler returns its reply.

    ``returns``: the handler is annotated to return a model or a dict, so the packet ends
    in the exchange's ``finish``.
    """

    __slots__ = ("name", "ok", "returns")

    def __init__(self, name: str, returns: bool) -> None:
        self.name = name
        self.ok: list[float] | None = None
        self.returns = returns


def observed_plan(plan: Plan, observer: Observer, direct: bool) -> Plan:
    """``plan`` as ``observer`` needs it: named routes when the exchange calls its handlers
    directly (``direct``), else handlers that note their names (``recording_plan``)."""
    observer.declare(code for route in plan.routes for code in route.errors)
    named = _named_plan(plan) if direct else None
    if named is None:
        observer.names = None
        return recording_plan(plan)
    observer.names = named[1]
    return named[0]


def _named_plan(plan: Plan) -> tuple[Plan, dict[str, Named]] | None:
    """``plan`` where what ``start`` calls for each route has a ``__qualname__`` of its own, and qualname -> route.

    The coroutine ``start`` returns carries its function's ``__qualname__``: a string,
    whose hash is cached, so naming a packet's route is one dict lookup. A handler
    called as it is keeps its name when no other route's function has it. A function
    ``start`` calls around it (dependencies, a reply check: closures that share one
    code object and name), or a handler whose name another route's function has, is
    copied and renamed after its route: same bytecode, same closure, its own name.
    Routes of one name get ``name#2``... as their function's. None when a route's call
    is not a function (then ``recording_plan``).
    """
    names: dict[str, Named] = {}
    copies: dict[int, Callable[..., Awaitable[Any]]] = {}
    for route in plan.routes:
        fn = getattr(route, "call", route.handler)
        if getattr(fn, "__code__", None) is None:
            return None
        key = getattr(fn, "__qualname__", None)
        if fn is not route.handler or key in names or type(key) is not str:
            key, n = route.name, 1
            while key in names:  # routes of one name (handlers made by one factory...)
                n += 1
                key = f"{route.name}#{n}"
            fn = copies[id(route)] = _renamed(fn, route.name, key)
        names[key] = Named(route.name, _returns_reply(route))
    if not copies:
        return plan, names
    return _with_routes(plan, lambda route: dataclasses.replace(route, call=copies[id(route)]) if id(route) in copies else route), names


def _returns_reply(route: CompiledRoute) -> bool:
    """True when ``route``'s handler is annotated to return a model or a dict, not None.

    Its reply check (``asyncapy.replies``) makes a None an error.
    """
    if route.stream or not (isinstance(route.reply_type, type) or get_origin(route.reply_type) is dict):
        return False  # a stream's coroutine returns None: it answered through the exchange
    try:
        returns = get_type_hints(route.handler).get("return")
    except Exception:  # an annotation that does not resolve: not counted on
        return False
    return returns is not None and type(None) not in get_args(returns)


def _renamed(fn: Any, name: str, qualname: str) -> Any:
    """A copy of ``fn``: its code named ``name`` (tracebacks), its ``__qualname__`` (its coroutines') ``qualname``."""
    code = fn.__code__
    if sys.version_info >= (3, 11):
        code = code.replace(co_name=name, co_qualname=name)
    else:
        code = code.replace(co_name=name)
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = qualname
    return copy


def recording_plan(plan: Plan) -> Plan:
    """``plan`` with each handler wrapped to note its route's name on the packet's exchange."""
    return _with_routes(plan, _recording_route)


def _with_routes(plan: Plan, change: Callable[[CompiledRoute], CompiledRoute]) -> Plan:
    """``plan`` with each route replaced by ``change(route)`` (indexes included)."""
    changed = {id(route): change(route) for route in plan.routes}

    def swap(routes: tuple[CompiledRoute, ...]) -> tuple[CompiledRoute, ...]:
        return tuple(changed[id(route)] for route in routes)

    groups = tuple(
        dataclasses.replace(
            group,
            routes=swap(group.routes),
            index=MappingProxyType({tag: swap(routes) for tag, routes in group.index.items()}),
            untagged=swap(group.untagged),
        )
        for group in plan.groups
    )
    return dataclasses.replace(plan, groups=groups)


def _recording_route(route: CompiledRoute) -> CompiledRoute:
    """Wrap each of the ways dispatch may call the handler (``handler``, and ``call``/``run`` where
    dependencies or reply checks add them): whichever is called notes the name, once."""
    fields = {field.name for field in dataclasses.fields(route)}
    changes: dict[str, Any] = {
        attr: _recording(getattr(route, attr), route.name)
        for attr in ("handler", "call", "run")
        if attr in fields and getattr(route, attr) is not None
    }
    return dataclasses.replace(route, **changes)


def _recording(handler: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Awaitable[Any]]:
    """``handler`` noting ``name`` on the packet's exchange when it is called.

    Not a coroutine function: it returns the handler's own awaitable, so that no
    coroutine frame is added to the packet's chain (dispatch awaits what it returns;
    ``plan.start`` hands it to the exchange).
    """

    def recording(client: Client, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        exchange = getattr(client._link, "exchange", None)  # the connection's (a closed link has none)
        if exchange is not None:
            exchange.note(name)
        return handler(client, *args, **kwargs)

    recording.__name__ = getattr(handler, "__name__", name)
    recording.__qualname__ = name
    return recording


