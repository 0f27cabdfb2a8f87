"""The I/O under the clients: a byte stream and locks, in an asyncio and a blocking kind.

``asyncapy/client/_async_client.py`` is written against ``AsyncStream``, ``AsyncLock`` and
``AsyncSemaphore``; ``scripts/unasync.py`` turns it into ``_sync_client.py``, written
against ``SyncStream``, ``Lock`` and ``Semaphore``. Both kinds of stream have the same
methods, and nothing else differs between the two clients.

A stream's ``read`` returns the bytes at hand (waiting for some), ``b""`` once the
server closed the connection, and ``None`` when ``timeout`` passed first.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl as _ssl
import threading
import time
from typing import Protocol

from .clientcore import connect_error
from ..wire.errors import ClientTimeout, ConnectionClosed

AsyncLock = asyncio.Lock
AsyncSemaphore = asyncio.Semaphore
Lock = threading.Lock
Semaphore = threading.Semaphore

#: Bytes asked of the socket per read: a whole burst of pipelined replies in one call.
READ_SIZE = 64 * 1024
#: Seconds to wait, after a close, for the reset proving a request was never read. A
#: loopback reset comes within microseconds, a LAN one within a round trip; only a request
#: on a closed connection waits this long, and only before it raises ``ConnectionClosed``.
REFUSAL_WAIT = 0.1
_REFUSAL_STEP = 0.001


class AsyncByteStream(Protocol):
    """What the asyncio client needs of a connection (a socket, or memory in tests).

    ``reset`` becomes true when the server's end refused data it never read (TCP said
    so with a reset): a request written into such a connection was not received.
    """

    reset: bool

    async def write(self, data: bytes, timeout: float | None) -> None:
        """Send ``data``; ``ConnectionClosed`` when the connection is gone."""

    async def read(self, timeout: float | None) -> bytes | None:
        """The bytes at hand, waiting for some; ``b""`` once closed, ``None`` after ``timeout``."""

    async def poll(self) -> bytes | None:
        """What arrived already, without waiting: bytes, ``b""`` once closed, else ``None``."""

    async def refused(self) -> bool:
        """After the server closed: whether it refused data it never read (a TCP reset),
        waiting up to ``REFUSAL_WAIT`` for the reset to come."""

    def abort(self) -> None:
        """Drop the connection now."""

    async def close(self) -> None:
        """Close the connection."""


class ByteStream(Protocol):
    """What the blocking client needs of a connection: ``AsyncByteStream``, not awaited."""

    reset: bool

    def write(self, data: bytes, timeout: float | None) -> None: ...

    def read(self, timeout: float | None) -> bytes | None: ...

    def poll(self) -> bytes | None: ...

    def refused(self) -> bool: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


class AsyncStream(asyncio.Protocol):
    """An asyncio connection, read through one waiter (no ``StreamReader`` in between)."""

    def __init__(self, address: str = "") -> None:
        self.address = address
        self.reset = False
        self._fd = -1
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._eof = False
        self._waiter: asyncio.Future[bool] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    @classmethod
    async def open(cls, host: str, port: int, ssl: _ssl.SSLContext | None, timeout: float | None) -> AsyncStream:
        """Connect to ``host:port``, in TLS when ``ssl`` is given."""
        address = f"{host}:{port}"
        loop = asyncio.get_running_loop()
        connecting = loop.create_connection(lambda: cls(address), host, port, ssl=ssl)
        try:
            _, stream = await asyncio.wait_for(connecting, timeout)
        except asyncio.TimeoutError:
            raise ClientTimeout(f"connecting to {address} timed out") from None
        except OSError as exc:
            raise connect_error(exc, address) from None
        return stream

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep the socket (the client drops it) so that ``refused`` can still ask it; TLS
        # transports close on EOF whatever is returned.
        return self._transport is not None and self._transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
            self.reset = True
        self._eof = True
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- what the client calls -------------------------------------------------------

    async def write(self, data: bytes, timeout: float | None) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"the connection to {self.address} is closed")
        transport.write(data)
        if self._paused:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except asyncio.TimeoutError:
                raise ClientTimeout(f"sending to {self.address} timed out") from None

    async def read(self, timeout: float | None) -> bytes | None:
        if not self._chunks and not self._eof:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None if timeout is None else loop.call_later(max(timeout, 0), _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not waiter.result():
                return None
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    async def poll(self) -> bytes | None:
        """What arrived already: bytes, ``b""`` once closed, else ``None``.

        Bytes or a close that reached the socket but not yet the loop count: the loop
        gets a turn to read them (one ``select`` tells, so an idle connection costs no
        turn). A close still on the wire when a request is written into the connection
        makes the server refuse it with a TCP reset, and the client sends it again
        (``clientcore.maybe_unread``).
        """
        if not (self._chunks or self._eof) and self._fd >= 0 and select.select([self._fd], [], [], 0)[0]:
            for _ in range(2):  # the loop reads it on its next turn, or the one after
                await asyncio.sleep(0)
                if self._chunks or self._eof:
                    break
        transport = self._transport
        if transport is not None and (transport.is_closing() or not transport.is_reading()):
            self._eof = True  # the client never pauses reading: a TLS close_notify did (Python 3.10)
        if self._chunks or self._eof:
            return await self.read(0)
        return None

    async def refused(self) -> bool:
        waited = 0.0
        while not self.reset:
            if _socket_error(self._transport) != 0:
                self.reset = True
            elif waited >= REFUSAL_WAIT:
                break
            else:
                await asyncio.sleep(_REFUSAL_STEP)
                waited += _REFUSAL_STEP
        return self.reset

    def abort(self) -> None:
        """Drop the connection now (a request on it was abandoned)."""
        if self._transport is not None:
            self._transport.abort()

    async def close(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()
            await asyncio.sleep(0)  # connection_lost runs on the next loop turn

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)


def _socket_error(transport: asyncio.BaseTransport | None) -> int:
    """The pending error of the socket under ``transport`` (EPIPE/ECONNRESET after a reset)."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
    except OSError:
        return 0


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class SyncStream:
    """A blocking socket, with the methods of ``AsyncStream``."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self._sock = sock
        self.address = address
        self.reset = False

    @classmethod
    def open(cls, host: str, port: int, ssl: _ssl.SSLContext | None, timeout: float | None) -> SyncStream:
        """Connect to ``host:port``, in TLS when ``ssl`` is given."""
        address = f"{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout:
            raise ClientTimeout(f"connecting to {address} timed out") from None
        except OSError as exc:
            raise connect_error(exc, address) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl is not None:
                sock = ssl.wrap_socket(sock, server_hostname=host)
        except socket.timeout:
            sock.close()
            raise ClientTimeout(f"the TLS handshake with {address} timed out") from None
        except OSError as exc:
            sock.close()
            raise connect_error(exc, address) from None
        return cls(sock, address)

    def write(self, data: bytes, timeout: float | None) -> None:
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(data)
        except socket.timeout:
            raise ClientTimeout(f"sending to {self.address} timed out") from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.reset = True
            raise ConnectionClosed(f"the server {self.address} closed the connection: {exc}") from None

    def read(self, timeout: float | None) -> bytes | None:
        sock = self._sock
        sock.settimeout(None if timeout is None else max(timeout, 1e-6))
        try:
            data = sock.recv(READ_SIZE)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            self.reset = True
            return b""
        except _ssl.SSLEOFError:
            return b""
        return data

    def poll(self) -> bytes | None:
        """What arrived already: bytes, ``b""`` once closed, else ``None``."""
        sock = self._sock
        pending = isinstance(sock, _ssl.SSLSocket) and sock.pending() > 0
        if not pending and not select.select([sock], [], [], 0)[0]:
            return None
        sock.settimeout(0)
        try:
            return sock.recv(READ_SIZE)
        except (BlockingIOError, _ssl.SSLWantReadError):
            return None  # a TLS record with no data in it (a session ticket)
        except (ConnectionResetError, BrokenPipeError, _ssl.SSLEOFError):
            return b""

    def refused(self) -> bool:
        waited = 0.0
        while not self.reset:
            try:
                error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError:
                break
            if error:
                self.reset = True
            elif waited >= REFUSAL_WAIT:
                break
            else:
                time.sleep(_REFUSAL_STEP)
                waited += _REFUSAL_STEP
        return self.reset

    def abort(self) -> None:
        self._sock.close()

    def close(self) -> None:
        self._sock.close()
