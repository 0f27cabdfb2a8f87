"""The blocking ``Client``'s v2 connection: an ``AsyncMux`` on an event loop the client owns.

A v2 connection has one reader for many waiters, whatever thread each waits in. Rather
than a second multiplexer written for threads (and a TLS socket read in one thread while
others write into it, which OpenSSL does not allow), ``SyncMux`` runs the asyncio one,
``_async_mux.AsyncMux``, on a loop in a daemon thread of its own, started with the
first request and ended (joined) by ``close``. Each blocking call hands its request to
that loop and waits for the answer: the Stream-Ids, CANCEL when a timeout passes, the
fallback to v1 and the retries are the asyncio client's, line for line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl as _ssl
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Protocol, TypeVar

from ._async_mux import AsyncMux
from ._streams import AsyncByteStream, AsyncStream
from .clientcore import ClientCore, Sendable
from .clientmux import MuxCore
from ..wire.errors import ConnectionClosed
from ..wire.protocol import Frame

T = TypeVar("T")

#: Seconds ``close`` waits for the loop thread to end (it ends at once unless a write hangs).
STOP_WAIT = 10.0


class MuxOwner(Protocol):
    """What ``SyncMux.of`` reads of the blocking client."""

    host: str
    port: int
    timeout: float | None
    reconnect: bool
    _ssl: _ssl.SSLContext | None
    _core: ClientCore


class _LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="asyncapy-client-v2", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        """Stop the loop and wait for its thread (not from the thread itself)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(STOP_WAIT)
            if not self.thread.is_alive():
                self.loop.close()


def _wait(future: concurrent.futures.Future[T]) -> T:
    """The result of ``future``; a waiter interrupted (KeyboardInterrupt) cancels it, which sends a CANCEL."""
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


class SyncMux:
    """``AsyncMux`` behind blocking calls; safe to call from many threads at once.

    Args:
        open_stream: opens a new (asyncio) connection to the server, on the mux's loop.
        make_core: a fresh ``MuxCore`` speaking the given protocol.
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
        self._lock = threading.Lock()
        self._thread: _LoopThread | None = None
        self._mux: AsyncMux | None = None
        #: Kept across ``close``: 1 once the server proved it speaks v1 only.
        self._protocol = 2

    @classmethod
    def of(cls, client: MuxOwner) -> SyncMux:
        """The mux of a blocking client (it holds no reference to the client, so an
        unclosed client can be collected, and its loop thread then stops)."""
        host, port, ssl, timeout = client.host, client.port, client._ssl, client.timeout
        core = client._core
        settings = (core.encoding, core.header_size, core.byteorder)
        max_size = core.max_packet_size

        def open_stream() -> Awaitable[AsyncByteStream]:
            return AsyncStream.open(host, port, ssl, timeout)

        def make_core(protocol: int) -> MuxCore:
            return MuxCore(*settings, protocol, max_size)

        return cls(open_stream, make_core, timeout, client.reconnect)

    @property
    def protocol(self) -> int:
        """2, or 1 once a server answered v2 with a v1 ERR_HEADER_INVALID."""
        return self._mux.protocol if self._mux is not None else self._protocol

    def _started(self) -> tuple[_LoopThread, AsyncMux]:
        with self._lock:
            thread, mux = self._thread, self._mux
            if thread is None or mux is None:
                thread = _LoopThread()
                mux = thread.submit(self._new_mux()).result()
                self._thread, self._mux = thread, mux
                weakref.finalize(self, thread.stop)
            return thread, mux

    async def _new_mux(self) -> AsyncMux:
        mux = AsyncMux(self._open_stream, self._make_core, self._timeout, self._reconnect)
        mux.protocol = self._protocol
        return mux

    def request(self, obj: Sendable, encoding: str | None, timeout: float | None) -> Frame:
        """Send ``obj`` and wait for its answer; see ``AsyncMux.request``."""
        thread, mux = self._started()
        return _wait(thread.submit(mux.request(obj, encoding, timeout)))

    def connect(self) -> None:
        """Open the connection now (``request`` does it when needed)."""
        thread, mux = self._started()
        _wait(thread.submit(mux.connect()))

    def pushed(self) -> Iterator[dict[str, Any]]:
        """The maps the server pushed, as they come; ends when the client is closed."""
        thread, mux = self._started()
        packets = mux.pushed()
        while True:
            try:
                yield _wait(thread.submit(_next(packets)))
            except StopAsyncIteration:
                return
            except (ConnectionClosed, RuntimeError):  # the loop was stopped under it
                if thread.loop.is_closed() or not thread.thread.is_alive():
                    return
                raise

    def close(self) -> None:
        """Close the connection and end the loop thread; the next request starts them again."""
        with self._lock:
            thread, mux, self._thread, self._mux = self._thread, self._mux, None, None
        if thread is None or mux is None:
            return
        self._protocol = mux.protocol
        try:
            thread.submit(mux.close()).result(STOP_WAIT)
        finally:
            thread.stop()


async def _next(packets: Any) -> dict[str, Any]:
    value: dict[str, Any] = await packets.__anext__()
    return value
