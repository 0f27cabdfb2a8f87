"""An in-memory ``asyncio.Transport``: the server's ``Connection`` runs on it unchanged.

Bytes reach the server on a later turn of the event loop, outside any task, as a
socket's do: so the connection steps handlers eagerly here as it does when serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


class MemoryTransport(asyncio.Transport):
    """The server end of an in-memory connection.

    What the server writes goes to ``on_write``; ``feed`` and ``feed_eof`` play the
    client's side, honouring ``pause_reading`` the way a socket transport does.
    """

    def __init__(
        self,
        protocol: asyncio.Protocol,
        extra: dict[str, Any],
        on_write: Callable[[bytes], None],
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(extra)
        self._protocol = protocol
        self._on_write = on_write
        self._on_close = on_close
        self._closing = False
        self._reading = True
        self._held: list[bytes] = []

    # -- what the server's Connection calls --------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._on_write(bytes(data))

    def close(self) -> None:
        """Close like a socket transport: ``connection_lost`` comes on a later loop turn."""
        if self._closing:
            return
        self._closing = True
        self._on_close()
        asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True
        held, self._held = self._held, []
        for data in held:
            self.feed(data)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """The gate hands the transport to the connection (``asyncapy.gate``)."""
        self._protocol = protocol  # type: ignore[assignment]

    # -- the client's side -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the client; held back while reading is paused, dropped once closed."""
        if self._closing:
            return
        if not self._reading:
            self._held.append(data)
            return
        self._protocol.data_received(data)

    def deliver(self, data: bytes) -> None:
        """``feed`` on the loop's next turn, outside the caller's task (as a socket's read comes)."""
        asyncio.get_running_loop().call_soon(self.feed, data)

    def feed_eof(self) -> None:
        """The client closed its end; the server closes too unless it keeps writing."""
        if self._closing:
            return
        if not self._protocol.eof_received():
            self.close()


class MemoryStream:
    """The client end of an in-memory connection: an ``AsyncByteStream`` for ``AsyncClient``.

    Opening one makes the server's real ``Connection`` on a ``MemoryTransport``.
    """

    def __init__(self, connection: asyncio.Protocol, extra: dict[str, Any]) -> None:
        self.connection = connection
        self.reset = False  # a closed in-memory connection is seen at once: no request goes into it
        self.transport = MemoryTransport(connection, extra, self._on_write, self._on_close)
        self._chunks: list[bytes] = []
        self._eof = False
        self._arrived = asyncio.Event()
        connection.connection_made(self.transport)

    def _on_write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._arrived.set()

    def _on_close(self) -> None:
        self._eof = True
        self._arrived.set()

    @property
    def protocol(self) -> asyncio.BaseProtocol:
        """The server's protocol of this connection now (the connection, once a gate let it through)."""
        return self.transport.get_protocol()

    async def write(self, data: bytes, timeout: float | None) -> None:
        self.transport.deliver(data)  # dropped once the server closed, as a socket would

    async def read(self, timeout: float | None) -> bytes | None:
        if not self._chunks and not self._eof:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        chunks, self._chunks = self._chunks, []
        return b"".join(chunks)

    async def poll(self) -> bytes | None:
        await asyncio.sleep(0)
        if self._chunks or self._eof:
            return await self.read(0)
        return None

    async def wait_for_data_or(self, other: Awaitable[Any], timeout: float | None) -> bool:
        """Wait until bytes arrive or ``other`` finished (the test client's streams); False
        when ``timeout`` passed first."""
        if self._chunks or self._eof:
            return True
        self._arrived.clear()
        waiters = {asyncio.ensure_future(self._arrived.wait()), asyncio.ensure_future(other)}
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            return bool(done)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def refused(self) -> bool:
        return False  # the server's close is seen before a request is sent into it

    def abort(self) -> None:
        self.transport.close()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(self._eof_then, done)  # after the bytes written before it
        await done
        await asyncio.sleep(0)  # let connection_lost run, as after a socket close

    def _eof_then(self, done: asyncio.Future[None]) -> None:
        self.transport.feed_eof()
        done.set_result(None)
