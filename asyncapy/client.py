"""Clients for AsyncAProto servers: blocking ``Client`` and ``AsyncClient``.

Both are thin shells over ``ClientCore``, which does no I/O: it turns objects into
frames and received bytes into replies. The shells only move bytes, so they behave
alike line for line.

Errors: ``ConnectionClosed`` when the server closes before a whole reply arrives,
``ClientTimeout`` when no reply comes within ``timeout`` seconds, ``HeaderInvalid`` /
``PayloadTooLarge`` / ``RequestMalformed`` when the server's bytes break the protocol,
and ``ErrorReply`` from ``request(..., raise_errors=True)`` for an error packet.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from pydantic import BaseModel

from .codecs import CODECS, DecodeError, get_codec
from .errors import (
    ClientTimeout,
    ConnectionClosed,
    ErrorReply,
    HeaderInvalid,
    PayloadTooLarge,
    ProtocolError,
    RequestMalformed,
)
from .packet import Packet
from .peer import encode_payload
from .protocol import (
    CLIENT_MAX_PACKET_SIZE,
    NEED_DATA,
    Frame,
    FrameDecoder,
    FrameError,
    check_byteorder,
    check_header_size,
    encode_frame,
)

Sendable = Packet[Any] | Mapping[str, Any] | BaseModel
_READ_SIZE = 64 * 1024
_ERRORS: dict[str, type[ProtocolError]] = {
    "ERR_HEADER_INVALID": HeaderInvalid,
    "ERR_PAYLOAD_TOO_LARGE": PayloadTooLarge,
}


class ClientCore:
    """The client side of the protocol, without I/O."""

    def __init__(
        self,
        encoding: str = "json",
        header_size: int = 4,
        byteorder: str = "big",
        max_packet_size: int = CLIENT_MAX_PACKET_SIZE,
    ) -> None:
        self.encoding = get_codec(encoding).name
        self.header_size = check_header_size(header_size)
        self.byteorder = check_byteorder(byteorder)
        self._decoder = FrameDecoder(self.header_size, self.byteorder, max_packet_size, frozenset(CODECS))
        self._eof = False

    def frame(self, obj: Sendable, encoding: str | None = None) -> bytes:
        """The bytes that send ``obj`` (a dict, a model or a ``Packet``)."""
        codec = get_codec(encoding or self.encoding)
        return encode_frame(encode_payload(obj, codec.name), codec.id, self.header_size, self.byteorder)

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the server; ``b""`` means it closed the connection."""
        if data:
            self._decoder.feed(data)
        else:
            self._eof = True

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more data arrives.

        Raises:
            ConnectionClosed: the server closed the connection mid-frame or between frames.
            ProtocolError: the server's bytes are not valid frames.
        """
        event = self._decoder.next_event()
        if isinstance(event, Frame):
            return event
        if isinstance(event, FrameError):
            raise _ERRORS.get(event.code, HeaderInvalid)(f"the server sent a bad frame: {event.detail}")
        assert event is NEED_DATA
        if self._eof:
            partial = " in the middle of a packet" if self._decoder.in_frame else ""
            raise ConnectionClosed(f"the server closed the connection{partial}")
        return None

    def raw(self, frame: Frame) -> bytes:
        """The frame exactly as it was on the wire."""
        return encode_frame(frame.payload, frame.encoding, self.header_size, self.byteorder)

    def decode(self, frame: Frame) -> dict[str, Any]:
        """The reply map carried by ``frame``."""
        try:
            value = CODECS[frame.encoding].decode(frame.payload)
        except DecodeError as exc:
            raise RequestMalformed(f"the server sent an undecodable payload: {exc}") from None
        if not isinstance(value, dict):
            raise RequestMalformed(f"the server sent a {type(value).__name__}, not a map")
        return value


def check_reply(reply: dict[str, Any]) -> dict[str, Any]:
    """Return ``reply``, or raise ``ErrorReply`` when it is an error packet."""
    if reply.get("status") == "failure" and "error" in reply:
        raise ErrorReply(reply)
    return reply


def _client_ssl(tls: bool, ssl_context: _ssl.SSLContext | None) -> _ssl.SSLContext | None:
    if ssl_context is not None:
        return ssl_context
    return _ssl.create_default_context() if tls else None


class _ClientSettings:
    """What both clients are configured with.

    Args:
        host, port: the server.
        tls: wrap the connection in TLS, verifying the server against the system CAs.
        ssl_context: the ``ssl.SSLContext`` to use instead (implies TLS).
        encoding: the default encoding of sent packets, "json" or "ziproto".
        header_size, byteorder: the Content-Length field, as the server has it.
        timeout: seconds to wait for a connect, a send or a reply (None: forever).
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
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._ssl = _client_ssl(tls, ssl_context)
        self._core = ClientCore(encoding, header_size, byteorder)


class Client(_ClientSettings):
    """A blocking AsyncAProto client.

    Example:
        with Client("127.0.0.1", 1500) as client:
            print(client.request({"test": 1}))
    """

    _sock: socket.socket | None = None

    def connect(self) -> None:
        """Open the connection (``send`` and ``request`` do it when needed)."""
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.timeout:
            raise ClientTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        if self._ssl is not None:
            sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
        self._sock = sock

    def send(self, obj: Sendable, encoding: str | None = None) -> None:
        """Send one packet."""
        data = self._core.frame(obj, encoding)
        sock = self._connected()
        try:
            sock.sendall(data)
        except socket.timeout:
            raise ClientTimeout("sending timed out") from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionClosed(f"the server closed the connection: {exc}") from None

    def receive_all(self) -> bytes:
        """The next whole packet, header included, as raw bytes."""
        return self._core.raw(self._next_frame())

    def receive(self) -> dict[str, Any]:
        """The next reply, decoded."""
        return self._core.decode(self._next_frame())

    def request(self, obj: Sendable, encoding: str | None = None, *, raise_errors: bool = False) -> dict[str, Any]:
        """Send ``obj`` and return the reply; ``raise_errors`` turns error packets into ``ErrorReply``."""
        self.send(obj, encoding)
        reply = self.receive()
        return check_reply(reply) if raise_errors else reply

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connected(self) -> socket.socket:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        return self._sock

    def _next_frame(self) -> Frame:
        sock = self._connected()
        while True:
            frame = self._core.next_frame()
            if frame is not None:
                return frame
            try:
                data = sock.recv(_READ_SIZE)
            except socket.timeout:
                raise ClientTimeout(f"no reply within {self.timeout} seconds") from None
            except ConnectionResetError:
                data = b""
            self._core.receive_data(data)


class AsyncClient(_ClientSettings):
    """An asyncio AsyncAProto client; the same methods as ``Client``, awaited.

    Example:
        async with AsyncClient("127.0.0.1", 1500) as client:
            print(await client.request({"test": 1}))
    """

    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection (``send`` and ``request`` do it when needed)."""
        if self._writer is not None:
            return
        opening = asyncio.open_connection(self.host, self.port, ssl=self._ssl)
        try:
            self._reader, self._writer = await asyncio.wait_for(opening, self.timeout)
        except asyncio.TimeoutError:
            raise ClientTimeout(f"connecting to {self.host}:{self.port} timed out") from None

    async def send(self, obj: Sendable, encoding: str | None = None) -> None:
        """Send one packet."""
        data = self._core.frame(obj, encoding)
        writer = await self._connected()
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), self.timeout)
        except asyncio.TimeoutError:
            raise ClientTimeout("sending timed out") from None
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionClosed(f"the server closed the connection: {exc}") from None

    async def receive_all(self) -> bytes:
        """The next whole packet, header included, as raw bytes."""
        return self._core.raw(await self._next_frame())

    async def receive(self) -> dict[str, Any]:
        """The next reply, decoded."""
        return self._core.decode(await self._next_frame())

    async def request(
        self, obj: Sendable, encoding: str | None = None, *, raise_errors: bool = False
    ) -> dict[str, Any]:
        """Send ``obj`` and return the reply; ``raise_errors`` turns error packets into ``ErrorReply``."""
        await self.send(obj, encoding)
        reply = await self.receive()
        return check_reply(reply) if raise_errors else reply

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, _ssl.SSLError):
                pass

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _connected(self) -> asyncio.StreamWriter:
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        return self._writer

    async def _next_frame(self) -> Frame:
        await self._connected()
        assert self._reader is not None
        while True:
            frame = self._core.next_frame()
            if frame is not None:
                return frame
            try:
                data = await asyncio.wait_for(self._reader.read(_READ_SIZE), self.timeout)
            except asyncio.TimeoutError:
                raise ClientTimeout(f"no reply within {self.timeout} seconds") from None
            except ConnectionResetError:
                data = b""
            self._core.receive_data(data)
