"""``AsyncClient(protocol=2)``: many requests in flight on one connection (asyncio only).

``AsyncMux`` moves bytes for a ``clientmux.MuxCore``: each ``request`` registers a
future under its Stream-Id, one writer task writes what the core queued, one reader
task hands each answer to the future that waits for it. A task cancelled while waiting
(or one whose timeout passed) makes the core send a CANCEL and the connection stays
open. Against a server that speaks v1 only, the core falls back to v1 and later
connections of this client start in v1. Requests that never reached the server, or that
TCP proved unread, go out again on the next connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ._streams import AsyncByteStream
from .clientcore import Sendable, decode_reply
from .clientmux import ConnectionFailure, End, FellBack, Item, MuxCore, MuxEvent, Pending, Pushed, Reply
from ..wire.errors import ClientError, ClientTimeout, ConnectionClosed, ProtocolError
from ..wire.protocol import Frame


@dataclass(eq=False)
class _Ticket:
    """One request's future, and where it is in flight now (it may move to a new connection)."""

    future: asyncio.Future[Frame]
    conn: _Conn | None = None
    stream_id: int = 0


@dataclass(eq=False)
class _Conn:
    stream: AsyncByteStream
    core: MuxCore
    tickets: dict[int, _Ticket] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    writer: asyncio.Task[None] | None = None
    lost: bool = False
    #: Why this side dropped it (the error of the requests that were in flight on it).
    why: str = ""


class AsyncMux:
    """The v2 connection of an ``AsyncClient``; see the module docstring.

    Args:
        open_stream: opens a new connection to the server.
        make_core: a fresh ``MuxCore`` speaking the given protocol (2, or 1 after a fallback).
        timeout: seconds a write may take (requests have their own).
        reconnect: send requests that never reached the server again on a new connection.
    """

    def __init__(
        self,
        open_stream: Callable[[], Awaitable[AsyncByteStream]],
        make_core: Callable[[int], MuxCore],
        timeout: float | None,
        reconnect: bool = True,
    ) -> None:
        self._open_stream = open_stream
        self._make_core = make_core
        self._timeout = timeout
        self._reconnect = reconnect
        #: 1 once a server answered v2 with a v1 ERR_HEADER_INVALID: later connections start in v1.
        self.protocol = 2
        self._conn: _Conn | None = None
        self._opening = asyncio.Lock()
        self._pushed: deque[Frame] = deque()
        self._pushed_wake = asyncio.Event()
        self._closed = False
        #: With ``reconnect=False``: why the last connection ended, until ``connect()``.
        self._lost: str | None = None
        #: "host:port", for error messages.
        self.address = ""

    @classmethod
    def of(cls, client: Any) -> AsyncMux:
        """The mux of an ``AsyncClient`` (its ``_open_stream``: the TestClients open memory)."""
        mux = cls(client._open_stream, client._mux_core, client.timeout, client.reconnect)
        mux.address = f"{client.host}:{client.port}"
        return mux

    # -- requests ---------------------------------------------------------------------------

    async def request(self, obj: Sendable, encoding: str | None, timeout: float | None) -> Frame:
        """Send ``obj`` and wait for its answer (a REPLY, on v1 the next packet).

        Raises:
            ClientTimeout: no answer within ``timeout`` (a CANCEL was sent).
            ConnectionClosed, ProtocolError, OSError: the connection failed.
        """
        self._closed = False  # as on v1: a request after ``close`` opens a new connection
        conn = await self._connection()
        loop = asyncio.get_running_loop()
        ticket = _Ticket(loop.create_future())
        self._place(conn, ticket, conn.core.send_request(obj, encoding, timeout))
        timer = None if timeout is None else loop.call_later(timeout, _expire, ticket.future, timeout)
        try:
            return await ticket.future
        except BaseException:
            self._abandon(ticket)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _place(self, conn: _Conn, ticket: _Ticket, stream_id: int) -> None:
        ticket.conn, ticket.stream_id = conn, stream_id
        conn.tickets[stream_id] = ticket
        self._kick(conn)

    def _abandon(self, ticket: _Ticket) -> None:
        """The caller stopped waiting (cancelled, timed out): CANCEL, or drop a v1 connection."""
        conn = ticket.conn
        if conn is None or conn.tickets.get(ticket.stream_id) is not ticket:
            return
        del conn.tickets[ticket.stream_id]
        if conn.core.cancel(ticket.stream_id):
            self._kick(conn)
        else:  # v1: its answer would be taken for the next request's
            self._lose(conn, "a v1 request on it was abandoned")

    # -- pushed packets -----------------------------------------------------------------------

    async def pushed(self) -> AsyncIterator[dict[str, Any]]:
        """The maps the server pushed (answering no request), as they come; ends when closed."""
        while True:
            while self._pushed:
                yield decode_reply(self._pushed.popleft())
            if self._closed:
                return
            self._pushed_wake.clear()
            await self._pushed_wake.wait()

    # -- the connection ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection now (``request`` does it when needed); also after ``close``."""
        self._closed = False
        self._lost = None
        await self._connection()

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and not conn.lost:
            return conn
        if self._closed:
            raise ConnectionClosed("the client is closed")
        if self._lost is not None:
            raise ConnectionClosed(f"{self._lost} ({self.address}, reconnect=False; connect() opens a new one)")
        async with self._opening:
            conn = self._conn
            if conn is None or conn.lost:
                stream = await self._open_stream()
                core = self._make_core(self.protocol)
                core.pushed = self._pushed  # one queue across connections
                conn = self._conn = _Conn(stream, core)
                conn.reader = asyncio.get_running_loop().create_task(self._read(conn))
            return conn

    def _kick(self, conn: _Conn) -> None:
        """Start the writer when the core has frames and none is running."""
        if not conn.lost and (conn.writer is None or conn.writer.done()):
            conn.writer = asyncio.get_running_loop().create_task(self._write(conn))

    async def _write(self, conn: _Conn) -> None:
        try:
            while not conn.lost:
                data = conn.core.data_to_send()
                if not data:
                    return
                await conn.stream.write(data, self._timeout)
        except (ConnectionClosed, ClientTimeout, OSError) as exc:
            self._lose(conn, f"writing failed: {exc}")

    async def _read(self, conn: _Conn) -> None:
        """Hand each answer to its waiter until the connection ends; then settle what was in flight."""
        failure: BaseException | None = None
        try:
            while not conn.lost:
                data = await conn.stream.read(None)
                if data is None:
                    continue
                for event in conn.core.receive_data(data):
                    self._dispatch(conn, event)
                if not data:
                    break
                self._kick(conn)  # requests that waited for the version, or their turn on v1
        except ProtocolError as exc:
            failure = exc
        except asyncio.CancelledError:  # ``_lose`` stopped the reader
            failure = ConnectionClosed(f"the connection was dropped: {conn.why}")
        finally:
            await self._settle(conn, failure)

    def _dispatch(self, conn: _Conn, event: MuxEvent) -> None:
        if isinstance(event, Reply):
            _resolve(conn.tickets.pop(event.stream_id, None), event.frame)
        elif isinstance(event, End):
            ticket = conn.tickets.pop(event.stream_id, None)
            if event.frame is not None:
                _resolve(ticket, event.frame)  # the error map that ended it
            elif ticket is not None and not ticket.future.done():
                ticket.future.set_exception(ClientError("the server streamed its answer; request() takes one REPLY"))
        elif isinstance(event, Pushed):
            self._pushed_wake.set()
        elif isinstance(event, ConnectionFailure):
            for ticket in list(conn.tickets.values()):  # an error of the connection answers what waits
                _resolve(ticket, event.frame)
            conn.tickets.clear()
        elif isinstance(event, FellBack):
            self.protocol = 1
        else:
            assert isinstance(event, Item)  # request() takes no items

    def _lose(self, conn: _Conn, why: str) -> None:
        if not conn.lost:
            conn.lost, conn.why = True, why
            conn.stream.abort()
            if conn.reader is not None and conn.reader is not asyncio.current_task():
                conn.reader.cancel()

    async def _settle(self, conn: _Conn, failure: BaseException | None) -> None:
        """The connection ended: requests never read go to a new connection, the rest fail."""
        conn.lost = True
        if self._conn is conn:
            self._conn = None
        core = conn.core
        retry = [(p, conn.tickets.pop(p.stream_id)) for p in core.detach_unsent() if p.stream_id in conn.tickets]
        in_flight = [sid for sid in core.in_flight() if sid in conn.tickets]
        if failure is None and len(in_flight) == 1 and core.open_calls() == 1 and await conn.stream.refused():
            # The server closed with the last bytes written unread, and they were this
            # request's alone: AsyncAPY after ERR_HEADER_INVALID, or a request written
            # while the server's close was on its way.
            sid = in_flight.pop()
            retry.append((core.detach(sid), conn.tickets.pop(sid)))
        conn.stream.abort()
        lost = failure or ConnectionClosed(f"the server closed the connection ({self.address})")
        if not self._reconnect and not self._closed and self._lost is None:
            self._lost = conn.why or "the server closed the connection"
        for ticket in conn.tickets.values():
            _fail(ticket, lost)
        conn.tickets.clear()
        if retry:
            await self._retry(retry, lost)

    async def _retry(self, retry: list[tuple[Pending, _Ticket]], lost: BaseException) -> None:
        if not self._reconnect or self._closed:
            for _, ticket in retry:
                _fail(ticket, lost)
            return
        try:
            conn = await self._connection()
        except (OSError, ClientError) as exc:
            for _, ticket in retry:
                _fail(ticket, exc)
            return
        for pending, ticket in retry:
            if not ticket.future.done():
                self._place(conn, ticket, conn.core.resend(pending))

    async def close(self) -> None:
        """Close the connection; requests in flight raise ``ConnectionClosed``."""
        self._closed = True
        self._lost = None
        self._pushed_wake.set()
        conn, self._conn = self._conn, None
        if conn is not None:
            self._lose(conn, "the client was closed")
            tasks = [t for t in (conn.reader, conn.writer) if t is not None]
            await asyncio.gather(*tasks, return_exceptions=True)


def _resolve(ticket: _Ticket | None, frame: Frame) -> None:
    if ticket is not None and not ticket.future.done():
        ticket.future.set_result(frame)


def _fail(ticket: _Ticket, exc: BaseException) -> None:
    if not ticket.future.done():
        ticket.future.set_exception(exc)


def _expire(future: asyncio.Future[Frame], timeout: float) -> None:
    if not future.done():
        future.set_exception(ClientTimeout(f"no reply within {timeout} seconds"))
