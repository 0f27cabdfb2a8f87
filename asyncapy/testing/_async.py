"""``AsyncTestClient``: the server's real connection code, driven in memory."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from pydantic import ValidationError

from ..client import AsyncClient, Sendable, check_reply
from ..client.clientcore import UNSET, Unset, validator
from ..wire.errors import ClientTimeout, ReplyValidationError
from ..serve.connection import Connection, ServingContext
from ..server import Server
from ._recording import CallLog, Handler, recording_plan
from ._transport import MemoryStream

T = TypeVar("T")

_fake_ports = itertools.count(50000)


class _MemoryClient(AsyncClient):
    """An ``AsyncClient`` whose connections are the server's own ``Connection``, in memory."""

    def __init__(self, owner: AsyncTestClient, encoding: str, timeout: float, protocol: int) -> None:
        server = owner.server
        super().__init__(
            owner.address, server.port, encoding=encoding, header_size=server.header_size,
            byteorder=server.byteorder, timeout=timeout, protocol=protocol,
        )
        self._owner = owner

    async def _open_stream(self) -> MemoryStream:
        ctx = self._owner._ctx
        if ctx is None:
            raise RuntimeError("use the test client as `async with AsyncTestClient(server) as client:`")
        server = self._owner.server
        extra = {"peername": (self._owner.address, next(_fake_ports)), "sockname": (server.addr, server.port)}
        return MemoryStream(ctx.protocol_factory()(), extra)  # the served pipeline, gate included

    @property
    def memory_stream(self) -> MemoryStream | None:
        stream = self._channels[0].stream
        assert stream is None or isinstance(stream, MemoryStream)
        return stream


class AsyncTestClient:
    """Talk to ``server`` without sockets: framing, codecs, sessions, routing and error
    replies are the production code, only the transport is in memory.

    Use it as ``async with AsyncTestClient(server) as client:``; entering runs the
    server's ``setup()``, leaving waits for running handlers and runs ``shutdown()``.
    The methods are those of ``asyncapy.client.AsyncClient``; ``calls`` records what
    each handler received.

    Args:
        server: the server under test (its routes are compiled on entry).
        address: the peer address handlers see as ``client.address``.
        encoding: the default encoding of sent packets, "json" or "ziproto".
        timeout: seconds ``receive()`` and ``request()`` wait before raising ``ClientTimeout``.
        protocol: 2 (the default) speaks AsyncAProto v2, as ``AsyncClient`` does: requests
            run concurrently on one connection, ``pushed()`` reads pushed packets;
            ``send``/``receive`` use a v1 connection of their own. 1: v1 for everything,
            all on one connection (a session shared by ``send`` and ``request``).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self, server: Server, *, address: str = "127.0.0.1", encoding: str = "json", timeout: float = 5.0, protocol: int = 2
    ) -> None:
        self.server = server
        self.address = address
        self.encoding = encoding
        self._log = CallLog()
        self._ctx: ServingContext | None = None
        self._client = _MemoryClient(self, encoding, timeout, protocol)

    @property
    def protocol(self) -> int:
        """1 or 2: the version ``request()`` speaks."""
        return self._client.protocol

    @property
    def timeout(self) -> float:
        """Seconds a reply is waited for (settable)."""
        timeout = self._client.timeout
        assert timeout is not None
        return timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._client.timeout = seconds

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> AsyncTestClient:
        if self._ctx is not None:
            raise RuntimeError("this test client is already running")
        self.server.compile()  # the same registration checks and freeze as serving
        plan = recording_plan(self.server.router, self._log)
        await self.server._begin_lifespan()  # the lifespan, then setup()
        observer = self.server._observer()  # the access log and metrics, as when serving
        self._ctx = self.server._serving_context(plan, observer, behind_proxy=False)  # address= is the client's
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        await self.close()
        await _finish(ctx, self.server.shutdown_timeout)
        self.server._stop_observing()
        await self.server._end_lifespan()  # shutdown(), then the rest of the lifespan

    # -- the client methods (those of ``AsyncClient``) ----------------------------------

    async def connect(self) -> None:
        """Open a connection (``send`` and ``request`` do it when needed)."""
        await self._client.connect()

    async def send(self, obj: Sendable, encoding: str | None = None) -> None:
        """Send one packet."""
        await self._client.send(obj, encoding)

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are, to test framing errors."""
        await self._client.send_raw(data)

    async def receive_all(self) -> bytes:
        """The next whole packet, header included, as raw bytes."""
        return await self._client.receive_all()

    async def receive(self) -> dict[str, Any]:
        """The next reply, decoded."""
        return await self._client.receive()

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
        """Send ``obj`` and return its reply: the map, or with ``reply=Model`` a ``Model``
        (see ``AsyncClient.request``); concurrent requests run at once on v2, take turns on v1."""
        return await self._client.request(obj, encoding, reply=reply, raise_errors=raise_errors, timeout=timeout)

    async def pushed(self) -> AsyncIterator[dict[str, Any]]:
        """On v2, the packets the server pushed, as they come (see ``AsyncClient.pushed``)."""
        async for payload in self._client.pushed():
            yield payload

    @overload
    def stream(self, obj: Sendable, encoding: str | None = None, *, item: type[T]) -> AsyncIterator[T]: ...

    @overload
    def stream(self, obj: Sendable, encoding: str | None = None, *, item: None = None) -> AsyncIterator[dict[str, Any]]: ...

    async def stream(self, obj: Sendable, encoding: str | None = None, *, item: Any = None) -> AsyncIterator[Any]:
        """Send ``obj`` to a streaming handler and iterate over its items (the maps, or each
        an ``item``), as ``AsyncClient.stream`` does.

        On v2 (the default) it is ``AsyncClient.stream``. On v1 nothing marks the end of
        a stream: it ends when the server's connection has handled the request and every
        packet it sent was read. An error packet ends it with ``ErrorReply``.
        """
        client = self._client
        if client._mux is not None:  # v2: ITEM frames, then one END
            async for received in client.stream(obj, encoding, item=item):
                yield received
            return
        await client.send(obj, encoding)
        validate = None if item is None else validator(item)
        while True:
            payload = await self._next_streamed()
            if payload is None:
                return
            check_reply(payload)
            if validate is None:
                yield payload
                continue
            try:
                yield validate(payload)
            except ValidationError as exc:
                raise ReplyValidationError(payload, item, exc) from exc

    async def _next_streamed(self) -> dict[str, Any] | None:
        """The next packet of a v1 stream, or None once the server handled it and nothing is left."""
        client = self._client
        channel = client._channels[0]
        for _ in range(1_000_000):  # each turn either reads or waits (bounded by the timeout)
            frame = channel.core.next_frame()
            if frame is not None:
                return client._core.decode(frame)
            memory = client.memory_stream
            conn = self.connection
            if memory is None or conn is None:
                return None
            data = await memory.poll()  # a loop turn: what the server was handed runs first
            if data:
                channel.core.receive_data(data)
                continue
            if not conn.busy:
                return None
            if not await memory.wait_for_data_or(conn.wait_idle(), self.timeout):
                raise ClientTimeout(f"no item within {self.timeout} seconds")
        raise ClientTimeout("the stream did not end")

    async def close(self) -> None:
        """Close this connection as a client would; the next ``send`` opens a new one."""
        await self._client.close()

    # -- inspection ------------------------------------------------------------------------

    @property
    def calls(self) -> Mapping[str, list[Any]]:
        """Handler name -> what each of its calls received (the packet or the model)."""
        return self._log.by_name

    def calls_of(self, handler: Handler) -> list[Any]:
        """What each call of ``handler`` received, oldest first."""
        return self._log.of(handler)

    def reset_calls(self) -> None:
        self._log.clear()

    @property
    def connection(self) -> Connection | None:
        """The server-side ``Connection`` of the open connection, if any."""
        stream = self._client.memory_stream
        if stream is None:
            return None
        protocol = stream.protocol
        return protocol if isinstance(protocol, Connection) else None


async def _finish(ctx: ServingContext, timeout: float) -> None:
    """Let running handlers finish (up to ``timeout``), then close what is left, as ``Server.stop``."""
    busy = [c.wait_idle() for c in ctx.connections if c.busy]
    if busy:
        try:
            await asyncio.wait_for(asyncio.gather(*busy, return_exceptions=True), timeout or None)
        except asyncio.TimeoutError:
            pass
    for conn in list(ctx.connections):
        conn.close()
    await asyncio.sleep(0)
    ctx.close_hosts()
    if ctx.sweeper is not None:
        ctx.sweeper.cancel()
        ctx.sweeper = None
