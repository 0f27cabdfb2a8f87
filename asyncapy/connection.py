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
from collections.abc import Awaitable, Generator
from dataclasses import dataclass, field
from typing import Any, Final, cast

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

#: 64 packets: one socket read of small pipelined packets fills it at once, so a
#: well-behaved client never waits on it, and 64 x max_packet_size bounds what one
#: greedy connection can queue.
DEFAULT_MAX_PENDING: Final = 64
#: A cancelled handler gets this long to run its ``finally`` blocks; one that ignores
#: cancellation is left behind so that the connection can move on.
HANDLER_CANCEL_GRACE: Final = 1.0

# Why reading is paused; reading resumes when no reason is left.
_HOLD_QUEUE: Final = "queue"  # max_pending packets wait to be handled
_HOLD_WRITE: Final = "write"  # the peer does not read its replies
_HOLD_FATAL: Final = "fatal"  # a fatal frame error: the connection is closing

#: Replies queued while the worker runs are flushed early past this many bytes, so a
#: handler that sends a lot without ever waiting still hands it to the transport
#: (whose high-water mark then makes ``drain`` wait).
_FLUSH_AT: Final = 64 * 1024


class _Ready:
    """An awaitable that is done at once (cheaper to await than a coroutine)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_READY: Final = _Ready()


class _HandlerTimedOut(Exception):
    """The handlers of one packet ran past ``handler_timeout``."""


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
    max_pending: int = DEFAULT_MAX_PENDING
    handler_timeout: float | None = None


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
        self._seen = 0.0
        self._holds: set[str] = set()
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
        if logger.isEnabledFor(logging.INFO):  # session.id makes a UUID: only when it is logged
            logger.info("(%s) New session started from %s:%d", session.id, host, port)
        self._mark = self._loop.time()
        if ctx.timeout:
            self._timer = self._loop.call_later(ctx.timeout, self._on_timer)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        decoder = self._decoder
        self._seen = now = self._loop.time()
        if not decoder.in_frame:
            self._mark = now  # a packet must be whole within `timeout` of its first byte
        decoder.feed(data)
        self._take_events()

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
            if logger.isEnabledFor(logging.INFO):
                logger.info("(%s) The connection was closed", self.session.id)
        self._wake_drainers()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._hold_reading(_HOLD_WRITE)  # a peer that does not read must not make us buffer

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers()
        self._release_reading(_HOLD_WRITE)

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

    def drain(self) -> Awaitable[None]:
        """Wait while the socket's write buffer is above its high-water mark.

        Not a coroutine function: every ``client.send`` awaits it and it almost never
        waits, so the common case returns a ready awaitable instead of a new coroutine.
        """
        if not self._write_paused or self._closing:
            return _READY
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        return waiter

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

    @property
    def pending(self) -> int:
        """Packets (and frame errors) decoded and waiting to be handled."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes held for this connection: undecoded input plus unsent replies."""
        out = self._transport.get_write_buffer_size() if self._transport is not None else 0
        return self._decoder.buffered + out

    def quiet_for(self) -> float:
        """Seconds since the last byte arrived or the last packet was handled; 0 while handling."""
        if self._working:
            return 0.0
        return self._loop.time() - max(self._seen, self._mark)

    def cancel_work(self) -> None:
        """Cancel the running handler (shutdown past its deadline)."""
        if self._working and self._host is not None:
            self._host.cancel_worker()

    def abort(self) -> None:
        """Drop the connection now, unsent replies included (a peer that never reads)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

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
                if self._holds:  # rare: reading is paused, see _relieve
                    await self._relieve()
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
            if self._ctx.handler_timeout is None:
                miss = await self._ctx.plan.dispatch(client, packet)
            else:
                miss = await self._dispatch_bounded(client, packet, self._ctx.handler_timeout)
        except _HandlerTimedOut:
            self._handler_timed_out(frame.encoding)
            return
        except Exception:
            assert self.session is not None
            logger.exception("(%s) A handler raised while handling a packet", self.session.id)
            self._send_error(ERR_INTERNAL, "the handler failed; the error is in the server's log", frame.encoding)
            return
        if miss is not None:
            self._send_error(ERR_NO_HANDLER, miss.detail, frame.encoding)

    async def _dispatch_bounded(self, client: Client, packet: Packet[Any], timeout: float) -> Any:
        """``plan.dispatch`` in a task cancelled after ``timeout`` (a handler's own TimeoutError stays ERR_INTERNAL)."""
        task = self._loop.create_task(self._ctx.plan.dispatch(client, packet))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=HANDLER_CANCEL_GRACE)
            task.add_done_callback(_ignore_result)
            raise _HandlerTimedOut
        return task.result()

    def _handler_timed_out(self, encoding: int) -> None:
        """The connection stays open: its framing is intact and the hung handler is cancelled."""
        assert self.session is not None
        timeout = self._ctx.handler_timeout
        logger.warning("(%s) A handler ran past handler_timeout (%s s) and was cancelled", self.session.id, timeout)
        self._send_error(ERR_TIMED_OUT, f"the handler did not finish within {timeout} seconds", encoding)

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
        if self._write_paused:
            self.abort()  # the peer does not read: close() would wait forever to flush
        else:
            self.close()

    # -- flow control: bounded memory per connection --------------------------------

    def _take_events(self) -> None:
        """Move decoded events to the pending queue, holding reading once it is full.

        Frames beyond ``max_pending`` stay undecoded in the decoder (at most one socket
        read) until the worker drains the queue.
        """
        decoder = self._decoder
        pending = self._pending
        limit = self._ctx.max_pending
        while len(pending) < limit:
            event = decoder.next_event()
            if event is NEED_DATA:
                break
            pending.append(event)  # type: ignore[arg-type]  # NEED_DATA is the only other event
            if type(event) is FrameError and event.fatal:
                self._hold_reading(_HOLD_FATAL)
                break
        else:
            self._hold_reading(_HOLD_QUEUE)
        if pending and not self._working:
            self._start_worker()

    async def _relieve(self) -> None:
        """Between packets while reading is held: wait for the peer to read, refill the queue."""
        if self._write_paused:
            await self.drain()
        if _HOLD_QUEUE in self._holds and len(self._pending) <= self._ctx.max_pending // 2:
            self._holds.discard(_HOLD_QUEUE)
            self._take_events()  # may fill the queue and hold reading again
            if _HOLD_QUEUE not in self._holds:
                self._release_reading(_HOLD_QUEUE)

    def _hold_reading(self, reason: str) -> None:
        self._holds.add(reason)
        self._pause_reading()

    def _release_reading(self, reason: str) -> None:
        holds = self._holds
        holds.discard(reason)
        transport = self._transport
        if holds or self._closing or transport is None or transport.is_reading():
            return
        transport.resume_reading()
        self._mark = self._loop.time()  # time spent paused by us does not count against the peer

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


def _ignore_result(task: asyncio.Task[Any]) -> None:
    """Retrieve a cancelled handler's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _kind(value: object) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
