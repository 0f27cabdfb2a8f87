"""``AsyncTestClient``: the server's real connection code, driven in memory."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from ..client import ClientCore, Sendable, check_reply
from ..connection import Connection, ServingContext
from ..errors import ClientTimeout
from ..protocol import Frame
from ..server import Server
from ._recording import CallLog, Handler, recording_plan
from ._transport import MemoryTransport

_fake_ports = itertools.count(50000)


class _Link:
    """One in-memory connection: the server's ``Connection`` and the client's core."""

    def __init__(self, ctx: ServingContext, peer: tuple[str, int], sockname: tuple[str, int], core: ClientCore) -> None:
        self.core = core
        self.arrived = asyncio.Event()
        self.connection = Connection(ctx)
        extra = {"peername": peer, "sockname": sockname}
        self.transport = MemoryTransport(self.connection, extra, self._on_write, self._on_close)
        self.connection.connection_made(self.transport)

    def _on_write(self, data: bytes) -> None:
        self.core.receive_data(data)
        self.arrived.set()

    def _on_close(self) -> None:
        self.core.receive_data(b"")
        self.arrived.set()


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
        timeout: seconds ``receive()`` waits before raising ``ClientTimeout``.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, server: Server, *, address: str = "127.0.0.1", encoding: str = "json", timeout: float = 5.0) -> None:
        self.server = server
        self.address = address
        self.encoding = encoding
        self.timeout = timeout
        self._log = CallLog()
        self._ctx: ServingContext | None = None
        self._link: _Link | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> AsyncTestClient:
        if self._ctx is not None:
            raise RuntimeError("this test client is already running")
        self.server.compile()  # the same registration checks and freeze as serving
        plan = recording_plan(self.server.router, self._log)
        await self.server._begin_lifespan()  # the lifespan, then setup()
        self._ctx = self.server._serving_context(plan)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        await self.close()
        await _finish(ctx, self.server.shutdown_timeout)
        await self.server._end_lifespan()  # shutdown(), then the rest of the lifespan

    # -- the client methods -------------------------------------------------------------

    async def connect(self) -> None:
        """Open a connection (``send`` and ``request`` do it when needed)."""
        if self._link is not None:
            return
        if self._ctx is None:
            raise RuntimeError("use the test client as `async with AsyncTestClient(server) as client:`")
        core = ClientCore(self.encoding, self.server.header_size, self.server.byteorder)
        peer = (self.address, next(_fake_ports))
        self._link = _Link(self._ctx, peer, (self.server.addr, self.server.port), core)

    async def send(self, obj: Sendable, encoding: str | None = None) -> None:
        """Send one packet."""
        link = await self._connected()
        link.transport.feed(link.core.frame(obj, encoding))

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are, to test framing errors."""
        link = await self._connected()
        link.transport.feed(data)

    async def receive_all(self) -> bytes:
        """The next whole packet, header included, as raw bytes."""
        link = await self._connected()
        return link.core.raw(await self._next_frame(link))

    async def receive(self) -> dict[str, Any]:
        """The next reply, decoded."""
        link = await self._connected()
        return link.core.decode(await self._next_frame(link))

    async def request(
        self, obj: Sendable, encoding: str | None = None, *, raise_errors: bool = False
    ) -> dict[str, Any]:
        """Send ``obj`` and return the reply; ``raise_errors`` turns error packets into ``ErrorReply``."""
        await self.send(obj, encoding)
        reply = await self.receive()
        return check_reply(reply) if raise_errors else reply

    async def close(self) -> None:
        """Close this connection as a client would; the next ``send`` opens a new one."""
        link, self._link = self._link, None
        if link is not None:
            link.transport.feed_eof()
            await asyncio.sleep(0)  # let connection_lost run, as after a socket close

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
        return self._link.connection if self._link is not None else None

    # -- helpers -------------------------------------------------------------------------

    async def _connected(self) -> _Link:
        if self._link is None:
            await self.connect()
        assert self._link is not None
        return self._link

    async def _next_frame(self, link: _Link) -> Frame:
        while True:
            frame = link.core.next_frame()
            if frame is not None:
                return frame
            link.arrived.clear()
            try:
                await asyncio.wait_for(link.arrived.wait(), self.timeout)
            except asyncio.TimeoutError:
                raise ClientTimeout(f"no reply within {self.timeout} seconds") from None


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
    ctx.hosts.close()
    if ctx.sweeper is not None:
        ctx.sweeper.cancel()
        ctx.sweeper = None
