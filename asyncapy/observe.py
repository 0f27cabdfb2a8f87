"""Watching each packet: the access log and the metrics' counters.

When neither is on, nothing here runs: ``Server`` serves plain ``Connection``s with
the plan as compiled. When one is on (decided once, when serving starts), it serves
``ObservedConnection``s, which time each packet and note its outcome code, and a copy
of the plan whose handlers note their name on the connection as they start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import types
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine
from time import perf_counter
from types import MappingProxyType
from typing import Any, Final, get_args, get_origin, get_type_hints

from .connection import _FLUSH_AT, Connection, ServingContext
from .logs import clean
from .metrics import BUCKETS, NO_HANDLER, ProcessMetrics
from .peer import Client
from .protocol import FRAME_TAIL, PROTOCOL_VERSION, FrameError, RawFrame
from .routing import Plan
from .routing.compiled import CompiledGroup, CompiledRoute

#: ``on_packet(client, handlers, outcome, seconds)``: called once per packet.
OnPacket = Callable[[Client, str, str, float], None]


@dataclasses.dataclass
class Observer:
    """What the connections of one serving run report to, and how they name handlers.

    ``names`` maps the ``__qualname__`` a route's coroutines carry to the route (``Named``)
    when the connections call handlers directly (a simple plan): the coroutine ``plan.start`` returns is
    named by one lookup. Otherwise it is None and the handlers note their names as
    they run (``recording_plan``).
    """

    access_log: OnPacket | None
    metrics: ProcessMetrics | None
    names: dict[str, Named] | None = None


class Named:
    """A route of a simple plan as its packets are reported: its name, its metrics row for
    ``OK`` (made on its first such packet) and whether its handler returns its reply.

    ``returns``: the handler is annotated to return a model or a dict, so the packet ends
    in the connection's ``_finish`` and needs no coroutine around it (see
    ``ObservedConnection._begin``).
    """

    __slots__ = ("name", "ok", "returns")

    def __init__(self, name: str, returns: bool) -> None:
        self.name = name
        self.ok: list[float] | None = None
        self.returns = returns


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

    Its reply check (``asyncapy.replies``) makes a None an error. Its call may still
    return None when it writes the reply itself (generator dependencies): reported all
    the same, a little later (see ``ObservedConnection``).
    """
    if not (isinstance(route.reply_type, type) or get_origin(route.reply_type) is dict):
        return False
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
    """The ``error`` of an error reply's payload (JSON or ZiProto, as ``error_payload`` makes it), else None.

    A handler may echo what a client sent: the code is the client's text, so it is
    ``clean``-ed (one line, escaped, bounded) before the access log shows it.
    """
    if payload.startswith(_JSON_ERROR):
        end = payload.find(b'"', len(_JSON_ERROR))
        return clean(payload[len(_JSON_ERROR) : end].decode("ascii", "replace")) if end > 0 else None
    if payload[1 : len(_ZIPROTO_ERROR) + 1] == _ZIPROTO_ERROR and 0x80 < payload[0] < 0x90:
        start = len(_ZIPROTO_ERROR) + 1
        head = payload[start : start + 1]
        if head and 0xA0 <= head[0] <= 0xBF:
            return clean(payload[start + 1 : start + 1 + (head[0] & 0x1F)].decode("ascii", "replace"))
        if head == b"\xd9":
            length = payload[start + 1]
            return clean(payload[start + 2 : start + 2 + length].decode("ascii", "replace"))
    return None


_JSON_ERROR: Final = b'{"status":"failure","error":"'
_ZIPROTO_ERROR: Final = b"\xa6status\xa7failure\xa5error"
_FIRST_BUCKET: Final = BUCKETS[0]  # most packets: tested before the bisection
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
    """A ``Connection`` that reports each packet (handlers, outcome, duration) and its bytes.

    A packet is *open* from ``_begin`` until it is reported, once. It ends where the
    connection itself ends it: ``_finish`` (its reply queued), ``_failed``, or answered
    in ``_begin``. A handler that returns None ends in none of these: a coroutine around
    it (``_observed``) reports it, unless it is annotated to return a reply (the usual
    typed handler: no coroutine added). One that returns None all the same is reported
    at the next point the connection passes: the next packet, the end of
    the read that ran it, or the end of the host task's work.
    """

    __slots__ = (
        "ran", "_code", "_started", "_access_log", "_metrics", "_frame_overhead", "_names", "_when_reported",
        "_unreported", "_named", "_counts_only",
    )  # fmt: skip

    # What the methods below extend, as ``self._base_x(...)`` (see ``observed_class``).
    _base_init = Connection.__init__
    _base_refuse = Connection._refuse
    _base_data_received = Connection.data_received
    _base_write_payload = Connection.write_payload
    _base_begin = Connection._begin
    _base_finish = Connection._finish
    _base_failed = Connection._failed
    _base_work = Connection._work
    _base_done = Connection._done
    _base_handle_frame_error = Connection._handle_frame_error
    _base_release_reading = Connection._release_reading
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
        #: A packet has begun and is not reported yet.
        self._unreported = False
        #: The route of a simple plan that handles the open packet (None: named by ``ran``).
        self._named: Named | None = None
        #: Metrics on and no access log: ``_finish`` reports an OK packet itself.
        self._counts_only = self._metrics is not None and self._access_log is None

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
        if self._unreported and not self._working:  # the read's last handler returned None
            self._report()

    def _release_reading(self, reason: str) -> None:
        self._base_release_reading(reason)
        if self._unreported and not self._working:  # a gated connection handles its early bytes here
            self._report()

    def write_payload(self, payload: bytes, encoding: int) -> None:
        """``Connection.write_payload`` with the bytes counted and error replies spotted.

        Its body is repeated here rather than called (one frame less per reply);
        ``tests/test_metrics.py`` checks that the two stay the same, and ``observed_class``
        uses ``_forwarding_write_payload`` over a base that has its own.
        """
        if self.closing:
            return
        size = len(payload)
        metrics = self._metrics
        if metrics is not None:
            metrics.bytes_sent += size + self._frame_overhead
        # An error reply sent as a packet (a handler, middleware...). One-byte tests first:
        # the "f" of "failure" is byte 11 in JSON, byte 9 in ZiProto (most replies fail both).
        if (payload[11:12] == b"f" or payload[9:10] == b"f") and self._code is None and payload.startswith(_ERRORS):
            self._code = error_code(payload)
        # -- from here on: Connection.write_payload's body after its closing test, len(payload) as size --
        header = self._pack_header(size + FRAME_TAIL, PROTOCOL_VERSION, encoding)
        if self._corked:
            out = self._out
            out.append(header)
            out.append(payload)
            self._out_size += size
            if self._out_size > _FLUSH_AT:
                self._flush()
            return
        if self._transport is not None:
            self._transport.writelines((header, payload))

    # -- packets ----------------------------------------------------------------------

    def _begin(self, frame: RawFrame) -> Coroutine[Any, Any, Any] | None:
        if self._unreported:  # the previous packet's handler returned None: it ended before this one
            self._report()
        self._started = perf_counter()
        self.ran = None
        self._code = None
        self._named = None
        self._unreported = True
        coro = self._base_begin(frame)
        if coro is None:  # answered already: malformed, no handler, a filter raised
            if self._unreported:
                self._report()
            return None
        names = self._names
        if names is not None:  # a simple plan: coro is the handler's own coroutine
            try:
                named = self._named = names[coro.__qualname__]  # type: ignore[attr-defined]
            except (KeyError, AttributeError):  # not a coroutine function's (an awaitable object's)
                self.ran = getattr(coro, "__qualname__", None)
            else:
                self.ran = named.name
                if named.returns:  # it ends in _finish or _failed: no coroutine around it
                    return coro
        return self._observed(coro, frame[0])

    async def _observed(self, coro: Awaitable[Any], encoding: int) -> None:
        """Handle the packet as the connection would, then report it (its replies are queued)."""
        try:
            result = await coro
        except Exception as exc:
            self._failed(exc, encoding)
        except BaseException:  # cancelled (shutdown): report it, and let the cancellation go on
            self._code = self._code or "CANCELLED"
            if self._unreported:
                self._report()
            raise
        else:
            if result is not None:
                self._finish(result, encoding)
        if self._unreported:
            self._report()

    def _finish(self, result: Any, encoding: int) -> None:
        self._base_finish(result, encoding)
        if not self._unreported:
            return
        # The usual packet's end: _report's OK path, inlined (it runs for every packet).
        named = self._named
        if named is None or self._code is not None or not self._counts_only or self._when_reported is not None:
            self._report()
            return
        row = named.ok
        if row is None:
            self._report()
            return
        self._unreported = False
        seconds = perf_counter() - self._started
        row[0 if seconds <= _FIRST_BUCKET else bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds

    def _failed(self, exc: BaseException, encoding: int) -> None:
        if self._code is None and isinstance(exc, asyncio.CancelledError):
            self._code = "CANCELLED"
        self._base_failed(exc, encoding)
        if self._unreported:
            self._report()

    def _work(self) -> Coroutine[Any, Any, None]:
        """The host task's work: it starts once the packet before it has ended."""
        if self._unreported:
            self._report()
        return self._base_work()

    def _done(self) -> None:
        if self._unreported:  # its handler returned None, or was cancelled (this runs as that propagates)
            if self._code is None and isinstance(sys.exc_info()[1], asyncio.CancelledError):
                self._code = "CANCELLED"
            self._report()
        self._base_done()

    def _handle_frame_error(self, error: FrameError) -> None:
        if self._unreported:
            self._report()
        self._started = perf_counter()
        self.ran = None
        self._code = None
        self._named = None
        self._unreported = True
        self._base_handle_frame_error(error)
        if self._unreported:
            self._report()

    def _send_error(self, code: str, detail: Any, encoding: int | None, errors: Any = None) -> None:
        if self._code is None:
            self._code = code
        self._base_send_error(code, detail, encoding, errors)

    def _report(self) -> None:
        """Report the open packet (once: it is closed here)."""
        self._unreported = False
        seconds = perf_counter() - self._started
        code = self._code
        metrics = self._metrics
        if metrics is not None:  # ProcessMetrics.packet, inlined: this runs for every packet
            named = self._named
            if code is None and named is not None:  # the usual packet: its handler's OK row
                row = named.ok
                if row is None:
                    row = named.ok = metrics.rows.get((named.name, "OK")) or metrics.new_row(named.name, "OK")
            else:
                key = (self.ran or NO_HANDLER, code or "OK")
                row = metrics.rows.get(key)
                if row is None:
                    row = metrics.new_row(*key)
            row[0 if seconds <= _FIRST_BUCKET else bisect_left(BUCKETS, seconds)] += 1
            row[-1] += seconds
        log = self._access_log
        done = self._when_reported
        if log is not None or done is not None:
            handlers = self.ran or NO_HANDLER
            outcome = code or "OK"
            if log is not None:
                log(self.client, handlers, outcome, seconds)  # type: ignore[arg-type]  # set by connection_made
            if done is not None:
                self._when_reported = None
                done(handlers, outcome)


def _forwarding_write_payload(self: Any, payload: bytes, encoding: int) -> None:
    """``ObservedConnection.write_payload`` over a base class with its own ``write_payload``: calls it."""
    metrics = self._metrics
    if metrics is not None and not self.closing:
        metrics.bytes_sent += len(payload) + self._frame_overhead
    if self._code is None and payload.startswith(_ERRORS):
        self._code = error_code(payload)
    self._base_write_payload(payload, encoding)


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
    if base.write_payload is not Connection.write_payload:  # its body is not the one repeated
        namespace["write_payload"] = _forwarding_write_payload
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
