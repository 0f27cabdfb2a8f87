"""``Server``: settings, handler registration, and the serving lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import signal
import socket
import ssl as _ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar, Union

from pydantic import BaseModel

from .wire.codecs import get_codec
from .app.config import load_config
from .serve.listener import Listener, listen
from .serve.connection import DEFAULT_MAX_PENDING, DEFAULT_MAX_STREAMS, ServingContext
from .serve.multiplex import upgrade
from .serve.health import Health, health_layer
from .serve.pipeline import Settings, build_pipeline
from .shared.ratelimit import RateLimit
from .shared.state import SharedSessions, SharedState
from .shared.topics import DEFAULT_MAX_BUFFERED, Topic
from .wire.proxy import Network, check_trusted_proxies
from .ops.logs import AccessLog, configure_logging
from .ops.observe import Observer, make_observer
from .wire.protocol import DEFAULT_MAX_PACKET_SIZE, FRAME_TAIL, check_byteorder, check_header_size
from .wire.errors import LifespanError
from .app.lifespan import Lifespan, LifespanRun, State
from .app.middleware import ExceptionHandler, Middleware, check_exception_handler, check_middleware
from .model.packet import Packet
from .model.peer import CLOSED_LINK, Client, Session
from .app.routing import Explanation, Plan, Router, compile_routes
from .model.sessions import SessionRegistry
from .serve.workers import STARTUP_FAILED, run_workers

if TYPE_CHECKING:
    from .ops.metrics import ServingMetrics, SnapshotDir

logger = logging.getLogger("asyncapy")

#: A handler: an async function, or an async generator function (a streaming handler).
HandlerT = TypeVar("HandlerT", bound=Callable[..., Union[Awaitable[Any], AsyncIterator[Any]]])
R = TypeVar("R")
E = TypeVar("E", bound=BaseException)
MiddlewareT = TypeVar("MiddlewareT", bound=Middleware)
M = TypeVar("M", bound=BaseModel)

#: While stopping, a connection is closed once it has been quiet this long: longer than a
#: LAN round trip, so packets the peer sent before the stop are read and answered,
#: short enough that an idle connection does not hold the shutdown.
SHUTDOWN_QUIET: Final = 0.25
#: How often ``stop()`` looks for connections that went quiet.
_SHUTDOWN_POLL: Final = 0.05
#: After the last close, replies get this long to flush before connections whose
#: peer does not read are aborted.
SHUTDOWN_FLUSH_GRACE: Final = 2.0


class Server:
    """An AsyncAProto API server.

    Args:
        addr: the address to listen on.
        port: the port to listen on (0: one the OS picks; see ``port`` once serving).
        header_size: size of the Content-Length field, 1 to 8 bytes.
        byteorder: "big" or "little" for the Content-Length field.
        timeout: seconds a connection may stay without a complete packet (0: forever).
        max_packet_size: the largest Content-Length accepted (ERR_PAYLOAD_TOO_LARGE above).
        session_limit: concurrent sessions allowed per IP address (0: no limit).
        max_connections: concurrent connections allowed in all (0: no limit).
        ssl: an ``ssl.SSLContext`` to serve TLS.
        config: a ``server.ini`` path; its ``[AsyncAPY]`` keys override these arguments.
        logging_level: the level of the ``asyncapy`` logger; ``start()`` sets the root
            logger's too, with a readable format, unless logging is configured already
            (``asyncapy.logs``).
        access_log: one line per packet on the ``asyncapy.access`` logger (peer,
            handlers, outcome code, microseconds); a path: to that file only.
        metrics_port: serve Prometheus ``/metrics`` on this port of ``addr`` (0: one the
            OS picks); the ``prometheus`` extra; see ``asyncapy.metrics``.
        encoding: the encoding of error replies sent before a session declared one.
        shutdown_timeout: seconds running handlers get to finish when the server stops.
        backlog: connections the kernel may queue before ``accept`` (bursts of connects).
        max_pending: packets one connection may have waiting to be handled; reading
            from it pauses while that many wait (bounds a pipelining client's memory).
        max_streams: AsyncAProto v2 requests one connection may have running at once
            (as many more are read ahead and wait; past that reading pauses).
        handler_timeout: seconds the handlers of one packet may run (None: no limit);
            past it they are cancelled and the peer gets ERR_TIMED_OUT. The connection
            stays open: its framing is intact, only that packet failed. On AsyncAProto v2
            it ends that request only.
        workers: processes serving the port for ``start()`` (each with its own sessions,
            limits and ``setup()``); see ``asyncapy.workers``.
        uvloop: run ``start()`` on uvloop (the ``uvloop`` extra).
        error_details: False sends error replies as exactly ``{"status": "failure",
            "error": CODE}``, as AsyncAPY 0.5 did (its clients compare them whole).
        proxy_protocol: every connection starts with a PROXY header (v1 or v2) from a
            load balancer; the client's real address is what handlers, filters,
            limits and logs see (``asyncapy.serve.gate``).
        trusted_proxies: addresses or networks allowed to send that header (default:
            this host, 127.0.0.0/8 and ::1); other connections are closed unanswered.
        shared_state: a ``SharedState`` (``asyncapy.redis.RedisState``) that makes
            ``session_limit`` hold across every server sharing it.
        rate_limit: a ``RateLimit`` every packet is checked against before routing.
        health: answer the probe ``{"asyncapy": "health"}`` before routing, rate limits,
            filters and middleware: ``{"status": "SERVING"}``, and ``"NOT_SERVING"`` from
            the moment a graceful stop begins (``asyncapy.serve.health``).
        drain: seconds a graceful stop keeps accepting and serving, its probes answering
            NOT_SERVING, before it closes the port: time for a balancer to notice
            (more than its check interval times its failure count). Needs ``health=True``.
        lifespan: ``lifespan(server)``, an async context manager entered before serving
            (in each worker, and in the TestClients) and exited after; see ``asyncapy.lifespan``.
            ``server.state`` is a namespace for what it opens.

    Example:
        server = Server(port=1500)

        @server.add_handler()
        async def echo(client, packet):
            await client.send(packet)

        server.start()
    """

    def __init__(
        self,
        addr: str = "127.0.0.1",
        port: int = 8081,
        *,
        header_size: int = 4,
        byteorder: str = "big",
        timeout: float = 60,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        session_limit: int = 0,
        max_connections: int = 0,
        ssl: _ssl.SSLContext | None = None,
        config: str | os.PathLike[str] | None = None,
        logging_level: int = logging.INFO,
        encoding: str = "json",
        shutdown_timeout: float = 30.0,
        backlog: int = 1024,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_streams: int = DEFAULT_MAX_STREAMS,
        handler_timeout: float | None = None,
        workers: int = 1,
        uvloop: bool = False,
        error_details: bool = True,
        proxy_protocol: bool = False,
        trusted_proxies: Sequence[str] | None = None,
        shared_state: SharedState | None = None,
        rate_limit: RateLimit | None = None,
        lifespan: Lifespan[Server] | None = None,
        access_log: bool | str | os.PathLike[str] = False,
        metrics_port: int | None = None,
        health: bool = False,
        drain: float = 0.0,
    ) -> None:
        settings: dict[str, Any] = dict(
            addr=addr,
            port=port,
            header_size=header_size,
            byteorder=byteorder,
            timeout=timeout,
            max_packet_size=max_packet_size,
            session_limit=session_limit,
            max_connections=max_connections,
            logging_level=logging_level,
            encoding=encoding,
            shutdown_timeout=shutdown_timeout,
            max_pending=max_pending,
            max_streams=max_streams,
            handler_timeout=handler_timeout,
            error_details=error_details,
            proxy_protocol=proxy_protocol,
            trusted_proxies=trusted_proxies,
        )
        if config is not None:
            settings.update(load_config(config))
        self.addr: str = settings["addr"]
        self.port: int = settings["port"]
        self.header_size = check_header_size(settings["header_size"])
        self.byteorder = check_byteorder(settings["byteorder"])
        self.timeout = _non_negative("timeout", settings["timeout"])
        self.max_packet_size = int(settings["max_packet_size"])
        if self.max_packet_size < FRAME_TAIL:
            raise ValueError(f"max_packet_size must be at least {FRAME_TAIL}")
        self.session_limit = int(_non_negative("session_limit", settings["session_limit"]))
        self.max_connections = int(_non_negative("max_connections", settings["max_connections"]))
        self.logging_level: int = settings["logging_level"]
        self.encoding = get_codec(settings["encoding"]).name
        self.shutdown_timeout = _non_negative("shutdown_timeout", settings["shutdown_timeout"])
        self.max_pending = int(settings["max_pending"])
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {self.max_pending!r}")
        self.max_streams = int(settings["max_streams"])
        if self.max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {self.max_streams!r}")
        self.handler_timeout: float | None = settings["handler_timeout"] or None
        if self.handler_timeout is not None:
            _non_negative("handler_timeout", self.handler_timeout)
        self.error_details = bool(settings["error_details"])
        self.ssl = ssl
        self.backlog = backlog
        self.workers = _check_workers(workers)
        self.uvloop = _check_uvloop(uvloop)
        self.proxy_protocol = bool(settings["proxy_protocol"])
        self.trusted_proxies: tuple[Network, ...] = check_trusted_proxies(self.proxy_protocol, settings["trusted_proxies"])
        if shared_state is not None and not isinstance(shared_state, SharedState):
            raise ValueError(f"shared_state must be a SharedState such as asyncapy.redis.RedisState, not {shared_state!r}")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise ValueError(f"rate_limit must be an asyncapy.filters.RateLimit, e.g. RateLimit('100/minute'), not {rate_limit!r}")
        self.shared_state = shared_state
        self.rate_limit = rate_limit
        self.drain = _non_negative("drain", drain)
        if self.drain and not health:
            raise ValueError("drain is the time balancers get to see health probes fail: it needs health=True")
        #: The health probe's serving flag (``asyncapy.serve.health``); None: no probe.
        self.health: Health | None = Health() if health else None
        self.lifespan = lifespan
        #: A plain namespace for the application's resources (set them in the lifespan).
        self.state = State()
        self._lifespan_run: LifespanRun[Server] = LifespanRun(None)
        self.access_log = access_log
        self.metrics_port = _check_metrics_port(metrics_port)
        self._metrics: ServingMetrics | None = None
        self._access: AccessLog | None = None
        self._metrics_dir: SnapshotDir | None = None  # set in the parent of workers
        self.router = Router()
        self._middleware: list[Middleware] = []
        self._exception_handlers: dict[type[BaseException], ExceptionHandler[Any]] = {}
        self._plan: Plan | None = None
        self._listener: Listener | asyncio.Server | None = None
        self._ctx: ServingContext | None = None
        self._stop_requested: asyncio.Event | None = None
        self._sock: socket.socket | None = None
        self._reuse_port = False

    # -- registration ------------------------------------------------------------

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
        self._check_not_serving()
        self.router.register_handler(handler, *filters, group=group, dependencies=dependencies, errors=errors)

    def add_handler(
        self,
        *filters: Any,
        group: int = 0,
        dependencies: Sequence[Any] | None = None,
        errors: Sequence[str] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Decorator form of ``register_handler``; returns the function unchanged."""
        self._check_not_serving()
        return self.router.add_handler(*filters, group=group, dependencies=dependencies, errors=errors)

    def middleware(self, middleware: MiddlewareT) -> MiddlewareT:
        """Run ``middleware`` around the routing of every packet (decorator or call; returns it unchanged).

        ``async def mw(client, packet, call_next: CallNext) -> None``: ``await call_next()``
        routes the packet; the first registered is the outermost (see ``asyncapy.middleware``).
        """
        self._check_not_serving()
        check_middleware(middleware)
        self._middleware.append(middleware)
        return middleware

    def exception_handler(self, kind: type[E]) -> Callable[[ExceptionHandler[E]], ExceptionHandler[E]]:
        """Decorator: ``async def h(client, packet, exc) -> reply | None`` makes the reply for ``kind``.

        The handler registered for the exception's class, or its nearest base class,
        is used; its reply (a dict or a model) is sent, None sends nothing.
        """
        self._check_not_serving()

        def decorate(handler: ExceptionHandler[E]) -> ExceptionHandler[E]:
            check_exception_handler(kind, handler)
            self._exception_handlers[kind] = handler
            return handler

        return decorate

    def include_router(self, router: Router) -> None:
        """Serve every route of ``router`` after the routes registered so far."""
        self._check_not_serving()
        self.router.include_router(router)
        self._bind_topics()

    def topic(self, name: str, model: type[M], max_buffered: int = DEFAULT_MAX_BUFFERED) -> Topic[M]:
        """A typed topic: ``await topic.publish(event)``, ``async with topic.subscribe() as events``.

        With ``shared_state`` its events reach the subscribers of every server sharing it;
        ``max_buffered``: the events one subscription may hold before it ends with
        ERR_SLOW_CONSUMER (``asyncapy.shared.topics``).
        """
        self._check_not_serving()
        made = self.router.topic(name, model, max_buffered)
        made.bind(self.shared_state)
        return made

    @property
    def topics(self) -> dict[str, Topic[Any]]:
        """Every topic of the server and its routers, by name."""
        return self.router.topics()

    def _bind_topics(self) -> None:
        for topic in self.router.topics().values():
            topic.bind(self.shared_state)

    def compile(self) -> Plan:
        """Compile the routes into the plan that dispatch runs (done once, before serving).

        Logs a warning (logger "asyncapy") for each handler that can never run.
        """
        if self._plan is None:
            self._bind_topics()  # those of routers that got topics after they were included
            self._plan = compile_routes(self.router.routes())
        return self._plan

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of every route (filters, accepted packets, replies) and topic (``asyncapy.docs.schema``)."""
        from .docs.schema import schema_document

        return schema_document(self.compile().routes, list(self.topics.values()))

    def asyncapi(self, title: str = "asyncapy API", version: str = "1.0.0", description: str | None = None) -> dict[str, Any]:
        """An AsyncAPI 3.0.0 document of this server (``asyncapy.asyncapi``)."""
        from .docs.asyncapi import asyncapi_document

        routes = self.compile().routes
        return asyncapi_document(self, routes, title=title, version=version, description=description, topics=self.topics)

    async def explain(self, payload: Mapping[str, Any], address: str = "127.0.0.1") -> Explanation:
        """What the routes would do with ``payload`` from ``address``, calling no handler.

        Filters do run (custom ones may be async, hence ``async``); replies are never
        sent. For a packet no handler accepts, ``text`` is the ERR_NO_HANDLER detail.
        """
        plan = self._plan or compile_routes(self.router.routes())
        client = Client(address, 0, Session(address, 0), CLOSED_LINK)  # explain never sends
        packet = Packet(dict(payload), sender=client)
        return await plan.explain(client, packet)

    # -- hooks ---------------------------------------------------------------------

    async def _begin_lifespan(self) -> None:
        """The lifespan up to its ``yield``, then ``setup()`` (``LifespanError`` if the lifespan fails)."""
        run = self._lifespan_run = LifespanRun(self.lifespan)
        await run.enter(self)
        try:
            await self.setup()
        except BaseException:
            await run.exit()
            raise

    async def _end_lifespan(self) -> None:
        """``shutdown()``, then the rest of the lifespan."""
        try:
            await self.shutdown()
        finally:
            await self._lifespan_run.exit()

    async def setup(self) -> None:
        """Runs once before the server accepts connections; override it."""

    async def shutdown(self) -> None:
        """Runs once after the server stopped serving; override it."""

    async def run_sync_task(self, fn: Callable[..., R], *args: Any) -> R:
        """Run the blocking ``fn(*args)`` in a worker thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args))

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Serve until SIGINT or SIGTERM, then stop cleanly (blocking)."""
        configure_logging(self.logging_level, pid=self.workers > 1)
        if self.workers > 1:
            self.compile()  # once, in the parent: a bad route fails before any fork
            if self.metrics_port is None:
                run_workers(self.workers, self._serve_in_worker, self.addr, self.port)
            else:
                self._run_workers_with_metrics(self.metrics_port)
            return
        self._run_until_signal()

    def _run_workers_with_metrics(self, port: int) -> None:
        """Workers write snapshots of their counters; this process serves their sum."""
        from .ops.metrics import Exporter, SnapshotDir

        directory = self._metrics_dir = SnapshotDir()
        exporters: list[Exporter] = []
        try:
            run_workers(
                self.workers, self._serve_in_worker, self.addr, self.port,
                started=lambda: exporters.append(Exporter(self.addr, port, directory.read)),
            )  # fmt: skip
        finally:
            for exporter in exporters:
                exporter.close()
            directory.remove()

    def _serve_in_worker(self, sock: socket.socket | None) -> None:
        """A worker's life: its own loop, listening on ``sock`` or on a SO_REUSEPORT socket."""
        self._sock, self._reuse_port = sock, sock is None
        self._run_until_signal(exit_status=STARTUP_FAILED)

    def _run_until_signal(self, exit_status: int = 1) -> None:
        try:
            _run(self._serve_until_signal(), self.uvloop)
        except KeyboardInterrupt:  # a second Ctrl-C, or a platform without signal handlers
            pass
        except LifespanError:  # logged where it happened; nothing was served
            raise SystemExit(exit_status) from None

    async def serve(self) -> None:
        """Serve until ``request_stop()`` is called (or the task is cancelled), then stop."""
        await self.start_serving()
        assert self._stop_requested is not None
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    async def start_serving(self) -> None:
        """Compile the routes, run ``setup()`` and start listening; returns once bound."""
        if self._listener is not None:
            raise RuntimeError("the server is already serving")
        logger.setLevel(self.logging_level)
        plan = self.compile()
        self._stop_requested = asyncio.Event()
        await self._begin_lifespan()
        observer = self._observer()  # None unless the access log, metrics or a tracing middleware is on
        self._ctx = ctx = self._serving_context(plan, observer)
        loop = asyncio.get_running_loop()
        try:
            self._listener = await self._listen(loop, ctx.protocol_factory())
        except BaseException:
            self._stop_observing()
            try:
                await self._end_lifespan()  # it was entered: what it opened is closed
            except Exception:  # the failure to listen is the error to raise
                logger.exception("shutdown() failed after the server could not listen")
            raise
        self.port = self._listener.sockets[0].getsockname()[1]
        logger.info("Serving on %s:%d%s", self.addr, self.port, " (TLS)" if self.ssl else "")

    def _observer(self) -> Observer | None:
        """What observes packets for this serving run (``asyncapy.observe``), chosen once."""
        self._access = AccessLog(self.access_log, pid=self.workers > 1) if self.access_log else None
        if self.metrics_port is not None:
            from .ops.metrics import ServingMetrics

            self._metrics = ServingMetrics(self.addr, self.metrics_port, self._metrics_dir)
            if self._metrics_dir is None:
                self.metrics_port = self._metrics.port
        access = self._access.line if self._access is not None else None
        traced = any(getattr(mw, "needs_handler_names", False) for mw in self._middleware)
        return make_observer(access, self._metrics.counters if self._metrics is not None else None, traced)

    def _stop_observing(self) -> None:
        if self._access is not None:
            self._access.close()
            self._access = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def _serving_context(self, plan: Plan, observer: Observer | None = None, behind_proxy: bool = True) -> ServingContext:
        """What the connections of one serving run share, its pipeline built once (``asyncapy.pipeline``).

        ``Server.serve`` and ``asyncapy.testing`` build it alike; a test client is the
        client itself, never a balancer (``behind_proxy=False``: no PROXY gate).
        """
        admission = None
        if self.shared_state is not None and self.session_limit:
            admission = SharedSessions(self.shared_state, self.session_limit)
        if self.health is not None:
            self.health.serving = True
        settings = Settings(
            plan=plan,
            default_encoding=get_codec(self.encoding).id,
            sessions=SessionRegistry(self.session_limit),
            max_connections=self.max_connections,
            error_details=self.error_details,
            debug=logger.isEnabledFor(logging.DEBUG),
            handler_timeout=self.handler_timeout,
            rate_limit=self.rate_limit,
            middleware=tuple(self._middleware),
            exception_handlers=dict(self._exception_handlers),
            trusted_proxies=self.trusted_proxies if self.proxy_protocol and behind_proxy else None,
            admission=admission,
            observer=observer,
            health=None if self.health is None else health_layer(self.health),
        )
        ctx = ServingContext(
            pipeline=build_pipeline(settings),
            header_size=self.header_size,
            byteorder=self.byteorder,
            max_packet_size=self.max_packet_size,
            timeout=self.timeout,
            max_pending=self.max_pending,
            max_streams=self.max_streams,
            upgrade=upgrade,
        )
        if observer is not None and observer.metrics is not None:
            observer.metrics.open_connections = ctx.connections.__len__
            observer.metrics.traffic = ctx.traffic
        return ctx

    async def _listen(self, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol]) -> Listener | asyncio.Server:
        """``asyncapy.listener.listen``: accept with a back-off when out of descriptors; ``timeout`` bounds TLS handshakes."""
        return await listen(
            loop, factory, self.addr, self.port, sock=self._sock, ssl=self.ssl, backlog=self.backlog,
            reuse_port=self._reuse_port or None, handshake_timeout=self.timeout or None,
        )  # fmt: skip

    def request_stop(self) -> None:
        """Ask ``serve()`` / ``start()`` to stop; safe to call from a signal handler."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def stop(self) -> None:
        """Stop accepting, answer every packet received, close; bounded by ``shutdown_timeout``.

        With ``health=True`` the health probe answers NOT_SERVING from the start, and the
        server keeps serving ``drain`` seconds before it stops accepting.
        Connections keep being read and served until each has been quiet for
        ``SHUTDOWN_QUIET`` seconds (so packets already sent are answered), then close
        after their replies are written. A packet half-received when its connection
        goes quiet is dropped. At the deadline, handlers still running are cancelled.
        Subscriptions to the server's topics end at once (their streams end with what they hold).
        """
        listener, ctx = self._listener, self._ctx
        if listener is None or ctx is None:
            return
        self._listener = None
        if self.health is not None:
            await self._drain()  # still accepting: the listener closes after it
        listener.close()
        for topic in self.router.topics().values():
            topic.end_subscriptions()  # streams of topics end now, not at the deadline
        logger.info("Stopping: waiting for %d connection(s) to finish their packets", len(ctx.connections))
        await self._close_when_quiet(ctx)
        await self._flush_or_abort(ctx)
        if ctx.pipeline.admission is not None:
            await ctx.pipeline.admission.aclose()  # the closed sessions are forgotten in the shared state
        await self._close_topic_bus()
        ctx.close_hosts()
        if ctx.sweeper is not None:
            ctx.sweeper.cancel()
            ctx.sweeper = None
        await self._end_lifespan()
        self._stop_observing()
        logger.info("Server stopped")

    async def _close_topic_bus(self) -> None:
        """Stop receiving other servers' topic events in this process (its subscription to Redis)."""
        if self.shared_state is None or not self.router.topics():
            return
        bus = self.shared_state.topic_bus()
        if bus is not None:
            await bus.aclose()

    async def _drain(self) -> None:
        """Health probes answer NOT_SERVING from now on; keep serving ``drain`` seconds for balancers to notice."""
        assert self.health is not None
        self.health.serving = False
        if self.drain:
            logger.info("Draining: health probes answer NOT_SERVING; closing the port in %s s", self.drain)
            await asyncio.sleep(self.drain)

    async def _close_when_quiet(self, ctx: ServingContext) -> None:
        """Close each connection once it is quiet; at the deadline close the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_timeout
        while loop.time() < deadline:
            open_ = [conn for conn in ctx.connections if not conn.closing]
            if not open_:
                break
            for conn in open_:
                if conn.quiet_for() >= SHUTDOWN_QUIET:
                    conn.close()
            await asyncio.sleep(_SHUTDOWN_POLL)
        if any(conn.busy for conn in ctx.connections):
            logger.warning("Handlers still running after %s seconds; cancelling them", self.shutdown_timeout)
        for conn in list(ctx.connections):
            conn.cancel_work()
            conn.close()

    async def _flush_or_abort(self, ctx: ServingContext) -> None:
        """Give closed connections time to write their replies, then drop the ones that cannot."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_FLUSH_GRACE
        await asyncio.sleep(0)  # let the transports flush and report connection_lost
        while ctx.connections and loop.time() < deadline:
            await asyncio.sleep(_SHUTDOWN_POLL)
        for conn in list(ctx.connections):
            conn.abort()
        await asyncio.sleep(0)

    @property
    def serving(self) -> bool:
        return self._listener is not None

    async def _serve_until_signal(self) -> None:
        """Serve until SIGINT or SIGTERM. One that comes while starting (a slow lifespan or
        ``setup()``) cancels the start: nothing is served, and the exit is as clean (status 0)."""
        loop = asyncio.get_running_loop()
        starting = asyncio.current_task()
        started = signalled = False

        def on_signal() -> None:
            nonlocal signalled
            if started:
                self.request_stop()
            elif starting is not None and not signalled:
                signalled = True
                starting.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            await self.start_serving()
        except asyncio.CancelledError:
            if not signalled:
                raise
            logger.info("Stopped before serving: a signal came while the server was starting")
            return
        started = True
        assert self._stop_requested is not None
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    def _check_not_serving(self) -> None:
        if self._plan is not None:
            raise RuntimeError("handlers must be registered before the server starts serving")


def _non_negative(name: str, value: float) -> float:
    if value < 0:
        raise ValueError(f"{name} must be 0 or positive, not {value!r}")
    return value


def _check_workers(workers: int) -> int:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int of 1 or more, not {workers!r}")
    if workers > 1 and not hasattr(os, "fork"):
        raise ValueError("workers > 1 needs os.fork (not available on this platform)")
    return workers


def _check_metrics_port(port: int | None) -> int | None:
    """Fail when the server is made if metrics are asked for but prometheus-client is missing."""
    if port is None:
        return None
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise ValueError(f"metrics_port must be a port number (0: one the OS picks), not {port!r}")
    from .ops.metrics import check_installed

    check_installed()
    return port


def _check_uvloop(enabled: bool) -> bool:
    """Fail when the server is made, not when it starts, if uvloop is asked for but missing."""
    if enabled:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            from .model.install import install_hint

            raise ValueError(f"uvloop=True needs uvloop: {install_hint('uvloop')}") from None
    return bool(enabled)


def _run(main: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    """``asyncio.run(main)``, on a uvloop loop when asked (works on 3.10 as on 3.12)."""
    if not use_uvloop:
        asyncio.run(main)
        return
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
