"""The pipeline: every layer a packet passes, listed and composed in one place, once per serving run.

Outermost first::

    connection:  PROXY gate -> shared admission -> connection limits (max_connections, session_limit)
    packet:      debug log -> handler_timeout -> server-wide rate limit -> exception handlers
                 -> middleware -> routing
    observation: a Record per connection, told each packet's outcome by its exchange

``build_pipeline`` decides once which layers a server uses; the layers it does not use
are absent (not switched off per packet), so a server with none of them calls its
handler straight from the connection (``Pipeline.direct``). The gate is a protocol of
its own (``asyncapy.gate``) that hands the transport to the ``Connection`` once it let
the connection through; the packet layers are functions ``(client, packet) ->
Started`` (``asyncapy.exchange``), each holding the next; every answer leaves through
the connection's ``Exchange``. ``Server.serve`` and the in-memory test clients build
the same pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..wire.codecs import CODEC_IDS, CODECS
from ..wire.errors import ERR_INTERNAL, ERR_RATE_LIMITED, ERR_SERVER_BUSY, ERR_SESSION_LIMIT_REACHED
from ..model.answers import answers_of
from .exchange import Exchange, HandlerTimedOut, Layer, Link, Started
from .liveness import peer_left
from ..app.middleware import App, ExceptionHandler, Middleware
from ..ops.observe import Observer, observed_plan
from ..model.packet import Packet
from ..model.peer import Client, Session
from ..wire.proxy import Network
from ..shared.ratelimit import RateLimit
from ..app.routing import Miss, Plan
from ..model.sessions import SessionRegistry
from ..shared.state import SHARED_STATE_UNAVAILABLE, SharedSessions, SharedStateUnavailable

logger = logging.getLogger("asyncapy")

#: A cancelled handler gets this long to run its ``finally`` blocks; one that ignores
#: cancellation is left behind so that the connection can move on.
HANDLER_CANCEL_GRACE = 1.0


@dataclass(frozen=True)
class Settings:
    """What a serving run's pipeline is built from (``Server`` fills it)."""

    plan: Plan
    default_encoding: int
    sessions: SessionRegistry
    max_connections: int = 0
    error_details: bool = True
    debug: bool = False
    handler_timeout: float | None = None
    rate_limit: RateLimit | None = None
    middleware: tuple[Middleware, ...] = ()
    exception_handlers: Mapping[type[BaseException], ExceptionHandler[Any]] = field(default_factory=dict)
    trusted_proxies: tuple[Network, ...] | None = None
    admission: SharedSessions | None = None
    observer: Observer | None = None
    #: An optional outermost packet layer (``asyncapy.serve.health``), given the next layer.
    health: Callable[[Layer], Layer] | None = None


@dataclass(eq=False)
class Pipeline:
    """One serving run's layers, composed; see the module docstring."""

    #: The packet layers composed: what each decoded packet is handed to.
    entry: Layer
    #: The names of the layers in use, outermost first (``asyncapy explain``, tests, the docs).
    layers: tuple[str, ...]
    #: True when ``entry`` is the plan's ``start``: the handler's own coroutine is stepped.
    direct: bool
    sessions: SessionRegistry
    default_encoding: int
    max_connections: int
    error_details: bool
    debug: bool
    handler_timeout: float | None
    trusted_proxies: tuple[Network, ...] | None
    admission: SharedSessions | None
    observer: Observer | None
    plan: Plan

    @property
    def gated(self) -> bool:
        """Connections wait at the gate (PROXY header, shared admission) before they are served."""
        return self.trusted_proxies is not None or self.admission is not None

    def open(self, conn: Link, host: str, port: int, open_connections: int, refusal: tuple[str, str] | None = None,
             member: str | None = None) -> Exchange | None:  # fmt: skip
        """The connection layers for a new connection: its exchange, or None when it was refused (and answered)."""
        session = Session(host, port)
        client = Client(host, port, session, conn, self.sessions, self.encoding_name)
        observer = self.observer
        ex = Exchange(self, conn, client, None if observer is None else observer.record(client))
        ex.member = member
        if refusal is None and self.max_connections and open_connections >= self.max_connections:
            refusal = (ERR_SERVER_BUSY, f"the server is at its limit of {self.max_connections} connections")
        if refusal is None and not (self.sessions.open(session, conn) or (self._let_departed_go(host) and self.sessions.open(session, conn))):
            refusal = (ERR_SESSION_LIMIT_REACHED, f"{host} is at its limit of {self.sessions.limit} sessions")
        if refusal is not None:
            logger.info("Refused a connection from %s: %s", host, refusal[0])
            ex.connection_error(*refusal)
            ex.lost()
            return None
        ex.opened()
        if logger.isEnabledFor(logging.INFO):  # session.id makes a UUID: only when it is logged
            logger.info("(%s) New session started from %s:%d", session.id, host, port)
        return ex

    def close_session(self, ex: Exchange) -> None:
        session = ex.client.session
        self.sessions.close(session)
        if ex.member is not None and self.admission is not None:
            self.admission.leave(session.address, ex.member)
            ex.member = None
        if logger.isEnabledFor(logging.INFO):
            logger.info("(%s) The connection was closed", session.id)

    def _let_departed_go(self, address: str) -> bool:
        """Before refusing ``address`` a session: free the sessions whose peer already left (see ``liveness``).

        Only idle connections are let go (a running handler still owns its session);
        they are closed now rather than when their EOF is read. True if any was freed.
        """
        freed = False
        for conn in self.sessions.owners_of(address):  # at most session_limit of them
            transport = getattr(conn, "transport", None)
            if not conn.busy and transport is not None and peer_left(transport):
                conn.let_go()
                freed = True
        return freed

    @property
    def encoding_name(self) -> str:
        return CODECS[self.default_encoding].name


def build_pipeline(settings: Settings) -> Pipeline:
    """Compose the layers ``settings`` uses, innermost first; see the module docstring."""
    s = settings
    plan = s.plan
    names: list[str] = []
    if s.trusted_proxies is not None:
        names.append("PROXY gate")
    if s.admission is not None:
        names.append("shared admission")
    names.append("connection limits")
    app = bool(s.middleware or s.exception_handlers)
    direct = plan.groups_simple and not app and s.handler_timeout is None and not s.debug and (
        s.rate_limit is None) and s.health is None  # fmt: skip
    if s.observer is not None:
        plan = observed_plan(plan, s.observer, direct)
    packet_layers: list[str] = []
    entry: Layer
    if app:
        entry = App.build(plan, s.middleware, s.exception_handlers).handle
        if s.exception_handlers:
            packet_layers.append("exception handlers")
        if s.middleware:
            packet_layers.append(f"middleware ({len(s.middleware)})")
    else:
        entry = plan.start if plan.groups_simple else plan.route
    packet_layers.append("routing")
    if s.rate_limit is not None:
        entry = rate_limited(entry, s.rate_limit)
        packet_layers.insert(0, "rate limit" + (" (shared)" if s.rate_limit.state is not None else ""))
    if s.handler_timeout is not None:
        entry = bounded(entry, s.handler_timeout)
        packet_layers.insert(0, "handler_timeout")
    if s.debug:
        entry = debug_logged(entry)
        packet_layers.insert(0, "debug log")
    if s.health is not None:
        entry = s.health(entry)
        packet_layers.insert(0, "health")
    names.extend(packet_layers)
    if s.observer is not None:
        names.append("observation")
    return Pipeline(
        entry=entry, layers=tuple(names), direct=direct, sessions=s.sessions, default_encoding=s.default_encoding,
        max_connections=s.max_connections, error_details=s.error_details, debug=s.debug,
        handler_timeout=s.handler_timeout, trusted_proxies=s.trusted_proxies, admission=s.admission,
        observer=s.observer, plan=plan,
    )  # fmt: skip


# -- packet layers: each takes the next and returns a function of (client, packet) -> Started ------


async def run_started(started: Started) -> Any:
    """Await what a layer returned: the coroutine's result, else the ``Miss`` or None itself."""
    if started is None or type(started) is Miss:
        return started
    return await started  # type: ignore[misc]


def rate_limited(inner: Layer, limit: RateLimit) -> Layer:
    """``Server(rate_limit=...)``, checked before routing: in memory, a sync check that keeps
    the handler's own coroutine; shared, one await of the backend per packet."""
    if limit.state is None:
        count = limit.local_counter()

        def local(client: Client, packet: Packet[Any]) -> Started:
            wait = count(client, packet)
            if wait:
                answers_of(client).error(ERR_RATE_LIMITED, limit.detail(wait), CODEC_IDS[packet.encoding])
                return None
            return inner(client, packet)  # type: ignore[no-any-return]

        return local

    async def shared(client: Client, packet: Packet[Any]) -> Any:
        try:
            wait = await limit.hit(client, packet)
        except SharedStateUnavailable:
            answers_of(client).error(ERR_INTERNAL, SHARED_STATE_UNAVAILABLE, CODEC_IDS[packet.encoding])
            return None
        if wait:
            answers_of(client).error(ERR_RATE_LIMITED, limit.detail(wait), CODEC_IDS[packet.encoding])
            return None
        return await run_started(inner(client, packet))

    return shared


def bounded(inner: Layer, timeout: float) -> Layer:
    """``handler_timeout``: the packet's handling in a task cancelled after ``timeout`` seconds.

    A handler's own TimeoutError stays ERR_INTERNAL; this one is ERR_TIMED_OUT (``HandlerTimedOut``).
    """

    async def bound(client: Client, packet: Packet[Any]) -> Any:
        task = asyncio.get_running_loop().create_task(run_started(inner(client, packet)))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=HANDLER_CANCEL_GRACE)
            task.add_done_callback(_ignore_result)
            raise HandlerTimedOut
        return task.result()

    return bound


def debug_logged(inner: Layer) -> Layer:
    """Under DEBUG logging: a line per packet before it is routed."""

    def logged(client: Client, packet: Packet[Any]) -> Started:
        raw = packet.raw or b""
        logger.debug("(%s) Packet of %d bytes, Content-Encoding is %s", client.session.id, len(raw), packet.encoding)
        return inner(client, packet)  # type: ignore[no-any-return]

    return logged


def _ignore_result(task: asyncio.Task[Any]) -> None:
    """Retrieve a cancelled handler's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()

