"""``AsyncClient(protocol=2)``: many requests in flight on one connection (asyncio only).

``AsyncMux`` moves bytes for a ``clientmux.MuxCore``: each ``request`` registers a
future under its Stream-Id, one writer task writes what the core queued, one reader
task hands each answer to the future that waits for it. A task cancelled while waiting
(or one whose timeout passed) makes the core send a CANCEL and the connection stays
open. Against a server that speaks v1 only, the core falls back to v1 and later
connections of this client start in v1. Requests that never reached the server, or that
TCP proved unread, go out again on the next connection.

``stream`` makes a ``MuxStream``: a request answered by ITEMs then an END, whose frames
the core holds (bounded: past ``clientmux.MAX_STREAM_ITEMS`` unread items the reader
stops reading the connection, so a slow application slows the server's generator).
Leaving it early (``aclose``, or dropping it) sends a CANCEL; the connection stays.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from ._streams import AsyncByteStream
from .clientcore import Sendable, check_reply, decode_reply, validator
from .clientmux import ConnectionFailure, End, FellBack, Item, MuxCore, MuxEvent, Pending, Pushed, Reply
from ..wire.errors import ClientError, ClientTimeout, ConnectionClosed, ProtocolError, ReplyValidationError
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
    #: Streamed requests on it: Stream-Id -> the event that wakes its reader.
    streams: dict[int, asyncio.Event] = field(default_factory=dict)
    #: Set while the reader may read; cleared while a stream holds too many unread items.
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    #: A REPLY on Stream-Id 0 (an error of the connection): it ends the streams too.
    failure: Frame | None = None


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
                while conn.core.reading_paused and not conn.lost:  # a stream's reader is behind
                    conn.resume.clear()
                    await conn.resume.wait()
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
        if isinstance(event, FellBack):
            self.protocol = 1
        if not isinstance(event, (Pushed, ConnectionFailure)) and event.stream_id in conn.streams:
            conn.streams[event.stream_id].set()  # a stream's item, end or refusal: its reader takes it
            return
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
            conn.failure = event.frame
            _wake_streams(conn)
            for ticket in list(conn.tickets.values()):  # an error of the connection answers what waits
                _resolve(ticket, event.frame)
            conn.tickets.clear()
        elif isinstance(event, FellBack):
            pass  # the protocol is noted above
        else:
            assert isinstance(event, Item)  # request() takes no items

    def _lose(self, conn: _Conn, why: str) -> None:
        if not conn.lost:
            conn.lost, conn.why = True, why
            _wake_streams(conn)
            conn.resume.set()
            conn.stream.abort()
            if conn.reader is not None and conn.reader is not asyncio.current_task():
                conn.reader.cancel()

    async def _settle(self, conn: _Conn, failure: BaseException | None) -> None:
        """The connection ended: requests never read go to a new connection, the rest fail."""
        conn.lost = True
        _wake_streams(conn)
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


    # -- streamed answers -------------------------------------------------------------------

    def stream(self, obj: Sendable, encoding: str | None, timeout: float | None) -> MuxStream:
        """A request answered by a stream: its frames, as they come (see ``MuxStream``)."""
        return MuxStream(self, obj, encoding, timeout)

    async def _open(self, obj: Sendable, encoding: str | None, timeout: float | None) -> tuple[_Conn, int]:
        conn = await self._connection()
        stream_id = conn.core.open_stream(obj, encoding, timeout)
        conn.streams[stream_id] = asyncio.Event()
        self._kick(conn)
        return conn, stream_id

    def _close_stream(self, conn: _Conn, stream_id: int) -> None:
        """The application stopped reading a stream: CANCEL it if it runs; reading may resume."""
        conn.streams.pop(stream_id, None)
        if conn.lost:
            return
        conn.core.close_stream(stream_id)
        conn.resume.set()
        try:
            self._kick(conn)
        except RuntimeError:  # dropped outside the event loop (at exit): nothing to write with
            pass


class MuxStream:
    """The frames of one streamed request: each ITEM's, then the error that ended it, if any.

    ``async for frame in stream`` ends at the END; a REPLY (an error of the request, or
    a handler that does not stream) is its last frame. ``aclose()``, leaving an
    ``async with``, or dropping it before its end sends a CANCEL.

    Raises (from ``__anext__``):
        ConnectionClosed: the connection was lost before the end.
        ClientError: the server speaks AsyncAProto v1 only (no stream can be marked).
    """

    def __init__(self, mux: AsyncMux, obj: Sendable, encoding: str | None, timeout: float | None) -> None:
        self._mux = mux
        self._request = (obj, encoding, timeout)
        self._conn: _Conn | None = None
        self._stream_id = 0
        self._done = False

    def __aiter__(self) -> MuxStream:
        return self

    async def __anext__(self) -> Frame:
        if self._done:
            raise StopAsyncIteration
        if self._conn is None:
            self._conn, self._stream_id = await self._mux._open(*self._request)
        conn, sid = self._conn, self._stream_id
        wake = conn.streams[sid]
        while True:
            core = conn.core
            if core.stream_refused(sid):
                self._finish()
                raise ClientError("the server speaks AsyncAProto v1 only, which cannot mark the end of a stream")
            event = core.next_in_stream(sid)
            if event is not None:
                if not core.reading_paused:
                    conn.resume.set()
                if isinstance(event, Item):
                    return event.frame
                self._finish()
                if event.frame is None:  # an END without error
                    raise StopAsyncIteration
                return event.frame
            if conn.failure is not None:
                self._finish()
                return conn.failure
            if conn.lost:
                self._finish()
                raise ConnectionClosed(f"the connection was lost during a stream: {conn.why or 'closed by the server'}")
            wake.clear()
            await wake.wait()

    def _finish(self) -> None:
        self._done = True
        if self._conn is not None:
            self._conn.streams.pop(self._stream_id, None)

    async def aclose(self) -> None:
        """Stop reading: a stream still running is cancelled (CANCEL), the connection stays."""
        self._cancel()

    def _cancel(self) -> None:
        if not self._done:
            self._done = True
            if self._conn is not None:
                self._mux._close_stream(self._conn, self._stream_id)

    async def __aenter__(self) -> MuxStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cancel()

    def __del__(self) -> None:
        self._cancel()  # left early (``break``): CANCEL it


T = TypeVar("T")


class ItemStream(Generic[T]):
    """What ``AsyncClient.stream`` returns: the items of a streamed answer, each a ``T``.

    ``async for tick in client.stream(Watch(symbol="ACME"), item=Tick)``; leaving the
    loop early (``break``, an exception), ``aclose()`` or ``async with`` sends a CANCEL
    and keeps the connection.

    Raises (while iterating):
        ErrorReply: the stream ended with an error (its code), or the request was refused.
        ReplyValidationError: an item is not a valid ``T``.
        ConnectionClosed: the connection was lost before the end.
    """

    def __init__(self, frames: MuxStream, decode: Any, item: Any) -> None:
        self._frames = frames
        self._decode = decode
        self._validate = None if item is None else validator(item)
        self._item = item

    def __aiter__(self) -> ItemStream[T]:
        return self

    async def __anext__(self) -> T:
        frame = await self._frames.__anext__()
        payload = self._decode(frame)
        try:
            check_reply(payload)
            if self._validate is None:
                return payload  # type: ignore[no-any-return]  # item=None: the maps
            return self._validate(payload)  # type: ignore[no-any-return]
        except ValidationError as exc:
            await self._frames.aclose()
            raise ReplyValidationError(payload, self._item, exc) from exc
        except BaseException:
            await self._frames.aclose()  # nothing when it was the stream's last frame
            raise

    async def aclose(self) -> None:
        """Stop reading; a stream still running is cancelled (CANCEL)."""
        await self._frames.aclose()

    def cancel(self) -> None:
        """``aclose`` for a caller outside a coroutine (on the event loop's thread)."""
        self._frames._cancel()

    async def __aenter__(self) -> ItemStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._frames.aclose()


def _wake_streams(conn: _Conn) -> None:
    for wake in conn.streams.values():
        wake.set()


def _resolve(ticket: _Ticket | None, frame: Frame) -> None:
    if ticket is not None and not ticket.future.done():
        ticket.future.set_result(frame)


def _fail(ticket: _Ticket, exc: BaseException) -> None:
    if not ticket.future.done():
        ticket.future.set_exception(exc)


def _expire(future: asyncio.Future[Frame], timeout: float) -> None:
    if not future.done():
        future.set_exception(ClientTimeout(f"no reply within {timeout} seconds"))
