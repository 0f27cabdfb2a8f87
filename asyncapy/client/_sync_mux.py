"""The blocking ``Client``'s v2 connection: an ``AsyncMux`` on an event loop the client owns.

A v2 connection has one reader for many waiters, whatever thread each waits in. Rather
than a second multiplexer written for threads (and a TLS socket read in one thread while
others write into it, which OpenSSL does not allow), ``SyncMux`` runs the asyncio one,
``_async_mux.AsyncMux``, on a loop in a daemon thread of its own, started with the
first request and ended (joined) by ``close``. Each blocking call hands its request to
that loop and waits for the answer: the Stream-Ids, CANCEL when a timeout passes, the
fallback to v1 and the retries are the asyncio client's, line for line.

``stream`` is the same: ``SyncItemStream`` drives an ``ItemStream`` on that loop, one
item per blocking ``next()``; closing it (or dropping it after a ``break``) hands the
CANCEL to the loop without waiting for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl as _ssl
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from ._async_mux import AsyncMux, ItemStream, MuxStream
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

    def stream(self, obj: Sendable, encoding: str | None, timeout: float | None) -> SyncFrames:
        """A request answered by a stream, on the loop thread; see ``AsyncMux.stream``."""
        thread, mux = self._started()
        return SyncFrames(thread, mux.stream(obj, encoding, timeout))

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


class SyncFrames:
    """A ``MuxStream`` and the loop thread it runs on (what ``SyncMux.stream`` returns)."""

    def __init__(self, thread: _LoopThread, frames: MuxStream) -> None:
        self.thread = thread
        self.frames = frames


class SyncItemStream(Generic[T]):
    """What the blocking ``Client.stream`` returns: the items of a streamed answer, each a ``T``.

    ``for tick in client.stream(Watch(symbol="ACME"), item=Tick)``; leaving the loop early
    (``break``, an exception), ``close()`` or leaving ``with`` sends a CANCEL and keeps the
    connection.

    Raises (while iterating):
        ErrorReply: the stream ended with an error (its code), or the request was refused.
        ReplyValidationError: an item is not a valid ``T``.
        ConnectionClosed: the connection was lost before the end, or the client was closed.
    """

    _done = True  # until ``__init__`` finished (``__del__`` runs even when it raised)

    def __init__(self, frames: SyncFrames, decode: Any, item: Any) -> None:
        self._thread = frames.thread
        self._items: ItemStream[T] = ItemStream(frames.frames, decode, item)
        self._done = False

    def __iter__(self) -> SyncItemStream[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        if self._thread.loop.is_closed():
            self._done = True
            raise ConnectionClosed("the client was closed")
        try:
            return _wait(self._thread.submit(_next_item(self._items)))
        except StopAsyncIteration:
            self._done = True
            raise StopIteration from None
        except BaseException:  # an error END, a bad item, an interrupted wait: nothing more to read
            self.close()
            raise

    def close(self) -> None:
        """Stop reading; a stream still running is cancelled (CANCEL), the connection stays."""
        if self._done:
            return
        self._done = True
        try:  # on the loop's thread, which owns the connection; not waited for (``__del__`` calls it too)
            self._thread.loop.call_soon_threadsafe(self._items.cancel)
        except RuntimeError:  # the client was closed: its loop with it, and the stream
            pass

    def __enter__(self) -> SyncItemStream[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()  # left early (``break``): CANCEL it


async def _next_item(items: ItemStream[T]) -> T:
    return await items.__anext__()


async def _next(packets: Any) -> dict[str, Any]:
    value: dict[str, Any] = await packets.__anext__()
    return value
