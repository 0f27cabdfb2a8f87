"""The asyncio transport: one ``Connection`` per accepted socket.

It moves bytes between the socket and the sans-IO ``FrameDecoder``, keeps the packets
of its connection in order (one worker at a time per connection, connections run
concurrently), applies the connection rules of DESIGN §1 and hands each decoded
packet to the compiled plan through one ``dispatch`` call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from ._eager import Host
from .codecs import CODECS, DecodeError, get_codec
from .errors import (
    ERR_INTERNAL,
    ERR_NO_HANDLER,
    ERR_REQUEST_MALFORMED,
    ERR_SERVER_BUSY,
    ERR_SESSION_LIMIT_REACHED,
    ERR_TIMED_OUT,
    error_payload,
)
from .packet import Packet
from .peer import Client, Session
from .protocol import NEED_DATA, Byteorder, Frame, FrameDecoder, FrameError, frame_header
from .routing import Plan
from .sessions import SessionRegistry

logger = logging.getLogger("asyncapy")

#: Replies queued while the worker runs are flushed early past this many bytes, so a
#: handler that sends a lot without ever waiting still hands it to the transport
#: (whose high-water mark then makes ``drain`` wait).
_FLUSH_AT = 64 * 1024


@dataclass(eq=False)
class ServingContext:
    """What every connection of one running server shares."""

    plan: Plan
    sessions: SessionRegistry
    header_size: int
    byteorder: Byteorder
    max_packet_size: int
    timeout: float
    max_connections: int
    default_encoding: int
    connections: set[Connection] = field(default_factory=set)
    debug: bool = False


class Connection(asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, ctx: ServingContext) -> None:
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._decoder = FrameDecoder(ctx.header_size, ctx.byteorder, ctx.max_packet_size, frozenset(CODECS))
        self._pending: deque[Frame | FrameError] = deque()
        self._working = False
        self._host: Host | None = None
        self._corked = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._mark = 0.0
        self._closing = False
        self._eof = False
        self._registered = False
        self._encoding_id: int | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.client: Client | None = None
        self.session: Session | None = None

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        host, port = str(peer[0]), int(peer[1])
        ctx = self._ctx
        self.session = session = Session(host, port)
        self.client = Client(host, port, session, self, ctx.sessions, get_codec(ctx.default_encoding).name)
        if ctx.max_connections and len(ctx.connections) >= ctx.max_connections:
            self._refuse(ERR_SERVER_BUSY, f"the server is at its limit of {ctx.max_connections} connections")
            return
        if not ctx.sessions.open(session):
            self._refuse(ERR_SESSION_LIMIT_REACHED, f"{host} is at its limit of {ctx.sessions.limit} sessions")
            return
        self._registered = True
        ctx.connections.add(self)
        logger.info("(%s) New session started from %s:%d", session.id, host, port)
        self._mark = self._loop.time()
        if ctx.timeout:
            self._timer = self._loop.call_later(ctx.timeout, self._on_timer)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        decoder = self._decoder
        if not decoder.in_frame:
            self._mark = self._loop.time()
        decoder.feed(data)
        pending = self._pending
        while True:
            event = decoder.next_event()
            if event is NEED_DATA:
                break
            pending.append(event)  # type: ignore[arg-type]  # NEED_DATA is the only other event
            if type(event) is FrameError and event.fatal:
                self._pause_reading()
                break
        if pending and not self._working:
            self._start_worker()

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._working:
            return True  # keep the write side open until the pending replies are out
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._host is not None:
            self._host.close()
        if self._registered:
            self._registered = False
            assert self.session is not None
            self._ctx.sessions.close(self.session)
            self._ctx.connections.discard(self)
            logger.info("(%s) The connection was closed", self.session.id)
        self._wake_drainers()
        self._wake_idle()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()

    # -- the link a Client writes through ------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    def write_payload(self, payload: bytes, encoding: int) -> None:
        if self._closing or self._transport is None:
            return
        ctx = self._ctx
        header = frame_header(len(payload), encoding, ctx.header_size, ctx.byteorder)
        if not self._corked:
            self._transport.writelines((header, payload))
            return
        self._out += (header, payload)
        self._out_size += len(payload)
        if self._out_size > _FLUSH_AT:
            self._flush()

    def close(self) -> None:
        """Close after the buffered replies are written; later sends are ignored."""
        if self._closing:
            return
        self._flush()
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        if not self._write_paused or self._closing:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    @property
    def busy(self) -> bool:
        """True while packets are being handled or wait to be."""
        return self._working

    async def wait_idle(self) -> None:
        """Return once every packet received so far has been handled."""
        while self._working:
            waiter = self._loop.create_future()
            self._idle_waiters.append(waiter)
            await waiter

    # -- driving the worker: eagerly, replies of a burst in one write -----------

    def _start_worker(self) -> None:
        """Run the worker now, in the host task's name; it goes on in that task if it waits."""
        if self._host is None:
            self._host = Host(self._loop, self._uncork, self._cork)
        self._working = True
        self._corked = True
        self._host.run(self._work())
        self._uncork()

    def _cork(self) -> None:
        self._corked = True

    def _uncork(self) -> None:
        """The worker finished or waits: write what it queued, in one call."""
        self._corked = False
        self._flush()

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        self._out_size = 0
        if self._transport is not None and not self._closing:
            self._transport.write(b"".join(out))

    # -- handling packets, in order -------------------------------------------

    async def _work(self) -> None:
        pending = self._pending
        try:
            while pending:
                event = pending.popleft()
                if type(event) is Frame:
                    await self._handle_frame(event)
                else:
                    self._handle_frame_error(event)  # type: ignore[arg-type]
        finally:
            self._working = False
            self._mark = self._loop.time()
            if self._idle_waiters:
                self._wake_idle()
            if self._eof:
                self.close()

    async def _handle_frame(self, frame: Frame) -> None:
        client = self.client
        assert client is not None
        codec = CODECS[frame.encoding]
        if self._encoding_id is None:
            self._encoding_id = frame.encoding
            client.encoding = codec.name
        try:
            payload = codec.decode(frame.payload)
        except DecodeError as exc:
            self._send_error(ERR_REQUEST_MALFORMED, str(exc), frame.encoding)
            return
        if type(payload) is not dict:
            detail = f"the payload must be a map, not {_kind(payload)}"
            self._send_error(ERR_REQUEST_MALFORMED, detail, frame.encoding)
            return
        if self._ctx.debug:
            self._log_packet(frame, codec.name)
        packet = Packet._received(payload, codec.name, client, frame.payload)
        try:
            miss = await self._ctx.plan.dispatch(client, packet)
        except Exception:
            assert self.session is not None
            logger.exception("(%s) A handler raised while handling a packet", self.session.id)
            self._send_error(ERR_INTERNAL, "the handler failed; the error is in the server's log", frame.encoding)
            return
        if miss is not None:
            self._send_error(ERR_NO_HANDLER, miss.detail, frame.encoding)

    def _handle_frame_error(self, error: FrameError) -> None:
        self._send_error(error.code, error.detail, error.encoding)
        if error.fatal:
            self.close()

    def _send_error(self, code: str, detail: Any, encoding: int | None) -> None:
        if encoding is None:
            encoding = self._encoding_id if self._encoding_id is not None else self._ctx.default_encoding
        codec = CODECS[encoding]
        if self._ctx.debug:
            assert self.session is not None
            logger.debug("(%s) Replying %s: %s", self.session.id, code, detail)
        self.write_payload(codec.encode(error_payload(code, detail)), encoding)

    # -- helpers --------------------------------------------------------------

    def _refuse(self, code: str, detail: str) -> None:
        logger.info("Refused a connection from %s: %s", self.client.address if self.client else "?", code)
        self._send_error(code, detail, None)
        self.close()

    def _on_timer(self) -> None:
        self._timer = None
        if self._closing:
            return
        timeout = self._ctx.timeout
        remaining = timeout if self._working else self._mark + timeout - self._loop.time()
        if remaining > 0:
            self._timer = self._loop.call_later(remaining, self._on_timer)
            return
        assert self.session is not None
        logger.info("(%s) Timed out after %s seconds without a complete packet", self.session.id, timeout)
        self._send_error(ERR_TIMED_OUT, f"no complete packet within {timeout} seconds", None)
        self.close()

    def _pause_reading(self) -> None:
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _log_packet(self, frame: Frame, encoding: str) -> None:
        assert self.session is not None
        logger.debug(
            "(%s) Packet of %d bytes, Content-Encoding is %s", self.session.id, len(frame.payload), encoding
        )


def _kind(value: object) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
