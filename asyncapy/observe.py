"""Watching each packet: the access log and the metrics' counters.

When neither is on, nothing here runs: ``Server`` serves plain ``Connection``s with
the plan as compiled. When one is on (decided once, when serving starts), it serves
``ObservedConnection``s, which time each packet and note its outcome code, and a copy
of the plan whose handlers note their name on the connection as they start.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from types import MappingProxyType
from typing import Any, Final

from .connection import Connection, ServingContext
from .metrics import BUCKETS, NO_HANDLER, ProcessMetrics
from .peer import Client
from .protocol import FRAME_TAIL, FrameError, RawFrame
from .routing import Plan
from .routing.compiled import CompiledGroup, CompiledRoute

#: ``on_packet(client, handlers, outcome, seconds)``: called once per packet.
OnPacket = Callable[[Client, str, str, float], None]


@dataclasses.dataclass
class Observer:
    """What the connections of one serving run report to, and how they name handlers.

    ``names`` maps a handler's code object to its route's name when the connections
    call handlers directly (a simple plan): the coroutine ``plan.start`` returns is
    named by one lookup. Otherwise it is None and the handlers note their names as
    they run (``recording_plan``).
    """

    access_log: OnPacket | None
    metrics: ProcessMetrics | None
    names: dict[Any, str] | None = None


def make_observer(access_log: OnPacket | None, metrics: ProcessMetrics | None, always: bool = False) -> Observer | None:
    """The observer for these outputs, or None when there is nothing to observe.

    ``always``: observe even with neither (a middleware reads the handlers' names,
    ``handlers_of``).
    """
    if access_log is None and metrics is None and not always:
        return None
    return Observer(access_log, metrics)


def observed_context(
    make_context: Callable[[Plan], ServingContext], plan: Plan, observer: Observer
) -> ServingContext:
    """The serving context of ``plan`` with ``observer``: the plan as compiled when its handlers
    are called directly and can be named by their code, else ``recording_plan(plan)``.

    ``make_context`` builds what wraps the plan (middleware) around the plan it gets.
    """
    ctx = make_context(plan)
    named = _named_plan(plan) if ctx.direct else None
    if named is None:
        ctx = make_context(recording_plan(plan))
        observer.names = None
    else:
        ctx = make_context(named[0])
        observer.names = named[1]
    ctx.observer = observer
    if observer.metrics is not None:
        observer.metrics.open_connections = ctx.connections.__len__
    return ctx


def _named_plan(plan: Plan) -> tuple[Plan, dict[Any, str]] | None:
    """``plan`` where what ``start`` calls for each route has a code object of its own, and code -> route name.

    A handler called as it is keeps its code. A function ``start`` calls around it
    (dependencies, a reply check: closures that share one code object) is copied with
    its code renamed after the route: same bytecode, same closure, its own identity.
    None when a route cannot be named so (then ``recording_plan``).
    """
    names: dict[Any, str] = {}
    copies: dict[int, Callable[..., Awaitable[Any]]] = {}
    for route in plan.routes:
        fn = getattr(route, "call", route.handler)
        if fn is not route.handler:
            fn = copies[id(route)] = _renamed(fn, route.name)
        code = getattr(fn, "__code__", None)
        if code is None or code in names:
            return None
        names[code] = route.name
    if not copies:
        return plan, names
    return _with_routes(plan, lambda route: dataclasses.replace(route, call=copies[id(route)]) if id(route) in copies else route), names


def _renamed(fn: Any, name: str) -> Any:
    code = fn.__code__
    if sys.version_info >= (3, 11):
        code = code.replace(co_name=name, co_qualname=name)
    else:
        code = code.replace(co_name=name)
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = name
    return copy


def handlers_of(client: Client) -> str | None:
    """The handlers that ran so far for the packet ``client``'s connection is handling ("a" or "a,b").

    None when none ran, or when the connection is not observed (see ``make_observer``).
    """
    link = _connection_of(client)
    return None if link is None else link.ran


def when_reported(client: Client, callback: Callable[[str, str], None]) -> bool:
    """Call ``callback(handlers, outcome)`` when the packet being handled is reported; False if it cannot be.

    The report comes once the packet's replies are queued, error replies included
    (those of ``ApiError``, exception handlers and ERR_INTERNAL too), so ``outcome`` is
    what the peer got. False when ``client``'s connection is not observed.
    """
    link = _connection_of(client)
    if link is None:
        return False
    link._when_reported = callback
    return True


def _connection_of(client: Client) -> Any:
    """``client``'s observed connection, also through a link that wraps it (rule 5's counter); or None."""
    link: Any = client._link
    if type(link) in _OBSERVED:
        return link
    link = getattr(link, "link", None)
    return link if type(link) in _OBSERVED else None


def error_code(payload: bytes) -> str | None:
    """The ``error`` of an error reply's payload (JSON or ZiProto, as ``error_payload`` makes it), else None."""
    if payload.startswith(_JSON_ERROR):
        end = payload.find(b'"', len(_JSON_ERROR))
        return payload[len(_JSON_ERROR) : end].decode("ascii", "replace") if end > 0 else None
    if payload[1 : len(_ZIPROTO_ERROR) + 1] == _ZIPROTO_ERROR and 0x80 < payload[0] < 0x90:
        start = len(_ZIPROTO_ERROR) + 1
        head = payload[start : start + 1]
        if head and 0xA0 <= head[0] <= 0xBF:
            return payload[start + 1 : start + 1 + (head[0] & 0x1F)].decode("ascii", "replace")
        if head == b"\xd9":
            length = payload[start + 1]
            return payload[start + 2 : start + 2 + length].decode("ascii", "replace")
    return None


_JSON_ERROR: Final = b'{"status":"failure","error":"'
_ZIPROTO_ERROR: Final = b"\xa6status\xa7failure\xa5error"
#: How an error reply's payload starts: JSON, or a ZiProto map of 2 to 4 entries.
_ERRORS: Final = (_JSON_ERROR, *(bytes((0x80 + n,)) + _ZIPROTO_ERROR for n in (2, 3, 4)))


def recording_plan(plan: Plan) -> Plan:
    """``plan`` with each handler wrapped to note its route's name on the connection."""
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
    """``handler`` noting ``name`` on the connection when it is called.

    Not a coroutine function: it returns the handler's own awaitable, so that no
    coroutine frame is added to the packet's chain (dispatch awaits what it returns;
    ``plan.start`` hands it to the connection).
    """

    def recording(client: Client, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        link: Any = client._link
        if type(link) not in _OBSERVED:
            link = getattr(link, "link", None)  # rule 5's counting link wraps the connection
        if type(link) in _OBSERVED:
            ran = link.ran
            link.ran = name if ran is None else f"{ran},{name}"
        return handler(client, *args, **kwargs)

    recording.__name__ = getattr(handler, "__name__", name)
    recording.__qualname__ = name
    return recording


class ObservedConnection(Connection):
    """A ``Connection`` that reports each packet (handlers, outcome, duration) and its bytes."""

    __slots__ = ("ran", "_code", "_started", "_access_log", "_metrics", "_frame_overhead", "_names", "_when_reported")

    # What the methods below extend, as ``self._base_x(...)`` (see ``observed_class``).
    _base_init = Connection.__init__
    _base_refuse = Connection._refuse
    _base_data_received = Connection.data_received
    _base_write_payload = Connection.write_payload
    _base_begin = Connection._begin
    _base_handle_frame_error = Connection._handle_frame_error
    _base_send_error = Connection._send_error

    def __init__(self, ctx: ServingContext, *args: Any) -> None:
        self._base_init(ctx, *args)
        observer: Observer = ctx.observer
        self._access_log = observer.access_log
        self._metrics = observer.metrics
        self._names = observer.names
        self._frame_overhead = ctx.header_size + FRAME_TAIL
        #: The handlers that ran for the packet being handled ("a" or "a,b"; None: none yet).
        self.ran: str | None = None
        self._code: str | None = None
        self._started = 0.0
        self._when_reported: Callable[[str, str], None] | None = None

    # -- connections and bytes (open connections: ``len(ctx.connections)`` when scraped) --

    def _refuse(self, code: str, detail: str) -> None:
        if self._metrics is not None:
            self._metrics.refuse(code)
        self._base_refuse(code, detail)

    def data_received(self, data: bytes) -> None:
        metrics = self._metrics
        if metrics is not None:
            metrics.bytes_received += len(data)
        self._base_data_received(data)

    def write_payload(self, payload: bytes, encoding: int) -> None:
        metrics = self._metrics
        if metrics is not None and not self.closing:
            metrics.bytes_sent += len(payload) + self._frame_overhead
        if self._code is None and payload.startswith(_ERRORS):  # an error reply sent as a packet (middleware...)
            self._code = error_code(payload)
        self._base_write_payload(payload, encoding)

    # -- packets ----------------------------------------------------------------------

    def _begin(self, frame: RawFrame) -> Coroutine[Any, Any, Any] | None:
        self._started = perf_counter()
        self.ran = None
        self._code = None
        coro = self._base_begin(frame)
        if coro is None:  # answered already: malformed, no handler, a filter raised
            self._report()
            return None
        names = self._names
        if names is not None:  # a simple plan: coro is the handler's own coroutine
            try:
                self.ran = names[coro.cr_code]  # type: ignore[attr-defined]
            except (KeyError, AttributeError):  # not a coroutine function's (an awaitable object's)
                self.ran = getattr(coro, "__qualname__", None)
        return self._observed(coro, frame[0])

    async def _observed(self, coro: Awaitable[Any], encoding: int) -> None:
        """Handle the packet as the connection would, then report it (its replies are queued)."""
        try:
            result = await coro
        except Exception as exc:
            self._failed(exc, encoding)
        except BaseException:  # cancelled (shutdown): report it, and let the cancellation go on
            self._code = self._code or "CANCELLED"
            self._report()
            raise
        else:
            if result is not None:
                self._finish(result, encoding)
        self._report()

    def _handle_frame_error(self, error: FrameError) -> None:
        self._started = perf_counter()
        self.ran = None
        self._code = None
        self._base_handle_frame_error(error)
        self._report()

    def _send_error(self, code: str, detail: Any, encoding: int | None, errors: Any = None) -> None:
        if self._code is None:
            self._code = code
        self._base_send_error(code, detail, encoding, errors)

    def _report(self) -> None:
        seconds = perf_counter() - self._started
        handlers = self.ran or NO_HANDLER
        outcome = self._code or "OK"
        metrics = self._metrics
        if metrics is not None:  # ProcessMetrics.packet, inlined: this runs for every packet
            row = metrics.rows.get((handlers, outcome))
            if row is None:
                row = metrics.new_row(handlers, outcome)
            row[bisect_left(BUCKETS, seconds)] += 1
            row[-1] += seconds
        log = self._access_log
        if log is not None:
            log(self.client, handlers, outcome, seconds)  # type: ignore[arg-type]  # set by connection_made
        done = self._when_reported
        if done is not None:
            self._when_reported = None
            done(handlers, outcome)


#: The observed connection classes (``ObservedConnection`` and those of ``observed_class``).
_OBSERVED: set[type[Connection]] = {ObservedConnection}


def observed_class(base: type[Connection]) -> type[Connection]:
    """``ObservedConnection``'s methods on top of ``base`` (a subclass of ``Connection``, such as
    ``GatedConnection``), extending ``base``'s own. Made once per base."""
    for made in _OBSERVED:
        if made.__mro__[1] is base:
            return made
    namespace = {
        name: value
        for name, value in vars(ObservedConnection).items()
        if name not in ("__dict__", "__weakref__") and not isinstance(value, types.MemberDescriptorType)
    }
    for name, value in vars(ObservedConnection).items():
        if name.startswith("_base_"):
            namespace[name] = getattr(base, value.__name__)
    made = type(f"Observed{base.__name__}", (base,), namespace)
    _OBSERVED.add(made)
    return made


def observed_factory(ctx: ServingContext, trusted: Any) -> Callable[[], Connection]:
    """What the listener makes per socket when packets are observed: ``ObservedConnection``, or
    the observed form of the gated connection a PROXY header or a shared admission needs."""
    if trusted is None and getattr(ctx, "admission", None) is None:
        return lambda: ObservedConnection(ctx)
    from .proxied import GatedConnection

    gated: Any = observed_class(GatedConnection)
    return lambda: gated(ctx, trusted)
