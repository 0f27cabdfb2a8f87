"""``AsyncClient``: the asyncio shell over ``clientcore``.

``scripts/unasync.py`` writes ``_sync_client.py`` (the blocking ``Client``) from this
file, so the two clients are the same code: edit this one, then run the script.
"""

from __future__ import annotations

import ssl as _ssl
import time
from collections import deque
from types import TracebackType
from typing import Any, TypeVar, overload

from collections.abc import AsyncIterator

from ._async_mux import AsyncMux, ItemStream
from ._streams import AsyncByteStream, AsyncLock, AsyncSemaphore, AsyncStream
from .clientcore import UNSET, ClientCore, Sendable, Unset, maybe_unread, read_reply
from .clientmux import MuxCore, propagated_timeout
from ..model.packet import REQUEST_DEADLINE
from ..wire.errors import ClientTimeout, ConnectionClosed
from ..wire.protocol import Frame

T = TypeVar("T")


class AsyncChannel:
    """One connection of a client: its stream, its protocol core and its turn."""

    def __init__(self, core: ClientCore) -> None:
        self.core = core
        self.stream: AsyncByteStream | None = None
        self.lock = AsyncLock()
        #: Why the last connection ended, while it is not replaced (``reconnect=False``).
        self.lost: str | None = None


class AsyncClient:
    """An AsyncAProto client; its ``request``s are safe to run concurrently.

    By default it speaks AsyncAProto v2 (docs/protocol.md): concurrent ``request()``
    calls are all in flight at once on one connection, each waits ``timeout`` (sent as
    its Deadline-Ms), and one that times out or whose task is cancelled sends a CANCEL
    and keeps the connection. A server that speaks v1 only (AsyncAPY, an older
    asyncapy) gets the request again in v1, and the client speaks v1 to it from then on.
    Packets the server pushes are read with ``pushed()``.

    With ``protocol=1`` (or ``pool_size`` > 1) it speaks v1: concurrent ``request()``
    calls take turns on a connection (one request, then its reply); with
    ``pool_size=N`` they spread over up to N connections, opened as they are needed. A
    v1 request that fails or is cancelled after it started closes its connection, so a
    late reply never answers the next request. When the server closed a connection, the
    next request opens a new one (unless ``reconnect=False``: then a lost connection,
    closed by the server or dropped after a failed request, makes requests raise
    ``ConnectionClosed`` until ``connect()`` is called).

    ``send``, ``receive`` and ``receive_all`` are the packet-level calls of v1 (those
    of AsyncAPY); they use the first v1 connection, which on v2 is a second connection
    beside the one of ``request()``. Do not leave replies of ``send()`` unread before a
    v1 ``request()`` on it: bytes that no request asked for make a request drop the
    connection.

    Args:
        host, port: the server.
        tls: wrap the connection in TLS, verifying the server against the system CAs.
        ssl_context: the ``ssl.SSLContext`` to use instead (implies TLS).
        encoding: the default encoding of sent packets, "json" or "ziproto".
        header_size, byteorder: the Content-Length field, as the server has it.
        timeout: seconds to wait for a connection, a send, or a whole reply (None: forever);
            ``request(..., timeout=)`` sets it per call. Waiting for a turn on a busy v1
            connection does not count. Inside a handler of a v2 request that has a
            deadline, a request waits at most the time that request has left.
        pool_size: the most v1 connections ``request()`` spreads over (for APIs with no
            per-connection state); more than 1 means v1.
        reconnect: open a new connection when the server closed the last one.
        protocol: 2 (AsyncAProto v2, falling back to v1 for a server that speaks v1
            only) or 1; None (the default): 2, or 1 when ``pool_size`` > 1.

    Example:
        async with AsyncClient("127.0.0.1", 1500) as client:
            user = await client.request({"kind": "login", "user": "ann"}, reply=Welcome)
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        ssl_context: _ssl.SSLContext | None = None,
        encoding: str = "json",
        header_size: int = 4,
        byteorder: str = "big",
        timeout: float | None = 60,
        pool_size: int = 1,
        reconnect: bool = True,
        protocol: int | None = None,
    ) -> None:
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int of at least 1, not {pool_size!r}")
        if protocol is None:
            protocol = 2 if pool_size == 1 else 1
        elif protocol not in (1, 2):
            raise ValueError(f"protocol must be 1 or 2, not {protocol!r}")
        elif protocol == 2 and pool_size != 1:
            raise ValueError(
                "pool_size is for v1: protocol=2 sends every request on one connection"
                " (leave pool_size at 1, or pass protocol=1 to spread requests over v1 connections)"
            )
        self.host = host
        self.port = port
        self.timeout = timeout
        self.pool_size = pool_size
        self.reconnect = reconnect
        self._ssl = ssl_context if ssl_context is not None else _ssl.create_default_context() if tls else None
        self._core = ClientCore(encoding, header_size, byteorder, address=f"{host}:{port}")
        self._channels = [AsyncChannel(self._core.fresh()) for _ in range(pool_size)]
        self._free = deque(reversed(self._channels))  # the first connection is taken first
        self._slots = AsyncSemaphore(pool_size)
        self.protocol = protocol
        self._mux = AsyncMux.of(self) if protocol == 2 else None

    # -- requests ----------------------------------------------------------------------

    @overload
    async def request(
        self,
        obj: Sendable,
        encoding: str | None = None,
        *,
        reply: type[T],
        raise_errors: bool = False,
        timeout: float | None | Unset = UNSET,
    ) -> T: ...

    @overload
    async def request(
        self,
        obj: Sendable,
        encoding: str | None = None,
        *,
        reply: None = None,
        raise_errors: bool = False,
        timeout: float | None | Unset = UNSET,
    ) -> dict[str, Any]: ...

    async def request(
        self,
        obj: Sendable,
        encoding: str | None = None,
        *,
        reply: Any = None,
        raise_errors: bool = False,
        timeout: float | None | Unset = UNSET,
    ) -> Any:
        """Send ``obj`` and return its reply: the map, or with ``reply=Model`` a ``Model``.

        ``timeout``: seconds to wait for this reply (default: the client's ``timeout``),
        sent as the request's Deadline-Ms on v2.

        Raises:
            ErrorReply: the server answered with an error packet (with ``reply=``, or
                ``raise_errors=True``).
            ReplyValidationError: the reply is not a valid ``reply`` (``.reply`` is the map).
            ConnectionClosed, ClientTimeout, OSError: no reply came.
        """
        wait = self._wait_for(timeout)
        if self._mux is not None:
            frame = await self._mux.request(obj, encoding, wait)
            return read_reply(self._core.decode(frame), reply, raise_errors)
        data = self._core.frame(obj, encoding)
        channel = self._channels[0] if self.pool_size == 1 else await self._take()
        try:
            frame = await self._exchange(channel, data, wait)
        finally:
            if self.pool_size != 1:
                self._give_back(channel)
        return read_reply(self._core.decode(frame), reply, raise_errors)

    def _wait_for(self, timeout: float | None | Unset) -> float | None:
        """How long a request waits: ``timeout`` or the client's, cut to what the v2
        request being handled in this task has left (``ClientTimeout`` when nothing)."""
        wait = self.timeout if timeout is UNSET else timeout
        caller_deadline = REQUEST_DEADLINE.get()
        if caller_deadline is None:
            return wait
        return propagated_timeout(wait, caller_deadline, time.monotonic())  # the loop's clock

    async def _take(self) -> AsyncChannel:
        await self._slots.acquire()
        return self._free.pop()

    def _give_back(self, channel: AsyncChannel) -> None:
        self._free.append(channel)
        self._slots.release()

    async def _exchange(self, channel: AsyncChannel, data: bytes, timeout: float | None) -> Frame:
        """Send ``data`` and read one frame, holding the connection's turn throughout.

        A request written into a connection the server had already closed (its close
        was still on the way) is sent again once on a new connection, when TCP proves
        the server never read it (``clientcore.maybe_unread``).
        """
        async with channel.lock:
            while True:
                stream = await self._ready(channel, for_request=True)
                try:
                    await stream.write(data, timeout)
                    frame = await self._next_frame(channel, stream, timeout)
                except BaseException as exc:  # cancelled too: the reply may still come, so drop it
                    try:
                        again = self.reconnect and maybe_unread(channel.core, exc) and await stream.refused()
                    finally:
                        self._drop(channel, stream, f"a request on it ended with {type(exc).__name__}")
                    if again:
                        continue
                    raise
                return frame

    # -- packet-level calls ---------------------------------------------------------------

    async def connect(self) -> None:
        """Open the first connection now (``send`` and ``request`` do it when needed).

        With ``reconnect=False``, it is also what lets lost connections be replaced again.
        """
        if self._mux is not None:
            await self._mux.connect()
            return
        for channel in self._channels:
            channel.lost = None
        channel = self._channels[0]
        async with channel.lock:
            await self._ready(channel, for_request=False)

    async def send(self, obj: Sendable, encoding: str | None = None) -> None:
        """Send one packet."""
        await self.send_raw(self._core.frame(obj, encoding))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (to test a server's framing)."""
        channel = self._channels[0]
        async with channel.lock:
            stream = await self._ready(channel, for_request=False)
            await stream.write(data, self.timeout)

    async def receive_all(self) -> bytes:
        """The next whole packet, header included, as raw bytes."""
        return self._core.raw(await self._receive())

    async def receive(self) -> dict[str, Any]:
        """The next packet's map, error replies included."""
        return self._core.decode(await self._receive())

    def _mux_core(self, protocol: int) -> MuxCore:
        core = self._core
        return MuxCore(core.encoding, core.header_size, core.byteorder, protocol, core.max_packet_size)

    @overload
    def stream(
        self, obj: Sendable, encoding: str | None = None, *, item: type[T], timeout: float | None = None
    ) -> ItemStream[T]: ...

    @overload
    def stream(
        self, obj: Sendable, encoding: str | None = None, *, item: None = None, timeout: float | None = None
    ) -> ItemStream[dict[str, Any]]: ...

    def stream(
        self, obj: Sendable, encoding: str | None = None, *, item: Any = None, timeout: float | None = None
    ) -> ItemStream[Any]:
        """With ``protocol=2``: send ``obj`` to a streaming handler and iterate over its items
        (the maps, or with ``item=Model`` each a ``Model``); the request goes out on the
        first iteration. ``timeout``: the whole stream's deadline (None: none).

        Leaving the loop early (``break``) sends a CANCEL and keeps the connection; so do
        ``aclose()`` and leaving ``async with client.stream(...) as ticks``. An error that
        ends the stream raises ``ErrorReply``. v1 marks no end of a stream: against a
        server that speaks only v1, iterating raises ``ClientError``.

        Example:
            async for tick in client.stream(Watch(symbol="ACME"), item=Tick):
                print(tick.price)
        """
        if self._mux is None:
            raise ValueError("stream() reads v2 ITEM and END frames: make the client with protocol=2")
        return ItemStream(self._mux.stream(obj, encoding, timeout), self._core.decode, item)

    async def pushed(self) -> AsyncIterator[dict[str, Any]]:
        """On v2: the packets the server sent that answer no request, as they come; ends
        when the client is closed. After a fallback to v1, the v1 packets no request
        asked for.

        Raises:
            ValueError: the client speaks v1 (``protocol=1`` or ``pool_size`` > 1), where
                ``receive()`` reads every packet.

        Example:
            async for news in client.pushed():
                ...
        """
        if self._mux is None:
            raise ValueError(
                "pushed() reads v2 PUSH frames and this client speaks v1 (protocol=1 or pool_size > 1):"
                " make it with protocol=2, or read packets with receive()"
            )
        async for payload in self._mux.pushed():
            yield payload

    async def close(self) -> None:
        """Close every connection (the next call opens a new one)."""
        if self._mux is not None:
            await self._mux.close()
        for channel in self._channels:
            stream, channel.stream, channel.lost = channel.stream, None, None
            if stream is not None:
                await stream.close()

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the connection under a call ----------------------------------------------------

    async def _open_stream(self) -> AsyncByteStream:
        return await AsyncStream.open(self.host, self.port, self._ssl, self.timeout)

    async def _ready(self, channel: AsyncChannel, for_request: bool) -> AsyncByteStream:
        """The channel's stream, (re)opened when needed.

        A request needs a connection in step: one the server closed, or on which bytes
        arrived that no one asked for, is dropped and replaced.
        """
        stream = channel.stream
        if stream is not None:
            data = await stream.poll()
            if data is not None:
                channel.core.receive_data(data)
            if channel.core.eof:
                self._drop(channel, stream, "the server closed the connection")
                stream = None
            elif for_request and not channel.core.idle:
                self._drop(channel, stream, "the server sent a packet no request asked for")
                stream = None
        if stream is None:
            if channel.lost is not None and not self.reconnect:
                raise ConnectionClosed(f"{channel.lost} ({self._core.address}, reconnect=False; connect() opens a new one)")
            stream = await self._open_stream()
            channel.stream, channel.core, channel.lost = stream, channel.core.fresh(), None
        return stream

    def _drop(self, channel: AsyncChannel, stream: AsyncByteStream, why: str) -> None:
        stream.abort()
        if channel.stream is stream:
            channel.stream, channel.lost = None, why

    async def _receive(self) -> Frame:
        channel = self._channels[0]
        async with channel.lock:
            stream = channel.stream
            if stream is None:
                stream = await self._ready(channel, for_request=False)
            return await self._next_frame(channel, stream, self.timeout)

    async def _next_frame(self, channel: AsyncChannel, stream: AsyncByteStream, timeout: float | None) -> Frame:
        core = channel.core
        frame = core.next_frame()
        if frame is not None:
            return frame
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = await stream.read(None if deadline is None else deadline - time.monotonic())
            if data is None:
                raise ClientTimeout(f"no reply from {core.address} within {timeout} seconds")
            frame = core.receive_frame(data)
            if frame is not None:
                return frame
